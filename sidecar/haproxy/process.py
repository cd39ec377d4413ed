"""HAProxy as a managed process: validate, start, reload, runtime API (adapter).

HAProxy runs in master-worker mode, daemonised in its own session so that it keeps serving
when the sidecar stops or is killed. The sidecar talks to the master over the master CLI
(``show proc``, ``reload``) and to the current worker over the admin socket (runtime API,
``show servers state``). Both sockets live in the owner-only runtime directory.

Reloads follow the pitfalls measured on 2.6 (anchors.md): one reload at a time, and only
after the master answers ``show proc`` again; a failed reload is detected through the
``failed`` counter and the worker PID, never through the command's (empty) answer.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import subprocess
import time
from collections.abc import Iterable

from sidecar.base.errors import HAProxyError, ValidationFailed
from sidecar.config.schema import Settings
from sidecar.core.answers import ProcInfo, parse_show_proc
from sidecar.core.render import ADMIN_SOCKET, CONFIG_FILE, MASTER_SOCKET, STATE_FILE
from sidecar.haproxy.binds import parse_bind_failures
from sidecar.haproxy.sockets import send_command
from sidecar.host.files import atomic_write, ensure_private_dir
from sidecar.host.procenv import scrubbed_environment
from sidecar.host.procs import cmdline_has, pid_alive, pid_from_file

log = logging.getLogger(__name__)
# Answers of the runtime API that mean a command did not take effect.
_ERRORS = (
    *("No such", "Unknown", "Require", "invalid", "Invalid", "not ", "failed", "Can't"),
    *("Already", "Backend must", "cannot", "Cannot", "Server still", "Server must"),
)
BATCH = 100  # commands per runtime API line (';'-joined): ~1.6 ms for 100 servers
LOG_MAX = 4 * 1024 * 1024  # bytes of master log kept (plus one older generation)
# "[ALERT] (1) : Binding [/run/x/haproxy.cfg:40] for frontend fe_9162: cannot bind socket
# (Permission denied) for [0.0.0.0:9162]"; 2.6 also says "Starting frontend fe_X: cannot bind".
class HAProxy:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.dir = settings.runtime_dir
        self.config = self.dir / CONFIG_FILE
        self.last_good = self.dir / (CONFIG_FILE + ".last-good")
        self.master_socket = self.dir / MASTER_SOCKET
        self.admin_socket = self.dir / ADMIN_SOCKET
        self.state_file = self.dir / STATE_FILE
        self.pidfile = self.dir / "haproxy.pid"
        self.log_file = self.dir / "haproxy.log"  # the master's stderr: start and reload alerts
        self._master: subprocess.Popen[bytes] | None = None  # when this process started it

    def prepare(self) -> None:
        ensure_private_dir(self.dir)
        if not self.state_file.exists():
            atomic_write(self.state_file, "1\n")  # version line: an empty file draws a warning

    # -- validation ----------------------------------------------------------------------------

    def validate(self, text: str) -> None:
        """``haproxy -c`` on ``text``; raises ValidationFailed with HAProxy's own words."""
        candidate = self.dir / (CONFIG_FILE + ".new")
        atomic_write(candidate, text)
        try:
            result = subprocess.run(
                [self.settings.haproxy.binary, "-c", "-f", str(candidate)],
                capture_output=True,
                text=True,
                check=False,
                timeout=self.settings.haproxy.validate_timeout,
                env=scrubbed_environment(),
            )
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise ValidationFailed(f"cannot run {self.settings.haproxy.binary} -c: {exc}") from None
        finally:
            candidate.unlink(missing_ok=True)
        if result.returncode != 0:
            output = (result.stdout + result.stderr).strip()
            alerts = [line for line in output.splitlines() if "ALERT" in line]
            raise ValidationFailed(
                "haproxy -c rejected the config: " + " | ".join(alerts[-3:]), output
            )

    # -- process -------------------------------------------------------------------------------

    def proc(self, timeout: float = 2.0, attempts: int = 3) -> ProcInfo | None:
        """``show proc`` from the master, or None when no master answers.

        Right after a reload the master re-executes itself and its socket is briefly gone
        (connection refused, or an empty answer): a few quick retries tell that apart from a
        master that is really not there. A re-executing master keeps its PID, so when the
        pidfile names no live process (or there is none) one attempt says it all: the first
        start of a gateway does not wait 150 ms for retries.
        """
        if attempts > 1 and self.settings.haproxy.manage and self._no_master():
            attempts = 1
        for attempt in range(attempts):
            if attempt:
                time.sleep(0.05 * attempt)
            try:
                info = parse_show_proc(send_command(self.master_socket, "show proc", timeout))
            except HAProxyError:
                continue
            if info.master_pid:
                return info
        return None

    def _no_master(self) -> bool:
        """No master of ours can be there (we start it with ``-p``): no pidfile, or it names a
        dead PID (an empty pidfile, as while a master rewrites it, proves nothing)."""
        try:
            text = self.pidfile.read_text()
        except FileNotFoundError:
            return True
        except OSError:
            return False
        pid = text.split()[0] if text.split() else ""
        return pid.isdigit() and not pid_alive(int(pid))

    def start(self) -> ProcInfo:
        stray = pid_from_file(self.pidfile)
        if stray is not None and pid_alive(stray) and cmdline_has(stray, b"haproxy"):
            # A second master would bind the same ports (SO_REUSEPORT) and split traffic.
            raise HAProxyError(
                f"haproxy master {stray} (from {self.pidfile}) is alive but its "
                f"master socket {self.master_socket} does not answer"
            )
        # Foreground master (-W, no -D) in its own session: it survives the daemon, and its
        # stderr stays on the log file, so that the alerts of every later reload (which
        # frontend could not bind, and why) can be read back (``bind_failures``).
        cmd = [
            self.settings.haproxy.binary,
            "-W",
            "-p",
            str(self.pidfile),
            "-S",
            f"{self.master_socket},mode,600",
            "-f",
            str(self.config),
        ]
        self._rotate_log()
        with self.log_file.open("ab") as out:
            try:
                self._master = subprocess.Popen(
                    cmd,
                    stdin=subprocess.DEVNULL,
                    stdout=out,
                    stderr=out,
                    start_new_session=True,
                    env=scrubbed_environment(),
                )
            except OSError as exc:
                raise HAProxyError(f"cannot run {cmd[0]}: {exc}") from None
        info = self._wait(lambda i: i.current_worker is not None, "the first worker")
        log.info("haproxy started: master %d, worker %s", info.master_pid, info.current_worker)
        return info

    def reload(self) -> ProcInfo:
        """A hitless reload through the master CLI, verified; raises HAProxyError on failure."""
        before = self.proc()
        if before is None:
            raise HAProxyError("no haproxy master answers on " + str(self.master_socket))
        self.dump_server_state()
        # The master re-executes and may drop the connection: judge by show proc, never by the
        # (empty) answer. A failed reload also counts in `reloads`, with `failed` raised.
        with contextlib.suppress(HAProxyError):
            send_command(self.master_socket, "reload", timeout=5.0)
        after = self._wait(lambda i: i.reloads > before.reloads, "the master after reload")
        if after.failed > before.failed or after.current_worker in (None, before.current_worker):
            raise HAProxyError(f"reload failed (failed reloads {after.failed}): {self._tail()}")
        return after

    def _wait(self, done: object, what: str) -> ProcInfo:
        deadline = time.monotonic() + self.settings.haproxy.reload_timeout
        while time.monotonic() < deadline:
            info = self.proc(timeout=1.0, attempts=1)
            if info is not None and done(info):  # type: ignore[operator]
                return info
            if self._master is not None and self._master.poll() is not None:
                code, self._master = self._master.returncode, None
                raise HAProxyError(f"haproxy exited (code {code}): {self._tail()}")
            time.sleep(0.01)
        raise HAProxyError(f"timed out waiting for {what}: {self._tail()}")

    def _rotate_log(self) -> None:
        """Keep the master's log bounded: one older generation, at most LOG_MAX bytes each."""
        try:
            if self.log_file.stat().st_size > LOG_MAX:
                self.log_file.replace(self.log_file.with_suffix(".log.1"))
        except FileNotFoundError:
            pass

    def log_mark(self) -> int:
        """The current end of the master's log (call before a reload)."""
        try:
            return self.log_file.stat().st_size
        except OSError:
            return 0

    def bind_failures(self, since: int) -> dict[int, str]:
        """Frontends the master could not bind since log offset ``since``: port -> reason."""
        try:
            with self.log_file.open("rb") as handle:
                handle.seek(since)
                text = handle.read(LOG_MAX).decode("utf-8", "replace")
        except OSError:
            return {}
        return parse_bind_failures(text)

    def _tail(self) -> str:
        try:
            lines = self.log_file.read_text(errors="replace").splitlines()
        except OSError:
            return ""
        alerts = [line for line in lines[-40:] if "[ALERT]" in line]
        return " | ".join(line for line in (alerts or lines)[-3:] if line.strip())

    def stop(self, timeout: float = 10.0) -> None:
        """Stop the master and its workers (demo, tests, ``--stop-haproxy``)."""
        info = self.proc()
        pid = info.master_pid if info else pid_from_file(self.pidfile)
        if pid is None:
            return
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and pid_alive(pid):
            time.sleep(0.02)
        if pid_alive(pid):
            os.kill(pid, signal.SIGKILL)
        if self._master is not None and self._master.pid == pid:
            with contextlib.suppress(subprocess.TimeoutExpired):
                self._master.wait(timeout)  # our child: reap it
            self._master = None

    # -- runtime API ---------------------------------------------------------------------------

    def runtime(self, commands: Iterable[str]) -> list[str]:
        """Send runtime API commands in batches; returns the answers that report an error."""
        pending = list(commands)
        errors: list[str] = []
        for start in range(0, len(pending), BATCH):
            batch = pending[start : start + BATCH]
            answer = send_command(self.admin_socket, ";".join(batch))
            for line in answer.splitlines():
                if line.strip() and line.lstrip().startswith(_ERRORS):
                    errors.append(line.strip())
        return errors

    def command(self, line: str) -> str:
        """One runtime API command, its answer as HAProxy gave it."""
        return send_command(self.admin_socket, line)

    def servers_state(self) -> str:
        return send_command(self.admin_socket, "show servers state")

    def backend_names(self) -> frozenset[str]:
        """Every backend the current worker runs (``show backend``)."""
        answer = send_command(self.admin_socket, "show backend")
        return frozenset(
            line.strip()
            for line in answer.splitlines()
            if line.strip() and not line.startswith("#")
        )

    def dump_server_state(self) -> None:
        """Save server state for the next worker (``load-server-state-from-file global``)."""
        try:
            atomic_write(self.state_file, self.servers_state())
        except HAProxyError as exc:
            log.warning("cannot save server state before reload: %s", exc)

    def worker_pid(self) -> int | None:
        """The PID of the worker answering on the admin socket (``show info``)."""
        try:
            info = send_command(self.admin_socket, "show info", timeout=2.0)
        except HAProxyError:
            return None
        for line in info.splitlines():
            if line.startswith("Pid:"):
                return int(line.split(":", 1)[1])
        return None
