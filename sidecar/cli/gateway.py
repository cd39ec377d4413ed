"""The gateway commands: ``run``, ``render``, ``once``, ``validate`` (CLI wiring, no logic).

Parse options, load settings, call in: the daemon, the pure pipeline, the appliers and the
preflight do the work. Exit codes: ``run`` 0 on a clean stop; ``render`` / ``once`` 0 or 1;
``validate`` 0 when settings, template, port map and ``haproxy -c`` are all fine, else 1.
"""

from __future__ import annotations

import logging
import sys

import click

from sidecar.base.errors import ConfigError
from sidecar.base.inert import inert
from sidecar.cli.common import client_of, guarded, reloader, settings_of
from sidecar.config.loader import load_settings
from sidecar.consul.fetch import fetch_snapshot
from sidecar.core import pipeline
from sidecar.host.netfacts import fenced


@click.command()
@click.option("--stop-haproxy", is_flag=True, help="stop HAProxy when the daemon stops")
@click.pass_context
def run(ctx: click.Context, stop_haproxy: bool) -> None:
    """Run the daemon (systemd Type=notify; SIGHUP reloads the settings)."""
    from sidecar.daemon.loop import Daemon
    from sidecar.host import memory
    from sidecar.host.privileges import drop_effective_capabilities

    settings = settings_of(ctx, apart=True)

    def go() -> int:
        # First, before any thread or child exists: capabilities are per thread, and HAProxy
        # gets CAP_NET_BIND_SERVICE through the ambient set, not through our effective one.
        for note in drop_effective_capabilities():
            logging.getLogger("sidecar.host.privileges").info("%s", note)
        memory.one_arena()  # likewise before any thread: see sidecar.host.memory
        memory.big_blocks_mapped()
        daemon = Daemon(settings, reloader(ctx), stop_haproxy=stop_haproxy)
        daemon.install_signals()
        return daemon.run()

    guarded(go)


@click.command()
@click.pass_context
def render(ctx: click.Context) -> None:
    """Print the HAProxy config for the current catalog; changes nothing."""
    from sidecar.haproxy.inputs import build_inputs

    settings = settings_of(ctx)

    def go() -> int:
        snapshot = fetch_snapshot(client_of(settings), settings.consul.tag)
        inputs = fenced(build_inputs(settings), snapshot)
        rendered = pipeline.render(snapshot, inputs, None)
        click.echo(rendered.config, nl=False)
        for problem in rendered.desired.problems if rendered.desired else ():
            click.echo(f"skipped: {inert(str(problem), 500)}", err=True)
        return 0

    guarded(go)


@click.command()
@click.pass_context
def once(ctx: click.Context) -> None:
    """One full sync (render, validate, apply, CS), then exit non-zero on failure."""
    from sidecar.haproxy.applier import Applier
    from sidecar.haproxy.inputs import build_inputs
    from sidecar.haproxy.process import HAProxy

    settings = settings_of(ctx)

    def go() -> int:
        client = client_of(settings)
        snapshot = fetch_snapshot(client, settings.consul.tag)
        inputs = fenced(build_inputs(settings), snapshot)
        haproxy = HAProxy(settings)
        haproxy.prepare()
        applier = Applier(haproxy)
        applied = applier.load_rendered(inputs)
        target, plan = pipeline.cycle(snapshot, inputs, applied, applier.running())
        result = applier.apply(plan, target, inputs)
        if result.ok:
            applier.flush(inputs)  # runtime changes: the file a restart starts from follows
        for problem in target.desired.problems if target.desired else ():
            click.echo(f"skipped: {inert(str(problem), 500)}", err=True)
        click.echo(f"{result.kind.value}: {'ok' if result.ok else 'FAILED'}: {result.message}")
        if not result.ok:
            return 1
        if settings.dirac_cs.enabled and target.desired is not None:
            from sidecar.fleet.cs_once import sync_with_lock

            outcome = sync_with_lock(settings, client, target.desired, wait=30.0, who="once")
            click.echo(f"cs: {outcome.status.value}{': ' + outcome.error if outcome.error else ''}")
            return 0 if outcome.ok else 1
        return 0

    guarded(go)


@click.command()
@click.option("--no-haproxy", is_flag=True, help="skip `haproxy -c` (no HAProxy installed here)")
@click.pass_context
def validate(ctx: click.Context, no_haproxy: bool) -> None:
    """Check settings, template and port map, render and run `haproxy -c`; exit 0 / 1.

    Needs no Consul: renders against an empty catalog and a small sample one. Every settings
    error is listed with its key path.
    """
    from sidecar.cli.common import config_path
    from sidecar.haproxy.preflight import preflight

    try:
        settings = load_settings(config_path(ctx))
    except ConfigError as exc:
        for line in exc.lines():
            click.echo(f"error: {line}")
        click.echo(f"FAILED: {len(exc.errors)} settings error(s)")
        sys.exit(1)
    findings = preflight(settings, run_haproxy=not no_haproxy)
    for finding in findings:
        click.echo(f"{'ok' if finding.ok else 'error'}: {finding.what}: {finding.detail}")
    failed = [f for f in findings if not f.ok]
    click.echo(f"FAILED: {len(failed)} problem(s)" if failed else f"OK: {settings.source}")
    sys.exit(1 if failed else 0)
