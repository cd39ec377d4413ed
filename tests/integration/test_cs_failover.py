"""CS writer failover on a real Consul agent with real ``sidecar run`` daemons (issue 14).

Three gateways share one CS file and one lock key; each has its own gateway name
(``gw-a.test``...), so the URLs in the file say which daemon wrote them. A recorder thread
polls the file every 10 ms and keeps every distinct content with the time it appeared.

- SIGKILL of the holder: another gateway writes the file within 5 s (measured, printed).
- SIGSTOP of the new holder until the third one has taken over and written, then SIGCONT:
  the resumed daemon never writes again (no content of its own, no backup, no "written" log
  line), though it has a change to make (a service registered while it was frozen).
- The fence: a writer whose lock moves between its confirm and the rename writes nothing.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import threading
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
import requests
from faultlib import gateway_on
from gatewaylib import Gateway
from helpers import wait_until

from devkit.consul_agent import ConsulAgent
from devkit.pki import DevPKI
from sidecar.config.cs import CSSettings
from sidecar.config.schema import ConsulSettings
from sidecar.consul.client import ConsulClient
from sidecar.core.model import Backend, DesiredState, Protocol
from sidecar.dirac_cs.writer import CSWriter, CSWriteStatus
from sidecar.fleet.lock import CSLock, takeover_bound

pytestmark = pytest.mark.timeout(240)
DATA = Path(__file__).resolve().parents[1] / "data" / "cs"
CHECK_TTL, LOCK_DELAY = 2.0, 1.0  # the shipped defaults
BOUND = 5.0  # the product contract: a new writer within 5 s of the old one's death
WRITER = re.compile(r"gw-([a-z])\.test")


class Recorder:
    """Every distinct content of ``path`` with when it appeared (polled every 10 ms)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.seen: list[tuple[float, str]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        last = None
        deadline = time.monotonic() + 300.0  # bounded whatever the test does
        while not self._stop.wait(0.01) and time.monotonic() < deadline:
            with contextlib.suppress(OSError):
                text = self.path.read_text()
                if text != last:
                    self.seen.append((time.monotonic(), text))
                    last = text

    def writers_since(self, since: float) -> list[tuple[float, set[str]]]:
        return [(t, set(WRITER.findall(text))) for t, text in self.seen if t >= since]

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)


def holder(agent: ConsulAgent, key: str) -> str:
    reply = requests.get(f"{agent.http_addr}/v1/kv/{key}", params={"raw": "1"}, timeout=5)
    return reply.text if reply.ok else ""


def holder_letter(agent: ConsulAgent, key: str) -> str:
    found = WRITER.search(holder(agent, key))
    return found.group(1) if found else ""


@pytest.fixture
def fleet(
    tmp_path: Path, consul_agent: ConsulAgent, pki: DevPKI
) -> Iterator[tuple[dict[str, Gateway], Path, str]]:
    cs_file = tmp_path / "dirac.cfg"
    shutil.copyfile(DATA / "dirac-v9.cfg", cs_file)
    key = f"dirac-sidecar/test/{uuid.uuid4().hex}/lock"
    extra = (
        f'\n[dirac_cs]\nenabled = true\nfile = "{cs_file}"\nlock_key = "{key}"\n'
        f'lock_delay = "{LOCK_DELAY:g}s"\nlock_check_ttl = "{CHECK_TTL:g}s"\nbackups_keep = 100\n'
    )
    gateways: dict[str, Gateway] = {}
    with contextlib.ExitStack() as stack:
        for letter in "abc":
            gw = stack.enter_context(
                gateway_on(tmp_path / letter, consul_agent, pki, extra=extra, start=False)
            )
            gw.names = (f"gw-{letter}.test",)
            gw.server_name = gw.names[0]
            gw.write_config(gw.config_text() + extra)
            stack.callback(_resume, gw)  # a frozen daemon must be able to stop at teardown
            gateways[letter] = gw
        for gw in gateways.values():
            gw.start()
        yield gateways, cs_file, key


def _resume(gw: Gateway) -> None:
    if gw.alive():
        os.kill(gw.pid, signal.SIGCONT)


def backups(cs_file: Path) -> list[str]:
    return sorted(p.name for p in cs_file.parent.glob(f"{cs_file.name}.*.bak"))


def test_sigkill_then_sigstop_failover_never_two_writers(
    fleet: tuple[dict[str, Gateway], Path, str], consul_agent: ConsulAgent
) -> None:
    gateways, cs_file, key = fleet
    any_gw = gateways["a"]
    any_gw.register("alpha", "alpha-1", 31001, "Framework/GwAlpha")
    first = wait_until(lambda: holder_letter(consul_agent, key), 20, 0.05, "a lock holder")
    wait_until(lambda: f"gw-{first}.test" in cs_file.read_text(), 20, 0.05, "the first write")
    recorder = Recorder(cs_file)
    try:
        # 1. SIGKILL of the holder: another gateway writes within 5 s
        killed_at = time.monotonic()
        gateways[first].kill()
        took_over = wait_until(
            lambda: [t for t, who in recorder.writers_since(killed_at) if who and first not in who],
            BOUND + 10, 0.01, "a write by another gateway",
        )[0]  # fmt: skip
        second = holder_letter(consul_agent, key)
        failover = took_over - killed_at
        print(f"\n[failover] SIGKILL of gw-{first} -> gw-{second} wrote the CS after "
              f"{failover:.2f} s (check TTL {CHECK_TTL:g} s, lock-delay {LOCK_DELAY:g} s, "
              f"bound {takeover_bound(15, LOCK_DELAY, check_ttl=CHECK_TTL):.2f} s)")  # fmt: skip
        assert failover <= BOUND
        assert second and second != first

        # 2. SIGSTOP of the new holder until the third takes over (with a change pending)
        frozen = gateways[second]
        before_stop = backups(cs_file)
        stopped_at = time.monotonic()
        os.kill(frozen.pid, signal.SIGSTOP)
        any_gw.register("beta", "beta-1", 31002, "Framework/GwBeta")  # frozen one misses it
        third = next(x for x in "abc" if x not in (first, second))
        wait_until(
            lambda: "GwBeta" in cs_file.read_text() and f"gw-{third}.test" in cs_file.read_text(),
            BOUND + 10, 0.01, "the third gateway writes the change",
        )  # fmt: skip
        print(f"[failover] SIGSTOP of gw-{second} -> gw-{third} wrote after "
              f"{time.monotonic() - stopped_at:.2f} s")  # fmt: skip
        third_writes = len(backups(cs_file)) - len(before_stop)
        resumed_at = time.monotonic()
        os.kill(frozen.pid, signal.SIGCONT)
        log_mark = len(frozen.log_text())

        # the resumed daemon catches up (its watches see GwBeta) but never writes
        wait_until(lambda: frozen.status().get("catalog_ok_at", 0) > time.time() - 3, 15, 0.1,
                   "the resumed daemon's catalog is fresh again")  # fmt: skip
        deadline = time.monotonic() + CHECK_TTL + LOCK_DELAY + 3
        while time.monotonic() < deadline:  # bounded: a few beats of the resumed daemon
            assert not [w for t, w in recorder.writers_since(resumed_at) if second in w]
            time.sleep(0.05)
        after = frozen.log_text()[log_mark:]
        assert "option(s) written" not in after
        assert holder_letter(consul_agent, key) == third
        assert len(backups(cs_file)) - len(before_stop) == third_writes  # no write by anyone
        assert f"gw-{third}.test" in cs_file.read_text()
        assert f"gw-{second}.test" not in cs_file.read_text()
        print(f"[failover] resumed gw-{second}: 0 writes in "
              f"{time.monotonic() - resumed_at:.1f} s; status cs={frozen.status().get('cs_status')}"
              f", lock_holder={frozen.status().get('lock_holder')}")  # fmt: skip
        assert frozen.status().get("lock_holder") is False
    finally:
        recorder.stop()


class FencedLock:
    """Lets the lock move to another session between the first confirm and the fence."""

    def __init__(self, lock: CSLock, move: object) -> None:
        self.lock, self.move, self.calls = lock, move, 0

    @property
    def held(self) -> bool:
        return self.lock.held

    @property
    def session(self) -> str | None:
        return self.lock.session

    def confirm(self) -> bool:
        self.calls += 1
        if self.calls == 2:  # the fence: "frozen" since the first confirm; the lock moved
            assert callable(self.move)
            self.move()
        return self.lock.confirm()


def test_fence_refuses_a_write_once_the_lock_moved(
    consul_agent: ConsulAgent, tmp_path: Path
) -> None:
    cs_file = tmp_path / "dirac.cfg"
    shutil.copyfile(DATA / "dirac-v9.cfg", cs_file)
    key = f"dirac-sidecar/test/{uuid.uuid4().hex}/lock"
    consul = ConsulClient(ConsulSettings(address=consul_agent.http_addr, timeout=2.0), "")
    a = CSLock(consul, key, "n/gw-a", 10.0, 0.0, check_ttl=CHECK_TTL)
    b = CSLock(consul, key, "n/gw-b", 10.0, 0.0)
    try:
        assert a.try_acquire()

        def move() -> None:  # a's session destroyed (as Consul does when its check fails)
            requests.put(f"{consul_agent.http_addr}/v1/session/destroy/{a.session}", timeout=5)
            assert b.try_acquire()

        fenced = FencedLock(a, move)
        before, listing = cs_file.read_bytes(), sorted(os.listdir(tmp_path))
        desired = DesiredState((Backend("Framework", "GwAlpha", Protocol.DIPS, 31001, ()),))
        writer = CSWriter(CSSettings(enabled=True, file=str(cs_file)), fenced, lambda: ("gw",))
        outcome = writer.sync(desired, True, datetime.now(UTC))
        assert fenced.calls == 2
        assert outcome.status is CSWriteStatus.NOT_HOLDER
        assert cs_file.read_bytes() == before
        assert sorted(os.listdir(tmp_path)) == listing  # no backup, no temp file left
    finally:
        a.release()
        b.release()


def test_a_keeper_frozen_past_its_lease_does_not_hold_on_its_next_pass(
    consul_agent: ConsulAgent,
) -> None:
    """Regression: the first pass after a lapsed lease made ``held`` true again for one step
    (the renew was not due yet) although Consul had dropped the session meanwhile."""
    key = f"dirac-sidecar/test/{uuid.uuid4().hex}/lock"
    consul = ConsulClient(ConsulSettings(address=consul_agent.http_addr, timeout=2.0), "")
    now = [1000.0]
    a = CSLock(consul, key, "n/gw-a", 10.0, 0.0, clock=lambda: now[0], check_ttl=CHECK_TTL)
    b = CSLock(consul, key, "n/gw-b", 10.0, 0.0)
    try:
        assert a.try_acquire() and a.held
        now[0] += CHECK_TTL  # "frozen" for the check's TTL: the lease is over at once
        assert not a.held
        requests.put(f"{consul_agent.http_addr}/v1/session/destroy/{a.session}", timeout=5)
        assert b.try_acquire()  # what Consul does once the check turned critical
        assert a.try_acquire() is False and not a.held  # not even for one step
        assert b.confirm()
    finally:
        a.release()
        b.release()
