"""Host names against a certificate's names, as OpenSSL's ``X509_check_host`` does (RFC 6125;
pure). Used by ``core.certs``: a client of the gateway checks the backend certificate against
the gateway name it dialled, so each gateway name must match a subjectAltName entry.
"""

from __future__ import annotations

import ipaddress


def _normal(name: str) -> str:
    return name.strip().rstrip(".").lower()


def _label_matches(pattern: str, label: str) -> bool:
    """One left-most pattern label with at most one '*' against one host label."""
    if pattern == "*":
        return bool(label)
    if pattern.count("*") != 1 or pattern.startswith("xn--") or label.startswith("xn--"):
        return False  # no partial wildcards in IDNA A-labels
    prefix, suffix = pattern.split("*")
    return (
        len(label) >= len(prefix) + len(suffix)
        and label.startswith(prefix)
        and label.endswith(suffix)
    )


def dns_name_matches(pattern: str, host: str) -> bool:
    """Whether the certificate name ``pattern`` covers the DNS name ``host``.

    A wildcard only in the whole left-most label, covering exactly one label, and only with at
    least two labels after it (``*.org`` covers nothing).
    """
    pattern, host = _normal(pattern), _normal(host)
    if not pattern or not host:
        return False
    if "*" not in pattern:
        return pattern == host
    p_first, _, p_rest = pattern.partition(".")
    h_first, _, h_rest = host.partition(".")
    if "*" in p_rest or p_rest.count(".") < 1:
        return False
    return p_rest == h_rest and _label_matches(p_first, h_first)


def ip_of(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address(text.strip())
    except ValueError:
        return None
