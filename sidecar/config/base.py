"""The base of every settings section (pure): frozen, closed to unknown keys, self-checking.

A section is a frozen dataclass, so a loaded ``Settings`` is a value: compared with ``==`` on
SIGHUP, hashed into the render key, never changed in place (``dataclasses.replace`` makes a
changed copy). Its fields' ``Annotated`` rules (``config.rules``) are read by pydantic, which
validates a file into these classes (``config.validation``); ``extra = "forbid"`` turns a
misspelt key into an error (the loader adds "did you mean ...?"). Checks that involve two keys
of one section live in ``cross_checks`` and return every problem with its key instead of
stopping at the first, so ``sidecar validate`` can report them all at once.
"""

from __future__ import annotations

from typing import Any, ClassVar

# (key inside the section, reason): a cross-field problem before the loader prefixes the path.
Issue = tuple[str, str]


class Section:
    """What every section shares; each is ``@dataclass(frozen=True, slots=True)`` itself."""

    __slots__ = ()
    # read by pydantic (the only place it is read): no unknown keys, defaults trusted
    __pydantic_config__: ClassVar[dict[str, Any]] = {"extra": "forbid", "validate_default": False}

    def cross_checks(self) -> list[Issue]:
        """Problems that involve more than one key of this section (none by default)."""
        return []
