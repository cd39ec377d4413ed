"""``sidecar check``: is this gateway healthy? (pure; the facts come from ``checkfacts``)

Runs as its own process, possibly in another container sharing the network namespace and the
runtime directory: nothing talks to the daemon except through ``status.json``. The adapter
``sidecar.health.checkfacts.gather`` reads that file and looks at HAProxy (master CLI, admin socket,
psutil), the public ports and Consul; the pure :func:`evaluate_check` turns those facts into a
Nagios result (0 OK, 1 WARNING, 2 CRITICAL, 3 UNKNOWN), and :func:`liveness` /
:func:`readiness` give the daemon's own ``/healthz`` and ``/readyz`` the same judgement.

PIDs from another PID namespace are invisible, so the daemon counts as dead only when its PID
is gone *and* its heartbeat has stopped; HAProxy's worker counts as alive when it answers on
the admin socket.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from sidecar.config.ops import CheckSettings
from sidecar.core.drain import DrainState, phase
from sidecar.core.severity import Severity, worst

DEAD_AFTER = 3.0  # seconds without a heartbeat after which a vanished daemon PID means dead


@dataclass(frozen=True, slots=True)
class HAProxyFacts:
    master_pid: int = 0  # 0: no master answers on the master CLI
    master_running: bool = False  # a haproxy master process is visible (psutil)
    current_worker: int | None = None
    worker_answering: bool = False  # the admin socket answers (show info)
    old_workers: int = 0
    failed_reloads: int = 0


@dataclass(frozen=True, slots=True)
class Facts:
    """Everything ``check`` observed, as plain values."""

    status: Mapping[str, Any] | None  # status.json, None when missing or unreadable
    daemon_pid_alive: bool | None  # None: no PID to look at
    haproxy: HAProxyFacts
    unbound_ports: tuple[int, ...] = ()
    consul_error: str = ""  # "" when /v1/status/leader answered with a leader
    unreadable: str = ""  # why the runtime directory could not be read at all
    drain: DrainState | None = None  # ``sidecar drain`` asked for it (host.drainfile)


@dataclass(frozen=True, slots=True)
class CheckResult:
    code: Severity
    summary: str  # "SIDECAR OK - ..."
    details: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "code": int(self.code),
            "status": self.code.label,
            "summary": self.summary,
            "details": self.details,
        }


Verdict = tuple[Severity, str]


def _age(status: Mapping[str, Any], key: str, now: float) -> float | None:
    value = status.get(key)
    if not isinstance(value, int | float) or isinstance(value, bool) or value <= 0:
        return None
    return max(0.0, now - float(value))


def _daemon(facts: Facts, t: CheckSettings, now: float) -> Verdict:
    st = facts.status
    if st is None:
        return Severity.CRITICAL, "daemon not running (no status file)"
    age = _age(st, "heartbeat", now)
    if age is None:
        return Severity.CRITICAL, "daemon never wrote a heartbeat"
    if facts.daemon_pid_alive is False and age > DEAD_AFTER:
        return Severity.CRITICAL, f"daemon (pid {st.get('pid')}) not running"
    if age > t.heartbeat_critical:
        return Severity.CRITICAL, f"daemon heartbeat {age:.0f}s old"
    if age > t.heartbeat_warning:
        return Severity.WARNING, f"daemon heartbeat {age:.0f}s old"
    return Severity.OK, f"daemon pid {st.get('pid')}"


def _haproxy(h: HAProxyFacts, t: CheckSettings) -> Verdict:
    if not h.master_pid:
        running = " (a master process runs but does not answer)" if h.master_running else ""
        return Severity.CRITICAL, f"haproxy master not answering{running}"
    if h.current_worker is None or not h.worker_answering:
        return Severity.CRITICAL, f"haproxy master {h.master_pid} has no serving worker"
    if h.old_workers > t.old_workers_warning:
        return Severity.WARNING, f"{h.old_workers} old haproxy workers linger"
    return Severity.OK, f"haproxy worker {h.current_worker}, {h.old_workers} old"


def _frontends(facts: Facts, now: float) -> Verdict:
    st = facts.status or {}
    if facts.drain is not None:  # paused frontends are the point of a drain, not a failure
        left = (st.get("drain") or {}).get("connections")
        return Severity.OK, f"drained ({phase(facts.drain, now).value}, {left} connections left)"
    if facts.unbound_ports:
        ports = ",".join(str(p) for p in facts.unbound_ports[:10])
        return Severity.CRITICAL, f"{len(facts.unbound_ports)} ports not listening: {ports}"
    if st and not st.get("ready"):
        return Severity.WARNING, "no successful apply yet"
    return Severity.OK, f"{len(st.get('public_ports') or [])} ports listening"


def _catalog(facts: Facts, t: CheckSettings, now: float) -> Verdict:
    st = facts.status or {}
    error = str(st.get("catalog_error") or "")
    age = _age(st, "catalog_ok_at", now)
    why = f" ({error})" if error else ""
    if age is None:
        return Severity.WARNING, f"catalog never read{why}"
    if age > t.catalog_age_critical:
        return Severity.CRITICAL, f"catalog data {age:.0f}s old{why}"
    if age > t.catalog_age_warning:
        return Severity.WARNING, f"catalog data {age:.0f}s old{why}"
    return Severity.OK, f"catalog {age:.0f}s old"


def _consul(facts: Facts) -> Verdict:
    if facts.consul_error:
        return Severity.WARNING, f"consul: {facts.consul_error}"
    return Severity.OK, "consul reachable"


def _apply(facts: Facts) -> Verdict:
    st = facts.status or {}
    if st.get("last_apply_ok", True) is False:
        message = str(st.get("last_apply_message") or "")[:200]
        return Severity.WARNING, f"last {st.get('last_apply_kind') or 'apply'} failed: {message}"
    problems = st.get("problems") or []
    if problems:
        return Severity.WARNING, f"{len(problems)} catalog entries skipped: {problems[0]}"
    return Severity.OK, f"last apply {st.get('last_apply_kind') or 'none'} ok"


def _certs(facts: Facts) -> Verdict:
    certs = (facts.status or {}).get("certs")
    if not isinstance(certs, Mapping) or "status" not in certs:
        return Severity.OK, "certificates not checked yet"
    level = Severity.parse(certs.get("status"))
    return (Severity.WARNING if level is Severity.UNKNOWN else level), str(certs.get("summary"))


def evaluate_check(facts: Facts, thresholds: CheckSettings, now: float) -> CheckResult:
    """The verdict: the worst of every part; the summary names the parts that are not OK."""
    if facts.unreadable and facts.status is None and not facts.haproxy.master_pid:
        return CheckResult(
            Severity.UNKNOWN,
            f"SIDECAR UNKNOWN - {facts.unreadable}",
            {"unreadable": facts.unreadable},
        )
    parts: dict[str, Verdict] = {
        "daemon": _daemon(facts, thresholds, now),
        "haproxy": _haproxy(facts.haproxy, thresholds),
        "frontends": _frontends(facts, now),
        "catalog": _catalog(facts, thresholds, now),
        "consul": _consul(facts),
        "apply": _apply(facts),
        "certs": _certs(facts),
    }
    code = worst(level for level, _ in parts.values())
    bad = [
        text
        for level, text in sorted(parts.values(), key=lambda v: -int(v[0]))
        if level is not Severity.OK
    ]
    st = facts.status or {}
    drained = f"{parts['frontends'][1]}; " if facts.drain is not None else ""
    text = drained + (
        "; ".join(bad)
        if bad
        else (
            f"{st.get('services', 0)} services, {st.get('servers_ready', 0)} servers ready, "
            f"{parts['catalog'][1]}, {parts['haproxy'][1]}"
        )
    )
    details: dict[str, Any] = {
        name: {"status": level.label, "message": text} for name, (level, text) in parts.items()
    }
    details["haproxy_facts"] = dataclasses.asdict(facts.haproxy)
    details["drained"] = facts.drain is not None
    perf = _perfdata(facts, thresholds, now)
    return CheckResult(code, f"SIDECAR {code.label} - {text}{perf}", details)


def _perfdata(facts: Facts, t: CheckSettings, now: float) -> str:
    st = facts.status or {}
    items = [f"old_workers={facts.haproxy.old_workers};{t.old_workers_warning}"]
    age = _age(st, "catalog_ok_at", now)
    if age is not None:
        items.insert(
            0, f"catalog_age={age:.0f}s;{t.catalog_age_warning:g};{t.catalog_age_critical:g}"
        )
    return " | " + " ".join(items)


# --- the daemon's own endpoints ----------------------------------------------------------------


def liveness(status: Mapping[str, Any] | None, now: float, t: CheckSettings) -> tuple[bool, str]:
    """``/healthz``: the main loop's heartbeat is fresh."""
    age = _age(status or {}, "heartbeat", now)
    if age is None:
        return False, "no heartbeat yet"
    if age > t.heartbeat_critical:
        return False, f"heartbeat {age:.0f}s old"
    return True, f"heartbeat {age:.1f}s old"


def readiness(status: Mapping[str, Any] | None, now: float, t: CheckSettings) -> tuple[bool, str]:
    """``/readyz``: first apply done, last apply ok, catalog data not older than the critical
    threshold (a gateway on slightly old data still serves: that is a warning, not unready)."""
    st = status or {}
    if not st.get("ready"):
        return False, "no successful apply yet"
    if st.get("last_apply_ok", True) is False:
        return False, f"last apply failed: {str(st.get('last_apply_message') or '')[:200]}"
    age = _age(st, "catalog_ok_at", now)
    if age is None or age > t.catalog_age_critical:
        return False, "catalog data stale" + (f" ({age:.0f}s old)" if age is not None else "")
    return True, f"ready, catalog {age:.0f}s old"
