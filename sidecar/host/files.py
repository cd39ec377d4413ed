"""Atomic, race-free file writes and the private runtime directory (adapter).

Sits in the apply stage: every file the sidecar writes goes through ``atomic_write`` (HAProxy's
config, its state and the last-good/failed copies in the runtime directory, the status file,
the CS file and its backups through ``sidecar.dirac_cs.file``).

Write to a temporary file in the same directory (so the rename never crosses filesystems),
fsync it, rename it over the target, then fsync the directory: a reader, HAProxy or a crash
sees the old file or the new one, never half of one.

The directory may be writable by another account (a CS file's directory often is), so nothing
here acts on a name once the file exists: the temporary file is created with
``O_CREAT|O_EXCL|O_NOFOLLOW`` (a name planted in advance, symlink or not, is never opened), its
owner and mode are set with ``fchown``/``fchmod`` on the open descriptor (a name swapped for a
symlink afterwards cannot redirect them to another file), and every step is relative to one
open descriptor of the directory (a parent swapped midway cannot split the write).
"""

from __future__ import annotations

import contextlib
import errno
import fnmatch
import logging
import os
import secrets
import stat
from collections.abc import Callable
from pathlib import Path

from sidecar.base.errors import UnsafePathError

log = logging.getLogger(__name__)

# O_EXCL: never reuse an existing name; O_NOFOLLOW: spelled out although O_EXCL already fails on
# any symlink, dangling or not; O_CLOEXEC: HAProxy, started by us, must not inherit it.
_TEMP_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC
_TEMP_TRIES = 100


def atomic_write(
    path: Path,
    data: str | bytes,
    mode: int = 0o600,
    owner: tuple[int, int] | None = None,
    *,
    lenient_owner: bool = False,
    durable: bool = True,
    before_replace: Callable[[], bool] | None = None,
) -> bool:
    """Replace ``path`` with ``data`` atomically, the new file with ``mode`` (the umask plays no
    part) and, when given, ``owner`` as (uid, gid).

    ``lenient_owner``: when the process may not give the file that owner, log it and keep the
    writer's (the CS file's behaviour for an unprivileged run); otherwise ``PermissionError``.
    ``durable=False`` skips the fsyncs: the rename stays atomic for every reader and for a
    crash of the writer, only a power loss may keep the older file (for files rewritten on
    every runtime change, which HAProxy itself would not survive either).
    ``before_replace``: asked once the new file is complete, right before the rename (the CS
    writer's lock fence); False leaves ``path`` untouched and returns False.
    """
    payload = data.encode("utf-8") if isinstance(data, str) else data
    dir_fd = os.open(path.parent, _DIR_FLAGS)
    try:
        fd, name = _create_temp(dir_fd, path)
        try:
            _fill(fd, payload, mode, owner, lenient_owner, path, durable)
            _still_ours(fd, name, dir_fd, path)
            if before_replace is not None and not before_replace():
                os.unlink(name, dir_fd=dir_fd)
                return False
            os.replace(name, path.name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(name, dir_fd=dir_fd)
            raise
        finally:
            os.close(fd)
        if durable:
            os.fsync(dir_fd)  # the rename itself survives a crash
    finally:
        os.close(dir_fd)
    return True


def atomic_copy(src: Path, dst: Path, mode: int = 0o600) -> None:
    """Copy the content of ``src`` to ``dst`` through ``atomic_write``: atomic, and ``mode``
    whatever ``src``'s mode or the umask (``shutil.copyfile`` would give the umask's)."""
    atomic_write(dst, src.read_bytes(), mode)


def _create_temp(dir_fd: int, path: Path) -> tuple[int, str]:
    """A new empty 0600 file beside ``path``, open for writing; returns (fd, name in the dir)."""
    for _ in range(_TEMP_TRIES):
        name = f".{path.name}.{secrets.token_hex(6)}.tmp"  # what is_temp recognises
        try:
            return os.open(name, _TEMP_FLAGS, 0o600, dir_fd=dir_fd), name
        except FileExistsError:
            continue  # taken, by chance or planted by someone: draw another name
        except OSError as exc:  # name the whole path in messages (read-only, full, denied)
            exc.filename = str(path.parent / name)
            raise
    raise FileExistsError(errno.EEXIST, "no free temporary file name", str(path.parent))


def _fill(
    fd: int,
    payload: bytes,
    mode: int,
    owner: tuple[int, int] | None,
    lenient: bool,
    path: Path,
    durable: bool = True,
) -> None:
    view = memoryview(payload)
    while view:
        view = view[os.write(fd, view) :]
    if owner is not None:
        try:
            os.fchown(fd, *owner)
        except PermissionError:
            if not lenient:
                raise
            log.warning("%s: cannot keep owner %d:%d", path, *owner)
    os.fchmod(fd, mode)  # after fchown, which clears set-id bits
    if durable:
        os.fsync(fd)


def _still_ours(fd: int, name: str, dir_fd: int, path: Path) -> None:
    """Refuse to rename a temporary name that no longer is our file.

    Only an account that may write the directory can swap it, and such an account could rename
    its own file over ``path`` anyway; the check keeps the sidecar from installing it for them.
    """
    mine = os.fstat(fd)
    there = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
    if (mine.st_dev, mine.st_ino) != (there.st_dev, there.st_ino):
        raise UnsafePathError(f"refused: {path.parent / name} was replaced before the rename")


TEMP_PATTERN = ".*.tmp"


def is_temp(path: Path) -> bool:
    """Whether ``path`` is named like an atomic write's temporary file (``_create_temp``)."""
    return fnmatch.fnmatchcase(path.name, TEMP_PATTERN)


def remove_stale_temps(directory: Path) -> list[str]:
    """Delete temp files a writer killed between write and rename left (call at startup only,
    before any writer runs); returns their names."""
    removed = []
    for path in directory.glob(TEMP_PATTERN):
        path.unlink(missing_ok=True)  # unlink removes a symlink itself, never its target
        removed.append(path.name)
    return sorted(removed)


def fsync_dir(directory: Path) -> None:
    fd = os.open(directory, _DIR_FLAGS)
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
    """Make ``path`` a directory only this account can use (HAProxy's sockets, config and
    state live here): create it 0700, tighten an existing one to 0700.

    Refuses (``UnsafePathError``) a symlink and a directory another uid owns: whoever controls
    it could read the admin socket or swap the config HAProxy loads.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    with contextlib.suppress(FileExistsError):
        path.mkdir(mode=0o700)  # the umask can only tighten it
    info = os.lstat(path)
    if stat.S_ISLNK(info.st_mode):
        raise UnsafePathError(f"refused: {path} is a symlink")
    if not stat.S_ISDIR(info.st_mode):
        raise UnsafePathError(f"refused: {path} is not a directory")
    try:  # the checks that matter, on the directory itself: it cannot be swapped in between
        fd = os.open(path, _DIR_FLAGS | os.O_NOFOLLOW)
    except OSError as exc:
        if exc.errno in (errno.ELOOP, errno.ENOTDIR):
            raise UnsafePathError(f"refused: {path} changed while being checked") from None
        raise
    try:
        info = os.fstat(fd)
        if info.st_uid != os.geteuid():
            raise UnsafePathError(
                f"refused: {path} is owned by uid {info.st_uid}, not {os.geteuid()}"
            )
        if info.st_mode & 0o077:
            os.fchmod(fd, 0o700)
    finally:
        os.close(fd)
