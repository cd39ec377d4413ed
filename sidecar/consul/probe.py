"""The agent probe: whether the Consul agent answers at all (adapter: an asyncio task beside
the watches, on the watcher's loop).

A blocking query parks for up to ``wait`` (10 minutes by default): an agent that accepts
connections and never answers, or a connection that died unseen (a partition, a lost NAT
entry), would otherwise go unnoticed until a parked query timed out, and the gateway would
report fresh data all that time. Every ``probe_interval`` the probe asks for
``/v1/status/leader`` (any answer counts: no leader is the watches' to report, with the
``stale`` rules) on the one-shot connection, never behind a parked query. A failure is
reported as a failing watch of its own; the first answer after failures renews every parked
query (``Watch.renew``).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from sidecar.base.errors import CatalogError

log = logging.getLogger(__name__)
PROBE_KEY = "/v1/status/leader"  # the probe's entry among the failing watches


async def probe(
    ask: Callable[[], Awaitable[object]],
    interval: float,
    failed: Callable[[CatalogError], None],
    recovered: Callable[[], None],
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
) -> None:
    """Ask every ``interval`` seconds until cancelled; ``failed`` on every failure,
    ``recovered`` on the first answer after one or more."""
    failing = False
    while True:
        await sleep(interval)
        try:
            await ask()
        except Exception as exc:
            if not isinstance(exc, CatalogError):  # a bug must not end the probe unseen
                log.exception("consul probe: unexpected error")
            failing = True
            failed(exc if isinstance(exc, CatalogError) else
                   CatalogError(f"{type(exc).__name__}: {exc}"))  # fmt: skip
            continue
        if failing:
            failing = False
            recovered()
