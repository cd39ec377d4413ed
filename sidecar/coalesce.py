"""When to apply (pure: the clock is passed in).

Leading edge: a change that arrives after a quiet period is applied at once, so a lone
registration never waits for a window. Changes that follow are gathered until the catalog has
been quiet for ``quiet`` seconds, but never longer than ``max_delay`` after the first of them:
a continuous burst gives at most one apply per ``max_delay``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(slots=True)
class Coalescer:
    quiet: float
    max_delay: float
    pending_since: float | None = None
    last_event: float = -math.inf
    last_fire: float = -math.inf

    def event(self, now: float) -> None:
        if self.pending_since is None:
            idle = now - self.last_fire >= self.quiet
            self.pending_since = now - self.max_delay if idle else now
        self.last_event = now

    def due(self, now: float) -> bool:
        if self.pending_since is None:
            return False
        return now - self.last_event >= self.quiet or now - self.pending_since >= self.max_delay

    def fire(self, now: float) -> None:
        self.pending_since = None
        self.last_fire = now

    def forget(self) -> None:
        """The last fire did nothing: the next event is a leading edge again."""
        self.last_fire = -math.inf

    def wait(self, now: float) -> float:
        """Seconds until ``due`` may turn true (inf when nothing is pending)."""
        if self.pending_since is None:
            return math.inf
        due_at = min(self.last_event + self.quiet, self.pending_since + self.max_delay)
        return max(0.0, due_at - now)
