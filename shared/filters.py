"""Filter text -> typed terms, parsed in one place; the store turns the terms into a Qdrant filter.

The language, one expression per --where (several are ANDed):

    ext=wav              equal                       ext!=wav          not equal
    duration<1           less (also <=, >, >=)       duration=0.1..0.5 range, both ends included
    ext=wav|flac|aif     any of                      folder^=Drums/    in this folder or below it
    name~snare           file name contains (case-insensitive)
    !EXPR                negation of any expression: !name~loop, !folder^=FX
"""

from __future__ import annotations

import difflib
import math
import re
from dataclasses import dataclass
from typing import Literal

from audiosim.shared.errors import FilterError
from audiosim.shared.payload import FILTERABLE, FieldType, shown

# Every payload field users can filter on, with its type, read from the one payload schema.
FIELDS: dict[str, FieldType] = {name: f.type for name, f in FILTERABLE.items()}

Op = Literal["=", "<", "<=", ">", ">=", "range", "any", "prefix", "contains"]
Scalar = str | int | float
Value = Scalar | tuple[Scalar, ...]

SYNTAX = "KEY=VALUE, KEY!=VALUE, KEY<N (<=, >, >=), KEY=A..B, KEY=A|B|C, folder^=PREFIX, name~TEXT, !EXPR"


@dataclass(frozen=True)
class Term:
    """One typed condition on one payload field; `negate` turns it into its opposite."""

    key: str
    op: Op
    value: Value
    negate: bool = False


_EXPR = re.compile(r"^\s*(?P<key>[A-Za-z_][A-Za-z0-9_]*)\s*(?P<op>!=|<=|>=|\^=|=|<|>|~)\s*(?P<value>.*?)\s*$")
_NUMBER_OPS = ("<", "<=", ">", ">=", "range")


def _quote(text: str, most: int = 80) -> str:
    """An expression for a message: quoted, shown (not UTF-8 bytes as \\xNN), and cut if long."""
    text = shown(text)
    return repr(text if len(text) <= most else text[: most - 3] + "...")


def _unquote(raw: str) -> str:
    """`name="kick"` means the name kick: one pair of matching quotes around a value is the shell's, not the name's."""
    if len(raw) >= 2 and raw[0] == raw[-1] and raw[0] in "\"'":
        return raw[1:-1]
    return raw


def parse_term(text: str) -> Term:
    """One --where expression -> Term, or a FilterError that points at the offending part."""
    body = text.strip()
    negate = False
    while body.startswith("!") and not body.startswith("!="):
        negate, body = not negate, body[1:].lstrip()
    m = _EXPR.match(body)
    if not m:
        raise FilterError(f"cannot parse filter {_quote(text)}: expected {SYNTAX}")
    key, op, raw = m["key"], m["op"], _unquote(shown(m["value"]))
    if key not in FIELDS:
        close = difflib.get_close_matches(key, FIELDS, n=1)
        hint = f"; did you mean {close[0]!r}?" if close else f"; known keys: {', '.join(FIELDS)}"
        raise FilterError(f"unknown filter key {_quote(key, 40)} in {_quote(text)}{hint}")
    if raw == "":
        raise FilterError(f"filter {_quote(text)} has no value after {op!r}")
    if op == "!=":
        negate, op = not negate, "="
    kind = FIELDS[key]
    field = FILTERABLE[key]
    if op == "^=":
        if field.prefix_via is None:
            raise FilterError(f"filter {_quote(text)}: ^= (prefix) works on {_keys_with('prefix_via')}, not {key!r}")
        return Term(key, "prefix", raw.strip("/") if field.prefix_via != key else raw, negate)
    if op == "~":
        if field.contains_via is None:
            raise FilterError(f"filter {_quote(text)}: ~ (contains) works on {_keys_with('contains_via')}, not {key!r}")
        return Term(key, "contains", raw.lower(), negate)
    if op == "=" and ".." in raw and kind != "keyword":
        lo_text, _, hi_text = raw.partition("..")
        lo, hi = _number(lo_text.strip(), kind, text), _number(hi_text.strip(), kind, text)
        if lo > hi:
            raise FilterError(
                f"filter {_quote(text)}: range {_quote(raw)} is empty (the low end is above the high end)"
            )
        return Term(key, "range", (lo, hi), negate)
    if op == "=" and "|" in raw:
        parts = [p.strip() for p in raw.split("|")]
        if any(p == "" for p in parts):
            raise FilterError(f"filter {_quote(text)}: empty alternative in {_quote(raw)}")
        if kind == "float":
            raise FilterError(f"filter {_quote(text)}: any-of (|) needs exact values; use a range A..B for {key!r}")
        values = tuple(parts) if kind == "keyword" else tuple(_number(p, kind, text) for p in parts)
        return Term(key, "any", values, negate)
    if kind == "keyword":
        if op in _NUMBER_OPS:
            raise FilterError(f"filter {_quote(text)}: {key!r} is text, so {op} does not apply (use =, !=, | or ~)")
        return Term(key, "=", raw, negate)
    return Term(key, op, _number(raw, kind, text), negate)  # type: ignore[arg-type]


def _keys_with(attr: str) -> str:
    return " and ".join(sorted(name for name, f in FILTERABLE.items() if getattr(f, attr) is not None))


def _number(raw: str, kind: FieldType, text: str) -> int | float:
    try:
        value = float(raw)
    except ValueError:
        raise FilterError(f"filter {_quote(text)}: {_quote(raw)} is not a number") from None
    if not math.isfinite(value):
        raise FilterError(f"filter {_quote(text)}: {_quote(raw)} is not a finite number")
    if kind == "integer":
        if not value.is_integer():
            raise FilterError(f"filter {_quote(text)}: {_quote(raw)} is not a whole number")
        if abs(value) >= 2**63:
            raise FilterError(f"filter {_quote(text)}: {_quote(raw)} is out of range for a whole number")
        return int(value)
    return value


def parse_filters(texts: list[str] | None) -> list[Term]:
    """Several --where expressions, ANDed."""
    return [parse_term(t) for t in texts or []]
