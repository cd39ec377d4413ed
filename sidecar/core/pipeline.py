"""The pure pipeline: snapshot -> desired state -> rendered config -> plan, in one direction.

The daemon and the CLI call only this to decide what to do; they then hand the plan to the
appliers. Keeping the composition here keeps the orchestrator's fan-out small.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field, replace

import jinja2

from sidecar.config.schema import Settings, Strategy
from sidecar.core.admission import Perimeter
from sidecar.core.certs import exclude_failing
from sidecar.core.desired import desired_state
from sidecar.core.guard import blast_guard
from sidecar.core.model import Snapshot
from sidecar.core.plan import Plan, PlanKind, Rendered, ServerKey, plan, structure
from sidecar.core.portmap import PortMap
from sidecar.core.render import render_config, server_options


@dataclass(frozen=True, slots=True)
class Inputs:
    """Everything the pure stages need besides the snapshot (changes only on SIGHUP)."""

    settings: Settings
    port_map: PortMap
    template: jinja2.Template
    reserved_ports: frozenset[int] = frozenset()
    unbindable: tuple[tuple[int, str], ...] = ()  # public ports HAProxy cannot bind, and why
    perimeter: Perimeter | None = None  # None: no network facts (plain-data tests, render)
    drained: frozenset[tuple[str, int]] = frozenset()  # (address, port): certificate fails
    template_digest: str = ""  # of the template's source (daemon); "" in tests
    render_key: str = field(default="", compare=False)  # derived in __post_init__

    def __post_init__(self) -> None:
        # What, besides the desired state, the rendered bytes depend on (a stable digest,
        # computed once: the planner compares it on every cycle).
        template = self.template_digest or str(id(self.template))
        settings = repr(replace(self.settings, source=""))  # a dataclass: a stable repr
        key = hashlib.sha256(f"{template}\0{settings}".encode()).hexdigest()[:16]
        object.__setattr__(self, "render_key", key)


def target_state(
    snapshot: Snapshot,
    inputs: Inputs,
    previous: Rendered | None,
    confirmed: frozenset[str] = frozenset(),
    distrust_absent: bool = False,
) -> Rendered:
    """Desired state (mass removals guarded) and its structure; the config is not rendered."""
    before = previous.desired if previous else None
    desired = desired_state(
        snapshot,
        inputs.settings,
        inputs.port_map,
        before,
        inputs.reserved_ports,
        dict(inputs.unbindable),
        inputs.perimeter,
    )
    guarded = blast_guard(
        before,
        desired,
        snapshot,
        inputs.settings.apply.max_removal_share,
        confirmed,
        frozenset(previous.held) if previous else frozenset(),
        distrust_absent,
    )
    desired = exclude_failing(guarded.desired, inputs.drained)
    return Rendered(desired, None, structure(desired, inputs.render_key), guarded.held)


def with_config(target: Rendered, inputs: Inputs) -> Rendered:
    """``target`` with its config text (rendered once, when a reload or a file write needs it)."""
    if target.config is not None or target.desired is None:
        return target
    return replace(target, config=render_config(inputs.template, target.desired, inputs.settings))


def render(
    snapshot: Snapshot,
    inputs: Inputs,
    previous: Rendered | None,
    confirmed: frozenset[str] = frozenset(),
    distrust_absent: bool = False,
) -> Rendered:
    """Desired state, structure and config, in one pass (the CLI, the tests)."""
    return with_config(target_state(snapshot, inputs, previous, confirmed, distrust_absent), inputs)


def cycle(
    snapshot: Snapshot,
    inputs: Inputs,
    applied: Rendered | None,
    running: bool,
    confirmed: frozenset[str] = frozenset(),
    distrust_absent: bool = False,
    retired: frozenset[ServerKey] = frozenset(),
) -> tuple[Rendered, Plan]:
    """Plan the target against what is applied; the config is rendered only for a reload or a
    start (or when only the applied file is known), never on the runtime path."""
    target = target_state(snapshot, inputs, applied, confirmed, distrust_absent)
    if applied is not None and applied.desired is None:
        target = with_config(target, inputs)
    options = server_options(inputs.settings)
    planned = plan(applied, target, running, options, retired)
    if planned.kind is PlanKind.RUNTIME and inputs.settings.apply.strategy is Strategy.RELOAD:
        planned = Plan(PlanKind.RELOAD, changes=planned.changes, reason="strategy = reload")
    if planned.kind in (PlanKind.RELOAD, PlanKind.START):
        target = with_config(target, inputs)
    return target, planned
