"""The one-writer lock for the DIRAC CS across all gateways: a Consul session + KV acquire.

Sits in the apply stage (adapter, does I/O): the daemon ticks it, and the CS writer asks it
whether this sidecar may write (``held``) and confirms with Consul right before each write
(``confirm``). Policy-free: it only knows the key, the TTL and the lock-delay.

How it works: a session (``TTL``, ``LockDelay``, ``Behavior = release``, default
``serfHealth`` node check) is created on the local agent, and ``PUT /v1/kv/<key>?acquire=<id>``
stores this gateway's holder name (``<node>/<gateway name>``) in the key. ``tick()``, called by
the daemon about once a second, renews the session every TTL/2 and tries to acquire while not
holding; no background thread is needed.

Losing the lock stops writing at once: ``held`` turns False as soon as a renew fails (Consul
unreachable, or HTTP 404: the session was invalidated or destroyed), when ``confirm`` sees
another session (or none) in the key, and in any case once TTL has passed since the last
successful renew (a stalled daemon cannot believe it still holds the lock).

Takeover after the holder dies (SIGKILL, host lost): Consul invalidates a session whose TTL
is not renewed after at most 2*TTL (it applies a x2 multiplier to TTL timers), releases the
key, and refuses new acquires of it for ``lock_delay``. Another gateway ticking every second
takes over within ``2*TTL + lock_delay + 1 s`` (the defaults: 15 s, 5 s -> at most ~36 s;
typically TTL..2*TTL + lock_delay). A clean ``release()`` (SIGTERM) frees it at once: no
lock-delay applies to an explicit release.
"""

from __future__ import annotations

import base64
import logging
import time
from collections.abc import Callable
from typing import Any

from sidecar.base.errors import CatalogError, CSError
from sidecar.config.cs import CSSettings
from sidecar.config.durations import consul_duration
from sidecar.consul.client import ConsulClient
from sidecar.consul.http import ConsulHTTP, expect_ok

log = logging.getLogger(__name__)


def takeover_bound(ttl: float, lock_delay: float, tick: float = 1.0) -> float:
    """Worst-case seconds from the holder's death to another gateway holding the lock."""
    return 2 * ttl + lock_delay + tick


class CSLock:
    """A Consul lock on one KV key, held by at most one sidecar of the fleet."""

    def __init__(
        self,
        client: ConsulClient,
        key: str,
        holder: str,
        ttl: float = 15.0,
        lock_delay: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._http = ConsulHTTP(client)
        self.key = key
        self.holder_name = holder
        self.ttl = ttl
        self.lock_delay = lock_delay
        self._clock = clock
        self._session: str | None = None
        self._renewed_at = 0.0
        self._held = False
        self.last_error = ""

    @classmethod
    def from_settings(cls, client: ConsulClient, cs: CSSettings, holder: str) -> CSLock:
        return cls(client, cs.lock_key, holder, cs.lock_ttl, cs.lock_delay)

    @property
    def session(self) -> str | None:
        return self._session

    @property
    def held(self) -> bool:
        """Whether this sidecar holds the lock, as far as it knows without asking Consul."""
        fresh = self._clock() - self._renewed_at < self.ttl
        return self._held and self._session is not None and fresh

    @property
    def takeover_bound(self) -> float:
        return takeover_bound(self.ttl, self.lock_delay)

    # -- the daemon's side -------------------------------------------------------------------

    def tick(self) -> bool:
        """Renew (every TTL/2) and try to acquire while not holding; never raises."""
        was = self.held
        try:
            now = self.try_acquire()
        except CSError as exc:
            now = False
            if str(exc) != self.last_error:
                log.warning("CS writer lock: %s", exc)
            self.last_error = str(exc)
        else:
            self.last_error = ""
        if now != was:
            state = "acquired" if now else "lost"
            log.info("CS writer lock %s %s (%s)", self.key, state, self.holder_name)
        return now

    def try_acquire(self) -> bool:
        """Create the session if needed, renew it when due, acquire the key; ``CSError``."""
        try:
            self._keep_session()
            if self._held and self._held_fresh():
                return True
            assert self._session is not None
            reply = self._http.put_raw(
                f"/v1/kv/{self.key}", self.holder_name, params=[("acquire", self._session)]
            )
            expect_ok(reply, f"acquire {self.key}")
        except CatalogError as exc:
            self._held = False
            raise CSError(str(exc)) from None
        self._held = reply.body is True
        return self.held

    def _held_fresh(self) -> bool:
        return self._clock() - self._renewed_at < self.ttl

    def _keep_session(self) -> None:
        """A live session: renewed when TTL/2 has passed, re-created when Consul lost it."""
        if self._session is not None and self._clock() - self._renewed_at >= self.ttl / 2:
            reply = self._http.put(f"/v1/session/renew/{self._session}")
            if reply.code == 404:
                if self._held:
                    log.warning("CS writer lock: session %s is gone", self._session)
                self._session, self._held = None, False
            else:
                expect_ok(reply, "renew session")
                self._renewed_at = self._clock()
        if self._session is None:
            self._create_session()

    def _create_session(self) -> None:
        body = {
            "Name": f"dirac-sidecar CS writer {self.holder_name}",
            "TTL": consul_duration(self.ttl),
            "LockDelay": consul_duration(self.lock_delay),
            "Behavior": "release",
        }
        reply = expect_ok(self._http.put("/v1/session/create", body), "create session")
        session = reply.body.get("ID") if isinstance(reply.body, dict) else None
        if not isinstance(session, str) or not session:
            raise CatalogError(f"create session: no ID in {reply.text[:200]!r}")
        self._session, self._renewed_at, self._held = session, self._clock(), False

    # -- the writer's side -------------------------------------------------------------------

    def _entry(self) -> dict[str, Any] | None:
        reply = self._http.get(f"/v1/kv/{self.key}")
        if reply.code == 404:
            return None
        expect_ok(reply, f"read {self.key}")
        entries = reply.body if isinstance(reply.body, list) else []
        return entries[0] if entries and isinstance(entries[0], dict) else None

    def confirm(self) -> bool:
        """Ask Consul (one read) whether the key is still held by this session; never raises.

        Call it right before each write: False also clears ``held`` at once.
        """
        if not self.held:
            return False
        try:
            entry = self._entry()
        except CatalogError as exc:
            log.warning("CS writer lock: cannot confirm: %s", exc)
            self._held = False
            return False
        if entry is None or entry.get("Session") != self._session:
            log.warning("CS writer lock %s: held by someone else now", self.key)
            self._held = False
        return self.held

    def holder(self) -> str:
        """Who holds the lock: the value in the key (``<node>/<gateway>``), "" when free."""
        try:
            entry = self._entry()
        except CatalogError as exc:
            raise CSError(str(exc)) from None
        if entry is None or not entry.get("Session"):
            return ""
        raw = entry.get("Value") or ""
        return base64.b64decode(raw).decode("utf-8", "replace") if raw else ""

    def release(self) -> None:
        """Release the key and destroy the session (no lock-delay for others); never raises."""
        session, self._session, self._held = self._session, None, False
        if session is None:
            return
        try:
            self._http.put_raw(f"/v1/kv/{self.key}", self.holder_name, [("release", session)])
            self._http.put(f"/v1/session/destroy/{session}")
        except CatalogError as exc:
            log.warning("CS writer lock: release failed (expires after the TTL): %s", exc)
