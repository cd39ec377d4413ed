"""The one-writer lock for the DIRAC CS across all gateways: a Consul session + KV acquire.

Sits in the apply stage (adapter, does I/O): the daemon ticks it; the CS writer asks whether
it may write (``held``) and confirms with Consul (``confirm``) before planning a write and, as
the fence, right before the file is renamed into place. Policy-free: a key and timings.

A session (``TTL``, ``LockDelay``, ``Behavior = release``) is created on the local agent and
``PUT /v1/kv/<key>?acquire=<id>`` stores the holder's name (``<node>/<gateway name>``).
Fast failover (``check_ttl`` > 0, the daemon): the session is also bound to a TTL check of
this writer on the local agent (``fleet.writer_check``) and to ``serfHealth``. A keeper thread
passes the check every ``check_ttl / 4``, renews every TTL/2 and, while not holding, reads the
key as often and acquires it when free. A killed or frozen holder stops passing; ``check_ttl``
later the agent marks the check critical, Consul drops the session and frees the key, and
``lock_delay`` later another keeper acquires it (:func:`takeover_bound`: 3.6 s with the
defaults) and writes at once (``on_acquired``). ``tick()`` tells the keeper the daemon still
wants the lock: a status round silent for ``WANTED_FOR`` seconds loses it.

Never two writers: ``held`` is a lease ending ``check_ttl`` after the *sending* of the last
successful pass (the agent cannot have marked the check critical earlier) and TTL after the
last renew, so a writer resumed after a SIGSTOP knows it lost the lock before any network
call. Left open: a process frozen between the fence's check and the rename for longer than
``lock_delay`` could land that one write; only the storage could fence it (docs/reliability.md).

Without ``check_ttl`` (``sidecar cs sync``, ``once``: short-lived) ``tick()`` renews and
acquires synchronously; a dead holder's session expires after up to 2*TTL (Consul's x2 on
session TTLs). ``release()`` (SIGTERM) frees the key at once: no lock-delay after a release.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable

from sidecar.base.errors import CatalogError, CSError
from sidecar.config.cs import CSSettings
from sidecar.consul.client import ConsulClient
from sidecar.consul.http import ConsulHTTP, expect_ok
from sidecar.fleet.session import create_session, entry_holder, read_entry
from sidecar.fleet.writer_check import WriterCheck

log = logging.getLogger(__name__)
WANTED_FOR = 20.0  # seconds without a tick() before the keeper lets the lock go (stuck daemon)
RETRY_DELAY = 0.1  # seconds between acquires while the key is free but in its lock-delay
JOIN_TIMEOUT = 10.0  # seconds release() waits for the keeper's request in flight


def takeover_bound(
    ttl: float, lock_delay: float, tick: float = 1.0, check_ttl: float = 0.0
) -> float:
    """Worst-case seconds from the holder's death to another gateway holding the lock."""
    if check_ttl > 0:  # check critical, key seen free (poll), lock-delay, a retry, round trips
        return check_ttl + max(lock_delay, check_ttl / 4) + RETRY_DELAY + 0.5
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
        check_ttl: float = 0.0,
        on_acquired: Callable[[], None] | None = None,
    ) -> None:
        self._http = ConsulHTTP(client)
        self.key = key
        self.holder_name = holder
        self.ttl = ttl
        self.lock_delay = lock_delay
        self.check_ttl = check_ttl
        self._clock = clock
        self._session: str | None = None
        self._renewed_at = 0.0
        self._held = False
        self._reported = False  # the state last logged (acquired / lost)
        self.last_error = ""
        # fast failover: the writer check, the keeper thread and what it needs
        self._check = WriterCheck(client, holder, check_ttl) if check_ttl > 0 else None
        self._passed_at = -math.inf  # monotonic time the last successful pass was SENT
        self._wanted_at = -math.inf  # the daemon's last tick()
        self._in_lock_delay = False  # the key was free but the acquire was refused
        self._on_acquired = on_acquired
        self._keeper: threading.Thread | None = None
        self._stop = threading.Event()

    @classmethod
    def from_settings(
        cls,
        client: ConsulClient,
        cs: CSSettings,
        holder: str,
        *,
        keeper: bool = False,
        on_acquired: Callable[[], None] | None = None,
    ) -> CSLock:
        """``keeper``: bind the session to the writer check (the daemon; not the CLI)."""
        check_ttl = cs.lock_check_ttl if keeper else 0.0
        return cls(
            client, cs.lock_key, holder, cs.lock_ttl, cs.lock_delay,
            check_ttl=check_ttl, on_acquired=on_acquired,
        )  # fmt: skip

    @property
    def session(self) -> str | None:
        return self._session

    @property
    def held(self) -> bool:
        """Whether this sidecar holds the lock, as far as it knows without asking Consul: the
        key acquired, renewed within TTL and (fast failover) the check passed within its TTL."""
        now = self._clock()
        fresh = now - self._renewed_at < self.ttl
        if self._check is not None:
            fresh = fresh and now - self._passed_at < self.check_ttl
        return self._held and self._session is not None and fresh

    @property
    def active(self) -> bool:
        """Whether there is something to release: a session or a running keeper."""
        return self._session is not None or self._keeper is not None

    @property
    def takeover_bound(self) -> float:
        return takeover_bound(self.ttl, self.lock_delay, check_ttl=self.check_ttl)

    # -- the daemon's side -------------------------------------------------------------------

    def tick(self) -> bool:
        """The daemon wants the lock; returns ``held``; never raises.

        With the writer check the keeper thread does the work (started here); without it,
        renew (every TTL/2) and try to acquire, synchronously.
        """
        if self._check is not None:
            self._wanted_at = self._clock()
            if self._keeper is None or not self._keeper.is_alive():
                self._attempt()  # the first one at once: a lone gateway writes on its first beat
                self._stop = threading.Event()
                self._keeper = threading.Thread(
                    target=self._keep, args=(self._stop,), name="cs-lock-keeper", daemon=True
                )
                self._keeper.start()
            return self.held
        return self._attempt()

    def _attempt(self) -> bool:
        try:
            now = self.try_acquire()
        except CSError as exc:
            now = False
            if str(exc) != self.last_error:
                log.warning("CS writer lock: %s", exc)
            self.last_error = str(exc)
        else:
            self.last_error = ""
        if now != self._reported:
            self._reported = now
            state = "acquired" if now else "lost"
            log.info("CS writer lock %s %s (%s)", self.key, state, self.holder_name)
        return now

    def _keep(self, stop: threading.Event) -> None:
        """The keeper thread: pass the check, renew, acquire when free; until ``stop``."""
        assert self._check is not None
        while not stop.is_set():
            wait = self.check_ttl / 4
            if self._clock() - self._wanted_at > WANTED_FOR:
                self._held = False  # nobody ticks: stop passing, the check and session lapse
            else:
                was = self.held
                if self._attempt() and not was and not stop.is_set():
                    self._acquired()
                if self._in_lock_delay:
                    wait = RETRY_DELAY
            stop.wait(wait)

    def _acquired(self) -> None:
        if self._on_acquired is None:
            return
        try:
            self._on_acquired()
        except Exception:  # the keeper must survive a failing callback
            log.exception("CS writer lock: the on-acquired action failed")

    def try_acquire(self) -> bool:
        """Create the session if needed, renew it when due, acquire the key; ``CSError``."""
        try:
            if self._check is not None:
                sent = self._clock()
                lapsed = sent - self._passed_at >= self.check_ttl
                self._check.pass_ttl()
                self._passed_at = sent
                if lapsed and self._held:  # frozen past the check's TTL: Consul may have
                    self._held = False  # dropped the session; renew now and acquire anew
                    self._renewed_at = -math.inf
            self._keep_session()
            if self.held:
                return True
            assert self._session is not None
            if self._check is not None and self._taken():  # an acquire is a Raft write
                self._held = self._in_lock_delay = False
                return False
            reply = self._http.put_raw(
                f"/v1/kv/{self.key}", self.holder_name, params=[("acquire", self._session)]
            )
            expect_ok(reply, f"acquire {self.key}")
        except CatalogError as exc:
            self._held = False
            raise CSError(str(exc)) from None
        self._held = reply.body is True
        self._in_lock_delay = not self._held and self._check is not None
        return self.held

    def _taken(self) -> bool:
        """Another session holds the key (one read; our own session does not count)."""
        entry = read_entry(self._http, self.key)
        owner = entry.get("Session") if entry is not None else None
        return bool(owner) and owner != self._session

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
        checks = ("serfHealth", self._check.check_id) if self._check is not None else ()
        name = f"dirac-sidecar CS writer {self.holder_name}"
        try:
            session = create_session(self._http, name, self.ttl, self.lock_delay, checks)
        except CatalogError as exc:
            if self._check is not None and "critical state" in str(exc):
                self._check.forget()  # the servers' copy is stale: register (and sync) anew
            raise
        self._session, self._renewed_at, self._held = session, self._clock(), False

    # -- the writer's side -------------------------------------------------------------------

    def confirm(self) -> bool:
        """Ask Consul (one read) whether the key is still held by this session; never raises.

        Call it right before each write: False also clears ``held`` at once.
        """
        if not self.held:
            return False
        try:
            entry = read_entry(self._http, self.key, consistent=True)
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
            entry = read_entry(self._http, self.key)
        except CatalogError as exc:
            raise CSError(str(exc)) from None
        return entry_holder(entry)

    def release(self) -> None:
        """Stop the keeper, release the key, destroy the session (no lock-delay for others) and
        remove the writer check; never raises."""
        keeper, self._keeper = self._keeper, None
        self._stop.set()
        if keeper is not None and keeper is not threading.current_thread():
            keeper.join(JOIN_TIMEOUT)
        session, self._session, self._held = self._session, None, False
        self._passed_at, self._reported = -math.inf, False
        try:
            if session is not None:
                self._http.put_raw(f"/v1/kv/{self.key}", self.holder_name, [("release", session)])
                self._http.put(f"/v1/session/destroy/{session}")
            if self._check is not None and keeper is not None:
                self._check.deregister()
        except CatalogError as exc:
            log.warning("CS writer lock: release failed (expires after the TTL): %s", exc)
