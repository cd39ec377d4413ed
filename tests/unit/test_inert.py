"""``core.inert``: control characters escaped visibly, unambiguously, cut safely (issue 6)."""

from __future__ import annotations

import ast
import re
import unicodedata
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sidecar.base import inert as inert_module
from sidecar.base.inert import inert, needs_escape

HYPOTHESIS = settings(max_examples=300, derandomize=True, deadline=None, database=None)
BIDI = {chr(c) for c in (0x061C, 0x200E, 0x200F, *range(0x202A, 0x202F), *range(0x2066, 0x206A))}
ESCAPE = re.compile(r"\\(\\|n|r|t|x[0-9a-f]{2}|u[0-9a-f]{4})")


def dangerous(char: str) -> bool:
    """Independent of the module's table: what must never reach a log line or a terminal."""
    return unicodedata.category(char) in {"Cc", "Zl", "Zp", "Cs"} or char in BIDI


def decode(text: str) -> str:
    """The inverse of ``inert`` (without a limit): the mapping must be unambiguous."""
    named = {"\\": "\\", "n": "\n", "r": "\r", "t": "\t"}
    return ESCAPE.sub(lambda m: named.get(m[1]) or chr(int(m[1][1:], 16)), text)


# Every hostile string below carries what a registrant would use against an operator.
HOSTILE = st.text(
    alphabet=st.one_of(
        st.characters(codec=None),  # any code point, lone surrogates included
        st.sampled_from(["\n", "\r", "\x1b", "\\", "\x85", "\u2028", "\u202e", "\x00", "\ud800"]),
    ),
    max_size=80,
)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("plain-node_01.example.org", "plain-node_01.example.org"),
        ("node\nERROR forged", "node\\nERROR forged"),
        ("a\rb\tc", "a\\rb\\tc"),
        ("\x1b[2J\x1b]0;title\x07", "\\x1b[2J\\x1b]0;title\\x07"),
        ("\x00\x1f\x7f", "\\x00\\x1f\\x7f"),
        ("\x80\x85\x9b\x9f", "\\x80\\x85\\x9b\\x9f"),  # C1: NEL and the 8-bit CSI
        ("\x0b\x0c\x1c\x1d\x1e", "\\x0b\\x0c\\x1c\\x1d\\x1e"),  # what splitlines splits on
        ("a\u2028b\u2029c", "a\\u2028b\\u2029c"),
        ("\u202aa\u202bb\u202cc\u202dd\u202ee", "\\u202aa\\u202bb\\u202cc\\u202dd\\u202ee"),
        ("\u2066\u2067\u2068\u2069", "\\u2066\\u2067\\u2068\\u2069"),
        ("\u200e\u200f\u061c", "\\u200e\\u200f\\u061c"),
        ("\ud800x\udfff", "\\ud800x\\udfff"),  # lone surrogates (JSON can carry them)
        ("back\\slash \\n", "back\\\\slash \\\\n"),  # a literal backslash-n stays distinct
        ("genève ✓ 東京", "genève ✓ 東京"),  # printable non-ASCII is kept
        ("\xa0\u00ad\u2030", "\xa0\u00ad\u2030"),  # just past the escaped ranges
        ("", ""),
    ],
)
def test_escapes(text: str, expected: str) -> None:
    assert inert(text) == expected
    assert decode(inert(text)) == text


@pytest.mark.parametrize(
    ("text", "limit", "expected"),
    [
        ("abcdef", 6, "abcdef"),  # exactly at the limit: nothing cut, no ellipsis
        ("abcdefg", 6, "abcdef..."),
        ("abcde\n", 6, "abcde..."),  # "\n" would take 2: not cut in half, left out
        ("abcd\n", 6, "abcd\\n"),  # fits exactly
        ("ab\x1bcd", 4, "ab..."),  # "\x1b" is 4 characters: all or nothing
        ("ab\x1bcd", 6, "ab\\x1b..."),
        ("\u202e" * 3, 7, "\\u202e..."),
        ("anything", 0, "..."),
        ("", 0, ""),
    ],
)
def test_truncation(text: str, limit: int, expected: str) -> None:
    assert inert(text, limit) == expected


def test_a_huge_input_is_only_read_up_to_the_limit() -> None:
    assert inert("\x1b" * 10_000_000, limit=8) == "\\x1b\\x1b..."


def test_negative_limit_is_refused() -> None:
    with pytest.raises(ValueError, match="limit"):
        inert("x", -1)


def test_needs_escape_matches_the_independent_definition() -> None:
    for code in range(0x110000):
        char = chr(code)
        assert needs_escape(char) == (dangerous(char) or char == "\\"), hex(code)


@HYPOTHESIS
@given(HOSTILE)
def test_output_is_one_line_without_a_control_character(text: str) -> None:
    out = inert(text)
    assert not any(dangerous(char) for char in out)
    assert len(out.splitlines()) <= 1
    out.encode("utf-8")  # no lone surrogate left: writable to any UTF-8 stream


@HYPOTHESIS
@given(HOSTILE)
def test_the_mapping_is_unambiguous(text: str) -> None:
    assert decode(inert(text)) == text


@HYPOTHESIS
@given(st.text(alphabet=st.characters(exclude_categories=("Cc", "Zl", "Zp", "Cs")), max_size=80))
def test_safe_text_is_a_fixed_point(text: str) -> None:
    # What is already inert (and has no backslash to double) passes unchanged, so a second
    # pass only ever doubles backslashes: inert(inert(x)) == inert(x) without them.
    text = "".join(char for char in text if char not in BIDI and char != "\\")
    assert inert(text) == text
    assert inert(inert(text)) == inert(text)


@HYPOTHESIS
@given(HOSTILE, st.integers(min_value=0, max_value=100))
def test_a_cut_is_short_and_falls_between_escapes(text: str, limit: int) -> None:
    full, out = inert(text), inert(text, limit)
    assert len(out) <= limit + 3
    assert not any(dangerous(char) for char in out)
    if len(full) <= limit:
        assert out == full
    else:
        kept = out.removesuffix("...")
        assert out.endswith("...")
        assert len(kept) <= limit
        assert full.startswith(kept)
        assert text.startswith(decode(kept))  # a whole number of escapes was kept


def test_the_module_is_pure() -> None:
    tree = ast.parse(Path(inert_module.__file__).read_text())
    imported = {
        name
        for node in ast.walk(tree)
        for name in (
            [alias.name for alias in node.names]
            if isinstance(node, ast.Import)
            else [node.module or ""]
            if isinstance(node, ast.ImportFrom)
            else []
        )
    }
    assert imported <= {"__future__", "re"}  # re: pure, for lone surrogates
