"""Property tests: a CS sync never damages a CS file that diraccfg parses (issue 14, item 4).

Generated files: sections nested up to four deep, the ``Systems/<System>/URLs`` sections the
sidecar edits (present, absent, empty), options written as ``a, b`` lists or as ``=`` / ``+=``
line runs, comments before, between and after them, odd indentation (tabs, none), CRLF line
ends, values with spaces, ``#``, ``=`` and URLs that are not the gateway's. For every file
diraccfg parses, a sync (v9, with or without pruning) either writes a file in which the only
changed lines are URL option lines (plus the skeleton of new sections), every comment is kept
in order and every other option parses to the same value; or raises ``CSError`` and leaves the
file byte for byte as it was.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from pathlib import Path

import pytest
from diraccfg import CFG
from hypothesis import HealthCheck, assume, event, given, settings
from hypothesis import strategies as st

from sidecar.base.errors import CSError
from sidecar.config.cs import CSSettings
from sidecar.core.cfgtree import flatten_into
from sidecar.core.model import Backend, DesiredState, Protocol
from sidecar.dirac_cs.cstext import read_cs_file
from sidecar.dirac_cs.file import sync_cs_file
from sidecar.dirac_cs.render import render_cs
from tests.unit.test_cs_file import URL_LINE, changed_lines, comments

GW = ("dirac-gw1.example.org", "dirac-gw2.example.org")
NOW = datetime(2025, 3, 1, 12, 0, 0, tzinfo=UTC)
SYSTEMS = ("Framework", "DataManagement", "WorkloadManagement")
SERVICES = ("SystemAdministrator", "FileCatalog", "JobManager")
indent = st.sampled_from(["", " ", "  ", "    ", "\t"])
comment = st.sampled_from(["# a comment", "#", "# Name = value", "# {", "  # indented # twice"])
plain = st.sampled_from(
    ["yes", "1, 2, 3", "some words here", "value#hash", "a = b", "/opt/dirac/etc", "", "x,y"]
)
url = st.builds(
    lambda host, port, sys, svc: f"dips://{host}:{port}/{sys}/{svc}",
    st.sampled_from(["dirac-01.example.org", "dirac-gw1.example.org", "other.example.org"]),
    st.sampled_from([9162, 9197, 9132]), st.sampled_from(SYSTEMS), st.sampled_from(SERVICES),
)  # fmt: skip


@st.composite
def option_lines(draw: st.DrawFn, pad: str, name: str, values: st.SearchStrategy[str]) -> list[str]:
    items = draw(st.lists(values, min_size=1, max_size=3))
    if draw(st.booleans()):  # one line, comma list
        return [f"{pad}{name} = {', '.join(items)}"]
    lines = [f"{pad}{name} = {items[0]}"]
    for item in items[1:]:
        if draw(st.booleans()):
            lines.append(pad + draw(comment))
        lines.append(f"{pad}{name} += {item}")
    return lines


@st.composite
def section(draw: st.DrawFn, name: str, depth: int, pad: str) -> list[str]:
    inner = pad + draw(indent)
    body: list[str] = []
    if name == "URLs":
        for svc in draw(st.lists(st.sampled_from(SERVICES), max_size=3, unique=True)):
            body += draw(option_lines(inner, svc, url))
    else:
        for opt in draw(
            st.lists(st.sampled_from(["Port", "Name", "Flag"]), max_size=2, unique=True)
        ):
            body += draw(option_lines(inner, opt, plain))
    if name in SYSTEMS and draw(st.booleans()):
        body += draw(section("URLs", depth + 1, inner))
    if depth < 3 and draw(st.booleans()):
        child = draw(st.sampled_from(["Services", "Options", "Sub"]))
        body += draw(section(child, depth + 1, inner))
    if draw(st.booleans()):
        body.insert(draw(st.integers(0, len(body))), inner + draw(comment))
    return [f"{pad}{name}", f"{pad}{{", *body, f"{pad}}}"]


@st.composite
def cs_files(draw: st.DrawFn) -> str:
    lines = draw(st.lists(comment, max_size=2))
    lines += draw(section("DIRAC", 0, ""))
    systems = draw(st.lists(st.sampled_from(SYSTEMS), max_size=3, unique=True))
    if systems or draw(st.booleans()):
        body: list[str] = []
        for name in systems:
            body += draw(section(name, 1, "  "))
        lines += ["Systems", "{", *body, "}"]
    end = "\r\n" if draw(st.integers(0, 5)) == 0 else "\n"
    return end.join(lines) + end


SKELETON = re.compile(r"\s*(?:[{}]|[A-Za-z][A-Za-z0-9_]*)\s*")  # a new section's name or brace


def assert_only_url_lines_changed(before: str, after: str) -> None:
    removed, added = changed_lines(before, after)
    assert all(URL_LINE.fullmatch(line) for line in removed), removed
    assert all(URL_LINE.fullmatch(line) or SKELETON.fullmatch(line) for line in added), added


desired_states = st.lists(
    st.tuples(st.sampled_from(SYSTEMS), st.sampled_from(SERVICES), st.integers(9100, 9110)),
    max_size=4,
    unique_by=lambda t: (t[0], t[1]),
).map(lambda rows: DesiredState(tuple(Backend(s, v, Protocol.DIPS, p, ()) for s, v, p in rows)))


def not_url_options(text: str) -> dict[str, str]:
    options: dict[str, str] = {}
    flatten_into(CFG().loadFromBuffer(text).getAsDict(), "", options, set())
    return {k: v for k, v in options.items() if "/URLs/" not in k}


SLOW_OK = [HealthCheck.function_scoped_fixture, HealthCheck.too_slow]


@settings(max_examples=250, derandomize=True, deadline=None, suppress_health_check=SLOW_OK)
@given(cs_files(), desired_states, st.booleans())
def test_a_sync_changes_only_url_lines(
    tmp_path: Path, text: str, desired: DesiredState, prune: bool
) -> None:
    path = tmp_path / "dirac.cfg"
    path.write_bytes(text.encode("utf-8"))
    try:
        current = read_cs_file(path)
    except CSError:
        event("not parsed by diraccfg")
        assume(False)  # only files diraccfg parses are in scope
        return
    cs = CSSettings(prune=prune, backups_keep=1)
    before = path.read_bytes()
    try:
        result = sync_cs_file(path, render_cs(desired, GW, cs, current.options), cs, NOW)
    except CSError as exc:
        event(f"refused: {str(exc).split(': ', 1)[-1][:40]}")
        assert path.read_bytes() == before  # refused: untouched
        return
    after = path.read_text()
    if not result.changes:
        event("nothing to change")
        assert path.read_bytes() == before
        return
    event("written")
    assert_only_url_lines_changed(before.decode(), after)
    assert comments(before.decode()) == comments(after)
    assert not_url_options(after) == not_url_options(before.decode())


@pytest.mark.parametrize("end", ["\n", "\r\n"])
def test_a_new_urls_section_in_a_bare_file(tmp_path: Path, end: str) -> None:
    path = tmp_path / "dirac.cfg"
    path.write_text(end.join(["# bare", "DIRAC", "{", "  Name = x", "}"]) + end, newline="")
    desired = DesiredState((Backend("Framework", "SystemAdministrator", Protocol.DIPS, 9162, ()),))
    cs = CSSettings()
    result = sync_cs_file(path, render_cs(desired, GW, cs, read_cs_file(path).options), cs, NOW)
    assert result.changes
    parsed = CFG().loadFromBuffer(path.read_text())
    assert parsed.getOption("/Systems/Framework/URLs/SystemAdministrator", []) == [
        f"dips://{g}:9162/Framework/SystemAdministrator" for g in GW
    ]
