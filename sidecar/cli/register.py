"""``sidecar register`` (command line): register the local DIRAC services in Consul.

Added to the group in ``sidecar.cli.app``. Parse options, call in; the plan is
``register.plan`` (pure), the work ``register.agent``. Exit codes: 0 = stopped cleanly
(SIGTERM/SIGINT, all deregistered); 1 = Consul unreachable past ``--retry-for`` (nothing left
registered) or deregistration errors; 2 = bad DIRAC config or options (nothing registered).
"""

from __future__ import annotations

import signal
import sys
import threading
from types import FrameType

import click

from sidecar.base.errors import ConfigError, SidecarError
from sidecar.cli.common import client_of, settings_of


def _install_signals(stop: threading.Event) -> None:
    def handler(signum: int, frame: FrameType | None) -> None:
        stop.set()

    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, handler)


@click.command("register")
@click.option(
    "--dirac-cfg",
    default=None,
    help="DIRAC cfg file(s), comma-separated (default $DIRACSYSCONFIG, /opt/dirac/etc/dirac.cfg)",
)
@click.option(
    "--layout", type=click.Choice(["auto", "v9", "v8"]), default="auto", show_default=True
)
@click.option("--setup", default="", help="v8: the setup (default /DIRAC/Setup)")
@click.option(
    "--service",
    "services",
    multiple=True,
    metavar="SYSTEM/SERVICE",
    help="only these services (repeat; default all)",
)
@click.option("--address", default="", help="Service.Address (default: the Consul node's address)")
@click.option(
    "--port-map",
    "port_maps",
    multiple=True,
    metavar="INSIDE=PUBLISHED",
    help="container port -> host port (repeat); also $PORT_<n>, $NOMAD_HOST_PORT_<label>",
)
@click.option(
    "--dirac-port",
    "dirac_ports",
    multiple=True,
    metavar="SYSTEM/SERVICE=PORT",
    help="public gateway port (meta dirac_port)",
)
@click.option(
    "--instance", default="", help="host part of the service IDs (default: short host name)"
)
@click.option("--cert", default=None, help="host certificate (default from /DIRAC/Security)")
@click.option("--key", default=None, help="host key (default from /DIRAC/Security)")
@click.option("--ca-dir", default=None, help="CA directory or file (default from /DIRAC/Security)")
@click.option(
    "--check-host",
    default="127.0.0.1",
    show_default=True,
    help="where the TLS check dials the service's own port",
)
@click.option(
    "--check",
    "mode",
    type=click.Choice(["ping", "tls"]),
    default="ping",
    show_default=True,
    help="dips services: a DISET ping RPC, or only a TLS handshake (https: always a handshake)",
)
@click.option("--check-published", is_flag=True, help="dial ADDRESS:published port instead")
@click.option(
    "--interval", default=10.0, show_default=True, help="seconds between TLS checks (TTL = 3x)"
)
@click.option(
    "--deregister-after",
    default="10m",
    show_default=True,
    help="Consul removes a service critical this long ('' = never)",
)
@click.option(
    "--retry-for",
    default=60.0,
    show_default=True,
    help="seconds to retry the first registration while the agent is unreachable",
)
@click.option("--dry-run", is_flag=True, help="print the registrations; register nothing")
@click.pass_context
def register_cmd(
    ctx: click.Context,
    dirac_cfg: str | None,
    layout: str,
    setup: str,
    services: tuple[str, ...],
    address: str,
    port_maps: tuple[str, ...],
    dirac_ports: tuple[str, ...],
    instance: str,
    cert: str | None,
    key: str | None,
    ca_dir: str | None,
    check_host: str,
    mode: str,
    check_published: bool,
    interval: float,
    deregister_after: str,
    retry_for: float,
    dry_run: bool,
) -> None:
    """Register the local DIRAC services in the local Consul agent and feed their TLS checks
    until SIGTERM/SIGINT, then deregister them."""
    # imported here: every command module is loaded with the group, ``sidecar run`` too, and
    # the daemon has no use for these (~0.3 MB)
    from sidecar.register import agent as reg
    from sidecar.register import localcfg, probe
    from sidecar.register import plan as rp

    settings = settings_of(ctx)
    env = reg.environment()
    stop = threading.Event()
    _install_signals(stop)
    try:
        cfg = reg.read_dirac_config(reg.config_paths(dirac_cfg, env))
        found = localcfg.find_services(cfg, layout, setup)
        chosen = localcfg.select(found, services, cfg.source)
        plan = rp.plan(
            chosen,
            rp.port_mapping(port_maps, env),
            address,
            settings.consul.tag,
            rp.public_ports(dirac_ports),
            instance or reg.default_instance(),
        )
        if interval < 1:
            raise ConfigError("--interval", str(interval), "must be at least 1 second")
        for line in reg.explain(plan):
            click.echo(line)
        if dry_run:
            sys.exit(0)
        creds = reg.pick_credentials(rp.credential_candidates(cfg, env), cert, key, ca_dir)
        probe.tls_context(creds)  # fail on unreadable credentials before registering anything
    except ConfigError as exc:
        click.echo(f"error: {exc}; nothing registered", err=True)
        sys.exit(2)
    registrar = reg.Registrar(
        client_of(settings),
        plan,
        creds,
        check_host=check_host,
        check_published=check_published,
        interval=interval,
        deregister_after=deregister_after,
        retry_for=retry_for,
        mode=mode,
    )
    try:
        code = registrar.run(stop)
    except SidecarError as exc:
        click.echo(f"error: {exc}", err=True)
        code = 1
    sys.exit(code)
