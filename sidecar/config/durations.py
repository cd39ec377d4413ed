"""Durations: one type for every time setting (pure).

A duration in the settings file is either a Go-style string as Consul and HAProxy write them
("15s", "500ms", "1m30s") or a plain number of seconds; inside the sidecar it is always a float
of seconds. ``haproxy_time`` and ``consul_duration`` turn seconds back into the text each
program reads, so nothing an operator typed reaches a rendered file unparsed.
"""

from __future__ import annotations

import math
import re

_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d)", re.ASCII)


def parse_duration(text: str) -> float:
    """Seconds in ``text`` (one or more ``<number><ms|s|m|h|d>`` parts); ValueError otherwise."""
    value = text.strip()
    parts = _PART.findall(value)
    if not value or "".join(n + u for n, u in parts) != value:
        shown = text if len(text) <= 40 else text[:37] + "..."
        raise ValueError(f"{shown!r} is not a duration such as 15s, 500ms or 1m30s")
    return sum(float(number) * _UNITS[unit] for number, unit in parts)


def to_seconds(value: object) -> float:
    """A settings value (duration string or number of seconds) -> seconds; ValueError."""
    if isinstance(value, bool):
        raise ValueError(f"expected a duration such as 15s, got {value!r}")
    if isinstance(value, int | float):
        seconds = float(value)
    elif isinstance(value, str):
        seconds = parse_duration(value)
    else:
        raise ValueError(f"expected a duration such as 15s, got {type(value).__name__}")
    if not math.isfinite(seconds) or seconds < 0:
        raise ValueError(f"{value!r} is not a finite, non-negative duration")
    return seconds


def consul_duration(seconds: float) -> str:
    """``seconds`` as Consul accepts it: whole milliseconds, e.g. ``"15000ms"``."""
    return f"{round(seconds * 1000)}ms"


def haproxy_time(seconds: float) -> str:
    """``seconds`` as an HAProxy time value: ``"1h"``, ``"660s"``, ``"500ms"`` (whole ms)."""
    millis = round(seconds * 1000)
    if millis and millis % 3_600_000 == 0:
        return f"{millis // 3_600_000}h"
    return f"{millis // 1000}s" if millis % 1000 == 0 else f"{millis}ms"


def show_duration(seconds: float) -> str:
    """A short human form for messages: ``"15s"``, ``"1.5s"``, ``"250ms"``."""
    if seconds < 1:
        return f"{round(seconds * 1000)}ms"
    return f"{seconds:g}s"
