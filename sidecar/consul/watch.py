"""Blocking-query watches on the Consul catalog (adapter: asyncio tasks and time).

One watch on ``/v1/catalog/services`` sees DIRAC services appear and go; one watch per service
on ``/v1/health/service/<name>`` sees its instances, addresses, ports and checks change (the
``/v1/health/state`` endpoints do not wake on address or port changes). Each watch follows
Consul's blocking-query rules, implemented by the pure helpers at the top of this module:

- an answer whose index equals the cursor changed nothing (a timeout or an idempotent write);
- an index that goes backwards (Consul data wiped, or a new leader) resets the cursor to 0;
- an index below 1 is never used as a cursor (it would busy-loop): it counts as 1;
- errors back off exponentially from ``retry_min`` to ``retry_max`` and reset on success;
  the read after an error is a plain one (it returns at once: a recovered Consul is seen
  then, not when a parked query on an unchanged index times out up to ``wait`` later);
- a token bucket (``rate_burst``, one token per ``rate_interval``) limits a churning watch
  without delaying a quiet one;
- each request asks for a slightly different ``wait`` so that watches do not wake together.

Each watch is one asyncio task on the watcher's event loop (``consul.loop``): a thousand parked
queries cost a thousand sockets and coroutines, not a thousand threads, and stopping a watch
cancels its parked request instead of abandoning it.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from sidecar.base.errors import CatalogError
from sidecar.consul.client import Answer

log = logging.getLogger(__name__)


def next_cursor(cursor: int, index: int) -> tuple[int, bool]:
    """(new cursor, whether the answer may carry a change) for an answer with ``index``."""
    if index < cursor:
        return 0, True  # went backwards: start over with a non-blocking read
    new = max(index, 1)
    return new, new != cursor


def backoff_delay(failures: int, low: float, high: float, jitter: float) -> float:
    """Exponential backoff for the ``failures``-th consecutive error; ``jitter`` in [0, 1)."""
    if failures <= 0:
        return 0.0
    delay: float = min(high, low * 2.0 ** (failures - 1))
    return delay * (0.5 + jitter / 2)


@dataclass(slots=True)
class TokenBucket:
    """Burst ``capacity`` requests, then one per ``interval`` seconds (clock passed in)."""

    capacity: int
    interval: float
    tokens: float
    stamp: float

    @classmethod
    def full(cls, capacity: int, interval: float, now: float) -> TokenBucket:
        return cls(capacity, interval, float(capacity), now)

    def take(self, now: float) -> float:
        """Take one token; returns how long to wait before the request may go (0 = now)."""
        self.tokens = min(self.capacity, self.tokens + (now - self.stamp) / self.interval)
        self.stamp = now
        self.tokens -= 1
        if self.tokens >= 0:
            return 0.0
        return -self.tokens * self.interval


@dataclass(frozen=True, slots=True)
class WatchTiming:
    wait: float
    retry_min: float
    retry_max: float
    rate_burst: int
    rate_interval: float


Query = Callable[[int, float], Awaitable[Answer]]
Sink = Callable[[str, Answer | None, CatalogError | None], Awaitable[None]]
Sleep = Callable[[float], Awaitable[None]]


class Watch:
    """One blocking-query loop, run as an asyncio task.

    ``sink(key, answer, None)`` is awaited for the first answer and every answer that may carry
    a change; ``sink(key, None, error)`` for every failed request. ``clock`` and ``sleep`` are
    the loop's own unless a test passes fakes.
    """

    # slots: one of these per service (1,000 instance dicts less at 1,000 services)
    __slots__ = ("_clock", "_parked", "_query", "_renew", "_rng", "_sink", "_sleep", "_task",
                 "_timing", "key", "requests")  # fmt: skip

    def __init__(
        self,
        key: str,
        query: Query,
        sink: Sink,
        timing: WatchTiming,
        rng: random.Random | None = None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Sleep = asyncio.sleep,
    ) -> None:
        self.key = key
        self._query = query
        self._sink = sink
        self._timing = timing
        self._rng = rng or random.Random()
        self._clock, self._sleep = clock, sleep
        self._task: asyncio.Task[None] | None = None
        self._parked = False  # the task is waiting for its query's answer
        self._renew = False  # ``renew`` cancelled that wait: ask again, at the same cursor
        self.requests = 0

    def start(self) -> None:
        """Start the task on the running loop (call from the loop's thread)."""
        self._task = asyncio.get_running_loop().create_task(self.run(), name=f"watch:{self.key}")

    def stop(self) -> None:
        """Cancel the task (call from the loop's thread): a parked request is cancelled too."""
        if self._task is not None:
            self._task.cancel()

    def renew(self) -> None:
        """Drop the parked request and send it again at the same cursor, on a fresh
        connection (call from the loop's thread). For an agent that stopped answering and came
        back: a request parked on a connection that died unseen (a partition, a lost NAT
        entry) would otherwise wait out its whole timeout, up to ``wait`` and more, before
        the watch saw any change. An answer that was arriving is asked for again, not lost."""
        if self._task is not None and self._parked and not self._renew:
            self._renew = True
            self._task.cancel()

    @property
    def stopped(self) -> bool:
        return self._task is not None and self._task.done()

    def _renewed(self) -> bool:
        """Whether the cancellation just caught was ``renew``'s alone (then it is undone)."""
        task, renew, self._renew = self._task, self._renew, False
        return renew and task is not None and task.uncancel() == 0

    async def run(self) -> None:
        t = self._timing
        bucket = TokenBucket.full(t.rate_burst, t.rate_interval, self._clock())
        cursor, failures, first = 0, 0, True
        while True:
            delay = bucket.take(self._clock())
            if delay:
                await self._sleep(delay)
            # Spread the waits (85-100 %) so parked queries do not all return together.
            wait = t.wait * (0.85 + 0.15 * self._rng.random())
            self.requests += 1
            self._parked = True  # only while awaiting the answer: ``renew`` cancels nothing else
            try:
                try:
                    answer = await self._query(0 if failures else cursor, wait)
                finally:
                    self._parked = False  # before the handlers below (they await)
            except asyncio.CancelledError:
                if not self._renewed():
                    raise  # stopped (or renewed and stopped together): the task ends
                continue
            except CatalogError as exc:
                failures += 1
                await self._sink(self.key, None, exc)
                pause = backoff_delay(failures, t.retry_min, t.retry_max, self._rng.random())
                await self._sleep(pause if exc.retryable else t.retry_max)
                continue
            except Exception as exc:  # never let a surprise kill the watch
                log.exception("watch %s: unexpected error", self.key)
                failures += 1
                await self._sink(self.key, None, CatalogError(f"{type(exc).__name__}: {exc}"))
                await self._sleep(backoff_delay(failures, t.retry_min, t.retry_max, 0.5))
                continue
            recovered, failures = failures > 0, 0
            cursor, changed = next_cursor(cursor, answer.index)
            if changed or first or recovered:
                first = False
                await self._sink(self.key, answer, None)
            # The decoded body is parsed by now; do not keep it through the next parked wait
            # (1,000 watches x their last answer: ~18 MB of JSON objects at 1,000 x 5).
            del answer


class Unwatched:
    """In a watch's place for a service that is reported but never queried."""

    def __init__(self, key: str) -> None:
        self.key = key
        self.requests = 0

    def stop(self) -> None:
        return None

    def renew(self) -> None:
        return None
