"""health.certjob: the probe's request and answer survive the trip through JSON, and the
parent side survives a child that fails, answers garbage, hangs or is stopped."""

from __future__ import annotations

import sys
import threading
from pathlib import Path

import pytest
from helpers import wait_until

from sidecar.config.ops import CertSettings, CheckSettings
from sidecar.core.candidates import server_name
from sidecar.core.certs import CertFinding, CertReport
from sidecar.core.model import Backend, DesiredState, Protocol, Server, ServerState
from sidecar.core.severity import Severity
from sidecar.health.certjob import (
    ProbeError,
    ProbeJob,
    ProbeRequest,
    ProbeTarget,
    decode_report,
    encode_report,
)
from sidecar.health.certmonitor import CertMonitor

TARGET = ProbeTarget("Framework_Sample", "n1_i1", "10.1.2.3", 9135, "Framework/Sample")


def _request(**changes: object) -> ProbeRequest:
    base = {"certs": CertSettings(ca_dir="/ca", connect_timeout=2.5),
            "thresholds": CheckSettings(), "gateway_names": ("gw.example.org",),
            "targets": (TARGET,), "local_files": ("/etc/x.pem",), "now": 1234.5}  # fmt: skip
    base.update(changes)
    return ProbeRequest(**base)  # type: ignore[arg-type]


def test_request_round_trip() -> None:
    request = _request()
    assert ProbeRequest.decode(request.encode()) == request


def test_report_round_trip() -> None:
    report = CertReport((
        CertFinding(Severity.CRITICAL, ("name missing",), 3.5, ("gw.example.org",), True,
                    "CN=x", "Framework_Sample", "n1_i1", "10.1.2.3", 9135),
        CertFinding(Severity.OK, server="/etc/x.pem"),
    ), 99.0)  # fmt: skip
    assert decode_report(encode_report(report)) == report


def test_a_report_shares_the_words_that_repeat_across_its_findings() -> None:
    """Five instances of a service: one backend string, one address, one reason (at 1,000 x 5
    the decoded report held 25,000 strings until the next report)."""
    findings = tuple(
        CertFinding(Severity.WARNING, ("expires in 10 days",), 10.0, (), False, "CN=svc",
                    "Framework_Sample", f"i{n}-0123abcd", "10.1.2.3", 9135)
        for n in range(5)
    )  # fmt: skip
    decoded = decode_report(encode_report(CertReport(findings, 1.0))).findings
    for word in ("backend", "address", "subject"):
        assert len({id(getattr(f, word)) for f in decoded}) == 1, word
    assert len({id(f.problems[0]) for f in decoded}) == 1
    assert len({id(f.problems) for f in decoded}) == 1  # the tuple of reasons too
    assert len({id(f.server) for f in decoded}) == 5  # the server names are each their own


def test_a_reports_server_names_are_the_plans_strings() -> None:
    """The plan names every server (interned); the decoded report refers to the same strings
    instead of holding a copy of each (5,000 at 1,000 x 5)."""
    names = [server_name(f"node1/sysadmin-{n}") for n in range(3)]
    findings = tuple(
        CertFinding(Severity.OK, (), 90.0, server="".join(list(name)), backend="F_S")
        for name in names
    )  # copies, as a JSON decoder makes them
    decoded = decode_report(encode_report(CertReport(findings, 1.0))).findings
    assert all(f.server is name for f, name in zip(decoded, names, strict=True))


def test_deadline_grows_with_the_rounds_of_handshakes() -> None:
    many = tuple(ProbeTarget("b", f"s{i}", "10.0.0.1", 1, "S/s") for i in range(17))
    assert _request(targets=many).deadline(margin=1.0) == 1.0 + 2 * 2.5


def test_nothing_to_probe_starts_no_child() -> None:
    job = ProbeJob(command=["/nonexistent/never-run"])
    assert job.run(_request(targets=(), local_files=())) == CertReport((), 1234.5)


@pytest.mark.parametrize(
    ("script", "message"),
    [("import sys; sys.exit(3)", "exited with status 3"),
     ("print('not json')", "answered garbage")],
)
def test_a_failing_child_is_a_probe_error(script: str, message: str) -> None:
    job = ProbeJob(command=[sys.executable, "-c", script])
    with pytest.raises(ProbeError, match=message):
        job.run(_request())


def test_a_hanging_child_is_killed_at_its_deadline() -> None:
    job = ProbeJob(command=[sys.executable, "-c", "import time; time.sleep(60)"], margin=0.0)
    with pytest.raises(ProbeError, match="killed after"):
        job.run(_request(certs=CertSettings(connect_timeout=0.3)))


def test_stop_kills_the_running_child_and_refuses_new_runs() -> None:
    job = ProbeJob(command=[sys.executable, "-c", "import time; time.sleep(60)"])
    errors: list[ProbeError] = []

    def run() -> None:
        try:
            job.run(_request())
        except ProbeError as exc:
            errors.append(exc)

    thread = threading.Thread(target=run)
    thread.start()
    wait_until(lambda: job._proc is not None, 10, what="the child to start")
    job.stop()
    thread.join(10)
    assert not thread.is_alive()
    assert errors and "exited with status" in str(errors[0])
    with pytest.raises(ProbeError, match="stopping"):
        job.run(_request())


def test_the_child_answers_a_request_for_local_files(tmp_path: Path) -> None:
    job = ProbeJob()  # the real child: python -m sidecar.health.certprobe
    missing = str(tmp_path / "missing.pem")
    report = job.run(_request(targets=(), local_files=(missing,)))
    job.stop()
    assert [(f.server, f.status) for f in report.findings] == [(missing, Severity.WARNING)]
    assert "cannot read" in report.findings[0].problems[0]


def test_one_child_answers_a_stream_of_requests_then_leaves_by_itself(tmp_path: Path) -> None:
    job = ProbeJob(linger=0.5)
    request = _request(targets=(), local_files=(str(tmp_path / "missing.pem"),))
    job.run(request)
    first = job._proc
    assert first is not None
    job.run(request)
    assert job._proc is first  # the lingering child took the second request too
    wait_until(lambda: first.poll() is not None, 10, what="the idle child to exit")
    assert first.returncode == 0
    job.run(request)  # a new child for the next request
    assert job._proc is not first
    job.stop()


def test_a_child_that_died_between_requests_is_replaced(tmp_path: Path) -> None:
    job = ProbeJob()
    request = _request(targets=(), local_files=(str(tmp_path / "missing.pem"),))
    job.run(request)
    assert job._proc is not None
    job._proc.kill()
    job._proc.wait()
    assert len(job.run(request).findings) == 1
    job.stop()


def test_a_child_leaving_as_the_next_request_comes_is_replaced_once() -> None:
    once = ("import sys; sys.stdin.readline(); "
            "print('{\"checked_at\": 1, \"findings\": []}', flush=True)")  # fmt: skip
    job = ProbeJob(command=[sys.executable, "-c", once])
    assert job.run(_request()) == CertReport((), 1.0)
    assert job.run(_request()) == CertReport((), 1.0)  # the first child has gone: a new one
    job.stop()


class FakeJob(ProbeJob):
    """Answers OK for every target and records each request; no child."""

    def __init__(self) -> None:
        super().__init__()
        self.requests: list[ProbeRequest] = []

    def run(self, request: ProbeRequest) -> CertReport:
        self.requests.append(request)
        found = [CertFinding(Severity.OK, backend=t.backend, server=t.server, address=t.address,
                             port=t.port) for t in request.targets]  # fmt: skip
        found += [CertFinding(Severity.OK, server=f) for f in request.local_files]
        return CertReport(tuple(found), request.now)


def _desired(*ports: int) -> DesiredState:
    servers = tuple(Server(f"s{p}", "10.0.0.1", p, ServerState.READY, f"n/{p}") for p in ports)
    return DesiredState((Backend("Framework", "Sample", Protocol.DIPS, 9135, servers),))


def test_monitor_probes_only_new_servers_and_needs_no_child_for_a_removal() -> None:
    job = FakeJob()
    monitor = CertMonitor(CertSettings(), CheckSettings(), ("gw",), ("/etc/x.pem",),
                          clock=lambda: 5.0, job=job)  # fmt: skip
    first = _desired(1, 2)
    monitor.set_targets(first)
    monitor.run_once()
    assert [t.port for t in job.requests[0].targets] == [1, 2]  # the first run: every server
    monitor._wake.clear()
    monitor.set_targets(first)
    assert not monitor._wake.is_set()  # the same servers: nothing to do
    monitor.set_targets(_desired(1, 2, 3))
    assert monitor._wake.is_set()
    monitor.run_once()
    assert [t.port for t in job.requests[1].targets] == [3]  # only the new one
    monitor.set_targets(_desired(3))
    report = monitor.run_once()
    assert len(job.requests) == 2  # a removal: no probe at all
    assert [(f.port, f.server) for f in report.findings] == [(3, "s3"), (0, "/etc/x.pem")]
