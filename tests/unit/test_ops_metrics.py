"""The issue-15 metrics: apply and propagation histograms, drain, fleet and certificate-name
gauges, fed the way the daemon feeds them (``Operations`` and ``update_from_status``)."""

from __future__ import annotations

import time

from sidecar.config.schema import Settings
from sidecar.daemon.ops import Operations
from sidecar.health.metrics import Metrics, update_from_status
from sidecar.health.notify import Notifier
from sidecar.health.opsmetrics import exported_names

NOW = 1_900_000_000.0


def sample(metrics: Metrics, name: str, **labels: str) -> float | None:
    return metrics.registry.get_sample_value(name, labels or None)


def test_gauges_from_the_status_record() -> None:
    m = Metrics()
    servers = [
        {"backend": "Framework_A", "server": "s1", "days_left": 9.0, "missing_names": 2},
        {"backend": "Framework_A", "server": "s2", "days_left": 300.0, "missing_names": 0},
        {"backend": "Framework_A", "server": "s3", "days_left": None, "missing_names": 0},
    ]
    certs = {"status": "CRITICAL", "servers": servers}
    update_from_status(m, {"applied_index": 77, "drain": {"phase": "grace"}, "certs": certs}, NOW)
    assert sample(m, "sidecar_applied_catalog_index") == 77
    assert sample(m, "sidecar_drained") == 1
    assert sample(m, "sidecar_certificate_names_missing", backend="Framework_A", server="s1") == 2
    assert sample(m, "sidecar_certificate_names_missing", backend="Framework_A", server="s2") == 0
    # s3's certificate was not read (down, not TLS): nothing is known of its names
    assert sample(m, "sidecar_certificate_names_missing", backend="Framework_A", server="s3") is (
        None)
    update_from_status(m, {"drain": {}, "certs": {"servers": []}}, NOW)
    assert sample(m, "sidecar_drained") == 0
    assert (
        sample(m, "sidecar_certificate_names_missing", backend="Framework_A", server="s1") is None
    )


def test_applies_and_propagation_observed_by_kind() -> None:
    ops = Operations(Settings(), notifier=Notifier(env={}))
    m = ops.metrics
    ops.catalog_seen(time.monotonic() - 0.05)
    ops.catalog_seen(time.monotonic())  # the first change of a batch counts
    ops.applied("runtime", 0.002, None)
    ops.applied("reload", 0.3, None)  # no change taken since: no propagation
    ops.applied("none", 0.0, None)
    assert sample(m, "sidecar_apply_duration_seconds_count", kind="runtime") == 1
    assert sample(m, "sidecar_apply_duration_seconds_count", kind="reload") == 1
    assert sample(m, "sidecar_apply_duration_seconds_count", kind="none") is None
    assert sample(m, "sidecar_propagation_seconds_count") == 1
    assert 0.05 <= (sample(m, "sidecar_propagation_seconds_sum") or 0) < 5
    ops.catalog_seen(time.monotonic())
    ops.applied("none", 0.0, None)  # a change with nothing to apply: not a propagation
    ops.applied("runtime", 0.001, None)
    assert sample(m, "sidecar_propagation_seconds_count") == 1
    assert sample(m, "sidecar_cs_enabled") == 0


def test_exported_names_cover_every_family() -> None:
    names = exported_names(Metrics().registry)
    for name in ("sidecar_apply_duration_seconds_bucket", "sidecar_propagation_seconds_count",
                 "sidecar_reload_failures_total", "sidecar_ready", "sidecar_drained",
                 "sidecar_certificate_names_missing", "sidecar_applied_catalog_index"):  # fmt: skip
        assert name in names
    assert "sidecar_reload_failures" not in names
