"""``sidecar status`` for people: the per-service rows of the status record and the one-screen
table made of them (pure: values in, lines out).

The daemon keeps one row per DIRAC service it exposes in ``status.json`` (``track_backends``,
called when it records an apply): public port, ready and total servers, and when that pair
last changed. ``status_lines`` turns the record, plus what the command line learnt from
Consul (the CS lock holder, the gateways that lag), into a header and a table. Everything
from the catalog or Consul goes through ``base.inert`` before it reaches the terminal.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from sidecar.base.inert import inert
from sidecar.core.model import DesiredState

CELL = 40  # characters of one catalog value in a cell, escapes included
MAX_ROWS = 200  # a gateway with thousands of services: the rest is counted, not printed


def track_backends(previous: Sequence[Mapping[str, Any]], desired: DesiredState | None,
                   now: float) -> list[dict[str, Any]]:  # fmt: skip
    """One row per exposed service; ``changed`` stays as it was while ready/total are equal."""
    if desired is None:
        return [dict(row) for row in previous]
    before = {str(row.get("service")): row for row in previous}
    rows = []
    for backend in sorted(desired.listed, key=lambda b: b.path):
        ready, total = backend.ready_count, len(backend.servers)
        old = before.get(backend.path)
        same = old is not None and (old.get("ready"), old.get("total")) == (ready, total)
        changed = old.get("changed", now) if same and old is not None else now
        rows.append({"service": backend.path, "port": backend.public_port, "ready": ready,
                     "total": total, "changed": changed})  # fmt: skip
    return rows


def ago(seconds: float | None) -> str:
    """ "42s", "7m", "3h", "2d"; "-" when unknown."""
    if seconds is None or seconds < 0:
        return "-"
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds // size:.0f}{unit}"
    return f"{seconds:.0f}s"


def _number(value: object) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value)


def _problems_of(service: str, problems: Sequence[str]) -> str:
    mine = [p for p in problems if p.startswith(service + ":") or p.startswith(service + " ")]
    return inert(mine[0], CELL) + (f" (+{len(mine) - 1})" if len(mine) > 1 else "") if mine else ""


def header(record: Mapping[str, Any], now: float, holder: str | None,
           lagging: Sequence[str] | None) -> list[str]:  # fmt: skip
    ok_at = _number(record.get("catalog_ok_at"))
    age = ago(now - ok_at) if ok_at else "never read"
    drain = record.get("drain") or {}
    state = "READY" if record.get("ready") else "NOT READY"
    if isinstance(drain, Mapping) and drain:
        state += f", DRAINED ({inert(str(drain.get('phase', '')), 20)})"
    if not record.get("last_apply_ok", True):
        state += f", last apply failed: {inert(str(record.get('last_apply_message', '')), 80)}"
    own = " (this gateway)" if record.get("lock_holder") else ""
    who = "?" if holder is None else (inert(holder, 80) or "nobody")
    lag = "?" if lagging is None else (", ".join(inert(n, CELL) for n in lagging) or "none")
    return [
        f"gateway: {state}; pid {record.get('pid')}, generation {record.get('generation') or '-'}",
        f"catalog data: {age} old, index {record.get('catalog_index')}; "
        f"CS writer: {who}{own}; lagging: {lag}",
    ]


def status_lines(record: Mapping[str, Any], now: float, holder: str | None = None,
                 lagging: Sequence[str] | None = None) -> list[str]:  # fmt: skip
    """The whole screen: header, then SERVICE PORT READY/TOTAL CHANGED PROBLEMS."""
    lines = header(record, now, holder, lagging)
    rows = [r for r in record.get("backends") or [] if isinstance(r, Mapping)]
    problems = [str(p) for p in record.get("problems") or []]
    lines.append(f"{'SERVICE':<40} {'PORT':>5} {'READY':>11} {'CHANGED':>8}  PROBLEMS")
    for row in rows[:MAX_ROWS]:
        service = str(row.get("service", ""))
        ready, total = row.get("ready"), row.get("total")
        changed = _number(row.get("changed"))
        counts = f"{ready}/{total}"
        mark = "" if ready else "  (refusing)"
        lines.append(
            f"{inert(service, CELL):<40} {row.get('port'):>5} {counts:>11} "
            f"{ago(now - changed) if changed else '-':>8}  "
            f"{_problems_of(service, problems)}{mark}".rstrip()
        )
    if len(rows) > MAX_ROWS:
        lines.append(f"... and {len(rows) - MAX_ROWS} more services (--json for all)")
    elif not rows:
        lines.append("(no service exposed)")
    listed = {str(r.get("service", "")) for r in rows}
    other = [p for p in problems if not any(p.startswith(s) for s in listed)]
    if other:
        lines.append(f"skipped catalog entries: {len(other)}, first: {inert(other[0], 120)}")
    return lines
