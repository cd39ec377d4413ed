"""CS file backend: write planned URL lists into a local DIRAC CS file (adapter, does I/O).

Sits in the apply stage: catalog -> desired -> render -> plan -> **apply**. The values and the
plan come from ``sidecar.dirac_cs.render``; the text is parsed and edited in place by
``dirac_cs.cstext`` (pure); this module reads the file, plans against it and writes it
atomically with a timestamped backup, fenced by the writer's lock right before the rename.
"""

from __future__ import annotations

import difflib
import errno
import logging
import os
import re
import stat
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from sidecar.base.errors import CSError, UnsafePathError
from sidecar.config.cs import CSSettings
from sidecar.dirac_cs.cstext import CSFile, edit_text, read_cs_file
from sidecar.dirac_cs.render import CSChange, CSOptions, plan_cs
from sidecar.host.files import atomic_write

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class CSSyncResult:
    path: Path
    changes: tuple[CSChange, ...] = ()  # empty: nothing was written
    backup: Path | None = None
    fenced: bool = False  # the fence said no right before the rename: nothing written

    @property
    def changed_paths(self) -> tuple[str, ...]:
        return tuple(change.path for change in self.changes)


def _prepare(
    path: str | Path, desired: CSOptions, settings: CSSettings
) -> tuple[CSFile, tuple[CSChange, ...], str]:
    before = read_cs_file(path)
    changes = plan_cs(before.lists(), desired, prune=settings.prune)
    text = edit_text(before, changes) if changes else before.text
    return before, changes, text


def diff_cs_file(path: str | Path, desired: CSOptions, settings: CSSettings) -> str:
    """The unified diff a sync would write to ``path`` (empty when nothing would change)."""
    before, _, text = _prepare(path, desired, settings)
    return "".join(
        difflib.unified_diff(
            before.text.splitlines(keepends=True),
            text.splitlines(keepends=True),
            fromfile=str(path),
            tofile=f"{path} (synced)",
        )
    )


# --- writing: backup, atomic replace, directory fsync ---


def _write_atomic(
    target: Path, data: bytes, like: os.stat_result, fence: Callable[[], bool] | None = None
) -> bool:
    """Replace ``target`` with ``data`` keeping the mode and owner of ``like`` (the CS file).

    Through ``atomic_write``: the directory may be writable by an account that would swap the
    temporary file for a symlink, so the temp file is created O_EXCL|O_NOFOLLOW and its mode
    and owner are set on the open descriptor, never by name. Unprivileged, the owner may not be
    kept: logged, as before. ``fence`` is asked right before the rename (False: not written).
    """
    owner = (like.st_uid, like.st_gid)
    mode = like.st_mode & 0o7777
    return atomic_write(target, data, mode, owner, lenient_owner=True, before_replace=fence)


def _backup(cs: CSFile, like: os.stat_result, settings: CSSettings, now: datetime) -> Path:
    """Copy the current content to ``<name>.<UTC time>.bak``, keep the newest N copies."""
    folder = Path(settings.backup_dir) if settings.backup_dir else cs.path.parent
    when = now if now.tzinfo else now.replace(tzinfo=UTC)
    stamp = when.astimezone(UTC).strftime("%Y%m%dT%H%M%S.%fZ")
    target, n = folder / f"{cs.path.name}.{stamp}.bak", 0
    while target.exists():
        n += 1
        target = folder / f"{cs.path.name}.{stamp}-{n}.bak"
    # 0600 whatever the CS file's mode: a copy for restoring by hand, not for DIRAC to read; it
    # keeps the file's owner, who may read the file itself anyway
    atomic_write(target, cs.text, 0o600, (like.st_uid, like.st_gid), lenient_owner=True)
    pattern = re.compile(re.escape(cs.path.name) + r"\.(\d{8}T\d{6}\.\d{6}Z)(?:-(\d+))?\.bak")
    found = [
        (m.group(1), int(m.group(2) or 0), p)
        for p in folder.iterdir()
        if (m := pattern.fullmatch(p.name))
    ]
    for *_, old in sorted(found)[: -settings.backups_keep]:
        try:
            old.unlink()
        except OSError as exc:
            log.warning("%s: cannot remove old backup: %s", old, exc.strerror)
    return target


def _reread(real: Path, path: str | Path) -> tuple[os.stat_result, bytes]:
    """The CS file's status and bytes now, from one descriptor that follows no symlink: ``real``
    was resolved when it was read, so a symlink there now was planted since (and would lend its
    target's mode and owner to the new file). O_NONBLOCK: a planted FIFO must not hang us."""
    try:
        fd = os.open(real, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise CSError(f"{path}: changed while being edited; nothing written") from None
        raise
    with os.fdopen(fd, "rb") as handle:
        info = os.fstat(handle.fileno())
        if not stat.S_ISREG(info.st_mode):
            raise CSError(f"{path}: changed while being edited; nothing written")
        return info, handle.read()


def sync_cs_file(
    path: str | Path,
    desired: CSOptions,
    settings: CSSettings,
    now: datetime,
    fence: Callable[[], bool] | None = None,
) -> CSSyncResult:
    """Bring the URL lists in the CS file at ``path`` to ``desired``; write only on a change.

    The file is left untouched (and ``CSError`` raised) when it cannot be parsed, the edit does
    not verify, the file changed while being edited, or it cannot be backed up or written.
    ``fence`` (the writer's lock, confirmed once more) is asked with the new file complete,
    right before it is renamed into place; False: nothing written, the new backup removed.
    """
    before, changes, text = _prepare(path, desired, settings)
    if not changes:
        return CSSyncResult(before.path)
    try:
        like, current = _reread(before.path, path)
        if not os.access(before.path, os.W_OK):
            raise CSError(f"{path}: not writable")
        if current != before.text.encode("utf-8"):
            raise CSError(f"{path}: changed while being edited; nothing written")
        backup = _backup(before, like, settings, now)
        if not _write_atomic(before.path, text.encode("utf-8"), like, fence):
            backup.unlink(missing_ok=True)  # the copy of a write that did not happen
            log.warning("CS %s: writer lock lost right before the write; nothing written", path)
            return CSSyncResult(before.path, fenced=True)
    except OSError as exc:
        raise CSError(f"{path}: cannot write: {exc.strerror or exc}") from None
    except UnsafePathError as exc:
        raise CSError(f"{path}: cannot write: {exc}") from None
    for change in changes:
        log.info("CS %s: %s", before.path, change)
    log.info("CS %s: %d option(s) written, backup %s", before.path, len(changes), backup)
    return CSSyncResult(before.path, changes, backup)
