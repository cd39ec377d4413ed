import dataclasses
import re

from sidecar.config.schema import PortSettings, Settings
from sidecar.core.candidates import server_name
from sidecar.core.desired import desired_state
from sidecar.core.model import (
    DesiredState,
    Health,
    Origin,
    Protocol,
    ServerState,
    ServiceEntries,
    Snapshot,
)
from sidecar.core.ports import _overrides
from tests.unit.factories import inst, port_map, settings, snap


def desired(
    snapshot: Snapshot,
    previous: DesiredState | None = None,
    s: Settings | None = None,
    reserved: frozenset[int] = frozenset(),
) -> DesiredState:
    return desired_state(snapshot, s or settings(), port_map(), previous, reserved)


def test_one_service_gets_its_default_port_and_a_server() -> None:
    d = desired(snap(("sysadmin", [inst("a")])))
    (backend,) = d.listed
    assert (backend.name, backend.public_port, backend.port_source) == (
        "Framework_SystemAdministrator",
        9162,
        "map",
    )
    assert backend.servers[0].address == "10.0.0.1" and backend.servers[0].port == 31000
    assert backend.servers[0].state is ServerState.READY
    assert [s.name for s in backend.servers] == [server_name("node1/a")]
    assert d.problems == ()


def test_every_declared_service_has_a_bound_rejecting_backend_from_the_start() -> None:
    """So that a declared service appearing is a runtime change, never a reload."""
    d = desired(Snapshot((), 1))
    declared = {b.path: b for b in d.backends}
    assert len(declared) == len(port_map().entries)
    sysadmin = declared["Framework/SystemAdministrator"]
    assert (sysadmin.public_port, sysadmin.servers, sysadmin.origin) == (9162, (), Origin.DECLARED)
    assert d.listed == () and d.problems == ()
    present = desired(snap(("sysadmin", [inst("a")])), previous=d)
    assert present.backend("Framework_SystemAdministrator").origin is Origin.CATALOG  # type: ignore[union-attr]
    assert {b.name for b in present.backends} == {b.name for b in d.backends}


def test_a_declared_service_on_its_dirac_port_keeps_its_declared_port_too() -> None:
    d = desired(snap(("sysadmin", [inst("a", dirac_port="20001")])))
    backend = d.backend("Framework_SystemAdministrator")
    assert backend is not None and backend.ports == (20001, 9162)


def test_deterministic_whatever_the_input_order() -> None:
    a = snap(
        ("sysadmin", [inst("a"), inst("b", port=1)]), ("pm", [inst("p", service="ProxyManager")])
    )
    b = Snapshot(tuple(reversed(a.services)), 10)
    assert desired(a) == desired(b)


def test_health_states() -> None:
    d = desired(
        snap(
            (
                "sysadmin",
                [
                    inst("a", health=Health.PASSING),
                    inst("b", health=Health.WARNING),
                    inst("c", health=Health.CRITICAL),
                    inst("d", health=Health.MAINTENANCE),
                ],
            )
        )
    )
    states = {s.instance: s.state for s in d.listed[0].servers if s.instance}
    assert states == {"node1/a": ServerState.READY, "node1/d": ServerState.DRAIN}
    s = settings()
    s = Settings(
        consul=s.consul.__class__(include_warning=True), gateway=s.gateway, haproxy=s.haproxy
    )
    d = desired(snap(("sysadmin", [inst("b", health=Health.WARNING)])), s=s)
    assert d.listed[0].servers[0].state is ServerState.READY


def test_service_with_no_healthy_instance_keeps_its_port() -> None:
    d = desired(snap(("sysadmin", [inst("a", health=Health.CRITICAL)])))
    (backend,) = d.listed
    assert backend.public_port == 9162 and backend.ready_count == 0


def test_invalid_instances_are_skipped_with_a_reason() -> None:
    d = desired(
        snap(
            (
                "sysadmin",
                [
                    inst("ok"),
                    inst("badport", port=70000),
                    inst("badaddr", address="10.0.0.1; rm -rf"),
                    inst("nosys", system=None),
                    inst("proto", dirac_protocol="gopher"),
                    inst("meta", dirac_port="x"),
                ],
            )
        )
    )
    assert d.listed[0].ready_count == 1
    reasons = {p.subject.split("'")[3]: p.reason for p in d.problems}
    assert set(reasons) == {
        "node1/badport",
        "node1/badaddr",
        "node1/nosys",
        "node1/proto",
        "node1/meta",
    }
    assert "out of range" in reasons["node1/badport"]


def test_query_errors_are_problems() -> None:
    s = Snapshot((ServiceEntries("bad name", 0, (), error="HTTP 400"),), 1)
    d = desired(s)
    assert d.listed == () and d.problems[0].reason == "HTTP 400"


def test_duplicate_instance_ids_keep_the_first() -> None:
    d = desired(snap(("sysadmin", [inst("a"), inst("a", port=2)])))
    assert d.listed[0].ready_count == 1
    assert "duplicate" in d.problems[0].reason


def test_port_precedence_config_meta_map_auto() -> None:
    """The contract: [ports.overrides] > dirac_port > port map > hashed."""
    base = settings()
    s = Settings(
        gateway=base.gateway,
        haproxy=base.haproxy,
        ports=PortSettings(overrides=(("Framework/SystemAdministrator", 7000),)),
    )
    assert desired(snap(("x", [inst("a", dirac_port="20001")])), s=s).listed[0].public_port == 7000
    claimed = desired(snap(("x", [inst("a", dirac_port="20001")]))).listed[0]
    assert (claimed.public_port, claimed.port_source) == (20001, "meta")
    assert desired(snap(("x", [inst("a")]))).listed[0].public_port == 9162
    meta = desired(snap(("x", [inst("a", system="Foo", service="Bar", dirac_port="20002")])))
    assert (meta.listed[0].public_port, meta.listed[0].port_source) == (20002, "meta")
    auto = desired(snap(("x", [inst("a", system="Foo", service="Bar")])))
    assert auto.listed[0].port_source == "auto" and 20000 <= auto.listed[0].public_port <= 29999
    none = Settings(gateway=base.gateway, haproxy=base.haproxy, ports=PortSettings(auto_low=0))
    assert desired(snap(("x", [inst("a", system="Foo", service="Bar")])), s=none).listed == ()


def test_new_overrides_are_seen_at_once_and_one_dict_serves_every_service() -> None:
    """own_port's dict of [ports.overrides] is built once per overrides value (a dict per
    service made a cycle quadratic in their number), and a SIGHUP's new value replaces it."""
    base = settings()
    one = (("Framework/SystemAdministrator", 7000),)
    s1 = Settings(gateway=base.gateway, haproxy=base.haproxy, ports=PortSettings(overrides=one))
    again = Settings(gateway=base.gateway, haproxy=base.haproxy, ports=s1.ports)
    assert _overrides(s1.ports.overrides) is _overrides(again.ports.overrides)
    moved = PortSettings(overrides=(("Framework/SystemAdministrator", 7001),))
    s2 = Settings(gateway=base.gateway, haproxy=base.haproxy, ports=moved)
    catalog = snap(("x", [inst("a")]))
    assert desired(catalog, s=s1).listed[0].public_port == 7000
    assert desired(catalog, s=s2).listed[0].public_port == 7001
    assert desired(catalog, s=s1).listed[0].public_port == 7000


def test_auto_port_does_not_shift_when_another_service_appears() -> None:
    alone = desired(snap(("x", [inst("a", system="Foo", service="Bar")])))
    crowd = desired(
        snap(
            ("x", [inst("a", system="Foo", service="Bar")]),
            ("y", [inst("b", system="Foo", service="Baz", consul="y")]),
            ("z", [inst("c", system="Aaa", service="Bar", consul="z")]),
        )
    )
    port = alone.listed[0].public_port
    assert port in crowd.public_ports
    assert crowd.backend("Foo_Bar") is not None
    assert crowd.backend("Foo_Bar").public_port == port  # type: ignore[union-attr]


def test_port_conflict_is_deterministic_and_reported() -> None:
    d = desired(
        snap(
            ("sysadmin", [inst("a")]),
            (
                "intruder",
                [inst("b", system="Evil", service="Twin", dirac_port="9162", consul="intruder")],
            ),
        )
    )
    assert [b.path for b in d.listed] == ["Framework/SystemAdministrator"]
    (problem,) = d.problems
    assert problem.subject == "Evil/Twin"
    assert "9162 belongs to Framework/SystemAdministrator (map)" in problem.reason
    # two metadata claims: the first registration wins (Consul's CreateIndex), on every
    # gateway; the sorted name only breaks a tie
    zed = inst("a", system="Zed", service="S", dirac_port="20009", consul="x", created=3)
    abc = inst("b", system="Abc", service="S", dirac_port="20009", consul="y", created=8)
    d = desired(snap(("x", [zed]), ("y", [abc])))
    assert [b.path for b in d.listed] == ["Zed/S"]
    assert "taken by Zed/S, which claimed it first" in d.problems[0].reason
    tie = desired(snap(("x", [dataclasses.replace(zed, create_index=8)]), ("y", [abc])))
    assert [b.path for b in tie.listed] == ["Abc/S"]


def test_a_held_port_kept_from_an_older_claim_is_reported_as_a_possible_disagreement() -> None:
    """Two claims on one port whose watches answered in the other order on this gateway: the
    held (younger) one keeps the port here, a gateway that saw the older first, or starts
    afresh, serves the older. The loser's problem says so (the fleet may disagree)."""
    older = inst("a", system="Zed", service="S", dirac_port="20009", consul="x", created=3)
    younger = inst("b", system="Abc", service="S", dirac_port="20009", consul="y", created=8)
    here = desired(snap(("x", [older]), ("y", [younger])), desired(snap(("y", [younger]))))
    assert [b.path for b in here.listed] == ["Abc/S"]
    (problem,) = here.problems
    assert problem.subject == "Zed/S" and "Abc/S, which this gateway served first" in problem.reason
    assert "another gateway may serve it instead" in problem.reason
    fresh = desired(snap(("x", [older]), ("y", [younger])))
    assert [b.path for b in fresh.listed] == ["Zed/S"]
    assert "taken by Zed/S, which claimed it first" in fresh.problems[0].reason


def test_reserved_ports_are_refused() -> None:
    d = desired(snap(("sysadmin", [inst("a")])), reserved=frozenset({9162}))
    assert d.listed == () and "reserved" in d.problems[0].reason


def test_instances_disagreeing_on_protocol_lose_to_the_first_registration() -> None:
    d = desired(snap(("x", [inst("a"), inst("b"), inst("c", dirac_protocol="https")])))
    assert d.listed[0].protocol is Protocol.DIPS and d.listed[0].ready_count == 2
    assert "protocol" in d.problems[0].reason
    # three newcomers cannot outvote the service's first registration
    first = inst("z", created=5, dirac_protocol="https")
    crowd = [inst(n, created=10 + i) for i, n in enumerate("abc")]
    d = desired(snap(("x", [*crowd, first])))
    assert d.listed[0].protocol is Protocol.HTTPS and d.listed[0].ready_count == 1
    assert len(d.problems) == 3


def test_instances_disagreeing_on_dirac_port_follow_the_first_claim() -> None:
    """Deterministic whatever the order of the answer, and reported."""
    old = inst("old", created=7, dirac_port="20001")
    new = [inst(n, created=20 + i, dirac_port="20002") for i, n in enumerate("ab")]
    for order in ([old, *new], [*new, old]):
        d = desired(snap(("x", order)))
        (backend,) = d.listed
        assert (backend.public_port, backend.ready_count) == (20001, 1)
        assert {p.subject for p in d.problems} == {
            "Framework/SystemAdministrator instance 'node1/a'",
            "Framework/SystemAdministrator instance 'node1/b'",
        }
        assert all("dirac_port 20002 disagrees with 20001" in p.reason for p in d.problems)


def test_a_later_dirac_port_cannot_move_a_service_whose_first_registration_names_none() -> None:
    """Found by tests/unit/test_hostile_ports.py: the first instance names no dirac_port, so
    the service is on its map port (9162); one registration naming another port moved it, and
    every client's URL with it. Now it is left out and reported; one that names the map port
    itself agrees (and the port stays a declared one: no reload)."""
    first = [inst("a", created=5), inst("b", created=6)]
    mover = inst("m", created=40, dirac_port="20001")
    d = desired(snap(("x", [*first, mover])))
    (backend,) = d.listed
    assert (backend.public_port, backend.port_source, backend.ready_count) == (9162, "map", 2)
    (problem,) = d.problems
    assert problem.subject == "Framework/SystemAdministrator instance 'node1/m'"
    assert "dirac_port 20001 disagrees with 9162" in problem.reason
    assert "its first registration, 'node1/a', names none" in problem.reason
    explicit = desired(snap(("x", [*first, inst("e", created=41, dirac_port="9162")])))
    (backend,) = explicit.listed
    assert (backend.public_port, backend.port_source, backend.ready_count) == (9162, "map", 3)
    assert not explicit.problems
    # once the first registrations are gone, the earliest one left decides: it names 20001
    alone = desired(snap(("x", [mover])))
    assert alone.listed[0].public_port == 20001 and alone.listed[0].port_source == "meta"


def test_server_names_follow_the_instance_stable_and_safe() -> None:
    first = desired(snap(("x", [inst("a"), inst("b"), inst("c")])))
    names = {s.instance: s.name for s in first.listed[0].servers}
    assert names == {k: server_name(k) for k in ("node1/a", "node1/b", "node1/c")}
    second = desired(snap(("x", [inst("c"), inst("d")])), previous=first)
    names = {s.instance: s.name for s in second.listed[0].servers}
    assert names["node1/c"] == server_name("node1/c")
    hostile = server_name("n/x y\n#;{}\x1b" + "z" * 100)
    assert re.fullmatch(r"i-[0-9a-f]{8}", hostile)  # hostile text never enters the config
    assert server_name("a/b") != server_name("c/b")  # same service ID on two nodes
    # an ID with slashes shows nothing of itself (found by test_hostile_catalog: "/INJECTED"
    # once showed as "INJECTED"); so does a node name with one
    assert re.fullmatch(r"i-[0-9a-f]{8}", server_name("node1//INJECTED"))
    assert re.fullmatch(r"i-[0-9a-f]{8}", server_name("no/de/x"))


def test_a_service_grows_without_limit_and_shrinks_to_its_instances() -> None:
    many = desired(snap(("x", [inst(f"i{n}") for n in range(50)])))
    assert len(many.listed[0].servers) == 50
    few = desired(snap(("x", [inst("i0")])), previous=many)
    assert len(few.listed[0].servers) == 1


def test_vanished_service_keeps_its_port_rejecting() -> None:
    first = desired(snap(("x", [inst("a")])))
    gone = desired(Snapshot((), 11), previous=first)
    (backend,) = gone.listed
    assert backend.public_port == 9162 and backend.ready_count == 0
    assert "no longer in the catalog" in gone.problems[0].reason


def test_a_service_whose_members_did_not_change_is_reused_with_its_problems() -> None:
    """The agreement memo: the same answer gives the same servers object and the same
    problems again; a changed answer (one more instance) is worked out anew."""
    one = snap(("x", [inst("a"), inst("b", dirac_protocol="https")]))
    first = desired(one)
    again = desired(one, first)
    assert again.listed[0] is first.listed[0]  # nothing changed: the very same backend
    assert again.problems == first.problems and "protocol" in first.problems[0].reason
    grown = snap(("x", [inst("a"), inst("b", dirac_protocol="https"), inst("c")]))
    after = desired(grown, again)
    assert after.listed[0].ready_count == 2 and after.problems == first.problems


def test_a_reused_service_follows_its_previous_backend() -> None:
    """The candidate memo (core/candidates.py), with the same settings and port map objects as
    in the daemon: the same members with another previous backend are worked out anew (a held
    port keeps the claim index it had), the same inputs give the same objects."""
    s, pm = settings(), port_map()
    one = snap(("x", [inst("a", created=7)]))
    fresh = desired_state(one, s, pm)
    assert fresh.listed[0].claim_index == 7
    held = dataclasses.replace(fresh.listed[0], claim_index=3)
    previous = dataclasses.replace(fresh, backends=(held,))
    assert desired_state(one, s, pm, previous).listed[0].claim_index == 3  # the claim it held
    assert desired_state(one, s, pm).listed[0].claim_index == 7  # no previous: no held claim
    again = desired_state(one, s, pm, fresh)
    assert again.listed[0] is fresh.listed[0] and again.backends == fresh.backends
    other = settings()  # a SIGHUP: equal values, another object; the result is equal
    assert desired_state(one, other, pm, fresh) == again
