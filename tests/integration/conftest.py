"""The ``gateway`` fixture: a real ``sidecar run`` daemon driving a real HAProxy against the
module's Consul dev agent, on free loopback ports.

``gateway`` (function scope) writes a settings file in ``tmp_path`` (Consul address, the PKI's
gateway names, bind 127.0.0.1, a short runtime directory, a copy of the shipped template,
[ports.overrides] giving each service in ``gatewaylib.SERVICES`` a free public port, DEBUG
logs),
starts ``sidecar --config X run`` with its output in ``sidecar.log`` and waits until the daemon
has started HAProxy. It stops everything by PID at teardown: the daemon (SIGTERM, SIGKILL after
a bound), then HAProxy's master (``HAProxy(settings).stop()``), checks that no HAProxy process of
this runtime directory survives, and deregisters what the test registered (the Consul agent is
module-scoped and shared). On failure the daemon log tail is printed. ``gateway_unstarted`` is
the same without starting the daemon. The helpers (register, wait_routed, reload_count, kill,
sighup, log_text...) live on :class:`gatewaylib.Gateway`.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from gatewaylib import Gateway, unique_prefix

from devkit.consul_agent import ConsulAgent
from devkit.pki import DevPKI


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    report = yield
    setattr(item, f"rep_{report.when}", report)  # lets the fixture see whether the test failed
    return report


@pytest.fixture
def gateway_unstarted(
    request: pytest.FixtureRequest, tmp_path: Path, consul_agent: ConsulAgent, pki: DevPKI
) -> Iterator[Gateway]:
    """A configured gateway whose daemon is not started yet (call ``.start()``)."""
    gw = Gateway(tmp_path, consul_agent, pki, prefix=unique_prefix())
    try:
        yield gw
    finally:
        failed = any(
            getattr(getattr(request.node, f"rep_{w}", None), "failed", False)
            for w in ("setup", "call")
        )
        if failed:
            print(f"\n--- sidecar log tail ({gw.log_path}) ---\n{gw.log_tail()}")
        leaks = gw.teardown()
        assert not leaks, leaks


@pytest.fixture
def gateway(gateway_unstarted: Gateway) -> Gateway:
    """A running gateway: ``sidecar run`` with HAProxy started (see the module docstring)."""
    return gateway_unstarted.start()
