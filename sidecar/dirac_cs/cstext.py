"""The text of a DIRAC CS file: parsed, edited in place, verified (pure given the text).

diraccfg is used only to *parse*: its round trip loses or moves comments (``#`` inside comments,
comments before ``+=`` lines, trailing section comments). Instead the option's own lines are
replaced in the original text (``Name = a`` and the ``Name += b`` lines after it), and a new
option (with any missing sections) is inserted before the closing brace of its deepest existing
section. The result is parsed again and must hold exactly the planned lists and every other
option unchanged; otherwise ``CSError`` is raised and the caller writes nothing.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from diraccfg import CFG

from sidecar.base.errors import CSError
from sidecar.core.cfgtree import flatten_into as _flatten
from sidecar.dirac_cs.render import CSChange, split_values

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class CSFile:
    """A parsed CS file: its text and every option as ``/Path/To/Option`` -> raw value."""

    path: Path  # symlinks resolved: the file that is really written
    text: str
    options: Mapping[str, str]
    sections: frozenset[str]

    def lists(self) -> dict[str, tuple[str, ...]]:
        return {path: split_values(value) for path, value in self.options.items()}


def _parse(text: str, where: object) -> tuple[dict[str, str], frozenset[str]]:
    try:
        tree = CFG().loadFromBuffer(text).getAsDict()
    except Exception as exc:  # diraccfg raises ValueError, KeyError, ... on bad syntax
        raise CSError(f"{where}: not a valid CS file: {exc}") from None
    options: dict[str, str] = {}
    sections: set[str] = set()
    _flatten(tree, "", options, sections)
    return options, frozenset(sections)


def read_cs_file(path: str | Path) -> CSFile:
    """Read and parse the CS file at ``path``; ``CSError`` names the file and the reason."""
    real = Path(path).resolve()
    try:
        text = real.read_bytes().decode("utf-8")
    except OSError as exc:
        raise CSError(f"{path}: cannot read: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise CSError(f"{path}: not UTF-8 text") from None
    options, sections = _parse(text, path)
    return CSFile(real, text, options, sections)


# --- where things sit in the text: a scan that mirrors CFG.loadFromBuffer line by line ---


@dataclass
class _Section:
    indent: str  # indentation of the line where the section's name starts
    close: tuple[int, int] | None = None  # (line, column) of its "}"; None for the root
    child_indent: str | None = None  # indentation of its first entry
    options: dict[str, list[tuple[str, int]]] = field(default_factory=dict)  # name -> (op, line)


def _indent(raw: str) -> str:
    return raw[: len(raw) - len(raw.lstrip())]


def _scan(lines: list[str]) -> dict[str, _Section]:
    """Every section by path ("" is the root), with its option lines and closing brace."""
    sections = {"": _Section("")}
    stack = [""]
    pending, pending_line = "", -1
    for no, raw in enumerate(lines):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        for index, char in enumerate(line):
            current = sections[stack[-1]]
            if char == "{":
                header = pending_line if pending_line >= 0 else no
                if current.child_indent is None:
                    current.child_indent = _indent(lines[header])
                path = f"{stack[-1]}/{pending.strip()}"
                sections[path] = _Section(_indent(lines[header]))
                stack.append(path)
                pending, pending_line = "", -1
            elif char == "}":
                current.close = (no, len(_indent(raw)) + index)
                stack.pop()
            elif char == "=" or line[index : index + 2] == "+=":
                op = "=" if char == "=" else "+="
                if current.child_indent is None:
                    current.child_indent = _indent(raw)
                current.options.setdefault(line.split(op)[0].strip(), []).append((op, no))
                pending, pending_line = "", -1
                break
            else:
                pending_line = no if not pending else pending_line
                pending += char
    return sections


def _unit(sections: Mapping[str, _Section]) -> str:
    """The file's indentation step (two spaces, as diraccfg writes, when nothing says else)."""
    for section in sections.values():
        child = section.child_indent
        if child and len(child) > len(section.indent) and child.startswith(section.indent):
            return child[len(section.indent) :]
    return "  "


def _option_lines(indent: str, name: str, values: Sequence[str], one_line: bool) -> list[str]:
    if one_line:
        return [f"{indent}{name} = {', '.join(values)}"]
    return [f"{indent}{name} = {values[0]}"] + [f"{indent}{name} += {v}" for v in values[1:]]


@dataclass
class _Block:
    """New entries to insert into one existing section: options and whole new sections."""

    options: dict[str, tuple[str, ...]] = field(default_factory=dict)
    children: dict[str, _Block] = field(default_factory=dict)

    def render(self, indent: str, unit: str) -> list[str]:
        out: list[str] = []
        for name, values in self.options.items():
            out += _option_lines(indent, name, values, one_line=False)
        for name, child in self.children.items():
            out += [f"{indent}{name}", f"{indent}{{"]
            out += child.render(indent + unit, unit)
            out.append(f"{indent}}}")
        return out


class _Edit:
    """Line replacements and insertions on the original text, applied in one pass."""

    def __init__(self, text: str, where: object) -> None:
        self.where = where
        self.lines = text.split("\n")
        self.cr = "\r" if "\r\n" in text else ""
        self.sections = _scan(self.lines)
        self.unit = _unit(self.sections)
        self.replace: dict[int, list[str]] = {}
        self.blocks: dict[str, _Block] = {}

    def change(self, change: CSChange) -> None:
        parent, _, name = change.path.rpartition("/")
        section = self.sections.get(parent)
        events = section.options.get(name) if section else None
        if events:
            self._rewrite(name, events, change.new)
        elif change.new is not None:
            self._add(parent, name, change.new)

    def _rewrite(
        self, name: str, events: list[tuple[str, int]], new: tuple[str, ...] | None
    ) -> None:
        """Put the values into the lines of the last ``Name =`` and its ``Name +=`` lines.

        Values go into the existing lines in order (comments between them stay where they
        are); extra values follow the last line, surplus lines are dropped. Earlier
        ``Name =`` lines are dead (the last one wins) and stay as they are.
        """
        for op, no in events:
            if self.lines[no].partition(op)[0].strip() != name:
                raise CSError(f"{self.where}:{no + 1}: cannot edit option {name!r} on this line")
        if new is None:
            self.replace.update({no: [] for _, no in events})
            return
        last = max(i for i, (op, _) in enumerate(events) if op == "=")
        slots = [no for _, no in events[last:]]
        first = self.lines[slots[0]]
        if len(slots) == 1 and "," in first.partition("=")[2]:
            self.replace[slots[0]] = _option_lines(_indent(first), name, new, one_line=True)
            return
        lines = _option_lines("", name, new, one_line=False)
        for k, no in enumerate(slots):
            indent = _indent(self.lines[no])
            mine = lines[k : k + 1] if k < len(slots) - 1 else lines[k:]
            self.replace[no] = [indent + line for line in mine]

    def _add(self, parent: str, name: str, values: tuple[str, ...]) -> None:
        parts = parent.split("/")[1:]
        depth = len(parts)
        while depth and "/" + "/".join(parts[:depth]) not in self.sections:
            depth -= 1
        anchor = "/" + "/".join(parts[:depth]) if depth else ""
        block = self.blocks.setdefault(anchor, _Block())
        for part in parts[depth:]:
            block = block.children.setdefault(part, _Block())
        block.options[name] = values

    def _cuts(self) -> dict[int, list[tuple[int, list[str], str]]]:
        """Where each block goes: (line, column) of its section's "}", or the end of file."""
        cuts: dict[int, list[tuple[int, list[str], str]]] = {}
        for anchor, block in self.blocks.items():
            section = self.sections[anchor]
            if section.close is None:
                if self.lines[-1].strip():  # no newline at the end of the file
                    self.lines[-1] += self.cr
                    self.lines.append("")
                no, col, indent = len(self.lines) - 1, 0, section.child_indent or ""
            else:
                (no, col), indent = (
                    section.close,
                    section.child_indent or section.indent + self.unit,
                )
            cuts.setdefault(no, []).append((col, block.render(indent, self.unit), section.indent))
        return cuts

    def _split(self, raw: str, cuts: list[tuple[int, list[str], str]]) -> list[str]:
        """Insert blocks before closing braces, splitting the line only when it must."""
        cuts.sort()
        head = raw[: cuts[0][0]]
        out = [] if not head.strip() else [head.rstrip() + self.cr]
        lead = head if not head.strip() else None
        for i, (col, block, close_indent) in enumerate(cuts):
            out += [line + self.cr for line in block]
            end = cuts[i + 1][0] if i + 1 < len(cuts) else len(raw)
            piece = raw[col:end]
            indent = lead if (i == 0 and lead is not None) else close_indent
            out.append(indent + (piece if end == len(raw) else piece.strip() + self.cr))
        return out

    def result(self) -> str:
        cuts = self._cuts()
        out: list[str] = []
        for no, raw in enumerate(self.lines):
            if no in self.replace:  # the last new line keeps the old line's ending
                new, ending = self.replace[no], raw[len(raw.rstrip("\r")) :]
                out += [line + self.cr for line in new[:-1]] + [line + ending for line in new[-1:]]
            elif no in cuts:
                out += self._split(raw, cuts[no])
            else:
                out.append(raw)
        text = "\n".join(out)
        # an unterminated last line that was dropped leaves the line before it with a lone "\r"
        return text[:-1] if text.endswith("\r") and not self.lines[-1].endswith("\r") else text


def _verify(before: CSFile, text: str, changes: Sequence[CSChange]) -> None:
    """The edited text must hold exactly the planned lists and every other option unchanged."""
    where = before.path
    options, sections = _parse(text, f"{where} (edited)")
    touched = {change.path for change in changes}
    for change in changes:
        got = options.get(change.path)
        if (None if got is None else split_values(got)) != change.new:
            raise CSError(f"{where}: edit check failed: {change.path} reads {got!r}")
    for path in sorted((set(before.options) | set(options)) - touched):
        if options.get(path) != before.options.get(path):
            raise CSError(f"{where}: edit check failed: {path} would change; nothing written")
    parents = {path.rsplit("/", i)[0] for path in touched for i in range(1, path.count("/"))}
    if not before.sections <= sections or not sections - before.sections <= parents:
        raise CSError(f"{where}: edit check failed: sections would change; nothing written")


def edit_text(before: CSFile, changes: Sequence[CSChange]) -> str:
    """The file text with ``changes`` applied and verified (pure given ``before``)."""
    edit = _Edit(before.text, before.path)
    for change in changes:
        edit.change(change)
    text = edit.result()
    _verify(before, text, changes)
    return text
