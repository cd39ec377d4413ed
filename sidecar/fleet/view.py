"""The live gateways and the fleet view, read from Consul's ``dirac-gateway`` service
(adapter; ``advertised_names``, ``lagging``, ``allowed_name`` and the entry parsing are
pure).

The CS writer reads the passing instances (``live_gateway_names``, through ``names_provider``)
when ``dirac_cs.discover_gateways`` is on, so a gateway that is not ready is never advertised,
and only names inside the allowed domains are; ``sidecar status --fleet`` reads them all
(``fleet``). Each gateway registers itself through ``fleet.registry``.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from sidecar.base import validate
from sidecar.base.errors import CatalogError
from sidecar.base.inert import inert
from sidecar.consul.client import ConsulClient
from sidecar.consul.http import ConsulHTTP, expect_ok
from sidecar.fleet.registry import (
    MAINTENANCE_CHECK,
    META_GENERATION,
    META_INDEX,
    META_NAMES,
    SERVICE,
)

log = logging.getLogger(__name__)
NamesFn = Callable[[], tuple[str, ...]]


@dataclass(frozen=True, slots=True)
class GatewayInfo:
    name: str  # the first gateway name
    node: str
    generation: str
    catalog_index: int
    status: str  # passing, warning, critical (worst of the instance's checks)
    names: tuple[str, ...] = ()


def _instances(client: ConsulClient, passing: bool) -> list[dict[str, Any]]:
    params = [("passing", "1")] if passing else []
    reply = ConsulHTTP(client).get(f"/v1/health/service/{SERVICE}", params)
    expect_ok(reply, f"read {SERVICE}")
    if not isinstance(reply.body, list):
        raise CatalogError(f"read {SERVICE}: answer is not a list")
    return [entry for entry in reply.body if isinstance(entry, dict)]


def _meta(entry: dict[str, Any]) -> dict[str, str]:
    meta = (entry.get("Service") or {}).get("Meta") or {}
    return {str(k): str(v) for k, v in meta.items()} if isinstance(meta, dict) else {}


def _names(entry: dict[str, Any]) -> tuple[str, ...]:
    raw = _meta(entry).get(META_NAMES, "")
    return tuple(name.strip() for name in raw.split(",") if name.strip())


def _own_check_passes(entry: dict[str, Any]) -> bool:
    """A registration without a check of its own counts as passing in Consul (only the node's
    serfHealth is there): such an entry must not advertise names. Every sidecar registers a
    TTL check on its own service and passes it only while ready."""
    service_id = str((entry.get("Service") or {}).get("ID", ""))
    checks = [c for c in entry.get("Checks") or [] if isinstance(c, dict)]
    own = [c for c in checks if service_id and c.get("ServiceID") == service_id]
    return bool(own) and all(c.get("Status") == "passing" for c in own)


def allowed_name(name: str, allowed: tuple[str, ...]) -> bool:
    """``name`` matches an entry of ``allowed``: ".example.org" (under it) or an exact name."""
    name = name.lower().rstrip(".")
    return any(
        name.endswith(entry) and len(name) > len(entry) if entry.startswith(".") else name == entry
        for entry in allowed
    )


def default_allowed(names: tuple[str, ...]) -> tuple[str, ...]:
    """The parent domains of the configured names: dirac-gw.example.org -> ".example.org"."""
    parents = {"." + n.split(".", 1)[1] for n in names if "." in n}
    return tuple(sorted(parents | {n for n in names if "." not in n}))


def advertised_names(
    entries: Iterable[dict[str, Any]], allowed: tuple[str, ...]
) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(names that may be advertised, names refused), both sorted; pure.

    ``entries`` are the passing instances of the gateway service (Consul's answer). A name
    counts only from an entry whose own checks all pass and only inside ``allowed``;
    anyone can register a ``dirac-gateway`` service. Names are canonical (lower case, no
    trailing dot: ``validate.host``), so one gateway written two ways is listed once.
    """
    names: set[str] = set()
    refused: set[str] = set()
    for entry in entries:
        ready = _own_check_passes(entry)
        for raw in _names(entry):
            try:
                name = validate.host(raw, "gateway name")
            except ValueError:
                refused.add(raw)
                continue
            (names if ready and allowed_name(name, allowed) else refused).add(name)
    return tuple(sorted(names)), tuple(sorted(refused - names))


def live_gateway_names(
    client: ConsulClient, allowed: tuple[str, ...]
) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """``advertised_names`` of the passing ``dirac-gateway`` instances in Consul.

    Ready: every check passing (Consul's ``passing`` filter), including at least one check
    of the gateway's own.
    """
    return advertised_names(_instances(client, True), allowed)


def _status(checks: Iterable[dict[str, Any]]) -> str:
    order = {"passing": 0, "warning": 1, "critical": 2, "maintenance": 3}
    checks = list(checks)
    if any(str(c.get("CheckID", "")).startswith(MAINTENANCE_CHECK) for c in checks):
        return "maintenance"  # drained (``sidecar drain``): not a failure
    statuses = [str(c.get("Status", "critical")) for c in checks] or ["passing"]
    return max(statuses, key=lambda s: order.get(s, 2))


def _index(value: str) -> int:
    try:
        return int(value)
    except ValueError:
        return 0


def fleet(client: ConsulClient) -> list[GatewayInfo]:
    """Every registered gateway (ready or not), sorted by name."""
    infos = []
    for entry in _instances(client, False):
        meta, names = _meta(entry), _names(entry)
        service_id = str((entry.get("Service") or {}).get("ID", ""))
        infos.append(
            GatewayInfo(
                name=names[0] if names else service_id,
                node=str((entry.get("Node") or {}).get("Node", "")),
                generation=meta.get(META_GENERATION, ""),
                catalog_index=_index(meta.get(META_INDEX, "0")),
                status=_status(entry.get("Checks") or []),
                names=names,
            )
        )
    return sorted(infos, key=lambda info: (info.name, info.node))


def lagging(gateways: Iterable[GatewayInfo]) -> tuple[str, ...]:
    """Names whose catalog index is below the highest, or whose generation is not the majority's.

    Pure. The majority generation is the most common one; when two are equally common there
    is no majority and only the index decides. A gateway with no generation yet lags whenever
    another has one.
    """
    infos = list(gateways)
    if not infos:
        return ()
    top = max(info.catalog_index for info in infos)
    counts = Counter(info.generation for info in infos if info.generation).most_common()
    unique = counts and (len(counts) == 1 or counts[0][1] > counts[1][1])
    majority = counts[0][0] if unique else None
    out = {
        info.name
        for info in infos
        if info.catalog_index < top
        or (majority is not None and info.generation != majority)
        or (counts and not info.generation)
    }
    return tuple(sorted(out))


def names_provider(
    client: ConsulClient,
    discover: bool,
    configured: tuple[str, ...],
    allowed: tuple[str, ...] = (),
) -> NamesFn:
    """The gateway names for the CS: the live gateways when ``discover``, else ``configured``.

    Discovered names must match ``allowed`` (default: the configured names' parent domains);
    refused ones are logged once per distinct set.
    """
    if not discover:
        return lambda: configured
    patterns = allowed or default_allowed(configured)
    last: list[tuple[str, ...]] = [()]

    def names() -> tuple[str, ...]:
        found, refused = live_gateway_names(client, patterns)
        if refused and refused != last[0]:
            shown = ", ".join(inert(n, 60) for n in refused[:10])
            log.warning(
                "gateway names not advertised (not allowed, or no passing check of their own): %s",
                shown,
            )
        last[0] = refused
        return found

    return names


def local_node(client: ConsulClient) -> str:
    """The local agent's node name (for the lock's holder value); "" when it does not say."""
    reply = expect_ok(ConsulHTTP(client).get("/v1/agent/self"), "read agent/self")
    config = reply.body.get("Config") if isinstance(reply.body, dict) else None
    return str(config.get("NodeName", "")) if isinstance(config, dict) else ""
