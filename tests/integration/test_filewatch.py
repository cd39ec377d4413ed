"""Issue 5: a change to the settings file is applied like SIGHUP, an invalid one is refused."""

from __future__ import annotations

import pytest
from gatewaylib import Gateway
from helpers import free_port

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]

ALPHA = "Framework/GwAlpha"


def test_settings_file_change_is_applied_and_a_bad_one_refused(
    gateway: Gateway, backend_factory
) -> None:
    gateway.register_backend("alpha", backend_factory(instance="a1"), "a1", ALPHA)
    old_port = gateway.ports[ALPHA]
    gateway.wait_routed(old_port, "a1")
    # An operator edits the file (no SIGHUP): the new public port is applied.
    gateway.ports[ALPHA] = free_port()
    gateway.write_config()
    gateway.wait_routed(gateway.ports[ALPHA], "a1")
    gateway.wait_log("configuration reloaded")
    assert gateway.try_call(old_port, timeout=1.0) is None
    # A broken edit: reported, the running configuration stays.
    good = gateway.haproxy_cfg.read_text()
    gateway.config_path.write_text(gateway.config_text().replace("[gateway]", "[gateway\n"))
    gateway.wait_log("configuration not reloaded")
    assert gateway.alive() and gateway.haproxy_cfg.read_text() == good
    gateway.wait_routed(gateway.ports[ALPHA], "a1", timeout=5)
    gateway.write_config()  # the fixture's teardown reads the settings again
