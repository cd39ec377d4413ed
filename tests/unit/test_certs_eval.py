"""The pure certificate evaluation, on certificates generated here (plain data, no network)."""

from __future__ import annotations

import dataclasses
import datetime as dt
import ipaddress
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from devkit.pki import DevPKI
from devkit.x509tools import load_certs
from sidecar.config.ops import CertSettings, CheckSettings
from sidecar.core.certs import (
    CertInfo,
    CertReport,
    cert_info_from_der,
    dns_name_matches,
    evaluate,
    exclude_failing,
    failing_servers,
    name_covered,
    unreachable,
)
from sidecar.core.model import Backend, DesiredState, Protocol, Server, ServerState
from sidecar.core.severity import Severity
from sidecar.health.certprobe import check_local_files, verify_chain

NOW = dt.datetime(2030, 6, 1, tzinfo=dt.UTC)
T = NOW.timestamp()
DAY = 86400.0
GW = ("dirac-gw.example.org", "dirac-gw2.example.org")
TH = CheckSettings()
_KEY = ec.generate_private_key(ec.SECP256R1())


def make_cert(cn: str = "host1.example.org", dns: tuple[str, ...] = GW, ips: tuple[str, ...] = (),
              days: float = 365, not_before_days: float = -1, san: bool = True
              ) -> x509.Certificate:  # fmt: skip
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(_KEY.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(NOW + dt.timedelta(days=not_before_days))
        .not_valid_after(NOW + dt.timedelta(days=days))
    )
    entries: list[x509.GeneralName] = [x509.DNSName(d) for d in dns]
    entries += [x509.IPAddress(ipaddress.ip_address(i)) for i in ips]
    if san and entries:
        builder = builder.add_extension(x509.SubjectAlternativeName(entries), critical=False)
    return builder.sign(_KEY, hashes.SHA256())


def info(chain_checked: bool = True, **kwargs: object) -> CertInfo:
    der = make_cert(**kwargs).public_bytes(serialization.Encoding.DER)  # type: ignore[arg-type]
    return cert_info_from_der(der, chain_checked=chain_checked)


def test_cert_info_reads_names_and_dates() -> None:
    got = info(dns=("a.example.org",), ips=("192.0.2.1", "2001:db8::1"), days=10)
    assert got.dns_names == ("a.example.org",)
    assert got.ip_addresses == ("192.0.2.1", "2001:db8::1")
    assert got.common_names == ("host1.example.org",)
    assert got.not_after == pytest.approx(T + 10 * DAY)


def test_every_gateway_name_covered_is_ok() -> None:
    finding = evaluate(info(), GW, T, TH)
    assert finding.status is Severity.OK
    assert finding.problems == ()
    assert not finding.fails_clients
    assert finding.days_left == pytest.approx(365)


def test_one_missing_gateway_name_is_critical() -> None:
    finding = evaluate(info(dns=("host1.example.org", GW[0])), GW, T, TH)
    assert finding.status is Severity.CRITICAL
    assert finding.missing_names == (GW[1],)
    assert finding.fails_clients
    assert "dirac-gw2.example.org" in finding.problems[0]


@pytest.mark.parametrize(
    ("pattern", "host", "expected"),
    [
        ("dirac-gw.example.org", "DIRAC-GW.example.org.", True),
        ("*.example.org", "dirac-gw.example.org", True),
        ("*.example.org", "example.org", False),  # one label, not zero
        ("*.example.org", "a.b.example.org", False),  # one label, not two
        ("*.org", "example.org", False),  # at least two labels after the wildcard
        ("a.*.example.org", "a.b.example.org", False),  # only the left-most label
        ("dirac-*.example.org", "dirac-gw.example.org", True),  # partial, as OpenSSL
        ("*gw.example.org", "dirac-gw.example.org", True),
        ("xn--*.example.org", "xn--abc.example.org", False),
        ("**.example.org", "a.example.org", False),
        ("other.example.org", "dirac-gw.example.org", False),
    ],
)
def test_dns_name_matching(pattern: str, host: str, expected: bool) -> None:
    assert dns_name_matches(pattern, host) is expected


def test_wildcard_san_covers_gateway_names() -> None:
    assert evaluate(info(dns=("*.example.org",)), GW, T, TH).status is Severity.OK


def test_ip_gateway_name_needs_an_ip_san() -> None:
    with_dns_only = info(dns=("127.0.0.1", "localhost"))
    with_ip = info(dns=("localhost",), ips=("127.0.0.1",))
    assert not name_covered(with_dns_only, "127.0.0.1")
    assert name_covered(with_ip, "127.0.0.1")
    assert not name_covered(with_ip, "127.0.0.2")


def test_common_name_only_when_no_dns_san() -> None:
    no_san = info(cn=GW[0], dns=(), san=False)
    ip_only = info(cn=GW[0], dns=(), ips=("192.0.2.1",))
    with_dns = info(cn=GW[0], dns=("other.example.org",))
    assert name_covered(no_san, GW[0])
    assert name_covered(ip_only, GW[0])  # OpenSSL: no DNS SAN, so the CN is checked
    assert not name_covered(with_dns, GW[0])


@pytest.mark.parametrize(
    ("days", "status", "fails"),
    [(40, Severity.OK, False), (20, Severity.WARNING, False), (3, Severity.CRITICAL, False),
     (-2, Severity.CRITICAL, True)],
)  # fmt: skip
def test_expiry_thresholds(days: float, status: Severity, fails: bool) -> None:
    finding = evaluate(info(days=days, not_before_days=min(days, 0) - 10), GW, T, TH)
    assert finding.status is status
    assert finding.fails_clients is fails
    assert finding.days_left == pytest.approx(days)


def test_thresholds_come_from_settings() -> None:
    strict = CheckSettings(cert_days_warning=100, cert_days_critical=50)
    assert evaluate(info(days=60), GW, T, strict).status is Severity.WARNING
    assert evaluate(info(days=40), GW, T, strict).status is Severity.CRITICAL


def test_not_yet_valid_is_critical() -> None:
    finding = evaluate(info(not_before_days=2), GW, T, TH)
    assert finding.status is Severity.CRITICAL
    assert finding.fails_clients


def test_chain_unchecked_warns_and_chain_error_is_critical() -> None:
    assert evaluate(info(chain_checked=False), GW, T, TH).status is Severity.WARNING
    broken = dataclasses.replace(info(), chain_error="unable to get local issuer certificate")
    finding = evaluate(broken, GW, T, TH)
    assert finding.status is Severity.CRITICAL
    assert finding.fails_clients
    assert "local issuer" in finding.problems[0]


def test_issuing_ca_expiry_is_reported() -> None:
    soon = dataclasses.replace(info(), issuers_not_after=T + 5 * DAY)
    finding = evaluate(soon, GW, T, TH)
    assert finding.status is Severity.CRITICAL
    assert "issuing CA expires" in finding.problems[0]


def _finding(server: str, status: Severity, fails: bool = False, days: float = 100):
    return dataclasses.replace(
        evaluate(info(), GW, T, TH), status=status, fails_clients=fails, days_left=days,
        backend="Framework_Sample", server=server, address="10.0.0.1", port=int(server[1:]) + 9000,
        problems=() if status is Severity.OK else ("bad",),
    )  # fmt: skip


def test_report_status_and_summary() -> None:
    empty = CertReport((), T)
    assert empty.status is Severity.OK
    ok = CertReport((_finding("s1", Severity.OK), _finding("s2", Severity.OK, days=12)), T)
    assert ok.status is Severity.OK
    assert ok.summary == "certificates OK: 2 checked, first expiry in 12 days"
    bad = CertReport(
        (_finding("s1", Severity.OK), _finding("s2", Severity.CRITICAL, fails=True),
         _finding("s3", Severity.WARNING)), T)  # fmt: skip
    assert bad.status is Severity.CRITICAL
    assert bad.summary.startswith("certificates CRITICAL: 2 of 3: Framework_Sample/s2")
    status = bad.to_status()
    assert status["status"] == "CRITICAL"
    assert status["failing"] == 1
    assert {s["server"] for s in status["servers"]} == {"s1", "s2", "s3"}
    assert failing_servers(bad) == frozenset({("10.0.0.1", 9002)})


def test_unreachable_is_a_warning_not_a_failure() -> None:
    finding = unreachable("connect 10.0.0.1:1: refused")
    assert finding.status is Severity.WARNING
    assert not finding.fails_clients


def test_exclude_failing_drains_only_failing_ready_servers() -> None:
    servers = (
        Server("s1", "10.0.0.1", 9001, ServerState.READY, "n/a"),
        Server("s2", "10.0.0.1", 9002, ServerState.READY, "n/b"),
        Server("s3", "0.0.0.0", 1, ServerState.MAINT),
    )
    desired = DesiredState((Backend("Framework", "Sample", Protocol.DIPS, 9135, servers),))
    assert exclude_failing(desired, frozenset()) is desired
    out = exclude_failing(desired, frozenset({("10.0.0.1", 9002)}))
    states = [s.state for s in out.backends[0].servers]
    assert states == [ServerState.READY, ServerState.DRAIN, ServerState.MAINT]
    assert [s.name for s in out.backends[0].servers] == ["s1", "s2", "s3"]
    assert "drained" in str(out.problems[0])


def test_verify_chain_against_the_ca_dir(pki: DevPKI, tmp_path: Path) -> None:
    from sidecar.health.certprobe import trust_store

    store = trust_store(CertSettings(ca_dir=str(pki.ca_dir)))
    assert store is not None
    good = load_certs(pki.host_cert("backend1"))
    assert verify_chain(store, good)[0] == ""
    assert verify_chain(store, good)[1] == pytest.approx(
        load_certs(pki.ca_cert)[0].not_valid_after_utc.timestamp()
    )
    error, _ = verify_chain(store, [make_cert()])  # self-signed, not from the CA
    assert error
    assert trust_store(CertSettings(ca_dir=str(tmp_path / "none"))) is None
    assert trust_store(CertSettings(ca_dir="", ca_file=str(pki.ca_cert))) is not None


def test_check_local_files(tmp_path: Path) -> None:
    soon = tmp_path / "soon.pem"
    soon.write_bytes(make_cert(days=3).public_bytes(serialization.Encoding.PEM))
    fine = tmp_path / "fine.pem"
    fine.write_bytes(make_cert(days=300).public_bytes(serialization.Encoding.PEM))
    findings = check_local_files([str(soon), str(fine), str(tmp_path / "missing.pem"), ""], T,
                                 TH)  # fmt: skip
    by_path = {f.server: f for f in findings}
    assert by_path[str(soon)].status is Severity.CRITICAL
    assert by_path[str(fine)].status is Severity.OK
    assert by_path[str(tmp_path / "missing.pem")].status is Severity.WARNING
    assert len(findings) == 3
