"""Gathering the facts ``sidecar check`` judges (adapter; the judgement: ``health.check``).

Reads ``status.json``, asks the HAProxy master CLI (``show proc``) and the admin socket
(``show info``), looks up PIDs with psutil, tries every public port and asks Consul for its
leader. Every probe has a short timeout, so ``check`` answers quickly even when things hang.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

from sidecar.base.errors import SidecarError
from sidecar.config.loader import read_token
from sidecar.config.schema import Settings
from sidecar.haproxy.binds import unbound_ports
from sidecar.haproxy.process import HAProxy
from sidecar.health.check import Facts, HAProxyFacts
from sidecar.health.status import STATUS_FILE, read_status
from sidecar.host.drainfile import read_drain
from sidecar.host.procs import pid_alive, pid_from_file

CONSUL_TIMEOUT = 5.0  # seconds at most for the leader probe


def _master_running(haproxy: HAProxy) -> bool:
    pid = pid_from_file(haproxy.pidfile)
    if pid is None:
        return False
    return pid_alive(pid)


def haproxy_facts(haproxy: HAProxy) -> HAProxyFacts:
    info = haproxy.proc(timeout=2.0)
    if info is None:
        return HAProxyFacts(master_running=_master_running(haproxy))
    answering = haproxy.worker_pid() is not None
    return HAProxyFacts(
        master_pid=info.master_pid,
        master_running=True,
        current_worker=info.current_worker,
        worker_answering=answering,
        old_workers=len(info.old_workers),
        failed_reloads=info.failed,
    )


def consul_error(settings: Settings) -> str:
    """ "" when Consul answers with a leader, else why not."""
    from sidecar.consul.client import ConsulClient

    consul = replace(settings.consul, timeout=min(settings.consul.timeout, CONSUL_TIMEOUT))
    try:
        leader = ConsulClient(consul, read_token(settings.consul)).leader()
    except SidecarError as exc:
        return str(exc)[:200]
    return "" if leader else "no leader"


def _daemon_alive(status: Mapping[str, Any] | None) -> bool | None:
    if not status:
        return None
    pid = status.get("pid")
    if not isinstance(pid, int) or pid <= 0:
        return None
    started = status.get("started")
    return pid_alive(pid, float(started) if isinstance(started, int | float) else 0.0)


def _unreadable(runtime_dir: Path) -> str:
    if not os.access(runtime_dir, os.R_OK | os.X_OK):
        return f"cannot read the runtime directory {runtime_dir}"
    path = runtime_dir / STATUS_FILE
    if path.exists() and not os.access(path, os.R_OK):
        return f"cannot read {path}"
    return ""


def gather(settings: Settings, consul: bool = True) -> Facts:
    """Every fact ``evaluate_check`` needs; never raises for what it observes."""
    status = read_status(settings.runtime_dir)
    haproxy = haproxy_facts(HAProxy(settings))
    drain, _ = read_drain(settings.runtime_dir)
    ports: tuple[int, ...] = ()
    if status and haproxy.master_pid and drain is None:  # drained: paused on purpose
        wanted = [p for p in status.get("public_ports") or [] if isinstance(p, int)]
        bind = str(status.get("bind") or settings.gateway.bind)
        ports = tuple(unbound_ports(bind, wanted, timeout=1.0))
    return Facts(
        status=status,
        daemon_pid_alive=_daemon_alive(status),
        haproxy=haproxy,
        unbound_ports=ports,
        consul_error=consul_error(settings) if consul else "",
        unreadable=_unreadable(settings.runtime_dir),
        drain=drain,
    )
