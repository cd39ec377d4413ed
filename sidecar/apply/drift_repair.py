"""Drift repair against the running HAProxy (adapter around the pure ``drift.find_drift``).

Reads ``show servers state``, repairs differences through the runtime API and says when only a
reload can repair them (servers missing: HAProxy runs another config).
"""

from __future__ import annotations

import logging

from sidecar.apply.haproxy import HAProxy
from sidecar.drift import find_drift
from sidecar.errors import SidecarError
from sidecar.model import DesiredState
from sidecar.runtime_state import parse_servers_state

log = logging.getLogger(__name__)


def repair_drift(haproxy: HAProxy, desired: DesiredState) -> bool:
    """Repair what the runtime API can; True when a reload is needed."""
    try:
        drift = find_drift(parse_servers_state(haproxy.servers_state()), desired)
        if drift.needs_reload:
            log.warning("drift: %s; reloading", drift.needs_reload)
            return True
        if drift.commands:
            errors = haproxy.runtime(drift.commands)
            log.warning(
                "drift repaired (%d servers): %s%s",
                len(drift.differences),
                "; ".join(drift.differences[:10]),
                f"; errors: {errors[:3]}" if errors else "",
            )
    except SidecarError as exc:
        log.warning("drift check failed: %s", exc)
    return False
