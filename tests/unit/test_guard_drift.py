from sidecar.core.answers import ActualServer
from sidecar.core.desired import desired_state
from sidecar.core.drift import find_drift
from sidecar.core.guard import blast_guard
from sidecar.core.model import DesiredState, Health, Server, ServerState, Snapshot
from sidecar.core.render import server_options
from tests.unit.factories import inst, port_map, settings, snap

S = settings()


def desired(snapshot: Snapshot, previous: DesiredState | None = None) -> DesiredState:
    return desired_state(snapshot, S, port_map(), previous)


FOUR = snap(("x", [inst(k) for k in "abcd"]))


def ready(d: DesiredState) -> set[str]:
    backend = d.backend("Framework_SystemAdministrator")
    assert backend is not None
    return {s.instance for s in backend.servers if s.state is ServerState.READY}


def test_mass_failure_is_held_back_to_the_allowed_share() -> None:
    before = desired(FOUR)
    failing = snap(("x", [inst(k, health=Health.CRITICAL) for k in "abcd"]))
    after = desired(failing, before)
    guarded = blast_guard(before, after, failing, max_share=0.5)
    assert guarded.held == ("node1/a", "node1/b")  # deterministic: the first in sorted order
    assert ready(guarded.desired) == {"node1/a", "node1/b"}
    assert sum("blast-radius" in p.reason for p in guarded.desired.problems) == 2


def test_confirmed_removals_go() -> None:
    before = desired(FOUR)
    failing = snap(("x", [inst(k, health=Health.CRITICAL) for k in "abcd"]))
    first = blast_guard(before, desired(failing, before), failing, 0.5)  # applied: a, b held
    again = desired(failing, first.desired)
    held = frozenset(first.held)
    # held once, held until confirmed: a later read does not spend the share again
    assert blast_guard(first.desired, again, failing, 0.5, frozenset(), held).held == (
        "node1/a",
        "node1/b",
    )
    guarded = blast_guard(first.desired, again, failing, 0.5, held, held)  # second read agreed
    assert guarded.held == () and ready(guarded.desired) == set()


def test_deregistration_is_explicit_and_never_held() -> None:
    before = desired(FOUR)
    empty = snap(("x", []))
    after = desired(empty, before)
    assert blast_guard(before, after, empty, 0.5).held == ()


def test_after_an_index_reset_absent_instances_all_stay() -> None:
    before = desired(FOUR)
    wiped = snap(("x", []))
    after = desired(wiped, before)
    guarded = blast_guard(before, after, wiped, 0.5, distrust_absent=True)
    assert set(guarded.held) == {f"node1/{k}" for k in "abcd"}
    assert ready(guarded.desired) == set(guarded.held)
    # the whole service vanished too (kept as a rejecting backend): still held
    gone = desired(Snapshot((), 1), before)
    assert len(blast_guard(before, gone, Snapshot((), 1), 0.5, distrust_absent=True).held) == 4


def test_small_removals_pass() -> None:
    before = desired(FOUR)
    one = snap(("x", [inst("a", health=Health.CRITICAL), *[inst(k) for k in "bcd"]]))
    assert blast_guard(before, desired(one, before), one, 0.5).held == ()


def test_single_instance_needs_confirmation_and_guard_can_be_disabled() -> None:
    before = desired(snap(("x", [inst("a")])))
    down = snap(("x", [inst("a", health=Health.CRITICAL)]))
    after = desired(down, before)
    assert blast_guard(before, after, down, 0.5).held == ("node1/a",)
    assert blast_guard(before, after, down, 1.0).held == ()


def actual_of(d: DesiredState) -> list[ActualServer]:
    out = []
    for b in d.backends:
        for s in b.servers:
            weight = 0 if s.state is ServerState.DRAIN else s.weight
            out.append(
                ActualServer(
                    f"bk_{b.name}", Server(s.name, s.address, s.port, s.state, weight=weight), 2
                )
            )
    return out


BK = "bk_Framework_SystemAdministrator"
OPTIONS = server_options(S)


def backends(d: DesiredState) -> frozenset[str]:
    return frozenset(f"bk_{b.name}" for b in d.backends)


def test_no_drift_when_haproxy_matches() -> None:
    d = desired(FOUR)
    assert find_drift(tuple(actual_of(d)), d, backends(d), OPTIONS).commands == ()


def test_manual_disable_and_address_change_are_repaired() -> None:
    d = desired(FOUR)
    actual = actual_of(d)
    s1 = actual[0].server
    actual[0] = ActualServer(
        actual[0].backend, Server(s1.name, s1.address, s1.port, ServerState.MAINT), 0
    )
    s2 = actual[1].server
    actual[1] = ActualServer(actual[1].backend, Server(s2.name, "10.9.9.9", 1, s2.state), 2)
    drift = find_drift(tuple(actual), d, backends(d), OPTIONS)
    assert f"set server {BK}/{s1.name} state ready" in drift.commands
    assert f"set server {BK}/{s2.name} addr 10.0.0.1 port 31000" in drift.commands
    assert len(drift.differences) == 2 and not drift.needs_reload


def test_missing_servers_are_added_extra_ones_retired_missing_backends_reload() -> None:
    d = desired(snap(("x", [inst("a"), inst("b")])))
    actual = actual_of(d)
    gone = actual.pop(0)  # someone ran `del server`
    extra = ActualServer(BK, Server("intruder", "10.6.6.6", 80, ServerState.READY), 2)
    drift = find_drift((*actual, extra), d, backends(d), OPTIONS)
    assert f"add server {BK}/{gone.server.name} 10.0.0.1:31000 {OPTIONS}" in drift.commands
    assert f"set server {BK}/intruder state maint" in drift.commands
    assert drift.retire == ((BK, "intruder"),)
    # a retired server (already in maintenance) is expected, not drift
    parked = ActualServer(BK, Server("old", "10.0.0.5", 80, ServerState.MAINT), 0)
    calm = find_drift((*actual_of(d), parked), d, backends(d), OPTIONS, frozenset({(BK, "old")}))
    assert calm.commands == () and calm.retire == ((BK, "old"),)
    assert find_drift(tuple(actual_of(d)), d, backends(d) - {BK}, OPTIONS).needs_reload
