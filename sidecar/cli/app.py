"""The ``sidecar`` group: every command added explicitly, ``--config`` on all of them."""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

import click

from sidecar.cli import cs, drain, gateway, ops, register
from sidecar.cli.common import add_global_options


def package_version() -> str:
    try:
        return version("dirac-sidecar")
    except PackageNotFoundError:  # pragma: no cover - running from a bare source tree
        return "unknown"


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_version(), "--version", "-V", prog_name="dirac-sidecar")
def main() -> None:
    """dirac-sidecar: Consul catalog -> HAProxy TLS passthrough for DIRAC services.

    Every command takes --config PATH, before or after the command name.
    """


for command in (
    gateway.run,
    gateway.render,
    gateway.once,
    gateway.validate,
    ops.check,
    ops.certs,
    ops.files,
    cs.cs_group,
    cs.status,
    drain.drain,
    drain.undrain,
    register.register_cmd,
):
    main.add_command(command)
add_global_options(main)
