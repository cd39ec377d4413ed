"""The loop's named deadlines and the policy that sets them (``core.schedule``), plain data."""

import math

import pytest

from sidecar.core.schedule import (
    BEAT_GAP,
    CYCLE,
    FLUSH_DELAY,
    FLUSH_SHARE,
    OLD_WORKERS_RETRY,
    ROUND_GAP_MAX,
    ROUND_SHARE,
    Deadlines,
    Why,
    distrust_until,
    flush_at,
    reload_wait,
    round_gap,
)


def test_deadlines_keep_the_earliest_and_hand_out_the_due_ones() -> None:
    d = Deadlines()
    assert d.next() == math.inf and d.take_due(1e9) == frozenset()
    d.ask(Why.RELOAD_PACED, 10.0)
    d.ask(Why.RELOAD_PACED, 12.0)  # later: the earlier one stays
    d.ask(Why.REMOVAL_DUE, 11.0)
    d.ask(Why.BIND_RETRY, None)  # nothing asked
    d.every(Why.DRIFT, 30.0)
    assert d.next() == 10.0
    assert d.take_due(10.5) == {Why.RELOAD_PACED}
    assert d.take_due(10.5) == frozenset()  # handed out once
    assert d.take_due(40.0) == {Why.REMOVAL_DUE, Why.DRIFT}
    assert d.next() == math.inf


def test_periodic_deadlines_are_replaced_not_kept_early() -> None:
    d = Deadlines()
    d.every(Why.FLUSH, 5.0)
    d.every(Why.FLUSH, 8.0)
    assert d.at[Why.FLUSH] == 8.0


def test_only_cycle_reasons_run_a_cycle() -> None:
    assert Why.REPLAN in CYCLE and Why.TRUST_BACK in CYCLE
    assert not CYCLE & {Why.FLUSH, Why.DRIFT, Why.COLLECT}


def test_reload_pacing() -> None:
    # too soon after the last one: wait for the interval
    assert reload_wait(100.0, 99.5, 1.0, 0, 3) == 100.5
    # old workers piling up: look again shortly
    assert reload_wait(100.0, 50.0, 1.0, 4, 3) == 100.0 + OLD_WORKERS_RETRY
    # neither: now
    assert reload_wait(100.0, 50.0, 1.0, 3, 3) is None
    assert reload_wait(0.0, -math.inf, 0.0, 0, 0) is None  # never reloaded


def test_distrust_window() -> None:
    assert distrust_until(None, 100.0, 30.0) is None
    assert distrust_until(90.0, 100.0, 30.0) == 120.0
    assert distrust_until(60.0, 100.0, 30.0) is None  # over


def test_the_config_file_of_runtime_changes_is_paced_by_its_cost() -> None:
    # a cheap write: FLUSH_DELAY after the change (a burst goes into one file)
    assert flush_at(100.0, 0.0) == 100.0 + FLUSH_DELAY
    assert flush_at(100.0, 0.004) == 100.0 + FLUSH_DELAY  # 20 services: ~4 ms
    # a write of 100 ms (1,000 x 5) waits 0.9 s: at most FLUSH_SHARE of the time writing
    wait = flush_at(100.0, 0.1) - 100.0
    assert wait == pytest.approx(0.9)
    assert 0.1 / (0.1 + wait) == pytest.approx(FLUSH_SHARE)


def test_status_rounds_are_paced_by_their_cost() -> None:
    assert round_gap(0.0) == BEAT_GAP  # the first round after a change: soon
    assert round_gap(0.003) == BEAT_GAP  # 138 x 10: a few ms, every BEAT_GAP
    gap = round_gap(0.014)  # 1,000 x 5: ~14 ms, no more than ROUND_SHARE of the time
    assert gap > BEAT_GAP
    assert 0.014 / (0.014 + gap) == pytest.approx(ROUND_SHARE)
    assert round_gap(0.5) == ROUND_GAP_MAX  # never so far apart that the status goes stale
