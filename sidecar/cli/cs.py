"""``sidecar cs diff``, ``sidecar cs sync`` and ``sidecar status [--fleet]`` (command line).

Added to the group in ``sidecar.cli.app``. Parse options, load settings, call in; the work is done
by the pipeline, the CS writer, the lock and the gateway registry. Exit codes: ``cs diff`` / ``cs
sync`` 0 = nothing to change, 1 = a change (shown, or written), 2 = error (Consul unreachable, CS
unreadable, lock not obtained: nothing written). ``status`` 0 = fine, 1 = not ready / a gateway lags
or is not passing, 2 = error.
"""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Callable

import click

from sidecar.base.errors import SidecarError
from sidecar.base.inert import inert
from sidecar.cli.common import client_of, guarded, settings_of
from sidecar.config.schema import Settings
from sidecar.consul.client import ConsulClient
from sidecar.consul.fetch import fetch_snapshot
from sidecar.core import pipeline
from sidecar.core.model import DesiredState
from sidecar.dirac_cs.writer import CSWriteStatus
from sidecar.fleet.cs_once import sync_with_lock, writer
from sidecar.fleet.lock import CSLock
from sidecar.fleet.view import GatewayInfo, fleet, lagging
from sidecar.health.status import read_status
from sidecar.health.statusview import status_lines


def _exit_with(func: Callable[[], int]) -> None:
    guarded(func, error_code=2)


def _desired(settings: Settings, client: ConsulClient) -> DesiredState:
    from sidecar.haproxy.inputs import build_inputs
    from sidecar.host.netfacts import fenced

    snapshot = fetch_snapshot(client, settings.consul.tag)
    desired = pipeline.render(snapshot, fenced(build_inputs(settings), snapshot), None).desired
    if desired is None:
        raise SidecarError("no desired state could be computed")
    return desired


@click.group("cs")
def cs_group() -> None:
    """The DIRAC Configuration Service URL lists."""


@cs_group.command("diff")
@click.pass_context
def cs_diff(ctx: click.Context) -> None:
    """Print the CS change a sync would make; exit 0 none, 1 some, 2 error."""

    def go() -> int:
        settings = settings_of(ctx)
        client = client_of(settings)
        lock = CSLock.from_settings(client, settings.dirac_cs, "")  # never acquired
        changes, problems, text = writer(settings, client, lock).diff(_desired(settings, client))
        for problem in problems:
            click.echo(f"warning: {problem}", err=True)
        click.echo(text, nl=False)
        return 1 if changes else 0

    _exit_with(go)


@cs_group.command("sync")
@click.option("--wait", default=0.0, show_default=True, help="seconds to wait for the lock")
@click.pass_context
def cs_sync(ctx: click.Context, wait: float) -> None:
    """Write the CS changes (holding the one-writer lock); exit 0 none, 1 written, 2 error."""

    def go() -> int:
        settings = settings_of(ctx)
        if not settings.dirac_cs.enabled:
            raise SidecarError("dirac_cs.enabled is false: nothing written")
        client = client_of(settings)
        desired = _desired(settings, client)  # before the lock: fail early when Consul is down
        outcome = sync_with_lock(settings, client, desired, wait, "cli")
        for problem in outcome.problems:
            click.echo(f"warning: {problem}", err=True)
        if not outcome.ok or outcome.status is CSWriteStatus.NOT_HOLDER:
            raise SidecarError(outcome.error or f"nothing written: {outcome.status.value}")
        for change in outcome.changes:
            click.echo(change)
        return 1 if outcome.status is CSWriteStatus.WRITTEN else 0

    _exit_with(go)


FIELD_LIMIT = 64  # characters of one catalog value in the fleet table, escapes included
HOLDER_LIMIT = 128  # of the CS writer lock's value (``<node>/<gateway>``)


def fleet_table(gateways: list[GatewayInfo], behind: set[str], holder: str) -> list[str]:
    """The lines of ``status --fleet``; every value from Consul is made inert first.

    Names, nodes, check status, generation and the lock value are whatever was registered: an
    ESC sequence would reach the terminal, a newline would forge a row. ``inert`` escapes them
    and caps their length (a 1 MB node name must not scroll the table away).
    """

    def cell(value: str) -> str:
        return inert(value, limit=FIELD_LIMIT)

    lines = [f"{'GATEWAY':<32} {'NODE':<20} {'STATUS':<9} {'INDEX':>10} GENERATION"]
    for gw in gateways:
        mark = "  LAGGING" if gw.name in behind else ""
        lines.append(
            f"{cell(gw.name):<32} {cell(gw.node):<20} {cell(gw.status):<9} "
            f"{gw.catalog_index:>10} {cell(gw.generation) or '-'}{mark}"
        )
    lines.append(f"CS writer: {inert(holder, limit=HOLDER_LIMIT) or '(nobody)'}")
    return lines


def _fleet(settings: Settings, as_json: bool) -> int:
    client = client_of(settings)
    gateways = fleet(client)
    behind = set(lagging(gateways))
    holder = CSLock.from_settings(client, settings.dirac_cs, "").holder()
    if as_json:
        rows = [{**dataclasses.asdict(gw), "lagging": gw.name in behind} for gw in gateways]
        click.echo(json.dumps({"gateways": rows, "cs_writer": holder}, sort_keys=True, indent=1))
    else:
        for line in fleet_table(gateways, behind, holder):
            click.echo(line)
    if not gateways:
        click.echo("no gateway registered", err=True)
        return 1
    # a drained gateway (Consul maintenance) is out on purpose: not a failure
    return 1 if behind or any(gw.status not in ("passing", "maintenance") for gw in gateways) else 0


def _fleet_facts(settings: Settings) -> tuple[str | None, tuple[str, ...] | None]:
    """(CS lock holder, gateways that lag) for the header; None each when Consul does not say."""
    quick = dataclasses.replace(settings.consul, timeout=min(settings.consul.timeout, 2.0))
    try:  # a header detail: Consul down must not hold the table for long
        client = client_of(dataclasses.replace(settings, consul=quick))
        behind = lagging(fleet(client))
        holder = CSLock.from_settings(client, settings.dirac_cs, "").holder()
    except SidecarError:
        return None, None
    return holder, behind


@click.command("status")
@click.option("--fleet", "show_fleet", is_flag=True, help="every gateway and which ones lag")
@click.option("--json", "as_json", is_flag=True, help="the record as JSON instead of a table")
@click.pass_context
def status(ctx: click.Context, show_fleet: bool, as_json: bool) -> None:
    """This gateway's state, or with --fleet every gateway's; exit 0 fine, 1 not, 2 error."""

    def go() -> int:
        settings = settings_of(ctx)
        if show_fleet:
            return _fleet(settings, as_json)
        data = read_status(settings.runtime_dir)
        if data is None:
            raise SidecarError(f"no status file in {settings.runtime_dir}: is the daemon running?")
        if as_json:
            click.echo(json.dumps(data, sort_keys=True, indent=1))
        else:
            for line in status_lines(data, time.time(), *_fleet_facts(settings)):
                click.echo(line)
        return 0 if data.get("ready") else 1

    _exit_with(go)
