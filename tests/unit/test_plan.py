import dataclasses

from sidecar.desired import desired_state, permissive
from sidecar.model import DesiredState, Health, Snapshot
from sidecar.pipeline import Inputs, cycle, render
from sidecar.plan import PlanKind, Rendered, plan
from sidecar.render.haproxy import load_template
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


def test_new_instance_is_a_runtime_change() -> None:
    a = rendered(snap(("x", [inst("a")])))
    b = rendered(snap(("x", [inst("a"), inst("b", address="10.0.0.2", port=4000)])), a)
    p = plan(a, b, running=True)
    assert p.kind is PlanKind.RUNTIME
    assert p.commands == (
        "set server bk_Framework_SystemAdministrator/s2 addr 10.0.0.2 port 4000",
        "set weight bk_Framework_SystemAdministrator/s2 1",
        "set server bk_Framework_SystemAdministrator/s2 state ready",
    )
    assert p.changes == ("Framework/SystemAdministrator/s2=10.0.0.2:4000(ready)",)


def test_removal_drain_and_move_are_runtime_changes() -> None:
    a = rendered(snap(("x", [inst("a"), inst("b")])))
    b = rendered(snap(("x", [inst("a", health=Health.MAINTENANCE), inst("b", port=5)])), a)
    p = plan(a, b, running=True)
    assert p.kind is PlanKind.RUNTIME
    assert "set weight bk_Framework_SystemAdministrator/s1 0" in p.commands
    assert "set server bk_Framework_SystemAdministrator/s2 addr 10.0.0.1 port 5" in p.commands
    c = rendered(snap(("x", [inst("b", port=5)])), b)
    assert plan(b, c, running=True).commands == (
        "set server bk_Framework_SystemAdministrator/s1 state maint",
    )


def test_new_service_or_full_slots_need_a_reload() -> None:
    a = rendered(snap(("x", [inst("a")])))
    b = rendered(snap(("x", [inst("a")]), ("pm", [inst("p", service="ProxyManager")])), a)
    assert plan(a, b, running=True).kind is PlanKind.RELOAD
    c = rendered(snap(("x", [inst(f"i{n}") for n in range(5)])), a)
    assert plan(a, c, running=True).kind is PlanKind.RELOAD


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
    assert "set server bk_Framework_SystemAdministrator/s1 addr 10.0.0.9 port 31000" in p.commands


def test_settings_change_needs_a_reload() -> None:
    a = rendered(snap(("x", [inst("a")])))
    other = Inputs(settings(timeout_server="700s"), INPUTS.port_map, INPUTS.template)
    b = render(snap(("x", [inst("a")])), other, a)
    assert plan(a, b, running=True).kind is PlanKind.RELOAD


def test_unknown_applied_state_reloads_unless_bytes_equal() -> None:
    target = rendered(snap(("x", [inst("a")])))
    assert plan(Rendered(None, target.config, None), target, True).kind is PlanKind.NONE
    assert plan(Rendered(None, "other", None), target, True).kind is PlanKind.RELOAD


def test_cycle_keeps_slots_from_applied() -> None:
    a, _ = cycle(snap(("x", [inst("b")])), INPUTS, None, False)
    b, p = cycle(snap(("x", [inst("a"), inst("b")])), INPUTS, a, True)
    assert p.kind is PlanKind.RUNTIME
    assert isinstance(b.desired, DesiredState)
    by_instance = {s.instance: s.name for s in b.desired.backends[0].servers if s.instance}
    assert by_instance["node1/b"] == "s1"


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


def test_skeleton_text_is_reused_when_nothing_structural_changed() -> None:
    a = rendered(snap(("x", [inst("a")])))
    b = rendered(snap(("x", [inst("b", address="10.9.9.9")])), a)
    assert b.skeleton is a.skeleton  # not rendered again
    assert plan(a, b, running=True).kind is PlanKind.RUNTIME
