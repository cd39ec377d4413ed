"""How a settings type says what must be checked, without importing pydantic (pure).

The schema's sections are plain frozen dataclasses so that the daemon can hold a ``Settings``
value without loading pydantic (~10 MB of its memory at 1,000 services: docs/benchmarks.md):
pydantic validates the file in a child process (``host.apart``) or in a short-lived CLI
command (``config.validation``), and reads each field's rules from its ``Annotated`` metadata.
A :class:`Rule` is such metadata: pydantic calls its ``__get_pydantic_core_schema__`` hook
(pydantic's documented way for custom types) and only then is ``pydantic_core`` imported.
Bounds use ``annotated_types`` (``Ge``, ``Gt``, ``Le``, ``MinLen``), which pydantic knows.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any


class Rule:
    """``Annotated`` metadata: strict typing (no coercion: TOML's ``"5"`` is not ``5``), a
    check after the type (``after``: returns the value or raises ``ValueError`` with the
    reason) and a conversion before it (``before``: a duration ``"15s"`` -> ``15.0``)."""

    __slots__ = ("after", "before", "strict")

    def __init__(
        self,
        after: Callable[[Any], Any] | None = None,
        before: Callable[[Any], Any] | None = None,
        strict: bool = False,
    ) -> None:
        self.after, self.before, self.strict = after, before, strict

    def __get_pydantic_core_schema__(self, source: Any, handler: Any) -> Any:
        from pydantic_core import core_schema

        schema = handler(source)
        if self.strict:
            schema = {**schema, "strict": True}
        if self.after is not None:
            schema = core_schema.no_info_after_validator_function(self.after, schema)
        if self.before is not None:
            schema = core_schema.no_info_before_validator_function(self.before, schema)
        return schema


class Pairs:
    """``Annotated`` metadata for a TOML table kept as sorted pairs (hashable, deterministic):
    ``{"System/Service" = port}`` validated as ``dict[key, value]`` (each key and value with
    its own rules, errors located at the key), then stored as ``(("System/Service", port),)``."""

    __slots__ = ("key", "value")

    def __init__(self, key: Any, value: Any) -> None:
        self.key, self.value = key, value

    def __get_pydantic_core_schema__(self, source: Any, handler: Any) -> Any:
        from pydantic_core import core_schema

        table = handler.generate_schema(dict[self.key, self.value])  # type: ignore[name-defined]
        pairs = core_schema.no_info_after_validator_function(_sorted_pairs, table)
        return core_schema.no_info_before_validator_function(_as_table, pairs)


def _as_table(value: object) -> object:
    return dict(value) if isinstance(value, tuple) else value


def _sorted_pairs(value: dict[Any, Any]) -> tuple[tuple[Any, Any], ...]:
    return tuple(sorted(value.items()))


class Secret:
    """A string no ``repr``, log line or exception shows (the Consul token)."""

    __slots__ = ("_value",)

    def __init__(self, value: str = "") -> None:
        self._value = value

    def get_secret_value(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "Secret('**********')" if self._value else "Secret('')"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)

    def __reduce__(self) -> tuple[type[Secret], tuple[str]]:
        return (Secret, (self._value,))

    @classmethod
    def __get_pydantic_core_schema__(cls, source: Any, handler: Any) -> Any:
        from pydantic_core import core_schema

        string = core_schema.str_schema(strict=True)
        as_text = core_schema.no_info_before_validator_function(_unwrap, string)
        return core_schema.no_info_after_validator_function(cls, as_text)


def _unwrap(value: object) -> object:
    return value.get_secret_value() if isinstance(value, Secret) else value
