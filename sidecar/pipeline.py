"""The pure pipeline: snapshot -> desired state -> rendered config -> plan.

The daemon and the CLI call only this to decide what to do; they then hand the plan to the
appliers. Keeping the composition here keeps the orchestrator's fan-out small.
"""

from __future__ import annotations

from dataclasses import dataclass

import jinja2

from sidecar.admission import Perimeter
from sidecar.certs import exclude_failing
from sidecar.config.schema import Settings
from sidecar.desired import desired_state
from sidecar.guard import blast_guard
from sidecar.model import Snapshot
from sidecar.plan import Plan, Rendered, plan, skeleton
from sidecar.portmap import PortMap
from sidecar.render.haproxy import render_config


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

    @property
    def render_key(self) -> int:
        """What, besides the desired state, the rendered bytes depend on."""
        template = self.template_digest or str(id(self.template))
        return hash((self.settings, template))


def render(
    snapshot: Snapshot,
    inputs: Inputs,
    previous: Rendered | None,
    confirmed: frozenset[str] = frozenset(),
    distrust_absent: bool = False,
) -> Rendered:
    """Desired state (slots sticky to ``previous``, mass removals guarded), config, skeleton."""
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
    desired = guarded.desired
    desired = exclude_failing(desired, inputs.drained)
    config = render_config(inputs.template, desired, inputs.settings)
    shape = skeleton(desired)
    key = inputs.render_key
    if previous and previous.skeleton and previous.shape == shape and previous.inputs_key == key:
        text = previous.skeleton  # same structure, same inputs: the same skeleton bytes
    else:
        text = render_config(inputs.template, shape, inputs.settings)
    return Rendered(desired, config, text, guarded.held, shape, key)


def cycle(
    snapshot: Snapshot,
    inputs: Inputs,
    applied: Rendered | None,
    running: bool,
    confirmed: frozenset[str] = frozenset(),
    distrust_absent: bool = False,
) -> tuple[Rendered, Plan]:
    target = render(snapshot, inputs, applied, confirmed, distrust_absent)
    return target, plan(applied, target, running)
