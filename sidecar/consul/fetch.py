"""One-shot catalog read for ``sidecar render``, ``once`` and ``cs diff`` (adapter).

Non-blocking versions of the watcher's queries: the services list, then one health query per
tagged service. A service Consul refuses to answer about is reported, not fatal.
"""

from __future__ import annotations

from sidecar.base import validate
from sidecar.base.errors import CatalogError
from sidecar.consul import parse
from sidecar.consul.client import ConsulClient
from sidecar.core.model import ServiceEntries, Snapshot


def fetch_snapshot(client: ConsulClient, tag: str) -> Snapshot:
    """Raises CatalogError when Consul cannot be read at all."""
    services = client.services(0, 0)
    entries: list[ServiceEntries] = []
    for name in parse.tagged_services(services.body, tag):
        try:
            validate.consul_service_name(name)
            answer = client.health(name, tag, 0, 0)
        except ValueError as exc:
            entries.append(ServiceEntries(name, 0, (), error=str(exc)))
            continue
        except CatalogError as exc:
            if exc.retryable:
                raise
            entries.append(ServiceEntries(name, 0, (), error=str(exc)))
            continue
        entries.append(parse.parse_health(name, answer.index, answer.body))
    return Snapshot(tuple(entries), services.index)
