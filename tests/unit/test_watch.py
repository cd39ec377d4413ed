import itertools
import threading

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
    """Answers from a script; records the cursors it was asked with."""

    def __init__(self, script: list[Answer | CatalogError]) -> None:
        self.script = script
        self.cursors: list[int] = []
        self.done = threading.Event()

    def __call__(self, index: int, wait: float) -> Answer:
        self.cursors.append(index)
        if not self.script:
            self.done.set()
            threading.Event().wait(10)  # park like a blocking query
            raise CatalogError("parked")
        item = self.script.pop(0)
        if isinstance(item, CatalogError):
            raise item
        return item


def run_watch(script: list[Answer | CatalogError]) -> tuple[FakeConsul, list[object]]:
    fake = FakeConsul(script)
    seen: list[object] = []
    timing = WatchTiming(
        wait=300, retry_min=0.001, retry_max=0.002, rate_burst=100, rate_interval=0.001
    )
    watch = Watch("k", fake, lambda k, a, e: seen.append(a.index if a else "error"), timing)
    watch.start()
    assert fake.done.wait(5)
    watch.stop()
    return fake, seen


def test_watch_follows_the_index_rules() -> None:
    fake, seen = run_watch(
        [Answer(5, []), Answer(5, []), Answer(7, []), Answer(3, []), Answer(0, [])]
    )
    assert fake.cursors == [0, 5, 5, 7, 0, 1]
    assert seen == [5, 7, 3, 0]  # the equal answer is not reported


def test_watch_reports_errors_and_recovery() -> None:
    fake, seen = run_watch(
        [Answer(5, []), CatalogError("down"), CatalogError("down"), Answer(5, [])]
    )
    assert seen == [5, "error", "error", 5]  # recovery is reported even at the same index
    assert fake.cursors == [0, 5, 5, 5, 5]
