"""The ``sidecar`` command line: parse options, load settings, call in; no logic here."""

from __future__ import annotations

import sys
from collections.abc import Callable

import click

from sidecar import pipeline
from sidecar.catalog.client import ConsulClient
from sidecar.catalog.fetch import fetch_snapshot
from sidecar.errors import SidecarError
from sidecar.logs import setup_logging
from sidecar.model import Snapshot
from sidecar.settings import Settings, load_settings, read_token

CONFIG_HELP = "settings file (default $SIDECAR_CONFIG or /etc/dirac-sidecar/sidecar.toml)"


def _settings(ctx: click.Context) -> Settings:
    settings: Settings = ctx.obj["settings"]
    return settings


@click.group()
@click.option("--config", "config_path", default=None, help=CONFIG_HELP)
@click.pass_context
def main(ctx: click.Context, config_path: str | None) -> None:
    """dirac-sidecar: Consul catalog -> HAProxy TLS passthrough for DIRAC services."""
    try:
        settings = load_settings(config_path)
    except SidecarError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(3 if ctx.invoked_subcommand == "check" else 2)
    setup_logging(settings.log.level, settings.log.format)
    ctx.obj = {"settings": settings, "config_path": config_path}


def guarded(func: Callable[[], int], error_code: int = 1) -> None:
    """Run a command body: its return value is the exit code; a SidecarError is printed and
    exits with ``error_code``."""
    try:
        code = func()
    except SidecarError as exc:
        click.echo(f"error: {exc}", err=True)
        code = error_code
    sys.exit(code)


@main.command()
@click.option("--stop-haproxy", is_flag=True, help="stop HAProxy when the daemon stops")
@click.pass_context
def run(ctx: click.Context, stop_haproxy: bool) -> None:
    """Run the daemon."""
    from sidecar.daemon import Daemon

    path = ctx.obj["config_path"]

    def go() -> int:
        daemon = Daemon(_settings(ctx), lambda: load_settings(path), stop_haproxy=stop_haproxy)
        daemon.install_signals()
        return daemon.run()

    guarded(go)


def _client(settings: Settings) -> ConsulClient:
    return ConsulClient(settings.consul, read_token(settings.consul))


def _snapshot(settings: Settings) -> Snapshot:
    return fetch_snapshot(_client(settings), settings.consul.tag)


@main.command()
@click.pass_context
def render(ctx: click.Context) -> None:
    """Print the HAProxy config for the current catalog; changes nothing."""
    from sidecar.inputs import build_inputs

    def go() -> int:
        settings = _settings(ctx)
        inputs = build_inputs(settings)
        rendered = pipeline.render(_snapshot(settings), inputs, None)
        click.echo(rendered.config, nl=False)
        problems = rendered.desired.problems if rendered.desired else ()
        for problem in problems:
            click.echo(f"skipped: {problem}", err=True)
        return 0

    guarded(go)


@main.command()
@click.pass_context
def once(ctx: click.Context) -> None:
    """One full sync (render, validate, apply), then exit non-zero on failure."""
    from sidecar.apply.applier import Applier
    from sidecar.apply.haproxy import HAProxy
    from sidecar.inputs import build_inputs
    from sidecar.plan import Rendered, skeleton
    from sidecar.render.haproxy import render_config

    def go() -> int:
        settings = _settings(ctx)
        inputs = build_inputs(settings)
        haproxy = HAProxy(settings)
        haproxy.prepare()
        applier = Applier(haproxy)
        config, desired = applier.load_applied()
        applied = None
        if config is not None:
            shape = render_config(inputs.template, skeleton(desired), settings) if desired else None
            applied = Rendered(desired, config, shape)
        client = _client(settings)
        target, plan = pipeline.cycle(
            fetch_snapshot(client, settings.consul.tag), inputs, applied, applier.running()
        )
        result = applier.apply(plan, target)
        for problem in target.desired.problems if target.desired else ():
            click.echo(f"skipped: {problem}", err=True)
        click.echo(f"{result.kind.value}: {'ok' if result.ok else 'FAILED'}: {result.message}")
        if not result.ok:
            return 1
        if settings.dirac_cs.enabled and target.desired is not None:
            from sidecar.apply.cs_once import sync_with_lock

            outcome = sync_with_lock(settings, client, target.desired, wait=30.0, who="once")
            click.echo(f"cs: {outcome.status.value}{': ' + outcome.error if outcome.error else ''}")
            return 0 if outcome.ok else 1
        return 0

    guarded(go)


def _register_extra_commands() -> None:
    """Commands that live in their own modules (operations, CS) register on ``main`` here."""
    import importlib

    for module in ("sidecar.cli_ops", "sidecar.cli_cs", "sidecar.cli_register"):
        try:
            importlib.import_module(module)
        except ModuleNotFoundError as exc:
            if exc.name != module:
                raise


_register_extra_commands()

if __name__ == "__main__":  # pragma: no cover
    main()
