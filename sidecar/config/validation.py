"""Validating one settings section with pydantic (adapter: the only module that imports it).

``config.loader`` hands each TOML table here and gets the section's frozen dataclass back, or
every problem as (key path, reason) in the words ``sidecar validate`` prints. pydantic reads
each field's rules from the schema's ``Annotated`` metadata (``config.rules``). Imported only
when a file is validated: in a CLI command, or in the child that validates for the daemon
(``host.apart``), so the daemon itself never loads pydantic.
"""

from __future__ import annotations

import difflib
from dataclasses import fields
from typing import Any, get_type_hints

from pydantic import TypeAdapter, ValidationError
from pydantic_core import ErrorDetails

from sidecar.config.base import Section
from sidecar.config.durations import show_duration
from sidecar.config.types import DURATION

Problems = list[tuple[str, str]]


def path(loc: tuple[int | str, ...]) -> str:
    """('gateway', 'names', 0) -> 'gateway.names[0]'; keys with odd characters are quoted."""
    out = ""
    for position, part in enumerate(loc):
        if part == "[key]":
            continue
        if isinstance(part, int):
            out += f"[{part}]"
        elif part.isidentifier() and "overrides" not in loc[:position]:
            out += f".{part}" if out else part
        else:
            out += f'."{part}"'
    return out


_ADAPTERS: dict[str, TypeAdapter[Any]] = {}  # by class name: built once per process


def _adapter(section: type[Section]) -> TypeAdapter[Any]:
    adapter = _ADAPTERS.get(section.__qualname__)
    if adapter is None:
        adapter = _ADAPTERS[section.__qualname__] = TypeAdapter(section)
    return adapter


def _hints(section: type[Section]) -> dict[str, Any]:
    return get_type_hints(section, include_extras=True)


def _known(section: type[Section]) -> list[str]:
    """The key names of ``section`` (for "did you mean")."""
    return [f.name for f in fields(section)]  # type: ignore[arg-type]


def _num(value: object) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


def _is_duration(section: type[Section], loc: tuple[int | str, ...]) -> bool:
    hint = _hints(section).get(str(loc[0])) if len(loc) == 1 else None
    return any(rule is DURATION for rule in getattr(hint, "__metadata__", ()))


def _reason(error: ErrorDetails, section: type[Section], name: str) -> str:
    kind, ctx, value = error["type"], error.get("ctx") or {}, error.get("input")
    if kind.startswith(("greater_than", "less_than")) and _is_duration(section, error["loc"]):
        ctx = {k: show_duration(float(v)) for k, v in ctx.items()}
    shown = repr(value) if len(repr(value)) <= 40 else repr(value)[:37] + "..."
    if kind in ("extra_forbidden", "unexpected_keyword_argument"):
        key = str(error["loc"][-1])
        near = difflib.get_close_matches(key, _known(section), n=1, cutoff=0.6)
        hint = f"; did you mean `{path((name, *error['loc'][:-1], near[0]))}`?" if near else ""
        return "unknown key" + hint
    simple = {
        "greater_than_equal": f"must be >= {_num(ctx.get('ge'))}, got {shown}",
        "greater_than": f"must be > {_num(ctx.get('gt'))}, got {shown}",
        "less_than_equal": f"must be <= {_num(ctx.get('le'))}, got {shown}",
        "less_than": f"must be < {_num(ctx.get('lt'))}, got {shown}",
        "int_type": f"expected an integer, got {shown}",
        "bool_type": f"expected true or false, got {shown}",
        "string_type": f"expected a string, got {shown}",
        "float_type": f"expected a number, got {shown}",
        "dataclass_type": "expected a table",
        "tuple_type": "expected a list",
        "dict_type": "expected a table",
        "too_short": "needs at least one entry",
        "enum": f"must be one of {ctx.get('expected', '')}, got {shown}",
    }
    if kind in simple:
        return simple[kind]
    message = str(error["msg"])
    return message.removeprefix("Value error, ")


def validate_section(
    section: type[Section], raw: dict[str, Any], name: str
) -> tuple[Any, Problems]:
    """``raw`` (one TOML table) as ``section``, or None and every problem with its key path."""
    try:
        value = _adapter(section).validate_python(raw)
    except ValidationError as exc:
        problems = [(path((name, *e["loc"])), _reason(e, section, name)) for e in exc.errors()]
        return None, problems
    return value, [(f"{name}.{key}", reason) for key, reason in value.cross_checks()]
