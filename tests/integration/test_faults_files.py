"""Sidecar and file faults on real processes (issue 6): SIGKILL of the daemon during applies,
a read-only runtime directory, a full disk (runtime directory and CS file).

Mounts (a tmpfs, a read-only bind mount) need root and a sandbox that allows them; the tests
skip with the reason otherwise. An unparsable or read-only CS file is covered by
``tests/unit/test_cs_file.py`` (``test_unparsable_file_is_left_untouched``,
``test_read_only_file_is_not_replaced``, ``test_read_only_directory_leaves_the_file_intact``).
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from faultlib import failed_calls
from gatewaylib import SERVICES, Gateway, settled
from helpers import at_rest, wait_until

from sidecar.base.errors import CSError
from sidecar.config.cs import CSSettings
from sidecar.core.model import Backend, DesiredState, Protocol
from sidecar.dirac_cs.cstext import read_cs_file
from sidecar.dirac_cs.file import sync_cs_file
from sidecar.dirac_cs.render import render_cs

pytestmark = [pytest.mark.integration]

ALPHA, BETA, GAMMA = SERVICES
FAST = "\n[apply]\ndrift_interval = 0.5\nmin_reload_interval = 0.1\n"
CS_DATA = Path(__file__).resolve().parents[1] / "data" / "cs"


def leftovers(runtime: Path, settle: float = 2.0) -> list[str]:
    """Temporary or candidate files an interrupted write left behind: those still there after
    ``settle`` seconds (a running daemon's write in flight, its heartbeat every round, holds
    one for a moment; a listing may catch it). ``settle=0``: what is there now (a killed one)."""

    def temps() -> list[str]:
        return sorted(p.name for p in runtime.iterdir() if p.name.endswith((".tmp", ".new")))

    if not settle:
        return temps()
    seen = temps()
    if seen:
        with contextlib.suppress(AssertionError):  # timed out: these stay, they are leftovers
            wait_until(lambda: not set(temps()) & set(seen), settle, 0.02)
        seen = sorted(set(temps()) & set(seen))
    return seen


def config_valid(gw: Gateway) -> None:
    text = settled(gw.haproxy_cfg)
    gw.haproxy.validate(text)  # haproxy -c; raises ValidationFailed


# --- SIGKILL during applies ---------------------------------------------------------------

KILL_DELAYS = (0.0, 0.03, 0.06, 0.09, 0.12, 0.2, 0.3)  # seconds after a change that reloads


@pytest.mark.timeout(150)
def test_sigkill_during_applies(gateway_unstarted: Gateway, backend_factory) -> None:
    gw = gateway_unstarted
    gw.write_config(gw.config_text() + FAST)
    gw.start()
    backends = {}
    killed_with: list[str] = []
    paths = [ALPHA, BETA, GAMMA]
    for n, delay in enumerate(KILL_DELAYS):
        # Alternate: a new service (reload path) and a new instance (runtime path).
        path = paths[n % 3]
        label = path.split("/")[1].lower()
        name = f"k{n}"
        backends[name] = (path, backend_factory(instance=name))
        gw.register_backend(label, backends[name][1], name, path)
        time.sleep(delay)  # the kill point itself: there is nothing to poll for
        gw.kill()
        killed_with.extend(leftovers(gw.runtime_dir, 0))  # a write cut between temp and rename
        gw.start()
        assert leftovers(gw.runtime_dir) == [], "stale temp files must go at startup"
    # Converged: every instance routed, nothing partial, no reload once converged.
    for name, (path, _) in backends.items():
        gw.wait_routed(gw.ports[path], name)
    wait_until(lambda: gw.status().get("last_apply_ok"), 10, 0.1, "a successful apply")
    assert leftovers(gw.runtime_dir) == []
    config_valid(gw)
    reloads = gw.reload_count()
    gw.stop_daemon()
    gw.start()  # a clean restart on the converged state: no reload, no rewrite
    made, failed = failed_calls(gw, gw.ports[ALPHA], 1.5, {"k0", "k3", "k6"})
    assert failed == 0, (made, failed)
    assert gw.reload_count() == reloads
    assert gw.log_text().count("haproxy started") == 1
    print(f"temp files found right after the kills: {killed_with}")


# --- mounts -------------------------------------------------------------------------------


def _mount(*args: str) -> None:
    subprocess.run(["mount", *args], check=True, capture_output=True, timeout=10)


def _umount(target: Path) -> None:
    subprocess.run(["umount", "-l", str(target)], check=False, capture_output=True, timeout=10)


@pytest.fixture
def can_mount(tmp_path: Path) -> None:
    if os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("mounts need root and mount(8)")
    probe = tmp_path / "probe"
    probe.mkdir()
    try:
        _mount("-t", "tmpfs", "-o", "size=64k", "tmpfs", str(probe))
    except (subprocess.CalledProcessError, OSError) as exc:
        pytest.skip(f"this sandbox forbids mounts: {exc}")
    _umount(probe)


@contextlib.contextmanager
def read_only(directory: Path) -> Iterator[None]:
    """``directory`` read-only in place (a bind mount on itself, remounted ro)."""
    _mount("--bind", str(directory), str(directory))
    try:
        _mount("-o", "remount,bind,ro", str(directory))
        yield
    finally:
        _umount(directory)


def fill(directory: Path) -> Path:
    """Fill the filesystem of ``directory`` until ENOSPC; returns the filler file."""
    filler = directory / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        while True:
            os.write(fd, b"\0" * 4096)
    except OSError as exc:
        assert exc.errno == errno.ENOSPC
    finally:
        os.close(fd)
    return filler


@pytest.mark.timeout(90)
@pytest.mark.usefixtures("can_mount")
def test_read_only_runtime_dir(gateway_unstarted: Gateway, backend_factory) -> None:
    gw = gateway_unstarted
    gw.write_config(gw.config_text() + FAST)
    gw.start()
    gw.register_backend("alpha", backend_factory(instance="a1"), "a1", ALPHA)
    gw.wait_routed(gw.ports[ALPHA], "a1")
    good = settled(gw.haproxy_cfg).encode()
    files = [p.name for p in at_rest(gw.runtime_dir)]
    with read_only(gw.runtime_dir):
        gw.register_backend("beta", backend_factory(instance="b1"), "b1", BETA)  # a reload
        gw.wait_log("Read-only file system")
        made, failed = failed_calls(gw, gw.ports[ALPHA], 1.5, {"a1"})
        assert failed == 0, (made, failed)
        assert gw.haproxy_cfg.read_bytes() == good
        assert gw.alive()
    assert [p.name for p in at_rest(gw.runtime_dir)] == files
    # Writable again: the pending change goes through (next event or retry).
    gw.register_backend("alpha", backend_factory(instance="a2"), "a2", ALPHA)
    gw.wait_routed(gw.ports[BETA], "b1")
    gw.wait_routed(gw.ports[ALPHA], "a2")
    config_valid(gw)
    assert leftovers(gw.runtime_dir) == []


@pytest.mark.timeout(90)
@pytest.mark.usefixtures("can_mount")
def test_runtime_dir_disk_full(gateway_unstarted: Gateway, backend_factory) -> None:
    gw = gateway_unstarted
    gw.runtime_dir.mkdir()
    _mount("-t", "tmpfs", "-o", "size=256k,mode=0700", "tmpfs", str(gw.runtime_dir))
    try:
        gw.write_config(gw.config_text() + FAST)
        gw.start()
        gw.register_backend("alpha", backend_factory(instance="a1"), "a1", ALPHA)
        gw.wait_routed(gw.ports[ALPHA], "a1")
        good = settled(gw.haproxy_cfg).encode()
        filler = fill(gw.runtime_dir)
        try:
            gw.register_backend("beta", backend_factory(instance="b1"), "b1", BETA)
            gw.wait_log("No space left on device")
            made, failed = failed_calls(gw, gw.ports[ALPHA], 1.5, {"a1"})
            assert failed == 0, (made, failed)
            assert gw.haproxy_cfg.read_bytes() == good
            assert leftovers(gw.runtime_dir) == []
            assert gw.alive()
        finally:
            filler.unlink()
        gw.register_backend("alpha", backend_factory(instance="a2"), "a2", ALPHA)
        gw.wait_routed(gw.ports[BETA], "b1")
        gw.wait_routed(gw.ports[ALPHA], "a2")
        config_valid(gw)
    finally:
        gw.teardown()
        gw.registered.clear()
        _umount(gw.runtime_dir)


@pytest.mark.timeout(30)
@pytest.mark.usefixtures("can_mount")
def test_cs_file_disk_full(tmp_path: Path) -> None:
    folder = tmp_path / "etc"
    folder.mkdir()
    _mount("-t", "tmpfs", "-o", "size=64k", "tmpfs", str(folder))
    try:
        path = folder / "dirac.cfg"
        shutil.copyfile(CS_DATA / "dirac-v9.cfg", path)
        original = path.read_bytes()
        desired = DesiredState(
            (Backend("Framework", "SystemAdministrator", Protocol.DIPS, 9162, ()),)
        )
        options = render_cs(desired, ("dirac-gw9.example.org",), CSSettings(),
                            read_cs_file(path).options)  # fmt: skip
        filler = fill(folder)
        with pytest.raises(CSError, match="cannot write"):
            sync_cs_file(path, options, CSSettings(), datetime.now(UTC))
        assert path.read_bytes() == original
        assert sorted(p.name for p in folder.iterdir()) == ["dirac.cfg", "filler"]
        filler.unlink()
        result = sync_cs_file(path, options, CSSettings(), datetime.now(UTC))  # the control
        assert result.changes and b"dirac-gw9.example.org" in path.read_bytes()
    finally:
        _umount(folder)
