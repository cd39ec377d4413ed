"""A diraccfg tree (``CFG.getAsDict()``) as flat option and section paths, and the v8 layout's
``/DIRAC/Setups/<Setup>/<System> = <Instance>`` table read from them (pure).

Shared by the CS file backend, the CSAPI backend, the CS renderer and ``sidecar register``:
``/A/B/Option`` -> value, and the set of ``/A/B`` section paths.
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


def setup_instances(options: Mapping[str, str], setup: str) -> list[tuple[str, str]]:
    """``(system, instance)`` for every ``/DIRAC/Setups/<setup>/<System>`` option, sorted by
    system; the instance is stripped and not otherwise checked (callers judge it)."""
    prefix = f"/DIRAC/Setups/{setup}/"
    return [
        (path[len(prefix) :], raw.strip())
        for path, raw in sorted(options.items())
        if path.startswith(prefix) and "/" not in path[len(prefix) :]
    ]
