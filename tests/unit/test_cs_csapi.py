"""The CSAPI backend's commit loop, driven by a small fake CSAPI (no DIRAC, no mock.patch)."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

import pytest

from sidecar.base.errors import CSError
from sidecar.config.cs import CSBackend, CSSettings
from sidecar.core.model import Backend, DesiredState, Protocol
from sidecar.dirac_cs.csapi import CSAPIBackend, commit_with_retry, is_conflict
from sidecar.dirac_cs.render import render_cs

GW = ("dirac-gw1.example.org", "dirac-gw2.example.org")
DESIRED = DesiredState(
    (
        Backend("Framework", "SystemAdministrator", Protocol.DIPS, 9162, ()),
        Backend("WorkloadManagement", "JobMonitoring", Protocol.HTTPS, 21001, ()),
    )
)
SETTINGS = CSSettings(backend=CSBackend.CSAPI, csapi_retries=3)
NOW = datetime(2025, 3, 1, tzinfo=UTC)
CONFLICT = "Local and remote versions differ (2025-01-02 vs 2025-01-01). Cannot commit."


def ok(value: Any = None) -> dict[str, Any]:
    return {"OK": True, "Value": value}


def error(message: str) -> dict[str, Any]:
    return {"OK": False, "Message": message}


class FakeCSAPI:
    """Holds a flat CS; commits fail with the queued messages first, then succeed."""

    def __init__(self, master: dict[str, Any], commit_errors: list[str] | None = None) -> None:
        self.master = master  # the "remote" CS tree, shared across downloads
        self.tree: dict[str, Any] = {}
        self.commit_errors = list(commit_errors or [])
        self.calls: list[str] = []
        self.initialized = False

    def _download(self) -> None:
        import copy

        self.tree = copy.deepcopy(self.master)

    def initialize(self) -> Mapping[str, Any]:
        self.calls.append("initialize")
        if not self.initialized:  # like CSAPI: downloads once, then returns the cached result
            self._download()
            self.initialized = True
        return ok()

    def downloadCSData(self) -> Mapping[str, Any]:
        self.calls.append("downloadCSData")
        self._download()
        return ok()

    def getCurrentCFG(self) -> Mapping[str, Any]:
        return ok(self.tree)

    def _parent(self, path: str) -> tuple[dict[str, Any], str]:
        parts = path.strip("/").split("/")
        node = self.tree
        for part in parts[:-1]:
            node = node[part]
        return node, parts[-1]

    def createSection(self, sectionPath: str, comment: str = "") -> Mapping[str, Any]:
        self.calls.append(f"createSection {sectionPath}")
        parent, name = self._parent(sectionPath)
        parent.setdefault(name, {})
        return ok()

    def setOption(self, optionPath: str, optionValue: str) -> Mapping[str, Any]:
        self.calls.append(f"setOption {optionPath}")
        parent, name = self._parent(optionPath)
        parent[name] = optionValue
        return ok()

    def modifyValue(self, optionPath: str, newValue: str) -> Mapping[str, Any]:
        self.calls.append(f"modifyValue {optionPath}")
        parent, name = self._parent(optionPath)
        if name not in parent:
            return error(f"Trying to set {optionPath} but option does not exist")
        parent[name] = newValue
        return ok()

    def delOption(self, optionPath: str) -> Mapping[str, Any]:
        self.calls.append(f"delOption {optionPath}")
        parent, name = self._parent(optionPath)
        parent.pop(name, None)
        return ok()

    def commit(self) -> Mapping[str, Any]:
        self.calls.append("commit")
        if self.commit_errors:
            return error(self.commit_errors.pop(0))
        self.master = self.tree
        return ok()


def master() -> dict[str, Any]:
    return {
        "DIRAC": {"Configuration": {"Version": "2025-01-01"}},
        "Systems": {
            "Framework": {
                "URLs": {
                    "SystemAdministrator": "dips://old.example.org:9162/Framework/SystemAdministrator"
                }
            }
        },
    }


def render(current: Mapping[str, str]) -> Any:
    return render_cs(DESIRED, GW, SETTINGS, current)


def test_commit_creates_and_modifies() -> None:
    api = FakeCSAPI(master())
    result = commit_with_retry(api, render, lambda: True, retries=3)
    assert [c.path for c in result.changes] == [
        "/Systems/Framework/URLs/SystemAdministrator",
        "/Systems/WorkloadManagement/URLs/JobMonitoring",
    ]
    assert api.calls == [
        "initialize",
        "modifyValue /Systems/Framework/URLs/SystemAdministrator",
        "createSection /Systems/WorkloadManagement",
        "createSection /Systems/WorkloadManagement/URLs",
        "setOption /Systems/WorkloadManagement/URLs/JobMonitoring",
        "commit",
    ]
    urls = api.master["Systems"]["Framework"]["URLs"]["SystemAdministrator"]
    assert urls == ", ".join(f"dips://{g}:9162/Framework/SystemAdministrator" for g in GW)


def test_a_version_conflict_downloads_again_and_retries() -> None:
    api = FakeCSAPI(master(), commit_errors=[CONFLICT, "AutoMerge failed: option modified"])
    result = commit_with_retry(api, render, lambda: True, retries=3)
    assert len(result.changes) == 2
    assert api.calls.count("commit") == 3
    assert api.calls.count("downloadCSData") == 2
    assert api.calls.index("downloadCSData") == api.calls.index("commit") + 1


def test_conflicts_give_up_after_the_retries() -> None:
    api = FakeCSAPI(master(), commit_errors=[CONFLICT] * 5)
    with pytest.raises(CSError, match="still conflicting after 3 attempts"):
        commit_with_retry(api, render, lambda: True, retries=3)
    assert api.calls.count("commit") == 3
    assert api.master == master()


def test_other_commit_errors_are_not_retried() -> None:
    api = FakeCSAPI(master(), commit_errors=["Names differ: Server is A and remote is B"])
    with pytest.raises(CSError, match="Names differ"):
        commit_with_retry(api, render, lambda: True, retries=3)
    assert api.calls.count("commit") == 1


def test_nothing_to_change_commits_nothing() -> None:
    api = FakeCSAPI(master())
    commit_with_retry(api, render, lambda: True, retries=3)
    again = commit_with_retry(FakeCSAPI(api.master), render, lambda: True, retries=3)
    assert again.changes == ()


def test_lock_lost_before_the_commit_stages_nothing() -> None:
    api = FakeCSAPI(master())
    result = commit_with_retry(api, render, lambda: False, retries=3)
    assert result.blocked and len(result.changes) == 2
    assert api.calls == ["initialize"]


def test_failed_initialize_is_reported() -> None:
    class NoCredentials(FakeCSAPI):
        def initialize(self) -> Mapping[str, Any]:
            return error("Cannot locate client credentials")

    with pytest.raises(CSError, match="initialize: Cannot locate client credentials"):
        commit_with_retry(NoCredentials(master()), render, lambda: True, retries=3)


def test_backend_uses_a_fresh_api_per_sync() -> None:
    made: list[FakeCSAPI] = []
    remote = master()

    def factory() -> FakeCSAPI:
        made.append(FakeCSAPI(remote))
        return made[-1]

    backend = CSAPIBackend(SETTINGS, factory)
    changes, _, text = backend.plan(render)
    assert len(changes) == 2 and "~ /Systems/Framework/URLs/SystemAdministrator" in text
    assert backend.sync(render, lambda: True, NOW).changes == changes
    assert len(made) == 2 and backend.fingerprint() is None


def test_is_conflict() -> None:
    assert is_conflict(CONFLICT)
    assert is_conflict("Cannot AutoMerge: Section /x cannot be merged")
    assert not is_conflict("Names differ: Server is A and remote is B")
