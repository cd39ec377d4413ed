"""The public port map: DIRAC service -> fixed gateway port (pure parsing, one file read).

The shipped map (``sidecar/data/dirac-port-map.csv``) is part of the public contract: the URLs in
the DIRAC Configuration Service point at these ports, so lines are only ever appended.
Services missing from the map get a port hashed from their name into a configured range, which
depends on nothing but the name: it never shifts when another service appears, and every
gateway computes the same one.
"""

from __future__ import annotations

import csv
import hashlib
import re
from dataclasses import dataclass, field
from pathlib import Path

from sidecar.base import validate
from sidecar.core.model import Protocol


@dataclass(frozen=True, slots=True)
class PortEntry:
    system: str
    service: str
    protocol: Protocol
    gateway_port: int


@dataclass(frozen=True, slots=True)
class PortMap:
    entries: tuple[PortEntry, ...]
    _index: dict[tuple[str, str], PortEntry] = field(
        default_factory=dict, compare=False, repr=False
    )

    def __post_init__(self) -> None:
        self._index.update({(e.system, e.service): e for e in self.entries})

    def lookup(self, system: str, service: str) -> PortEntry | None:
        return self._index.get((system, service))

    def as_dict(self) -> dict[str, PortEntry]:
        return {f"{e.system}/{e.service}": e for e in self.entries}


def _lines(text: str) -> list[tuple[int, str]]:
    """(file line number, text) of every line that is neither blank nor a comment."""
    numbered = enumerate(re.split(r"\r\n|\r|\n", text), start=1)
    return [(n, line) for n, line in numbered if line.strip() and not line.lstrip().startswith("#")]


def _fields(line: str, where: str) -> list[str]:
    """One CSV line; a field never spans lines here (a quoted newline fails on both halves)."""
    try:
        return next(csv.reader([line]), [])
    except csv.Error as exc:
        raise ValueError(f"{where}: {exc}") from None


def parse_port_map(text: str, source: str) -> PortMap:
    """Parse the CSV text of a port map; errors name ``source`` and the line in that file."""
    lines = _lines(text)
    needed = {"system", "service", "protocol", "gateway_port"}
    header = [name.strip() for name in _fields(lines[0][1], f"{source}: line {lines[0][0]}")] \
        if lines else []  # fmt: skip
    if not needed <= set(header):
        raise ValueError(f"{source}: header must name the columns {sorted(needed)}")
    entries: dict[tuple[str, str], PortEntry] = {}
    ports: dict[int, str] = {}
    for number, line in lines[1:]:
        where = f"{source}: line {number}"
        row = dict(zip(header, _fields(line, where), strict=False))
        try:
            system = validate.dirac_name(row.get("system", ""), "system")
            service = validate.dirac_name(row.get("service", ""), "service")
            protocol = Protocol(row.get("protocol", ""))
            gateway_port = validate.port(row.get("gateway_port", ""), "gateway_port")
        except ValueError as exc:
            raise ValueError(f"{where}: {exc}") from None
        path = f"{system}/{service}"
        if (system, service) in entries:
            continue  # the same service listed twice (DIRAC and LHCbDIRAC): not a collision
        if gateway_port in ports:
            raise ValueError(
                f"{where}: gateway_port {gateway_port} already used by {ports[gateway_port]}"
            )
        ports[gateway_port] = path
        entries[(system, service)] = PortEntry(system, service, protocol, gateway_port)
    return PortMap(tuple(entries.values()))


def load_port_map(path: Path) -> PortMap:
    """Read and parse the port map at ``path``; ``ValueError`` names the file (and line)."""
    try:
        text = path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as exc:
        line = path.read_bytes()[: exc.start].count(b"\n") + 1
        raise ValueError(f"{path}: line {line}: not UTF-8 text ({exc.reason})") from None
    return parse_port_map(text, str(path))


def hashed_port(system: str, service: str, low: int, high: int) -> int:
    """A port in [low, high] that depends only on the service's name (stable everywhere)."""
    digest = hashlib.sha256(f"{system}/{service}".encode()).digest()
    return low + int.from_bytes(digest[:8], "big") % (high - low + 1)
