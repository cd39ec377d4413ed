"""The second read that confirms a held-back removal (adapter).

The blast-radius guard keeps instances in rotation when one catalog answer removes too many
at once. After ``confirm_delay`` the daemon asks Consul again, with a fresh non-blocking query
per affected service: an instance that is still failing, or gone, is confirmed; one that
recovered is simply left to the watch.
"""

from __future__ import annotations

import logging

from sidecar.catalog import parse
from sidecar.catalog.client import ConsulClient
from sidecar.errors import CatalogError
from sidecar.model import Health, Snapshot
from sidecar.settings import ConsulSettings

log = logging.getLogger(__name__)


def confirm_removals(
    client: ConsulClient,
    settings: ConsulSettings,
    snapshot: object,
    keys: list[str],
    distrust_absent: bool = False,
) -> frozenset[str]:
    """Keys whose removal a fresh read confirms (absent ones only when absence is trusted)."""
    if not isinstance(snapshot, Snapshot):
        return frozenset()
    wanted = set(keys)
    owner = {
        inst.key: inst.consul_service
        for entries in snapshot.services
        for inst in entries.instances
        if inst.key in wanted
    }
    routable = {Health.PASSING, Health.MAINTENANCE}
    if settings.include_warning:
        routable.add(Health.WARNING)
    confirmed: set[str] = set()
    for name in sorted(set(owner.values())):
        try:
            answer = client.health(name, settings.tag, 0, 0)
        except CatalogError as exc:
            log.warning("cannot confirm removals in %s: %s", name, exc)
            continue
        now = {i.key: i for i in parse.parse_health(name, answer.index, answer.body).instances}
        mine = [k for k, service in owner.items() if service == name]
        for k in mine:
            if k in now and now[k].health not in routable:
                confirmed.add(k)
            elif k not in now and not distrust_absent:
                confirmed.add(k)
    return frozenset(confirmed & wanted)
