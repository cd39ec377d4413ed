"""Hostile catalogs through the real ``haproxy -c`` and a real daemon (issue 6).

The generators are those of ``tests/unit/test_hostile_catalog.py``; here a derandomized sample
(30 catalogs, ``HYPOTHESIS_PROFILE=deep``: 300) is rendered with the shipped template and
validated by HAProxy itself (``HAProxy(settings).validate``), and a real ``sidecar run`` is fed
hostile registrations through a real Consul agent while a good service keeps being served.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import pytest
from gatewaylib import Gateway, settled
from helpers import wait_until
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sidecar.core import pipeline
from sidecar.haproxy.process import HAProxy
from tests.unit.test_hostile_catalog import (
    CANARY,
    anchor_entry,
    assert_config_clean,
    catalogs,
    make_inputs,
    prelude_of,
    snapshot_of,
)

pytestmark = [pytest.mark.integration]

EXAMPLES = 300 if os.environ.get("HYPOTHESIS_PROFILE") == "deep" else 30
ALPHA, BETA = "Framework/GwAlpha", "Framework/GwBeta"


@pytest.fixture(scope="module")
def checker(tmp_path_factory: pytest.TempPathFactory) -> tuple[pipeline.Inputs, HAProxy]:
    inputs = make_inputs(tmp_path_factory.mktemp("hostile"))
    haproxy = HAProxy(inputs.settings)
    haproxy.prepare()
    return inputs, haproxy


@pytest.mark.timeout(120)
def test_hostile_catalogs_pass_haproxy_check(
    checker: tuple[pipeline.Inputs, HAProxy],
) -> None:
    inputs, haproxy = checker
    prelude = prelude_of(inputs)
    seen: list[int] = []

    @settings(max_examples=EXAMPLES, derandomize=True, deadline=None, database=None,
              suppress_health_check=list(HealthCheck))  # fmt: skip
    @given(catalogs())
    def check(catalog: dict[str, Any]) -> None:
        rendered = pipeline.render(snapshot_of(catalog), inputs, None)
        assert_config_clean(rendered.config, prelude)
        haproxy.validate(rendered.config)  # raises ValidationFailed with HAProxy's words
        seen.append(len(rendered.config))

    check()
    assert len(seen) >= EXAMPLES // 2


@pytest.mark.timeout(60)
@pytest.mark.parametrize("address", ["10.0.0.1", "2001:db8::7"])
def test_one_catalog_address_form_passes_haproxy_check(
    checker: tuple[pipeline.Inputs, HAProxy], address: str
) -> None:
    inputs, haproxy = checker
    entry = anchor_entry()
    entry["Service"]["ID"] = "other"
    entry["Service"]["Address"] = address
    entry["Service"]["Meta"] = {"dirac_system": "Framework", "dirac_service": "Other"}
    rendered = pipeline.render(
        snapshot_of({"anchor": [anchor_entry()], "other": [entry]}), inputs, None
    )
    assert f" {address}:9135 " in rendered.config or f"[{address}]:9135" in rendered.config
    haproxy.validate(rendered.config)


@pytest.mark.timeout(60)
def test_a_host_name_that_does_not_resolve_is_skipped_and_reported(
    checker: tuple[pipeline.Inputs, HAProxy],
) -> None:
    """HAProxy never sees a catalog host name: the sidecar resolves and checks it (issue 11)."""
    inputs, haproxy = checker
    entry = anchor_entry()
    entry["Service"]["ID"] = "other"
    entry["Service"]["Address"] = "unresolvable-backend.invalid"
    entry["Service"]["Meta"] = {"dirac_system": "Framework", "dirac_service": "Other"}
    rendered = pipeline.render(
        snapshot_of({"anchor": [anchor_entry()], "other": [entry]}), inputs, None
    )
    assert "unresolvable-backend.invalid" not in rendered.config
    assert rendered.desired is not None
    assert any("does not resolve" in str(p) for p in rendered.desired.problems)
    haproxy.validate(rendered.config)


@pytest.mark.timeout(90)
def test_daemon_serves_good_services_next_to_hostile_registrations(
    gateway: Gateway, backend_factory
) -> None:
    """Hostile registrations in Consul itself: reported, never rendered, the rest served."""
    gw = gateway
    good = backend_factory(instance="good1")
    gw.register_backend("alpha", good, "good1", ALPHA)
    gw.wait_routed(gw.ports[ALPHA], "good1")
    hostile_meta = [
        {"dirac_system": "Framework", "dirac_service": f"GwBeta\n    server x 6.6.6.6:1 #{CANARY}"},
        {"dirac_system": f"Framework #{CANARY}", "dirac_service": "GwBeta"},
        {"dirac_system": "Framework", "dirac_service": "GwBeta", "dirac_port": f"0 {CANARY}"},
        {"dirac_system": "Framework", "dirac_service": "GwBeta", "dirac_protocol": "tcp"},
        {"dirac_system": "Framework", "dirac_service": "GwBeta", "dirac_port": "65536"},
    ]
    for n, meta in enumerate(hostile_meta):
        gw.register("beta", f"evil{n}", 1000 + n, dirac=None, meta=meta)
    gw.register("gamma", "evil-addr", 1010, dirac="Framework/GwBeta",
                address=f"1.2.3.4 {CANARY}")  # fmt: skip
    wait_until(
        lambda: sum(1 for p in gw.status().get("problems", []) if "evil" in p) >= 6,
        20, 0.1, "all six hostile instances reported",
    )  # fmt: skip
    # A good change after the hostile ones still applies.
    second = backend_factory(instance="good2")
    gw.register_backend("alpha", second, "good2", ALPHA)
    gw.wait_routed(gw.ports[ALPHA], "good2")
    config = settled(gw.haproxy_cfg)
    assert CANARY not in config and "6.6.6.6" not in config
    assert gw.status()["last_apply_ok"] is True


@pytest.mark.timeout(90)
def test_unresolvable_dns_name_does_not_block_other_services(
    gateway: Gateway, backend_factory
) -> None:
    """A registration with a well-formed but unresolvable host name (anyone can make one)."""
    gw = gateway
    gw.register_backend("alpha", backend_factory(instance="a1"), "a1", ALPHA)
    gw.wait_routed(gw.ports[ALPHA], "a1")
    gw.register("beta", "dns1", 9135, dirac=BETA, address="no-such-host.invalid")
    gw.register_backend("gamma", backend_factory(instance="g1"), "g1", "DataManagement/GwGamma")
    gw.wait_routed(gw.ports["DataManagement/GwGamma"], "g1")
    gw.wait_routed(gw.ports[ALPHA], "a1", timeout=5)
    wait_until(lambda: gw.status().get("last_apply_ok"), 10, 0.1, "a successful apply")


@pytest.mark.timeout(90)
def test_dns_named_instance_is_served_without_reload_churn(
    gateway_unstarted: Gateway, backend_factory
) -> None:
    """An instance registered by host name: served, and drift repair does not reload forever."""
    gw = gateway_unstarted
    gw.write_config(gw.config_text() + "\n[apply]\ndrift_interval = 0.5\n")
    gw.start()
    backend = backend_factory(instance="byname")
    gw.register("alpha", "byname", backend.port, dirac=ALPHA, address="localhost")
    gw.wait_routed(gw.ports[ALPHA], "byname")
    reloads = gw.reload_count()
    drift_lines = gw.log_text().count("drift")
    deadline = time.monotonic() + 3.0  # six drift checks
    while time.monotonic() < deadline:
        time.sleep(0.25)
    assert gw.reload_count() == reloads, gw.log_text().count("drift") - drift_lines
    gw.wait_routed(gw.ports[ALPHA], "byname", timeout=5)


def test_generated_catalogs_are_not_trivial(tmp_path: Path) -> None:
    """The sample holds services besides the anchor (else the haproxy -c run proves little)."""
    inputs = make_inputs(tmp_path)
    counts: list[int] = []

    @settings(max_examples=EXAMPLES, derandomize=True, deadline=None, database=None,
              suppress_health_check=list(HealthCheck))  # fmt: skip
    @given(catalogs())
    def count(catalog: dict[str, Any]) -> None:
        rendered = pipeline.render(snapshot_of(catalog), inputs, None)
        assert rendered.desired is not None
        counts.append(len(rendered.desired.backends) - 1)

    count()
    assert sum(1 for c in counts if c > 0) >= len(counts) // 5, counts


_ = st  # strategies come from the unit module
