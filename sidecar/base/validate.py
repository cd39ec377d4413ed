"""Validation of every value that comes from the catalog or the config (pure).

Nothing from Consul reaches a rendered file unless it passed one of these checks. The accepted
alphabets are deliberately narrow: DIRAC names, RFC 1123 host names, canonical IP addresses and
decimal ports. Each check returns the normalised value or raises ``ValueError`` with a reason
short enough to show in ``sidecar render`` and the log.
"""

from __future__ import annotations

import functools
import ipaddress
import re

# DIRAC system and service names are Python identifiers in practice (module and class names).
_DIRAC_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_]{0,63}", re.ASCII)
_DNS_LABEL = re.compile(r"(?!-)[A-Za-z0-9-]{1,63}(?<!-)", re.ASCII)
# What Consul can be asked about without surprises (URL path segment, no encoding needed).
_CONSUL_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,127}", re.ASCII)
_DECIMAL = re.compile(r"[0-9]{1,5}", re.ASCII)


def _show(value: object) -> str:
    """A short, printable rendering of an untrusted value for error messages."""
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def dirac_name(value: object, what: str) -> str:
    if not isinstance(value, str) or not _DIRAC_NAME.fullmatch(value):
        raise ValueError(f"{what} {_show(value)} is not a DIRAC name ([A-Za-z][A-Za-z0-9_]*)")
    return value


def consul_service_name(value: object) -> str:
    if not isinstance(value, str) or not _CONSUL_NAME.fullmatch(value):
        raise ValueError(
            f"Consul service name {_show(value)} has characters outside [A-Za-z0-9_.-]"
        )
    return value


def port(value: object, what: str = "port") -> int:
    """A TCP port 1-65535, given as an int or a decimal string (Consul metadata is strings)."""
    if isinstance(value, bool):
        raise ValueError(f"{what} {_show(value)} is not a port number")
    if isinstance(value, str):
        if not _DECIMAL.fullmatch(value):
            raise ValueError(f"{what} {_show(value)} is not a port number")
        value = int(value)
    if not isinstance(value, int) or not 1 <= value <= 65535:
        raise ValueError(f"{what} {_show(value)} is out of range 1-65535")
    return value


IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
_IP_TEXT_MAX = 45  # the longest IP text (IPv4-mapped IPv6); longer is never an IP


def _ip(value: str) -> tuple[IPAddress, str] | None:
    if len(value) > _IP_TEXT_MAX or "%" in value or not value.isascii():
        return None  # scoped IPv6 and odd digits are not accepted
    return _parse_ip(value)


# Instances repeat their nodes' addresses and each is checked ~4 times (validation, admission):
# parsing was most of a cold cycle (430 ms at 1,000 x 5). Bounded, and keyed by short texts
# only (<= 45 characters): at most ~0.2 MB of a hostile catalog's strings stay.
@functools.lru_cache(maxsize=1024)
def _parse_ip(value: str) -> tuple[IPAddress, str] | None:
    try:
        ip = ipaddress.ip_address(value)
    except ValueError:
        return None
    return ip, str(ip)  # and its canonical text, which ipaddress works out on every str()


def parse_ip(value: str) -> IPAddress | None:
    """``value`` as an IP address, or None when it is not one (the one IP parser)."""
    found = _ip(value)
    return None if found is None else found[0]


def ip_address(value: str) -> str | None:
    """The canonical text of an IP address, or None when ``value`` is not one."""
    found = _ip(value)
    return None if found is None else found[1]


def host(value: object, what: str = "address") -> str:
    """An IP address (canonicalised) or an RFC 1123 host name (lower-cased)."""
    if not isinstance(value, str) or not value:
        raise ValueError(f"{what} is empty")
    found = _ip(value)
    if found is not None:
        if found[0].is_unspecified:
            raise ValueError(f"{what} {_show(value)} is the unspecified address")
        return found[1]
    name = value[:-1] if value.endswith(".") else value
    if len(name) > 253 or not all(_DNS_LABEL.fullmatch(label) for label in name.split(".")):
        raise ValueError(f"{what} {_show(value)} is neither an IP address nor a DNS name")
    if name.replace(".", "").isdigit():
        raise ValueError(f"{what} {_show(value)} looks numeric but is not an IP address")
    return name.lower()


def is_ip(value: str) -> bool:
    return parse_ip(value) is not None


def hostport(address: str, port_number: int) -> str:
    """``address:port`` as HAProxy reads it (IPv6 in brackets)."""
    if ":" in address:
        return f"[{address}]:{port_number}"
    return f"{address}:{port_number}"


def parse_listen(value: str) -> tuple[str, int]:
    """``"127.0.0.1:9901"`` -> ``("127.0.0.1", 9901)``; ``"[::1]:9901"`` -> ``("::1", 9901)``.

    The one parser of ``host:port`` settings; an empty host means 127.0.0.1 (never "all").
    """
    host, sep, port_text = value.rpartition(":")
    if not sep or not _DECIMAL.fullmatch(port_text) or not 0 <= int(port_text) <= 65535:
        raise ValueError(f"{value!r} is not host:port")
    host = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    if host and ip_address(host) is None:
        raise ValueError(f"{value!r}: {host!r} is not an IP address")
    return host or "127.0.0.1", int(port_text)


def haproxy_word(value: str) -> bool:
    """One word HAProxy's config parser reads as-is: printable ASCII, no space, quote, ``#``
    or backslash (so a setting can never open a new line or a comment)."""
    return (
        bool(value)
        and value.isascii()
        and value.isprintable()
        and not any(c in value for c in " \t\"'#\\")
    )
