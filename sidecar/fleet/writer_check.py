"""The CS writer's liveness check on the local Consul agent (adapter, does I/O).

Sits beside the one-writer lock (``fleet.lock``): the lock's session is bound to this check as
well as to ``serfHealth``, and Consul invalidates a session as soon as one of its checks turns
critical. The check is a TTL check the lock's keeper thread passes every ``ttl / 4``; when the
daemon is SIGKILLed or SIGSTOPped the passes stop, the agent marks the check critical ``ttl``
after the last one and syncs that at once, so the session (and the lock) goes within about
``ttl`` instead of the session TTL's ``2 x lock_ttl``.

Why a service check and not a node check: a critical node check makes every service of the
node fail its health query, and the DIRAC services may be registered on the same agent. So the
check hangs off a service of its own, ``dirac-sidecar-cs-writer`` (no tag: the catalog watch
never takes it for a DIRAC service), which Consul removes a minute after a SIGKILL.
"""

from __future__ import annotations

import logging
import re

from sidecar.base.errors import CatalogError
from sidecar.config.durations import consul_duration
from sidecar.consul.client import ConsulClient, Reply
from sidecar.consul.http import ConsulHTTP, expect_ok

SERVICE = "dirac-sidecar-cs-writer"
log = logging.getLogger(__name__)
DEREGISTER_AFTER = "1m"  # Consul's reaper removes a dead writer's service (runs every 30 s)


def service_id(holder: str) -> str:
    """A per-holder service ID (several gateways may share one agent, e.g. in tests)."""
    return f"{SERVICE}-" + re.sub(r"[^A-Za-z0-9_.-]+", "-", holder).strip("-")[:200]


class WriterCheck:
    """Registers, passes and removes this writer's TTL check; raises only ``CatalogError``."""

    def __init__(self, client: ConsulClient, holder: str, ttl: float) -> None:
        self._http = ConsulHTTP(client)
        self.holder = holder
        self.ttl = ttl
        self.service_id = service_id(holder)
        self.check_id = f"service:{self.service_id}"
        self._registered = False

    def register(self) -> None:
        """(Re-)register the service with its check, passing."""
        body = {
            "Name": SERVICE,
            "ID": self.service_id,
            "Tags": [],
            "Meta": {"holder": self.holder[:500]},
            "Check": {
                "CheckID": self.check_id,
                "Name": "dirac-sidecar CS writer alive",
                "TTL": consul_duration(self.ttl),
                "Status": "passing",
                "DeregisterCriticalServiceAfter": DEREGISTER_AFTER,
            },
        }
        expect_ok(self._http.put("/v1/agent/service/register", body), f"register {SERVICE}")
        self._registered = True

    def pass_ttl(self) -> None:
        """Pass the check, registering it first when needed: a first call, an agent that
        lost it (restarted), after a failure. The pass always follows a registration: for a
        check it knows, the agent keeps the last status over a registration (a critical check
        stays critical until passed)."""
        if not self._registered:
            self.register()
        try:
            reply = self._pass()
            if reply.code in (404, 500):  # "unknown check" / "does not have associated TTL"
                log.debug("CS writer check: pass refused, registering again: HTTP %s %s",
                          reply.code, reply.text[:200])  # fmt: skip
                self.register()
                reply = self._pass()
        except CatalogError:
            # The agent could not be reached or timed out (in Consul 1.8 a pass blocks while
            # the servers have no quorum). Its sync of our check to the servers may have
            # failed too, and the agent retries an unchanged check only at its next full sync,
            # a minute or more later: the servers would keep the check critical and refuse
            # our session. A registration always marks the check for sync: do that next.
            self._registered = False
            raise
        expect_ok(reply, "pass the CS writer check")

    def _pass(self) -> Reply:
        return self._http.put(f"/v1/agent/check/pass/{self.check_id}")

    def forget(self) -> None:
        """Register anew on the next pass (the servers' copy of the check is out of date)."""
        self._registered = False

    def deregister(self) -> None:
        """Remove the service and its check (sessions bound to it are invalidated)."""
        self._registered = False
        reply = self._http.put(f"/v1/agent/service/deregister/{self.service_id}")
        if reply.code != 404:
            expect_ok(reply, f"deregister {SERVICE}")
