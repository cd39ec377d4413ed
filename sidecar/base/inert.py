r"""Make text from the catalog inert before it reaches a log line or a terminal (pure).

Sits at the very end of the flow, on the way out: ``logs`` passes every rendered log message
through :func:`inert`, and the command line (``status --fleet``) every value it prints that
came from Consul. Node names, service IDs, metadata and KV values are whatever a registrant
wrote; a newline in one forges a log record (``node\nERROR ...``), an ESC sequence clears or
rewrites the operator's terminal (``\x1b[2J``), a bidi override reorders what they read.

:func:`inert` replaces each such character with a visible escape, so the output is one line of
printable text that shows what was there:

* backslash becomes ``\\``, so the mapping is unambiguous: ``\n`` in the output always means
  a newline was there, never the two characters backslash and ``n``. (The price: ``inert`` is
  not idempotent; applying it twice doubles the backslashes. Escape once, at the output.)
* ``\n`` ``\r`` ``\t`` keep their familiar names; every other C0 control (U+0000-U+001F,
  ESC included), DEL and the C1 controls (U+0080-U+009F) become ``\xNN``.
* the line and paragraph separators U+2028/U+2029, the bidi embeddings, overrides and isolates
  (U+202A-U+202E, U+2066-U+2069) and marks (U+200E, U+200F, U+061C), and lone surrogates
  (U+D800-U+DFFF: JSON's ``"\ud800"`` decodes to one, and writing it to a UTF-8 stream raises)
  become ``\uNNNN``.

Everything else, non-ASCII letters included, is kept: a node called ``genève`` stays readable.
The result never contains a character that ``str.splitlines`` splits on.

``limit`` caps the length of the output (escapes counted as they are printed) and marks a cut
with ``...``; an escape is never cut in half, so the output is at most ``limit + 3`` long.
"""

from __future__ import annotations

import re

ELLIPSIS = "..."

_NAMED = {"\\": "\\\\", "\n": "\\n", "\r": "\\r", "\t": "\\t"}
_BYTE_RANGES = (range(0x00, 0x20), range(0x7F, 0xA0))  # C0, DEL, C1
_WIDE = (
    0x061C,  # ARABIC LETTER MARK
    0x200E,  # LEFT-TO-RIGHT MARK
    0x200F,  # RIGHT-TO-LEFT MARK
    *range(0x2028, 0x202F),  # LINE / PARAGRAPH SEPARATOR, bidi embeddings and overrides
    *range(0x2066, 0x206A),  # bidi isolates
)
# Surrogates (only ever lone ones in a Python str) are looked for apart: 2,048 entries of
# the table were ~0.2 MB of the daemon's memory, for a character that almost never comes.
_SURROGATE = re.compile("[\ud800-\udfff]")


def _table() -> dict[int, str]:
    table = {code: f"\\x{code:02x}" for span in _BYTE_RANGES for code in span}
    table.update({code: f"\\u{code:04x}" for code in _WIDE})
    table.update({ord(char): escape for char, escape in _NAMED.items()})
    return table


_ESCAPES = _table()  # code point -> its escape; absent means "print as is"


def needs_escape(char: str) -> bool:
    """Whether :func:`inert` replaces ``char`` (a single character)."""
    return ord(char) in _ESCAPES or _SURROGATE.match(char) is not None


def _wide(match: re.Match[str]) -> str:
    return f"\\u{ord(match.group()):04x}"


def inert(text: str, limit: int | None = None) -> str:
    """``text`` with every control character escaped, cut to ``limit`` characters plus ``...``.

    ``limit`` counts output characters; ``None`` means no cap. Raises ``ValueError`` for a
    negative ``limit``.
    """
    if limit is None:
        out = text.translate(_ESCAPES)
        return _SURROGATE.sub(_wide, out) if _SURROGATE.search(out) else out
    if limit < 0:
        raise ValueError(f"limit must be >= 0, not {limit}")
    # Piece by piece rather than translate-then-cut: a cut must fall between two escapes, and
    # only the first ``limit`` input characters are ever looked at, however long the text.
    pieces: list[str] = []
    used = 0
    for char in text:
        piece = _ESCAPES.get(ord(char)) or (_wide(hit) if (hit := _SURROGATE.match(char)) else char)
        if used + len(piece) > limit:
            pieces.append(ELLIPSIS)
            break
        pieces.append(piece)
        used += len(piece)
    return "".join(pieces)
