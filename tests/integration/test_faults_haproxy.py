"""HAProxy faults on real processes (issue 6): the current worker killed, the master killed,
a broken operator template at startup.

A port already taken by another process (a new service's public port squatted) is covered by
``test_hitless.py::test_failing_new_worker_is_rolled_back``; a template that breaks on SIGHUP
by ``test_gateway.py::test_invalid_settings_or_template_keeps_the_running_config``.
"""

from __future__ import annotations

import os
import signal
import time

import psutil
import pytest
from faultlib import failed_calls
from gatewaylib import Gateway
from helpers import wait_until

pytestmark = [pytest.mark.integration, pytest.mark.timeout(90)]

ALPHA, BETA = "Framework/GwAlpha", "Framework/GwBeta"
FAST = "\n[apply]\ndrift_interval = 0.5\nmin_reload_interval = 0.1\n"
RESTORE_TIMEOUT = 10.0  # drift_interval 0.5 s: a few checks, then a start (~0.2 s)


def start_fast(gw: Gateway) -> Gateway:
    gw.write_config(gw.config_text() + FAST)
    return gw.start()


def served_again(gw: Gateway, port: int, instance: str) -> float:
    """Seconds until ``port`` answers from ``instance`` again (fails after RESTORE_TIMEOUT)."""
    started = time.monotonic()
    gw.wait_routed(port, instance, timeout=RESTORE_TIMEOUT)
    return time.monotonic() - started


def gone(pid: int) -> bool:
    """Dead or a zombie (the process may be reaped between the two looks)."""
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def test_worker_killed(gateway_unstarted: Gateway, backend_factory) -> None:
    """SIGKILL of the current worker: HAProxy 2.6's master does not respawn it (and exits with
    it unless ``no-exit-on-failure``); the daemon must notice and restore service by itself."""
    gw = start_fast(gateway_unstarted)
    port = gw.ports[ALPHA]
    gw.register_backend("alpha", backend_factory(instance="a1"), "a1", ALPHA)
    gw.wait_routed(port, "a1")
    before = gw.proc_info()
    assert before.current_worker is not None
    os.kill(before.current_worker, signal.SIGKILL)
    wait_until(lambda: gone(before.current_worker), 5, 0.02, "the worker to die")
    took = served_again(gw, port, "a1")
    after = gw.proc_info()
    assert after.current_worker not in (None, before.current_worker)
    assert gw.alive()
    print(
        f"worker killed: served again after {took:.2f}s; master {before.master_pid} -> "
        f"{after.master_pid}; restart logged: {'haproxy is not running' in gw.log_text()}"
    )
    gw.register_backend("beta", backend_factory(instance="b1"), "b1", BETA)
    gw.wait_routed(gw.ports[BETA], "b1")


def _parent_is_haproxy(proc: psutil.Process) -> bool:
    try:
        parent = proc.parent()
        return parent is not None and "haproxy" in parent.name()
    except psutil.Error:
        return False


def test_master_killed(gateway_unstarted: Gateway, backend_factory) -> None:
    """SIGKILL of the master: its worker keeps serving the open listeners for a while; the
    daemon must start a new HAProxy (no duplicate masters) and keep applying changes."""
    gw = start_fast(gateway_unstarted)
    port = gw.ports[ALPHA]
    gw.register_backend("alpha", backend_factory(instance="a1"), "a1", ALPHA)
    gw.wait_routed(port, "a1")
    before = gw.proc_info()
    os.kill(before.master_pid, signal.SIGKILL)
    took = served_again(gw, port, "a1")
    wait_until(lambda: gw.haproxy.proc() is not None, RESTORE_TIMEOUT, 0.05, "a master again")
    after = gw.proc_info()
    assert after.master_pid != before.master_pid
    # a master is the haproxy whose parent is not haproxy (the daemon, or init after it)
    masters = [p for p in gw.haproxy_processes() if not _parent_is_haproxy(p)]
    assert len(masters) == 1, [p.pid for p in masters]
    made, failed = failed_calls(gw, port, 1.0, {"a1"})
    assert failed == 0, (made, failed)
    print(f"master killed: served after {took:.2f}s; master {before.master_pid} -> "
          f"{after.master_pid}")  # fmt: skip
    gw.register_backend("beta", backend_factory(instance="b1"), "b1", BETA)
    gw.wait_routed(gw.ports[BETA], "b1")


def test_broken_template_at_startup(gateway_unstarted: Gateway, backend_factory) -> None:
    """The daemon starts with a template ``haproxy -c`` rejects: nothing is started or written,
    the error is reported; once fixed and SIGHUP'd, it applies."""
    gw = gateway_unstarted
    good = gw.template_path.read_text()
    gw.template_path.write_text(
        good.replace("    master-worker\n", "    master-worker\n    bogus-keyword-x on\n", 1)
    )
    gw.register_backend("alpha", backend_factory(instance="a1"), "a1", ALPHA)
    with pytest.raises(AssertionError, match="timed out"):
        gw.start(timeout=4.0)  # never becomes ready
    assert gw.alive()
    gw.wait_log("bogus-keyword-x")
    assert "haproxy -c rejected" in gw.log_text()
    assert not gw.haproxy_cfg.exists(), "a rejected config must not be written"
    assert not list(gw.runtime_dir.glob("haproxy.cfg.new*"))
    assert gw.haproxy.proc() is None and not gw.haproxy_processes()
    status = gw.status()
    assert status.get("ready") is False and status.get("last_apply_ok") is False
    assert "bogus-keyword-x" in status.get("last_apply_message", "")
    gw.template_path.write_text(good)
    gw.sighup()
    gw.wait_routed(gw.ports[ALPHA], "a1")
    wait_until(gw.ready, 10, 0.1, "ready")
