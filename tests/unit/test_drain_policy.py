"""The drain's decisions on plain values (``core.drain``) and ``check`` on a drained gateway."""

from __future__ import annotations

import dataclasses

import pytest

from sidecar.config.ops import CheckSettings
from sidecar.core.drain import (
    DrainState,
    FrontendLoad,
    Phase,
    applied_phase,
    decode,
    encode,
    frontend_commands,
    parse_frontends,
    phase,
    progress,
    status_record,
)
from sidecar.core.severity import Severity
from sidecar.health.check import Facts, HAProxyFacts, evaluate_check

NOW = 1_900_000_000.0
STATE = DrainState(since=NOW, grace=60.0, deadline=600.0, reason="kernel upgrade")
SHOW_STAT = (
    "# pxname,svname,qcur,qmax,scur,smax,slim,stot,bin,bout,dreq,dresp,ereq,econ,eresp,wretr,"
    "wredis,status,weight\n"
    "fe_9135,FRONTEND,,,2,3,8000,9,0,0,0,0,0,,,,,OPEN,\n"
    "fe_9140,FRONTEND,,,0,1,8000,1,0,0,0,0,0,,,,,PAUSED,\n"
    "stats,FRONTEND,,,1,1,10,1,0,0,0,0,0,,,,,OPEN,\n"
    "be_x,BACKEND,0,0,2,3,800,9,0,0,0,0,,0,0,0,0,UP,1\n"
)


def test_state_round_trips_and_bad_files_are_refused() -> None:
    assert decode(encode(STATE)) == STATE
    bad = (
        '{"since": "x", "grace": 1, "deadline": 2}',
        '{"since": 1, "grace": -1, "deadline": 2}',
        '{"since": 1, "grace": 1}',
        "",
        "[]",
    )
    for text in bad:
        with pytest.raises(ValueError):
            decode(text)
    long = decode('{"since": 1, "grace": 1, "deadline": 2, "reason": "' + "x" * 900 + '"}')
    assert len(long.reason) == 200


def test_phases_follow_the_clock() -> None:
    assert phase(None, NOW) is Phase.SERVING
    assert phase(STATE, NOW + 59) is Phase.GRACE
    assert phase(STATE, NOW + 60) is Phase.CLOSED
    assert STATE.ends_at == NOW + 600
    assert dataclasses.replace(STATE, deadline=10).ends_at == NOW + 60  # never before the grace


def test_frontends_parsed_and_commands_only_for_public_ones() -> None:
    loads = parse_frontends(SHOW_STAT)
    assert loads == (FrontendLoad("fe_9135", 2, "OPEN"), FrontendLoad("fe_9140", 0, "PAUSED"),
                     FrontendLoad("stats", 1, "OPEN"))  # fmt: skip
    assert frontend_commands(Phase.CLOSED, loads) == ("disable frontend fe_9135",)
    assert frontend_commands(Phase.GRACE, loads) == ("enable frontend fe_9140",)
    assert frontend_commands(Phase.SERVING, loads) == ("enable frontend fe_9140",)
    assert parse_frontends("garbage\n,,,\n") == ()


@pytest.mark.parametrize(
    ("now", "applied", "connections", "done", "drained", "text"),
    [
        (NOW + 1, "", 3, False, False, "not yet seen by the daemon"),
        (NOW + 10, "grace", 3, False, False, "still served for 50s, 3 connections open"),
        (NOW + 70, "grace", 3, False, False, "daemon at grace"),
        (NOW + 70, "closed", 2, False, False, "2 connections left, deadline in 530s"),
        (NOW + 70, "closed", None, False, False, "? connections left"),
        (NOW + 70, "closed", 0, True, True, "drained: no connection left"),
        (NOW + 30, "grace", 0, False, False, "grace"),  # idle, but the grace is not over
        (NOW + 600, "closed", 4, True, False, "deadline passed: 4 connections left"),
    ],
)
def test_progress(now: float, applied: str, connections: int | None, done: bool,
                  drained: bool, text: str) -> None:  # fmt: skip
    step = progress(STATE, now, applied, connections)
    assert (step.done, step.drained) == (done, drained)
    assert text in step.line


def test_applied_phase_needs_a_fresh_heartbeat() -> None:
    record = {"heartbeat": NOW - 1, "drain": status_record(STATE, NOW, True, 0, 1)}
    assert applied_phase(record, NOW, 30) == "grace"
    assert applied_phase({"heartbeat": NOW - 1, "drain": {}}, NOW, 30) == ""
    assert applied_phase({"heartbeat": NOW - 60}, NOW, 30) is None
    assert applied_phase(None, NOW, 30) is None
    assert status_record(None, NOW, False, 0, None) == {}


def test_check_reports_drained_as_ok_with_paused_frontends() -> None:
    serving = HAProxyFacts(master_pid=10, master_running=True, current_worker=11,
                           worker_answering=True)  # fmt: skip
    status = {"pid": 1, "heartbeat": NOW - 1, "ready": True, "catalog_ok_at": NOW - 1,
              "public_ports": [9135], "drain": {"phase": "closed", "connections": 2}}  # fmt: skip
    base = Facts(status=status, daemon_pid_alive=True, haproxy=serving, unbound_ports=(9135,))
    assert evaluate_check(base, CheckSettings(), NOW).code is Severity.CRITICAL
    closed = dataclasses.replace(STATE, since=NOW - 90)
    drained = evaluate_check(dataclasses.replace(base, drain=closed), CheckSettings(), NOW)
    assert drained.code is Severity.OK
    assert drained.summary.startswith("SIDECAR OK - drained (closed, 2 connections left)")
    assert drained.details["drained"] is True
    broken = dataclasses.replace(base, drain=STATE, haproxy=HAProxyFacts())
    assert evaluate_check(broken, CheckSettings(), NOW).code is Severity.CRITICAL  # still judged
