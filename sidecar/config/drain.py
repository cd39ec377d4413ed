"""The ``[drain]`` settings section: how ``sidecar drain`` takes a gateway out (pure).

Read by ``sidecar drain`` (its ``--grace`` and ``--deadline`` override them for one drain);
loaded by ``config.loader`` like every section. The phases are ``core.drain``'s.
"""

from __future__ import annotations

from dataclasses import dataclass

from sidecar.config.base import Issue, Section
from sidecar.config.types import Seconds


@dataclass(frozen=True, slots=True)
class DrainSettings(Section):
    # New connections are still accepted this long after the drain starts: DIRAC clients
    # re-read the CS every /DIRAC/Configuration/RefreshTime (300 s by default) and DNS
    # caches keep the old answer for a while; after it the frontends refuse at once, so a
    # late client fails over to its next URL.
    grace: Seconds = 360.0
    # The drain counts as over this long after it started even with connections left (a
    # DISET call may stay silent for 600 s: grace + timeout_server + a margin).
    deadline: Seconds = 1200.0

    def cross_checks(self) -> list[Issue]:
        if self.deadline < self.grace:
            return [("deadline", "must be >= grace")]
        return []
