"""daemon.flusher and haproxy.configfiles: the file of runtime changes is written off the main
loop, never over a newer write, and a stop waits for the write in hand."""

from __future__ import annotations

import queue
import threading
import time
from pathlib import Path
from typing import Any, cast

from helpers import wait_until

from sidecar.core.model import DesiredState
from sidecar.core.plan import Rendered
from sidecar.daemon.flusher import FLUSHED, Flusher
from sidecar.haproxy.configfiles import ConfigFiles

EMPTY = DesiredState(())


def files(tmp_path: Path) -> ConfigFiles:
    return ConfigFiles(tmp_path / "haproxy.cfg", tmp_path / "applied.json")


def test_a_flush_that_lost_the_race_to_a_reload_does_not_overwrite_it(tmp_path: Path) -> None:
    f = files(tmp_path)
    ticket = f.ticket()  # a flush taken by the loop...
    assert f.write("# reload\n", EMPTY, durable=True)  # ...then a reload wrote first
    assert not f.write("# older runtime\n", EMPTY, durable=False, ticket=ticket)
    assert f.config.read_text() == "# reload\n"
    assert f.read() == ("# reload\n", EMPTY)


def test_only_the_newest_ticket_writes(tmp_path: Path) -> None:
    f = files(tmp_path)
    first, second = f.ticket(), f.ticket()
    assert not f.write("# first\n", None, durable=False, ticket=first)
    assert f.write("# second\n", None, durable=False, ticket=second)
    assert f.config.read_text() == "# second\n" and not f.applied.exists()
    with f.exclusive():  # a rollback in between moves the generation too
        pass
    assert not f.write("# late\n", None, durable=False, ticket=second)


class SlowApplier:
    """take_pending/write_pending of haproxy.applier; write_pending waits for ``go``."""

    def __init__(self) -> None:
        self.pending: Rendered | None = Rendered(EMPTY, None, None)
        self.go = threading.Event()
        self.order: list[str] = []
        self.fail = False
        self.haproxy = cast(Any, type("HP", (), {"config": Path("/x/haproxy.cfg")})())

    def take_pending(self) -> tuple[Rendered, int] | None:
        target, self.pending = self.pending, None
        return (target, 1) if target is not None else None

    def write_pending(self, target: Rendered, ticket: int, inputs: object) -> str | None:
        self.go.wait(10)
        if self.fail:
            raise RuntimeError("a bug")
        self.order.append("written")
        return "# flushed\n"


def test_the_thread_writes_posts_and_hands_the_text_over_once() -> None:
    events: queue.Queue[str] = queue.Queue()
    applier, flusher = SlowApplier(), Flusher(events.put)
    applier.go.set()
    flusher.submit(cast(Any, applier), cast(Any, None))
    assert events.get(timeout=10) == FLUSHED
    assert flusher.done() == "# flushed\n"
    assert flusher.done() is None
    flusher.submit(cast(Any, applier), cast(Any, None))  # nothing pending: no job
    flusher.stop()
    assert applier.order == ["written"]


def test_stop_waits_for_the_write_in_hand() -> None:
    applier, flusher = SlowApplier(), Flusher(lambda _: None)
    flusher.submit(cast(Any, applier), cast(Any, None))
    wait_until(lambda: flusher._busy, 10, what="the write to start")
    stopper = threading.Thread(target=lambda: (flusher.stop(), applier.order.append("stopped")))
    stopper.start()
    applier.go.set()
    stopper.join(10)
    assert applier.order == ["written", "stopped"]


def test_a_failing_write_leaves_the_thread_running() -> None:
    events: queue.Queue[str] = queue.Queue()
    applier, flusher = SlowApplier(), Flusher(events.put)
    applier.go.set()
    applier.fail = True
    flusher.submit(cast(Any, applier), cast(Any, None))
    wait_until(lambda: not flusher._busy and flusher._job is None, 10, what="the failed write")
    applier.fail, applier.pending = False, Rendered(EMPTY, None, None)
    flusher.submit(cast(Any, applier), cast(Any, None))
    assert events.get(timeout=10) == FLUSHED
    flusher.stop()


class BusyApplier(SlowApplier):
    """A write that takes ~30 ms of the thread's CPU (a big config rendered)."""

    def write_pending(self, target: Rendered, ticket: int, inputs: object) -> str | None:
        start = time.thread_time()
        while time.thread_time() - start < 0.03:
            pass
        return "# written\n"


def test_the_cost_of_the_last_write_is_known_to_the_loop() -> None:
    events: queue.Queue[str] = queue.Queue()
    applier, flusher = BusyApplier(), Flusher(events.put)
    assert flusher.cost == 0.0
    flusher.submit(cast(Any, applier), cast(Any, None))
    assert events.get(timeout=10) == FLUSHED
    assert flusher.cost >= 0.03  # the write's duration, for core.schedule.flush_at
    flusher.stop()
