"""The CS file's write against an account that may write the CS file's directory (issue part 7).

The attack: root syncs a CS file in a directory ``nobody`` can write; between the creation of
the temporary file and its chmod/chown, ``nobody`` renames it away and puts a symlink to a file
of root's in its place. A writer that set mode and owner by name would chmod that file and
chown it to the CS file's owner (``nobody``). The race is made deterministic by running the
swap, in a child process as ``nobody``, from the first fchown/fsync of a temporary file.
"""

from __future__ import annotations

import os
import secrets
import shutil
import stat
import tempfile
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from sidecar.base.errors import CSError
from sidecar.config.cs import CSSettings
from sidecar.core.model import Backend, DesiredState, Protocol
from sidecar.dirac_cs import file as dirac_cs
from sidecar.dirac_cs.cstext import read_cs_file
from sidecar.dirac_cs.file import sync_cs_file
from sidecar.dirac_cs.render import CSOptions, render_cs

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="reproduced as root vs nobody")

DATA = Path(__file__).resolve().parent.parent / "data" / "cs"
NOW = datetime(2025, 3, 1, 12, 0, 0, tzinfo=UTC)
NOBODY = 65534
SECRET = b"root:$6$secret:19000:0:99999:7:::\n"
DESIRED = DesiredState((Backend("Framework", "SystemAdministrator", Protocol.DIPS, 9162, ()),))


def desired_for(path: Path) -> CSOptions:
    return render_cs(DESIRED, ("dirac-gw9.example.org",), CSSettings(), read_cs_file(path).options)


def as_nobody(action: str, *args: str) -> None:
    """Run one file operation as ``nobody`` in a child; fail the test if it is not allowed."""
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        code = 1
        try:
            os.setgid(NOBODY)
            os.setuid(NOBODY)
            if action == "swap":  # rename the writer's temp file away, plant a symlink
                tmp, victim = args
                os.rename(tmp, tmp + ".stolen")
                os.symlink(victim, tmp)
            code = 0
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0, "nobody could not swap the file"


@pytest.fixture
def cs_dir() -> Iterator[Path]:
    """A directory ``nobody`` may write (no sticky bit: it may rename root's files in it)."""
    folder = Path(tempfile.mkdtemp(prefix="cs-race-"))
    folder.chmod(0o777)
    yield folder
    shutil.rmtree(folder)


@pytest.fixture
def cs_file(cs_dir: Path) -> Path:
    path = cs_dir / "dirac.cfg"
    shutil.copyfile(DATA / "dirac-v9.cfg", path)
    os.chown(path, NOBODY, NOBODY)
    path.chmod(0o640)
    return path


@pytest.fixture
def victim(tmp_path: Path) -> Path:
    """A file only root may change (/etc/shadow's stand-in), out of nobody's reach."""
    path = tmp_path / "shadow"
    path.write_bytes(SECRET)
    path.chmod(0o600)
    return path


def assert_untouched(victim: Path) -> None:
    info = victim.stat()
    assert victim.read_bytes() == SECRET
    assert (stat.S_IMODE(info.st_mode), info.st_uid, info.st_gid) == (0o600, 0, 0)


def assert_kept(cs_file: Path, original: bytes) -> None:
    info = cs_file.lstat()
    assert stat.S_ISREG(info.st_mode) and cs_file.read_bytes() == original
    assert (stat.S_IMODE(info.st_mode), info.st_uid, info.st_gid) == (0o640, NOBODY, NOBODY)


@pytest.mark.parametrize("attacked", [1, 2], ids=["backup", "cs-file"])
def test_swapped_temp_file_is_never_chmodded_or_installed(
    cs_file: Path, victim: Path, attacked: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen: list[str] = []
    real = {name: getattr(os, name) for name in ("fchown", "fchmod", "fsync")}

    def maybe_swap(fd: int) -> None:
        where = os.readlink(f"/proc/self/fd/{fd}")
        if where.endswith(".tmp") and where not in seen:
            seen.append(where)
            if len(seen) == attacked:
                as_nobody("swap", where, str(victim))

    def hooked(name: str) -> Callable[..., None]:
        def call(fd: int, *args: int) -> None:
            maybe_swap(fd)
            real[name](fd, *args)

        return call

    for name in real:  # whichever the writer calls first on the temp file (chmod comes after)
        monkeypatch.setattr(os, name, hooked(name))
    original, desired = cs_file.read_bytes(), desired_for(cs_file)
    with pytest.raises(CSError, match=r"cannot write: refused: .* was replaced before the rename"):
        sync_cs_file(cs_file, desired, CSSettings(), NOW)
    monkeypatch.undo()
    assert len(seen) == attacked
    assert_untouched(victim)
    assert_kept(cs_file, original)
    assert not list(cs_file.parent.glob(".*.tmp"))  # the planted symlink went too


def test_planted_symlink_at_the_temp_name_is_skipped(
    cs_file: Path, victim: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    names = iter(["a", "b", "a", "c"])  # each writer's first pick is the planted name
    monkeypatch.setattr(secrets, "token_hex", lambda n: next(names))
    traps = [cs_file.parent / f".dirac.cfg.{s}a.tmp" for s in ("20250301T120000.000000Z.bak.", "")]
    for trap in traps:  # the backup's temp name, then the CS file's
        trap.symlink_to(victim)
    result = sync_cs_file(cs_file, desired_for(cs_file), CSSettings(), NOW)
    assert result.changes and b"dirac-gw9.example.org" in cs_file.read_bytes()
    assert next(names, None) is None  # both writers drew past the trap
    assert all(trap.is_symlink() for trap in traps)
    assert_untouched(victim)


def test_cs_file_replaced_by_a_symlink_after_reading_is_refused(
    cs_file: Path, victim: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Same content behind the symlink: only the file type tells, and it is checked."""
    original = cs_file.read_bytes()
    victim.write_bytes(original)
    real_prepare = dirac_cs._prepare

    def prepare_then_swap(*args: object) -> object:
        prepared = real_prepare(*args)  # type: ignore[arg-type]
        cs_file.unlink()
        cs_file.symlink_to(victim)
        return prepared

    monkeypatch.setattr(dirac_cs, "_prepare", prepare_then_swap)
    with pytest.raises(CSError, match="changed while being edited"):
        sync_cs_file(cs_file, desired_for(cs_file), CSSettings(), NOW)
    assert cs_file.is_symlink() and victim.read_bytes() == original
    assert stat.S_IMODE(victim.stat().st_mode) == 0o600


def test_clean_sync_keeps_mode_and_owner_by_descriptor(
    cs_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The control: no attack, the umask at its loosest, path-based chmod/chown forbidden."""

    def forbidden(*args: object, **kwargs: object) -> None:
        raise AssertionError(f"path-based call {args!r}")

    for name in ("chmod", "chown", "lchown"):
        monkeypatch.setattr(os, name, forbidden)
    old = os.umask(0)
    try:
        result = sync_cs_file(cs_file, desired_for(cs_file), CSSettings(), NOW)
    finally:
        os.umask(old)
    monkeypatch.undo()
    info = cs_file.stat()
    assert (stat.S_IMODE(info.st_mode), info.st_uid, info.st_gid) == (0o640, NOBODY, NOBODY)
    assert b"dirac-gw9.example.org" in cs_file.read_bytes()
    assert result.backup is not None
    backup = result.backup.stat()
    assert (stat.S_IMODE(backup.st_mode), backup.st_uid, backup.st_gid) == (0o600, NOBODY, NOBODY)
    assert not list(cs_file.parent.glob(".*.tmp"))
