"""The daemon's status record (adapter: one JSON file in the runtime directory).

The daemon writes it from its status round (``write_status``: the large record only when it
changed, the clocks of every round in a small file beside it); ``sidecar check`` (a separate
process, possibly in another container) reads both (``read_status``) together with what it
can see of HAProxy itself.
"""

from __future__ import annotations

import hashlib
import json
import time
import zlib
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from sidecar.core.model import DesiredState
from sidecar.host.files import atomic_write

STATUS_FILE = "status.json"


@dataclass(slots=True)
class Status:
    pid: int = 0
    started: float = 0.0  # wall clock, seconds since the epoch
    heartbeat: float = 0.0
    ready: bool = False  # first successful apply done
    catalog_complete: bool = False
    catalog_index: int = 0
    catalog_ok_at: float = 0.0  # wall clock of the last moment the catalog was known fresh
    catalog_error: str = ""
    consul_requests: int = 0
    last_apply_kind: str = ""
    last_apply_ok: bool = True
    last_apply_message: str = ""
    last_apply_at: float = 0.0
    applies: dict[str, int] = field(default_factory=dict)
    reloads: int = 0
    reload_failures: int = 0
    runtime_changes: int = 0
    services: int = 0
    servers_ready: int = 0
    public_ports: list[int] = field(default_factory=list)
    bind: str = ""
    problems: list[str] = field(default_factory=list)
    generation: str = ""  # hash of the applied config
    lock_holder: bool = False  # this gateway holds the fleet's CS writer lock
    cs_status: str = ""  # last CS writer outcome (written, unchanged, not_holder, ...)
    cs_error: str = ""
    old_workers: int = 0  # HAProxy workers of earlier configs still draining
    # CertReport.to_status(), then its JSON text only (``encoded``) once the gauges have it
    certs: dict[str, Any] | str | PackedJSON = field(default_factory=dict)
    drain: dict[str, Any] = field(default_factory=dict)  # core.drain.status_record; {} serving
    applied_index: int = 0  # fleet.registry.catalog_index of the last applied cycle
    # per exposed service (statusview.track_backends), refreshed by the status round only:
    # the apply path stays free of it
    backends: list[dict[str, Any]] = field(default_factory=list)

    def record(self) -> dict[str, Any]:
        """The fields as a mapping, not copied (read it, do not keep it)."""
        return {name: getattr(self, name) for name in _FIELDS}

    def to_json(self) -> str:
        """The record as JSON. The large parts (rows, certificates, problems, ports) are
        re-encoded only when replaced: a round at 1,000 services costs what changed."""
        text = _encode({name: getattr(self, name) for name in _LIGHT})
        heavy = []
        for name in _HEAVY:
            value = getattr(self, name)
            hit = _ENCODED.get(name)
            if hit is None or hit[0] is not value:
                hit = _ENCODED[name] = (value, encoded(value))
            heavy.append(f'"{name}":{hit[1]!s}')
        return f"{text[:-1]},{','.join(heavy)}}}\n"

    def record_apply(self, kind: str, ok: bool, message: str, reloads: int, now: float) -> None:
        self.last_apply_kind, self.last_apply_ok = kind, ok
        self.last_apply_message, self.last_apply_at = message, now
        self.applies[kind] = self.applies.get(kind, 0) + 1
        self.reloads += reloads
        if not ok and kind != "runtime":
            self.reload_failures += 1

    def record_ready(self, desired: DesiredState | None, config: str | None) -> None:
        """After an apply; ``config`` (None until the file is written) sets the generation."""
        self.ready = True
        if desired is not None:
            self.services = len(desired.listed)
            self.servers_ready = sum(b.ready_count for b in desired.backends)
            self.public_ports = list(desired.public_ports)
        if config is not None:
            self.record_config(config)

    def record_config(self, config: str) -> None:
        """The generation: a hash of the config HAProxy serves (the fleet compares them)."""
        self.generation = hashlib.sha256(config.encode()).hexdigest()[:16]

    def record_problems(self, desired: DesiredState | None) -> list[str]:
        """Store the current problems; returns the ones that are new (to log once)."""
        problems = [str(p) for p in desired.problems] if desired else []
        new = sorted(set(problems) - set(self.problems))
        self.problems = problems
        return new


_FIELDS = tuple(f.name for f in fields(Status))
# Replaced, never changed in place, by the daemon (so identity tells whether to re-encode):
_HEAVY = ("backends", "certs", "problems", "public_ports")
_LIGHT = tuple(name for name in _FIELDS if name not in _HEAVY)
_ENCODED: dict[str, tuple[object, str | PackedJSON]] = {}
_encode = json.JSONEncoder(sort_keys=True, separators=(",", ":")).encode  # the C encoder


class RawJSON(str):
    """A heavy part kept as its JSON text only (``encoded``): written as it is."""

    __slots__ = ()


class PackedJSON:
    """A large heavy part kept as its JSON text deflated (``encoded``), inflated only to write
    the file: a row per server of the certificate report is 0.6-1.3 MB of text at 1,000 x 5
    and ~1/15 of that deflated; inflating it costs 2-4 ms in the status round's thread, each
    time status.json is written (only when something but the clocks changed)."""

    __slots__ = ("packed",)

    def __init__(self, text: str) -> None:
        self.packed = zlib.compress(text.encode(), 1)

    def __str__(self) -> str:
        return zlib.decompress(self.packed).decode()


PACK_OVER = 16 * 1024  # characters: smaller texts are kept as they are


def encoded(value: object) -> RawJSON | PackedJSON:
    """``value`` as the JSON the status file holds, so that the value itself can go."""
    if isinstance(value, RawJSON | PackedJSON):
        return value
    text = _encode(value)
    return PackedJSON(text) if len(text) > PACK_OVER else RawJSON(text)


HEARTBEAT_FILE = "heartbeat.json"  # the clocks of every round, beside status.json
# What moves while nothing happens: the clocks on every round, the request count with every
# blocking query that times out (3.3 a second at 1,000 services: were it in status.json, the
# record would be rewritten on every round of the steady state, ~0.1 % of a core).
_MOVING = ("heartbeat", "catalog_ok_at", "consul_requests")
FULL_EVERY = 300.0  # s: status.json rewritten this often all the same (its own clocks for a reader
# that finds no heartbeat.json); more often cost 0.05 % of a core at 1,000 services


@dataclass(frozen=True, slots=True)
class _Written:
    light: str  # the light fields but the clocks, as written
    heavy: tuple[object, ...]  # the heavy values written (kept: identity is their version)
    at: float  # monotonic
    stat: tuple[int, int]  # (inode, mtime) of the file written: replaced by someone else?


_LAST: dict[Path, _Written] = {}


def _stat(path: Path) -> tuple[int, int]:
    try:
        info = path.stat()
    except OSError:
        return (0, 0)
    return (info.st_ino, info.st_mtime_ns)


def write_status(runtime_dir: Path, status: Status, now: float | None = None) -> None:
    """status.json when anything but the clocks changed (and every FULL_EVERY seconds); the
    clocks (heartbeat, catalog_ok_at, consul_requests) in heartbeat.json on every round, which
    ``read_status`` lays over it. At 1,000 services the record is 0.6-1 MB: rewriting it on
    every 2 s round was half of the daemon's idle CPU. Not fsynced: a status lost in a power
    cut is rewritten by the next round."""
    clock = time.monotonic() if now is None else now
    path = runtime_dir / STATUS_FILE
    light = _encode({name: getattr(status, name) for name in _LIGHT if name not in _MOVING})
    heavy = tuple(getattr(status, name) for name in _HEAVY)
    last = _LAST.get(runtime_dir)
    if (
        last is None
        or last.light != light
        or any(a is not b for a, b in zip(last.heavy, heavy, strict=True))
        or clock - last.at >= FULL_EVERY
        or _stat(path) != last.stat
    ):
        atomic_write(path, status.to_json(), mode=0o644, durable=False)
        _LAST[runtime_dir] = _Written(light, heavy, clock, _stat(path))
    beat = {"pid": status.pid, **{name: getattr(status, name) for name in _MOVING}}
    atomic_write(runtime_dir / HEARTBEAT_FILE, _encode(beat), mode=0o644, durable=False)


def read_status(runtime_dir: Path) -> dict[str, Any] | None:
    """status.json with the clocks of heartbeat.json when that is the same daemon's, newer."""
    try:
        data = json.loads((runtime_dir / STATUS_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(data, dict):
        return None
    try:
        beat = json.loads((runtime_dir / HEARTBEAT_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return data
    if not isinstance(beat, dict) or beat.get("pid") != data.get("pid"):
        return data  # another (earlier) daemon's
    clocks = {n: beat[n] for n in _MOVING if isinstance(beat.get(n), int | float)}
    if clocks.get("heartbeat", 0) >= (data.get("heartbeat") or 0):
        data.update(clocks)
    return data
