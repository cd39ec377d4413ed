"""Plain-data builders for unit tests of the pure core (no mocks)."""

from __future__ import annotations

from typing import Any, TypeVar

from sidecar.config.base import Section
from sidecar.config.schema import GatewaySettings, HAProxySettings, Settings
from sidecar.config.validation import validate_section
from sidecar.core.model import Health, Instance, ServiceEntries, Snapshot
from sidecar.core.portmap import PortMap, load_port_map


def inst(
    sid: str,
    address: str = "10.0.0.1",
    port: int | str | None = 31000,
    health: Health = Health.PASSING,
    system: str | None = "Framework",
    service: str | None = "SystemAdministrator",
    node: str = "node1",
    consul: str = "sysadmin",
    created: int = 0,
    **meta: str,
) -> Instance:
    values = dict(meta)
    if system is not None:
        values["dirac_system"] = system
    if service is not None:
        values["dirac_service"] = service
    return Instance(
        consul,
        node,
        sid,
        address,
        port,
        ("dirac",),
        tuple(sorted(values.items())),
        health,
        created,
    )


def snap(*groups: tuple[str, list[Instance]]) -> Snapshot:
    return Snapshot(
        tuple(
            ServiceEntries(name, 10, tuple(sorted(i, key=lambda x: x.key))) for name, i in groups
        ),
        10,
    )


S = TypeVar("S", bound=Section)


def validated(section: type[S], raw: dict[str, Any]) -> S:
    """``raw`` validated into ``section`` as the loader does (durations as text, ...)."""
    value, problems = validate_section(section, raw, section.__name__)
    assert not problems, problems
    return value  # type: ignore[no-any-return]


def settings(**haproxy: object) -> Settings:
    return Settings(
        gateway=GatewaySettings(names=("dirac-gw.example.org",), bind="127.0.0.1"),
        haproxy=validated(HAProxySettings, {"runtime_dir": "/run/dirac-sidecar", **haproxy}),
    )


def port_map() -> PortMap:
    return load_port_map(Settings().port_map_path)
