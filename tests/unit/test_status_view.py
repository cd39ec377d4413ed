"""``sidecar status`` for people: the rows the daemon keeps and the table (plain values)."""

from __future__ import annotations

from sidecar.core.model import Backend, DesiredState, Protocol, Server, ServerState
from sidecar.health.statusview import ago, status_lines, track_backends

NOW = 1_900_000_000.0


def desired(ready: int, down: int = 0) -> DesiredState:
    servers = tuple(Server(f"s{i}", "10.0.0.1", 9000 + i, ServerState.READY) for i in range(ready))
    servers += tuple(Server(f"d{i}", "10.0.0.2", 9100 + i, ServerState.MAINT) for i in range(down))
    return DesiredState((Backend("Framework", "Alpha", Protocol.DIPS, 9135, servers),
                         Backend("Data", "Beta", Protocol.DIPS, 9140, ())))  # fmt: skip


def test_rows_keep_their_change_time_while_nothing_changes() -> None:
    first = track_backends([], desired(2), NOW)
    assert first == [
        {"service": "Data/Beta", "port": 9140, "ready": 0, "total": 0, "changed": NOW},
        {"service": "Framework/Alpha", "port": 9135, "ready": 2, "total": 2, "changed": NOW},
    ]
    same = track_backends(first, desired(2), NOW + 60)
    assert [r["changed"] for r in same] == [NOW, NOW]
    moved = track_backends(same, desired(1, down=1), NOW + 90)
    assert [r["changed"] for r in moved] == [NOW, NOW + 90]
    assert track_backends(moved, None, NOW + 99) == moved


def test_ago() -> None:
    assert [ago(s) for s in (None, -1, 5, 125, 7200, 3 * 86400)] == ["-", "-", "5s", "2m", "2h",
                                                                     "3d"]  # fmt: skip


def test_table_header_rows_and_inert_catalog_text() -> None:
    record = {
        "ready": True, "pid": 42, "generation": "abc", "catalog_ok_at": NOW - 3,
        "catalog_index": 812, "lock_holder": True, "last_apply_ok": True,
        "backends": track_backends([], desired(1, down=1), NOW - 600),
        "problems": ["Data/Beta: instance x: bad port \x1b[31m", "Evil/\x1bX: bad"],
        "drain": {"phase": "grace"},
    }  # fmt: skip
    lines = status_lines(record, NOW, holder="node1/dirac-gw.test", lagging=("gw2\n",))
    assert lines[0] == "gateway: READY, DRAINED (grace); pid 42, generation abc"
    assert lines[1] == ("catalog data: 3s old, index 812; CS writer: node1/dirac-gw.test "
                        "(this gateway); lagging: gw2\\n")  # fmt: skip
    assert lines[2].split() == ["SERVICE", "PORT", "READY", "CHANGED", "PROBLEMS"]
    assert lines[3].split()[:4] == ["Data/Beta", "9140", "0/0", "10m"]
    assert "\\x1b[31m" in lines[3] and "(refusing)" in lines[3]
    assert lines[4].split() == ["Framework/Alpha", "9135", "1/2", "10m"]
    assert lines[5].startswith("skipped catalog entries: 1, first: Evil/\\x1bX")
    assert all("\x1b" not in line and "\n" not in line for line in lines)


def test_table_without_consul_facts_or_services() -> None:
    lines = status_lines({"ready": False, "catalog_ok_at": 0}, NOW)
    assert lines[0].startswith("gateway: NOT READY")
    assert "never read" in lines[1] and "CS writer: ?" in lines[1] and "lagging: ?" in lines[1]
    assert lines[-1] == "(no service exposed)"
