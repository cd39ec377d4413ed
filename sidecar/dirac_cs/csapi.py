"""CSAPI backend: commit URL lists through DIRAC's own ``CSAPI`` (adapter, optional extra).

Sits in the apply stage as the alternative to the CS file backend, chosen with
``dirac_cs.backend = "csapi"`` and usable only where DIRAC is importable
(``DIRAC.ConfigurationSystem.Client.CSAPI``); the host needs a certificate with the
``CSAdministrator`` property. The CS writer gives it a renderer and the lock confirmation; it
holds no policy.

One sync: ``initialize()`` (which downloads the master's CS), read the current values
(``getCurrentCFG``), render and plan, then ``createSection`` for missing parents,
``setOption`` (new option) / ``modifyValue`` (existing) / ``delOption`` (pruned) per change,
and ``commit()``. A commit the master rejects because the CS changed meanwhile ("Local and
remote versions differ", or a failed AutoMerge) is retried from a fresh download, up to
``csapi_retries`` times. The re-download is ``downloadCSData()``: ``initialize()`` returns its
cached result once it has succeeded and would not download again.
"""

from __future__ import annotations

import importlib
import logging
from collections.abc import Callable, Mapping
from datetime import datetime
from typing import Any, Protocol

from sidecar.base.errors import CSError
from sidecar.config.cs import CSSettings
from sidecar.core.cfgtree import flatten_into as _flatten
from sidecar.core.model import Problem
from sidecar.dirac_cs.backend import BackendResult, Renderer
from sidecar.dirac_cs.render import CSChange, plan_cs, split_values

log = logging.getLogger(__name__)
Result = Mapping[str, Any]  # DIRAC's S_OK / S_ERROR dictionaries
CONFLICT_MARKERS = ("versions differ", "automerge")


class CSAPILike(Protocol):
    """The part of ``DIRAC.ConfigurationSystem.Client.CSAPI.CSAPI`` used here (its names)."""

    def initialize(self) -> Result: ...
    def downloadCSData(self) -> Result: ...  # noqa: N802
    def getCurrentCFG(self) -> Result: ...  # noqa: N802
    def createSection(self, sectionPath: str, comment: str = "") -> Result: ...  # noqa: N802,N803
    def setOption(self, optionPath: str, optionValue: str) -> Result: ...  # noqa: N802,N803
    def modifyValue(self, optionPath: str, newValue: str) -> Result: ...  # noqa: N802,N803
    def delOption(self, optionPath: str) -> Result: ...  # noqa: N802,N803
    def commit(self) -> Result: ...


_dirac_ready = False


def dirac_csapi() -> CSAPILike:
    """A real CSAPI (DIRAC initialised once per process); ``CSError`` without DIRAC."""
    global _dirac_ready
    try:
        dirac = importlib.import_module("DIRAC")
        module = importlib.import_module("DIRAC.ConfigurationSystem.Client.CSAPI")
    except ImportError as exc:
        raise CSError(f"dirac_cs.backend = csapi needs DIRAC installed: {exc}") from None
    if not _dirac_ready and callable(getattr(dirac, "initialize", None)):
        dirac.initialize()  # v9: loads dirac.cfg, selects the host certificate
        _dirac_ready = True
    api: CSAPILike = module.CSAPI()
    return api


def _check(result: Result, what: str) -> Any:
    if not result.get("OK"):
        raise CSError(f"CSAPI {what}: {result.get('Message', 'failed')}")
    return result.get("Value")


def current_options(api: CSAPILike) -> tuple[dict[str, str], set[str]]:
    """Every option of the downloaded CS (path -> raw value) and every section path."""
    cfg = _check(api.getCurrentCFG(), "getCurrentCFG")
    tree = cfg.getAsDict() if hasattr(cfg, "getAsDict") else cfg
    if not isinstance(tree, Mapping):
        raise CSError("CSAPI getCurrentCFG: not a configuration tree")
    options: dict[str, str] = {}
    sections: set[str] = set()
    _flatten(tree, "", options, sections)
    return options, sections


def stage(api: CSAPILike, changes: tuple[CSChange, ...], sections: set[str]) -> None:
    """Queue ``changes`` in the CSAPI modificator (nothing reaches the master before commit)."""
    known = set(sections)
    for change in changes:
        if change.new is None:
            _check(api.delOption(change.path), f"delOption {change.path}")
            continue
        value = ", ".join(change.new)
        if change.old is not None:
            _check(api.modifyValue(change.path, value), f"modifyValue {change.path}")
            continue
        parts = change.path.split("/")[1:-1]
        for depth in range(1, len(parts) + 1):
            section = "/" + "/".join(parts[:depth])
            if section not in known:
                _check(api.createSection(section), f"createSection {section}")
                known.add(section)
        _check(api.setOption(change.path, value), f"setOption {change.path}")


def is_conflict(message: str) -> bool:
    lowered = message.lower()
    return any(marker in lowered for marker in CONFLICT_MARKERS)


def commit_with_retry(
    api: CSAPILike,
    render: Renderer,
    may_write: Callable[[], bool],
    retries: int,
    prune: bool = False,
) -> BackendResult:
    """Render, stage and commit; on a version conflict download again and retry."""
    _check(api.initialize(), "initialize")
    for attempt in range(1, retries + 1):
        if attempt > 1:
            _check(api.downloadCSData(), "downloadCSData")
        raw, sections = current_options(api)
        options = render(raw)
        lists = {path: split_values(value) for path, value in raw.items()}
        changes = plan_cs(lists, options, prune=prune)
        if not changes:
            return BackendResult((), options.problems)
        if not may_write():
            return BackendResult(changes, options.problems, blocked=True)
        stage(api, changes, sections)
        result = api.commit()
        if result.get("OK"):
            for change in changes:
                log.info("CS (CSAPI): %s", change)
            return BackendResult(changes, options.problems)
        message = str(result.get("Message", "commit failed"))
        if not is_conflict(message):
            raise CSError(f"CSAPI commit: {message}")
        log.warning("CSAPI commit conflict (attempt %d of %d): %s", attempt, retries, message)
    raise CSError(f"CSAPI commit: still conflicting after {retries} attempts")


class CSAPIBackend:
    """The CS writer's backend over CSAPI; ``api_factory`` is replaceable for tests."""

    def __init__(
        self, settings: CSSettings, api_factory: Callable[[], CSAPILike] = dirac_csapi
    ) -> None:
        self.settings = settings
        self._factory = api_factory

    def fingerprint(self) -> object:
        return None  # the master CS cannot be watched cheaply: the writer resyncs periodically

    def plan(self, render: Renderer) -> tuple[tuple[CSChange, ...], tuple[Problem, ...], str]:
        api = self._factory()
        _check(api.initialize(), "initialize")
        raw, _ = current_options(api)
        options = render(raw)
        lists = {path: split_values(value) for path, value in raw.items()}
        changes = plan_cs(lists, options, prune=self.settings.prune)
        return changes, options.problems, "".join(f"~ {change}\n" for change in changes)

    def sync(self, render: Renderer, may_write: Callable[[], bool], now: datetime) -> BackendResult:
        api = self._factory()  # a fresh CSAPI downloads the current CS
        return commit_with_retry(api, render, may_write, self.settings.csapi_retries,
                                 self.settings.prune)  # fmt: skip
