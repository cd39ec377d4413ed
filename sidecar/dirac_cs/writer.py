"""The CS writer: desired state -> the DIRAC CS, by the lock holder only (adapter, does I/O).

Sits at the end of the apply stage: catalog -> desired -> render -> plan -> **apply**. The
daemon calls ``sync`` after each cycle and on each heartbeat; the writer decides nothing about
URLs itself (``dirac_cs.render`` does) and only enforces when writing is allowed:

- not when ``dirac_cs.enabled`` is false;
- not when the catalog data is not fresh (``fresh`` False: Consul unreachable or incomplete);
- not when this sidecar does not hold the one-writer lock, confirmed with Consul right before
  the write (``lock.confirm()``); a lost lock stops writing at once;
- never an empty list (``render_cs`` produces none).

It never raises into the daemon: every failure becomes a ``CSWriteOutcome`` with the error
text. A sync whose inputs (CS-relevant part of the desired state, gateway names, the backend's
fingerprint of the CS, the lock session) are those of the last successful sync is skipped
without I/O, except every ``RESYNC`` seconds. Backends: the CS file (default) and DIRAC's CSAPI
(``sidecar.dirac_cs.csapi``, imported only when configured).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Protocol

from sidecar.base.errors import SidecarError
from sidecar.config.cs import CSSettings
from sidecar.core.model import DesiredState, Problem
from sidecar.dirac_cs.backend import CSBackend, FileBackend, Renderer
from sidecar.dirac_cs.render import CSChange, render_cs

log = logging.getLogger(__name__)
RESYNC = 600.0  # seconds: re-read the CS even when nothing seems to have changed

NamesProvider = Callable[[], tuple[str, ...]]


class WriterLock(Protocol):
    @property
    def held(self) -> bool: ...

    @property
    def session(self) -> str | None: ...

    def confirm(self) -> bool: ...


def backend_for(settings: CSSettings) -> CSBackend:
    """The configured backend; the CSAPI one is imported only when asked for."""
    if settings.backend == "csapi":
        from sidecar.dirac_cs.csapi import CSAPIBackend

        return CSAPIBackend(settings)
    return FileBackend(settings)


class CSWriteStatus(StrEnum):
    DISABLED = "disabled"
    NOT_FRESH = "not-fresh"  # catalog data not fresh: nothing written
    NOT_HOLDER = "not-holder"  # another gateway holds the lock: nothing written
    UNCHANGED = "unchanged"
    WRITTEN = "written"
    FAILED = "failed"


@dataclass(frozen=True, slots=True)
class CSWriteOutcome:
    status: CSWriteStatus
    changes: tuple[str, ...] = ()  # "path: old -> new", one per option written
    problems: tuple[str, ...] = ()
    error: str = ""
    backup: str = ""

    @property
    def ok(self) -> bool:
        return self.status is not CSWriteStatus.FAILED


def cs_shape(desired: DesiredState) -> tuple[tuple[str, str, str, int], ...]:
    """The part of the desired state the CS depends on (servers come and go without it)."""
    return tuple(
        sorted((b.system, b.service, b.protocol.value, b.public_port) for b in desired.listed)
    )


class CSWriter:
    def __init__(
        self,
        settings: CSSettings,
        lock: WriterLock,
        gateway_names_provider: NamesProvider,
        backend: CSBackend | None = None,
    ) -> None:
        self._settings = settings
        self.lock = lock
        self._names = gateway_names_provider
        self._backend = backend or backend_for(settings)
        self._custom_backend = backend is not None
        self._memo: tuple[object, ...] | None = None
        self._memo_at: datetime | None = None
        self._last_error = ""

    @property
    def settings(self) -> CSSettings:
        return self._settings

    @settings.setter
    def settings(self, value: CSSettings) -> None:
        """New settings (SIGHUP): the next sync reads the CS again."""
        self._settings, self._memo = value, None
        if not self._custom_backend:
            self._backend = backend_for(value)

    def _render(self, desired: DesiredState, names: tuple[str, ...]) -> Renderer:
        return lambda current: render_cs(desired, names, self._settings, current)

    def diff(self, desired: DesiredState) -> tuple[tuple[CSChange, ...], tuple[Problem, ...], str]:
        """What a sync would change (no lock, no freshness check); raises ``SidecarError``."""
        return self._backend.plan(self._render(desired, self._names()))

    def sync(self, desired: DesiredState, fresh: bool, now: datetime) -> CSWriteOutcome:
        """Bring the CS to ``desired`` when allowed; never raises."""
        if not self._settings.enabled:
            return CSWriteOutcome(CSWriteStatus.DISABLED)
        if not fresh:
            return CSWriteOutcome(CSWriteStatus.NOT_FRESH)
        if not self.lock.held:
            self._memo = None
            return CSWriteOutcome(CSWriteStatus.NOT_HOLDER)
        try:
            return self._sync(desired, now)
        except SidecarError as exc:
            return self._failed(str(exc))
        except Exception as exc:  # a bug must not reach the daemon: report it
            log.exception("CS sync failed unexpectedly")
            return self._failed(f"unexpected {type(exc).__name__}: {exc}")

    def _sync(self, desired: DesiredState, now: datetime) -> CSWriteOutcome:
        names = self._names()
        key = (cs_shape(desired), names, self._backend.fingerprint(), self.lock.session)
        recent = self._memo_at is not None and (now - self._memo_at).total_seconds() < RESYNC
        if key == self._memo and recent:
            return CSWriteOutcome(CSWriteStatus.UNCHANGED)
        result = self._backend.sync(self._render(desired, names), self.lock.confirm, now)
        problems = tuple(str(p) for p in result.problems)
        if result.blocked:
            self._memo = None
            return CSWriteOutcome(CSWriteStatus.NOT_HOLDER, problems=problems)
        self._memo = (key[0], names, self._backend.fingerprint(), self.lock.session)
        self._memo_at, self._last_error = now, ""
        if not result.changes:
            return CSWriteOutcome(CSWriteStatus.UNCHANGED, problems=problems)
        changes = tuple(str(change) for change in result.changes)
        return CSWriteOutcome(CSWriteStatus.WRITTEN, changes, problems, backup=result.backup)

    def _failed(self, error: str) -> CSWriteOutcome:
        self._memo = None
        if error != self._last_error:
            log.error("CS not written: %s", error)
        self._last_error = error
        return CSWriteOutcome(CSWriteStatus.FAILED, error=error)
