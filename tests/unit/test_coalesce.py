import itertools

from sidecar.coalesce import Coalescer


def test_a_lone_change_is_applied_at_once() -> None:
    c = Coalescer(quiet=0.2, max_delay=2.0)
    c.event(100.0)
    assert c.due(100.0) and c.wait(100.0) == 0
    c.fire(100.0)
    assert not c.due(100.0)


def test_a_burst_gives_at_most_one_apply_per_window() -> None:
    c = Coalescer(quiet=0.2, max_delay=2.0)
    fires = []
    now = 10.0
    c.event(now)
    for step in range(1000):  # an event every 10 ms for 10 s
        now = 10.0 + step * 0.01
        c.event(now)
        if c.due(now):
            c.fire(now)
            fires.append(now)
    now += 0.2
    if c.due(now):
        fires.append(now)
    gaps = [b - a for a, b in itertools.pairwise(fires)]
    assert fires[0] == 10.0  # leading edge
    assert all(gap >= 2.0 - 1e-9 for gap in gaps)
    assert len(fires) <= 10 / 2.0 + 2


def test_quiet_period_ends_a_burst() -> None:
    c = Coalescer(quiet=0.2, max_delay=2.0)
    c.event(0.0)
    c.fire(0.0)
    c.event(0.05)  # inside the quiet window after an apply: gathered
    assert not c.due(0.1)
    assert abs(c.wait(0.1) - 0.15) < 1e-9
    assert c.due(0.25)
