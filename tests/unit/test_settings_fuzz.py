"""Property tests: any settings file either loads or fails with key-path errors, never a
traceback (issue 10, item 6; issue 14, item 4)."""

from __future__ import annotations

import json
import pickle
import tomllib
from dataclasses import fields
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sidecar.base.errors import ConfigError
from sidecar.config.loader import load_settings, parse_settings
from sidecar.config.schema import SECTIONS, Settings

KNOWN = {name: [f.name for f in fields(model)] for name, model in SECTIONS.items()}
scalars = st.one_of(
    st.booleans(),
    st.integers(min_value=-(2**63), max_value=2**63 - 1),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=30),
    st.sampled_from(["15s", "1m30s", "500ms", "0s", "-1s", "10m", "1h", "dips", "v8", "json"]),
    st.sampled_from(["127.0.0.1", "::1", "dirac-gw.example.org", "http://127.0.0.1:8500"]),
)
values = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3)
    ),
    max_leaves=6,
)


@st.composite
def documents(draw: st.DrawFn) -> dict[str, Any]:
    names = draw(st.lists(st.sampled_from([*KNOWN, "bogus", "consull"]), max_size=5, unique=True))
    doc: dict[str, Any] = {}
    for name in names:
        keys = [*KNOWN.get(name, []), "adress", "unknown_key"]
        chosen = draw(st.lists(st.sampled_from(keys), max_size=5, unique=True))
        doc[name] = {key: draw(values) for key in chosen}
    if draw(st.booleans()):
        doc[draw(st.sampled_from(["consul", "top"]))] = draw(scalars)  # a section that is no table
    return doc


def toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        text = repr(value)
        return {"nan": "nan", "inf": "inf", "-inf": "-inf"}.get(text, text)
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, list):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    return "{" + ", ".join(f"{json.dumps(k)} = {toml_value(v)}" for k, v in value.items()) + "}"


def to_toml(doc: dict[str, Any]) -> str:
    lines = [
        f"{json.dumps(k)} = {toml_value(v)}" for k, v in doc.items() if not isinstance(v, dict)
    ]
    for name, table in doc.items():
        if isinstance(table, dict):
            lines.append(f"[{json.dumps(name)}]")
            lines.extend(f"{json.dumps(k)} = {toml_value(v)}" for k, v in table.items())
    return "\n".join(lines) + "\n"


def assert_key_path_errors(exc: ConfigError, source: str) -> None:
    assert exc.errors
    for key, reason in exc.errors:
        assert reason and "\n" not in reason
        assert "Traceback" not in reason
        assert key == "" or key.split(".")[0].split("[")[0] or key.startswith('"')
    for line in exc.lines():
        assert line.startswith(f"{source}: ")


@settings(max_examples=400, deadline=None)
@given(documents())
def test_any_document_loads_or_fails_with_key_paths(doc: dict[str, Any]) -> None:
    try:
        loaded = parse_settings(doc, "fuzz.toml", {})
    except ConfigError as exc:
        assert_key_path_errors(exc, "fuzz.toml")
    else:
        assert isinstance(loaded, Settings)
        hash(loaded)  # a value: usable as part of the render key
        # what the daemon's settings child (host.apart) hands over arrives unchanged
        assert pickle.loads(pickle.dumps(loaded)) == loaded


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(documents())
def test_any_file_loads_or_fails_with_key_paths(tmp_path: Path, doc: dict[str, Any]) -> None:
    path = tmp_path / "fuzz.toml"
    path.write_text(to_toml(doc), encoding="utf-8")
    try:
        tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError:
        return  # the serializer made something TOML cannot read: not the loader's business
    try:
        load_settings(str(path), env={})
    except ConfigError as exc:
        assert_key_path_errors(exc, str(path))


@settings(
    max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(st.binary(max_size=200))
def test_any_bytes_load_or_fail_cleanly(tmp_path: Path, blob: bytes) -> None:
    path = tmp_path / "blob.toml"
    path.write_bytes(blob)
    try:
        load_settings(str(path), env={})
    except ConfigError as exc:
        assert exc.source == str(path)


def test_every_error_of_a_many_mistakes_file_is_reported() -> None:
    doc = {key: {"adress": 1} for key in KNOWN}
    try:
        parse_settings(doc, "f", {})
    except ConfigError as exc:
        assert len(exc.errors) == len(KNOWN)
    else:  # pragma: no cover
        raise AssertionError("accepted")
