"""The container image's commands, run directly (no Docker engine runs in CI).

The Dockerfile's ENTRYPOINT + CMD (without tini) must start the daemon from $SIDECAR_CONFIG,
and its HEALTHCHECK command must exit 0 on a healthy gateway and 1 (never Docker's reserved 2)
when the gateway is not serving.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
from gatewaylib import Gateway
from helpers import REPO_ROOT, wait_until

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]
ALPHA = "Framework/GwAlpha"


def dockerfile() -> str:
    return (REPO_ROOT / "Dockerfile").read_text()


def exec_form(instruction: str) -> list[str]:
    match = re.search(rf"^{instruction} (\[.*\])$", dockerfile(), re.MULTILINE)
    assert match, f"no exec-form {instruction} in the Dockerfile"
    return list(json.loads(match.group(1)))


def healthcheck_command() -> str:
    text = dockerfile().replace("\\\n", " ")
    match = re.search(r"^HEALTHCHECK .*? CMD (.+)$", text, re.MULTILINE)
    assert match
    return match.group(1).strip()


def env_with(config: Path) -> dict[str, str]:
    bindir = str(Path(sys.executable).parent)
    env = {k: v for k, v in os.environ.items() if not k.startswith("CONSUL_")}
    env.update(SIDECAR_CONFIG=str(config), PATH=bindir + os.pathsep + env.get("PATH", ""))
    return env


def test_entrypoint_is_tini_then_sidecar_run() -> None:
    assert exec_form("ENTRYPOINT")[:3] == ["/usr/bin/tini", "--", "sidecar"]
    assert exec_form("CMD") == ["run"]
    assert re.search(r"^ENV SIDECAR_CONFIG=", dockerfile(), re.MULTILINE)


def test_healthcheck_maps_failures_to_1(gateway: Gateway, backend_factory) -> None:
    command = healthcheck_command()
    assert command.endswith("|| exit 1")
    gateway.register_backend("alpha", backend_factory(instance="a1"), "a1", ALPHA)
    gateway.wait_routed(gateway.ports[ALPHA], "a1")
    env = env_with(gateway.config_path)

    def health() -> int:
        return subprocess.run(["sh", "-c", command], env=env, capture_output=True,
                              timeout=60, check=False).returncode  # fmt: skip

    wait_until(lambda: health() == 0, 30, 0.5, "the health check to pass")
    gateway.stop_daemon()
    gateway.haproxy.stop()  # nothing serves: sidecar check says CRITICAL (2), Docker sees 1
    assert health() == 1


def test_entrypoint_command_runs_the_daemon(gateway_unstarted: Gateway) -> None:
    """ENTRYPOINT + CMD without tini, configured only through $SIDECAR_CONFIG."""
    gw = gateway_unstarted
    command = exec_form("ENTRYPOINT")[2:] + exec_form("CMD")
    proc = subprocess.Popen(command, env=env_with(gw.config_path), stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)  # fmt: skip
    gw.proc = proc  # the fixture stops it by PID
    wait_until(gw.ready, 30, 0.1, "the daemon to apply its first config")
    assert shlex.join(command) == "sidecar run"


def test_the_image_holds_the_wheel_not_the_source_tree() -> None:
    """Only the package sources reach the build stage; the runtime stage gets the wheel."""
    copies = re.findall(r"^COPY (.+)$", dockerfile(), re.MULTILINE)
    sources = [c for c in copies if not c.startswith("--from=")]
    assert sources == ["pyproject.toml README.md ./", "sidecar ./sidecar"]
    assert any(c.startswith("--from=wheel /dist/") for c in copies)
    assert "pip wheel" in dockerfile() and "install-deps.sh" not in dockerfile()
    ignored = (REPO_ROOT / ".dockerignore").read_text().split()
    assert ignored[ignored.index("*") + 1 :][:3] == ["!pyproject.toml", "!README.md", "!sidecar/"]
    assert re.search(r"^USER dirac-sidecar$", dockerfile(), re.MULTILINE), "runs as non-root"
