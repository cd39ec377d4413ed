"""A start (no HAProxy runs) skips ``haproxy -c`` and puts the files back when it fails.

The master parses its file before binding anything, so the start is its own check; what the
applier must keep is the contract around it: the files on disk are those of before a failed
start (the last good config, or none), and ``haproxy -c`` then names what is wrong. A stub
HAProxy records the calls; no process is started.
"""

from __future__ import annotations

from pathlib import Path
from typing import cast

import pytest

from sidecar.base.errors import HAProxyError, ValidationFailed
from sidecar.core.model import DesiredState
from sidecar.core.plan import Plan, PlanKind, Rendered
from sidecar.haproxy.applier import Applier
from sidecar.haproxy.process import HAProxy


class StubHAProxy:
    def __init__(self, directory: Path, start_fails: bool, config_bad: bool) -> None:
        self.dir = directory
        self.config = directory / "haproxy.cfg"
        self.calls: list[str] = []
        self._start_fails, self._config_bad = start_fails, config_bad

    def prepare(self) -> None:
        self.calls.append("prepare")

    def proc(self) -> None:
        return None  # nothing runs

    def start(self) -> None:
        self.calls.append("start:" + self.config.read_text())
        if self._start_fails:
            raise HAProxyError("haproxy exited (code 1)")

    def validate(self, text: str) -> None:
        self.calls.append("validate")
        if self._config_bad:
            raise ValidationFailed("haproxy -c rejected the config: [ALERT] unknown keyword")


class Settings:
    class haproxy:  # mirrors settings.haproxy
        manage = True


def applier(tmp_path: Path, start_fails: bool, config_bad: bool) -> tuple[Applier, StubHAProxy]:
    stub = StubHAProxy(tmp_path, start_fails, config_bad)
    stub.settings = Settings  # type: ignore[attr-defined]
    return Applier(cast(HAProxy, stub)), stub


def target(text: str) -> Rendered:
    return Rendered(DesiredState(backends=()), text, None)


def start(app: Applier, text: str) -> tuple[bool, str]:
    result = app.apply(Plan(PlanKind.START, reason="start"), target(text), None)
    return result.ok, result.message


def test_a_start_runs_no_haproxy_c(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    app, stub = applier(tmp_path, start_fails=False, config_bad=False)
    monkeypatch.setattr(app, "_verify", lambda target: None)
    ok, _ = start(app, "new config")
    assert ok and stub.calls == ["prepare", "start:new config"]
    assert stub.config.read_text() == "new config" and app.applied_path.exists()


def test_a_failed_start_leaves_no_file_where_there_was_none(tmp_path: Path) -> None:
    app, stub = applier(tmp_path, start_fails=True, config_bad=True)
    ok, message = start(app, "bad config")
    assert not ok and "haproxy -c rejected" in message  # the check names the fault
    assert not stub.config.exists() and not app.applied_path.exists()


def test_a_failed_start_puts_the_last_good_files_back(tmp_path: Path) -> None:
    app, stub = applier(tmp_path, start_fails=True, config_bad=False)
    stub.config.write_text("good config")
    app.applied_path.write_text('{"version": 2}')
    ok, message = start(app, "new config")
    assert not ok and "haproxy exited" in message  # the config passed: the start's own error
    assert stub.config.read_text() == "good config"
    assert app.applied_path.read_text() == '{"version": 2}'
