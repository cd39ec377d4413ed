"""The daemon's loop with fake parts and a fake clock (``daemon.loop``, ``daemon.cycle``).

No Consul, no HAProxy, no thread: the real pipeline plans against fake adapters that record
what they were asked to do, and the test moves the clock. Covered: a change applied at once (and
its config file written ``FLUSH_DELAY`` later), a burst handled as one cycle, a reload paced by
``min_reload_interval`` and by old workers, a watch failing and recovering, SIGHUP (a bad file
kept out, a new ``[consul]`` rebuilds the watches, anything else reconfigures in place).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path
from typing import Any, cast

import factories
import pytest

from sidecar.base.errors import ConfigError
from sidecar.config.schema import ApplySettings, ConsulSettings, Settings
from sidecar.consul.watcher import CatalogView
from sidecar.core.admission import Perimeter
from sidecar.core.answers import ProcInfo
from sidecar.core.model import Snapshot
from sidecar.core.plan import Plan, PlanKind, Rendered
from sidecar.core.schedule import FLUSH_DELAY, Why
from sidecar.daemon import wiring
from sidecar.daemon.drain import DrainView
from sidecar.daemon.flusher import FLUSHED, Flusher
from sidecar.daemon.loop import COLLECT_EVERY, SETTINGS_READ, TRIM_GAP, Daemon
from sidecar.daemon.portguard import PortGuard
from sidecar.haproxy.applier import ApplyResult
from sidecar.host.memory import FULL_EVERY

SYSADMIN = "Framework/SystemAdministrator"  # in the shipped port map: 9162


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class FakeWatcher:
    def __init__(self) -> None:
        self.view_ = CatalogView(Snapshot((), 0), False, None, "", 0)
        self.started = self.stopped = 0

    def view(self) -> CatalogView:
        return self.view_

    def take_answered(self) -> float | None:
        return None

    def show(self, snapshot: Snapshot, failing_since: float | None = None) -> None:
        self.view_ = CatalogView(snapshot, True, failing_since, "down" if failing_since else "", 1)

    def start(self) -> None:
        self.started += 1

    def stop(self) -> None:
        self.stopped += 1


class FakeApplier:
    def __init__(self) -> None:
        self.plans: list[Plan] = []
        self.flushes = 0
        self.pending: Rendered | None = None
        self.up = False
        self.retired: set[object] = set()

    def running(self) -> bool:
        return self.up

    def collect(self) -> None:
        pass

    def apply(self, plan: Plan, target: Rendered, inputs: object = None) -> ApplyResult:
        self.plans.append(plan)
        self.up = True
        if plan.kind is PlanKind.RUNTIME:
            self.pending = target
        reloads = int(plan.kind in (PlanKind.RELOAD, PlanKind.START))
        return ApplyResult(plan.kind, True, "", 0.001, reloads=reloads)

    def take_pending(self) -> tuple[Rendered, int] | None:
        target, self.pending = self.pending, None
        return (target, 1) if target is not None else None

    def write_pending(self, target: Rendered, ticket: int, inputs: object) -> str | None:
        self.flushes += 1
        return "# flushed config\n"

    def flush(self, inputs: object) -> str | None:
        job = self.take_pending()
        return self.write_pending(*job, inputs) if job else None

    def kinds(self) -> list[PlanKind]:
        return [p.kind for p in self.plans]


class FakeHAProxy:
    def __init__(self, directory: Path) -> None:
        self.dir = directory
        self.config = directory / "haproxy.cfg"
        self.old_workers: tuple[int, ...] = ()

    def log_mark(self) -> int:
        return 0

    def bind_failures(self, mark: int) -> dict[int, str]:
        return {}

    def proc(self) -> ProcInfo:
        return ProcInfo(1, 0, 0, 2, self.old_workers)


class FakeHeld:
    confirmed: frozenset[str] = frozenset()

    def confirm(self, snapshot: object, now: float, distrust: bool) -> None: ...

    def track(self, held: tuple[str, ...], now: float) -> float | None:
        return None

    def applied(self) -> None: ...


class FakeNet:
    def perimeter(self, snapshot: object, settings: Settings, port_map: object) -> Perimeter:
        return Perimeter(networks=("10.0.0.0/8",))


class Recorder:
    """Accepts any call (ops, fleet, client): records the names."""

    def __init__(self) -> None:
        self.calls: list[str] = []

    def __getattr__(self, name: str) -> Any:
        def record(*args: object, **kwargs: object) -> object:
            self.calls.append(name)
            return frozenset() if name == "drained" else None

        return record


class FakeFleet(Recorder):
    lock = None

    class registry:  # stands for the registry object (an attribute of the member)
        in_maintenance = False


class FakeDrain:
    def tick(self, haproxy: object, now: float) -> DrainView:
        return DrainView()


def parts(tmp_path: Path) -> wiring.Parts:
    return wiring.Parts(
        haproxy=cast(Any, FakeHAProxy(tmp_path)),
        applier=cast(Any, FakeApplier()),
        client=cast(Any, Recorder()),
        watcher=cast(Any, FakeWatcher()),
        held=cast(Any, FakeHeld()),
        ops=cast(Any, Recorder()),
        files=cast(Any, Recorder()),
        fleet=cast(Any, FakeFleet()),
        net=cast(Any, FakeNet()),
        drain=cast(Any, FakeDrain()),
    )


def make(tmp_path: Path, **apply: object) -> tuple[Daemon, Clock, FakeApplier, FakeWatcher]:
    base = factories.settings()
    settings = dataclasses.replace(base, apply=factories.validated(ApplySettings, apply))
    clock = Clock()
    ports = PortGuard(probe=lambda address, wanted: {})  # every port free
    daemon = Daemon(settings, lambda: settings, parts=parts(tmp_path), clock=clock, ports=ports)
    daemon.flusher = Flusher(daemon.events.put, threaded=False)  # writes inside submit
    daemon.spawn = lambda read: read()  # a SIGHUP's file read inline: applied in its turn
    return daemon, clock, cast(Any, daemon.parts.applier), cast(Any, daemon.parts.watcher)


def one(*sids: str, **meta: str) -> Snapshot:
    return factories.snap(("sysadmin", [factories.inst(s, port=31000 + i, **meta)
                                        for i, s in enumerate(sids)]))  # fmt: skip


def two_services(*sids: str) -> Snapshot:
    new = factories.inst("x1", system="Fresh", service="Undeclared", consul="fresh",
                         dirac_port="40123")  # fmt: skip
    base = one(*sids)
    extra = factories.snap(("fresh", [new])).services
    return dataclasses.replace(base, services=(*base.services, *extra))


def test_a_change_is_applied_at_once_and_its_file_written_after_the_flush_delay(
    tmp_path: Path,
) -> None:
    daemon, clock, applier, watcher = make(tmp_path)
    watcher.show(one("a1"))
    assert daemon.step({"catalog"})
    assert applier.kinds() == [PlanKind.START]
    watcher.show(one("a1", "a2"))
    clock.now += 0.01
    daemon.step({"catalog"})
    assert applier.kinds() == [PlanKind.START, PlanKind.RUNTIME]  # no reload for a member
    assert any("add server" in c for c in applier.plans[-1].commands)
    assert daemon.deadlines.at[Why.FLUSH] == pytest.approx(clock.now + FLUSH_DELAY)
    daemon.step(set())
    assert applier.flushes == 0  # not yet
    clock.now += FLUSH_DELAY
    daemon.step(set())
    assert applier.flushes == 1 and Why.FLUSH not in daemon.deadlines.at
    assert daemon.events.get_nowait() == FLUSHED  # the flush thread's word, taken next turn
    daemon.step({FLUSHED})
    assert daemon.status.generation  # the hash of the config written...
    assert daemon.applied is not None and daemon.applied.config is None  # ...not its text


def test_a_costly_file_write_is_paced_by_its_cost(tmp_path: Path) -> None:
    daemon, clock, applier, watcher = make(tmp_path)
    watcher.show(one("a1"))
    daemon.step({"catalog"})
    daemon.flusher.cost = 0.1  # the last write took 100 ms (a big catalog)
    watcher.show(one("a1", "a2"))
    daemon.step({"catalog"})
    assert applier.kinds()[-1] is PlanKind.RUNTIME  # the change itself is not delayed
    assert daemon.deadlines.at[Why.FLUSH] == pytest.approx(clock.now + 0.9)
    clock.now += FLUSH_DELAY
    daemon.step(set())
    assert applier.flushes == 0  # a cheap write would be due by now
    clock.now += 0.7
    daemon.step(set())
    assert applier.flushes == 1


def test_a_burst_of_events_is_one_cycle(tmp_path: Path) -> None:
    daemon, _, applier, watcher = make(tmp_path)
    watcher.show(one("a1", "a2", "a3"))
    for _ in range(5):
        daemon.events.put("catalog")
    events = daemon._next_events()
    assert events == {"catalog"} and daemon.events.empty()
    daemon.step(events)
    assert applier.kinds() == [PlanKind.START]


def test_nothing_is_applied_before_every_watch_answered(tmp_path: Path) -> None:
    daemon, _, applier, _ = make(tmp_path)
    daemon.step({"catalog"})
    assert applier.plans == [] and daemon.status.catalog_complete is False


def test_a_reload_waits_for_the_minimum_interval(tmp_path: Path) -> None:
    daemon, clock, applier, watcher = make(tmp_path, min_reload_interval=5.0)
    watcher.show(one("a1"))
    daemon.step({"catalog"})  # START at t0 counts as the last reload
    clock.now += 1.0
    watcher.show(two_services("a1"))  # a service on a port nobody declared: a reload
    daemon.step({"catalog"})
    assert applier.kinds() == [PlanKind.START]  # deferred
    assert daemon.deadlines.at[Why.RELOAD_PACED] == pytest.approx(clock.now + 4.0)
    clock.now += 3.9
    daemon.step(set())
    assert applier.kinds() == [PlanKind.START]
    clock.now += 0.1
    daemon.step(set())  # the deadline alone runs the cycle
    assert applier.kinds() == [PlanKind.START, PlanKind.RELOAD]


def test_a_reload_waits_while_old_workers_pile_up(tmp_path: Path) -> None:
    daemon, clock, applier, watcher = make(tmp_path, max_old_workers=2)
    haproxy = cast(FakeHAProxy, daemon.parts.haproxy)
    watcher.show(one("a1"))
    daemon.step({"catalog"})
    haproxy.old_workers = (11, 12, 13)
    watcher.show(two_services("a1"))
    clock.now += 1.0
    daemon.step({"catalog"})
    assert applier.kinds() == [PlanKind.START]
    assert Why.RELOAD_PACED in daemon.deadlines.at
    haproxy.old_workers = (13,)
    clock.now = daemon.deadlines.at[Why.RELOAD_PACED]
    daemon.step(set())
    assert applier.kinds() == [PlanKind.START, PlanKind.RELOAD]


def test_a_failing_watch_keeps_the_state_and_recovery_applies(tmp_path: Path) -> None:
    daemon, clock, applier, watcher = make(tmp_path)
    watcher.show(one("a1"))
    daemon.step({"catalog"})
    watcher.show(one("a1"), failing_since=clock.now)  # Consul down: the last answer stays
    daemon.step({"catalog"})
    assert applier.kinds() == [PlanKind.START]  # nothing to change, nothing emptied
    daemon.status_round()
    assert daemon.status.catalog_error == "down"
    watcher.show(one("a1", "a2"))
    daemon.step({"catalog"})
    assert applier.kinds() == [PlanKind.START, PlanKind.RUNTIME]
    daemon.status_round()
    assert daemon.status.catalog_error == ""


def test_sighup_with_a_bad_file_keeps_the_running_settings(tmp_path: Path) -> None:
    daemon, _, _, _ = make(tmp_path)
    before = daemon.settings

    def bad() -> Settings:
        raise ConfigError("/etc/sidecar.toml", "consul.wait", "must be > 0")

    daemon._reload_settings = bad
    daemon.step({"hup"})
    assert daemon.settings is before


def test_sighup_with_a_new_consul_rebuilds_the_watches(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    daemon, _, _, old = make(tmp_path)
    new_watcher, new_fleet = FakeWatcher(), FakeFleet()
    monkeypatch.setattr(wiring, "consul", lambda s, post: (Recorder(), new_watcher))
    monkeypatch.setattr(wiring, "fleet", lambda s: new_fleet)
    changed = dataclasses.replace(
        daemon.settings, consul=ConsulSettings(address="http://127.0.0.2:8500")
    )
    old_fleet = daemon.parts.fleet
    daemon._reload_settings = lambda: changed
    daemon.step({"hup"})
    assert old.stopped == 1 and new_watcher.started == 1
    assert daemon.parts.watcher is new_watcher and daemon.parts.fleet is new_fleet
    assert "stop" in cast(Recorder, old_fleet).calls
    # another change, [consul] unchanged: reconfigured in place, watches kept
    other = dataclasses.replace(changed, apply=ApplySettings(min_reload_interval=2.0))
    daemon._reload_settings = lambda: other
    daemon.step({"hup"})
    assert daemon.parts.watcher is new_watcher and "reconfigure" in new_fleet.calls


def test_a_sighup_read_in_progress_holds_up_no_catalog_change(tmp_path: Path) -> None:
    """The file is read in a thread (a child process, ~0.2 s): the loop goes on applying
    catalog changes with the running settings, and takes the new ones when they are read; a
    second SIGHUP during the read is read once more after it, not lost nor run twice at once."""
    daemon, _, applier, watcher = make(tmp_path)
    pending: list[Callable[[], None]] = []
    daemon.spawn = pending.append
    new = dataclasses.replace(daemon.settings, apply=ApplySettings(min_reload_interval=2.0))
    reads: list[Settings] = []

    def read() -> Settings:
        reads.append(new)
        return new

    daemon._reload_settings = read
    before = daemon.settings
    watcher.show(one("a1"))
    daemon.step({"hup", "catalog"})
    assert daemon.settings is before and len(pending) == 1  # being read; the change applied
    assert applier.kinds() == [PlanKind.START]
    daemon.step({"hup"})  # a second SIGHUP while the first is read
    assert len(pending) == 1
    watcher.show(one("a1", "a2"))
    daemon.step({"catalog"})
    assert applier.kinds() == [PlanKind.START, PlanKind.RUNTIME] and daemon.settings is before
    pending.pop()()  # the read ends: its result is applied on the next turn
    assert daemon.events.get_nowait() == SETTINGS_READ
    daemon.step({SETTINGS_READ})
    assert daemon.settings is new and len(pending) == 1  # and the second SIGHUP is read now
    pending.pop()()
    daemon.step({SETTINGS_READ})
    assert daemon.settings is new and reads == [new, new] and pending == []


def test_stop_ends_the_loop(tmp_path: Path) -> None:
    daemon, _, _, _ = make(tmp_path)
    assert daemon.step({"stop", "catalog"}) is False


def test_the_heap_is_trimmed_once_quiet_after_cycles_and_not_more_often_than_the_gap(
    tmp_path: Path,
) -> None:
    daemon, clock, _, watcher = make(tmp_path)
    trims: list[float] = []
    settles: list[bool] = []
    daemon.trim_heap = lambda: trims.append(clock.now)
    daemon.settle_heap = settles.append
    daemon.deadlines.every(Why.COLLECT, clock.now)  # as ``run`` does
    watcher.show(one("a1"))
    daemon.step({"catalog"})  # a cycle: the chores of this turn do not trim (not quiet)
    assert trims == []
    clock.now += COLLECT_EVERY
    daemon.step(set())
    assert trims == [clock.now]  # quiet for TRIM_QUIET, a collect was due
    clock.now += COLLECT_EVERY
    daemon.step(set())
    assert len(trims) == 1  # nothing asked for a cycle since
    watcher.show(one("a1", "a2"))
    daemon.step({"catalog"})
    for _ in range(int(TRIM_GAP // COLLECT_EVERY) - 2):
        clock.now += COLLECT_EVERY
        daemon.step(set())
    assert len(trims) == 1  # within TRIM_GAP of the last one
    clock.now += 2 * COLLECT_EVERY
    daemon.step(set())
    assert len(trims) == 2
    assert settles == [False, False]  # each trim settles first; start-up's was the full one
    clock.now += FULL_EVERY
    watcher.show(one("a1"))
    daemon.step({"catalog"})
    clock.now += COLLECT_EVERY
    daemon.step(set())
    assert settles == [False, False, True]  # an hour on: the frozen objects collected too
