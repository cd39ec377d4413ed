"""``sidecar check``'s judgement, on plain facts (no processes, no sockets)."""

from __future__ import annotations

import dataclasses
from typing import Any

from sidecar.config.ops import CheckSettings
from sidecar.core.severity import Severity
from sidecar.health.check import (
    CheckResult,
    Facts,
    HAProxyFacts,
    evaluate_check,
    liveness,
    readiness,
)

NOW = 1_900_000_000.0
TH = CheckSettings()
SERVING = HAProxyFacts(master_pid=10, master_running=True, current_worker=11,
                       worker_answering=True, old_workers=1)  # fmt: skip


def status(**changes: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "pid": 100, "started": NOW - 3600, "heartbeat": NOW - 1, "ready": True,
        "catalog_ok_at": NOW - 2, "catalog_error": "", "last_apply_ok": True,
        "last_apply_kind": "runtime", "last_apply_message": "", "public_ports": [9135, 9140],
        "problems": [], "services": 2, "servers_ready": 3, "bind": "127.0.0.1",
    }  # fmt: skip
    base.update(changes)
    return base


def facts(**changes: Any) -> Facts:
    base = Facts(status=status(), daemon_pid_alive=True, haproxy=SERVING)
    return dataclasses.replace(base, **changes)


def run(f: Facts) -> CheckResult:
    return evaluate_check(f, TH, NOW)


def test_healthy_gateway_is_ok() -> None:
    result = run(facts())
    assert result.code is Severity.OK
    assert result.summary.startswith("SIDECAR OK - 2 services, 3 servers ready")
    assert "| catalog_age=2s;60;300 old_workers=1;5" in result.summary
    assert result.details["haproxy"]["status"] == "OK"
    assert result.to_dict()["code"] == 0


def test_haproxy_not_serving_is_critical_even_without_status() -> None:
    dead = HAProxyFacts()
    assert run(facts(haproxy=dead)).code is Severity.CRITICAL
    result = run(Facts(status=None, daemon_pid_alive=None, haproxy=dead))
    assert result.code is Severity.CRITICAL
    assert "haproxy master not answering" in result.summary
    no_worker = dataclasses.replace(SERVING, worker_answering=False)
    assert run(facts(haproxy=no_worker)).code is Severity.CRITICAL


def test_unreadable_runtime_dir_is_unknown() -> None:
    f = Facts(status=None, daemon_pid_alive=None, haproxy=HAProxyFacts(),
              unreadable="cannot read the runtime directory /run/x")  # fmt: skip
    result = run(f)
    assert result.code is Severity.UNKNOWN
    assert result.summary == "SIDECAR UNKNOWN - cannot read the runtime directory /run/x"


def test_daemon_down_is_critical() -> None:
    assert "no status file" in run(facts(status=None)).summary
    gone = run(facts(daemon_pid_alive=False, status=status(heartbeat=NOW - 5)))
    assert gone.code is Severity.CRITICAL
    assert "daemon (pid 100) not running" in gone.summary


def test_pid_invisible_but_heartbeat_fresh_is_ok() -> None:
    # Another PID namespace: the PID is not visible, the heartbeat says the daemon lives.
    assert run(facts(daemon_pid_alive=False)).code is Severity.OK


def test_heartbeat_thresholds() -> None:
    assert run(facts(status=status(heartbeat=NOW - 15))).code is Severity.WARNING
    assert run(facts(status=status(heartbeat=NOW - 45))).code is Severity.CRITICAL
    assert run(facts(status=status(heartbeat=0))).code is Severity.CRITICAL


def test_catalog_age_thresholds_and_error() -> None:
    old = run(facts(status=status(catalog_ok_at=NOW - 90, catalog_error="connection refused")))
    assert old.code is Severity.WARNING
    assert "catalog data 90s old (connection refused)" in old.summary
    assert run(facts(status=status(catalog_ok_at=NOW - 400))).code is Severity.CRITICAL
    assert run(facts(status=status(catalog_ok_at=0))).code is Severity.WARNING


def test_old_workers_over_threshold_warns() -> None:
    many = dataclasses.replace(SERVING, old_workers=6)
    result = run(facts(haproxy=many))
    assert result.code is Severity.WARNING
    assert "6 old haproxy workers" in result.summary


def test_unbound_ports_are_critical() -> None:
    result = run(facts(unbound_ports=(9140,)))
    assert result.code is Severity.CRITICAL
    assert "1 ports not listening: 9140" in result.summary


def test_consul_unreachable_warns() -> None:
    result = run(facts(consul_error="GET /v1/status/leader: ConnectionError"))
    assert result.code is Severity.WARNING
    assert "consul: GET" in result.summary


def test_failed_apply_and_problems_warn() -> None:
    failed = run(facts(status=status(last_apply_ok=False, last_apply_kind="reload",
                                     last_apply_message="haproxy -c rejected")))  # fmt: skip
    assert failed.code is Severity.WARNING
    assert "last reload failed: haproxy -c rejected" in failed.summary
    skipped = run(facts(status=status(problems=["Framework/X: port conflict"])))
    assert skipped.code is Severity.WARNING
    assert "1 catalog entries skipped" in skipped.summary
    assert run(facts(status=status(ready=False))).code is Severity.WARNING


def test_certificate_summary_from_status() -> None:
    certs = {"status": "CRITICAL", "summary": "certificates CRITICAL: 1 of 3: x"}
    result = run(facts(status=status(certs=certs)))
    assert result.code is Severity.CRITICAL
    assert "certificates CRITICAL: 1 of 3" in result.summary
    assert run(facts(status=status(certs={"status": "OK", "summary": "ok"}))).code is Severity.OK


def test_worst_part_comes_first_in_the_summary() -> None:
    result = run(facts(consul_error="down", unbound_ports=(9135,)))
    assert result.code is Severity.CRITICAL
    text = result.summary.split(" - ", 1)[1]
    assert text.index("ports not listening") < text.index("consul: down")


def test_liveness_and_readiness() -> None:
    assert liveness(status(), NOW, TH)[0]
    assert not liveness(status(heartbeat=NOW - 60), NOW, TH)[0]
    assert not liveness(None, NOW, TH)[0]
    assert readiness(status(), NOW, TH) == (True, "ready, catalog 2s old")
    assert readiness(status(ready=False), NOW, TH) == (False, "no successful apply yet")
    assert not readiness(status(last_apply_ok=False), NOW, TH)[0]
    assert readiness(status(catalog_ok_at=NOW - 400), NOW, TH) == (
        False, "catalog data stale (400s old)")  # fmt: skip
