"""The catalog is untrusted: backends only where allowed, public ports only where declared,
ports never taken over, bounded sizes, unbindable ports cost only their service (issue 11)."""

from __future__ import annotations

import dataclasses

import pytest

from sidecar.config.schema import LimitSettings, PortSettings, Settings
from sidecar.core.admission import Perimeter, backend_address, default_ranges, public_port
from sidecar.core.bindmemo import BindMemo
from sidecar.core.desired import desired_state, perimeter_for
from sidecar.core.model import DesiredState, Snapshot
from sidecar.fleet.view import _own_check_passes, allowed_name, default_allowed
from sidecar.haproxy.binds import parse_bind_failures
from tests.unit.factories import inst, port_map, settings, snap

DEFAULT = perimeter_for(settings(), port_map(), frozenset({"192.0.2.7"}), frozenset(), ())


def refused(address: str, port: int = 31000, perimeter: Perimeter = DEFAULT) -> str:
    with pytest.raises(ValueError) as info:
        backend_address(address, port, perimeter)
    return str(info.value)


@pytest.mark.parametrize(
    ("address", "why"),
    [
        ("127.0.0.1", "loopback"),
        ("127.8.9.10", "loopback"),
        ("::1", "loopback"),
        ("::ffff:127.0.0.1", "loopback"),  # IPv4-mapped: the real address counts
        ("64:ff9b::7f00:1", "loopback"),  # NAT64 of 127.0.0.1
        ("169.254.169.254", "link-local"),  # cloud metadata
        ("fe80::1", "link-local"),
        ("224.0.0.1", "multicast"),
        ("240.0.0.1", "reserved"),
        ("0.0.0.1", "unspecified"),
        ("192.0.2.7", "own addresses"),
    ],
)
def test_default_policy_refuses_internal_addresses(address: str, why: str) -> None:
    assert why in refused(address)


def test_default_policy_accepts_ordinary_addresses() -> None:
    assert backend_address("10.1.2.3", 31000, DEFAULT) == "10.1.2.3"
    assert backend_address("2001:db8::5", 31000, DEFAULT) == "2001:db8::5"


def test_explicit_networks_replace_the_default_but_never_loop_or_reach_consul() -> None:
    p = dataclasses.replace(
        DEFAULT, networks=("127.0.0.0/8", "10.42.0.0/16"), refused=frozenset({("127.0.0.1", 8500)})
    )
    assert backend_address("127.0.0.1", 31000, p) == "127.0.0.1"
    assert "outside [gateway] backend_networks" in refused("10.1.2.3", perimeter=p)
    assert "Consul" in refused("127.0.0.1", 8500, p)  # the agent's own API: an open relay
    assert "loop" in refused("127.0.0.1", 9162, p)  # the gateway's own public port


def test_host_names_must_resolve_and_every_address_must_be_allowed() -> None:
    p = dataclasses.replace(
        DEFAULT,
        resolved=(
            ("good.example.org", ("10.0.0.9", "10.0.0.8")),
            ("evil.example.org", ("10.0.0.1", "127.0.0.1")),
        ),
    )
    assert (
        backend_address("good.example.org", 31000, p) == "10.0.0.8"
    )  # sorted: the same everywhere
    assert "evil.example.org (127.0.0.1) refused" in refused("evil.example.org", perimeter=p)
    assert "does not resolve" in refused("nowhere.example.org", perimeter=p)


def test_public_ports_only_in_the_declared_ranges() -> None:
    assert public_port(20001, DEFAULT) == 20001  # the auto range
    assert public_port(9162, DEFAULT) == 9162  # a port of the map
    with pytest.raises(ValueError, match="outside"):
        public_port(34353, DEFAULT)
    with pytest.raises(ValueError, match="privileged"):
        public_port(80, DEFAULT)
    wide = dataclasses.replace(DEFAULT, public_ranges=((1, 65535),))
    assert public_port(80, wide) == 80  # an operator's explicit range declares it


def test_default_ranges_merge_declared_ports_and_the_auto_range() -> None:
    assert default_ranges([9130, 9131, 9135, 20000], (20000, 29999)) == (
        (9130, 9131),
        (9135, 9135),
        (20000, 29999),
    )


def desired(snapshot: Snapshot, s: Settings | None = None, **kw: object) -> DesiredState:
    s = s or settings()
    return desired_state(snapshot, s, port_map(), perimeter=DEFAULT, **kw)  # type: ignore[arg-type]


def test_refused_instances_are_skipped_and_reported_the_rest_serves() -> None:
    d = desired(
        snap(
            ("sa", [inst("good"), inst("relay", address="127.0.0.1", port=8500)]),
            ("meta", [inst("meta", address="169.254.169.254", port=80, system="X", service="Y")]),
        )
    )
    (backend,) = d.listed
    assert backend.ready_count == 1
    reasons = " | ".join(str(p) for p in d.problems)
    assert "127.0.0.1 refused" in reasons and "169.254.169.254 refused" in reasons


def test_a_claim_outside_public_ranges_is_refused() -> None:
    d = desired(snap(("x", [inst("a", system="A", service="B", dirac_port="34353")])))
    assert d.listed == () and "outside [ports] public_ranges" in d.problems[0].reason


def test_a_map_port_is_never_handed_to_a_newcomer_even_while_its_owner_is_absent() -> None:
    squatter = inst("s", system="Evil", service="Twin", dirac_port="9162", consul="e")
    d = desired(snap(("e", [squatter])))
    assert d.listed == ()
    assert "9162 belongs to Framework/SystemAdministrator (map)" in d.problems[0].reason


def test_a_held_port_stays_with_its_holder_when_an_older_registration_appears() -> None:
    first = desired(
        snap(("a", [inst("a", system="A", service="S", dirac_port="20100", created=50)]))
    )
    assert [b.claim_index for b in first.listed] == [50]
    # an attacker cannot forge an older CreateIndex, but a re-registered old service could
    # claim one: the remembered claim of the holder still wins, and so on every gateway that
    # applied it
    older = inst("b", system="B", service="S", dirac_port="20100", created=40, consul="b")
    renewed = inst("a2", system="A", service="S", dirac_port="20100", created=90)
    d = desired(snap(("a", [renewed]), ("b", [older])), previous=first)
    assert [b.path for b in d.listed] == ["A/S"]
    assert "taken by A/S" in d.problems[0].reason


def test_a_vanished_service_keeps_its_port_against_newcomers() -> None:
    first = desired(
        snap(("a", [inst("a", system="A", service="S", dirac_port="20100", created=5)]))
    )
    newcomer = inst("n", system="N", service="S", dirac_port="20100", created=99, consul="n")
    d = desired(snap(("n", [newcomer])), previous=first)
    assert [(b.path, b.ready_count) for b in d.listed] == [("A/S", 0)]


def test_unbindable_ports_cost_only_their_service() -> None:
    d = desired(
        snap(
            ("sa", [inst("a")]),
            ("dm", [inst("b", system="DataManagement", service="FileCatalog", consul="dm")]),
        ),
        unbindable={9162: "Permission denied"},
    )
    assert [b.path for b in d.listed] == ["DataManagement/FileCatalog"]
    assert "9162 cannot be bound: Permission denied" in d.problems[0].reason


def test_limits_bound_services_instances_and_problems() -> None:
    base = settings()
    s = Settings(
        gateway=base.gateway,
        haproxy=base.haproxy,
        limits=LimitSettings(max_services=2, max_instances=3, max_problems=2),
    )
    services = [
        (f"c{n}", [inst(f"i{n}", system="Cap", service=f"S{n}", consul=f"c{n}", created=n)])
        for n in range(4)
    ]
    many = [inst(f"m{n}", created=100 - n) for n in range(6)]
    d = desired(snap(("sa", many), *services), s=s)
    assert len(d.listed) == 2
    sa = d.backend("Framework_SystemAdministrator")
    assert sa is not None and sa.ready_count == 3
    assert {s.instance for s in sa.servers if s.instance} == {"node1/m5", "node1/m4", "node1/m3"}
    assert len(d.problems) == 3 and "more not shown" in d.problems[-1].reason


def test_overrides_own_their_ports() -> None:
    base = settings()
    s = Settings(
        gateway=base.gateway,
        haproxy=base.haproxy,
        ports=PortSettings(overrides=(("A/S", 9162),)),
    )
    d = desired(
        snap(("sa", [inst("a")]), ("x", [inst("x", system="A", service="S", consul="x")])), s=s
    )
    assert [b.path for b in d.listed] == ["A/S"]
    assert "belongs to A/S (config)" in d.problems[0].reason


def test_bind_alerts_are_parsed() -> None:
    log = (
        "[ALERT]    (1) : Binding [/run/x/haproxy.cfg:40] for frontend fe_80: cannot bind "
        "socket (Permission denied) for [0.0.0.0:80]\n"
        "[ALERT]    (1) : Starting frontend fe_9162: cannot bind socket (Address already in "
        "use) [0.0.0.0:9162]\n"
    )
    assert parse_bind_failures(log) == {80: "Permission denied", 9162: "Address already in use"}


def test_bind_memo_learns_expires_and_retries() -> None:
    memo = BindMemo()
    assert memo.learn({80: "Permission denied"}, now=0.0, retry=600.0)
    assert not memo.learn({80: "Permission denied"}, now=1.0, retry=600.0)
    assert memo.as_inputs() == ((80, "Permission denied"),)
    assert memo.expire(300.0) == [] and memo.next_retry() == 601.0
    assert memo.expire(601.0) == [80] and memo.as_inputs() == ()
    memo.learn({9162: "Address already in use"}, now=0.0, retry=30.0, probe=True)
    assert memo.expire(1.0) == [9162]  # the preflight looks again on any cycle


def test_discovered_gateway_names_must_match_and_have_their_own_passing_check() -> None:
    allowed = default_allowed(("dirac-gw.example.org", "localhost"))
    assert allowed == (".example.org", "localhost")
    assert allowed_name("dirac-gw2.example.org", allowed)
    assert not allowed_name("evil.example.com", allowed)
    assert not allowed_name("example.org", allowed)  # the suffix itself is no gateway
    mine = {"Service": {"ID": "gw-1"}, "Checks": [{"ServiceID": "gw-1", "Status": "passing"}]}
    bare = {"Service": {"ID": "gw-2"}, "Checks": [{"ServiceID": "", "Status": "passing"}]}
    assert _own_check_passes(mine) and not _own_check_passes(bare)
