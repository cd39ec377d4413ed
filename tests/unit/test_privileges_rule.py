"""The rule of host.privileges (when the effective set is cleared) and its never-raise promise.

The real capability change, under setpriv as an unprivileged account with an ambient
CAP_NET_BIND_SERVICE, is in tests/integration/test_privileges.py.
"""

from __future__ import annotations

import ctypes
import os
import sys
from typing import Any

import pytest

from sidecar.host import privileges
from sidecar.host.privileges import CapSets, drop_effective_capabilities, names, should_drop

NBS = 1 << 10  # CAP_NET_BIND_SERVICE
KILL = 1 << 5
ROOT_ALL = (1 << 41) - 1


def test_nothing_effective_is_a_no_op_for_anyone() -> None:
    for euid in (0, 1000):
        drop, why = should_drop(CapSets(0, NBS, NBS, NBS), euid)
        assert not drop
        assert "no effective capabilities" in why


def test_a_non_root_account_drops_whatever_it_holds() -> None:
    assert should_drop(CapSets(NBS, NBS, NBS, NBS), 998)[0]
    assert should_drop(CapSets(NBS | KILL, NBS | KILL, 0, 0), 998)[0]  # file capabilities


def test_root_without_ambient_capabilities_keeps_its_effective_set() -> None:
    # The test suite, the demo and root installs: dropping would break writes to files owned
    # by others and binding low ports, and would not confine HAProxy (root regains all on exec).
    drop, why = should_drop(CapSets(ROOT_ALL, ROOT_ALL, 0, 0), 0)
    assert not drop
    assert "root without ambient" in why


def test_root_with_more_than_its_ambient_set_keeps_it() -> None:
    drop, why = should_drop(CapSets(ROOT_ALL, ROOT_ALL, NBS, NBS), 0)
    assert not drop
    assert "more than the ambient set" in why


def test_root_holding_only_ambient_capabilities_drops_them() -> None:
    # User=root in a drop-in, with the unit's bounding set and AmbientCapabilities.
    assert should_drop(CapSets(NBS, NBS, NBS, NBS), 0)[0]


def test_names() -> None:
    assert names(0) == "none"
    assert names(NBS | KILL) == "cap_kill,cap_net_bind_service"
    assert names(ROOT_ALL) == "41 capabilities"
    assert names(1 << 50) == "cap_50"


def test_not_linux_is_a_no_op(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys, "platform", "darwin")
    assert drop_effective_capabilities() == ["capabilities: not Linux (darwin): nothing to drop"]


def test_an_unreadable_set_is_reported_not_raised(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse() -> CapSets:
        raise OSError(1, "capget: Operation not permitted")

    monkeypatch.setattr(privileges, "read_capabilities", refuse)
    (note,) = drop_effective_capabilities()
    assert "cannot read them" in note


def test_an_unexpected_failure_is_reported_not_raised(monkeypatch: pytest.MonkeyPatch) -> None:
    def boom(sets: CapSets, euid: int) -> tuple[bool, str]:
        raise RuntimeError("surprise")

    monkeypatch.setattr(privileges, "should_drop", boom)
    (note,) = drop_effective_capabilities()
    assert note == "capabilities: left as they are: RuntimeError: surprise"


class FakeLibc:
    """capget answers ``sets``; capset records what it was given (or fails with ``errno``)."""

    def __init__(self, sets: CapSets, errno: int = 0) -> None:
        self.sets, self.errno = sets, errno
        self.given: tuple[int, int, int] | None = None

    def capget(self, header: Any, data: Any) -> int:
        for word in (0, 1):
            data[word].effective = self.sets.effective >> (32 * word) & 0xFFFFFFFF
            data[word].permitted = self.sets.permitted >> (32 * word) & 0xFFFFFFFF
            data[word].inheritable = self.sets.inheritable >> (32 * word) & 0xFFFFFFFF
        return 0

    def capset(self, header: Any, data: Any) -> int:
        if self.errno:
            ctypes.set_errno(self.errno)
            return -1
        assert header._obj.version == 0x20080522 and header._obj.pid == 0

        def mask(field: str) -> int:
            return int(getattr(data[0], field)) | int(getattr(data[1], field)) << 32

        self.given = (mask("effective"), mask("permitted"), mask("inheritable"))
        self.sets = CapSets(0, self.sets.permitted, self.sets.inheritable, self.sets.ambient)
        return 0


def test_the_drop_keeps_permitted_and_inheritable(monkeypatch: pytest.MonkeyPatch) -> None:
    high = 1 << 40  # a capability in the second 32-bit word
    fake = FakeLibc(CapSets(NBS | high, NBS | high, NBS, NBS))
    monkeypatch.setattr(privileges, "_libc", lambda: fake)
    monkeypatch.setattr(privileges, "_ambient", lambda: NBS)
    monkeypatch.setattr(os, "geteuid", lambda: 998)
    notes = drop_effective_capabilities()
    assert fake.given == (0, NBS | high, NBS)
    assert notes[-1].startswith("capabilities: cleared the effective set")
    assert notes[-1].endswith("ambient kept for the programs it starts: cap_net_bind_service")


def test_a_refused_capset_is_reported_not_raised(monkeypatch: pytest.MonkeyPatch) -> None:
    fake = FakeLibc(CapSets(NBS, NBS, NBS, NBS), errno=1)  # EPERM, as from a seccomp filter
    monkeypatch.setattr(privileges, "_libc", lambda: fake)
    monkeypatch.setattr(privileges, "_ambient", lambda: NBS)
    monkeypatch.setattr(os, "geteuid", lambda: 998)
    notes = drop_effective_capabilities()
    # other tests of the session may have left threads running: that adds one note
    (note,) = [n for n in notes if "other thread" not in n]
    assert note.startswith("capabilities: effective set kept")
    assert "Operation not permitted" in note


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="Linux capabilities")
def test_as_root_without_ambient_the_real_call_changes_nothing() -> None:
    before = privileges.read_capabilities()
    if os.geteuid() != 0 or before.ambient or not before.effective:
        pytest.skip("needs root with effective and no ambient capabilities (the test suite)")
    (note,) = drop_effective_capabilities()
    assert "running as root without ambient capabilities" in note
    assert privileges.read_capabilities() == before
