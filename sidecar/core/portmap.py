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
import io
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


def parse_port_map(text: str, source: str) -> PortMap:
    """Parse the CSV text of a port map; ``source`` names the file in errors."""
    lines = [
        line for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")
    ]
    reader = csv.DictReader(io.StringIO("\n".join(lines)))
    needed = {"system", "service", "protocol", "gateway_port"}
    if reader.fieldnames is None or not needed <= set(reader.fieldnames):
        raise ValueError(f"{source}: header must name the columns {sorted(needed)}")
    entries: dict[tuple[str, str], PortEntry] = {}
    ports: dict[int, str] = {}
    for number, row in enumerate(reader, start=2):
        where = f"{source}: row {number}"
        try:
            system = validate.dirac_name(row["system"], "system")
            service = validate.dirac_name(row["service"], "service")
            protocol = Protocol(row["protocol"])
            gateway_port = validate.port(row["gateway_port"], "gateway_port")
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
    return parse_port_map(path.read_text(encoding="utf-8"), str(path))


def hashed_port(system: str, service: str, low: int, high: int) -> int:
    """A port in [low, high] that depends only on the service's name (stable everywhere)."""
    digest = hashlib.sha256(f"{system}/{service}".encode()).digest()
    return low + int.from_bytes(digest[:8], "big") % (high - low + 1)
