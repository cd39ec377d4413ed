"""Operations commands: ``check``, ``certs`` and ``files`` (CLI wiring, no logic).

Added to the group in ``sidecar.cli.app``; the judgement lives in ``sidecar.health.check`` and
``health.certs``, the probing in ``health.checkfacts`` and ``health.certprobe`` (in process: a
command is short-lived), the shipped files in ``sidecar.data``.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING

import click

from sidecar import data
from sidecar.base.errors import SidecarError
from sidecar.cli.common import client_of, settings_of
from sidecar.config.schema import Settings
from sidecar.core.severity import Severity

if TYPE_CHECKING:
    from sidecar.health.certjob import ProbeTarget


@click.command()
@click.option("--json", "as_json", is_flag=True, help="one JSON object instead of one line")
@click.option("--no-consul", is_flag=True, help="do not ask Consul for its leader")
@click.pass_context
def check(ctx: click.Context, as_json: bool, no_consul: bool) -> None:
    """Health probe: exit 0 OK, 1 WARNING, 2 CRITICAL, 3 UNKNOWN (Nagios convention)."""
    from sidecar.health.check import CheckResult, evaluate_check
    from sidecar.health.checkfacts import gather

    settings = settings_of(ctx, error_code=int(Severity.UNKNOWN))
    try:
        facts = gather(settings, consul=not no_consul)
        result = evaluate_check(facts, settings.check, time.time())
    except Exception as exc:  # the probe itself broke: that is UNKNOWN, never a traceback
        result = CheckResult(Severity.UNKNOWN, f"SIDECAR UNKNOWN - check failed: {exc}")
    if as_json:
        click.echo(json.dumps(result.to_dict(), sort_keys=True))
    else:
        click.echo(result.summary)
    sys.exit(int(result.code))


def _catalog_targets(settings: Settings) -> list[ProbeTarget]:
    from sidecar.consul.fetch import fetch_snapshot
    from sidecar.core import pipeline
    from sidecar.haproxy.inputs import build_inputs
    from sidecar.health.certjob import targets
    from sidecar.host.netfacts import fenced

    client = client_of(settings)
    snapshot = fetch_snapshot(client, settings.consul.tag)
    rendered = pipeline.render(snapshot, fenced(build_inputs(settings), snapshot), None)
    return list(targets(rendered.desired)) if rendered.desired else []


def _explicit_targets(values: Sequence[str]) -> list[ProbeTarget]:
    from sidecar.health.certjob import ProbeTarget

    found: list[ProbeTarget] = []
    for value in values:
        host, sep, port = value.rpartition(":")
        if not sep or not port.isdigit():
            raise click.BadParameter(f"{value!r} is not ADDRESS:PORT", param_hint="--target")
        address = host.strip("[]")
        found.append(ProbeTarget("target", value, address, int(port), ""))
    return found


@click.command()
@click.option("--json", "as_json", is_flag=True, help="the whole report as JSON")
@click.option(
    "--target",
    "explicit",
    multiple=True,
    metavar="ADDRESS:PORT",
    help="check this server instead of the catalog's (repeatable)",
)
@click.pass_context
def certs(ctx: click.Context, as_json: bool, explicit: tuple[str, ...]) -> None:
    """Certificate report for every backend server; exit 0 OK, 1 WARNING, 2 CRITICAL."""
    from sidecar.core.certs import CertReport
    from sidecar.health.certjob import local_cert_files
    from sidecar.health.certprobe import Prober, check_local_files, probe_all

    settings = settings_of(ctx)
    ops = settings
    now = time.time()
    try:
        wanted = _explicit_targets(explicit) if explicit else _catalog_targets(settings)
        prober = Prober.build(ops.certs, settings.gateway.names, ops.check)
        report = probe_all(prober, wanted, now)
    except SidecarError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(int(Severity.UNKNOWN))
    local = local_cert_files(settings)
    report = CertReport(report.findings + check_local_files(local, now, ops.check), now)
    if as_json:
        click.echo(json.dumps(report.to_dict(), sort_keys=True, indent=1))
    else:
        for finding in report.findings:
            days = f"{finding.days_left:.0f} days left" if finding.days_left is not None else ""
            why = "; ".join(finding.problems) or days
            click.echo(f"{finding.status.label:<8} {finding.where}: {why}")
        click.echo(report.summary)
    sys.exit(int(report.status))


@click.command()
@click.argument("name", required=False, type=click.Choice(data.SHIPPED))
@click.option("--path", "show_path", is_flag=True, help="print where the file is, not its content")
def files(name: str | None, show_path: bool) -> None:
    """List the files shipped in the package, or print one (template, port map, example
    settings, systemd unit): `sidecar files sidecar.example.toml > /etc/dirac-sidecar/...`."""
    if name is None:
        for shipped in data.SHIPPED:
            click.echo(f"{shipped:<24} {data.path(shipped)}")
        return
    click.echo(str(data.path(name)) if show_path else data.read(name), nl=show_path)
