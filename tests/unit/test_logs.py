"""``host.logs``: every record one inert line, and the same line at most N times a window."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator
from dataclasses import dataclass, field

import pytest

from sidecar.host.logs import (
    MAX_KEYS,
    REPEAT_LIMIT,
    InertFormatter,
    JsonFormatter,
    RepeatLimiter,
    setup_logging,
)

FORGED = "node\nERROR forged"
CLEAR = "\x1b[2J"


@dataclass
class Rig:
    """A logger writing through one handler (formatter + limiter) into a string, fake clock."""

    logger: logging.Logger
    stream: io.StringIO
    limiter: RepeatLimiter
    now: list[float] = field(default_factory=lambda: [1000.0])

    def lines(self) -> list[str]:
        return self.stream.getvalue().splitlines()


def rig(name: str, formatter: logging.Formatter | None = None, limit: int = REPEAT_LIMIT,
        max_keys: int = MAX_KEYS) -> Rig:  # fmt: skip
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(formatter or InertFormatter("%(levelname)s %(name)s: %(message)s"))
    now = [1000.0]
    limiter = RepeatLimiter(handler.handle, limit, 60.0, clock=lambda: now[0], max_keys=max_keys)
    handler.addFilter(limiter)
    logger = logging.getLogger(f"test_logs.{name}")
    logger.handlers[:] = [handler]
    logger.propagate = False
    logger.setLevel(logging.DEBUG)
    return Rig(logger, stream, limiter, now)


# --- inert lines ------------------------------------------------------------------------------


def test_a_hostile_record_is_one_line_with_visible_escapes() -> None:
    r = rig("plain")
    r.logger.warning("skipping %s on %s", FORGED, CLEAR)
    assert r.lines() == ["WARNING test_logs.plain: skipping node\\nERROR forged on \\x1b[2J"]
    assert "\x1b" not in r.stream.getvalue()


def test_the_traceback_stays_multi_line_but_inert() -> None:
    r = rig("trace")
    try:
        raise ValueError(f"bad {CLEAR}")
    except ValueError:
        r.logger.exception("catalog read of %s failed", FORGED)
    lines = r.lines()
    assert lines[0] == "ERROR test_logs.trace: catalog read of node\\nERROR forged failed"
    assert lines[1] == "Traceback (most recent call last):"
    assert lines[-1] == "ValueError: bad \\x1b[2J"
    assert "\x1b" not in r.stream.getvalue()


def test_json_is_one_ascii_line_and_its_message_is_inert() -> None:
    r = rig("json", JsonFormatter())
    r.logger.error("node %s %s \u202e", FORGED, CLEAR)
    text = r.stream.getvalue()
    assert text.count("\n") == 1 and text.isascii()
    assert "\x1b" not in text
    data = json.loads(text)
    assert data["level"] == "ERROR" and data["logger"] == "test_logs.json"
    # Decoded, the message is still inert (a reader doing ``jq -r .message`` is safe too).
    assert data["message"] == "node node\\nERROR forged \\x1b[2J \\u202e"


def test_json_exception_is_inert() -> None:
    r = rig("jsonexc", JsonFormatter())
    try:
        raise RuntimeError(CLEAR)
    except RuntimeError:
        r.logger.exception("failed")
    data = json.loads(r.stream.getvalue())
    assert data["exception"].endswith("RuntimeError: \\x1b[2J")


def test_a_broken_logging_call_still_reaches_the_handler() -> None:
    r = rig("broken")
    r.logger.handlers[0].handleError = lambda record: r.stream.write("handled\n")  # type: ignore[method-assign]
    r.logger.warning("%s %s", "only one")
    assert r.lines() == ["handled"]


# --- the repeat limiter -----------------------------------------------------------------------


def test_five_pass_the_rest_are_dropped_and_counted_at_roll_over() -> None:
    r = rig("repeat")
    for _ in range(12):
        r.logger.warning("Consul unreachable: %s", "refused")
    assert r.lines() == ["WARNING test_logs.repeat: Consul unreachable: refused"] * 5
    r.now[0] += 59.9
    r.logger.warning("Consul unreachable: %s", "refused")
    assert len(r.lines()) == 5  # still the same window
    r.now[0] += 0.1
    r.logger.warning("Consul unreachable: %s", "refused")
    assert r.lines()[5:] == [
        "WARNING test_logs.repeat: suppressed 8 repeats of: Consul unreachable: refused",
        "WARNING test_logs.repeat: Consul unreachable: refused",  # a new window starts
    ]


def test_the_summary_comes_with_any_later_record_and_at_its_level_and_logger() -> None:
    r = rig("other")
    noisy = logging.getLogger("test_logs.other.noisy")
    for _ in range(7):
        noisy.error("bad entry")
    r.now[0] += 61
    r.logger.info("something else")
    assert r.lines()[-2:] == [
        "ERROR test_logs.other.noisy: suppressed 2 repeats of: bad entry",
        "INFO test_logs.other: something else",
    ]


def test_a_window_without_drops_ends_silently() -> None:
    r = rig("quiet")
    for _ in range(3):
        r.logger.warning("x")
    r.now[0] += 61
    r.logger.warning("x")
    assert r.lines() == ["WARNING test_logs.quiet: x"] * 4


def test_the_key_is_logger_level_template_and_arguments() -> None:
    r = rig("keys")
    for _ in range(6):
        r.logger.warning("bad %s", "a")
        r.logger.warning("bad %s", "b")  # other arguments: another line
        r.logger.error("bad %s", "a")  # other level
        logging.getLogger("test_logs.keys.child").warning("bad %s", "a")  # other logger
        r.logger.warning("bad a")  # other template, same text
    assert len(r.lines()) == 5 * 5


def test_the_summary_quotes_the_first_100_characters_inert() -> None:
    r = rig("sample")
    long = "x" * 150
    for _ in range(6):
        r.logger.warning("node %s %s", FORGED, long)
    r.limiter.flush()
    summary = r.lines()[-1]
    quoted = ("node " + FORGED + " " + long)[:100].replace("\n", "\\n")
    assert summary == f"WARNING test_logs.sample: suppressed 1 repeats of: {quoted}"
    assert len(r.lines()) == 6


def test_memory_is_bounded_and_an_evicted_line_is_reported_first() -> None:
    r = rig("bounded", max_keys=50)
    for _ in range(6):
        r.logger.warning("first")  # 1 suppressed
    for i in range(5000):
        r.logger.warning("line %d", i)
        assert len(r.limiter) <= 50
    lines = r.lines()
    assert "WARNING test_logs.bounded: suppressed 1 repeats of: first" in lines
    assert len(lines) == 5 + 1 + 5000


def test_the_default_key_bound() -> None:
    r = rig("default_bound")
    for i in range(MAX_KEYS + 500):
        r.logger.debug("catalog entry %d skipped", i)
    assert len(r.limiter) == MAX_KEYS


def test_limit_zero_turns_it_off() -> None:
    r = rig("off", limit=0)
    for _ in range(50):
        r.logger.warning("same")
    assert len(r.lines()) == 50


def test_bad_parameters_are_refused() -> None:
    with pytest.raises(ValueError, match="repeat"):
        RepeatLimiter(lambda record: None, limit=-1)
    with pytest.raises(ValueError, match="repeat"):
        RepeatLimiter(lambda record: None, window=0)


# --- setup_logging ----------------------------------------------------------------------------


@pytest.fixture
def root_restored() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    try:
        yield
    finally:
        root.handlers[:] = handlers
        root.setLevel(level)


@pytest.mark.usefixtures("root_restored")
def test_setup_logging_plain(capsys: pytest.CaptureFixture[str]) -> None:
    setup_logging("info", "plain")  # the positional call of cli/common.py
    logging.getLogger("test_logs.setup").info("node %s", FORGED)
    logging.getLogger("test_logs.setup").debug("not shown")
    [line] = capsys.readouterr().err.splitlines()
    assert line.endswith(" INFO test_logs.setup: node node\\nERROR forged")


@pytest.mark.usefixtures("root_restored")
def test_setup_logging_json_and_a_second_call_reports_what_the_first_suppressed(
    capsys: pytest.CaptureFixture[str],
) -> None:
    setup_logging("DEBUG", "json", repeat_limit=2, repeat_window=30.0)
    for _ in range(5):
        logging.getLogger("test_logs.setup").warning("again %s", CLEAR)
    setup_logging("DEBUG", "json")  # SIGHUP: the old handler goes, reporting first
    messages = [json.loads(line)["message"] for line in capsys.readouterr().err.splitlines()]
    assert messages == ["again \\x1b[2J"] * 2 + ["suppressed 3 repeats of: again \\x1b[2J"]
