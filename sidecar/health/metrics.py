"""Prometheus metrics (adapter state, fed by the daemon).

Sits at the end of the flow, beside the status file: the daemon feeds :class:`Metrics` the
same status record it writes to ``status.json`` (one call per heartbeat, plus one per reload
for its duration); ``health.endpoint`` serves them and answers the health endpoints from the
last record it was given. Each daemon has its own ``CollectorRegistry`` (never the
process-global default), so tests and restarts do not collide.

Counters mirror the daemon's cumulative counts in the status record: they advance by the
difference between two records, so they never go backwards.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)

from sidecar.health.gaugetable import GaugeTable
from sidecar.health.opsmetrics import OpsMetrics

log = logging.getLogger(__name__)
NS = "sidecar"
RELOAD_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


class Metrics:
    """Every metric of one daemon, in its own registry."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.catalog_age = Gauge(
            f"{NS}_catalog_sync_age_seconds",
            "Seconds since the catalog was last known fresh",
            registry=r,
        )
        self.catalog_errors = Counter(
            f"{NS}_catalog_errors", "Catalog read failures (new error episodes)", registry=r
        )
        self.consul_index = Gauge(f"{NS}_consul_index", "Consul index of the catalog", registry=r)
        self.consul_requests = Counter(
            f"{NS}_consul_requests", "Requests sent to Consul", registry=r
        )
        self.applies = Counter(f"{NS}_applies", "Changes applied, by kind", ["kind"], registry=r)
        self.reload_duration = Histogram(
            f"{NS}_reload_duration_seconds",
            "Duration of HAProxy reloads",
            registry=r,
            buckets=RELOAD_BUCKETS,
        )
        self.reload_failures = Counter(
            f"{NS}_reload_failures", "Failed HAProxy reloads", registry=r
        )
        self.old_workers = Gauge(
            f"{NS}_haproxy_old_workers", "Old HAProxy workers still draining", registry=r
        )
        self.servers_up = GaugeTable(
            f"{NS}_backend_servers_up", "Servers ready per backend", ["backend"], r
        )
        self.cert_days = GaugeTable(
            f"{NS}_certificate_days_left",
            "Days until a backend server certificate expires",
            ["backend", "server"],
            r,
        )
        self.lock_holder = Gauge(
            f"{NS}_lock_holder", "1 when this gateway holds the CS writer lock", registry=r
        )
        self.problems = Gauge(f"{NS}_problems", "Catalog entries skipped", registry=r)
        self.ready = Gauge(f"{NS}_ready", "1 after the first successful apply", registry=r)
        self.heartbeat = Gauge(
            f"{NS}_heartbeat_timestamp_seconds",
            "Wall clock of the daemon's last heartbeat",
            registry=r,
        )
        self.ops = OpsMetrics(r)  # latency, drain, fleet, certificate names (issue 15)
        self._last: dict[str, float] = {}
        self._last_error = ""
        self.status: dict[str, Any] | None = None  # the last record, for the health endpoints

    def _advance(self, counter: Counter, key: str, value: object) -> None:
        if not isinstance(value, int | float) or isinstance(value, bool):
            return
        delta = float(value) - self._last.get(key, 0.0)
        if delta > 0:
            counter.inc(delta)
        self._last[key] = float(value)

    def observe_reload(self, seconds: float) -> None:
        self.reload_duration.observe(seconds)

    def render(self) -> bytes:
        return generate_latest(self.registry)


def update_from_status(
    metrics: Metrics,
    status: Mapping[str, Any],
    now: float,
    servers_up: Mapping[str, int] | None = None,
    old_workers: int | None = None,
    lock_holder: bool | None = None,
    certs_changed: bool = True,
) -> None:
    """Feed one status record (``Status.record()``) into ``metrics``.

    The per-server series (certificate days, names missing) are rebuilt only when
    ``certs_changed``, the per-backend ones only when ``servers_up`` is given: an idle round
    at 1,000 services costs what changed.

    ``servers_up`` (backend -> ready servers), ``old_workers`` and ``lock_holder`` are taken
    from the record (keys of the same names) when not given.
    """
    m = metrics
    ok_at = status.get("catalog_ok_at") or 0.0
    m.catalog_age.set(max(0.0, now - ok_at) if ok_at else float("nan"))
    error = str(status.get("catalog_error") or "")
    if error and error != m._last_error:
        m.catalog_errors.inc()
    m._last_error = error
    m.consul_index.set(float(status.get("catalog_index") or 0))
    m._advance(m.consul_requests, "consul_requests", status.get("consul_requests"))
    for kind, count in (status.get("applies") or {}).items():
        m._advance(m.applies.labels(kind=str(kind)), f"applies/{kind}", count)
    m._advance(m.reload_failures, "reload_failures", status.get("reload_failures"))
    workers = old_workers if old_workers is not None else status.get("old_workers")
    if isinstance(workers, int):
        m.old_workers.set(workers)
    up = servers_up if servers_up is not None else status.get("servers_up")
    if isinstance(up, Mapping):
        m.servers_up.replace({(str(backend),): count for backend, count in up.items()})
    holder = lock_holder if lock_holder is not None else status.get("lock_holder")
    if isinstance(holder, bool):
        m.lock_holder.set(1 if holder else 0)
    m.problems.set(len(status.get("problems") or []))
    m.ready.set(1 if status.get("ready") else 0)
    m.heartbeat.set(float(status.get("heartbeat") or 0.0))
    if certs_changed:
        _update_certs(m, status.get("certs"))
    m.ops.update(status, certs_changed)
    m.status = dict(status)


def _update_certs(m: Metrics, certs: object) -> None:
    if not isinstance(certs, Mapping):
        return
    rows: dict[tuple[str, ...], float] = {}
    for item in certs.get("servers") or []:
        days = item.get("days_left") if isinstance(item, Mapping) else None
        if isinstance(days, int | float):
            rows[(str(item.get("backend")), str(item.get("server")))] = days
    m.cert_days.replace(rows)


# --- the HTTP endpoint ------------------------------------------------------------------------
