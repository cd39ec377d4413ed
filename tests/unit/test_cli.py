"""The command line as users type it: ``--config`` before or after the command, on every
command; ``--version``; ``validate`` listing every settings error with its key path."""

from __future__ import annotations

from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from sidecar.cli import main
from sidecar.cli.app import package_version

BAD = """
[consul]
adress = "http://127.0.0.1:8500"
wait = "20m"

[apply]
max_old_workers = -1

[log]
level = "LOUD"
"""


def commands(group: click.Group = main, prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    found = []
    for name, command in sorted(group.commands.items()):
        found.append((*prefix, name))
        if isinstance(command, click.Group):
            found.extend(commands(command, (*prefix, name)))
    return found


@pytest.fixture
def bad(tmp_path: Path) -> Path:
    path = tmp_path / "bad.toml"
    path.write_text(BAD)
    return path


def test_version() -> None:
    result = CliRunner().invoke(main, ["--version"])
    assert result.exit_code == 0 and package_version() in result.output
    assert package_version() != "unknown"


@pytest.mark.parametrize("command", commands(), ids=" ".join)
def test_every_command_takes_config_before_and_after(command: tuple[str, ...]) -> None:
    runner = CliRunner()
    after = runner.invoke(main, [*command, "--config", "/x.toml", "--help"])
    before = runner.invoke(main, ["--config", "/x.toml", *command, "--help"])
    short = runner.invoke(main, [*command, "-c", "/x.toml", "--help"])
    for result in (after, before, short):
        assert result.exit_code == 0, result.output
        assert "--config PATH" in result.output


@pytest.mark.parametrize("position", ["before", "after"])
def test_validate_reports_every_error_with_its_key_path(bad: Path, position: str) -> None:
    args = ["--config", str(bad), "validate"]
    if position == "after":
        args = ["validate", "--config", str(bad)]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 1
    lines = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert lines == [
        f"error: {bad}: consul.wait: must be <= 600s, got '20m'",
        f"error: {bad}: consul.adress: unknown key; did you mean `consul.address`?",
        f"error: {bad}: apply.max_old_workers: must be >= 0, got -1",
        f"error: {bad}: log.level: must be one of 'DEBUG', 'INFO', 'WARNING', 'ERROR' or "
        "'CRITICAL', got 'LOUD'",
    ]
    assert "FAILED: 4 settings error(s)" in result.output


def test_run_refuses_a_bad_file_the_same_way(bad: Path) -> None:
    result = CliRunner().invoke(main, ["run", "--config", str(bad)])
    assert result.exit_code == 2
    assert f"{bad}: apply.max_old_workers: must be >= 0" in result.output
    assert "Traceback" not in result.output


def test_check_maps_a_bad_file_to_unknown(bad: Path) -> None:
    assert CliRunner().invoke(main, ["check", "--config", str(bad)]).exit_code == 3


def test_last_config_wins(bad: Path, tmp_path: Path) -> None:
    good = tmp_path / "good.toml"
    good.write_text('[gateway]\nbind = "127.0.0.1"\n')
    runner = CliRunner()
    # the subcommand's --config comes last and wins over the group's
    result = runner.invoke(
        main, ["--config", str(bad), "validate", "--no-haproxy", "-c", str(good)]
    )
    assert result.exit_code == 0, result.output
    assert f"OK: {good}" in result.output


def test_config_from_the_environment(tmp_path: Path) -> None:
    good = tmp_path / "env.toml"
    good.write_text('[gateway]\nbind = "127.0.0.1"\n')
    result = CliRunner().invoke(
        main, ["validate", "--no-haproxy"], env={"SIDECAR_CONFIG": str(good)}
    )
    assert result.exit_code == 0 and f"OK: {good}" in result.output


def test_files_lists_and_prints_what_ships(tmp_path: Path) -> None:
    runner = CliRunner()
    listing = runner.invoke(main, ["files"])
    assert listing.exit_code == 0
    for name in ("haproxy.cfg.j2", "dirac-port-map.csv", "sidecar.example.toml"):
        assert name in listing.output
    example = runner.invoke(main, ["files", "sidecar.example.toml"])
    assert example.output.startswith("# dirac-sidecar settings")
    (tmp_path / "s.toml").write_text(example.output)
    checked = runner.invoke(main, ["validate", "--no-haproxy", "-c", str(tmp_path / "s.toml")])
    assert checked.exit_code == 0, checked.output
