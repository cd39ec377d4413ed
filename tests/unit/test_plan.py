import dataclasses

from sidecar.core.candidates import server_name
from sidecar.core.desired import desired_state, permissive
from sidecar.core.model import DesiredState, Health, Snapshot
from sidecar.core.pipeline import Inputs, cycle, render
from sidecar.core.plan import PlanKind, Rendered, plan
from sidecar.core.render import server_options
from sidecar.haproxy.inputs import load_template
from tests.unit.factories import inst, port_map, settings, snap

S = settings()
INPUTS = Inputs(S, port_map(), load_template(S.template_path))


def rendered(snapshot: Snapshot, previous: Rendered | None = None) -> Rendered:
    return render(snapshot, INPUTS, previous)


def test_identical_catalog_needs_nothing() -> None:
    a = rendered(snap(("x", [inst("a")])))
    assert plan(a, rendered(snap(("x", [inst("a")])), a), running=True).kind is PlanKind.NONE


def test_not_running_means_start() -> None:
    target = rendered(snap(("x", [inst("a")])))
    assert plan(None, target, running=False).kind is PlanKind.START


BK = "bk_Framework_SystemAdministrator"
OPTIONS = server_options(S)


def runtime(a: Rendered, b: Rendered, retired: frozenset[tuple[str, str]] = frozenset()):  # type: ignore[no-untyped-def]
    return plan(a, b, True, OPTIONS, retired)


def test_new_instance_is_a_dynamic_server() -> None:
    a = rendered(snap(("x", [inst("a")])))
    b = rendered(snap(("x", [inst("a"), inst("b", address="10.0.0.2", port=4000)])), a)
    p = runtime(a, b)
    name = server_name("node1/b")
    assert p.kind is PlanKind.RUNTIME
    assert p.commands == (
        f"add server {BK}/{name} 10.0.0.2:4000 {OPTIONS}",
        f"enable health {BK}/{name}",
        f"set server {BK}/{name} state ready",
    )
    assert p.changes == (f"+Framework/SystemAdministrator/{name}=10.0.0.2:4000(ready)",)
    assert (
        OPTIONS.startswith("check inter 2s")
        and f"server {name} 10.0.0.2:4000 {OPTIONS}" in b.config
    )


def test_removal_drain_and_move_are_runtime_changes() -> None:
    a = rendered(snap(("x", [inst("a"), inst("b")])))
    b = rendered(snap(("x", [inst("a", health=Health.MAINTENANCE), inst("b", port=5)])), a)
    p = runtime(a, b)
    sa, sb = server_name("node1/a"), server_name("node1/b")
    assert p.kind is PlanKind.RUNTIME
    assert f"set weight {BK}/{sa} 0" in p.commands
    assert f"set server {BK}/{sb} addr 10.0.0.1 port 5" in p.commands
    c = rendered(snap(("x", [inst("b", port=5)])), b)
    removal = runtime(b, c)
    assert removal.commands == (f"set server {BK}/{sa} state maint",)
    assert removal.retire == ((BK, sa),)  # deleted once its last connection ends


def test_a_retired_server_is_revived_not_added_twice() -> None:
    a = rendered(snap(("x", [inst("b")])))
    b = rendered(snap(("x", [inst("a"), inst("b")])), a)
    sa = server_name("node1/a")
    p = runtime(a, b, frozenset({(BK, sa)}))
    assert p.commands == (
        f"set server {BK}/{sa} addr 10.0.0.1 port 31000",
        f"set weight {BK}/{sa} 1",
        f"set server {BK}/{sa} state ready",
    )
    assert p.revived == ((BK, sa),)


def test_a_declared_service_appearing_or_coming_back_needs_no_reload() -> None:
    empty = rendered(Snapshot((), 1))
    first = rendered(snap(("x", [inst("a")]), ("pm", [inst("p", service="ProxyManager")])), empty)
    assert runtime(empty, first).kind is PlanKind.RUNTIME
    gone = rendered(snap(("pm", [inst("p", service="ProxyManager")])), first)
    back = rendered(snap(("x", [inst("a")]), ("pm", [inst("p", service="ProxyManager")])), gone)
    assert runtime(first, gone).kind is PlanKind.RUNTIME
    assert runtime(gone, back).kind is PlanKind.RUNTIME


def test_an_undeclared_service_needs_a_reload() -> None:
    a = rendered(snap(("x", [inst("a")])))
    b = rendered(snap(("x", [inst("a")]), ("n", [inst("n", system="New", service="Svc")])), a)
    assert runtime(a, b).kind is PlanKind.RELOAD


def test_a_host_name_is_resolved_by_the_sidecar_so_the_runtime_api_suffices() -> None:
    """HAProxy never resolves a catalog name itself (no rebinding between check and use)."""
    a = rendered(snap(("x", [inst("a")])))
    unresolved = rendered(snap(("x", [inst("a", address="backend.example.org")])), a)
    assert unresolved.desired is not None and "does not resolve" in str(unresolved.desired.problems)
    fenced = dataclasses.replace(
        INPUTS,
        perimeter=dataclasses.replace(
            permissive(S, INPUTS.port_map), resolved=(("backend.example.org", ("10.0.0.9",)),)
        ),
    )
    b = render(snap(("x", [inst("a", address="backend.example.org")])), fenced, a)
    p = plan(a, b, running=True)
    assert p.kind is PlanKind.RUNTIME
    assert f"set server {BK}/{server_name('node1/a')} addr 10.0.0.9 port 31000" in p.commands


def test_settings_change_needs_a_reload() -> None:
    a = rendered(snap(("x", [inst("a")])))
    other = Inputs(settings(timeout_server="700s"), INPUTS.port_map, INPUTS.template)
    b = render(snap(("x", [inst("a")])), other, a)
    assert plan(a, b, running=True).kind is PlanKind.RELOAD


def test_unknown_applied_state_reloads_unless_bytes_equal() -> None:
    target = rendered(snap(("x", [inst("a")])))
    assert plan(Rendered(None, target.config, None), target, True).kind is PlanKind.NONE
    assert plan(Rendered(None, "other", None), target, True).kind is PlanKind.RELOAD


def test_cycle_plans_against_applied() -> None:
    a, _ = cycle(snap(("x", [inst("b")])), INPUTS, None, False)
    b, p = cycle(snap(("x", [inst("a"), inst("b")])), INPUTS, a, True)
    assert p.kind is PlanKind.RUNTIME
    assert isinstance(b.desired, DesiredState)
    assert len(p.commands) == 3 and p.commands[0].startswith("add server")


def test_desired_problems_do_not_change_the_config() -> None:
    a = rendered(snap(("x", [inst("a")])))
    b = rendered(snap(("x", [inst("a"), inst("bad", port=0)])), a)
    assert a.config == b.config and plan(a, b, True).kind is PlanKind.NONE
    assert dataclasses.replace(
        desired_state(snap(("x", [inst("a")])), S, port_map()), problems=()
    ) == dataclasses.replace(b.desired, problems=())  # type: ignore[type-var]


def test_template_change_with_the_same_settings_needs_a_reload(tmp_path) -> None:  # type: ignore[no-untyped-def]
    a = rendered(snap(("x", [inst("a")])))
    changed = tmp_path / "t.j2"
    changed.write_text(S.template_path.read_text().replace("retries 2", "retries 3"))
    other = Inputs(S, INPUTS.port_map, load_template(changed), template_digest="other")
    b = render(snap(("x", [inst("a"), inst("b", port=2)])), other, a)
    assert plan(a, b, running=True).kind is PlanKind.RELOAD


def test_membership_changes_keep_the_structure() -> None:
    a = rendered(snap(("x", [inst("a")])))
    b = rendered(snap(("x", [inst("b", address="10.9.9.9")])), a)
    assert a.structure == b.structure and a.config != b.config
    assert runtime(a, b).kind is PlanKind.RUNTIME
