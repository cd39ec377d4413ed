"""The certificate probe against real TLS backends (which, like DISET, require a client cert)."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from click.testing import CliRunner
from helpers import free_port, wait_until

from devkit.pki import DevPKI, make_dev_pki
from sidecar.cli import main
from sidecar.config.ops import CertSettings, CheckSettings
from sidecar.core.certs import CertReport
from sidecar.core.model import Backend, DesiredState, Protocol, Server, ServerState
from sidecar.core.severity import Severity
from sidecar.health.certjob import ProbeTarget, targets
from sidecar.health.certmonitor import CertMonitor
from sidecar.health.certprobe import Prober, probe_all

GATEWAY_NAMES = ("dirac-gw.test", "localhost")  # as tests/conftest.py makes the PKI


def target(backend, server: str = "s1") -> ProbeTarget:
    return ProbeTarget("Framework_Sample", server, "127.0.0.1", backend.port, "Framework/Sample")


def prober(pki: DevPKI, **changes: object) -> Prober:
    certs = CertSettings(ca_dir=str(pki.ca_dir), connect_timeout=5.0, **changes)  # type: ignore[arg-type]
    return Prober.build(certs, GATEWAY_NAMES, CheckSettings())


def test_certificate_with_every_gateway_name_passes(pki: DevPKI, backend_factory) -> None:
    backend = backend_factory(host="backend1")
    finding = prober(pki).probe(target(backend), time.time())
    assert finding.status is Severity.OK, finding.problems
    assert finding.missing_names == ()
    assert finding.days_left is not None and finding.days_left > 300
    assert "CN=backend1" in finding.subject
    assert (finding.backend, finding.server, finding.port) == ("Framework_Sample", "s1",
                                                               backend.port)  # fmt: skip


def test_missing_name_expiring_and_foreign_ca_are_flagged(
    pki: DevPKI, backend_factory, tmp_path: Path
) -> None:
    ca = pki.ca()
    nogw = ca.issue_host("nogw", ["127.0.0.1"], directory=tmp_path)
    soon = ca.issue_host("soon", list(GATEWAY_NAMES), days=3, directory=tmp_path)
    foreign_pki = make_dev_pki(tmp_path / "foreign", GATEWAY_NAMES, ["alien"])
    good = backend_factory(host="backend1")
    missing = backend_factory(cert=nogw.cert, key=nogw.key)
    expiring = backend_factory(cert=soon.cert, key=soon.key)
    alien = backend_factory(cert=foreign_pki.host_cert("alien"), key=foreign_pki.host_key("alien"))
    wanted = [target(good, "s1"), target(missing, "s2"), target(expiring, "s3"),
              target(alien, "s4"), ProbeTarget("Framework_Sample", "s5", "127.0.0.1",
                                                free_port(), "Framework/Sample")]  # fmt: skip
    report = probe_all(prober(pki), wanted, time.time())
    by = {f.server: f for f in report.findings}

    assert by["s1"].status is Severity.OK
    assert by["s2"].status is Severity.CRITICAL
    assert by["s2"].missing_names == ("dirac-gw.test", "localhost")
    assert by["s2"].fails_clients
    assert by["s3"].status is Severity.CRITICAL
    assert "expires in" in by["s3"].problems[0]
    assert not by["s3"].fails_clients  # still works today
    assert by["s4"].status is Severity.CRITICAL
    assert "chain does not verify" in by["s4"].problems[0]
    assert by["s5"].status is Severity.WARNING
    assert "not checked: connect" in by["s5"].problems[0]
    assert "127.0.0.1" not in by["s5"].problems[0]  # the finding's ``where`` names it, once
    assert "(127.0.0.1:" in by["s5"].where
    assert report.status is Severity.CRITICAL
    assert {(f.server) for f in report.failing} == {"s2", "s4"}

    relaxed = Prober.build(CertSettings(ca_dir=str(pki.ca_dir)), GATEWAY_NAMES,
                           CheckSettings(cert_days_critical=2))  # fmt: skip
    assert relaxed.probe(target(expiring), time.time()).status is Severity.WARNING


def test_client_certificate_completes_the_handshake(
    pki: DevPKI, backend_factory, capsys: pytest.CaptureFixture[str]
) -> None:
    backend = backend_factory(host="backend1")
    without = prober(pki).probe(target(backend), time.time())
    with_cert = prober(pki, client_cert=str(pki.host_cert("backend2")),
                       client_key=str(pki.host_key("backend2")))  # fmt: skip
    finding = with_cert.probe(target(backend), time.time())
    # The server's certificate is read either way...
    assert without.status is finding.status is Severity.OK
    wait_until(lambda: backend.failed + backend.served == 2, 5, what="both probes to end")
    # ...but only the probe without a client certificate is refused by the (DISET-like)
    # server; the other ends after a complete handshake, when the probe hangs up.
    assert capsys.readouterr().err.count("did not return a certificate") == 1


def test_monitor_runs_and_reports(pki: DevPKI, backend_factory) -> None:
    backend = backend_factory(host="backend1")
    servers = (Server("s1", "127.0.0.1", backend.port, ServerState.READY, "n/i"),
               Server("s2", "0.0.0.0", 1, ServerState.MAINT))  # fmt: skip
    desired = DesiredState((Backend("Framework", "Sample", Protocol.DIPS, 9135, servers),))
    assert [t.server for t in targets(desired)] == ["s1"]
    reports: list[CertReport] = []
    monitor = CertMonitor(CertSettings(ca_dir=str(pki.ca_dir), interval=3600), CheckSettings(),
                          GATEWAY_NAMES, local_files=[str(pki.ca_cert)],
                          on_report=reports.append, min_gap=0.1)  # fmt: skip
    monitor.start()
    try:
        wait_until(lambda: reports, 10, what="the first report")
        monitor.set_targets(desired)
        wait_until(lambda: len(reports) >= 2, 10, what="a report after the targets changed")
    finally:
        monitor.stop()
    last = reports[-1]
    assert last.status is Severity.OK, last.summary
    assert [f.server for f in last.findings] == ["s1", str(pki.ca_cert)]
    assert monitor.report is last


def _config(tmp_path: Path, pki: DevPKI) -> Path:
    path = tmp_path / "sidecar.toml"
    names = ", ".join(f'"{n}"' for n in GATEWAY_NAMES)
    text = (
        f'[gateway]\nnames = [{names}]\nbackend_networks = ["127.0.0.0/8"]\n'
        f'[haproxy]\nruntime_dir = "{tmp_path / "run"}"\n'
    )
    path.write_text(text)
    return path


def test_certs_command_exit_codes(pki: DevPKI, backend_factory, tmp_path: Path) -> None:
    nogw = pki.ca().issue_host("nogw", ["127.0.0.1"], directory=tmp_path)
    missing = backend_factory(cert=nogw.cert, key=nogw.key)
    good = backend_factory(host="backend1")
    config = str(_config(tmp_path, pki))
    runner = CliRunner()

    bad = runner.invoke(main, ["--config", config, "certs", "--target",
                               f"127.0.0.1:{missing.port}"])  # fmt: skip
    assert bad.exit_code == 2, bad.output
    assert "CRITICAL" in bad.output
    assert "subjectAltName lacks dirac-gw.test, localhost" in bad.output

    ok = runner.invoke(main, ["--config", config, "certs", "--json", "--target",
                              f"127.0.0.1:{good.port}"])  # fmt: skip
    # Until [certs] ca_dir is configurable the default /etc/grid-security/certificates is
    # used: absent here, so the chain is "not checked" (WARNING) but the names pass.
    assert ok.exit_code in (0, 1), ok.output
    assert '"missing_names": []' in ok.output


@pytest.mark.parametrize("value", ["nonsense", "host:port"])
def test_certs_command_rejects_bad_targets(value: str, tmp_path: Path, pki: DevPKI) -> None:
    result = CliRunner().invoke(main, ["--config", str(_config(tmp_path, pki)), "certs",
                                       "--target", value])  # fmt: skip
    assert result.exit_code == 2
    assert "ADDRESS:PORT" in result.output
