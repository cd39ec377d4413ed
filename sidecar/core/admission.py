"""Admission: where a catalog entry may send the gateway, and which public port it may claim
(pure; part of the policy stage, called by ``desired``).

The catalog is written by many hands and the gateway faces the internet: a registration must
not turn it into a relay into internal addresses (the Consul agent's API, a cloud metadata
service, the gateway host itself), nor bind whatever public port it likes. ``Perimeter`` holds
what the daemon knows about its surroundings (the operator's ``backend_networks``, the
gateway's own addresses, endpoints never to dial, resolved host names, the public port ranges);
``backend_address`` and ``public_port`` accept a value or raise ``ValueError`` with the reason,
which becomes a reported problem like any malformed entry.

Host names are resolved by an adapter before the cycle (``Perimeter.resolved``); every address
a name resolves to must be allowed, and HAProxy only ever gets the (sorted) first one, so it
never resolves a name itself (no DNS rebinding between the check and the connect).
"""

from __future__ import annotations

import functools
import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass, field

from sidecar.base import validate

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
_THIS_NETWORK = ipaddress.ip_network("0.0.0.0/8")
_NAT64 = ipaddress.ip_network("64:ff9b::/96")


@dataclass(frozen=True, slots=True)
class Perimeter:
    """What the gateway accepts from the catalog; a value (hashable) built by the daemon."""

    networks: tuple[str, ...] = ()  # [gateway] backend_networks; empty: the default policy
    own_addresses: frozenset[str] = frozenset()  # the gateway's interface addresses
    refused: frozenset[tuple[str, int]] = frozenset()  # (ip, port) never dialled (Consul...)
    own_ports: frozenset[int] = frozenset()  # ports of the gateway's own services (status,
    # a local Consul agent): never dialled on a loopback or own address, whatever the network
    resolved: tuple[tuple[str, tuple[str, ...]], ...] = ()  # host name -> its addresses
    public_ranges: tuple[tuple[int, int], ...] = ((1, 65535),)  # where dirac_port may point
    privileged: frozenset[int] = frozenset()  # ports < 1024 declared by the map or config
    _names: dict[str, tuple[str, ...]] = field(default_factory=dict, compare=False, repr=False)

    def __post_init__(self) -> None:
        self._names.update(self.resolved)

    def addresses_of(self, name: str) -> tuple[str, ...] | None:
        return self._names.get(name)


def _embedded_v4(ip: IPAddress) -> IPAddress:
    """The IPv4 address inside ``::ffff:a.b.c.d`` and ``64:ff9b::a.b.c.d`` (else ``ip``)."""
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return ip.ipv4_mapped
        if ip in _NAT64:
            return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    return ip


@functools.lru_cache(maxsize=64)
def _networks(networks: tuple[str, ...]) -> tuple[IPNetwork, ...]:
    return tuple(ipaddress.ip_network(n, strict=False) for n in networks)


def _refusal(ip: IPAddress, port: int, perimeter: Perimeter) -> str | None:
    """Why ``ip:port`` may not be a backend, or None."""
    real = _embedded_v4(ip)
    text = str(real)
    if real.is_unspecified or real in _THIS_NETWORK:
        return "is the unspecified address"
    own = real.is_loopback or text in perimeter.own_addresses
    if (text, port) in perimeter.refused or (str(ip), port) in perimeter.refused:
        return "is an endpoint of the gateway's own services (Consul, status)"
    if own and port in perimeter.own_ports:
        return "is an endpoint of the gateway's own services (Consul, status)"
    if own and any(low <= port <= high for low, high in perimeter.public_ranges):
        return "would loop into the gateway's own public ports"
    if perimeter.networks:
        if not any(real in net for net in _networks(perimeter.networks)):
            return "is outside [gateway] backend_networks"
        return None
    if real.is_loopback:
        return "is a loopback address (set [gateway] backend_networks to allow it)"
    if real.is_link_local:
        return "is link-local (e.g. a cloud metadata service)"
    if real.is_multicast or real.is_reserved:
        return "is a multicast or reserved address"
    if text in perimeter.own_addresses:
        return "is one of the gateway's own addresses"
    return None


def backend_address(address: str, port: int, perimeter: Perimeter) -> str:
    """The IP HAProxy may dial for ``address:port`` (a validated IP or host name); ValueError."""
    if validate.is_ip(address):
        candidates: Iterable[str] = (address,)
    else:
        found = perimeter.addresses_of(address)
        if not found:
            raise ValueError(f"host name {address!r} does not resolve")
        candidates = found
    parsed = (validate.parse_ip(c) for c in candidates)
    ips = sorted({ip for ip in parsed if ip is not None}, key=lambda i: (i.version, i))
    if not ips:
        raise ValueError(f"backend {address!r} is not an IP address and does not resolve to one")
    for ip in ips:
        reason = _refusal(ip, port, perimeter)
        if reason is not None:
            shown = address if str(ip) == address else f"{address} ({ip})"
            raise ValueError(f"backend {shown} refused: {reason}")
    return str(ips[0])


def public_port(port: int, perimeter: Perimeter) -> int:
    """A public port a registration may claim (``dirac_port``); ValueError otherwise."""
    if port < 1024 and port not in perimeter.privileged:
        inside = any(low <= port <= high and low < 1024 for low, high in perimeter.public_ranges)
        if not inside:
            raise ValueError(f"dirac_port {port} is a privileged port nobody declared")
    if not any(low <= port <= high for low, high in perimeter.public_ranges):
        raise ValueError(f"dirac_port {port} is outside [ports] public_ranges")
    return port


def default_ranges(
    declared: Iterable[int], auto: tuple[int, int] | None
) -> tuple[tuple[int, int], ...]:
    """The public ranges when ``[ports] public_ranges`` is empty: every declared port (map,
    overrides) and the auto range, merged."""
    spans = sorted({(p, p) for p in declared} | ({auto} if auto else set()))
    merged: list[tuple[int, int]] = []
    for low, high in spans:
        if merged and low <= merged[-1][1] + 1:
            merged[-1] = (merged[-1][0], max(high, merged[-1][1]))
        else:
            merged.append((low, high))
    return tuple(merged)
