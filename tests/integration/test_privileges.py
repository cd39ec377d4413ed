"""The capability hand-over for real: the daemon cannot bind a low port, HAProxy can.

Each case starts a small Python child under ``setpriv`` the way the systemd unit starts the
daemon (``User=`` an unprivileged account, ``CapabilityBoundingSet=`` and
``AmbientCapabilities=CAP_NET_BIND_SERVICE``). The child optionally calls
:func:`sidecar.host.privileges.drop_effective_capabilities` (as ``sidecar run`` does), tries to bind
127.0.0.1 on a free port below 1024 itself, then spawns a grandchild (standing for HAProxy)
that binds the same port, and looks at the grandchild's /proc entries the way the daemon looks
at HAProxy's (``stat`` and ``cmdline``, psutil's status and start time). It prints one JSON
line. Every wait is bounded; children are killed by PID at the end.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from helpers import REPO_ROOT, wait_until

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]
SETPRIV = shutil.which("setpriv")
NOBODY = 65534
NBS = "0000000000000400"  # CAP_NET_BIND_SERVICE as /proc/<pid>/status shows it
NONE = "0000000000000000"

GRANDCHILD = r"""
import errno, json, socket, sys
sock = socket.socket()
try:
    sock.bind(("127.0.0.1", int(sys.argv[1])))
    bound = "ok"
except OSError as exc:
    bound = errno.errorcode[exc.errno]
caps = {l.split(":")[0]: l.split()[1] for l in open("/proc/self/status") if l.startswith("Cap")}
print(json.dumps({"bind": bound, "caps": caps}), flush=True)
sys.stdin.read()  # stay alive (and bound) until the parent has looked at /proc
"""

CHILD = r"""
import errno, json, os, select, shutil, socket, subprocess, sys
import psutil
mode, port, grandchild = sys.argv[1], int(sys.argv[2]), sys.argv[3]
out = {"notes": []}
# An interpreter this account may run (a venv's python may sit under root's 0700 home).
python = next(
    p for p in (sys.executable, shutil.which("python3"), "/usr/bin/python3")
    if p and os.access(p, os.X_OK)
)
if mode == "drop":
    from sidecar.host.privileges import drop_effective_capabilities
    out["notes"] = drop_effective_capabilities()
elif mode == "renounce":
    from sidecar.host.privileges import renounce_capabilities
    out["notes"] = renounce_capabilities()
out["caps"] = {
    l.split(":")[0]: l.split()[1] for l in open("/proc/self/status") if l.startswith("Cap")
}
sock = socket.socket()
try:
    sock.bind(("127.0.0.1", port))
    out["bind"] = "ok"
except OSError as exc:
    out["bind"] = errno.errorcode[exc.errno]
finally:
    sock.close()
child = subprocess.Popen(
    [python, "-c", grandchild, str(port)],
    stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
)
try:
    ready, _, _ = select.select([child.stdout], [], [], 15)
    out["child"] = json.loads(child.stdout.readline()) if ready else None
    for name in ("stat", "cmdline", "environ"):
        try:
            open(f"/proc/{child.pid}/{name}", "rb").read()
            out[name] = "ok"
        except OSError as exc:
            out[name] = errno.errorcode[exc.errno]
    proc = psutil.Process(child.pid)
    out["psutil"] = [proc.status(), proc.create_time() > 0]
    child.stdin.close()
    child.wait(timeout=10)
finally:
    if child.poll() is None:
        child.kill()
        child.wait(timeout=10)
print(json.dumps(out))
"""

# setpriv as systemd does it for User=nobody with the unit's capability lines.
AS_NOBODY = (
    f"--reuid={NOBODY}",
    f"--regid={NOBODY}",
    "--clear-groups",
    "--inh-caps=+net_bind_service",
    "--ambient-caps=+net_bind_service",
    "--bounding-set=-all,+net_bind_service",
)
# User=root in a drop-in, the unit's capability lines kept.
AS_BOUNDED_ROOT = (
    "--inh-caps=+net_bind_service",
    "--ambient-caps=+net_bind_service",
    "--bounding-set=-all,+net_bind_service",
)
# An account without any capability: the control (the port really needs the capability).
AS_PLAIN_NOBODY = (f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups",
                   "--bounding-set=-all")  # fmt: skip


def _skip_unless_possible() -> None:
    if not sys.platform.startswith("linux"):
        pytest.skip("Linux capabilities")
    if SETPRIV is None:
        pytest.skip("no setpriv")
    if os.geteuid() != 0:
        pytest.skip("setpriv --reuid needs root")
    help_text = subprocess.run([SETPRIV, "--help"], capture_output=True, text=True, timeout=10)
    if "--ambient-caps" not in help_text.stdout:
        pytest.skip("this setpriv has no --ambient-caps (util-linux < 2.32)")
    start = int(Path("/proc/sys/net/ipv4/ip_unprivileged_port_start").read_text())
    if start < 700:
        pytest.skip(f"ports from {start} up are unprivileged here")


def _free_low_port() -> int:
    for port in range(600, 700):
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    pytest.skip("no free port in 600-699")


def _env() -> dict[str, str]:
    return {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "PYTHONPATH": str(REPO_ROOT),  # readable by nobody; tmp_path (0700) would not be
        "PYTHONDONTWRITEBYTECODE": "1",
    }


def _run(setpriv_args: tuple[str, ...], mode: str) -> dict[str, Any]:
    _skip_unless_possible()
    assert SETPRIV is not None
    port = _free_low_port()
    env = _env()
    argv = [SETPRIV, *setpriv_args, sys.executable, "-c", CHILD, mode, str(port), GRANDCHILD]
    done = subprocess.run(
        argv, capture_output=True, text=True, timeout=60, check=False, env=env, cwd="/"
    )
    assert done.returncode == 0, done.stderr
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def test_after_the_drop_only_the_spawned_program_binds_a_low_port() -> None:
    out = _run(AS_NOBODY, "drop")
    assert any("cleared the effective set" in note for note in out["notes"]), out
    assert out["caps"]["CapEff"] == NONE, out
    assert out["caps"]["CapPrm"] == out["caps"]["CapAmb"] == NBS, out
    assert out["bind"] == "EACCES", out  # the daemon itself cannot
    assert out["child"] == {  # HAProxy can, through the ambient set
        "bind": "ok",
        "caps": {"CapInh": NBS, "CapPrm": NBS, "CapEff": NBS, "CapBnd": NBS, "CapAmb": NBS},
    }, out
    # What the daemon reads of HAProxy still works...
    assert (out["stat"], out["cmdline"]) == ("ok", "ok"), out
    assert out["psutil"][1] is True and out["psutil"][0] != "zombie", out
    # ...but not what needs ptrace access: the kernel compares the reader's *effective* set
    # with the target's permitted one (PTRACE_MODE_FSCREDS), so environ/exe/fd are refused.
    assert out["environ"] in ("EACCES", "EPERM"), out


def test_without_the_drop_the_process_itself_can_bind_too() -> None:
    out = _run(AS_NOBODY, "keep")
    assert out["caps"]["CapEff"] == NBS, out
    assert out["bind"] == "ok", out
    assert out["child"]["bind"] == "ok", out
    assert (out["stat"], out["cmdline"], out["environ"]) == ("ok", "ok", "ok"), out


def test_root_holding_only_the_ambient_capability_drops_it_too() -> None:
    out = _run(AS_BOUNDED_ROOT, "drop")
    assert any("root holding only its ambient" in note for note in out["notes"]), out
    assert out["caps"]["CapEff"] == NONE, out
    assert out["bind"] == "EACCES", out
    assert out["child"]["bind"] == "ok", out


def test_control_without_any_capability_nobody_binds() -> None:
    out = _run(AS_PLAIN_NOBODY, "drop")
    assert out["notes"] == ["capabilities: no effective capabilities: nothing to drop"], out
    assert out["bind"] == "EACCES", out
    assert out["child"]["bind"] == "EACCES", out


def test_a_child_that_renounces_holds_nothing_and_hands_nothing_on() -> None:
    out = _run(AS_NOBODY, "renounce")
    assert any("renounced cap_net_bind_service" in note for note in out["notes"]), out
    caps = out["caps"]
    assert caps["CapEff"] == caps["CapPrm"] == caps["CapInh"] == caps["CapAmb"] == NONE, out
    assert out["bind"] == "EACCES", out
    assert out["child"]["bind"] == "EACCES", out  # nothing left for what it would start
    assert out["child"]["caps"]["CapAmb"] == out["child"]["caps"]["CapEff"] == NONE, out


def test_root_without_ambient_capabilities_keeps_them_for_the_probe() -> None:
    # the test suite's and a root install's case: root's sets are what reads the key files
    _skip_unless_possible()
    done = subprocess.run(
        [sys.executable, "-c", CHILD, "renounce", str(_free_low_port()), GRANDCHILD],
        capture_output=True, text=True, timeout=60, check=False, env=_env(), cwd="/",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout.strip().splitlines()[-1])
    assert len(out["notes"]) == 1, out
    assert out["notes"][0].startswith(
        "capabilities: running as root without ambient capabilities: effective set kept"
    ), out
    assert out["caps"]["CapEff"] != NONE and out["bind"] == "ok", out


def test_the_certificate_probe_child_renounces_before_it_dials() -> None:
    """The real child (``python -m sidecar.health.certprobe``) started as the systemd unit
    starts the daemon's children: its sets are empty while it waits for its first request."""
    _skip_unless_possible()
    assert SETPRIV is not None
    argv = [SETPRIV, *AS_NOBODY, sys.executable, "-m", "sidecar.health.certprobe", "30"]
    child = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, env=_env(), cwd="/")  # fmt: skip
    try:
        status = Path(f"/proc/{child.pid}/status")
        # setpriv execs python in the same process: the sets go root's -> the unit's (ambient
        # net_bind_service) -> empty; only the renouncing child reaches an empty permitted set
        wait_until(
            lambda: child.poll() is not None or _caps(status)["CapPrm"] == NONE,
            timeout=30,
            what="the probe child's permitted set to empty",
        )
        assert child.poll() is None, child.stderr.read() if child.stderr else ""
        caps = _caps(status)
        assert caps["CapEff"] == caps["CapPrm"] == caps["CapInh"] == NONE, caps
        assert caps["CapBnd"] == NBS, caps  # the bounding set is setpriv's: untouched
        assert child.stdin is not None
        child.stdin.close()  # the end of its requests: it exits 0
        assert child.wait(timeout=30) == 0
    finally:
        if child.poll() is None:
            child.kill()
            child.wait(timeout=10)


def test_the_settings_child_renounces_before_it_reads_the_file(tmp_path: Path) -> None:
    """The daemon's settings child (``python -P -m sidecar.host.apart``), started as the unit
    starts the daemon's children, empties its sets before it reads the settings file."""
    _skip_unless_possible()
    assert SETPRIV is not None
    settings = REPO_ROOT / "sidecar" / "data" / "sidecar.example.toml"  # readable by nobody
    argv = [SETPRIV, *AS_NOBODY, sys.executable, "-P", "-m", "sidecar.host.apart", str(settings)]
    out = subprocess.run(argv, capture_output=True, env=_env(), cwd="/", timeout=60, check=False)
    notes = out.stderr.decode()
    assert out.returncode == 0, notes
    assert "capabilities: renounced cap_net_bind_service" in notes, notes
    assert out.stdout.startswith(b"\x80"), out.stdout[:40]  # the pickled answer


def _caps(status: Path) -> dict[str, str]:
    return {
        line.split(":")[0]: line.split()[1]
        for line in status.read_text().splitlines()
        if line.startswith("Cap")
    }
