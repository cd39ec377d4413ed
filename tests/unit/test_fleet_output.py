"""``sidecar status --fleet`` prints catalog values inert: no terminal control, no forged row."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from sidecar.cli import cs, main
from sidecar.cli.cs import FIELD_LIMIT, HOLDER_LIMIT, fleet_table
from sidecar.fleet.view import GatewayInfo

HOSTILE_NODE = "node\x1b[2J\nevil-gw   evil-node   passing   99 g1"
CLEAN = GatewayInfo("gw-a.example.org", "node-a", "g1", 10, "passing", ("gw-a.example.org",))
HOSTILE = GatewayInfo(
    "gw-b\u202e.example.org", HOSTILE_NODE, "g1\r\x9b31m", 10, "pass\x1bing", ("gw-b",)
)
HEADER = f"{'GATEWAY':<32} {'NODE':<20} {'STATUS':<9} {'INDEX':>10} GENERATION"


def test_a_clean_fleet_prints_as_before() -> None:
    lines = fleet_table([CLEAN], set(), "node-a/gw-a.example.org")
    assert lines == [
        HEADER,
        f"{'gw-a.example.org':<32} {'node-a':<20} {'passing':<9} {10:>10} g1",
        "CS writer: node-a/gw-a.example.org",
    ]
    lagging = GatewayInfo("gw-c", "node-c", "", 3, "critical")
    assert fleet_table([lagging], {"gw-c"}, "")[1:] == [
        f"{'gw-c':<32} {'node-c':<20} {'critical':<9} {3:>10} -  LAGGING",
        "CS writer: (nobody)",
    ]


def test_hostile_values_cannot_clear_the_terminal_or_forge_a_row() -> None:
    lines = fleet_table([CLEAN, HOSTILE], {HOSTILE.name}, "evil\x1b]0;owned\x07/gw\nCS writer: me")
    assert len(lines) == 4  # header, two gateways, the writer: nothing forged
    text = "\n".join(lines)
    assert not any((ord(c) < 0x20 and c != "\n") or 0x7F <= ord(c) < 0xA0 for c in text)
    assert "\u202e" not in text
    row = lines[2]
    assert row.startswith("gw-b\\u202e.example.org")
    assert "node\\x1b[2J\\nevil-gw" in row
    assert "pass\\x1bing" in row
    assert row.endswith("g1\\r\\x9b31m  LAGGING")
    assert lines[3] == "CS writer: evil\\x1b]0;owned\\x07/gw\\nCS writer: me"


def test_huge_values_are_capped() -> None:
    huge = GatewayInfo("g" * 10_000, "\x1b" * 10_000, "x" * 10_000, 1, "s" * 10_000)
    lines = fleet_table([huge], set(), "h" * 10_000)
    assert len(lines[1]) == 4 * (FIELD_LIMIT + 3) + 4 + 10  # four capped cells, the index
    assert lines[2] == "CS writer: " + "h" * HOLDER_LIMIT + "..."


# --- the command itself, with Consul faked ----------------------------------------------------


class FakeLock:
    @staticmethod
    def from_settings(client: Any, settings: Any, name: str) -> FakeLock:
        return FakeLock()

    def holder(self) -> str:
        return "evil\x1b[2J/gw"


@pytest.fixture
def faked(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[Path]:
    monkeypatch.setattr(cs, "client_of", lambda settings: object())
    monkeypatch.setattr(cs, "fleet", lambda client: [CLEAN, HOSTILE])
    monkeypatch.setattr(cs, "CSLock", FakeLock)
    config = tmp_path / "sidecar.toml"
    config.write_text("")
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level  # settings_of sets up logging
    try:
        yield config
    finally:
        root.handlers[:] = handlers
        root.setLevel(level)


def test_status_fleet_output_is_inert(faked: Path) -> None:
    result = CliRunner().invoke(main, ["status", "--fleet", "--config", str(faked)])
    assert result.exit_code == 1, result.output  # the hostile gateway is not "passing"
    lines = result.stdout.splitlines()
    assert lines[0] == HEADER
    assert len(lines) == 4
    assert "\x1b" not in result.stdout and "\r" not in result.stdout
    assert lines[-1] == "CS writer: evil\\x1b[2J/gw"
