"""The daemon loop's timers as named deadlines, and the policy that sets them (pure).

One retry time written from many places for many reasons hid why the loop woke up. Here each
reason has its name (``Why``) and its own deadline; the loop asks which are due and the next
one to sleep until. The policy that computes the deadlines is here too, as plain functions of
their inputs (clock values passed in): reload pacing, the distrust window after the catalog's
index went backwards, the earliest retry of the ports left out, when the config file of
runtime changes is written, and how soon a status round may follow the last one.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from enum import StrEnum

OLD_WORKERS_RETRY = 1.0  # seconds between looks at the old workers while a reload waits
FLUSH_DELAY = 0.2  # seconds after a runtime change before its file is written (one per batch)
FLUSH_SHARE = 0.1  # at most this share of a core spent writing that file during a stream
BEAT_GAP = 0.2  # seconds at least between two status rounds (a stream of applies)
ROUND_SHARE = 0.03  # at most this share of a core in status rounds during a stream
ROUND_GAP_MAX = 1.0  # seconds: the status (and systemd's watchdog ping) never waits longer


class Why(StrEnum):
    """Why the loop wakes up. The first five run a cycle; the last three are chores."""

    RELOAD_PACED = "a deferred reload may go"  # min_reload_interval, old workers draining
    REMOVAL_DUE = "a held-back removal is due for its second read"  # apply.confirm_delay
    TRUST_BACK = "the distrust window ends"  # consul.reset_grace after an index reset
    BIND_RETRY = "a port left out may be tried again"  # BindMemo retry times
    REPLAN = "plan again now"  # bind failures learnt, drift repaired, HAProxy gone
    FLUSH = "write the config of the last runtime changes"  # flush_at after a change
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


def flush_at(now: float, last_cost: float) -> float:
    """When to write the config file of a runtime change applied at ``now``: ``FLUSH_DELAY``
    later (the changes of a burst go into one file), or later still when the last write
    cost more than ``FLUSH_SHARE`` of the time in between. The whole config is rendered for
    each write (~4 ms at 20 services, ~22 ms at 138 x 10, ~100 ms at 1,000 x 5 on an idle
    machine); under a change stream at 1,000 services a write every 200 ms would keep half
    a core busy, and holds the GIL the main loop needs. HAProxy already runs the change: the
    file only matters to a restart, and the applied state is kept to repair a stale one."""
    wait = last_cost * (1.0 - FLUSH_SHARE) / FLUSH_SHARE
    return now + max(FLUSH_DELAY, wait)


def round_gap(last_cost: float) -> float:
    """Seconds before the next status round may run after one that took ``last_cost`` of
    CPU time: ``BEAT_GAP``, or longer when the rounds would otherwise take more than
    ``ROUND_SHARE`` of a core, never more than ``ROUND_GAP_MAX``. CPU, not wall time: a round
    waiting on a slow Consul holds no GIL and must not push the next one (and the watchdog
    ping it sends) further out. A round after a change tracks every backend, encodes the
    status record and writes it when anything but the clocks changed: ~1 ms at 20 services,
    ~14 ms at 1,000 x 5, where one every 0.2 s under a change stream was an eighth of the
    daemon's CPU, with the GIL the main loop needs for the next change. The status is for
    people and probes; a second's delay at that size tells them nothing less."""
    return min(ROUND_GAP_MAX, max(BEAT_GAP, last_cost * (1.0 - ROUND_SHARE) / ROUND_SHARE))
