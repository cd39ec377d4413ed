"""What every command shares: ``--config`` wherever the user puts it, lazy settings, exit codes.

Operators type ``sidecar run --config F`` as readily as ``sidecar --config F run`` (``consul
agent -config-file``, ``haproxy -f``): the option is added to the group and to every command
(``add_global_options``), and the value given last wins. Settings are loaded only when a
command asks for them (``settings_of``), so ``--help`` and ``--version`` never read a file.
"""

from __future__ import annotations

import sys
from collections.abc import Callable

import click

from sidecar.base.errors import ConfigError, SidecarError
from sidecar.base.inert import inert
from sidecar.config.loader import load_settings, read_token
from sidecar.config.schema import DEFAULT_CONFIG, Settings
from sidecar.consul.client import ConsulClient
from sidecar.host.apart import load_settings_apart
from sidecar.host.logs import setup_logging

CONFIG_HELP = f"settings file (default $SIDECAR_CONFIG, else {DEFAULT_CONFIG})"
_KEY = "config_path"


def _remember(ctx: click.Context, param: click.Parameter, value: str | None) -> None:
    if value is not None:
        ctx.find_root().meta[_KEY] = value


def config_option() -> click.Option:
    return click.Option(
        ["--config", "-c"],
        metavar="PATH",
        default=None,
        expose_value=False,
        is_eager=True,
        callback=_remember,
        help=CONFIG_HELP,
    )


def add_global_options(command: click.Command) -> None:
    """``--config`` on ``command`` and, for a group, on every command below it."""
    if not any(p.name == "config" for p in command.params):
        command.params.append(config_option())
    if isinstance(command, click.Group):
        for sub in command.commands.values():
            add_global_options(sub)


def config_path(ctx: click.Context) -> str | None:
    path: str | None = ctx.find_root().meta.get(_KEY)
    return path


def settings_of(ctx: click.Context, error_code: int = 2, apart: bool = False) -> Settings:
    """The settings (loaded once per invocation); a bad file is printed, every problem on its
    own line, and exits with ``error_code``. ``apart``: validated in a child (``run``: the
    daemon never imports pydantic, see ``host.apart``)."""
    root = ctx.find_root()
    cached: Settings | None = root.meta.get("settings")
    if cached is not None:
        return cached
    try:
        settings = (load_settings_apart if apart else load_settings)(config_path(ctx))
    except ConfigError as exc:
        for line in exc.lines():
            click.echo(f"error: {line}", err=True)
        sys.exit(error_code)
    except SidecarError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(error_code)
    log = settings.log
    setup_logging(log.level.value, log.format.value, log.repeat_limit, log.repeat_window)
    root.meta["settings"] = settings
    return settings


def reloader(ctx: click.Context) -> Callable[[], Settings]:
    """Reads the same file again for the daemon (SIGHUP), in a child like at its start;
    raises ConfigError, never exits."""
    path = config_path(ctx)
    return lambda: load_settings_apart(path)


def guarded(func: Callable[[], int], error_code: int = 1) -> None:
    """Run a command body: its return value is the exit code; a SidecarError is printed and
    exits with ``error_code``."""
    try:
        code = func()
    except SidecarError as exc:  # may quote the catalog or Consul: escaped
        click.echo(f"error: {inert(str(exc), 2000)}", err=True)
        code = error_code
    sys.exit(code)


def client_of(settings: Settings) -> ConsulClient:
    """A Consul client for one CLI command (the one client type the daemon uses too)."""
    return ConsulClient(settings.consul, read_token(settings.consul))
