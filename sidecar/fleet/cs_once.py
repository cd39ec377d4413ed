"""One CS sync outside the daemon, holding the fleet lock for its duration (adapter).

Used by ``sidecar cs sync`` and ``sidecar once``: take the one-writer lock (waiting up to
``wait`` seconds), bring the CS to the desired state, release the lock.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime

from sidecar.base.errors import SidecarError
from sidecar.config.schema import Settings
from sidecar.consul.client import ConsulClient
from sidecar.core.model import DesiredState
from sidecar.dirac_cs.writer import CSWriteOutcome, CSWriter
from sidecar.fleet.lock import CSLock
from sidecar.fleet.view import local_node, names_provider


def writer(settings: Settings, client: ConsulClient, lock: CSLock) -> CSWriter:
    cs = settings.dirac_cs
    names = names_provider(
        client, cs.discover_gateways, settings.gateway.names, cs.discover_allowed
    )
    return CSWriter(cs, lock, names)


def acquire(lock: CSLock, wait: float) -> None:
    deadline = time.monotonic() + wait
    while not lock.try_acquire():
        if time.monotonic() >= deadline:
            holder = lock.holder() or "nobody (lock-delay after a holder died)"
            raise SidecarError(f"CS writer lock {lock.key} not obtained: held by {holder}")
        time.sleep(min(0.5, max(0.0, deadline - time.monotonic())))


def sync_with_lock(
    settings: Settings, client: ConsulClient, desired: DesiredState, wait: float, who: str
) -> CSWriteOutcome:
    """Raises SidecarError when the lock cannot be had; the outcome says what was written."""
    name = settings.gateway.names[0]
    lock = CSLock.from_settings(client, settings.dirac_cs, f"{local_node(client)}/{name} {who}")
    try:
        acquire(lock, wait)
        return writer(settings, client, lock).sync(desired, True, datetime.now(UTC))
    finally:
        lock.release()
