"""What the admission policy needs to know about the network (adapter: interfaces and DNS).

The pure ``admission`` module decides; this module only looks: the gateway's own interface
addresses (psutil), the addresses that catalog host names resolve to (getaddrinfo, bounded in
time, cached), and the endpoints of the gateway's own services that no backend may point at
(the Consul agent's HTTP address, the status endpoint). The daemon and every CLI command that
renders call ``NetFacts.perimeter`` once per cycle.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import ipaddress
import logging
import socket
import time
import urllib.parse
from collections.abc import Callable, Iterable

import psutil

from sidecar.base import validate
from sidecar.config.schema import Settings
from sidecar.core.admission import Perimeter
from sidecar.core.desired import perimeter_for
from sidecar.core.model import ServiceEntries, Snapshot
from sidecar.core.pipeline import Inputs
from sidecar.core.portmap import PortMap

log = logging.getLogger(__name__)
RESOLVE_TTL = 30.0  # seconds a resolved host name is trusted
FAILED_TTL = 5.0  # seconds before a name that did not resolve is asked again
RESOLVE_TIMEOUT = 2.0  # seconds one resolution may take (the loop must not hang on DNS)
OWN_TTL = 30.0  # seconds between two reads of the interface addresses


def interface_addresses() -> frozenset[str]:
    found: set[str] = set()
    for entries in psutil.net_if_addrs().values():
        for entry in entries:
            if entry.family in (socket.AF_INET, socket.AF_INET6):
                text = entry.address.split("%", 1)[0]
                canonical = validate.ip_address(text)
                if canonical:
                    found.add(canonical)
    return frozenset(found)


def _lookup(name: str) -> tuple[str, ...]:
    infos = socket.getaddrinfo(name, None, type=socket.SOCK_STREAM)
    addresses = {str(ipaddress.ip_address(info[4][0])) for info in infos}
    return tuple(sorted(addresses))


def refused_endpoints(
    settings: Settings, status_port: int | None = None
) -> tuple[frozenset[tuple[str, int]], frozenset[int]]:
    """The gateway's own service endpoints, never a backend whatever the networks allow:
    (exact ip:port pairs, ports refused on every loopback and own address).

    The Consul agent and the status endpoint may listen on more addresses than the settings
    name (0.0.0.0, or the port the status endpoint really got for ``listen = ...:0``): on the
    gateway itself their ports are refused on any of its addresses.
    """
    pairs: set[tuple[str, int]] = set()
    ports: set[int] = set()
    url = urllib.parse.urlsplit(settings.consul.address)
    port = url.port or (443 if url.scheme == "https" else 8500)
    host = url.hostname or "127.0.0.1"
    for address in [host] if validate.is_ip(host) else _safe_lookup(host):
        pairs.add((address, port))
    ports.add(port)
    if settings.status.enabled:
        host, port = validate.parse_listen(settings.status.listen)
        port = status_port or port
        pairs.add((host, port))
        ports.add(port)
    return frozenset(pairs), frozenset(ports - {0})


def _safe_lookup(name: str) -> tuple[str, ...]:
    try:
        return _lookup(name)
    except OSError:
        return ()


def host_names(snapshot: Snapshot) -> set[str]:
    """Addresses in the snapshot that are host names (the rest are IPs or junk)."""
    names: set[str] = set()
    for entries in snapshot.services:
        names |= _entries_host_names(entries)
    return names


_NO_NAMES: frozenset[str] = frozenset()  # shared: most services name their hosts by IP


def _entries_host_names(entries: ServiceEntries) -> frozenset[str]:
    names = set()
    for inst in entries.instances:
        if inst.address and not validate.is_ip(inst.address):
            try:
                names.add(validate.host(inst.address))
            except ValueError:
                continue
    return frozenset(names) if names else _NO_NAMES


class NetFacts:
    """Caches of interface addresses and name resolutions, one per daemon (or CLI command)."""

    def __init__(
        self,
        lookup: Callable[[str], tuple[str, ...]] = _lookup,
        interfaces: Callable[[], frozenset[str]] = interface_addresses,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._lookup, self._interfaces, self._clock = lookup, interfaces, clock
        self._names: dict[str, tuple[float, tuple[str, ...]]] = {}
        self._own: tuple[float, frozenset[str]] | None = None
        self._refused: (
            tuple[tuple[object, ...], tuple[frozenset[tuple[str, int]], frozenset[int]]] | None
        ) = None
        self.status_port: int | None = None  # the status endpoint's real port, once bound
        # Per cycle of a change stream, most services are the very ServiceEntries objects of
        # the previous read: their host names are worked out once (keyed by identity), and an
        # unchanged perimeter is the previous object (compared by identity downstream).
        self._names_memo: dict[int, tuple[ServiceEntries, frozenset[str]]] = {}
        self._perimeter: tuple[tuple[object, ...], Perimeter] | None = None
        self._pool = concurrent.futures.ThreadPoolExecutor(2, thread_name_prefix="resolve")

    def own_addresses(self) -> frozenset[str]:
        now = self._clock()
        if self._own is None or now - self._own[0] >= OWN_TTL:
            try:
                self._own = (now, self._interfaces())
            except OSError as exc:
                log.warning("cannot read the interface addresses: %s", exc)
                self._own = (now, self._own[1] if self._own else frozenset())
        return self._own[1]

    def resolve(self, names: Iterable[str]) -> tuple[tuple[str, tuple[str, ...]], ...]:
        now = self._clock()
        due = [n for n in names if n not in self._names or self._names[n][0] <= now]
        futures = {name: self._pool.submit(self._lookup, name) for name in due}
        for name, future in futures.items():
            try:
                found = future.result(timeout=RESOLVE_TIMEOUT)
                self._names[name] = (now + RESOLVE_TTL, found)
            except (OSError, concurrent.futures.TimeoutError, ValueError) as exc:
                log.debug("cannot resolve %r: %s", name, exc)
                self._names[name] = (now + FAILED_TTL, ())
        if len(self._names) > 4096:  # names that left the catalog: forget them
            for name in [n for n, (until, _) in self._names.items() if until <= now]:
                del self._names[name]
        return tuple(sorted((n, self._names[n][1]) for n in set(names) if self._names[n][1]))

    def perimeter(self, snapshot: Snapshot, settings: Settings, port_map: PortMap) -> Perimeter:
        key = (settings.consul.address, settings.status.listen, settings.status.enabled)
        if self._refused is None or self._refused[0] != (*key, self.status_port):
            refused = refused_endpoints(settings, self.status_port)
            self._refused = ((*key, self.status_port), refused)
        pairs, ports = self._refused[1]
        facts = (settings, port_map, self.own_addresses(), pairs, ports,
                 self.resolve(self._host_names(snapshot)))  # fmt: skip
        last = self._perimeter
        if last is not None and all(a is b or a == b for a, b in zip(last[0], facts, strict=True)):
            return last[1]
        perimeter = perimeter_for(settings, port_map, facts[2], pairs, facts[5])
        perimeter = dataclasses.replace(perimeter, own_ports=ports)
        self._perimeter = (facts, perimeter)
        return perimeter

    def _host_names(self, snapshot: Snapshot) -> set[str]:
        """``host_names(snapshot)``, memoised per ServiceEntries object."""
        memo = self._names_memo
        if len(memo) > 4 * len(snapshot.services) + 64:
            memo.clear()  # entries replaced by newer reads: forget them
        names: set[str] = set()
        for entries in snapshot.services:
            hit = memo.get(id(entries))
            if hit is None or hit[0] is not entries:
                hit = (entries, _entries_host_names(entries))
                memo[id(entries)] = hit
            names |= hit[1]
        return names

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)


def fenced(inputs: Inputs, snapshot: Snapshot, facts: NetFacts | None = None) -> Inputs:
    """``inputs`` with the perimeter of ``snapshot`` (for CLI commands that render once)."""
    own = facts is None
    facts = facts or NetFacts()
    try:
        perimeter = facts.perimeter(snapshot, inputs.settings, inputs.port_map)
    finally:
        if own:
            facts.close()
    return dataclasses.replace(inputs, perimeter=perimeter)
