"""The ``sidecar`` group: every command added explicitly, ``--config`` on all of them."""

from __future__ import annotations

import click

from sidecar.cli import cs, drain, gateway, ops, register
from sidecar.cli.common import add_global_options


def package_version() -> str:
    # imported here: importlib.metadata brings zipfile, shutil, bz2, lzma, email, ... (~1 MB
    # that the daemon would hold for months), and the version is needed only for --version
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("dirac-sidecar")
    except PackageNotFoundError:  # pragma: no cover - running from a bare source tree
        return "unknown"


def _show_version(ctx: click.Context, _param: click.Parameter, value: bool) -> None:
    if value and not ctx.resilient_parsing:
        click.echo(f"dirac-sidecar, version {package_version()}")
        ctx.exit()


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--version", "-V", is_flag=True, expose_value=False, is_eager=True,
    callback=_show_version, help="Show the version and exit.",
)  # fmt: skip
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
