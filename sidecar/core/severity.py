"""Severity levels shared by the certificate report, ``sidecar check`` and metrics (pure).

The values are the Nagios plugin exit codes, which Consul script checks read the same way.
"""

from __future__ import annotations

from collections.abc import Iterable
from enum import IntEnum


class Severity(IntEnum):
    OK = 0
    WARNING = 1
    CRITICAL = 2
    UNKNOWN = 3

    @property
    def label(self) -> str:
        return self.name

    @classmethod
    def parse(cls, text: object) -> Severity:
        """``"ok"``/``"WARNING"``/... (as written in status.json); anything else is UNKNOWN."""
        try:
            return cls[str(text).upper()]
        except KeyError:
            return cls.UNKNOWN


def worst(levels: Iterable[Severity]) -> Severity:
    """The worst of ``levels`` for OK/WARNING/CRITICAL; UNKNOWN ranks between OK and WARNING
    only when nothing else is known (a CRITICAL or WARNING always wins)."""
    found = set(levels)
    for level in (Severity.CRITICAL, Severity.WARNING, Severity.UNKNOWN):
        if level in found:
            return level
    return Severity.OK
