"""Filter translation: our typed terms -> one engine's conditions, through the small `Dialect` each engine
implements."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

from audiosim.shared.filters import FIELDS, Term
from audiosim.shared.payload import FILTERABLE


class Dialect(Protocol):
    """How one engine spells the few condition kinds our terms need."""

    def value(self, key: str, v: str | int) -> Any: ...
    def any_of(self, key: str, vs: list[str] | list[int]) -> Any: ...
    def range(self, key: str, **bounds: float) -> Any: ...
    def prefix(self, key: str, v: str) -> Any: ...
    def substring(self, key: str, v: str) -> Any: ...
    def has_id(self, ids: Sequence[str]) -> Any: ...
    def filter(self, must: list[Any], must_not: list[Any]) -> Any: ...


def term_condition(t: Term, d: Dialect) -> Any:
    """One term -> one engine condition (negation is left to the caller)."""
    kind = FIELDS[t.key]
    field = FILTERABLE[t.key]
    v = t.value
    if t.op == "prefix":
        assert isinstance(v, str) and field.prefix_via is not None
        # A prefix of a stored list of ancestors is an exact match on one of them (works on any server).
        return d.prefix(t.key, v) if field.prefix_via == t.key else d.value(field.prefix_via, v)
    if t.op == "contains":
        assert isinstance(v, str) and field.contains_via is not None
        return d.substring(field.contains_via, v)
    if t.op == "any":
        assert isinstance(v, tuple)
        return d.any_of(t.key, [str(x) for x in v] if kind == "keyword" else [int(x) for x in v])
    if t.op == "range":
        assert isinstance(v, tuple)
        return d.range(t.key, gte=float(v[0]), lte=float(v[1]))
    if t.op == "=":
        if kind == "float":
            assert isinstance(v, float | int)
            return d.range(t.key, gte=float(v), lte=float(v))
        assert isinstance(v, str | int)
        return d.value(t.key, v)
    assert isinstance(v, float | int)
    return d.range(t.key, **{{"<": "lt", "<=": "lte", ">": "gt", ">=": "gte"}[t.op]: float(v)})


def build_filter(terms: Sequence[Term], d: Dialect, exclude: Sequence[str] = ()) -> Any:
    must = [term_condition(t, d) for t in terms if not t.negate]
    must_not = [term_condition(t, d) for t in terms if t.negate]
    if exclude:
        must_not.append(d.has_id(exclude))
    return d.filter(must, must_not) if must or must_not else None
