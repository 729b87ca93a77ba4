"""Filter text -> typed terms, parsed in one place; store.py turns the terms into a Qdrant filter."""

from __future__ import annotations

import difflib
import math
import re
from dataclasses import dataclass
from typing import Literal

from shared.errors import FilterError

FieldType = Literal["keyword", "integer", "float"]

# Every payload field users can filter on, with its type; store.py indexes each of them.
FIELDS: dict[str, FieldType] = {
    "path": "keyword",
    "name": "keyword",
    "folder": "keyword",
    "tags": "keyword",
    "ext": "keyword",
    "duration": "float",
    "sample_rate": "integer",
    "channels": "integer",
    "size": "integer",
    "mtime": "float",
}

Op = Literal["=", "!=", "<", "<=", ">", ">="]
Value = str | int | float


@dataclass(frozen=True)
class Term:
    """One typed condition on one payload field."""

    key: str
    op: Op
    value: Value


_EXPR = re.compile(r"^\s*(?P<key>[A-Za-z_][A-Za-z0-9_]*)\s*(?P<op>!=|<=|>=|=|<|>)\s*(?P<value>.*?)\s*$")
_NUMBER_OPS = ("<", "<=", ">", ">=")


def parse_term(text: str) -> Term:
    """`key<op>value`, e.g. `ext=wav`, `duration<1.5`, `tags!=Loops`."""
    m = _EXPR.match(text)
    if not m:
        raise FilterError(
            f"cannot parse filter {text!r}: expected KEY=VALUE, KEY!=VALUE, KEY<N, KEY<=N, KEY>N or KEY>=N"
        )
    key, op, raw = m["key"], m["op"], m["value"]
    if key not in FIELDS:
        close = difflib.get_close_matches(key, FIELDS, n=1)
        hint = f"; did you mean {close[0]!r}?" if close else f"; known keys: {', '.join(FIELDS)}"
        raise FilterError(f"unknown filter key {key!r} in {text!r}{hint}")
    if raw == "":
        raise FilterError(f"filter {text!r} has no value after {op!r}")
    kind = FIELDS[key]
    if kind == "keyword":
        if op in _NUMBER_OPS:
            raise FilterError(f"filter {text!r}: {key!r} is text, so only = and != apply")
        return Term(key, op, raw)  # type: ignore[arg-type]
    return Term(key, op, _number(raw, kind, text))  # type: ignore[arg-type]


def _number(raw: str, kind: FieldType, text: str) -> int | float:
    try:
        value = float(raw)
    except ValueError:
        raise FilterError(f"filter {text!r}: {raw!r} is not a number") from None
    if not math.isfinite(value):
        raise FilterError(f"filter {text!r}: {raw!r} is not a finite number")
    if kind == "integer":
        if not value.is_integer():
            raise FilterError(f"filter {text!r}: {raw!r} is not a whole number")
        return int(value)
    return value


def parse_filters(texts: list[str] | None) -> list[Term]:
    """Several --where expressions, ANDed."""
    return [parse_term(t) for t in texts or []]
