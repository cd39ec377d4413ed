"""The documented command lines, run for real where a dev Consul makes that cheap (issue 10).

Each command from ``tests/docs_commands.py`` whose effect is harmless here (``--version``,
``files``, ``validate``, ``render``, ``check``, ``certs`` on the catalog, ``cs diff``,
``status``, ``register --dry-run``) runs as a subprocess of the ``sidecar`` script, with its
``--config`` pointed at a gateway's settings file, against the module's Consul agent and a
running gateway. ``run``, ``once`` and ``register`` without ``--dry-run`` start long-lived
processes or write: they run in ``test_installed.py`` and the gateway tests instead; here they
are parsed only (``tests/unit/test_docs_parse.py``).
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from docs_commands import DocCommand, doc_commands
from gatewaylib import Gateway, sidecar_command
from helpers import REPO_ROOT

pytestmark = pytest.mark.integration
RUNNABLE = {"--version", "files", "validate", "render", "check", "certs", "cs", "status"}
EXIT_CODES = {  # what a healthy dev gateway may answer (check: OK or WARNING while warming)
    "--version": {0},
    "files": {0},
    "validate": {0},
    "render": {0},
    "check": {0, 1},
    "certs": {0, 1},
    "cs": {0, 1},
    "status": {0, 1},
    "register": {0},
}


def runnable(command: DocCommand) -> bool:
    args = [a for a in command.args if a not in ("--config", "-c")]
    head = next((a for a in args if a in RUNNABLE or a == "register"), None)
    if head == "register":
        return "--dry-run" in command.args
    if head == "certs" and "--target" in command.args:
        return False  # names a host outside 127.0.0.0/8
    return head is not None


def command_name(command: DocCommand) -> str:
    return next(a for a in command.args if a in RUNNABLE or a == "register")


def prepared(command: DocCommand, config: Path, dirac_cfg: Path) -> list[str]:
    args = list(command.args)
    for i, arg in enumerate(args):
        previous = args[i - 1] if i else ""
        if previous in ("--config", "-c") and arg != "configs/dev.toml":
            args[i] = str(config)
        if previous == "--dirac-cfg":
            args[i] = str(dirac_cfg)
    if "--config" not in args and "-c" not in args and command_name(command) != "--version":
        args += ["--config", str(config)]
    return args


DOCUMENTED = [c for c in doc_commands() if runnable(c)]


@pytest.fixture(scope="module")
def dirac_cfg(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("dirac") / "dirac.cfg"
    path.write_text(
        "Systems\n{\n  Framework\n  {\n    Services\n    {\n"
        "      SystemAdministrator\n      {\n        Port = 9162\n      }\n    }\n  }\n}\n"
    )
    return path


def test_some_commands_run_for_real() -> None:
    names = {command_name(c) for c in DOCUMENTED}
    assert {"validate", "render", "check", "files", "status", "register"} <= names


def test_documented_commands_run(gateway: Gateway, dirac_cfg: Path) -> None:
    """One gateway for all of them (a gateway per command would cost ~2 s each)."""
    cs_file = gateway.tmp / "dirac.cfg"
    cs_file.write_text("Systems\n{\n}\n")
    # The commands' own settings: the gateway's plus the CS (the daemon itself writes no CS,
    # so that `cs sync` gets the one-writer lock).
    config = gateway.tmp / "cli.toml"
    config.write_text(gateway.config_text() + f'\n[dirac_cs]\nenabled = true\nfile = "{cs_file}"\n')
    failures = []
    for command in DOCUMENTED:
        args = prepared(command, config, dirac_cfg)
        result = subprocess.run(
            [*sidecar_command(), *args],
            capture_output=True,
            text=True,
            cwd=REPO_ROOT,
            timeout=60,
            check=False,
        )
        output = result.stdout + result.stderr
        bad = "Traceback" in output or "No such option" in output
        if bad or result.returncode not in EXIT_CODES[command_name(command)]:
            failures.append(
                f"{command.source}: `{command.text}` ran as {args}: exit {result.returncode}\n"
                + output[-2000:]
            )
    assert not failures, "\n\n".join(failures)
