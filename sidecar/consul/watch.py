"""Blocking-query watches on the Consul catalog (adapter: threads and time).

One watch on ``/v1/catalog/services`` sees DIRAC services appear and go; one watch per service
on ``/v1/health/service/<name>`` sees its instances, addresses, ports and checks change (the
``/v1/health/state`` endpoints do not wake on address or port changes). Each watch follows
Consul's blocking-query rules, implemented by the pure helpers at the top of this module:

- an answer whose index equals the cursor changed nothing (a timeout or an idempotent write);
- an index that goes backwards (Consul data wiped, or a new leader) resets the cursor to 0;
- an index below 1 is never used as a cursor (it would busy-loop): it counts as 1;
- errors back off exponentially from ``retry_min`` to ``retry_max`` and reset on success;
- a token bucket (``rate_burst``, one token per ``rate_interval``) limits a churning watch
  without delaying a quiet one;
- each request asks for a slightly different ``wait`` so that watches do not wake together.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable
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


Query = Callable[[int, float], Answer]
Sink = Callable[[str, Answer | None, CatalogError | None], None]


class Watch:
    """One blocking-query loop in its own daemon thread.

    ``sink(key, answer, None)`` is called for the first answer and every answer that may carry
    a change; ``sink(key, None, error)`` for every failed request. The sink must be quick (it
    only records and posts an event).
    """

    def __init__(
        self,
        key: str,
        query: Query,
        sink: Sink,
        timing: WatchTiming,
        rng: random.Random | None = None,
    ) -> None:
        self.key = key
        self._query = query
        self._sink = sink
        self._timing = timing
        self._rng = rng or random.Random()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"watch:{key}", daemon=True)
        self.requests = 0

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        """Ask the loop to end; a request parked in Consul is abandoned, not waited for."""
        self._stop.set()

    @property
    def stopped(self) -> bool:
        return self._stop.is_set()

    def join(self, timeout: float) -> None:
        self._thread.join(timeout)

    def _run(self) -> None:
        t = self._timing
        bucket = TokenBucket.full(t.rate_burst, t.rate_interval, time.monotonic())
        cursor, failures, first = 0, 0, True
        while not self._stop.is_set():
            delay = bucket.take(time.monotonic())
            if delay and self._stop.wait(delay):
                return
            # Spread the waits (85-100 %) so parked queries do not all return together.
            wait = t.wait * (0.85 + 0.15 * self._rng.random())
            try:
                self.requests += 1
                answer = self._query(cursor, wait)
            except CatalogError as exc:
                failures += 1
                if not self._stop.is_set():
                    self._sink(self.key, None, exc)
                pause = backoff_delay(failures, t.retry_min, t.retry_max, self._rng.random())
                if not exc.retryable:
                    pause = t.retry_max
                if self._stop.wait(pause):
                    return
                continue
            except Exception as exc:  # never let a surprise kill the watch
                log.exception("watch %s: unexpected error", self.key)
                failures += 1
                if not self._stop.is_set():
                    self._sink(self.key, None, CatalogError(f"{type(exc).__name__}: {exc}"))
                if self._stop.wait(backoff_delay(failures, t.retry_min, t.retry_max, 0.5)):
                    return
                continue
            recovered, failures = failures > 0, 0
            cursor, changed = next_cursor(cursor, answer.index)
            if (changed or first or recovered) and not self._stop.is_set():
                first = False
                self._sink(self.key, answer, None)
