"""The operations metrics of issue 15: latency histograms, drain, fleet and certificate-name
gauges (adapter: prometheus_client objects in the daemon's own registry).

Registered by ``health.metrics.Metrics`` beside the others and fed the same way: the
histograms by the daemon's apply path (``daemon.ops.Operations.applied``), the gauges from the
status record at every heartbeat (``update``). The alert rules and the dashboard shipped in
``sidecar/data`` (``alerts.yml``, ``dashboard.json``) name these metrics; a test compares their
expressions with what this registry exports.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from prometheus_client import CollectorRegistry, Gauge, Histogram

from sidecar.health.gaugetable import GaugeTable

NS = "sidecar"
# Runtime API changes take milliseconds, reloads up to seconds (bench/: runtime ~1-5 ms,
# reload ~100-300 ms): the buckets cover both ends.
APPLY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
PROPAGATION_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


class OpsMetrics:
    def __init__(self, r: CollectorRegistry) -> None:
        self.apply_duration = Histogram(
            f"{NS}_apply_duration_seconds",
            "Duration of successful applies, by kind (runtime, reload, start)",
            ["kind"],
            registry=r,
            buckets=APPLY_BUCKETS,
        )
        self.propagation = Histogram(
            f"{NS}_propagation_seconds",
            "From a catalog answer that changed something to its apply in HAProxy",
            registry=r,
            buckets=PROPAGATION_BUCKETS,
        )
        self.applied_index = Gauge(
            f"{NS}_applied_catalog_index",
            "Catalog index of the last applied cycle (the fleet compares them)",
            registry=r,
        )
        self.drained = Gauge(f"{NS}_drained", "1 while this gateway is drained", registry=r)
        self.cs_enabled = Gauge(
            f"{NS}_cs_enabled", "1 when this gateway may write the CS (dirac_cs)", registry=r
        )
        self.names_missing = GaugeTable(
            f"{NS}_certificate_names_missing",
            "Gateway names a backend server certificate lacks in its subjectAltName",
            ["backend", "server"],
            r,
        )

    def observe_apply(self, kind: str, seconds: float) -> None:
        self.apply_duration.labels(kind=kind).observe(max(0.0, seconds))

    def observe_propagation(self, seconds: float) -> None:
        self.propagation.observe(max(0.0, seconds))

    def update(self, status: Mapping[str, Any], certs_changed: bool = True) -> None:
        """The gauges from one status record (``Status.record()``)."""
        index = status.get("applied_index")
        if isinstance(index, int) and not isinstance(index, bool):
            self.applied_index.set(index)
        self.drained.set(1 if status.get("drain") else 0)
        certs = status.get("certs")
        if not certs_changed or not isinstance(certs, Mapping):
            return
        rows: dict[tuple[str, ...], float] = {}
        for item in certs.get("servers") or []:
            missing = item.get("missing_names") if isinstance(item, Mapping) else None
            read = isinstance(item, Mapping) and isinstance(item.get("days_left"), int | float)
            # a certificate that could not be read lacks no name we know of: no series (as
            # for its days left), rather than a 0 that says its names are fine
            if read and isinstance(missing, int) and not isinstance(missing, bool):
                rows[(str(item.get("backend")), str(item.get("server")))] = missing
        self.names_missing.replace(rows)


def exported_names(registry: CollectorRegistry) -> frozenset[str]:
    """Every series name ``registry`` exports (``_total``, ``_bucket``, ``_sum``, ``_count``
    included), whether or not a labelled child exists yet: what rules may name."""
    suffixes = {"counter": ("_total",), "histogram": ("_bucket", "_sum", "_count"),
                "summary": ("_sum", "_count")}  # fmt: skip
    names: set[str] = set()
    for family in registry.collect():
        names.update(family.name + s for s in suffixes.get(family.type, ("",)))
    return frozenset(names)
