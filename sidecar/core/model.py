"""Value types shared by every stage of the pipeline (pure).

catalog snapshot -> desired state -> rendered config -> plan: everything that crosses a stage
boundary is one of these frozen values, so "nothing changed" is decided with ``==``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum


class Protocol(StrEnum):
    DIPS = "dips"
    HTTPS = "https"


class Health(StrEnum):
    """Aggregated Consul health of one instance, after maintenance is taken out."""

    PASSING = "passing"
    WARNING = "warning"
    CRITICAL = "critical"
    MAINTENANCE = "maintenance"


class ServerState(StrEnum):
    """Administrative state of an HAProxy server."""

    READY = "ready"  # receives new connections
    DRAIN = "drain"  # existing connections finish, no new ones (Consul maintenance)
    MAINT = "maint"  # not in rotation (an instance that is failing, or a server on its way out)


class Origin(StrEnum):
    """Why a backend exists on the gateway."""

    CATALOG = "catalog"  # the service is in the catalog
    KEPT = "kept"  # it left the catalog; its port stays bound (rejecting) while known
    DECLARED = "declared"  # named by the port map or the config, not in the catalog: bound and
    # rejecting from the start, so that its arrival is a runtime change


@dataclass(frozen=True, slots=True, order=True)
class Problem:
    """Something from the catalog that was skipped, with the reason (for log, render, check)."""

    subject: str
    reason: str

    def __str__(self) -> str:
        return f"{self.subject}: {self.reason}"


@dataclass(frozen=True, slots=True)
class Instance:
    """One registration of a DIRAC service in Consul, as read (not yet validated)."""

    consul_service: str
    node: str
    service_id: str
    address: str
    port: int | str | None
    tags: tuple[str, ...]
    meta: tuple[tuple[str, str], ...]
    health: Health
    create_index: int = 0  # Consul's CreateIndex: which registration came first

    @property
    def key(self) -> str:
        """Stable identity of an instance across catalog reads."""
        return f"{self.node}/{self.service_id}"

    def meta_value(self, name: str) -> str | None:
        for key, value in self.meta:
            if key == name:
                return value
        return None


@dataclass(frozen=True, slots=True)
class ServiceEntries:
    """The answer of one health query: every instance of one Consul service."""

    name: str
    index: int
    instances: tuple[Instance, ...]
    error: str | None = None  # the query failed for good (e.g. Consul answers HTTP 400)
    problems: tuple[Problem, ...] = ()  # entries too malformed to become an Instance


@dataclass(frozen=True, slots=True)
class Snapshot:
    """Everything the sidecar knows about the catalog at one moment."""

    services: tuple[ServiceEntries, ...]
    index: int = 0

    def by_name(self) -> dict[str, ServiceEntries]:
        return {entry.name: entry for entry in self.services}


@dataclass(frozen=True, slots=True)
class Server:
    """One HAProxy server of a backend: a stable name (from its instance) and where it points."""

    name: str
    address: str
    port: int
    state: ServerState
    instance: str = ""  # Instance.key
    weight: int = 1  # HAProxy weight (its default is 1; drain is expressed as 0)

    @property
    def effective_weight(self) -> int:
        return 0 if self.state is ServerState.DRAIN else self.weight


@dataclass(frozen=True, slots=True)
class Backend:
    """One DIRAC service on the gateway: its fixed public port(s) and its servers."""

    system: str
    service: str
    protocol: Protocol
    public_port: int
    servers: tuple[Server, ...]
    port_source: str = "map"
    claim_index: int = 0  # when it claimed its port (Consul CreateIndex): older claims win
    origin: Origin = Origin.CATALOG
    extra_ports: tuple[int, ...] = ()  # its declared port, when it serves on a dirac_port

    @property
    def listed(self) -> bool:
        """Whether the DIRAC CS should list it (it is, or was, in the catalog)."""
        return self.origin is not Origin.DECLARED

    @property
    def ports(self) -> tuple[int, ...]:
        return (self.public_port, *self.extra_ports)

    @property
    def name(self) -> str:
        return f"{self.system}_{self.service}"

    @property
    def path(self) -> str:
        return f"{self.system}/{self.service}"

    @property
    def ready_count(self) -> int:
        return sum(1 for server in self.servers if server.state is ServerState.READY)


@dataclass(frozen=True, slots=True)
class DesiredState:
    """What the gateway should expose, derived from one snapshot by ``desired.desired_state``."""

    backends: tuple[Backend, ...]
    problems: tuple[Problem, ...] = field(default=())

    def backend(self, name: str) -> Backend | None:
        for backend in self.backends:
            if backend.name == name:
                return backend
        return None

    @property
    def public_ports(self) -> tuple[int, ...]:
        """Every port a frontend listens on."""
        return tuple(sorted(port for backend in self.backends for port in backend.ports))

    @property
    def listed(self) -> tuple[Backend, ...]:
        """The backends of services that are (or were) in the catalog."""
        return tuple(b for b in self.backends if b.listed)
