"""``sidecar drain`` and ``sidecar undrain`` (command line; added in ``sidecar.cli.app``).

Parse options, write or remove the drain state (``host.drainfile``), then follow the daemon's
progress until it is over: the daemon does the work (``daemon.drain``: Consul maintenance, no
CS writing, frontends paused after the grace), the decisions are ``core.drain``'s. Progress
comes from ``status.json`` (the phase the daemon applied) and from HAProxy itself (open
connections of every worker, when this account may use its sockets).

Exit codes: ``drain`` 0 = drained (no connection left), 1 = the deadline passed with
connections left (the gateway stays drained), 2 = error (no daemon, bad option);
``undrain`` 0 = serving again, 1 = the daemon did not confirm in time, 2 = error.
"""

from __future__ import annotations

import time

import click

from sidecar.base.errors import SidecarError
from sidecar.cli.common import guarded, settings_of
from sidecar.config.durations import parse_duration, show_duration
from sidecar.config.schema import Settings
from sidecar.core.drain import DrainState, applied_phase, progress
from sidecar.health.status import read_status
from sidecar.host.drainfile import read_drain, remove_drain, write_drain

UNDRAIN_WAIT = 30.0  # seconds for the daemon to confirm an undrain (a round is ~2 s)


def _duration(ctx: click.Context, param: click.Parameter, value: str | None) -> float | None:
    if value is None:
        return None
    try:
        return parse_duration(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None


def _connections(settings: Settings) -> int | None:
    """Open connections of every worker, asked of HAProxy (None: its sockets do not answer)."""
    from sidecar.haproxy.frontends import load
    from sidecar.haproxy.process import HAProxy

    found = load(HAProxy(settings), timeout=1.0)
    return None if found is None else found.connections


def _phase(settings: Settings) -> tuple[str | None, int | None]:
    status = read_status(settings.runtime_dir)
    applied = applied_phase(status, time.time(), settings.check.heartbeat_critical)
    drain = (status or {}).get("drain") or {}
    reported = drain.get("connections") if isinstance(drain, dict) else None
    return applied, reported if isinstance(reported, int) else None


def _follow(settings: Settings, state: DrainState, interval: float) -> int:
    """Print progress until the drain is over; bounded by the state's deadline."""
    last = ""
    while True:
        applied, reported = _phase(settings)
        if applied is None:
            raise SidecarError(
                "the daemon does not run (no fresh heartbeat in status.json): the drain is "
                "recorded and takes effect when it starts"
            )
        connections = _connections(settings)
        step = progress(state, time.time(), applied, reported if connections is None
                        else connections)  # fmt: skip
        if step.line != last:
            click.echo(step.line)
            last = step.line
        if step.done:
            return 0 if step.drained else 1
        time.sleep(interval)


@click.command("drain")
@click.option(
    "--grace",
    callback=_duration,
    metavar="DURATION",
    help="new connections still accepted this long (default [drain] grace)",
)
@click.option(
    "--deadline",
    callback=_duration,
    metavar="DURATION",
    help="over this long after the start, connections left or not (default [drain] deadline)",
)
@click.option(
    "--reason",
    default="sidecar drain",
    show_default=True,
    help="shown in Consul's maintenance note and in `status`",
)
@click.option("--no-wait", is_flag=True, help="record the drain and return at once")
@click.option("--interval", default=2.0, show_default=True, help="seconds between progress lines")
@click.pass_context
def drain(ctx: click.Context, grace: float | None, deadline: float | None, reason: str,
          no_wait: bool, interval: float) -> None:  # fmt: skip
    """Take this gateway out of service without failing a call; exit 0 when drained.

    Its names leave the CS URL lists and Consul DNS at once, new connections are accepted for
    the grace, then refused while the open ones finish. Running it again on a drained gateway
    follows the drain already under way. `sidecar undrain` puts the gateway back.
    """

    def go() -> int:
        settings = settings_of(ctx)
        state, error = read_drain(settings.runtime_dir)
        if error:
            raise SidecarError(error)
        if state is None:
            g = settings.drain.grace if grace is None else grace
            d = settings.drain.deadline if deadline is None else deadline
            if d < g:
                raise SidecarError(f"the deadline ({show_duration(d)}) is shorter than the grace")
            state = DrainState(time.time(), g, d, reason[:200])
            if not settings.runtime_dir.is_dir():
                raise SidecarError(f"no runtime directory {settings.runtime_dir}: no daemon here")
            write_drain(settings.runtime_dir, state)
            click.echo(f"drain recorded: grace {show_duration(g)}, deadline {show_duration(d)}")
        else:
            click.echo("already drained: following the drain under way")
        return 0 if no_wait else _follow(settings, state, max(0.2, interval))

    guarded(go, error_code=2)


@click.command("undrain")
@click.option("--no-wait", is_flag=True, help="remove the drain and return at once")
@click.pass_context
def undrain(ctx: click.Context, no_wait: bool) -> None:
    """Put a drained gateway back in service (CS URL lists, Consul DNS, new connections)."""

    def go() -> int:
        settings = settings_of(ctx)
        if not remove_drain(settings.runtime_dir):
            click.echo("not drained")
        if no_wait:
            return 0
        deadline = time.monotonic() + UNDRAIN_WAIT
        while time.monotonic() < deadline:
            applied, _ = _phase(settings)
            if applied is None:
                raise SidecarError("the daemon does not run: it serves when it starts")
            if applied == "":
                click.echo("serving: frontends accept, registration out of maintenance")
                return 0
            time.sleep(0.5)
        click.echo(f"the daemon still reports {applied} after {UNDRAIN_WAIT:g}s")
        return 1

    guarded(go, error_code=2)
