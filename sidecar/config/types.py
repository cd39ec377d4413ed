"""The value types of the settings schema (pure): what a TOML value may be, and its bounds.

TOML already knows strings, integers, floats and booleans; these types add what a gateway
operator means: durations, ports, host names, IP addresses, plain file paths and HAProxy
tokens. Each rejects anything else with a short reason that ``config.loader`` prefixes with the
key path. Values that end up in the HAProxy configuration are checked here so that no setting
can inject a line into it.
"""

from __future__ import annotations

import re
from typing import Annotated

from annotated_types import Ge, Gt, Le

from sidecar.base import validate
from sidecar.config.durations import to_seconds
from sidecar.config.rules import Rule

# Printable text without control characters: a newline in a setting must never become a
# line of its own in the HAProxy config, the CS file or the log.
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def _plain(value: str) -> str:
    if _CONTROL.search(value):
        raise ValueError("must not contain control characters (newline, tab, escape, ...)")
    return value


def _host(value: str) -> str:
    return validate.host(value, "host name")


def _ip(value: str) -> str:
    canonical = validate.ip_address(value)
    if canonical is None:
        raise ValueError(f"{value!r} is not an IP address")
    return canonical


def _port(value: int) -> int:
    return validate.port(value)


def _tokenish(value: str) -> str:
    """One HAProxy/Consul word: letters, digits and ``_.-/:@`` (no spaces, no quotes)."""
    if not re.fullmatch(r"[A-Za-z0-9_.:/@-]*", value, re.ASCII):
        raise ValueError(f"{value[:40]!r} may only contain letters, digits and _.:/@-")
    return value


STRICT = Rule(strict=True)
StrictStr = Annotated[str, STRICT]
Text = Annotated[str, STRICT, Rule(after=_plain)]
Word = Annotated[str, STRICT, Rule(after=_tokenish)]
FilePath = Annotated[str, STRICT, Rule(after=_plain)]  # "" = unset; relative to the file
HostName = Annotated[str, STRICT, Rule(after=_host)]
IPAddress = Annotated[str, STRICT, Rule(after=_ip)]
Port = Annotated[int, STRICT, Rule(after=_port)]
PortOrZero = Annotated[int, STRICT, Ge(0), Le(65535)]
Count = Annotated[int, STRICT, Ge(0)]
PositiveCount = Annotated[int, STRICT, Ge(1)]
Flag = Annotated[bool, STRICT]


def _number(value: object) -> object:
    """TOML numbers for a ratio or a float setting: an integer is fine, a bool is not."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"expected a number, got {value!r}")
    return float(value)


Number = Annotated[float, Rule(before=_number)]
# Every time setting: "15s", "500ms", "1m30s" or a number of seconds; a float inside.
DURATION = Rule(before=to_seconds)
Seconds = Annotated[float, DURATION]

PositiveSeconds = Annotated[float, DURATION, Gt(0.0)]
