import asyncio
import itertools

from sidecar.base.errors import CatalogError
from sidecar.consul.client import Answer
from sidecar.consul.watch import TokenBucket, Watch, WatchTiming, backoff_delay, next_cursor


def test_index_rules() -> None:
    assert next_cursor(0, 5) == (5, True)  # first answer
    assert next_cursor(5, 5) == (5, False)  # equal: nothing changed (timeout)
    assert next_cursor(5, 9) == (9, True)
    assert next_cursor(9, 3) == (0, True)  # backwards: reset and re-read
    assert next_cursor(0, 0) == (1, True)  # never use an index below 1 as a cursor
    assert next_cursor(1, 0) == (0, True)


def test_backoff_grows_caps_and_resets() -> None:
    assert backoff_delay(0, 0.25, 60, 0.5) == 0
    delays = [backoff_delay(n, 0.25, 60, 1.0) for n in range(1, 12)]
    assert delays[0] == 0.25 and delays[1] == 0.5 and max(delays) == 60
    assert all(a <= b for a, b in itertools.pairwise(delays))
    assert backoff_delay(3, 0.25, 60, 0.0) == 0.5  # jitter halves at most


def test_token_bucket_does_not_delay_the_quiet_case() -> None:
    bucket = TokenBucket.full(2, 1.0, now=0.0)
    assert bucket.take(0.0) == 0 and bucket.take(0.0) == 0  # the burst
    assert bucket.take(0.0) == 1.0  # then one per interval
    quiet = TokenBucket.full(2, 1.0, now=0.0)
    assert quiet.take(300.0) == 0  # a watch that parked 5 minutes is never delayed


class FakeConsul:
    """Answers from a script; records the cursors it was asked with, then parks forever."""

    def __init__(self, script: list[Answer | CatalogError]) -> None:
        self.script = script
        self.cursors: list[int] = []
        self.done = asyncio.Event()

    async def __call__(self, index: int, wait: float) -> Answer:
        self.cursors.append(index)
        if not self.script:
            self.done.set()
            await asyncio.Future()  # park like a blocking query, until cancelled
        item = self.script.pop(0)
        if isinstance(item, CatalogError):
            raise item
        return item


def run_watch(script: list[Answer | CatalogError]) -> tuple[FakeConsul, list[object]]:
    """Run one watch task on a fresh loop with a fake clock: no real waiting anywhere."""
    seen: list[object] = []
    pauses: list[float] = []
    timing = WatchTiming(wait=300, retry_min=0.25, retry_max=60, rate_burst=100, rate_interval=1)

    async def sink(key: str, answer: Answer | None, error: CatalogError | None) -> None:
        seen.append(answer.index if answer else "error")

    async def sleep(delay: float) -> None:
        pauses.append(delay)

    async def main() -> FakeConsul:
        fake = FakeConsul(script)
        watch = Watch("k", fake, sink, timing, clock=lambda: 0.0, sleep=sleep)
        watch.start()
        await asyncio.wait_for(fake.done.wait(), 5)
        watch.stop()
        await asyncio.sleep(0)  # let the cancellation land
        await asyncio.sleep(0)
        assert watch.stopped  # cancelled: the parked query is gone, not abandoned
        return fake

    fake = asyncio.run(main())
    seen.append(("pauses", tuple(round(p, 3) for p in pauses)))
    return fake, seen


def test_watch_follows_the_index_rules() -> None:
    fake, seen = run_watch(
        [Answer(5, []), Answer(5, []), Answer(7, []), Answer(3, []), Answer(0, [])]
    )
    assert fake.cursors == [0, 5, 5, 7, 0, 1]
    assert seen[:-1] == [5, 7, 3, 0]  # the equal answer is not reported
    assert seen[-1] == ("pauses", ())  # the burst allows these: no pause


def test_watch_reports_errors_and_recovery() -> None:
    fake, seen = run_watch(
        [Answer(5, []), CatalogError("down"), CatalogError("down"), Answer(5, [])]
    )
    assert seen[:-1] == [5, "error", "error", 5]  # recovery reported even at the same index
    pauses = seen[-1][1]
    assert len(pauses) == 2 and 0.125 <= pauses[0] <= 0.25 and 0.25 <= pauses[1] <= 0.5
    # the reads after an error are plain ones (they return at once: recovery is seen then)
    assert fake.cursors == [0, 5, 0, 0, 5]


def test_the_watcher_stamps_the_oldest_answer_the_daemon_has_not_taken() -> None:
    """The propagation histogram starts when a changing answer arrived, not when the daemon's
    loop, busy with an earlier apply, got round to it."""
    import time

    from sidecar.config.schema import ConsulSettings
    from sidecar.consul.watcher import CatalogWatcher

    notified: list[float] = []
    watcher = CatalogWatcher(ConsulSettings(), "", lambda: notified.append(time.monotonic()))
    watcher._watches["svc"] = Watch("svc", None, None, None)  # type: ignore[arg-type]
    assert watcher.take_answered() is None
    before = time.monotonic()
    asyncio.run(watcher._on_health("svc", Answer(7, []), None))
    asyncio.run(watcher._on_health("svc", Answer(8, []), None))  # a second, before the take
    stamp = watcher.take_answered()
    assert stamp is not None and before <= stamp <= notified[0]  # the first answer's time
    assert watcher.take_answered() is None  # taken: the next batch starts afresh
    asyncio.run(watcher._on_health("svc", None, CatalogError("down")))
    assert watcher.take_answered() is None and len(notified) == 3  # a failure is no change


def test_a_renewed_watch_asks_again_at_the_same_cursor() -> None:
    """The agent came back: a parked request (its connection perhaps dead unseen) is dropped
    and sent again at the same cursor: no error, no answer reported, no plain read."""
    timing = WatchTiming(wait=300, retry_min=0.25, retry_max=60, rate_burst=100, rate_interval=1)
    seen: list[object] = []

    async def sink(key: str, answer: Answer | None, error: CatalogError | None) -> None:
        seen.append(answer.index if answer else "error")

    async def main() -> list[int]:
        fake = FakeConsul([Answer(5, [])])
        watch = Watch("k", fake, sink, timing, clock=lambda: 0.0)
        watch.start()
        await asyncio.wait_for(fake.done.wait(), 5)  # parked at cursor 5
        fake.done.clear()
        watch.renew()
        await asyncio.wait_for(fake.done.wait(), 5)  # parked again
        assert not watch.stopped
        watch.renew()
        watch.stop()  # renewed and stopped together: stopped wins
        for _ in range(3):
            await asyncio.sleep(0)
        assert watch.stopped
        return fake.cursors

    assert asyncio.run(main()) == [0, 5, 5]
    assert seen == [5]


def test_renew_leaves_a_watch_that_is_not_parked_alone() -> None:
    """In a backoff pause (or the sink) there is no request to drop: renew does nothing."""
    timing = WatchTiming(wait=300, retry_min=0.25, retry_max=60, rate_burst=100, rate_interval=1)
    paused = asyncio.Event

    async def main() -> tuple[list[int], bool]:
        in_pause, release = paused(), paused()

        async def sleep(delay: float) -> None:
            in_pause.set()
            await release.wait()

        async def sink(key: str, answer: Answer | None, error: CatalogError | None) -> None:
            return None

        fake = FakeConsul([CatalogError("down")])
        watch = Watch("k", fake, sink, timing, clock=lambda: 0.0, sleep=sleep)
        watch.start()
        await asyncio.wait_for(in_pause.wait(), 5)
        watch.renew()  # nothing parked: the pause goes on
        await asyncio.sleep(0)
        alive = not watch.stopped
        release.set()
        await asyncio.wait_for(fake.done.wait(), 5)
        watch.stop()
        await asyncio.sleep(0)
        return fake.cursors, alive

    cursors, alive = asyncio.run(main())
    assert alive and cursors == [0, 0]


def test_the_watchers_view_is_complete_once_every_watched_name_answered() -> None:
    """Completeness is remembered between views and looked up again when a name comes (the
    count of watches changes) or an answer changes the entries."""
    from sidecar.config.schema import ConsulSettings
    from sidecar.consul.watcher import SERVICES_KEY, CatalogWatcher

    watcher = CatalogWatcher(ConsulSettings(), "", lambda: None)
    watches = {name: Watch(name, None, None, None) for name in (SERVICES_KEY, "A", "B")}  # type: ignore[arg-type]
    watches["A"].requests, watches["B"].requests = 3, 4
    watcher._watches.update(watches)
    assert not watcher.view().complete  # the services watch has not answered
    watcher._services_seen = True
    assert not watcher.view().complete
    asyncio.run(watcher._on_health("A", Answer(7, []), None))
    assert not watcher.view().complete  # B has not answered
    asyncio.run(watcher._on_health("B", Answer(8, []), None))
    view = watcher.view()
    assert view.complete and [s.name for s in view.snapshot.services] == ["A", "B"]
    assert view.requests == 7
    watcher._watches["C"] = Watch("C", None, None, None)  # type: ignore[arg-type]
    assert not watcher.view().complete  # a new name, no answer yet
    asyncio.run(watcher._on_health("C", Answer(9, []), None))
    assert watcher.view().complete
