"""Stopping child processes by PID (demo, tests, benchmarks): one way, everywhere."""

from __future__ import annotations

import signal
import subprocess
from typing import Any


def stop_process(
    proc: subprocess.Popen[Any] | None, timeout: float = 10.0, sig: int = signal.SIGTERM
) -> int | None:
    """Send ``sig`` (SIGTERM), SIGKILL after ``timeout``; returns the exit code (None: no proc)."""
    if proc is None:
        return None
    if proc.poll() is None:
        proc.send_signal(sig)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout)
    return proc.returncode
