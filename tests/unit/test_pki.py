"""The dev PKI: proxies are real RFC 3820 proxies, host SANs carry the gateway names."""

from __future__ import annotations

import datetime as dt
import ipaddress
import shutil
import subprocess
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.x509.oid import NameOID
from OpenSSL import crypto

from devkit.pki import DevCA, DevPKI, make_dev_pki
from devkit.x509tools import (
    DIRAC_GROUP_OID,
    PROXY_CERT_INFO_OID,
    PROXY_POLICY_LIMITED,
    cert_san_names,
    dirac_dn,
    dirac_group,
    load_cert,
    load_certs,
    proxy_cert_info_der,
    subject_hash,
)

INHERIT_ALL_DER = bytes.fromhex("300c300a06082b06010505071501")


def test_proxy_cert_info_der() -> None:
    assert proxy_cert_info_der() == INHERIT_ALL_DER
    with_len = proxy_cert_info_der(path_len=0)
    assert with_len == bytes.fromhex("300f020100300a06082b06010505071501")
    limited = proxy_cert_info_der(PROXY_POLICY_LIMITED)
    assert limited.startswith(b"\x30") and limited[4] == 0x06


def test_proxy_has_proxy_cert_info_and_subject(pki: DevPKI) -> None:
    proxy = load_cert(pki.proxy.file)
    user = load_cert(pki.user.cert)
    ext = proxy.extensions.get_extension_for_oid(PROXY_CERT_INFO_OID)
    assert ext.critical
    assert isinstance(ext.value, x509.UnrecognizedExtension)
    assert ext.value.value == INHERIT_ALL_DER
    assert proxy.issuer == user.subject
    assert list(proxy.subject.rdns)[:-1] == list(user.subject.rdns)
    last = proxy.subject.rdns[-1]
    assert len(last) == 1
    (attr,) = list(last)
    assert attr.oid == NameOID.COMMON_NAME and attr.value == str(proxy.serial_number)
    assert dirac_dn(user.subject) == "/O=DIRAC-test/OU=users/CN=alice"
    usage = proxy.extensions.get_extension_for_class(x509.KeyUsage)
    assert usage.critical and usage.value.digital_signature and usage.value.key_encipherment
    lifetime = proxy.not_valid_after_utc - dt.datetime.now(dt.UTC)
    assert dt.timedelta(hours=11) < lifetime <= dt.timedelta(hours=12)


def test_proxy_carries_dirac_group(pki: DevPKI) -> None:
    proxy = load_cert(pki.proxy.file)
    assert not proxy.extensions.get_extension_for_oid(DIRAC_GROUP_OID).critical
    assert dirac_group(proxy) == "dirac_user"


def test_proxy_file_layout(pki: DevPKI) -> None:
    text = pki.proxy.file.read_text()
    markers = [line for line in text.splitlines() if line.startswith("-----BEGIN")]
    assert markers == [
        "-----BEGIN CERTIFICATE-----",
        "-----BEGIN RSA PRIVATE KEY-----",
        "-----BEGIN CERTIFICATE-----",
    ]
    chain = load_certs(pki.proxy.chain)
    assert chain == load_certs(pki.proxy.file)
    assert chain[1] == load_cert(pki.user.cert)
    assert pki.proxy.key.stat().st_mode & 0o077 == 0


def test_host_cert_sans_include_gateway_names(pki: DevPKI) -> None:
    for host in pki.hosts:
        cert = load_cert(pki.host_cert(host))
        assert {host, "dirac-gw.test", "localhost", "127.0.0.1"} <= cert_san_names(cert)
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        assert ipaddress.ip_address("127.0.0.1") in san.get_values_for_type(x509.IPAddress)
        assert "127.0.0.1" not in san.get_values_for_type(x509.DNSName)


def _store(pki: DevPKI, allow_proxies: bool) -> crypto.X509Store:
    store = crypto.X509Store()
    store.add_cert(crypto.X509.from_cryptography(load_cert(pki.ca_cert)))
    if allow_proxies:
        store.set_flags(crypto.X509StoreFlags.ALLOW_PROXY_CERTS)
    return store


def test_proxy_chain_verifies_only_when_proxies_allowed(pki: DevPKI) -> None:
    proxy, user = (crypto.X509.from_cryptography(c) for c in load_certs(pki.proxy.chain))
    crypto.X509StoreContext(_store(pki, True), proxy, chain=[user]).verify_certificate()
    with pytest.raises(crypto.X509StoreContextError):
        crypto.X509StoreContext(_store(pki, False), proxy, chain=[user]).verify_certificate()


@pytest.mark.skipif(shutil.which("openssl") is None, reason="no openssl CLI")
def test_openssl_cli_agrees(pki: DevPKI) -> None:
    def openssl(*args: str | Path) -> str:
        out = subprocess.run(["openssl", *map(str, args)], capture_output=True, text=True)
        assert out.returncode == 0, out.stderr
        return out.stdout

    assert openssl("x509", "-hash", "-noout", "-in", pki.ca_cert).strip() == subject_hash(
        load_cert(pki.ca_cert)
    )
    assert (pki.ca_dir / f"{subject_hash(load_cert(pki.ca_cert))}.0").is_file()
    untrusted = ("-untrusted", pki.user.cert)
    openssl("verify", "-CApath", pki.ca_dir, "-allow_proxy_certs", *untrusted, pki.proxy.chain)
    openssl("verify", "-CApath", pki.ca_dir, pki.host_cert(pki.hosts[0]))


def test_make_dev_pki_is_idempotent(tmp_path: Path) -> None:
    first = make_dev_pki(tmp_path, ["gw.test"], ["h1"])
    files = sorted(p for p in tmp_path.rglob("*") if p.is_file())
    before = {p: p.read_bytes() for p in files}
    second = make_dev_pki(tmp_path, ["gw.test"], ["h1"])
    assert second == first
    assert {p: p.read_bytes() for p in files} == before
    third = make_dev_pki(tmp_path, ["gw.test", "gw2.test"], ["h1"])  # new gateway: reissue
    assert "gw2.test" in cert_san_names(load_cert(third.host_cert("h1")))
    assert third.ca_cert.read_bytes() == before[first.ca_cert]


def test_expired_and_expiring_host_certs(tmp_path: Path) -> None:
    ca = DevCA.load_or_create(tmp_path)
    now = dt.datetime.now(dt.UTC)
    expired = load_cert(ca.issue_host("old", ["gw.test"], days=-1).cert)
    assert expired.not_valid_after_utc < now
    assert expired.not_valid_before_utc < expired.not_valid_after_utc
    soon = load_cert(ca.issue_host("soon", ["gw.test"], days=3).cert)
    assert dt.timedelta(days=2) < soon.not_valid_after_utc - now <= dt.timedelta(days=3, minutes=1)
    bare = load_cert(ca.issue_host("bare", [], include_name=False).cert)
    assert cert_san_names(bare) == set()
