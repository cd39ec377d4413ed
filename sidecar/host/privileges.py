"""Clear the daemon's own effective capabilities at start (adapter, Linux only).

Sits at the very start of ``sidecar run`` (:mod:`sidecar.cli.gateway`), before the daemon
starts any thread or child. The systemd unit runs the daemon as the unprivileged
``dirac-sidecar`` account with ``AmbientCapabilities=CAP_NET_BIND_SERVICE`` so that HAProxy,
which the daemon execs, can bind a configured public port below 1024. An ambient capability is
also permitted and effective in the daemon itself; the daemon never needs it (it talks to
Consul, HAProxy's sockets and its own files), so :func:`drop_effective_capabilities` clears the
*effective* set and leaves the permitted, inheritable and ambient sets as they are. For a
non-root program without file capabilities the kernel recomputes the sets at every ``execve``
from the ambient set, so HAProxy (and ``haproxy -c``, and the master's re-exec on a reload)
still starts with ``CAP_NET_BIND_SERVICE`` effective, while the daemon can no longer bind a
privileged port or use any capability without re-raising it with ``capset`` first.

One consequence to keep in mind: /proc files that need ptrace access (``environ``, ``exe``,
``fd``; psutil's ``environ()``, ``exe()``, ``open_files()``) of HAProxy are refused to the
daemon after the drop, because the kernel compares the reader's *effective* set with the
target's permitted one. ``stat``, ``status`` and ``cmdline`` (liveness, psutil's ``status()``
and ``create_time()``) stay readable; the daemon uses only those.

The rule (:func:`should_drop`), decided on the effective user ID and the four sets:

* no effective capability: nothing to do;
* effective UID not 0: drop. Whatever a non-root process holds came from the ambient set, file
  capabilities or its launcher, for its children; the daemon uses none (give it access to the
  settings, CA directory and CS file through ownership and groups, never a capability);
* effective UID 0 and every effective capability also in the ambient set (``User=root`` in a
  drop-in with the unit's bounding set): drop, as for any account;
* effective UID 0 otherwise (the test suite, the demo, root installs without ambient
  capabilities): keep. Root regains its whole bounding set at every ``execve`` anyway, so
  dropping would not confine HAProxy, and root's effective set is what lets such an install
  write a CS file owned by another account or bind a low port for the status endpoint.

Capabilities are per thread: ``capset`` changes the calling thread only, which is why this
runs before any thread exists (threads and children created later inherit the cleared set).
:func:`drop_effective_capabilities` never raises: it returns what it did, or why not.

A child of the daemon that starts no program needing a capability (the certificate probe,
which dials every backend the catalog names and parses what they send) calls
:func:`renounce_capabilities` first: it empties the ambient set and, under the same rule,
the effective, permitted and inheritable sets, for good. Otherwise the kernel would hand it
``CAP_NET_BIND_SERVICE`` again at its ``execve`` from the daemon's ambient set.
"""

from __future__ import annotations

import ctypes
import os
import sys
import threading
from dataclasses import dataclass, replace
from pathlib import Path

_LINUX_CAPABILITY_VERSION_3 = 0x20080522  # 64-bit sets as two 32-bit words
_STATUS = Path("/proc/self/status")

# linux/capability.h, in bit order: names for the log lines only.
CAP_NAMES = (
    "chown", "dac_override", "dac_read_search", "fowner", "fsetid", "kill", "setgid",
    "setuid", "setpcap", "linux_immutable", "net_bind_service", "net_broadcast", "net_admin",
    "net_raw", "ipc_lock", "ipc_owner", "sys_module", "sys_rawio", "sys_chroot", "sys_ptrace",
    "sys_pacct", "sys_admin", "sys_boot", "sys_nice", "sys_resource", "sys_time",
    "sys_tty_config", "mknod", "lease", "audit_write", "audit_control", "setfcap",
    "mac_override", "mac_admin", "syslog", "wake_alarm", "block_suspend", "audit_read",
    "perfmon", "bpf", "checkpoint_restore",
)  # fmt: skip


class _Header(ctypes.Structure):
    _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]


class _Data(ctypes.Structure):
    _fields_ = [
        ("effective", ctypes.c_uint32),
        ("permitted", ctypes.c_uint32),
        ("inheritable", ctypes.c_uint32),
    ]


_DataPair = _Data * 2  # word 0: capabilities 0-31, word 1: 32-63


@dataclass(frozen=True, slots=True)
class CapSets:
    """The calling thread's capability sets as 64-bit masks (bit N = capability N)."""

    effective: int
    permitted: int
    inheritable: int
    ambient: int


def names(mask: int) -> str:
    """``cap_net_bind_service,cap_kill`` for a mask; a count when it is long (root's set)."""
    found = [
        f"cap_{CAP_NAMES[bit]}" if bit < len(CAP_NAMES) else f"cap_{bit}"
        for bit in range(64)
        if mask >> bit & 1
    ]
    if not found:
        return "none"
    return ",".join(found) if len(found) <= 6 else f"{len(found)} capabilities"


def should_drop(sets: CapSets, euid: int) -> tuple[bool, str]:
    """The rule of the module docstring: (drop?, why), pure."""
    if not sets.effective:
        return False, "no effective capabilities: nothing to drop"
    if euid != 0:
        return True, f"uid {euid} needs no capability itself"
    kept = f"effective set kept ({names(sets.effective)})"
    if not sets.ambient:
        return False, f"running as root without ambient capabilities: {kept}"
    if sets.effective & ~sets.ambient:
        return False, f"running as root with more than the ambient set: {kept}"
    return True, "root holding only its ambient capabilities"


def _libc() -> ctypes.CDLL:
    return ctypes.CDLL(None, use_errno=True)


def _ambient() -> int:
    """The ambient set from ``CapAmb`` (kernels before 4.3 have none: 0)."""
    for line in _STATUS.read_text().splitlines():
        if line.startswith("CapAmb:"):
            return int(line.split()[1], 16)
    return 0


def read_capabilities() -> CapSets:
    """The calling thread's sets (capget); raises OSError when the kernel refuses."""
    header = _Header(_LINUX_CAPABILITY_VERSION_3, 0)
    data = _DataPair()
    if _libc().capget(ctypes.byref(header), data) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"capget: {os.strerror(err)}")

    def mask(field: str) -> int:
        return int(getattr(data[0], field)) | int(getattr(data[1], field)) << 32

    return CapSets(mask("effective"), mask("permitted"), mask("inheritable"), _ambient())


def _clear_effective(sets: CapSets) -> None:
    """capset with the effective set empty, permitted and inheritable unchanged."""
    header = _Header(_LINUX_CAPABILITY_VERSION_3, 0)
    data = _DataPair()
    for word in (0, 1):
        data[word].effective = 0
        data[word].permitted = sets.permitted >> (32 * word) & 0xFFFFFFFF
        data[word].inheritable = sets.inheritable >> (32 * word) & 0xFFFFFFFF
    if _libc().capset(ctypes.byref(header), data) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"capset: {os.strerror(err)}")


_PR_CAP_AMBIENT, _PR_CAP_AMBIENT_CLEAR_ALL = 47, 4  # linux/prctl.h


def _clear_all() -> None:
    """The ambient set emptied (prctl), then every other set (capset): irreversible."""
    if _libc().prctl(_PR_CAP_AMBIENT, _PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"prctl(PR_CAP_AMBIENT_CLEAR_ALL): {os.strerror(err)}")
    _clear_effective(CapSets(0, 0, 0, 0))


def renounce_capabilities() -> list[str]:
    """For a child that needs no capability: every set emptied when the rule says drop
    (else, as root, kept: see the module docstring); never raises, returns what it did."""
    if not sys.platform.startswith("linux"):
        return [f"capabilities: not Linux ({sys.platform}): nothing to renounce"]
    try:
        before = read_capabilities()
        held = before.effective | before.permitted | before.ambient
        if not held:
            return ["capabilities: none held"]
        drop, why = should_drop(replace(before, effective=held), os.geteuid())
        if not drop:
            return [f"capabilities: {why}"]
        _clear_all()
        after = read_capabilities()
    except (OSError, AttributeError) as exc:  # AttributeError: a libc without capget/prctl
        return [f"capabilities: left as they are ({exc})"]
    left = after.effective | after.permitted | after.ambient
    if left:
        return [f"capabilities: still holding {names(left)}"]
    return [f"capabilities: renounced {names(held)} ({why})"]


def drop_effective_capabilities() -> list[str]:
    """Clear this thread's effective capabilities when the rule says so; never raises.

    Returns one line per thing done or reason for not doing it (the caller logs them).
    """
    if not sys.platform.startswith("linux"):
        return [f"capabilities: not Linux ({sys.platform}): nothing to drop"]
    try:
        return _drop()
    except Exception as exc:  # a failure here must never stop the daemon from starting
        return [f"capabilities: left as they are: {type(exc).__name__}: {exc}"]


def _drop() -> list[str]:
    try:
        before = read_capabilities()
    except (OSError, AttributeError) as exc:  # AttributeError: a libc without capget
        return [f"capabilities: cannot read them ({exc}): left as they are"]
    drop, why = should_drop(before, os.geteuid())
    if not drop:
        return [f"capabilities: {why}"]
    notes: list[str] = []
    if threading.active_count() > 1:
        # Only the calling thread changes; say so rather than pretend.
        notes.append(
            f"capabilities: {threading.active_count() - 1} other thread(s) already run and "
            f"keep their effective set"
        )
    try:
        _clear_effective(before)
        after = read_capabilities()
    except OSError as exc:  # e.g. EPERM from a seccomp filter without capset
        return [*notes, f"capabilities: effective set kept ({exc})"]
    if after.effective:
        return [*notes, f"capabilities: effective set still {names(after.effective)}"]
    notes.append(
        f"capabilities: cleared the effective set ({names(before.effective)}; {why}); "
        f"ambient kept for the programs it starts: {names(after.ambient)}"
    )
    return notes
