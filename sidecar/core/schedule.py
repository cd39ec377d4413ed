"""The daemon loop's timers as named deadlines, and the policy that sets them (pure).

One retry time written from many places for many reasons hid why the loop woke up. Here each
reason has its name (``Why``) and its own deadline; the loop asks which are due and the next
one to sleep until. The policy that computes the deadlines is here too, as plain functions of
their inputs (clock values passed in): reload pacing, the distrust window after the catalog's
index went backwards, and the earliest retry of the ports left out.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from enum import StrEnum

OLD_WORKERS_RETRY = 1.0  # seconds between looks at the old workers while a reload waits


class Why(StrEnum):
    """Why the loop wakes up. The first five run a cycle; the last three are chores."""

    RELOAD_PACED = "a deferred reload may go"  # min_reload_interval, old workers draining
    REMOVAL_DUE = "a held-back removal is due for its second read"  # apply.confirm_delay
    TRUST_BACK = "the distrust window ends"  # consul.reset_grace after an index reset
    BIND_RETRY = "a port left out may be tried again"  # BindMemo retry times
    REPLAN = "plan again now"  # bind failures learnt, drift repaired, HAProxy gone
    FLUSH = "write the config of the last runtime changes"  # FLUSH_DELAY after a change
    DRIFT = "compare HAProxy with the applied state"  # apply.drift_interval
    COLLECT = "delete retired servers whose connections ended"  # COLLECT_EVERY


CYCLE = frozenset({Why.RELOAD_PACED, Why.REMOVAL_DUE, Why.TRUST_BACK, Why.BIND_RETRY, Why.REPLAN})


@dataclass(slots=True)
class Deadlines:
    """Monotonic deadlines by reason; ``at`` keeps the earliest one asked for each."""

    at: dict[Why, float] = field(default_factory=dict)

    def ask(self, why: Why, when: float | None) -> None:
        """Wake for ``why`` at ``when`` at the latest (None: no change)."""
        if when is not None:
            self.at[why] = min(self.at.get(why, math.inf), when)

    def every(self, why: Why, when: float) -> None:
        """Set a periodic deadline (replaces the earlier one)."""
        self.at[why] = when

    def next(self) -> float:
        return min(self.at.values(), default=math.inf)

    def take_due(self, now: float) -> frozenset[Why]:
        """The reasons whose time has come, forgotten here (periodic ones are set again by
        the caller)."""
        due = frozenset(why for why, when in self.at.items() if when <= now)
        for why in due:
            del self.at[why]
        return due


def reload_wait(
    now: float, last_reload: float, min_interval: float, old_workers: int, max_old_workers: int
) -> float | None:
    """When a reload may go, if not now: after ``min_interval`` since the last one, and not
    while more than ``max_old_workers`` old workers still drain their connections."""
    if now - last_reload < min_interval:
        return last_reload + min_interval
    if old_workers > max_old_workers:
        return now + OLD_WORKERS_RETRY
    return None


def distrust_until(reset_at: float | None, now: float, grace: float) -> float | None:
    """The end of the window in which absent instances prove nothing (None: trusted).

    After Consul's index went backwards (data wiped, a restored snapshot, a new leader with an
    older state), instances that merely vanished may come back: for ``grace`` seconds the
    guard keeps them."""
    if reset_at is None or now - reset_at >= grace:
        return None
    return reset_at + grace
