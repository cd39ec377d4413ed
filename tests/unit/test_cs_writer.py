"""CSWriter: when it may write (enabled, fresh data, lock held and confirmed), and that it never
raises. A fake lock is passed in; the CS file is a real copy in tmp_path."""

from __future__ import annotations

import os
import shutil
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from factories import validated

from sidecar.base.errors import CatalogError
from sidecar.config.cs import CSSettings
from sidecar.core.model import Backend, DesiredState, Protocol
from sidecar.dirac_cs.backend import FileBackend
from sidecar.dirac_cs.writer import RESYNC, CSWriter, CSWriteStatus

DATA = Path(__file__).resolve().parent.parent / "data" / "cs"
GW = ("dirac-gw1.example.org", "dirac-gw2.example.org")
NOW = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)
DESIRED = DesiredState((Backend("Framework", "SystemAdministrator", Protocol.DIPS, 9162, ()),))


class FakeLock:
    def __init__(self, held: bool = True, confirms: bool = True) -> None:
        self.held = held
        self.confirms = confirms
        self.session: str | None = "s1"
        self.confirmed = 0

    def confirm(self) -> bool:
        self.confirmed += 1
        if not self.confirms:
            self.held = False
        return self.held


@pytest.fixture
def cs_file(tmp_path: Path) -> Path:
    target = tmp_path / "dirac.cfg"
    shutil.copyfile(DATA / "dirac-v9.cfg", target)
    return target


def writer(path: Path, lock: FakeLock, **cs: Any) -> CSWriter:
    settings = validated(CSSettings, {"enabled": True, "file": str(path), **cs})
    return CSWriter(settings, lock, lambda: GW)


def state(path: Path) -> tuple[bytes, int]:
    return path.read_bytes(), path.stat().st_mtime_ns


def test_disabled_not_fresh_not_holder_write_nothing(cs_file: Path) -> None:
    before = state(cs_file)
    lock = FakeLock()
    assert writer(cs_file, lock, enabled=False).sync(DESIRED, True, NOW).status is (
        CSWriteStatus.DISABLED
    )
    assert writer(cs_file, lock).sync(DESIRED, False, NOW).status is CSWriteStatus.NOT_FRESH
    outcome = writer(cs_file, FakeLock(held=False)).sync(DESIRED, True, NOW)
    assert outcome.status is CSWriteStatus.NOT_HOLDER and outcome.ok
    assert state(cs_file) == before
    assert lock.confirmed == 0


def test_writes_once_then_nothing(cs_file: Path) -> None:
    lock = FakeLock()
    w = writer(cs_file, lock)
    first = w.sync(DESIRED, True, NOW)
    assert first.status is CSWriteStatus.WRITTEN, first
    assert first.changes == (
        "/Systems/Framework/URLs/SystemAdministrator: "
        "dips://dirac-01.example.org:9162/Framework/SystemAdministrator, "
        "dips://dirac-02.example.org:9162/Framework/SystemAdministrator -> "
        + ", ".join(f"dips://{g}:9162/Framework/SystemAdministrator" for g in GW),
    )
    assert Path(first.backup).is_file() and lock.confirmed == 2  # before, and as the fence
    after = state(cs_file)
    assert w.sync(DESIRED, True, NOW).status is CSWriteStatus.UNCHANGED  # memo: no I/O
    assert writer(cs_file, lock).sync(DESIRED, True, NOW).status is CSWriteStatus.UNCHANGED
    assert state(cs_file) == after and lock.confirmed == 2


def test_lock_lost_right_before_the_write(cs_file: Path) -> None:
    before = state(cs_file)
    lock = FakeLock(confirms=False)
    outcome = writer(cs_file, lock).sync(DESIRED, True, NOW)
    assert outcome.status is CSWriteStatus.NOT_HOLDER
    assert state(cs_file) == before and not lock.held


def test_an_external_edit_is_seen_at_once_and_resync_is_periodic(cs_file: Path) -> None:
    w = writer(cs_file, FakeLock())
    assert w.sync(DESIRED, True, NOW).status is CSWriteStatus.WRITTEN
    original = (DATA / "dirac-v9.cfg").read_bytes()
    cs_file.write_bytes(original)  # someone puts the old URLs back
    os.utime(cs_file, ns=(1, 1))
    assert w.sync(DESIRED, True, NOW).status is CSWriteStatus.WRITTEN
    later = NOW + timedelta(seconds=RESYNC + 1)
    assert w.sync(DESIRED, True, later).status is CSWriteStatus.UNCHANGED


def test_failures_are_reported_not_raised(cs_file: Path, tmp_path: Path) -> None:
    bad = tmp_path / "bad.cfg"
    bad.write_text("Systems\n{\n  Framework\n  {\n")
    before = bad.read_bytes()
    outcome = writer(bad, FakeLock()).sync(DESIRED, True, NOW)
    assert outcome.status is CSWriteStatus.FAILED and not outcome.ok
    assert "bad.cfg" in outcome.error and bad.read_bytes() == before

    missing = writer(tmp_path / "missing.cfg", FakeLock()).sync(DESIRED, True, NOW)
    assert missing.status is CSWriteStatus.FAILED and "cannot read" in missing.error

    def no_consul() -> tuple[str, ...]:
        raise CatalogError("GET /v1/health/service/dirac-gateway: ConnectionError")

    settings = CSSettings(enabled=True, file=str(cs_file))
    outcome = CSWriter(settings, FakeLock(), no_consul).sync(DESIRED, True, NOW)
    assert outcome.status is CSWriteStatus.FAILED and "dirac-gateway" in outcome.error


def test_no_gateway_never_writes_an_empty_list(cs_file: Path) -> None:
    before = state(cs_file)
    settings = CSSettings(enabled=True, file=str(cs_file))
    outcome = CSWriter(settings, FakeLock(), lambda: ()).sync(DESIRED, True, NOW)
    assert outcome.status is CSWriteStatus.UNCHANGED
    assert any("no usable gateway name" in p for p in outcome.problems)
    assert state(cs_file) == before


def test_new_settings_reset_the_memo(cs_file: Path) -> None:
    w = writer(cs_file, FakeLock())
    assert w.sync(DESIRED, True, NOW).status is CSWriteStatus.WRITTEN
    w.settings = replace(w.settings, failover_names=("dirac-fo.example.org",))
    outcome = w.sync(DESIRED, True, NOW)
    assert outcome.status is CSWriteStatus.WRITTEN
    assert outcome.changes[0].startswith("/Systems/Framework/FailoverURLs/SystemAdministrator")


def test_diff_needs_no_lock(cs_file: Path) -> None:
    w = writer(cs_file, FakeLock(held=False))
    changes, _, text = w.diff(DESIRED)
    assert [c.path for c in changes] == ["/Systems/Framework/URLs/SystemAdministrator"]
    assert text.startswith("---") and "+      SystemAdministrator = dips://dirac-gw1" in text
    assert isinstance(w._backend, FileBackend)
