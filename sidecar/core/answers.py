"""Parsing HAProxy's CLI answers into values (pure).

``show proc`` on the master CLI tells which workers run and how many reloads failed;
``show servers state`` on the admin socket tells what each server slot really points at, which
drift repair compares with the desired state.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from operator import itemgetter

from sidecar.core.model import Server, ServerState

# srv_admin_state bits (HAProxy include/haproxy/server-t.h).
ADMF_FMAINT, ADMF_IMAINT, ADMF_CMAINT = 0x01, 0x02, 0x04
ADMF_FDRAIN, ADMF_IDRAIN, ADMF_RMAINT, ADMF_HMAINT = 0x08, 0x10, 0x20, 0x40
_MAINT = ADMF_FMAINT | ADMF_IMAINT | ADMF_RMAINT | ADMF_HMAINT
_DRAIN = ADMF_FDRAIN | ADMF_IDRAIN


@dataclass(frozen=True, slots=True)
class ProcInfo:
    master_pid: int
    reloads: int
    failed: int
    current_worker: int | None  # the worker started by the last reload
    old_workers: tuple[int, ...]  # still draining connections of earlier configs


def parse_show_proc(text: str) -> ProcInfo:
    """Parse the master CLI's ``show proc`` (HAProxy 2.6 layout)."""
    master_pid, reloads, failed = 0, 0, 0
    current: int | None = None
    old: list[int] = []
    for line in text.splitlines():
        fields = line.split()
        if len(fields) < 3 or not fields[0].isdigit():
            continue
        pid, kind = int(fields[0]), fields[1]
        if kind == "master":
            master_pid, reloads = pid, int(fields[2]) if fields[2].isdigit() else 0
            if "[failed:" in line:
                failed = int(line.split("[failed:", 1)[1].split("]", 1)[0].strip() or 0)
        elif kind == "worker":
            if fields[2] == "0" and current is None:
                current = pid
            else:
                old.append(pid)
    return ProcInfo(master_pid, reloads, failed, current, tuple(old))


@dataclass(frozen=True, slots=True)
class ActualServer:
    backend: str
    server: Server
    operational: int  # 0 down, 1 starting, 2 up, 3 stopping


_COLUMNS = ("be_name", "srv_name", "srv_addr", "srv_port", "srv_op_state", "srv_admin_state",
            "srv_uweight")  # fmt: skip
Row = tuple[str, ...]  # the _COLUMNS of one server line


_LINE = re.compile(r"[^\n]+")


def _picked(text: str) -> Iterator[Row]:
    """The ``_COLUMNS`` of each server line, one line at a time (no list of 5,000 lines).
    Column positions come from the header once (not a dict per row)."""
    pick: Callable[[list[str]], Row] | None = None
    least = 0
    for match in _LINE.finditer(text):
        line = match.group()
        if line.startswith("#"):
            header = line.lstrip("# ").split()
            known = set(_COLUMNS) <= set(header)
            pick = itemgetter(*(header.index(c) for c in _COLUMNS)) if known else None
            least = len(header) - 2
            continue
        fields = line.split()
        if pick is not None and len(fields) >= least:
            yield pick(fields)


def servers_state_digest(text: str) -> bytes:
    """A digest of the columns drift repair reads (``_COLUMNS``), without holding the rows.

    Drift repair reads the whole answer every ``drift_interval`` (5,000 lines at 1,000
    services x 5) and, when it is what it last found clean, stops there: built as rows, those
    were ~2 MB of small objects at once every 30 s, which the allocator kept (RSS +~2 MB).
    """
    digest = hashlib.blake2b(digest_size=16)
    for row in _picked(text):
        digest.update("\t".join(row).encode("utf-8", "surrogatepass"))
        digest.update(b"\n")
    return digest.digest()


def parse_servers_state(text: str) -> tuple[ActualServer, ...]:
    """Parse ``show servers state`` into values; malformed lines are skipped."""
    result: list[ActualServer] = []
    maint, drain, ready = ServerState.MAINT, ServerState.DRAIN, ServerState.READY
    for be, name, addr, port, op, admin, weight in _picked(text):
        try:
            admin_bits, uweight = int(admin), int(weight)
            state = maint if admin_bits & _MAINT else drain if admin_bits & _DRAIN else ready
            if uweight == 0 and state is ready:
                state = drain
            result.append(ActualServer(be, Server(name, addr, int(port), state, weight=uweight),
                                       int(op)))  # fmt: skip
        except ValueError:
            continue
    return tuple(result)
