"""The drain state file in the runtime directory (adapter: one small JSON file).

``sidecar drain`` writes it, ``sidecar undrain`` removes it, the daemon reads it at every
status round and ``sidecar check`` reads it too (the policy: ``core.drain``). Being a file in
the runtime directory, a drained gateway stays drained across a daemon restart; it goes with
the directory at a reboot (``/run``), when every connection is gone anyway.
"""

from __future__ import annotations

import contextlib
from pathlib import Path

from sidecar.core.drain import DRAIN_FILE, DrainState, decode, encode
from sidecar.host.files import atomic_write


def drain_path(runtime_dir: Path) -> Path:
    return runtime_dir / DRAIN_FILE


def read_drain(runtime_dir: Path) -> tuple[DrainState | None, str]:
    """(the state, "") ; (None, "") when not drained; (None, why) when the file is unusable.

    An unreadable or malformed file is reported, and counts as not drained: the gateway keeps
    serving rather than leaving the fleet on a file nobody can explain.
    """
    path = drain_path(runtime_dir)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None, ""
    except OSError as exc:
        return None, f"cannot read {path}: {exc.strerror or exc}"
    try:
        return decode(text[:4096]), ""
    except ValueError as exc:
        return None, f"{path}: {exc}"


def write_drain(runtime_dir: Path, state: DrainState) -> None:
    """Write the state atomically, 0644, owned like the runtime directory (``sidecar drain``
    may run as root beside a daemon that runs as its own account)."""
    info = runtime_dir.stat()
    atomic_write(drain_path(runtime_dir), encode(state), mode=0o644,
                 owner=(info.st_uid, info.st_gid), lenient_owner=True)  # fmt: skip


def remove_drain(runtime_dir: Path) -> bool:
    """Remove the state; whether there was one."""
    with contextlib.suppress(FileNotFoundError):
        drain_path(runtime_dir).unlink()
        return True
    return False
