"""A diraccfg tree (``CFG.getAsDict()``) as flat option and section paths (pure).

Shared by the CS file backend, the CSAPI backend and ``sidecar register``: ``/A/B/Option`` ->
value, and the set of ``/A/B`` section paths.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


def flatten_into(
    tree: Mapping[str, Any], prefix: str, options: dict[str, str], sections: set[str]
) -> None:
    for name, value in tree.items():
        path = f"{prefix}/{name}"
        if isinstance(value, Mapping):
            sections.add(path)
            flatten_into(value, path, options, sections)
        else:
            options[path] = str(value)
