"""The sample backend (``devkit.backend``) as a child process, so that tests and the demo can
kill it like a real service, and the command line that starts it.
"""

from __future__ import annotations

import select
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Self

from devkit.backend import DEFAULT_NAME
from devkit.procs import stop_process


class BackendProcess:
    """The backend as a child process (so tests can kill it like a real service)."""

    def __init__(self, args: Sequence[str], log: Path | None = None) -> None:
        self.args = list(args)
        self.log = log
        self.port = 0
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int:
        if self._proc is None:
            raise RuntimeError("not started")
        return self._proc.pid

    def start(self, timeout: float = 15.0) -> Self:
        """Spawn and wait (bounded) for ``READY <port>``."""
        cmd = [sys.executable, "-m", "devkit.backend", *self.args]
        err = self.log.open("ab") if self.log is not None else None
        try:
            self._proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=err)
        finally:
            if err is not None:
                err.close()
        assert self._proc.stdout is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and self._proc.poll() is None:
            ready, _, _ = select.select([self._proc.stdout], [], [], 0.2)
            if ready:
                line = self._proc.stdout.readline().decode().strip()
                if line.startswith("READY "):
                    self.port = int(line.split()[1])
                    return self
        self.stop()
        raise RuntimeError(f"backend did not become ready: {' '.join(cmd)}")

    def alive(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def stop(self, timeout: float = 5.0) -> None:
        """SIGTERM by PID, then SIGKILL after ``timeout``."""
        proc = self._proc
        try:
            stop_process(proc, timeout)
        finally:
            if proc is not None and proc.stdout is not None:
                proc.stdout.close()

    def kill(self) -> None:
        """SIGKILL by PID at once (a crashed service)."""
        if self._proc is not None and self._proc.poll() is None:
            self._proc.kill()
            self._proc.wait(5.0)


def backend_args(
    listen: str,
    cert: Path | str,
    key: Path | str,
    ca_dir: Path | str | None = None,
    ca_file: Path | str | None = None,
    name: str = DEFAULT_NAME,
    instance: str | None = None,
) -> list[str]:
    """Command-line arguments for ``python -m devkit.backend``."""
    args = ["--listen", listen, "--cert", str(cert), "--key", str(key), "--name", name]
    if ca_dir is not None:
        args += ["--ca-dir", str(ca_dir)]
    if ca_file is not None:
        args += ["--ca-file", str(ca_file)]
    if instance is not None:
        args += ["--instance", instance]
    return args
