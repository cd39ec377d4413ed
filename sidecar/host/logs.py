"""Logging set-up: plain lines or JSON lines on stderr, inert and rate-limited (adapter).

Sits beside every stage: each module logs through ``logging``; :func:`setup_logging` (called by
the command line once the settings are loaded) puts one handler on the root logger. What that
handler guarantees, because log messages carry catalog text (node names, service IDs, metadata,
error bodies) that anyone able to register a service chose:

* One record is one line. The rendered message goes through :func:`sidecar.base.inert.inert`, so a
  newline in a node name cannot forge an ``ERROR`` line and an ESC sequence cannot reach the
  terminal or ``journalctl``. A traceback stays multi-line (its layout is ours), but each of its
  lines is made inert too, since an exception message may quote the catalog. JSON records are
  one line by construction (``json.dumps`` escapes every control character, and ASCII-only
  output escapes the rest); their message is made inert as well, so a reader that decodes the
  JSON (``jq -r .message``) and prints it is just as safe.
* The same line cannot flood the log: :class:`RepeatLimiter` lets one (logger, level, template,
  rendered arguments) through at most ``repeat_limit`` times per ``repeat_window`` seconds and
  reports what it dropped (``suppressed K repeats of: ...``) once the window is over. A catalog
  entry that fails validation on every read, or a Consul outage retried every second, shows as a
  handful of lines a minute, not thousands.
"""

from __future__ import annotations

import hashlib
import json
import logging
import sys
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import TextIO, TypeAlias

from sidecar.base.inert import inert

REPEAT_LIMIT = 5  # the same line at most this many times ...
REPEAT_WINDOW = 60.0  # ... per this many seconds
MAX_KEYS = 1000  # distinct lines remembered; the oldest window is forgotten first
SAMPLE_CHARS = 100  # of a suppressed message, quoted in the summary line
SUMMARY = "suppressed %d repeats of: %s"

_SUMMARY_FLAG = "sidecar_repeat_summary"  # set on the summary records: the limiter passes them


def _inert_lines(text: str) -> str:
    """Each line of ``text`` made inert, the line breaks kept (tracebacks, stack info)."""
    return "\n".join(inert(line) for line in text.split("\n"))


class InertFormatter(logging.Formatter):
    """The plain format (``time LEVEL logger: message``), the message and traceback inert.

    ``Formatter.format`` written out so that the escaping happens here, at output time, and
    ``record.exc_text`` keeps caching the raw traceback that other formatters expect.
    """

    def format(self, record: logging.LogRecord) -> str:
        # The message with its arguments: that is where catalog text arrives.
        record.message = inert(record.getMessage())
        if self.usesTime():
            record.asctime = self.formatTime(record, self.datefmt)
        text = self.formatMessage(record)
        trace = _trace(self, record)
        return f"{text}\n{trace}" if trace else text


def _trace(formatter: logging.Formatter, record: logging.LogRecord) -> str:
    """The record's traceback and stack, each line inert, "" when it has neither."""
    if record.exc_info and not record.exc_text:
        record.exc_text = formatter.formatException(record.exc_info)
    parts = [record.exc_text or ""]
    if record.stack_info:
        parts.append(formatter.formatStack(record.stack_info))
    return _inert_lines("\n".join(part for part in parts if part))


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ``time``, ``level``, ``logger``, ``message`` [, ``exception``]."""

    def format(self, record: logging.LogRecord) -> str:
        data = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname,
            "logger": record.name,
            "message": inert(record.getMessage()),
        }
        trace = _trace(self, record)
        if trace:
            data["exception"] = trace
        return json.dumps(data, sort_keys=True)  # ensure_ascii: the line is pure ASCII


@dataclass(slots=True)
class _Window:
    start: float
    count: int
    sample: str  # the first SAMPLE_CHARS of the rendered message, raw (the formatter escapes)
    name: str
    level: int
    suppressed: int = 0


_Key: TypeAlias = tuple[str, int, bytes]


class RepeatLimiter(logging.Filter):
    """A handler filter passing the same line at most ``limit`` times per ``window`` seconds.

    "The same line" is the logger, the level, the message template (``record.msg``) and the
    arguments, compared through the rendered message: the key keeps a digest, not the
    arguments, so remembering a line costs the same however large its arguments were. Each
    line has its own window, starting at its first occurrence. Once a window is over, the
    first record to arrive (of any line) makes the limiter report each line it dropped
    anything of, at that line's level and from its logger: ``emit`` receives that summary
    record (``setup_logging`` gives ``handler.handle``). At most ``max_keys`` lines are
    remembered; a new one beyond that evicts the oldest window (reporting it first).
    ``limit`` 0 turns the limiter off. Thread-safe.
    """

    def __init__(
        self,
        emit: Callable[[logging.LogRecord], object],
        limit: int = REPEAT_LIMIT,
        window: float = REPEAT_WINDOW,
        clock: Callable[[], float] = time.monotonic,
        max_keys: int = MAX_KEYS,
    ) -> None:
        super().__init__()
        if limit < 0 or window <= 0 or max_keys < 1:
            raise ValueError("repeat limit >= 0, window > 0 and max_keys >= 1, please")
        self._emit = emit
        self.limit = limit
        self.window = window
        self._clock = clock
        self.max_keys = max_keys
        self._windows: OrderedDict[_Key, _Window] = OrderedDict()  # oldest start first
        self._lock = threading.Lock()

    def __len__(self) -> int:
        """How many distinct lines are remembered (bounded by ``max_keys``)."""
        return len(self._windows)

    def filter(self, record: logging.LogRecord) -> bool:
        if not self.limit or getattr(record, _SUMMARY_FLAG, False):
            return True
        try:
            message = record.getMessage()
        except Exception:
            return True  # let the handler report the broken call as it always does
        digest = hashlib.blake2b(
            f"{record.msg}\0{message}".encode("utf-8", "surrogatepass"), digest_size=16
        ).digest()
        key = (record.name, record.levelno, digest)
        with self._lock:
            now = self._clock()
            done = self._expire(now)
            window = self._windows.get(key)
            if window is None:
                if len(self._windows) >= self.max_keys:
                    done.append(self._windows.popitem(last=False)[1])
                sample = message[:SAMPLE_CHARS]
                self._windows[key] = _Window(now, 1, sample, record.name, record.levelno)
                passed = True
            else:
                window.count += 1
                passed = window.count <= self.limit
                window.suppressed += 0 if passed else 1
        # Emitted outside the lock: the handler may block on its stream, and other threads
        # must not queue behind that on this filter.
        self._report(done)
        return passed

    def flush(self) -> None:
        """Report every line dropped so far (at shutdown) and forget all windows."""
        with self._lock:
            done = list(self._windows.values())
            self._windows.clear()
        self._report(done)

    def _expire(self, now: float) -> list[_Window]:
        # Windows are kept in the order they started (a clock never goes backwards and a key
        # is only re-added after its window was removed), so expired ones are at the front.
        done: list[_Window] = []
        while self._windows:
            key, window = next(iter(self._windows.items()))
            if now - window.start < self.window:
                break
            del self._windows[key]
            done.append(window)
        return done

    def _report(self, windows: list[_Window]) -> None:
        for window in windows:
            if window.suppressed:
                args = (window.suppressed, window.sample)
                record = logging.LogRecord(window.name, window.level, "", 0, SUMMARY, args, None)
                setattr(record, _SUMMARY_FLAG, True)
                self._emit(record)


class _Handler(logging.StreamHandler[TextIO]):
    """stderr, with the limiter's last summaries written when logging shuts down."""

    limiter: RepeatLimiter | None = None

    def close(self) -> None:
        if self.limiter is not None:
            self.limiter.flush()
        super().close()


def setup_logging(
    level: str,
    fmt: str,
    repeat_limit: int = REPEAT_LIMIT,
    repeat_window: float = REPEAT_WINDOW,
) -> None:
    """One handler on the root logger: ``fmt`` ``"json"`` or plain, at ``level``.

    ``repeat_limit`` / ``repeat_window``: see :class:`RepeatLimiter` (0 repeats: no limit).
    Calling it again (SIGHUP) replaces the handler; the old one reports what it suppressed.
    """
    handler = _Handler(sys.stderr)
    handler.setFormatter(
        JsonFormatter()
        if fmt == "json"
        else InertFormatter("%(asctime)s %(levelname)s %(name)s: %(message)s")
    )
    handler.limiter = RepeatLimiter(handler.handle, repeat_limit, repeat_window)
    handler.addFilter(handler.limiter)
    root = logging.getLogger()
    old, root.handlers[:] = list(root.handlers), [handler]
    for previous in old:
        if isinstance(previous, _Handler):
            previous.close()
    root.setLevel(getattr(logging, level.upper(), logging.INFO))
    # watchdog logs every inotify event at DEBUG: with the log file next to a watched file
    # that would feed itself.
    logging.getLogger("watchdog").setLevel(logging.WARNING)
