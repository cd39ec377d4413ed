"""The certificate probe as a child process: what to probe, the request and the answer, and
running the child (adapter, the daemon's side).

Sits between ``health.certmonitor`` (when to probe, in the daemon) and ``health.certprobe``
(the TLS handshakes and the chain verification; its ``main`` is the child). Why a child:
reading and verifying certificates takes pyOpenSSL and cryptography, 9 MB of the daemon's
memory for a job that runs once an hour and after the set of servers changes, and their
parsing of what a backend sends (anyone's certificate) holds the daemon's GIL in the middle
of a change stream. A crash, a leak or a hang of that code ends with the child (killed after
a deadline that follows from the number of targets), never with the gateway.

The requests and the answers are JSON lines on the child's stdin and stdout; the child has the
scrubbed environment of every child (no Consul token) and logs to the daemon's stderr.
"""

from __future__ import annotations

import json
import math
import os
import select
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

from sidecar.base.errors import SidecarError
from sidecar.config.ops import CertSettings, CheckSettings
from sidecar.core.certs import CertFinding, CertReport
from sidecar.core.model import DesiredState, ServerState
from sidecar.core.severity import Severity
from sidecar.host.procenv import scrubbed_environment

MAX_PARALLEL = 16  # handshakes at once in the child
START_MARGIN = 30.0  # seconds for the child to start and to check the local files
LINGER = 60.0  # seconds a child waits for the next request before it exits
CHILD = "sidecar.health.certprobe"  # the module the child runs: main() there


class ProbeError(SidecarError):
    """The server's certificate could not be read (refused, timeout, not TLS), or the probe
    itself failed (client certificate unreadable, child killed)."""


@dataclass(frozen=True, slots=True)
class ProbeTarget:
    backend: str  # HAProxy backend name (System_Service)
    server: str  # stable server slot name
    address: str
    port: int
    path: str  # System/Service


def local_cert_files(settings: Any) -> tuple[str, ...]:
    """The sidecar's own certificate files whose expiry is watched (daemon and ``certs``)."""
    certs, consul = settings.certs, settings.consul
    files = (consul.cert_file, consul.ca_file, certs.ca_file, certs.client_cert)
    return tuple(f for f in files if f)


def targets(desired: DesiredState) -> tuple[ProbeTarget, ...]:
    """Every server slot that points at an instance (ready or draining)."""
    return tuple(
        ProbeTarget(b.name, s.name, s.address, s.port, b.path)
        for b in desired.backends
        for s in b.servers
        if s.state is not ServerState.MAINT
    )


@dataclass(frozen=True, slots=True)
class ProbeRequest:
    """One run: the servers (none on a run that only checks files) and the local files."""

    certs: CertSettings
    thresholds: CheckSettings
    gateway_names: tuple[str, ...]
    targets: tuple[ProbeTarget, ...]
    local_files: tuple[str, ...]
    now: float

    def encode(self) -> bytes:
        return json.dumps({
            "certs": asdict(self.certs),
            "thresholds": asdict(self.thresholds),
            "gateway_names": list(self.gateway_names),
            "targets": [asdict(t) for t in self.targets],
            "local_files": list(self.local_files),
            "now": self.now,
        }).encode()  # fmt: skip

    @classmethod
    def decode(cls, data: bytes) -> ProbeRequest:
        raw = json.loads(data)
        return cls(
            CertSettings(**raw["certs"]),  # plain values of ours, validated by the daemon
            CheckSettings(**raw["thresholds"]),
            tuple(raw["gateway_names"]),
            tuple(ProbeTarget(**t) for t in raw["targets"]),
            tuple(raw["local_files"]),
            float(raw["now"]),
        )

    def deadline(self, margin: float = START_MARGIN) -> float:
        """Seconds the child may take: every round of parallel handshakes at its timeout."""
        rounds = math.ceil(len(self.targets) / MAX_PARALLEL)
        return margin + rounds * self.certs.connect_timeout


def encode_report(report: CertReport) -> bytes:
    return json.dumps({"checked_at": report.checked_at,
                       "findings": [asdict(f) for f in report.findings]}).encode()  # fmt: skip


def decode_report(data: bytes) -> CertReport:
    """The child's report -> findings. The words that repeat from finding to finding (the
    backend of every instance of a service, its address, the certificate's subject, the
    reasons) become one string each, and a server's name the one the plan holds (interned
    there too): the report is kept until the next one, and at 1,000 x 5 its JSON decoded
    25,000 strings."""
    raw: dict[str, Any] = json.loads(data)
    findings = []
    shared: dict[tuple[str, ...], tuple[str, ...]] = {}  # equal reasons: one tuple, this report's
    for f in raw["findings"]:
        f["status"] = Severity(int(f["status"]))
        for key in ("problems", "missing_names"):
            words = tuple(sys.intern(str(word)) for word in f[key])
            f[key] = shared.setdefault(words, words)
        for key in ("subject", "backend", "address", "server"):  # server: as the plan has it
            f[key] = sys.intern(str(f[key]))
        findings.append(CertFinding(**f))
    return CertReport(tuple(findings), float(raw["checked_at"]))


class _GoneError(Exception):
    """The child's pipe closed: it exited (by itself after LINGER, or it failed)."""


class ProbeJob:
    """Runs requests in a child, one at a time. The child stays for ``LINGER`` seconds after
    each answer (a change stream asks every 10 s: one child for a whole rolling update, none at
    idle) and then exits by itself; :meth:`stop` kills it."""

    def __init__(
        self,
        command: Sequence[str] | None = None,
        margin: float = START_MARGIN,
        linger: float = LINGER,
    ) -> None:
        self._command = list(command or (sys.executable, "-P", "-m", CHILD, str(linger)))
        self._margin = margin
        self._run_lock = threading.Lock()  # one request at a time
        self._lock = threading.Lock()  # _proc and _stopped: stop() comes from another thread
        self._proc: subprocess.Popen[bytes] | None = None
        self._stopped = False

    def run(self, request: ProbeRequest) -> CertReport:
        if not request.targets and not request.local_files:
            return CertReport((), request.now)
        with self._run_lock:
            while True:
                proc, fresh = self._child()
                try:
                    return self._ask(proc, request)
                except _GoneError:
                    status = proc.wait()
                    if fresh:
                        raise ProbeError(f"certificate probe exited with status {status}") from None
                    # a lingering child that left just now: once more, with a new one

    def stop(self) -> None:
        with self._lock:
            self._stopped = True
            if self._proc is not None and self._proc.poll() is None:
                self._proc.kill()

    def _child(self) -> tuple[subprocess.Popen[bytes], bool]:
        with self._lock:
            if self._stopped:
                raise ProbeError("certificate probe: stopping")
            if self._proc is not None and self._proc.poll() is None:
                return self._proc, False
            env = scrubbed_environment()
            if "PYTHONPATH" in os.environ:  # where this very code was found, not a secret
                env["PYTHONPATH"] = os.environ["PYTHONPATH"]
            self._proc = subprocess.Popen(
                self._command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env
            )
            return self._proc, True

    def _ask(self, proc: subprocess.Popen[bytes], request: ProbeRequest) -> CertReport:
        assert proc.stdin is not None and proc.stdout is not None
        limit = request.deadline(self._margin)
        deadline = time.monotonic() + limit
        try:
            proc.stdin.write(request.encode() + b"\n")
            proc.stdin.flush()
        except OSError:  # BrokenPipeError: it has gone
            raise _GoneError from None
        fd, answer = proc.stdout.fileno(), bytearray()
        poller = select.poll()  # not select(): descriptors above 1024 at 1,000 parked queries
        poller.register(fd, select.POLLIN)
        while not answer.endswith(b"\n"):
            left = deadline - time.monotonic()
            if left <= 0 or not poller.poll(left * 1000):
                self._kill(proc)
                raise ProbeError(f"certificate probe killed after {limit:.1f}s")
            chunk = os.read(fd, 1 << 16)
            if not chunk:
                raise _GoneError
            answer += chunk
        try:
            return decode_report(bytes(answer))
        except (ValueError, KeyError, TypeError) as exc:
            self._kill(proc)
            raise ProbeError(f"certificate probe answered garbage: {exc!r}"[:200]) from None

    def _kill(self, proc: subprocess.Popen[bytes]) -> None:
        proc.kill()
        proc.wait()
