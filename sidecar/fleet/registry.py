"""This gateway in Consul: its ``dirac-gateway`` registration, TTL check and maintenance
(adapter, does I/O). The other gateways are read by ``fleet.view``.

Sits in the status stage: the daemon registers its own gateway on the LOCAL agent as service
``dirac-gateway`` (ID ``dirac-gateway-<first gateway name>``) with a TTL check that it passes
every heartbeat while ready and fails otherwise, and publishes in the service metadata what it
has applied (``generation``: the config hash; ``catalog_index``: see :func:`catalog_index`).

The registration carries no tag (above all not the DIRAC tag) so the catalog watch never takes
it for a DIRAC service. The published index must not move with the registration itself: see
:func:`catalog_index`.
"""

from __future__ import annotations

import logging
import math
import time

from sidecar.base.errors import CatalogError
from sidecar.consul.client import ConsulClient
from sidecar.consul.http import ConsulHTTP, expect_ok
from sidecar.core.model import Snapshot

log = logging.getLogger(__name__)
SERVICE = "dirac-gateway"
META_NAMES = "gateway_names"  # comma-separated, the names clients use
META_GENERATION = "generation"
META_INDEX = "catalog_index"
REPUBLISH = 10.0  # seconds between two publications of changed metadata
CHECK_TTL = "30s"  # the daemon passes it at least every 5 s while ready
DEREGISTER_AFTER = "10m"  # Consul removes a gateway that stayed critical this long (SIGKILL)
MAINTENANCE_CHECK = "_service_maintenance:"  # Consul's check of a service in maintenance
_UNKNOWN_CHECK = ("does not have associated ttl", "unknown check", "not found")


def catalog_index(snapshot: Snapshot) -> int:
    """The catalog generation a gateway has applied: the highest index of its DIRAC services.

    Not ``snapshot.index`` (the services-list index): every gateway's own registration update
    moves that one, which would wake every watch and re-publish forever.
    """
    return max((entry.index for entry in snapshot.services), default=0)


class GatewayRegistry:
    """Registers this gateway on the local agent; every call raises only ``CatalogError``."""

    def __init__(
        self,
        client: ConsulClient,
        names: tuple[str, ...],
        ttl: str = CHECK_TTL,
        republish: float = REPUBLISH,
    ) -> None:
        if not names:
            raise ValueError("a gateway needs at least one name")
        self._http = ConsulHTTP(client)
        self.names = names
        self.ttl = ttl
        self.service_id = f"{SERVICE}-{names[0]}"
        self.check_id = f"service:{self.service_id}"
        self._published: tuple[str, int] | None = None
        self._passing = False
        self._registered_at = -math.inf
        self._republish = republish
        self._maintenance: str | None = None  # the reason, while drained (``sidecar drain``)

    def register(self, generation: str = "", index: int = 0) -> None:
        """(Re-)register with this metadata; the check keeps its current state."""
        body = {
            "Name": SERVICE,
            "ID": self.service_id,
            "Tags": [],
            "Meta": {
                META_NAMES: ",".join(self.names),
                META_GENERATION: generation,
                META_INDEX: str(index),
            },
            "Check": {
                "CheckID": self.check_id,
                "Name": "dirac-sidecar ready",
                "TTL": self.ttl,
                "Status": "passing" if self._passing else "critical",
                "DeregisterCriticalServiceAfter": DEREGISTER_AFTER,
            },
        }
        expect_ok(self._http.put("/v1/agent/service/register", body), "register dirac-gateway")
        self._published = (generation, index)
        self._registered_at = time.monotonic()
        if self._maintenance is not None:  # a registration the agent had lost comes back
            self._put_maintenance(True, self._maintenance)

    @property
    def in_maintenance(self) -> bool:
        return self._maintenance is not None

    def set_maintenance(self, reason: str | None) -> None:
        """Consul maintenance on (a reason) or off (None) for this gateway: while on, its
        instance is not passing, so Consul DNS and the CS writers' discovery drop its names.
        Sent only on a change; kept across re-registrations."""
        if (reason is None) == (self._maintenance is None):
            return
        if self._published is None and reason is not None:
            self.register()
        self._put_maintenance(reason is not None, reason or "")
        self._maintenance = reason

    def _put_maintenance(self, enable: bool, reason: str) -> None:
        params = [("enable", "true" if enable else "false")]
        if enable:
            params.append(("reason", reason[:200] or "sidecar drain"))
        path = f"/v1/agent/service/maintenance/{self.service_id}"
        expect_ok(self._http.put(path, params=params), "maintenance dirac-gateway")

    def pass_ttl(self, generation: str, index: int) -> None:
        """Heartbeat while ready: publish what is applied (only when it changed), pass the TTL."""
        # Every registration moves the catalog index and wakes every gateway's services watch:
        # new metadata is published at most every REPUBLISH seconds (the fleet view lags that
        # much at most), the first time at once.
        due = self._published is None or time.monotonic() - self._registered_at >= self._republish
        if self._published != (generation, index) and due:
            self._passing = True
            self.register(generation, index)
        self._ttl("pass", "ready")
        self._passing = True

    def fail_ttl(self, reason: str) -> None:
        """Heartbeat while not ready: the gateway stops being advertised."""
        if self._published is None:
            self.register()
        self._ttl("fail", reason[:200])
        self._passing = False

    def _ttl(self, state: str, note: str) -> None:
        path = f"/v1/agent/check/{state}/{self.check_id}"
        try:
            reply = self._http.put(path, params=[("note", note)])
        except CatalogError:
            # The agent timed out (a pass blocks while the servers lack quorum): its sync of
            # this check may have failed too, and an unchanged check waits for the agent's
            # next full sync (a minute or more) while the servers show us critical. The next
            # heartbeat registers again, which always syncs.
            self._published = None
            raise
        if reply.code in (404, 500) and any(m in reply.text.lower() for m in _UNKNOWN_CHECK):
            self.register(*(self._published or ("", 0)))  # the agent lost it (agent restart)
            reply = self._http.put(path, params=[("note", note)])
        expect_ok(reply, f"{state} {self.check_id}")

    def deregister(self) -> None:
        expect_ok(
            self._http.put(f"/v1/agent/service/deregister/{self.service_id}"),
            "deregister dirac-gateway",
        )
        self._published, self._passing = None, False
        self._maintenance = None
