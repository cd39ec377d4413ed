"""The base of every settings section (pure): frozen, closed to unknown keys, self-checking.

A section is a frozen pydantic model, so a loaded ``Settings`` is a value: compared with
``==`` on SIGHUP, hashed into the render key, never changed in place. ``extra="forbid"`` turns
a misspelt key into an error (the loader adds "did you mean ...?"). Checks that involve two
keys of one section live in ``cross_checks`` and return every problem with its key instead of
stopping at the first, so ``sidecar validate`` can report them all at once.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict

# (key inside the section, reason): a cross-field problem before the loader prefixes the path.
Issue = tuple[str, str]


class Section(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", validate_default=False)

    def cross_checks(self) -> list[Issue]:
        """Problems that involve more than one key of this section (none by default)."""
        return []
