"""``sidecar check`` as a separate process against a real gateway (daemon, HAProxy, Consul)."""

from __future__ import annotations

import json
import os
import subprocess

from gatewaylib import Gateway, sidecar_command
from helpers import wait_until

ALPHA = "Framework/GwAlpha"


def check(gateway: Gateway, *args: str) -> tuple[int, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CONSUL_")}
    env.pop("SIDECAR_CONFIG", None)
    cmd = [*sidecar_command(), "--config", str(gateway.config_path), "check", *args]
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=60, check=False)
    return done.returncode, done.stdout.strip()


def test_check_ok_then_critical_without_haproxy_then_ok_again(
    gateway: Gateway, backend_factory
) -> None:
    backend = backend_factory(host="backend1", name=ALPHA, instance="a1")
    gateway.register_backend("alpha", backend, "a1")
    gateway.wait_routed(gateway.ports[ALPHA], "a1")

    code, out = check(gateway)
    assert code == 0, out
    assert out.startswith("SIDECAR OK - 1 services, 1 servers ready")
    code, out = check(gateway, "--json")
    data = json.loads(out)
    assert (code, data["code"], data["status"]) == (0, 0, "OK")
    # the three declared test services ([ports.overrides]) are bound from the start
    assert data["details"]["frontends"]["message"] == "3 ports listening"

    # HAProxy killed and the daemon stopped, so that nothing restores it: CRITICAL.
    gateway.stop_daemon()
    gateway.haproxy.stop()
    code, out = check(gateway)
    assert code == 2, out
    assert out.startswith("SIDECAR CRITICAL - ")
    assert "haproxy master not answering" in out

    # The daemon back: it restarts HAProxy and the check passes again.
    gateway.start()
    gateway.wait_routed(gateway.ports[ALPHA], "a1")
    code, out = wait_until(lambda: (r := check(gateway))[0] == 0 and r, 20, 0.5, "check OK")
    assert out.startswith("SIDECAR OK")
