"""CS file backend: write planned URL lists into a local DIRAC CS file (adapter, does I/O).

Sits in the apply stage: catalog -> desired -> render -> plan -> **apply**. The values and the
plan come from ``sidecar.dirac_cs.render``; this module holds no policy. It reads the file,
plans against it, edits it and writes it atomically with a timestamped backup.

diraccfg is used only to *parse*: its round trip loses or moves comments (``#`` inside comments,
comments before ``+=`` lines, trailing section comments). Instead the option's own lines are
replaced in the original text (``Name = a`` and the ``Name += b`` lines after it), and a new
option (with any missing sections) is inserted before the closing brace of its deepest existing
section. The result is parsed again and must hold exactly the planned lists and every other
option unchanged; otherwise nothing is written and ``CSError`` is raised.
"""

from __future__ import annotations

import difflib
import errno
import logging
import os
import re
import stat
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from diraccfg import CFG

from sidecar.base.errors import CSError, UnsafePathError
from sidecar.config.cs import CSSettings
from sidecar.core.cfgtree import flatten_into as _flatten
from sidecar.dirac_cs.render import CSChange, CSOptions, plan_cs, split_values
from sidecar.host.files import atomic_write

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


@dataclass(frozen=True, slots=True)
class CSSyncResult:
    path: Path
    changes: tuple[CSChange, ...] = ()  # empty: nothing was written
    backup: Path | None = None
    fenced: bool = False  # the fence said no right before the rename: nothing written

    @property
    def changed_paths(self) -> tuple[str, ...]:
        return tuple(change.path for change in self.changes)


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


def _prepare(
    path: str | Path, desired: CSOptions, settings: CSSettings
) -> tuple[CSFile, tuple[CSChange, ...], str]:
    before = read_cs_file(path)
    changes = plan_cs(before.lists(), desired, prune=settings.prune)
    text = edit_text(before, changes) if changes else before.text
    return before, changes, text


def diff_cs_file(path: str | Path, desired: CSOptions, settings: CSSettings) -> str:
    """The unified diff a sync would write to ``path`` (empty when nothing would change)."""
    before, _, text = _prepare(path, desired, settings)
    return "".join(
        difflib.unified_diff(
            before.text.splitlines(keepends=True),
            text.splitlines(keepends=True),
            fromfile=str(path),
            tofile=f"{path} (synced)",
        )
    )


# --- writing: backup, atomic replace, directory fsync ---


def _write_atomic(
    target: Path, data: bytes, like: os.stat_result, fence: Callable[[], bool] | None = None
) -> bool:
    """Replace ``target`` with ``data`` keeping the mode and owner of ``like`` (the CS file).

    Through ``atomic_write``: the directory may be writable by an account that would swap the
    temporary file for a symlink, so the temp file is created O_EXCL|O_NOFOLLOW and its mode
    and owner are set on the open descriptor, never by name. Unprivileged, the owner may not be
    kept: logged, as before. ``fence`` is asked right before the rename (False: not written).
    """
    owner = (like.st_uid, like.st_gid)
    mode = like.st_mode & 0o7777
    return atomic_write(target, data, mode, owner, lenient_owner=True, before_replace=fence)


def _backup(cs: CSFile, like: os.stat_result, settings: CSSettings, now: datetime) -> Path:
    """Copy the current content to ``<name>.<UTC time>.bak``, keep the newest N copies."""
    folder = Path(settings.backup_dir) if settings.backup_dir else cs.path.parent
    when = now if now.tzinfo else now.replace(tzinfo=UTC)
    stamp = when.astimezone(UTC).strftime("%Y%m%dT%H%M%S.%fZ")
    target, n = folder / f"{cs.path.name}.{stamp}.bak", 0
    while target.exists():
        n += 1
        target = folder / f"{cs.path.name}.{stamp}-{n}.bak"
    # 0600 whatever the CS file's mode: a copy for restoring by hand, not for DIRAC to read; it
    # keeps the file's owner, who may read the file itself anyway
    atomic_write(target, cs.text, 0o600, (like.st_uid, like.st_gid), lenient_owner=True)
    pattern = re.compile(re.escape(cs.path.name) + r"\.(\d{8}T\d{6}\.\d{6}Z)(?:-(\d+))?\.bak")
    found = [
        (m.group(1), int(m.group(2) or 0), p)
        for p in folder.iterdir()
        if (m := pattern.fullmatch(p.name))
    ]
    for *_, old in sorted(found)[: -settings.backups_keep]:
        try:
            old.unlink()
        except OSError as exc:
            log.warning("%s: cannot remove old backup: %s", old, exc.strerror)
    return target


def _reread(real: Path, path: str | Path) -> tuple[os.stat_result, bytes]:
    """The CS file's status and bytes now, from one descriptor that follows no symlink: ``real``
    was resolved when it was read, so a symlink there now was planted since (and would lend its
    target's mode and owner to the new file). O_NONBLOCK: a planted FIFO must not hang us."""
    try:
        fd = os.open(real, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise CSError(f"{path}: changed while being edited; nothing written") from None
        raise
    with os.fdopen(fd, "rb") as handle:
        info = os.fstat(handle.fileno())
        if not stat.S_ISREG(info.st_mode):
            raise CSError(f"{path}: changed while being edited; nothing written")
        return info, handle.read()


def sync_cs_file(
    path: str | Path,
    desired: CSOptions,
    settings: CSSettings,
    now: datetime,
    fence: Callable[[], bool] | None = None,
) -> CSSyncResult:
    """Bring the URL lists in the CS file at ``path`` to ``desired``; write only on a change.

    The file is left untouched (and ``CSError`` raised) when it cannot be parsed, the edit does
    not verify, the file changed while being edited, or it cannot be backed up or written.
    ``fence`` (the writer's lock, confirmed once more) is asked with the new file complete,
    right before it is renamed into place; False: nothing written, the new backup removed.
    """
    before, changes, text = _prepare(path, desired, settings)
    if not changes:
        return CSSyncResult(before.path)
    try:
        like, current = _reread(before.path, path)
        if not os.access(before.path, os.W_OK):
            raise CSError(f"{path}: not writable")
        if current != before.text.encode("utf-8"):
            raise CSError(f"{path}: changed while being edited; nothing written")
        backup = _backup(before, like, settings, now)
        if not _write_atomic(before.path, text.encode("utf-8"), like, fence):
            backup.unlink(missing_ok=True)  # the copy of a write that did not happen
            log.warning("CS %s: writer lock lost right before the write; nothing written", path)
            return CSSyncResult(before.path, fenced=True)
    except OSError as exc:
        raise CSError(f"{path}: cannot write: {exc.strerror or exc}") from None
    except UnsafePathError as exc:
        raise CSError(f"{path}: cannot write: {exc}") from None
    for change in changes:
        log.info("CS %s: %s", before.path, change)
    log.info("CS %s: %d option(s) written, backup %s", before.path, len(changes), backup)
    return CSSyncResult(before.path, changes, backup)
