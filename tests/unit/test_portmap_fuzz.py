"""Property tests: any port-map file either loads or fails with a ``ValueError`` that names the
file and the line, never a traceback (issue 14, item 4). Generated files mix good rows,
comments, blank lines, quoted fields with commas and newlines, short and long rows, bad
protocols and ports, duplicate ports, NUL bytes, CR line ends and bytes that are not UTF-8."""

from __future__ import annotations

import re
from pathlib import Path

from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from sidecar.core.portmap import load_port_map

HEADER = "system,service,protocol,gateway_port,default_port,project"
names = st.sampled_from(["Framework", "DataManagement", "Gw", "A1", "", "Bad Name", "x/y", "é"])
protocols = st.sampled_from(["dips", "https", "DIPS", "tcp", "", "dips "])
ports = st.sampled_from(["9135", "8443", "0", "65536", "-1", "1e3", "", " 80", "9135.0", "x"])
good_row = st.builds(lambda s, v, p: f"{s},{v},dips,{p},{p},DIRAC", st.sampled_from(
    ["Framework", "WorkloadManagement"]), st.sampled_from(["SvcA", "SvcB", "SvcC"]),
    st.integers(9000, 9010).map(str))  # fmt: skip
odd_row = st.one_of(
    st.builds(lambda *f: ",".join(f), names, names, protocols, ports, ports, names),
    st.builds(lambda s, v: f'"{s},x","{v}\nmore",dips,9100', names, names),  # quoted , and \n
    st.just("Framework,Short"),  # too few fields
    st.just("Framework,Long,dips,9101,9101,DIRAC,extra,fields"),
    st.just("# a comment, with commas"),
    st.just(""),
    st.just("   "),
    st.just('"unterminated,dips,9102'),
    st.just("Framework,Nul\x00,dips,9103"),
    st.text(max_size=40),
)
headers = st.sampled_from(
    [HEADER, "system,service,protocol", "", "# only a comment", HEADER.upper()]
)
line_ends = st.sampled_from(["\n", "\r\n", "\r"])


@st.composite
def port_map_files(draw: st.DrawFn) -> bytes:
    rows = draw(st.lists(st.one_of(good_row, odd_row), max_size=12))
    end = draw(line_ends)
    text = end.join([draw(headers), *rows]) + end
    data = text.encode("utf-8")
    if draw(st.integers(0, 9)) == 0:
        data += b"\xff\xfe not utf-8\n"
    return data


def check(tmp_path: Path, data: bytes) -> None:
    path = tmp_path / "ports.csv"
    path.write_bytes(data)
    try:
        port_map = load_port_map(path)
    except ValueError as exc:
        message = str(exc)
        assert message.startswith(f"{path}:"), message  # the file, first
        assert "\n" not in message.rstrip(), message  # one line
        if "header" not in message:
            assert re.match(rf"{re.escape(str(path))}: line \d+", message), message
        return
    for entry in port_map.entries:  # what loads is valid
        assert 1 <= entry.gateway_port <= 65535
        assert entry.system and entry.service


@settings(max_examples=300, derandomize=True, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])  # fmt: skip
@given(port_map_files())
@example(f"{HEADER}\nA,B,dips,9000\nA,C,dips,9000\n".encode())
@example(f'{HEADER}\n"a\nb",B,dips,9000\n'.encode())
@example(f"{HEADER}\nA,B,dips,9000\n\xff".encode("latin-1"))
@example(f"# comment\n\n{HEADER}\nA,B,dips,9000\nA,C,tcp,9001\n".encode())
def test_port_map_loads_or_names_the_line(tmp_path: Path, data: bytes) -> None:
    check(tmp_path, data)


def test_the_error_names_the_real_line_after_comments(tmp_path: Path) -> None:
    path = tmp_path / "ports.csv"
    path.write_text(f"# one\n# two\n\n{HEADER}\nFramework,A,dips,9000\nFramework,B,ftp,9001\n")
    try:
        load_port_map(path)
    except ValueError as exc:
        assert str(exc).startswith(f"{path}: line 6:"), exc
    else:
        raise AssertionError("ftp accepted")


def test_the_shipped_map_loads() -> None:
    from sidecar.config.schema import Settings

    assert len(load_port_map(Settings().port_map_path).entries) > 50
