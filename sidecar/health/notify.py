"""The systemd notify protocol, without dependencies (adapter).

Sits at the end of the flow, beside the status file: the daemon tells systemd that it is ready
(after the first successful apply), that its main loop is healthy (``WATCHDOG=1``), what it is
doing (``STATUS=``), and when it reloads or stops. Each message is one datagram to
``$NOTIFY_SOCKET`` (a path, or an abstract socket name starting with ``@``). Without
``$NOTIFY_SOCKET`` (not under systemd) every call is a no-op that returns False.

The module-level functions read ``os.environ``; :class:`Notifier` takes the environment as a
value, for tests and for callers that must not depend on the process environment.
"""

from __future__ import annotations

import logging
import os
import socket
import time
from collections.abc import Mapping

log = logging.getLogger(__name__)


def _address(value: str) -> str | None:
    if value.startswith("@"):
        return "\0" + value[1:]  # abstract namespace
    if value.startswith("/"):
        return value
    return None  # e.g. vsock: addresses are not supported


class Notifier:
    """Sends notify messages to the socket named in ``env["NOTIFY_SOCKET"]``."""

    def __init__(self, env: Mapping[str, str] | None = None) -> None:
        self._env = os.environ if env is None else env

    @property
    def enabled(self) -> bool:
        return _address(self._env.get("NOTIFY_SOCKET", "")) is not None

    def send(self, *assignments: str) -> bool:
        """Send ``KEY=value`` lines as one datagram; False when there is nowhere to send."""
        address = _address(self._env.get("NOTIFY_SOCKET", ""))
        if address is None:
            return False
        data = "\n".join(assignments).encode("utf-8", "replace")
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
                sock.connect(address)
                sock.sendall(data)
        except OSError as exc:
            log.debug("sd_notify to %s failed: %s", address.lstrip("\0"), exc)
            return False
        return True

    def ready(self, status: str = "") -> bool:
        return self.send("READY=1", *_status_line(status))

    def watchdog(self) -> bool:
        return self.send("WATCHDOG=1")

    def status(self, text: str) -> bool:
        return self.send(*_status_line(text))

    def reloading(self, status: str = "") -> bool:
        """``RELOADING=1`` with ``MONOTONIC_USEC`` (systemd >= 253 requires it for
        ``Type=notify-reload``); send :meth:`ready` once the reload is done."""
        usec = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
        return self.send("RELOADING=1", f"MONOTONIC_USEC={usec}", *_status_line(status))

    def stopping(self, status: str = "") -> bool:
        return self.send("STOPPING=1", *_status_line(status))

    def watchdog_interval(self) -> float | None:
        """Seconds between two ``WATCHDOG=1`` (half of ``WatchdogSec``), or None when the
        watchdog is off or meant for another process (``$WATCHDOG_PID``)."""
        try:
            usec = int(self._env.get("WATCHDOG_USEC", ""))
        except ValueError:
            return None
        pid = self._env.get("WATCHDOG_PID", "")
        if usec <= 0 or (pid and pid != str(os.getpid())):
            return None
        return usec / 2_000_000


def _status_line(text: str) -> tuple[str, ...]:
    """``STATUS=`` is one line: newlines would start new assignments."""
    if not text:
        return ()
    return ("STATUS=" + " ".join(text.split())[:400],)


def ready(status: str = "") -> bool:
    return Notifier().ready(status)


def watchdog() -> bool:
    return Notifier().watchdog()


def status(text: str) -> bool:
    return Notifier().status(text)


def reloading(status: str = "") -> bool:
    return Notifier().reloading(status)


def stopping(status: str = "") -> bool:
    return Notifier().stopping(status)


def watchdog_interval() -> float | None:
    return Notifier().watchdog_interval()
