"""The agent probe (``consul.probe``): failures reported on every miss, recovery once, and the
watcher renewing every parked query when the agent answers again (issue 13: with a 10 minute
``wait``, a hung agent is found by the probe, not by a parked query timing out)."""

from __future__ import annotations

import asyncio
import contextlib

from sidecar.base.errors import CatalogError
from sidecar.config.schema import ConsulSettings
from sidecar.consul.probe import PROBE_KEY, probe
from sidecar.consul.watcher import CatalogWatcher


def run_probe(script: list[object]) -> tuple[list[str], list[float]]:
    """The probe over a scripted agent: an exception is a miss, anything else an answer."""
    events: list[str] = []
    pauses: list[float] = []

    async def ask() -> object:
        item = script.pop(0)
        if isinstance(item, Exception):
            raise item
        return item

    async def sleep(delay: float) -> None:
        if not script:
            raise asyncio.CancelledError  # the script is spent: stop like a cancelled task
        pauses.append(delay)

    async def main() -> None:
        with contextlib.suppress(asyncio.CancelledError):
            await probe(ask, 15.0, lambda e: events.append(f"failed {e}"),
                        lambda: events.append("recovered"), sleep)  # fmt: skip

    asyncio.run(main())
    return events, pauses


def test_misses_are_reported_each_time_and_recovery_once() -> None:
    events, pauses = run_probe(
        ["10.0.0.1:8300", CatalogError("ReadTimeout"), CatalogError("ReadTimeout"), "", "x"]
    )
    assert events == ["failed ReadTimeout", "failed ReadTimeout", "recovered"]
    assert pauses == [15.0] * 5  # one question per interval, whatever the answers


def test_a_surprise_counts_as_a_miss_and_the_probe_goes_on() -> None:
    events, _ = run_probe([KeyError("bug"), "leader"])
    assert events == ["failed KeyError: 'bug'", "recovered"]


class FakeWatch:
    def __init__(self) -> None:
        self.renewed = 0
        self.requests = 0

    def renew(self) -> None:
        self.renewed += 1


def test_the_watcher_reports_a_miss_and_renews_every_parked_query_on_recovery() -> None:
    notified: list[int] = []
    watcher = CatalogWatcher(ConsulSettings(), "", lambda: notified.append(1))
    watches = {"/v1/catalog/services": FakeWatch(), "Framework/A": FakeWatch()}
    watcher._watches.update(watches)  # type: ignore[arg-type]
    watcher._probe_failed(CatalogError("GET /v1/status/leader: ReadTimeout"))
    view = watcher.view()
    assert view.failing_since is not None and PROBE_KEY in view.last_error
    assert [w.renewed for w in watches.values()] == [0, 0]
    watcher._probe_recovered()
    view = watcher.view()
    assert view.failing_since is None and view.last_error == ""
    assert [w.renewed for w in watches.values()] == [1, 1]
    assert len(notified) == 2  # the daemon re-reads the view both times
