"""Parsing HAProxy's CLI answers into values (pure).

``show proc`` on the master CLI tells which workers run and how many reloads failed;
``show servers state`` on the admin socket tells what each server slot really points at, which
drift repair compares with the desired state.
"""

from __future__ import annotations

from dataclasses import dataclass

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


def parse_servers_state(text: str) -> tuple[ActualServer, ...]:
    """Parse ``show servers state`` (one line per server after the version and header)."""
    result: list[ActualServer] = []
    header: list[str] = []
    for line in text.splitlines():
        if line.startswith("#"):
            header = line.lstrip("# ").split()
            continue
        fields = line.split()
        if not header or len(fields) < len(header) - 2:
            continue
        row = dict(zip(header, fields, strict=False))
        try:
            admin = int(row["srv_admin_state"])
            weight = int(row["srv_uweight"])
            state = ServerState.READY
            if admin & _MAINT:
                state = ServerState.MAINT
            elif admin & _DRAIN or weight == 0:
                state = ServerState.DRAIN
            server = Server(
                row["srv_name"], row["srv_addr"], int(row["srv_port"]), state, weight=weight
            )
            result.append(ActualServer(row["be_name"], server, int(row["srv_op_state"])))
        except (KeyError, ValueError):
            continue
    return tuple(result)
