"""Processes by PID: is one alive, what a pidfile names, what a process runs (adapter).

One place for what the HAProxy manager and ``sidecar check`` both ask. A zombie counts as gone,
and a PID reused after a process started counts as gone when its start time is given.
"""

from __future__ import annotations

from pathlib import Path

import psutil


def pid_alive(pid: int, started: float = 0.0) -> bool:
    """The PID runs (not a zombie) and was not reused after ``started`` (epoch seconds)."""
    try:
        proc = psutil.Process(pid)
        if proc.status() == psutil.STATUS_ZOMBIE:
            return False
        return not started or proc.create_time() <= started + 2.0
    except (psutil.NoSuchProcess, psutil.ZombieProcess):
        return False
    except psutil.AccessDenied:
        return True


def pid_from_file(path: Path) -> int | None:
    """The first number in a pidfile (None: missing, unreadable or not a number)."""
    try:
        return int(path.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def cmdline_has(pid: int, word: bytes) -> bool:
    """Whether the process's command line contains ``word`` (False when it cannot be read)."""
    try:
        return word in Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False
