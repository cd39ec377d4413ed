"""The two files HAProxy starts from: its config and the desired state it was rendered from
(``applied.json``), with one writer at a time (adapter).

The config of runtime changes reaches the file later, in the daemon's flush thread
(``daemon.flusher``); a reload, a start and a rollback write it from the main loop. One lock
serialises the writes, and a generation that every requested write moves lets a flush that
lost the race to a newer write (a later flush, a reload) drop its older text instead of
overwriting the newer one.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from sidecar.core import statefile
from sidecar.core.model import DesiredState
from sidecar.host.files import atomic_write, read_text

log = logging.getLogger(__name__)


class ConfigFiles:
    def __init__(self, config: Path, applied: Path) -> None:
        self.config, self.applied = config, applied
        self._lock = threading.Lock()
        self._generation = 0

    def ticket(self) -> int:
        """A write to come, newer than every one before (call from the main loop)."""
        with self._lock:
            self._generation += 1
            return self._generation

    def write(
        self, config: str, desired: DesiredState | None, durable: bool, ticket: int | None = None
    ) -> bool:
        """Write both files; with a ``ticket``, only if no newer write was asked for since."""
        with self._lock:
            if ticket is not None and ticket != self._generation:
                return False  # superseded: the newer text is (or will be) there
            if ticket is None:
                self._generation += 1
            atomic_write(self.config, config, durable=durable)
            if desired is not None:
                atomic_write(self.applied, statefile.encode(desired), durable=durable)
            return True

    @contextmanager
    def exclusive(self) -> Iterator[None]:
        """Several file operations as one write (a rollback, a failed start put back)."""
        with self._lock:
            self._generation += 1
            yield

    def read(self) -> tuple[str | None, DesiredState | None]:
        """The config on disk and the desired state it was rendered from (if readable)."""
        config = read_text(self.config)
        text = read_text(self.applied)
        desired = None
        if config is not None and text is not None:
            try:
                desired = statefile.decode(text)
            except ValueError as exc:
                log.warning("%s: %s; starting from the catalog alone", self.applied, exc)
        return config, desired
