"""Taking one gateway out of service: the drain state and every decision about it (pure).

Sits beside the pipeline, not in it: ``sidecar drain`` writes a :class:`DrainState` into the
runtime directory (``host.drainfile``), the daemon reads it at every status round
(``daemon.drain``) and ``sidecar check`` reads it too. Everything here takes values (the
state, ``now`` in wall-clock seconds, HAProxy's frontend table as text) and returns values.

A drain goes through three phases, measured from ``since`` (when it was asked):

- ``grace``: the gateway's names leave the CS URL lists and Consul DNS (its ``dirac-gateway``
  registration is in maintenance), but HAProxy still accepts new connections, so that clients
  that have not yet re-read the CS or DNS keep working;
- ``closed``: the frontends are paused (new connections are refused at once, so DIRAC clients
  fail over to their next URL), the connections already open go on;
- drained: ``closed`` and no connection left, or the deadline passed.

Undrain removes the state: the frontends are resumed and the registration leaves maintenance.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

DRAIN_FILE = "drain.json"
REASON_LIMIT = 200  # characters of the operator's reason kept (it reaches Consul and logs)


class Phase(StrEnum):
    SERVING = "serving"  # not drained
    GRACE = "grace"  # out of the CS and DNS, new connections still served
    CLOSED = "closed"  # frontends paused, open connections finishing


@dataclass(frozen=True, slots=True)
class DrainState:
    """What ``sidecar drain`` asked for; the file survives a daemon restart."""

    since: float  # wall clock, seconds since the epoch
    grace: float  # seconds during which new connections are still accepted
    deadline: float  # seconds after ``since`` when the drain counts as done regardless
    reason: str = ""

    @property
    def closes_at(self) -> float:
        return self.since + self.grace

    @property
    def ends_at(self) -> float:
        return self.since + max(self.deadline, self.grace)


def encode(state: DrainState) -> str:
    data = {"since": state.since, "grace": state.grace, "deadline": state.deadline,
            "reason": state.reason}  # fmt: skip
    return json.dumps(data, sort_keys=True) + "\n"


def _seconds(value: object, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ValueError(f"{what} is not a number")
    if value < 0:
        raise ValueError(f"{what} is negative")
    return float(value)


def decode(text: str) -> DrainState:
    """Parse the drain file; raises ``ValueError`` with the reason."""
    try:
        data = json.loads(text)
    except ValueError as exc:
        raise ValueError(f"not JSON: {exc}") from None
    if not isinstance(data, dict):
        raise ValueError("not a JSON object")
    reason = data.get("reason", "")
    return DrainState(
        since=_seconds(data.get("since"), "since"),
        grace=_seconds(data.get("grace"), "grace"),
        deadline=_seconds(data.get("deadline"), "deadline"),
        reason=str(reason)[:REASON_LIMIT] if isinstance(reason, str) else "",
    )


def phase(state: DrainState | None, now: float) -> Phase:
    if state is None:
        return Phase.SERVING
    return Phase.GRACE if now < state.closes_at else Phase.CLOSED


# --- HAProxy's frontends ----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class FrontendLoad:
    """One frontend of one worker (``show stat -1 1 -1``)."""

    name: str
    sessions: int  # scur: connections open now
    status: str  # OPEN, PAUSED (disable frontend), STOP


def parse_frontends(text: str) -> tuple[FrontendLoad, ...]:
    """The FRONTEND rows of ``show stat`` (CSV with a ``# pxname,svname,...`` header)."""
    header: list[str] = []
    rows: list[FrontendLoad] = []
    for line in text.splitlines():
        if line.startswith("#"):
            header = line.lstrip("# ").split(",")
            continue
        fields = line.split(",")
        if not header or len(fields) < len(header) - 1:
            continue
        row = dict(zip(header, fields, strict=False))
        if row.get("svname") != "FRONTEND":
            continue
        try:
            sessions = int(row.get("scur") or 0)
        except ValueError:
            continue
        rows.append(FrontendLoad(row.get("pxname", ""), sessions, row.get("status", "")))
    return tuple(rows)


def gateway_frontends(loads: tuple[FrontendLoad, ...]) -> tuple[FrontendLoad, ...]:
    """The public frontends (``fe_<port>``, as the template names them)."""
    return tuple(f for f in loads if f.name.startswith("fe_") and f.name[3:].isdigit())


def frontend_commands(wanted: Phase, loads: tuple[FrontendLoad, ...]) -> tuple[str, ...]:
    """Runtime API commands that bring the public frontends to what ``wanted`` needs:
    paused while ``closed``, accepting otherwise (a reload or an undrain)."""
    mine = gateway_frontends(loads)
    if wanted is Phase.CLOSED:
        return tuple(f"disable frontend {f.name}" for f in mine if f.status == "OPEN")
    return tuple(f"enable frontend {f.name}" for f in mine if f.status == "PAUSED")


# --- progress, as ``sidecar drain`` prints it --------------------------------------------------


@dataclass(frozen=True, slots=True)
class Progress:
    done: bool  # stop waiting
    drained: bool  # no connection left (False with ``done``: the deadline passed)
    line: str


def progress(state: DrainState, now: float, applied: str, connections: int | None) -> Progress:
    """One progress line of ``sidecar drain``; ``applied`` is the phase the daemon reports
    in its status record ("" while it has not seen the drain), ``connections`` the open
    connections of every HAProxy worker (None: HAProxy does not answer)."""
    wanted = phase(state, now)
    left = "?" if connections is None else str(connections)
    to_deadline = max(0.0, state.ends_at - now)
    if applied != wanted.value:
        seen = "not yet seen by the daemon" if not applied else f"daemon at {applied}"
        line = f"drain: {wanted.value} ({seen}), {left} connections left"
    elif wanted is Phase.GRACE:
        line = (f"drain: grace, new connections still served for "
                f"{state.closes_at - now:.0f}s, {left} connections open")  # fmt: skip
    else:
        line = f"drain: closed, {left} connections left, deadline in {to_deadline:.0f}s"
    if wanted is Phase.CLOSED and applied == wanted.value and connections == 0:
        return Progress(True, True, "drained: no connection left")
    if now >= state.ends_at:
        return Progress(True, False, f"deadline passed: {left} connections left")
    return Progress(False, False, line)


def status_record(state: DrainState | None, now: float, maintenance: bool,
                  paused: int, connections: int | None) -> dict[str, Any]:  # fmt: skip
    """The ``drain`` part of status.json (empty when serving)."""
    if state is None:
        return {}
    return {
        "phase": phase(state, now).value,
        "since": state.since,
        "closes_at": state.closes_at,
        "ends_at": state.ends_at,
        "reason": state.reason,
        "maintenance": maintenance,
        "frontends_paused": paused,
        "connections": connections,
    }


def applied_phase(status: dict[str, Any] | None, now: float, max_age: float) -> str | None:
    """The drain phase the daemon reports in ``status.json`` ("" when serving), or None when
    no daemon is alive (no heartbeat within ``max_age`` seconds)."""
    if not status:
        return None
    beat = status.get("heartbeat")
    if isinstance(beat, bool) or not isinstance(beat, int | float) or now - beat > max_age:
        return None
    drain = status.get("drain") or {}
    return str(drain.get("phase", "")) if isinstance(drain, dict) else ""
