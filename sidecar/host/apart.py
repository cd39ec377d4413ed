"""Settings loaded in a child process, for the daemon (adapter at the edge).

``sidecar run`` keeps running for months with one ``Settings`` value; validating the file
needs pydantic, whose import and schema cost the daemon ~10 MB of memory that it would hold
for nothing afterwards (docs/benchmarks.md, issue 13). So the daemon asks a short-lived child
(``python -P -m sidecar.host.apart [path]``: the same interpreter, the same code, the same
environment) to run ``config.loader.load_settings`` and hand the value back, at start and on
every SIGHUP. The answer is a pickle of the frozen settings dataclass (plain values) or of the
problems found; ``ConfigError`` comes out here exactly as it would in process.
"""

from __future__ import annotations

import pickle
import subprocess
import sys

from sidecar.base.errors import ConfigError, SidecarError
from sidecar.config.schema import Settings
from sidecar.host.privileges import renounce_capabilities

MODULE = "sidecar.host.apart"
TIMEOUT = 60.0  # seconds: the child imports pydantic and reads one file (~0.2 s here)


def load_settings_apart(path: str | None) -> Settings:
    """``load_settings(path)`` run in a child; raises what it would raise (ConfigError)."""
    # -P: the working directory is not put on sys.path (a "sidecar" folder there must not
    # stand in for the package)
    command = [sys.executable, "-P", "-m", MODULE, *([path] if path else [])]
    try:
        done = subprocess.run(command, capture_output=True, timeout=TIMEOUT, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise SidecarError(f"settings check could not run: {exc}") from None
    if done.returncode != 0:
        tail = done.stderr.decode("utf-8", "replace").strip().splitlines()[-1:] or ["no output"]
        raise SidecarError(f"settings check exited with status {done.returncode}: {tail[0]}")
    try:  # our own child's answer on a pipe: the values it holds come from the validated file
        answer = pickle.loads(done.stdout)  # noqa: S301
    except Exception as exc:  # anything but an answer: unpickling raises many kinds
        raise SidecarError(f"settings check gave no answer ({type(exc).__name__})") from None
    if not isinstance(answer, tuple) or not answer:
        raise SidecarError("settings check gave no answer")
    if answer[0] == "config":
        raise ConfigError.many(answer[1], answer[2])
    if answer[0] == "error":
        raise SidecarError(answer[1])
    settings = answer[1]
    assert isinstance(settings, Settings)
    return settings


def _main(argv: list[str]) -> int:
    # before the file is read: the child needs no capability (a systemd install hands the
    # daemon's children CAP_NET_BIND_SERVICE through the ambient set, for HAProxy's sake)
    for note in renounce_capabilities():
        sys.stderr.write(f"{note}\n")  # the daemon discards it; a test reads it
    out, sys.stdout = sys.stdout.buffer, sys.stderr  # a stray print must not spoil the answer
    from sidecar.config.loader import load_settings  # the child: pydantic is imported here

    try:
        answer: tuple[object, ...] = ("ok", load_settings(argv[0] if argv else None))
    except ConfigError as exc:
        answer = ("config", exc.source, list(exc.errors))
    except SidecarError as exc:
        answer = ("error", str(exc))
    out.write(pickle.dumps(answer))
    out.flush()
    return 0


if __name__ == "__main__":
    raise SystemExit(_main(sys.argv[1:]))
