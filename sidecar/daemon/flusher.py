"""The config file of runtime changes, written in its own thread (adapter glue of
``daemon.loop``).

Rendering the whole config (jinja2) and writing it takes ~4 ms at 20 services, ~22 ms at
138 x 10 and ~100 ms at 1,000 x 5 on the bench machine, several times that under load. In the
main loop that held back every catalog change arriving meanwhile, and a change stream has a
flush due every ``core.schedule.flush_at``. The loop now takes the pending target with its ticket
(``Applier.take_pending``) and goes on; this thread renders and writes it
(``Applier.write_pending``: the ticket keeps an older text from overwriting a reload's file)
and posts ``"flushed"``, on which the loop records the config it wrote.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from sidecar.core.pipeline import Inputs
from sidecar.core.plan import Rendered
from sidecar.haproxy.applier import Applier

log = logging.getLogger(__name__)
FLUSHED = "flushed"  # the event posted once a file is written


class Flusher:
    def __init__(self, post: Callable[[str], None], threaded: bool = True) -> None:
        self._post = post
        self._threaded = threaded  # False in unit tests: the write happens in ``submit``
        self._cond = threading.Condition()
        self._job: tuple[Applier, Rendered, int, Inputs] | None = None
        self._busy = False
        self._stopping = False
        self._done: str | None = None  # the text of the last file written
        self._thread: threading.Thread | None = None
        # Seconds the last write took (``core.schedule.flush_at`` paces by it): wall time, so
        # that waiting for the GIL the main loop holds counts too (py-spy under a stream at
        # 1,000 x 5: the thread busy ~twice its CPU time).
        self.cost = 0.0

    def submit(self, applier: Applier, inputs: Inputs) -> None:
        """Hand the pending runtime target over (main loop); a newer one replaces a job that
        has not started."""
        taken = applier.take_pending()
        if taken is None:
            return
        job = (applier, *taken, inputs)
        if not self._threaded:
            self._write(job)
            return
        with self._cond:
            self._job = job
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="flush", daemon=True)
                self._thread.start()
            self._cond.notify_all()

    def done(self) -> str | None:
        """The text of the last file written, once (after ``"flushed"``): the status hashes it."""
        with self._cond:
            done, self._done = self._done, None
            return done

    def stop(self, timeout: float = 10.0) -> None:
        """Finish the job in hand (a file is never left half-way), then end the thread."""
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
            self._cond.wait_for(lambda: self._job is None and not self._busy, timeout)
        if self._thread is not None:
            self._thread.join(timeout)

    def _run(self) -> None:
        while True:
            with self._cond:
                self._cond.wait_for(lambda: self._job is not None or self._stopping)
                job, self._job = self._job, None
                if job is None:
                    return  # stopping, nothing left
                self._busy = True
            try:
                self._write(job)
            finally:
                with self._cond:
                    self._busy = False
                    self._cond.notify_all()

    def _write(self, job: tuple[Applier, Rendered, int, Inputs]) -> None:
        applier, target, ticket, inputs = job
        started = time.monotonic()
        try:
            config = applier.write_pending(target, ticket, inputs)
        except OSError as exc:
            log.error("cannot write %s: %s", applier.haproxy.config, exc)
            return
        except Exception:  # a bug must not end the thread: the next flush tries again
            log.exception("writing the config of runtime changes failed unexpectedly")
            return
        finally:
            self.cost = time.monotonic() - started  # read by the loop: one float, atomic
        if config is not None:
            with self._cond:
                self._done = config
            self._post(FLUSHED)
