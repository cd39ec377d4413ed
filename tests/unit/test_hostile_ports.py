"""One hostile registration harms only itself: property tests over public ports and servers.

``test_hostile_catalog`` proves that no catalog text reaches the config. This module proves the
other half of the contract for untrusted input (product.md, "one bad entry harms only
itself"): a gateway that serves a catalog keeps every public port and every ready server when
someone registers more, whatever they claim. Hypothesis builds a catalog of well-formed DIRAC
services (port-map services and others, some with a ``dirac_port``), applies it, then adds
registrations made the way an attacker with catalog write access would make them, each later
than the served ones (Consul's ``CreateIndex`` only grows):

- another DIRAC service claiming, by ``dirac_port``, a port a served service holds;
- an instance of a served service that asks for a different ``dirac_port`` (moving it);
- an instance under a served service's Consul name that names another DIRAC service;
- an entry that reuses a served instance's node and service ID (its identity) elsewhere;
- a service whose name is a port-map service's, on its own port, while the real one is served;
- a flood of instances of a served service, past ``[limits] max_instances``;
- an instance of a served service that switches it to the other protocol.

For every pair: each backend served before keeps its public port, each server ready before is
ready still, and a gateway that starts afresh on the attacked catalog agrees on every port and
server (the fleet writes one CS for all). Seeded and bounded like the other property tests
(``derandomize``, 200 examples; ``HYPOTHESIS_PROFILE=deep`` runs 5,000).
"""

from __future__ import annotations

import os
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sidecar import data
from sidecar.config.loader import parse_settings
from sidecar.consul.parse import parse_health
from sidecar.core import pipeline
from sidecar.core.model import ServerState, Snapshot
from sidecar.core.portmap import load_port_map
from sidecar.haproxy.inputs import load_template

PROFILE = os.environ.get("HYPOTHESIS_PROFILE", "ci")
HYPOTHESIS = settings(
    max_examples={"ci": 200, "deep": 5000}.get(PROFILE, 200),
    derandomize=PROFILE != "random",
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
    database=None,
)

MAX_INSTANCES = 4  # a served service has at most 3: a flood goes past the limit
SETTINGS = parse_settings(
    {"haproxy": {"runtime_dir": "/nonexistent/run"}, "status": {"enabled": False},
     "limits": {"max_instances": MAX_INSTANCES}}, "<test>", {},
)  # fmt: skip
PORT_MAP = load_port_map(SETTINGS.port_map_path)
INPUTS = pipeline.Inputs(SETTINGS, PORT_MAP, load_template(data.path(data.TEMPLATE)))
MAPPED = [(e.system, e.service) for e in PORT_MAP.entries][:40]
INVENTED = [("Gamma", "Alpha"), ("Gamma", "Beta"), ("Delta", "Omega"), ("Delta", "Sigma")]
AUTO_PORTS = st.integers(SETTINGS.ports.auto_low, SETTINGS.ports.auto_low + 40)


def entry(
    sid: str, node: str, address: str, port: int, path: tuple[str, str], created: int,
    dirac_port: int | None = None, protocol: str | None = None,
) -> dict[str, Any]:  # fmt: skip
    """One ``/v1/health/service/<name>`` entry, as Consul 1.8 answers it."""
    meta = {"dirac_system": path[0], "dirac_service": path[1]}
    if dirac_port is not None:
        meta["dirac_port"] = str(dirac_port)
    if protocol is not None:
        meta["dirac_protocol"] = protocol
    return {
        "Node": {"Node": node, "Address": "10.9.9.9"},
        "Service": {"ID": sid, "Address": address, "Port": port, "Tags": ["dirac"],
                    "Meta": meta, "CreateIndex": created},
        "Checks": [{"CheckID": "serfHealth", "Status": "passing"}],
    }  # fmt: skip


@st.composite
def served(draw: st.DrawFn) -> dict[str, list[dict[str, Any]]]:
    """Consul name -> entries: 1-5 well-formed DIRAC services, distinct paths."""
    paths = draw(st.lists(st.sampled_from(MAPPED + INVENTED), min_size=1, max_size=5, unique=True))
    catalog: dict[str, list[dict[str, Any]]] = {}
    for k, path in enumerate(paths):
        claim = draw(st.one_of(st.none(), AUTO_PORTS))
        count, address = draw(st.integers(1, 3)), f"10.0.{k}"
        catalog[f"good{k}"] = [
            entry(f"g{k}-{j}", f"node{j}", f"{address}.{j + 1}", 31000 + j, path, 1 + 10 * k + j,
                  claim)
            for j in range(count)
        ]
    return catalog


def snapshot_of(catalog: dict[str, list[dict[str, Any]]], index: int) -> Snapshot:
    return Snapshot(
        tuple(parse_health(name, index, raw) for name, raw in sorted(catalog.items())), index
    )


def held_ports(rendered: pipeline.Rendered) -> dict[str, int]:
    assert rendered.desired is not None
    return {b.name: b.public_port for b in rendered.desired.backends}


def ready(rendered: pipeline.Rendered) -> dict[str, set[tuple[str, int]]]:
    assert rendered.desired is not None
    return {
        b.name: {(s.address, s.port) for s in b.servers if s.state is ServerState.READY}
        for b in rendered.desired.backends
    }


@st.composite
def attacks(
    draw: st.DrawFn, catalog: dict[str, list[dict[str, Any]]], ports: list[int]
) -> dict[str, list[dict[str, Any]]]:
    """Registrations added to ``catalog`` (copied), every one later than what is served."""
    attacked = {name: list(entries) for name, entries in catalog.items()}
    victims = sorted(catalog)
    created = 1000
    for n in range(draw(st.integers(1, 4))):
        created += 1
        victim = draw(st.sampled_from(victims))
        first = catalog[victim][0]
        path = (first["Service"]["Meta"]["dirac_system"], first["Service"]["Meta"]["dirac_service"])
        other = draw(st.sampled_from([p for p in MAPPED + INVENTED if p != path]))
        stolen = draw(st.sampled_from(ports)) if ports else 20000
        kind = draw(st.integers(0, 6))
        if kind == 0:  # another service claims a served port
            attacked[f"evil{n}"] = [entry(f"e{n}", "evil", "192.0.2.9", 443, other, created,
                                          stolen)]  # fmt: skip
        elif kind == 1:  # a served service asked to move
            moved = draw(AUTO_PORTS)
            attacked[victim] = [*attacked[victim],
                                entry(f"e{n}", "evil", "192.0.2.9", 443, path, created, moved)]
        elif kind == 2:  # under the victim's Consul name, another DIRAC service
            attacked[victim] = [*attacked[victim],
                                entry(f"e{n}", "evil", "192.0.2.9", 443, other, created, stolen)]
        elif kind == 3:  # a served instance's identity (node + ID), pointing elsewhere
            service = first["Service"]
            attacked[f"evil{n}"] = [entry(service["ID"], first["Node"]["Node"], "192.0.2.9",
                                          443, other, created, stolen)]  # fmt: skip
        elif kind == 4:  # a port-map path registered again by someone else, on its own port
            attacked[f"evil{n}"] = [entry(f"e{n}", "evil", "192.0.2.9", 443, path, created,
                                          stolen)]  # fmt: skip
        elif kind == 5:  # a flood of instances of the victim, past max_instances
            attacked[f"evil{n}"] = [
                entry(f"e{n}-{j}", "evil", f"192.0.2.{j + 1}", 443, path, created + j)
                for j in range(MAX_INSTANCES + 2)
            ]
            created += MAX_INSTANCES + 2
        else:  # the other protocol (the served ones name none: dips)
            attacked[victim] = [*attacked[victim], entry(f"e{n}", "evil", "192.0.2.9", 443, path,
                                                         created, protocol="https")]  # fmt: skip
    return attacked


@HYPOTHESIS
@given(st.data())
def test_later_registrations_take_no_port_and_no_server(data_: st.DataObject) -> None:
    catalog = data_.draw(served())
    one = pipeline.render(snapshot_of(catalog, 10), INPUTS, None)
    before_ports, before_ready = held_ports(one), ready(one)  # declared ports bound, empty too
    serving = sorted(before_ports[b] for b, servers in before_ready.items() if servers)
    assert serving, "the served catalog must serve something for the property to bite"
    attacked = data_.draw(attacks(catalog, serving))
    two = pipeline.render(snapshot_of(attacked, 11), INPUTS, one)
    after_ports, after_ready = held_ports(two), ready(two)
    for backend, port in before_ports.items():
        assert after_ports.get(backend) == port, (backend, port, after_ports)
        lost = before_ready[backend] - after_ready.get(backend, set())
        assert not lost, (backend, lost)
    owners = {port: backend for backend, port in after_ports.items()}
    assert len(owners) == len(after_ports), "two backends on one public port"
    # a gateway that starts now, with no history, comes to the same ports and servers (the CS
    # is written by one of them for all: the fleet must agree)
    fresh = pipeline.render(snapshot_of(attacked, 11), INPUTS, None)
    assert held_ports(fresh) == after_ports
    assert ready(fresh) == after_ready


def test_a_port_steal_is_refused_and_reported() -> None:
    """The property is not vacuous: the served port is kept and the thief reported."""
    catalog = {"good0": [entry("g0", "node0", "10.0.0.1", 31000, INVENTED[0], 10, 20005)]}
    one = pipeline.render(snapshot_of(catalog, 10), INPUTS, None)
    assert held_ports(one)["Gamma_Alpha"] == 20005
    attacked = {**catalog,
                "evil": [entry("e", "evil", "192.0.2.9", 443, INVENTED[1], 1000, 20005)]}
    two = pipeline.render(snapshot_of(attacked, 11), INPUTS, one)
    assert held_ports(two)["Gamma_Alpha"] == 20005
    assert two.desired is not None
    assert any("20005" in str(p) for p in two.desired.problems)  # the loser is reported

