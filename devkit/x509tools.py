"""X.509 building blocks for the dev PKI: PEM/DER helpers, DIRAC-style DN formatting, SAN
helpers and RFC 3820 proxy certificates (proxyCertInfo encoded by hand, DIRAC group 1.2.42.42).
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
import secrets
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID, ObjectIdentifier
from OpenSSL import crypto

PROXY_CERT_INFO_OID = ObjectIdentifier("1.3.6.1.5.5.7.1.14")
PROXY_POLICY_INHERIT_ALL = "1.3.6.1.5.5.7.21.1"
PROXY_POLICY_LIMITED = "1.3.6.1.4.1.3536.1.1.1.9"
DIRAC_GROUP_OID = ObjectIdentifier("1.2.42.42")
ORGANISATION = "DIRAC-test"

PrivateKey = rsa.RSAPrivateKey
_KEY_BITS = 2048
REUSE_MARGIN = dt.timedelta(hours=1)


# --- DER helpers (cryptography cannot build proxyCertInfo itself) -------------------------


def _der_tlv(tag: int, content: bytes) -> bytes:
    length = len(content)
    if length < 0x80:
        return bytes([tag, length]) + content
    raw = length.to_bytes((length.bit_length() + 7) // 8, "big")
    return bytes([tag, 0x80 | len(raw)]) + raw + content


def _der_oid(dotted: str) -> bytes:
    arcs = [int(part) for part in dotted.split(".")]
    body = bytearray([40 * arcs[0] + arcs[1]])
    for arc in arcs[2:]:
        chunk = [arc & 0x7F]
        arc >>= 7
        while arc:
            chunk.append(0x80 | (arc & 0x7F))
            arc >>= 7
        body.extend(reversed(chunk))
    return _der_tlv(0x06, bytes(body))


def _der_int(value: int) -> bytes:
    return _der_tlv(0x02, value.to_bytes(value.bit_length() // 8 + 1, "big", signed=True))


def proxy_cert_info_der(
    policy_language: str = PROXY_POLICY_INHERIT_ALL, path_len: int | None = None
) -> bytes:
    """DER of RFC 3820 ProxyCertInfo: SEQUENCE { [INTEGER pathLen] SEQUENCE { OID } }."""
    policy = _der_tlv(0x30, _der_oid(policy_language))
    prefix = b"" if path_len is None else _der_int(path_len)
    return _der_tlv(0x30, prefix + policy)


def dirac_group_der(group: str) -> bytes:
    """DER of the DIRAC group extension value (an IA5String)."""
    return _der_tlv(0x16, group.encode("ascii"))


# --- small utilities -------------------------------------------------------------------


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def write_file(path: Path, data: bytes, mode: int = 0o644) -> None:
    """Write atomically (temp file + rename) with the given permissions."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
        Path(tmp).replace(path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def cert_pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def key_pem(key: PrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.NoEncryption(),
    )


def new_key() -> PrivateKey:
    """A fresh RSA key."""
    return rsa.generate_private_key(public_exponent=65537, key_size=_KEY_BITS)


def load_certs(path: Path) -> list[x509.Certificate]:
    """All certificates of a PEM file (other PEM blocks are skipped)."""
    return x509.load_pem_x509_certificates(path.read_bytes())


def load_cert(path: Path) -> x509.Certificate:
    """The first certificate of a PEM file."""
    return load_certs(path)[0]


def load_key(path: Path) -> PrivateKey:
    """An unencrypted RSA private key (the key block of a proxy file works too)."""
    key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    if not isinstance(key, rsa.RSAPrivateKey):
        raise TypeError(f"{path}: not an RSA key")
    return key


def subject_hash(cert: x509.Certificate) -> str:
    """OpenSSL's ``X509_subject_name_hash`` (what ``openssl x509 -hash`` and capath use)."""
    value: int = crypto.X509.from_cryptography(cert).subject_name_hash()
    return f"{value:08x}"


def dirac_dn(name: x509.Name) -> str:
    """A name in DIRAC/OpenSSL one-line form: ``/O=DIRAC-test/OU=users/CN=alice``."""
    parts = []
    for rdn in name.rdns:
        for attr in rdn:
            key = "emailAddress" if attr.oid == NameOID.EMAIL_ADDRESS else None
            key = key or attr.rfc4514_attribute_name
            parts.append(f"/{key}={attr.value!s}")
    return "".join(parts)


def is_proxy(cert: x509.Certificate) -> bool:
    """True when the certificate carries the RFC 3820 proxyCertInfo extension."""
    return any(ext.oid == PROXY_CERT_INFO_OID for ext in cert.extensions)


def make_name(*rdns: tuple[x509.ObjectIdentifier, str]) -> x509.Name:
    return x509.Name([x509.NameAttribute(oid, value) for oid, value in rdns])


def validity(days: float, not_after: dt.datetime | None) -> tuple[dt.datetime, dt.datetime]:
    now = utcnow()
    end = not_after if not_after is not None else now + dt.timedelta(days=days)
    start = min(now - dt.timedelta(hours=1), end - dt.timedelta(days=1))
    return start, end


def still_valid(cert: x509.Certificate, margin: dt.timedelta = REUSE_MARGIN) -> bool:
    return cert.not_valid_after_utc > utcnow() + margin


def san_entries(names: Iterable[str]) -> list[x509.GeneralName]:
    """DNS SANs, plus IP SANs for anything that parses as an IP address."""
    entries: list[x509.GeneralName] = []
    for name in dict.fromkeys(names):
        try:
            entries.append(x509.IPAddress(ipaddress.ip_address(name)))
        except ValueError:
            entries.append(x509.DNSName(name))
    return entries


def cert_san_names(cert: x509.Certificate) -> set[str]:
    """DNS and IP SAN entries of a certificate, as strings."""
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return set()
    dns = san.get_values_for_type(x509.DNSName)
    ips = san.get_values_for_type(x509.IPAddress)
    return set(dns) | {str(ip) for ip in ips}


# --- results -----------------------------------------------------------------------------


@dataclass(frozen=True)
class CertPaths:
    """A PEM certificate and its unencrypted key."""

    cert: Path
    key: Path


@dataclass(frozen=True)
class ProxyPaths:
    """An RFC 3820 proxy in the layouts clients need.

    ``file``: proxy cert, proxy key, user cert (Globus/DIRAC ``X509_USER_PROXY`` layout; also
    loadable with ``load_cert_chain(certfile=file)``). ``chain`` + ``key``: for
    ``ssl.SSLContext.load_cert_chain(certfile=chain, keyfile=key)``.
    """

    file: Path
    chain: Path
    key: Path


# --- proxies -----------------------------------------------------------------------------


def make_proxy(
    user: CertPaths,
    directory: Path,
    hours: float = 12,
    not_after: dt.datetime | None = None,
    group: str | None = None,
    stem: str = "proxy",
) -> ProxyPaths:
    """Issue an RFC 3820 (inheritAll) proxy signed by the user's key.

    Subject = user subject + ``CN=<decimal serial>``; critical proxyCertInfo; optional DIRAC
    group extension ``1.2.42.42``. Writes ``<stem>.pem`` (cert, key, user cert),
    ``<stem>-chain.pem`` (cert, user cert) and ``<stem>.key``.
    """
    user_cert, user_key = load_cert(user.cert), load_key(user.key)
    key = new_key()
    serial = secrets.randbelow(2**31 - 1) + 1
    subject = x509.Name(
        [
            *user_cert.subject.rdns,
            x509.RelativeDistinguishedName([x509.NameAttribute(NameOID.COMMON_NAME, str(serial))]),
        ]
    )
    now = utcnow()
    end = not_after if not_after is not None else now + dt.timedelta(hours=hours)
    start = min(now - dt.timedelta(minutes=5), end - dt.timedelta(hours=1))
    usage = x509.KeyUsage(True, False, True, False, False, False, False, False, False)
    pci = x509.UnrecognizedExtension(PROXY_CERT_INFO_OID, proxy_cert_info_der())
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(user_cert.subject)
        .public_key(key.public_key())
        .serial_number(serial)
        .not_valid_before(start)
        .not_valid_after(end)
        .add_extension(pci, critical=True)
        .add_extension(usage, critical=True)
    )
    if group:
        ext = x509.UnrecognizedExtension(DIRAC_GROUP_OID, dirac_group_der(group))
        builder = builder.add_extension(ext, critical=False)
    cert = builder.sign(user_key, hashes.SHA256())
    paths = ProxyPaths(
        directory / f"{stem}.pem", directory / f"{stem}-chain.pem", directory / f"{stem}.key"
    )
    write_file(paths.key, key_pem(key), 0o600)
    write_file(paths.chain, cert_pem(cert) + cert_pem(user_cert))
    write_file(paths.file, cert_pem(cert) + key_pem(key) + cert_pem(user_cert), 0o600)
    return paths


def dirac_group(cert: x509.Certificate) -> str | None:
    """The DIRAC group carried by a proxy (extension 1.2.42.42), if any."""
    for ext in cert.extensions:
        if ext.oid == DIRAC_GROUP_OID and isinstance(ext.value, x509.UnrecognizedExtension):
            raw = ext.value.value
            if len(raw) >= 2 and raw[1] < 0x80:
                return raw[2 : 2 + raw[1]].decode("utf-8", "replace")
            return raw.decode("utf-8", "replace")
    return None
