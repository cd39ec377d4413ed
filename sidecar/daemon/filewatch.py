"""File watching (adapter, watchdog): the settings file and the certificate directories.

A change to the settings file (or to the template it names) posts the same event as SIGHUP:
the daemon validates the new file and keeps the running configuration when it is invalid. A
change in a CA directory or to the gateway's own certificate re-runs the certificate checks.
Editors replace files by rename, so the parent directories are watched and events filtered by
path. Only events are posted; the daemon's loop does the work.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable
from pathlib import Path

from watchdog.events import FileSystemEvent, FileSystemEventHandler
from watchdog.observers import Observer

log = logging.getLogger(__name__)


SETTLE = 0.5  # seconds a file must be quiet before it is read: editors write in steps


class _Debounced:
    """Calls ``action`` once, ``delay`` seconds after the last of a burst of triggers."""

    def __init__(self, action: Callable[[], None], delay: float) -> None:
        self._action, self._delay = action, delay
        self._lock = threading.Lock()
        self._timer: threading.Timer | None = None

    def __call__(self) -> None:
        with self._lock:
            if self._timer is not None:
                self._timer.cancel()
            self._timer = threading.Timer(self._delay, self._action)
            self._timer.daemon = True
            self._timer.start()

    def cancel(self) -> None:
        with self._lock:
            if self._timer is not None:
                self._timer.cancel()


class _Handler(FileSystemEventHandler):
    def __init__(self, files: set[Path], dirs: set[Path], post: Callable[[], None]) -> None:
        self._files = files
        self._dirs = dirs
        self._post = post

    def on_any_event(self, event: FileSystemEvent) -> None:
        if event.event_type in ("opened", "closed_no_write"):
            return
        paths = [event.src_path, getattr(event, "dest_path", "")]
        for raw in paths:
            if not raw:
                continue
            path = Path(str(raw))
            if path in self._files or path.parent in self._dirs or path in self._dirs:
                self._post()
                return


class FileWatcher:
    """Posts ``on_config`` for changes to ``config_files`` and ``on_certs`` for ``cert_paths``."""

    def __init__(
        self,
        config_files: Iterable[str],
        cert_paths: Iterable[str],
        on_config: Callable[[], None],
        on_certs: Callable[[], None],
    ) -> None:
        self._observer = Observer()
        self._observer.daemon = True
        on_config, on_certs = _Debounced(on_config, SETTLE), _Debounced(on_certs, SETTLE)
        self._debounced = (on_config, on_certs)
        configs = {Path(p).resolve() for p in config_files if p}
        certs = [Path(p).resolve() for p in cert_paths if p]
        cert_dirs = {p for p in certs if p.is_dir()}
        cert_files = {p for p in certs if not p.is_dir()}
        self._watch(configs, set(), on_config)
        self._watch(cert_files, cert_dirs, on_certs)

    def _watch(self, files: set[Path], dirs: set[Path], post: Callable[[], None]) -> None:
        handler = _Handler(files, dirs, post)
        where = {f.parent for f in files} | dirs
        for directory in sorted(where):
            if directory.is_dir():
                self._observer.schedule(handler, str(directory), recursive=False)
            else:
                log.warning("not watching %s: no such directory", directory)

    def start(self) -> None:
        self._observer.start()

    def stop(self) -> None:
        for pending in self._debounced:
            pending.cancel()
        self._observer.stop()
        self._observer.join(timeout=5.0)
