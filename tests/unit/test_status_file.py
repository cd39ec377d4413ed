"""status.json is rewritten only when something but the clocks changed; the clocks of every
round go to heartbeat.json, which ``read_status`` lays over it (issue 13: idle CPU at scale)."""

from __future__ import annotations

import json
from pathlib import Path

from sidecar.health.status import (
    FULL_EVERY,
    HEARTBEAT_FILE,
    STATUS_FILE,
    PackedJSON,
    Status,
    encoded,
    read_status,
)
from sidecar.health.status import write_status as write


def status(**changes: object) -> Status:
    st = Status(pid=42, heartbeat=100.0, catalog_ok_at=100.0, backends=[{"name": "F/S"}])
    for name, value in changes.items():
        setattr(st, name, value)
    return st


def mtime(path: Path) -> int:
    return path.stat().st_mtime_ns


def test_a_round_with_only_new_clocks_writes_only_the_heartbeat(tmp_path: Path) -> None:
    st = status()
    write(tmp_path, st, now=0.0)
    full = tmp_path / STATUS_FILE
    before = (full.read_text(), mtime(full), full.stat().st_ino)
    st.heartbeat, st.catalog_ok_at = 102.0, 102.0
    write(tmp_path, st, now=2.0)
    assert (full.read_text(), mtime(full), full.stat().st_ino) == before
    assert json.loads(full.read_text())["heartbeat"] == 100.0
    seen = read_status(tmp_path)
    assert seen is not None and seen["heartbeat"] == 102.0 and seen["catalog_ok_at"] == 102.0
    assert seen["backends"] == [{"name": "F/S"}]


def test_the_request_count_moves_with_the_clocks(tmp_path: Path) -> None:
    """Every parked query that times out is a request: at 1,000 services a few a second, so
    a count in status.json would rewrite the whole record on every round of the steady state."""
    st = status(consul_requests=1000)
    write(tmp_path, st, now=0.0)
    full = tmp_path / STATUS_FILE
    before = (mtime(full), full.stat().st_ino)
    st.heartbeat, st.consul_requests = 102.0, 1007
    write(tmp_path, st, now=2.0)
    assert (mtime(full), full.stat().st_ino) == before
    assert json.loads(full.read_text())["consul_requests"] == 1000
    assert (read_status(tmp_path) or {})["consul_requests"] == 1007


def test_any_other_change_rewrites_the_record(tmp_path: Path) -> None:
    st = status()
    write(tmp_path, st, now=0.0)
    st.ready = True
    write(tmp_path, st, now=2.0)
    assert json.loads((tmp_path / STATUS_FILE).read_text())["ready"] is True
    st.backends = [{"name": "F/S"}, {"name": "F/T"}]  # a heavy part replaced
    write(tmp_path, st, now=4.0)
    assert len(json.loads((tmp_path / STATUS_FILE).read_text())["backends"]) == 2


def test_the_record_is_rewritten_every_full_every_and_when_replaced(tmp_path: Path) -> None:
    st = status()
    write(tmp_path, st, now=0.0)
    st.heartbeat = 200.0
    write(tmp_path, st, now=FULL_EVERY)
    assert json.loads((tmp_path / STATUS_FILE).read_text())["heartbeat"] == 200.0
    (tmp_path / STATUS_FILE).unlink()  # removed by hand: the next round writes it again
    write(tmp_path, st, now=FULL_EVERY + 2)
    assert (tmp_path / STATUS_FILE).exists()


def test_a_heartbeat_of_another_daemon_or_older_is_ignored(tmp_path: Path) -> None:
    write(tmp_path, status(), now=0.0)
    beat = tmp_path / HEARTBEAT_FILE
    beat.write_text(json.dumps({"pid": 7, "heartbeat": 500.0, "catalog_ok_at": 500.0}))
    assert (read_status(tmp_path) or {})["heartbeat"] == 100.0
    beat.write_text(json.dumps({"pid": 42, "heartbeat": 50.0, "catalog_ok_at": 50.0}))
    assert (read_status(tmp_path) or {})["heartbeat"] == 100.0
    beat.write_text("{not json")
    assert (read_status(tmp_path) or {})["heartbeat"] == 100.0


def test_a_part_kept_as_its_text_is_written_as_the_value_was(tmp_path: Path) -> None:
    """The daemon keeps the certificate rows as JSON text once the gauges have them: the
    file says exactly what it said with the rows themselves."""
    rows = {"status": "OK", "servers": [{"backend": "bk", "server": "s1", "days_left": 9.5}]}
    with_rows = Status(pid=1, certs=rows)
    as_text = Status(pid=1, certs=encoded(rows))
    assert json.loads(as_text.to_json()) == json.loads(with_rows.to_json())
    assert json.loads(as_text.to_json())["certs"] == rows
    assert encoded(as_text.certs) is as_text.certs  # encoding twice changes nothing
    write(tmp_path, as_text, now=0.0)
    assert read_status(tmp_path)["certs"]["servers"][0]["server"] == "s1"  # type: ignore[index]


def test_a_large_part_is_kept_deflated_and_written_as_the_value_was(tmp_path: Path) -> None:
    """5,000 certificate rows (1,000 x 5): kept deflated, a fraction of their text."""
    rows = {"status": "WARNING", "servers": [
        {"backend": f"Sys_S{k // 5}", "server": f"s{k}-0a1b2c3d", "days_left": 300.5 - k / 7,
         "problems": [f"handshake with 10.1.{k // 250}.{k % 250}:{9000 + k} failed"]}
        for k in range(5000)]}  # fmt: skip
    packed = encoded(rows)
    text = json.dumps(rows)
    assert isinstance(packed, PackedJSON) and len(packed.packed) < len(text) / 4
    assert encoded(packed) is packed
    status = Status(pid=1, certs=packed)
    assert json.loads(status.to_json())["certs"] == rows
    write(tmp_path, status, now=0.0)
    assert read_status(tmp_path)["certs"] == rows  # type: ignore[index]
    assert isinstance(encoded({"status": "OK", "servers": []}), str)  # small: as it is
