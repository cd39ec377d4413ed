"""One gateway's part in the fleet, driven by the daemon's heartbeat (adapter wiring, I/O).

Sits in the apply stage next to the HAProxy applier and keeps the daemon's fan-out small: the
daemon holds one ``FleetMember`` and calls ``heartbeat`` about once a second, ``reconfigure``
on SIGHUP and ``stop`` on the way out. Each heartbeat:

1. publishes this gateway in Consul (``GatewayRegistry``): TTL check passed with the applied
   generation and catalog index while ready, failed with the reason otherwise;
2. when ``dirac_cs.enabled`` and ready: ticks the one-writer lock (its keeper thread passes
   the writer check, renews, acquires when free) and lets the ``CSWriter`` bring the CS to the
   applied desired state (it writes only with fresh data, the lock held and confirmed, and a
   real change). A gateway that is not ready releases the lock, so a ready one takes over the
   writing at once; a keeper that acquires writes at once with the last beat's facts.

Nothing here raises into the daemon: Consul failures are logged once per distinct message.
"""

from __future__ import annotations

import logging
import math
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

from sidecar.base.errors import SidecarError
from sidecar.config.schema import Settings
from sidecar.consul.client import ConsulClient
from sidecar.core.model import DesiredState
from sidecar.dirac_cs.writer import CSWriteOutcome, CSWriter
from sidecar.fleet.lock import CSLock
from sidecar.fleet.registry import GatewayRegistry
from sidecar.fleet.view import names_provider

log = logging.getLogger(__name__)
STALE_BEAT = 10.0  # seconds: an older status round's facts are not written by the keeper


@dataclass(frozen=True, slots=True)
class Beat:
    """What the daemon knows at a heartbeat."""

    ready: bool  # HAProxy serves the applied config
    desired: DesiredState | None  # the APPLIED desired state (what HAProxy really serves)
    generation: str  # hash of the applied config
    catalog_index: int  # gateway_registry.catalog_index(snapshot of the applied cycle)
    fresh: bool  # every watch answered and none is failing
    now: datetime  # wall clock, timezone-aware (CS backup names)
    reason: str = "not ready"  # published when not ready
    drained: str | None = None  # the reason of ``sidecar drain``: in Consul maintenance, no CS


class FleetMember:
    def __init__(
        self,
        settings: Settings,
        client: ConsulClient,
        holder: str = "",
        min_interval: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._client = client
        self._min_interval, self._clock = min_interval, clock
        self._last_beat: tuple[object, ...] | None = None
        self._last_at = -math.inf
        self._holder = holder or f"{socket.gethostname()}/{settings.gateway.names[0]}"
        self.settings = settings
        self.registry = GatewayRegistry(client, settings.gateway.names)
        self.lock: CSLock | None = None
        self.writer: CSWriter | None = None
        # the last beat that allowed writing, and when any beat was seen: the lock's keeper
        # writes with it at once when it acquires the lock (failover must not wait for a beat)
        self._writable: Beat | None = None
        self._seen_at = -math.inf
        self._sync_mutex = threading.Lock()  # the status round and the keeper both sync
        self._build_cs(settings)
        self._last_error = ""
        self.last_outcome: CSWriteOutcome | None = None

    def _build_cs(self, settings: Settings, lock: CSLock | None = None) -> None:
        """The writer (and the lock, unless an existing one is kept) for ``settings``."""
        cs = settings.dirac_cs
        if not cs.enabled:
            self.lock = self.writer = None
            return
        self.lock = lock or CSLock.from_settings(
            self._client, cs, self._holder, keeper=True, on_acquired=self._acquired
        )
        names = names_provider(
            self._client, cs.discover_gateways, settings.gateway.names, cs.discover_allowed
        )
        self.writer = CSWriter(cs, self.lock, names)

    def heartbeat(self, beat: Beat) -> CSWriteOutcome | None:
        """Publish, tick the lock, sync the CS; the CS outcome (None when CS is off).

        Calls closer than ``min_interval`` with the same facts do nothing (the daemon may call
        it on every event of a burst) and return the previous outcome.
        """
        key = (beat.ready, beat.desired, beat.generation, beat.catalog_index, beat.fresh,
               beat.drained)  # fmt: skip
        self._seen_at = self._clock()
        if key == self._last_beat and self._clock() - self._last_at < self._min_interval:
            return self.last_outcome
        self._last_beat, self._last_at = key, self._clock()
        self._publish(beat)
        self.last_outcome = None
        if self.lock is None or self.writer is None:
            return None
        if not beat.ready or beat.desired is None or beat.drained is not None:
            self._writable = None
            if self.lock.active:  # let a ready gateway write meanwhile
                why = "drained" if beat.drained is not None else beat.reason
                log.info("CS writer lock released: this gateway is %s", why)
                self.lock.release()
            return None
        self._writable = beat
        self.lock.tick()
        with self._sync_mutex:
            self.last_outcome = self.writer.sync(beat.desired, beat.fresh, beat.now)
        return self.last_outcome

    def _acquired(self) -> None:
        """The keeper just acquired the lock: sync now with the last beat's facts, if recent."""
        beat, writer = self._writable, self.writer
        if beat is None or beat.desired is None or writer is None:
            return
        if self._clock() - self._seen_at > STALE_BEAT:  # the status round is stuck: wait for it
            return
        with self._sync_mutex:
            self.last_outcome = writer.sync(beat.desired, beat.fresh, datetime.now(UTC))
        log.info("CS writer took over: %s", self.last_outcome.status.value)

    def _publish(self, beat: Beat) -> None:
        try:
            if beat.ready:
                self.registry.pass_ttl(beat.generation, beat.catalog_index)
            else:
                self.registry.fail_ttl(beat.reason)
            self.registry.set_maintenance(beat.drained)
        except SidecarError as exc:
            if str(exc) != self._last_error:
                log.warning("cannot publish this gateway in Consul: %s", exc)
            self._last_error = str(exc)
        else:
            self._last_error = ""

    def reconfigure(self, settings: Settings) -> None:
        """SIGHUP: new names or CS settings take effect; a lock whose settings changed (or
        that is no longer needed) is released first."""
        old, self.settings = self.settings, settings
        if settings.gateway.names != old.gateway.names:
            self._quietly(self.registry.deregister)
            self.registry = GatewayRegistry(self._client, settings.gateway.names)
        if settings.dirac_cs == old.dirac_cs and settings.gateway.names == old.gateway.names:
            return
        keep = self.lock if _lock_settings(settings) == _lock_settings(old) else None
        if self.lock is not None and keep is None:
            self.lock.release()
        self._build_cs(settings, keep)

    def stop(self) -> None:
        """Release the lock (another gateway writes at once) and deregister this gateway."""
        if self.lock is not None:
            self.lock.release()
        self._quietly(self.registry.deregister)

    @staticmethod
    def _quietly(action: Callable[[], None]) -> None:
        try:
            action()
        except SidecarError as exc:
            log.warning("gateway registry: %s", exc)


def _lock_settings(settings: Settings) -> tuple[object, ...]:
    cs = settings.dirac_cs
    return (cs.enabled, cs.lock_key, cs.lock_ttl, cs.lock_delay, cs.lock_check_ttl)
