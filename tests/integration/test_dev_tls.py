"""The sample backend and client: proxies as client certificates, DIRAC-style hostname check."""

from __future__ import annotations

from pathlib import Path

import pytest
from helpers import free_port

from devkit.client import (
    ConnectionFailedError,
    TLSError,
    TLSVerificationError,
    call,
)
from devkit.pki import DevCA, DevPKI, make_dev_pki
from devkit.x509tools import dirac_dn, load_cert

GATEWAY = "dirac-gw.test"


def test_backend_reports_proxy_chain(pki: DevPKI, backend_factory) -> None:
    backend = backend_factory(name="Framework/Sample", instance="b1-i1")
    answer = call("127.0.0.1", backend.port, pki.proxy, pki.ca_dir, server_hostname=GATEWAY)
    proxy, user = load_cert(pki.proxy.file), load_cert(pki.user.cert)
    assert answer["service"] == "Framework/Sample"
    assert answer["instance"] == "b1-i1"
    assert answer["is_proxy"] is True
    assert answer["peer_subject"] == dirac_dn(proxy.subject)
    assert answer["identity"] == dirac_dn(user.subject) == "/O=DIRAC-test/OU=users/CN=alice"
    assert answer["group"] == "dirac_user"
    chain = answer["peer_chain"]
    assert chain[0] == {"subject": dirac_dn(proxy.subject), "issuer": dirac_dn(user.subject)}
    assert chain[1]["subject"] == dirac_dn(user.subject)
    assert answer["peer"].startswith("127.0.0.1:")


@pytest.mark.parametrize("form", ["proxy_file", "chain_and_key"])
def test_proxy_file_forms_and_ca_file(pki: DevPKI, backend_factory, form: str) -> None:
    backend = backend_factory(host="backend2")
    proxy = pki.proxy.file if form == "proxy_file" else (pki.proxy.chain, pki.proxy.key)
    for name in (GATEWAY, "localhost", "127.0.0.1", "backend2"):
        answer = call("127.0.0.1", backend.port, proxy, pki.ca_cert, server_hostname=name)
        assert answer["identity"] == "/O=DIRAC-test/OU=users/CN=alice"


def test_hostname_not_in_san_fails_verification(pki: DevPKI, backend_factory) -> None:
    backend = backend_factory()
    with pytest.raises(TLSVerificationError) as info:
        call("127.0.0.1", backend.port, pki.proxy, pki.ca_dir, server_hostname="other.test")
    assert "other.test" in str(info.value)


def test_expired_server_cert_fails_verification(
    pki: DevPKI, backend_factory, tmp_path: Path
) -> None:
    old = pki.ca().issue_host("old", [GATEWAY], days=-1, directory=tmp_path)
    backend = backend_factory(cert=old.cert, key=old.key)
    with pytest.raises(TLSVerificationError):
        call("127.0.0.1", backend.port, pki.proxy, pki.ca_dir, server_hostname=GATEWAY)


def test_foreign_client_rejected_by_server(pki: DevPKI, backend_factory, tmp_path: Path) -> None:
    foreign = make_dev_pki(tmp_path / "foreign", [GATEWAY], [], user="mallory")
    backend = backend_factory()
    with pytest.raises(TLSError):
        call("127.0.0.1", backend.port, foreign.proxy, pki.ca_dir, server_hostname=GATEWAY)
    assert DevCA.load_or_create(tmp_path / "foreign").cert != load_cert(pki.ca_cert)


def test_connection_refused_is_not_a_tls_error(pki: DevPKI) -> None:
    with pytest.raises(ConnectionFailedError) as info:
        call("127.0.0.1", free_port(), pki.proxy, pki.ca_dir, server_hostname=GATEWAY)
    assert info.value.reason == "refused"
    assert not isinstance(info.value, TLSError | TLSVerificationError)


def test_backend_as_a_process(pki: DevPKI, backend_factory) -> None:
    backend = backend_factory(host="backend3", process=True, name="WorkloadManagement/Matcher")
    answer = call("127.0.0.1", backend.port, pki.proxy, pki.ca_dir, server_hostname=GATEWAY)
    assert answer["service"] == "WorkloadManagement/Matcher"
    assert answer["is_proxy"] is True
    backend.stop()
    assert not backend.alive()
    with pytest.raises(ConnectionFailedError):
        call("127.0.0.1", backend.port, pki.proxy, pki.ca_dir, server_hostname=GATEWAY)


def test_many_connections_in_parallel(pki: DevPKI, backend_factory) -> None:
    from concurrent.futures import ThreadPoolExecutor

    backend = backend_factory()

    def one(_: int) -> str:
        return call("127.0.0.1", backend.port, pki.proxy, pki.ca_dir, GATEWAY)["identity"]

    with ThreadPoolExecutor(16) as pool:
        identities = list(pool.map(one, range(64)))
    assert set(identities) == {"/O=DIRAC-test/OU=users/CN=alice"}
    assert backend.served >= 64
