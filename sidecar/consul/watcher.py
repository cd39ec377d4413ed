"""The catalog watcher: the services watch plus one health watch per DIRAC service (adapter).

It owns the watches (asyncio tasks on one event-loop thread, ``consul.loop``) and the latest
answer of each, and turns them into a ``Snapshot``
for the pure stages. It never decides policy: every answer is parsed by ``consul.parse`` and
handed on; the orchestrator is told through ``notify`` that something may have changed.

Freshness: a watch that fails is "failing since T"; the age of the data is the time since the
oldest still-failing watch last succeeded, so an operator sees how old the served state is
while Consul is down, and the CS writer refuses to write stale data.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import operator
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from sidecar.base import validate
from sidecar.base.errors import CatalogError
from sidecar.config.schema import ConsulSettings
from sidecar.consul import parse
from sidecar.consul.client import Answer, AsyncConsul, Lease
from sidecar.consul.loop import EventLoopThread
from sidecar.consul.probe import PROBE_KEY, probe
from sidecar.consul.watch import Unwatched, Watch, WatchTiming
from sidecar.core.model import ServiceEntries, Snapshot

log = logging.getLogger(__name__)
SERVICES_KEY = "/v1/catalog/services"
_REQUESTS = operator.attrgetter("requests")
MASS_VANISH = 3  # this many DIRAC services or more vanishing in one answer is suspicious
CANARY_MISSING = (
    "the catalog does not list the {!r} service: the ACL token lacks service:read (or the "
    "answer is broken); keeping the last good state"
)

@dataclass(frozen=True, slots=True)
class CatalogView:
    """What the orchestrator reads: the snapshot plus how much it can be trusted."""

    snapshot: Snapshot
    complete: bool  # every watch has answered at least once
    failing_since: float | None  # monotonic time of the oldest unresolved failure
    last_error: str
    requests: int
    reset_at: float | None = None  # monotonic time the catalog index last went backwards


class CatalogWatcher:
    def __init__(
        self,
        settings: ConsulSettings,
        token: str,
        notify: Callable[[], None],
        rng: random.Random | None = None,
    ) -> None:
        self._settings = settings
        self._token = token
        self._notify = notify
        self._rng = rng or random.Random()
        self._lock = threading.Lock()
        self._watches: dict[str, Watch] = {}
        self._entries: dict[str, ServiceEntries] = {}
        self._services_seen = False
        self._failing: dict[str, float] = {}
        self._last_error = ""
        self._index = 0
        self._reset_at: float | None = None
        self._loop = EventLoopThread()
        self._client: AsyncConsul | None = None  # created on the loop, closed by ``stop``
        self._leases: dict[str, Lease] = {}  # each health watch's own connection
        self._probe: asyncio.Task[None] | None = None  # ``consul.probe``, beside the watches
        self._entries_version = object()  # replaced whenever ``_entries`` changes
        self._sorted: tuple[object, tuple[ServiceEntries, ...]] | None = None
        self._complete: tuple[tuple[object, int, bool], bool] | None = None  # key, complete
        self._answered_at: float | None = None  # the oldest answer the daemon has not taken
        self._timing = WatchTiming(settings.wait, settings.retry_min, settings.retry_max,
                                   settings.rate_burst, settings.rate_interval)  # fmt: skip

    def start(self) -> None:
        self._loop.start()
        self._loop.call(self._start_services)

    def _start_services(self) -> None:
        client = self._client = AsyncConsul(self._settings, self._token)
        watch = Watch(SERVICES_KEY, client.lease().services, self._on_services, self._timing,
                      random.Random(self._rng.random()))  # fmt: skip
        with self._lock:
            self._watches[SERVICES_KEY] = watch
        watch.start()
        self._probe = asyncio.get_running_loop().create_task(  # kept: a task is held weakly
            probe(client.leader, self._settings.probe_interval, self._probe_failed,
                  self._probe_recovered), name="consul-probe")  # fmt: skip

    def _probe_failed(self, error: CatalogError) -> None:
        self._failed(PROBE_KEY, error)
        self._notify()

    def _probe_recovered(self) -> None:
        """The agent answers again: every parked query is sent again on a fresh connection."""
        with self._lock:
            self._recovered(PROBE_KEY)
            watches = list(self._watches.values())
        for watch in watches:
            watch.renew()
        self._notify()

    def stop(self) -> None:
        """Cancel every watch (their parked requests too), close the pool, end the thread."""
        with self._lock:
            self._watches.clear()

        async def cleanup() -> None:
            if self._client is not None:
                await self._client.aclose()

        self._loop.close(cleanup)

    def view(self) -> CatalogView:
        """The snapshot is sorted only once complete, and again only when an answer changed it
        (the daemon asks on every answer: 5,000 first answers must not sort 5,000 times);
        completeness is looked up again only when the entries or the watched names changed
        (the status round asks every 2 s: 1,000 lookups each time were a third of it)."""
        with self._lock:
            # every watched name has an entry once its watch answered (a membership test per
            # name: counting entries against watches would trust an invariant no test pins);
            # a name leaving replaces ``_entries_version``, one coming changes the count
            key = (self._entries_version, len(self._watches), self._services_seen)
            if self._complete is None or self._complete[0] != key:
                self._complete = (key, self._services_seen and all(
                    name in self._entries for name in self._watches if name != SERVICES_KEY
                ))  # fmt: skip
            complete = self._complete[1]
            services: tuple[ServiceEntries, ...] = ()
            if complete:
                if self._sorted is None or self._sorted[0] is not self._entries_version:
                    ordered = tuple(self._entries[name] for name in sorted(self._entries))
                    self._sorted = (self._entries_version, ordered)
                services = self._sorted[1]
            failing = min(self._failing.values()) if self._failing else None
            requests = sum(map(_REQUESTS, self._watches.values()))
            return CatalogView(Snapshot(services, self._index), complete, failing,
                               self._last_error, requests, self._reset_at)  # fmt: skip

    def take_answered(self) -> float | None:
        """When (monotonic) the oldest answer since the last call arrived; None if none did.

        The daemon's propagation histogram starts here, not when its loop gets round to the
        change: a change that waits behind the loop's own work (an apply, a reload) waits in
        the figure too.
        """
        with self._lock:
            at, self._answered_at = self._answered_at, None
        return at

    def _answered(self) -> None:
        with self._lock:
            if self._answered_at is None:
                self._answered_at = time.monotonic()

    # -- callbacks, on the loop's thread -------------------------------------------------------

    def _failed(self, key: str, error: CatalogError) -> None:
        with self._lock:
            self._failing.setdefault(key, time.monotonic())
            self._last_error = f"{key}: {error}"
        log.debug("watch %s failed: %s", key, error)

    def _recovered(self, key: str) -> None:
        self._failing.pop(key, None)
        if not self._failing:
            self._last_error = ""

    async def _on_services(
        self, key: str, answer: Answer | None, error: CatalogError | None
    ) -> None:
        if error is not None or answer is None:
            if error is not None:
                self._failed(key, error)
            self._notify()
            return
        if not self._canary_visible(answer.body):
            self._failed(key, CatalogError(CANARY_MISSING.format(self._settings.canary_service)))
            self._notify()
            return
        names = set(parse.tagged_services(answer.body, self._settings.tag))
        with self._lock:
            first, recovered = not self._services_seen, key in self._failing
            self._recovered(key)
            self._services_seen = True
            known = {k for k in self._watches if k != SERVICES_KEY}
            if answer.index < self._index:  # Consul's data was wiped or restored
                self._suspect(f"catalog index went backwards ({self._index} -> {answer.index})")
            elif len(known) >= MASS_VANISH and not names:  # a handful going is plausible
                self._suspect(f"all {len(known)} DIRAC services vanished in one answer")
            self._index = answer.index
            current = {k for k in self._watches if k != SERVICES_KEY}
            for gone in current - names:
                self._watches.pop(gone).stop()
                lease = self._leases.pop(gone, None)
                if lease is not None:
                    lease.release()
                self._entries.pop(gone, None)
                self._entries_version = object()
                self._failing.pop(gone, None)
            new = sorted(names - current)
            started = [self._add_watch(name) for name in new]
            changed = first or recovered or bool(new) or bool(current - names)
        for watch in started:
            if watch is not None:
                watch.start()
        log.debug("catalog services: %d tagged %r", len(names), self._settings.tag)
        if changed:  # an unrelated write (another service, a gateway's own entry) is no event
            self._answered()
            self._notify()

    def _add_watch(self, name: str) -> Watch | None:
        """Called with the lock held; a name Consul cannot be asked about is reported only."""
        try:
            validate.consul_service_name(name)
        except ValueError as exc:
            self._entries[name] = ServiceEntries(name, 0, (), error=str(exc))
            self._entries_version = object()
            self._watches[name] = Unwatched(name)  # type: ignore[assignment]
            return None
        assert self._client is not None  # created before the services watch that calls this
        lease, tag = self._client.lease(), self._settings.tag
        self._leases[name] = lease
        # a partial, not a closure: no coroutine frame of its own in every parked query
        # (with ``Lease.health`` handing on its request's coroutine: ~0.8 KB a watch)
        query = functools.partial(lease.health, name, tag)
        # the watcher's own generator, not one per watch: a Random is ~2.5 KB of Mersenne
        # Twister state (2.5 MB at 1,000 services), and every watch runs on the one loop
        watch = Watch(name, query, self._on_health, self._timing, self._rng)
        self._watches[name] = watch
        return watch

    def _suspect(self, what: str) -> None:
        """Called with the lock held: absent instances prove nothing for a while."""
        self._reset_at = time.monotonic()
        log.warning("%s: instances that are merely absent stay for consul.reset_grace", what)

    def _canary_visible(self, body: object) -> bool:
        """Consul servers always register the ``consul`` service: an answer without it is
        filtered by ACLs (a token that lost service:read gets 200 and an empty catalog in
        Consul 1.8, not 403) or broken, and must not empty the gateway."""
        canary = self._settings.canary_service
        return not canary or (isinstance(body, dict) and canary in body)

    def _empties(self, key: str, answer: Answer) -> bool:
        with self._lock:
            before = self._entries.get(key)
        return bool(before and before.instances) and answer.body == []

    async def _confirm_empty(self, key: str, answer: Answer) -> CatalogError | None:
        """A service emptied at once: check that the catalog is still fully visible."""
        assert self._client is not None
        try:
            services = await self._client.services(0, 0)
        except CatalogError as exc:
            return exc
        if not self._canary_visible(services.body):
            return CatalogError(CANARY_MISSING.format(self._settings.canary_service))
        return None

    async def _on_health(
        self, key: str, answer: Answer | None, error: CatalogError | None
    ) -> None:
        if answer is not None:
            self._answered()  # before an emptying answer's check: that wait counts too
        if answer is not None and self._empties(key, answer):
            error = await self._confirm_empty(key, answer) or error
            answer = None if error is not None else answer
        with self._lock:
            if key not in self._watches:
                return  # the service left the catalog while this query was parked
            previous = self._entries.get(key)
            if answer is not None and previous is not None and answer.index < previous.index:
                self._suspect(f"{key}: index went backwards ({previous.index} -> {answer.index})")
            if error is not None:
                self._failing.setdefault(key, time.monotonic())
                self._last_error = f"{key}: {error}"
                if not error.retryable:  # e.g. HTTP 400: this service is broken, not Consul
                    self._failing.pop(key, None)
                    self._entries[key] = ServiceEntries(key, 0, (), error=str(error))
                    self._entries_version = object()
            elif answer is not None:
                self._recovered(key)
                self._entries[key] = parse.parse_health(key, answer.index, answer.body)
                self._entries_version = object()
        self._notify()
