"""The CS backends' common shape, and the file backend (adapter, does I/O).

A backend reads the CS, plans the URL-list changes a renderer asks for, and writes them when
the writer's lock is still confirmed. Two exist: the local CS file (here, on top of
``dirac_cs.file``) and DIRAC's CSAPI (``dirac_cs.csapi``). ``dirac_cs.writer`` picks one.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Protocol

from sidecar.config.cs import CSSettings
from sidecar.core.model import Problem
from sidecar.dirac_cs.cstext import read_cs_file
from sidecar.dirac_cs.file import diff_cs_file, sync_cs_file
from sidecar.dirac_cs.render import CSChange, CSOptions, plan_cs

Renderer = Callable[[Mapping[str, str]], CSOptions]  # current raw options -> wanted lists


@dataclass(frozen=True, slots=True)
class BackendResult:
    changes: tuple[CSChange, ...] = ()  # written (or, with ``blocked``, due but not written)
    problems: tuple[Problem, ...] = ()
    blocked: bool = False  # the lock was not confirmed right before the write
    backup: str = ""


class CSBackend(Protocol):
    def fingerprint(self) -> object:
        """Something that changes when the CS may have changed (None: unknown)."""

    def plan(self, render: Renderer) -> tuple[tuple[CSChange, ...], tuple[Problem, ...], str]:
        """The changes a sync would make, its problems, and a human-readable diff."""

    def sync(self, render: Renderer, may_write: Callable[[], bool], now: datetime) -> BackendResult:
        """Write the changes (asking ``may_write`` right before); raises ``SidecarError``."""


class FileBackend:
    """The local CS file, edited in place by ``dirac_cs.file`` (atomic, with a backup)."""

    def __init__(self, settings: CSSettings) -> None:
        self.settings = settings

    def fingerprint(self) -> object:
        try:
            st = Path(self.settings.file).stat()
        except OSError:
            return None
        return (st.st_ino, st.st_size, st.st_mtime_ns)

    def _options(self, render: Renderer) -> tuple[CSOptions, tuple[CSChange, ...]]:
        cs = read_cs_file(self.settings.file)
        options = render(cs.options)
        return options, plan_cs(cs.lists(), options, prune=self.settings.prune)

    def plan(self, render: Renderer) -> tuple[tuple[CSChange, ...], tuple[Problem, ...], str]:
        options, changes = self._options(render)
        text = diff_cs_file(self.settings.file, options, self.settings) if changes else ""
        return changes, options.problems, text

    def sync(self, render: Renderer, may_write: Callable[[], bool], now: datetime) -> BackendResult:
        options, changes = self._options(render)
        if not changes:
            return BackendResult((), options.problems)
        if not may_write():
            return BackendResult(changes, options.problems, blocked=True)
        # may_write twice: before planning the write (no backup for a non-holder) and as the
        # fence right before the rename (a writer frozen in between has lost the lock by then)
        result = sync_cs_file(self.settings.file, options, self.settings, now, fence=may_write)
        if result.fenced:
            return BackendResult(changes, options.problems, blocked=True)
        backup = str(result.backup) if result.backup else ""
        return BackendResult(result.changes, options.problems, backup=backup)
