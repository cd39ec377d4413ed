"""Throwaway X.509 PKI for the demo and the tests.

Makes a CA (``ca.pem`` plus an OpenSSL hashed CA directory ``cadir/<hash>.0``), host
certificates whose SANs carry the gateway names (DIRAC clients check them), a user certificate
and an RFC 3820 proxy issued by the user's key, laid out as DIRAC/Globus expect. Not for
production: keys are written unencrypted.

Command line: ``python -m devkit.pki DIR --gateway NAME --host NAME ...``
"""

from __future__ import annotations

import argparse
import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from devkit.x509tools import (
    ORGANISATION,
    CertPaths,
    PrivateKey,
    ProxyPaths,
    cert_pem,
    cert_san_names,
    dirac_group,
    key_pem,
    load_cert,
    load_key,
    make_name,
    make_proxy,
    new_key,
    san_entries,
    still_valid,
    subject_hash,
    validity,
    write_file,
)

__all__ = ["CertPaths", "DevCA", "DevPKI", "ProxyPaths", "main", "make_dev_pki", "make_proxy"]


# --- the CA ------------------------------------------------------------------------------


class DevCA:
    """A throwaway certificate authority living in one directory."""

    def __init__(self, directory: Path, cert: x509.Certificate, key: PrivateKey) -> None:
        self.directory = directory
        self.cert = cert
        self.key = key

    @property
    def cert_path(self) -> Path:
        return self.directory / "ca.pem"

    @property
    def key_path(self) -> Path:
        return self.directory / "ca.key"

    @property
    def ca_dir(self) -> Path:
        return self.directory / "cadir"

    @classmethod
    def load_or_create(cls, directory: Path | str, days: float = 3650) -> DevCA:
        """Reuse ``ca.pem``/``ca.key`` in ``directory`` if valid, else make a new CA."""
        directory = Path(directory)
        cert_path, key_path = directory / "ca.pem", directory / "ca.key"
        if cert_path.exists() and key_path.exists():
            cert = load_cert(cert_path)
            if still_valid(cert):
                ca = cls(directory, cert, load_key(key_path))
                ca.write_ca_dir()
                return ca
        key = new_key()
        name = make_name((NameOID.ORGANIZATION_NAME, ORGANISATION), (NameOID.COMMON_NAME, "Dev CA"))
        start, end = validity(days, None)
        ski = x509.SubjectKeyIdentifier.from_public_key(key.public_key())
        usage = x509.KeyUsage(False, False, False, False, False, True, True, False, False)
        cert = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(start)
            .not_valid_after(end)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(usage, critical=True)
            .add_extension(ski, critical=False)
            .sign(key, hashes.SHA256())
        )
        write_file(key_path, key_pem(key), 0o600)
        write_file(cert_path, cert_pem(cert))
        ca = cls(directory, cert, key)
        ca.write_ca_dir()
        return ca

    def write_ca_dir(self) -> Path:
        """Write ``cadir/<subject_hash>.0`` (a copy of the CA certificate)."""
        target = self.ca_dir / f"{subject_hash(self.cert)}.0"
        data = cert_pem(self.cert)
        if not target.exists() or target.read_bytes() != data:
            write_file(target, data)
        return self.ca_dir

    def _builder(self, subject: x509.Name, public_key: rsa.RSAPublicKey) -> x509.CertificateBuilder:
        aki = x509.AuthorityKeyIdentifier.from_issuer_public_key(self.key.public_key())
        return (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(self.cert.subject)
            .public_key(public_key)
            .serial_number(x509.random_serial_number())
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(aki, critical=False)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
        )

    def issue_host(
        self,
        name: str,
        sans: Sequence[str],
        days: float = 365,
        not_after: dt.datetime | None = None,
        directory: Path | None = None,
        include_name: bool = True,
    ) -> CertPaths:
        """Issue ``<name>.pem``/``<name>.key``: a host certificate for ``/CN=<name>``.

        SANs are ``name`` (unless ``include_name`` is false) plus ``sans``; IPs become IP SANs.
        ``days`` may be negative (already expired); ``not_after`` overrides it.
        """
        out = directory or self.directory
        key = new_key()
        start, end = validity(days, not_after)
        names = [name, *sans] if include_name else list(sans)
        usage = x509.KeyUsage(True, False, True, False, False, False, False, False, False)
        eku = x509.ExtendedKeyUsage(
            [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
        )
        subject = make_name(
            (NameOID.ORGANIZATION_NAME, ORGANISATION),
            (NameOID.ORGANIZATIONAL_UNIT_NAME, "hosts"),
            (NameOID.COMMON_NAME, name),
        )
        builder = self._builder(subject, key.public_key()).not_valid_before(start)
        builder = builder.not_valid_after(end).add_extension(usage, critical=True)
        builder = builder.add_extension(eku, critical=False)
        if names:
            builder = builder.add_extension(
                x509.SubjectAlternativeName(san_entries(names)), critical=False
            )
        cert = builder.sign(self.key, hashes.SHA256())
        paths = CertPaths(out / f"{name}.pem", out / f"{name}.key")
        write_file(paths.key, key_pem(key), 0o600)
        write_file(paths.cert, cert_pem(cert))
        return paths

    def issue_user(
        self, user: str = "alice", days: float = 365, directory: Path | None = None
    ) -> CertPaths:
        """Issue ``user-<user>.pem``/``.key`` for ``/O=DIRAC-test/OU=users/CN=<user>``."""
        out = directory or self.directory
        key = new_key()
        start, end = validity(days, None)
        usage = x509.KeyUsage(True, True, True, False, False, False, False, False, False)
        eku = x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH])
        subject = make_name(
            (NameOID.ORGANIZATION_NAME, ORGANISATION),
            (NameOID.ORGANIZATIONAL_UNIT_NAME, "users"),
            (NameOID.COMMON_NAME, user),
        )
        builder = self._builder(subject, key.public_key()).not_valid_before(start)
        builder = builder.not_valid_after(end).add_extension(usage, critical=True)
        cert = builder.add_extension(eku, critical=False).sign(self.key, hashes.SHA256())
        paths = CertPaths(out / f"user-{user}.pem", out / f"user-{user}.key")
        write_file(paths.key, key_pem(key), 0o600)
        write_file(paths.cert, cert_pem(cert))
        return paths


# --- the whole dev PKI -------------------------------------------------------------------


@dataclass(frozen=True)
class DevPKI:
    """Paths of a dev PKI made by :func:`make_dev_pki`."""

    directory: Path
    ca_cert: Path
    ca_key: Path
    ca_dir: Path
    user: CertPaths
    proxy: ProxyPaths
    gateway_names: tuple[str, ...]
    hosts: tuple[str, ...]

    def host(self, name: str) -> CertPaths:
        """Certificate and key of one host."""
        return CertPaths(self.directory / f"{name}.pem", self.directory / f"{name}.key")

    def host_cert(self, name: str) -> Path:
        return self.host(name).cert

    def host_key(self, name: str) -> Path:
        return self.host(name).key

    def ca(self) -> DevCA:
        """The CA, to issue more certificates (expired ones, wrong SANs...)."""
        return DevCA.load_or_create(self.directory)


def _host_reusable(ca: DevCA, paths: CertPaths, wanted: set[str]) -> bool:
    if not (paths.cert.exists() and paths.key.exists()):
        return False
    cert = load_cert(paths.cert)
    return cert.issuer == ca.cert.subject and still_valid(cert) and wanted <= cert_san_names(cert)


def _proxy_reusable(user: CertPaths, proxy: ProxyPaths, group: str | None) -> bool:
    if not all(p.exists() for p in (proxy.file, proxy.chain, proxy.key)):
        return False
    cert = load_cert(proxy.file)
    issued = cert.issuer == load_cert(user.cert).subject
    return issued and still_valid(cert) and dirac_group(cert) == group


def make_dev_pki(
    directory: Path | str,
    gateway_names: Sequence[str],
    hosts: Sequence[str],
    user: str = "alice",
    group: str | None = None,
) -> DevPKI:
    """CA, one host cert per host (SANs: host, all gateway names, localhost, 127.0.0.1), a
    user cert and a proxy. Reuses whatever already exists in ``directory`` and is still good.
    """
    directory = Path(directory)
    ca = DevCA.load_or_create(directory)
    sans = [*gateway_names, "localhost", "127.0.0.1"]
    for host in hosts:
        paths = CertPaths(directory / f"{host}.pem", directory / f"{host}.key")
        if not _host_reusable(ca, paths, {host, *sans}):
            ca.issue_host(host, sans)
    user_paths = CertPaths(directory / f"user-{user}.pem", directory / f"user-{user}.key")
    if not (
        user_paths.cert.exists()
        and user_paths.key.exists()
        and load_cert(user_paths.cert).issuer == ca.cert.subject
        and still_valid(load_cert(user_paths.cert))
    ):
        user_paths = ca.issue_user(user)
    proxy = ProxyPaths(
        directory / "proxy.pem", directory / "proxy-chain.pem", directory / "proxy.key"
    )
    if not _proxy_reusable(user_paths, proxy, group):
        proxy = make_proxy(user_paths, directory, group=group)
    return DevPKI(
        directory=directory,
        ca_cert=ca.cert_path,
        ca_key=ca.key_path,
        ca_dir=ca.ca_dir,
        user=user_paths,
        proxy=proxy,
        gateway_names=tuple(gateway_names),
        hosts=tuple(hosts),
    )


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m devkit.pki DIR --gateway NAME --host NAME [--user U] [--group G]``."""
    parser = argparse.ArgumentParser(description="Make a throwaway DIRAC-style dev PKI.")
    parser.add_argument("directory", type=Path)
    parser.add_argument("--gateway", action="append", default=[], help="gateway name (repeat)")
    parser.add_argument("--host", action="append", default=[], help="backend host (repeat)")
    parser.add_argument("--user", default="alice")
    parser.add_argument("--group", default=None, help="DIRAC group to put in the proxy")
    args = parser.parse_args(argv)
    pki = make_dev_pki(args.directory, args.gateway, args.host, user=args.user, group=args.group)
    lines = [f"CA certificate : {pki.ca_cert}", f"CA directory   : {pki.ca_dir}"]
    lines += [f"host {h:<10}: {pki.host_cert(h)} {pki.host_key(h)}" for h in pki.hosts]
    proxy = pki.proxy
    lines += [f"user           : {pki.user.cert} {pki.user.key}",
              f"proxy          : {proxy.file} (chain {proxy.chain}, key {proxy.key})"]  # fmt: skip
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
