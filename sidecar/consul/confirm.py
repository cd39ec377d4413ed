"""The second read that confirms a held-back removal (adapter).

The blast-radius guard keeps instances in rotation when one catalog answer removes too many
at once. After ``confirm_delay`` the daemon asks Consul again, with a fresh non-blocking query
per affected service: an instance that is still failing, or gone, is confirmed; one that
recovered is simply left to the watch.
"""

from __future__ import annotations

import logging

from sidecar.base.errors import CatalogError
from sidecar.config.schema import ConsulSettings
from sidecar.consul import parse
from sidecar.consul.client import ConsulClient
from sidecar.core.model import Health, Snapshot

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
        failing = {k for k in mine if k in now and now[k].health not in routable}
        gone = {k for k in mine if k not in now and not distrust_absent}
        confirmed |= failing | gone
    return frozenset(confirmed & wanted)


class HeldRemovals:
    """Bookkeeping of the instances the guard holds back: since when, and which are confirmed.

    ``track`` records the held keys of a new target and returns when the first one is due for
    its second read; ``confirm`` performs that read for the due ones.
    """

    def __init__(self, client: ConsulClient, settings: ConsulSettings, delay: float) -> None:
        self.client, self.settings, self.delay = client, settings, delay
        self.since: dict[str, float] = {}
        self.confirmed: frozenset[str] = frozenset()

    def track(self, held: tuple[str, ...], now: float) -> float | None:
        self.since = {k: self.since.get(k, now) for k in held}
        return min(self.since.values()) + self.delay if self.since else None

    def confirm(self, snapshot: object, now: float, distrust_absent: bool) -> None:
        due = [k for k, t in self.since.items() if now - t >= self.delay]
        if not due:
            return
        confirmed = confirm_removals(self.client, self.settings, snapshot, due, distrust_absent)
        if confirmed:
            log.warning("removal confirmed by a second read: %s", ", ".join(sorted(confirmed)))
        self.confirmed = self.confirmed | confirmed

    def applied(self) -> None:
        """The confirmed removals are now part of the applied state."""
        self.confirmed = frozenset()
