"""``sidecar register`` as a child process for the integration tests, plus agent queries.

:class:`RegisterProcess` starts ``sidecar --config X register ...`` with its output in a log
file and stops it by PID (SIGTERM, SIGKILL after a bound). ``agent_services`` and
``agent_checks`` read the local agent's view (``/v1/agent/services``, ``/v1/agent/checks``).
"""

from __future__ import annotations

import os
import signal
import subprocess
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import requests
from gatewaylib import sidecar_command

from devkit.procs import stop_process

STOP_TIMEOUT = 10.0


def write_settings(path: Path, consul_addr: str, tag: str = "dirac") -> Path:
    path.write_text(f'[consul]\naddress = "{consul_addr}"\ntag = "{tag}"\n')
    return path


def clean_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """The test's environment without CONSUL_*, SIDECAR_CONFIG, DIRACSYSCONFIG, PORT_* and
    NOMAD_*, plus ``extra``."""
    drop = ("CONSUL_", "PORT_", "NOMAD_")
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(drop) and k not in ("SIDECAR_CONFIG", "DIRACSYSCONFIG")
    }
    env.update(extra or {})
    return env


class RegisterProcess:
    """One ``sidecar register`` child process."""

    def __init__(
        self,
        settings: Path,
        args: Sequence[str],
        log: Path,
        env: Mapping[str, str] | None = None,
    ) -> None:
        self.cmd = [*sidecar_command(), "--config", str(settings), "register", *args]
        self.log = log
        self.env = clean_env(env)
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> RegisterProcess:
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(
                self.cmd, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                env=self.env,
            )  # fmt: skip
        return self

    def run(self, timeout: float = 30.0) -> subprocess.CompletedProcess[str]:
        """Run to completion (``--dry-run`` or an error) and return its output."""
        return subprocess.run(
            self.cmd, capture_output=True, text=True, env=self.env, timeout=timeout, check=False
        )

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self, sig: int = signal.SIGTERM, timeout: float = STOP_TIMEOUT) -> int | None:
        """Send ``sig`` by PID, SIGKILL after ``timeout``; returns the exit code."""
        return stop_process(self.proc, timeout, sig)

    def output(self) -> str:
        try:
            return self.log.read_text(errors="replace")
        except OSError:
            return ""


def agent_services(agent_addr: str) -> dict[str, dict[str, Any]]:
    resp = requests.get(f"{agent_addr}/v1/agent/services", timeout=5)
    resp.raise_for_status()
    services: dict[str, dict[str, Any]] = resp.json()
    return services


def agent_checks(agent_addr: str) -> dict[str, dict[str, Any]]:
    resp = requests.get(f"{agent_addr}/v1/agent/checks", timeout=5)
    resp.raise_for_status()
    checks: dict[str, dict[str, Any]] = resp.json()
    return checks


def check_status(agent_addr: str, check_id: str) -> tuple[str, str]:
    """``(status, output)`` of one check, ``("absent", "")`` when the agent has none."""
    check = agent_checks(agent_addr).get(check_id)
    if check is None:
        return "absent", ""
    return str(check["Status"]), str(check.get("Output", ""))
