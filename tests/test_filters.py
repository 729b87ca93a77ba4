"""Filter parsing, one line per case, plus a fuzz test: any text parses or gets a FilterError."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from shared.errors import FilterError
from shared.filters import FIELDS, Term, parse_filters, parse_term


@pytest.mark.parametrize(
    ("text", "term"),
    [
        ("ext=wav", Term("ext", "=", "wav")),
        ("ext = wav", Term("ext", "=", "wav")),
        ("tags!=Loops", Term("tags", "!=", "Loops")),
        ("folder=Drums/Kicks", Term("folder", "=", "Drums/Kicks")),
        ("name=a=b.wav", Term("name", "=", "a=b.wav")),
        ("duration<1", Term("duration", "<", 1.0)),
        ("duration<=0.5", Term("duration", "<=", 0.5)),
        ("duration>1e-2", Term("duration", ">", 0.01)),
        ("size>=1000", Term("size", ">=", 1000)),
        ("sample_rate=44100", Term("sample_rate", "=", 44100)),
        ("channels!=2", Term("channels", "!=", 2)),
        ("channels=2.0", Term("channels", "=", 2)),
        ("mtime>1700000000.5", Term("mtime", ">", 1700000000.5)),
    ],
)
def test_parses(text, term):
    assert parse_term(text) == term


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("ext", "cannot parse filter 'ext'"),
        ("=wav", "cannot parse"),
        ("ext=", "has no value"),
        ("duraton<1", "did you mean 'duration'"),
        ("colour=red", "known keys: path, name"),
        ("duration<abc", "'abc' is not a number"),
        ("duration<nan", "not a finite number"),
        ("size>1.5", "not a whole number"),
        ("ext<wav", "only = and != apply"),
        ("tags>=x", "only = and != apply"),
    ],
)
def test_errors(text, message):
    with pytest.raises(FilterError, match=message):
        parse_term(text)


def test_several_are_anded_in_order():
    assert parse_filters(["ext=wav", "duration<1"]) == [Term("ext", "=", "wav"), Term("duration", "<", 1.0)]
    assert parse_filters(None) == []


@given(st.text(max_size=40))
def test_any_text_parses_or_fails_cleanly(text):
    try:
        term = parse_term(text)
    except FilterError as exc:
        assert "\n" not in str(exc)
    else:
        assert term.key in FIELDS


@given(st.sampled_from(sorted(FIELDS)), st.sampled_from(["=", "!=", "<", "<=", ">", ">="]), st.text(max_size=12))
def test_known_keys_with_any_value(key, op, value):
    try:
        term = parse_term(f"{key}{op}{value}")
    except FilterError:
        return
    kind = FIELDS[key]
    assert isinstance(term.value, str if kind == "keyword" else int if kind == "integer" else float)
