"""Atomic file writes (adapter).

Write to a temporary file in the same directory (so the rename never crosses filesystems),
fsync it, rename it over the target, then fsync the directory: a reader, HAProxy or a crash
sees the old file or the new one, never half of one.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path


def atomic_write(path: Path, data: str | bytes, mode: int = 0o600) -> None:
    payload = data.encode("utf-8") if isinstance(data, str) else data
    directory = path.parent
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=directory)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(payload)
            handle.flush()
            os.fsync(handle.fileno())
        Path(tmp).chmod(mode)
        Path(tmp).replace(path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    fsync_dir(directory)


def remove_stale_temps(directory: Path) -> list[str]:
    """Delete temp files a writer killed between write and rename left (call at startup only,
    before any writer runs); returns their names."""
    removed = []
    for path in directory.glob(".*.tmp"):
        path.unlink(missing_ok=True)
        removed.append(path.name)
    return sorted(removed)


def fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def read_text(path: Path) -> str | None:
    """The file's text, or None when it does not exist."""
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None


def ensure_private_dir(path: Path) -> None:
    """Create ``path`` owner-only (sockets and state live here); tighten it if it exists."""
    path.mkdir(parents=True, exist_ok=True)
    if path.stat().st_mode & 0o077:
        path.chmod(0o700)
