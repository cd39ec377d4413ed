"""Every ``sidecar ...`` command line in the README and the docs parses as typed (issue 10).

Each is given to the real click group with ``--help`` appended: click parses every option
and argument before it acts on ``--help``, so a misspelt option, a missing value or an unknown
command fails here. ``tests/integration/test_docs_run.py`` runs the cheap ones for real.
"""

from __future__ import annotations

import pytest
from click.testing import CliRunner
from docs_commands import DocCommand, doc_commands

from sidecar.cli import main

PLACEHOLDERS = {
    "F": "/tmp/sidecar.toml",
    "FILE": "/tmp/sidecar.toml",
    "PATH": "/tmp/sidecar.toml",
    "System/Service=PORT": "Framework/SystemAdministrator=20001",
    "9162=$PORT0": "9162=31742",
}
COMMANDS = doc_commands()


def substituted(command: DocCommand) -> list[str]:
    return [PLACEHOLDERS.get(arg, arg) for arg in command.args]


def test_the_docs_show_every_command() -> None:
    shown = {c.args[0] for c in COMMANDS if c.args and not c.args[0].startswith("-")}
    shown |= {c.args[2] for c in COMMANDS if c.args[:1] == ("--config",) and len(c.args) > 2}
    assert set(main.commands) <= shown, f"not in the docs: {set(main.commands) - shown}"
    assert ("--version",) in {c.args for c in COMMANDS}


@pytest.mark.parametrize("command", COMMANDS, ids=[c.text for c in COMMANDS])
def test_documented_command_line_parses(command: DocCommand) -> None:
    args = substituted(command)
    if args == ["--version"]:
        result = CliRunner().invoke(main, args)
    else:
        result = CliRunner().invoke(main, [*args, "--help"])
    assert result.exit_code == 0, f"{command.source}: `{command.text}`: {result.output}"
    assert "Usage:" in result.output or "version" in result.output
