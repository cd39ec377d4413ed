"""Every ``sidecar ...`` command line the README and the docs show, as argument lists.

Found in fenced code blocks (a line starting with ``sidecar`` or ``$ sidecar``, or a
``sidecar`` after ``&&``, ``;`` or ``|`` in a shell line) and in inline code spans that start
with ``sidecar``. Placeholders (``FILE``, ``PATH``, ``F``, ``<...>``, ``[--opt]``) are kept
so that callers substitute them; what follows a shell ``|``, ``>``, ``&&`` or ``#`` is cut.
"""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DOCUMENTS = ("README.md", "docs/operations.md", "docs/dirac-migration.md", "certs/README.md")
_INLINE = re.compile(r"`(sidecar(?: [^`]*)?)`")
_SHELL_CUT = re.compile(r"\s(?:\||>|&&|&|;|#|\|\|)(?:\s|$)")


@dataclass(frozen=True, slots=True)
class DocCommand:
    source: str  # file:line
    text: str  # as written
    args: tuple[str, ...]  # after "sidecar"


def _clean(text: str) -> str | None:
    text = text.strip().removeprefix("$ ").strip()
    if not text.startswith("sidecar"):
        return None
    text = _SHELL_CUT.split(text, maxsplit=1)[0]
    text = re.sub(r"\[(--?[\w-]+)\]", r"\1", text)  # "check [--json]" -> "check --json"
    text = re.sub(r"\[([A-Z]+)\]", "", text)  # "files [NAME]" -> "files"
    return text.strip()


def _split(text: str) -> tuple[str, ...] | None:
    try:
        words = shlex.split(text)
    except ValueError:
        return None
    if not words or words[0] != "sidecar" or not all(w.isascii() for w in words):
        return None  # e.g. "sidecar run ◀── blocking queries" in a diagram
    return tuple(words[1:])


def doc_commands() -> list[DocCommand]:
    found: dict[tuple[str, ...], DocCommand] = {}
    for name in DOCUMENTS:
        fenced = False
        for number, line in enumerate((ROOT / name).read_text().splitlines(), start=1):
            if line.lstrip().startswith("```"):
                fenced = not fenced
                continue
            candidates: list[str] = []
            if fenced:
                for part in re.split(r"&&|;|\$\(", line):
                    candidates.append(part)
                candidates += [m.group(1) for m in re.finditer(r'"(sidecar [^"]*)"', line)]
            candidates += [m.group(1) for m in _INLINE.finditer(line)]
            for candidate in candidates:
                cleaned = _clean(candidate)
                args = _split(cleaned) if cleaned else None
                if args is not None and args not in found:
                    found[args] = DocCommand(f"{name}:{number}", cleaned or "", args)
    return list(found.values())
