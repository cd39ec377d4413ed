"""Go-style durations ("15s", "500ms", "1m30s") as used by Consul and HAProxy settings (pure).

Sits beside the pipeline: ``settings`` validates duration strings with it and the adapters that
talk to Consul (``apply.lock``, ``apply.gateway_registry``) convert them to seconds.
"""

from __future__ import annotations

import re

_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}
_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h)")


def parse_duration(text: str) -> float:
    """Seconds in ``text`` (one or more ``<number><ms|s|m|h>`` parts); ValueError otherwise."""
    value = text.strip()
    parts = _PART.findall(value)
    if not value or "".join(n + u for n, u in parts) != value:
        raise ValueError(f"{text!r} is not a duration such as 15s, 500ms or 1m30s")
    return sum(float(number) * _UNITS[unit] for number, unit in parts)


def consul_duration(seconds: float) -> str:
    """``seconds`` as Consul accepts it: whole milliseconds, e.g. ``"15000ms"``."""
    return f"{round(seconds * 1000)}ms"
