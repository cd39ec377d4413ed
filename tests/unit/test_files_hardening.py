"""Files in a hostile environment: atomic writes set mode and owner on the open file, never by
name; the runtime directory is refused when it is a symlink or another uid's; settings and
templates another account could change are refused. (The CS file's write: test_cs_file_race.)"""

from __future__ import annotations

import os
import secrets
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from sidecar import data
from sidecar.base.errors import ConfigError, TemplateError, UnsafePathError
from sidecar.config.loader import load_settings
from sidecar.haproxy.inputs import load_template
from sidecar.host.files import atomic_copy, atomic_write, ensure_private_dir

NOBODY = 65534
ROOT = os.geteuid() == 0
needs_root = pytest.mark.skipif(not ROOT, reason="chown to another uid needs root")


def mode_of(path: Path) -> int:
    return stat.S_IMODE(path.lstat().st_mode)


@pytest.fixture
def umask0() -> Iterator[None]:
    """The most permissive umask: any mode that comes out right was set, not inherited."""
    old = os.umask(0)
    yield
    os.umask(old)


@pytest.fixture
def no_chmod_by_name(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make every path-based chmod/chown fail the test (Path.chmod goes through os.chmod)."""

    def forbidden(*args: object, **kwargs: object) -> None:
        raise AssertionError(f"path-based call {args!r}")

    for name in ("chmod", "lchmod", "chown", "lchown"):
        if hasattr(os, name):
            monkeypatch.setattr(os, name, forbidden)


# --- atomic_write / atomic_copy ---------------------------------------------------------------


@pytest.mark.usefixtures("umask0", "no_chmod_by_name")
def test_atomic_write_modes_ignore_the_umask(tmp_path: Path) -> None:
    atomic_write(tmp_path / "secret", "x")
    atomic_write(tmp_path / "public", b"y", mode=0o644)
    assert mode_of(tmp_path / "secret") == 0o600
    assert mode_of(tmp_path / "public") == 0o644
    assert (tmp_path / "public").read_bytes() == b"y"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["public", "secret"]


@needs_root
@pytest.mark.usefixtures("no_chmod_by_name")
def test_atomic_write_owner_is_set_on_the_descriptor(tmp_path: Path) -> None:
    target = tmp_path / "owned"
    atomic_write(target, "x", mode=0o640, owner=(NOBODY, NOBODY))
    info = target.stat()
    assert (info.st_uid, info.st_gid, mode_of(target)) == (NOBODY, NOBODY, 0o640)


def test_atomic_write_owner_refused_unless_lenient(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    def denied(fd: int, uid: int, gid: int) -> None:
        raise PermissionError(1, "Operation not permitted")

    monkeypatch.setattr(os, "fchown", denied)
    target = tmp_path / "f"
    with pytest.raises(PermissionError):
        atomic_write(target, "x", owner=(NOBODY, NOBODY))
    assert list(tmp_path.iterdir()) == []  # the temporary file went with the failure
    atomic_write(target, "x", owner=(NOBODY, NOBODY), lenient_owner=True)
    assert target.read_text() == "x" and "cannot keep owner 65534:65534" in caplog.text


def test_a_planted_temp_name_is_never_opened(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Whoever can write the directory plants a symlink at the name the writer draws first."""
    victim = tmp_path / "victim"
    victim.write_text("precious\n")
    victim.chmod(0o600)
    names = iter(["planted", "fresh"])
    monkeypatch.setattr(secrets, "token_hex", lambda n: next(names))
    trap = tmp_path / ".cfg.planted.tmp"
    trap.symlink_to(victim)
    atomic_write(tmp_path / "cfg", "new\n", mode=0o644)
    assert (tmp_path / "cfg").read_text() == "new\n"
    assert trap.is_symlink() and victim.read_text() == "precious\n"
    assert mode_of(victim) == 0o600


def test_a_temp_file_swapped_before_the_rename_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    victim, target = tmp_path / "victim", tmp_path / "cfg"
    victim.write_text("precious\n")
    victim.chmod(0o600)
    target.write_text("old\n")
    real_fchmod = os.fchmod

    def swap_then_fchmod(fd: int, mode: int) -> None:  # the race, made deterministic
        (tmp,) = tmp_path.glob(".cfg.*.tmp")
        tmp.rename(tmp_path / "stolen")
        tmp.symlink_to(victim)
        real_fchmod(fd, mode)

    monkeypatch.setattr(os, "fchmod", swap_then_fchmod)
    with pytest.raises(UnsafePathError, match=r"refused: .*\.cfg\..*\.tmp was replaced"):
        atomic_write(target, "new\n", mode=0o644)
    assert target.read_text() == "old\n" and not target.is_symlink()
    assert victim.read_text() == "precious\n" and mode_of(victim) == 0o600


@pytest.mark.usefixtures("umask0")
def test_atomic_copy_is_0600_whatever_the_source(tmp_path: Path) -> None:
    src, dst = tmp_path / "haproxy.cfg", tmp_path / "haproxy.cfg.last-good"
    src.write_text("global\n")
    src.chmod(0o644)
    atomic_copy(src, dst)
    assert dst.read_text() == "global\n" and mode_of(dst) == 0o600
    atomic_copy(src, dst, mode=0o640)  # over an existing copy, still atomic
    assert mode_of(dst) == 0o640


# --- ensure_private_dir -----------------------------------------------------------------------


@pytest.mark.usefixtures("umask0")
def test_private_dir_is_created_0700_and_tightened(tmp_path: Path) -> None:
    made = tmp_path / "a" / "run"
    ensure_private_dir(made)
    assert mode_of(made) == 0o700
    loose = tmp_path / "loose"
    loose.mkdir(mode=0o755)
    ensure_private_dir(loose)
    assert mode_of(loose) == 0o700


def test_symlinked_runtime_dir_is_refused(tmp_path: Path) -> None:
    real, link = tmp_path / "elsewhere", tmp_path / "run"
    real.mkdir(mode=0o755)
    real.chmod(0o755)
    link.symlink_to(real)
    with pytest.raises(UnsafePathError, match=f"refused: {link} is a symlink"):
        ensure_private_dir(link)
    assert mode_of(real) == 0o755  # not followed, not tightened


@needs_root
def test_foreign_owned_runtime_dir_is_refused(tmp_path: Path) -> None:
    run = tmp_path / "run"
    run.mkdir(mode=0o755)
    os.chown(run, NOBODY, NOBODY)
    message = f"refused: {run} is owned by uid {NOBODY}, not 0"
    with pytest.raises(UnsafePathError, match=message):
        ensure_private_dir(run)
    assert mode_of(run) & 0o755 == 0o755


def test_runtime_path_that_is_a_file_is_refused(tmp_path: Path) -> None:
    (tmp_path / "run").write_text("")
    with pytest.raises(UnsafePathError, match="is not a directory"):
        ensure_private_dir(tmp_path / "run")


# --- settings files and templates ------------------------------------------------------------


def settings_file(tmp_path: Path) -> Path:
    path = tmp_path / "sidecar.toml"
    path.write_text("[log]\nlevel = 'INFO'\n")
    path.chmod(0o644)
    return path


def template_file(tmp_path: Path) -> Path:
    path = tmp_path / "t.j2"
    path.write_text("global\n")
    path.chmod(0o644)
    return path


def refusal(path: Path, kind: str) -> str:
    """The refusal message loading ``path`` as ``kind`` gives; "" when it loads."""
    try:
        if kind == "settings":
            load_settings(str(path), env={})
        else:
            load_template(path)
    except ConfigError as exc:
        assert (exc.source, exc.key) == (str(path), "")
        return str(exc)
    except TemplateError as exc:
        return str(exc)
    return ""


MAKERS = {"settings": settings_file, "template": template_file}


@pytest.mark.parametrize("kind", MAKERS)
def test_root_owned_0644_is_accepted(tmp_path: Path, kind: str) -> None:
    assert refusal(MAKERS[kind](tmp_path), kind) == ""


@pytest.mark.parametrize("kind", MAKERS)
def test_writable_by_others_is_refused(tmp_path: Path, kind: str) -> None:
    path = MAKERS[kind](tmp_path)
    path.chmod(0o664 | stat.S_IWOTH)
    assert refusal(path, kind) == f"{path}: refused: writable by others (mode 666)"


@needs_root
@pytest.mark.parametrize("kind", MAKERS)
def test_owned_by_another_user_is_refused(tmp_path: Path, kind: str) -> None:
    path = MAKERS[kind](tmp_path)
    os.chown(path, NOBODY, 0)
    expected = f"{path}: refused: owned by uid {NOBODY} (only root or uid 0 may own it)"
    assert refusal(path, kind) == expected
    link = tmp_path / "link"  # the open file is judged, not the name
    link.symlink_to(path)
    assert "owned by uid 65534" in refusal(link, kind)


@needs_root
@pytest.mark.parametrize("kind", MAKERS)
def test_group_writable_needs_a_trusted_group(tmp_path: Path, kind: str) -> None:
    path = MAKERS[kind](tmp_path)
    path.chmod(0o664)
    assert refusal(path, kind) == ""  # root's group (and ours): accepted
    os.chown(path, 0, NOBODY)
    assert refusal(path, kind) == f"{path}: refused: writable by group {NOBODY} (mode 664)"
    path.chmod(0o644)  # the foreign group may only read: accepted
    assert refusal(path, kind) == ""


def test_shipped_template_loads() -> None:
    load_template(data.path(data.TEMPLATE))
