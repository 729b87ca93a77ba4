"""Filter parsing, one line per case, plus a fuzz test: any text parses or gets a FilterError."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from audiosim.shared.errors import FilterError
from audiosim.shared.filters import FIELDS, Term, parse_filters, parse_term


@pytest.mark.parametrize(
    ("text", "term"),
    [
        ("ext=wav", Term("ext", "=", "wav")),
        ("ext = wav", Term("ext", "=", "wav")),
        ("tags!=Loops", Term("tags", "=", "Loops", negate=True)),
        ("folder=Drums/Kicks", Term("folder", "=", "Drums/Kicks")),
        ("name=a=b.wav", Term("name", "=", "a=b.wav")),
        ("name=a..b.wav", Term("name", "=", "a..b.wav")),
        ("duration<1", Term("duration", "<", 1.0)),
        ("duration<=0.5", Term("duration", "<=", 0.5)),
        ("duration>1e-2", Term("duration", ">", 0.01)),
        ("size>=1000", Term("size", ">=", 1000)),
        ("sample_rate=44100", Term("sample_rate", "=", 44100)),
        ("channels!=2", Term("channels", "=", 2, negate=True)),
        ("channels=2.0", Term("channels", "=", 2)),
        ("mtime>1700000000.5", Term("mtime", ">", 1700000000.5)),
        ("duration=0.1..0.5", Term("duration", "range", (0.1, 0.5))),
        ("size=10..20", Term("size", "range", (10, 20))),
        ("ext=wav|flac", Term("ext", "any", ("wav", "flac"))),
        ("ext=wav | flac|aif", Term("ext", "any", ("wav", "flac", "aif"))),
        ("sample_rate=44100|48000", Term("sample_rate", "any", (44100, 48000))),
        ("folder^=Drums/", Term("folder", "prefix", "Drums")),
        ("folder^=Drums/Kicks", Term("folder", "prefix", "Drums/Kicks")),
        ("path^=/home/me", Term("path", "prefix", "/home/me")),
        ("name~Snare", Term("name", "contains", "snare")),
        ("path~kits", Term("path", "contains", "kits")),
        ("!name~loop", Term("name", "contains", "loop", negate=True)),
        ("! ext=wav|flac", Term("ext", "any", ("wav", "flac"), negate=True)),
        ("!duration=0..1", Term("duration", "range", (0.0, 1.0), negate=True)),
        ("!!ext=wav", Term("ext", "=", "wav")),
        ("!ext!=wav", Term("ext", "=", "wav")),
        ('name="kick.wav"', Term("name", "=", "kick.wav")),  # the shell's quotes, not the name's
        ("name='kick.wav'", Term("name", "=", "kick.wav")),
        ("name=caf\udce9.wav", Term("name", "=", "caf\\xe9.wav")),  # argv bytes that are not UTF-8
        ("category=kick|tom", Term("category", "any", ("kick", "tom"))),
        ("category_score>=0.8", Term("category_score", ">=", 0.8)),
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
        ("!", "cannot parse"),
        ("duraton<1", "did you mean 'duration'"),
        ("colour=red", "known keys: path, name"),
        ("duration<abc", "'abc' is not a number"),
        ("duration<nan", "not a finite number"),
        ("size>1.5", "not a whole number"),
        ("ext<wav", "is text, so < does not apply"),
        ("tags>=x", "is text, so >= does not apply"),
        ("duration=0.5..0.1", "is empty"),
        ("duration=a..1", "'a' is not a number"),
        ("duration=0.1|0.2", "use a range"),
        ("ext=wav||flac", "empty alternative"),
        ("size=1|x", "'x' is not a number"),
        ("ext^=w", "works on folder and path"),
        ("ext~w", "works on name and path"),
        ("size=1e20", "out of range for a whole number"),
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
    want = str if kind == "keyword" or term.op in ("prefix", "contains") else int if kind == "integer" else float
    values = term.value if isinstance(term.value, tuple) else (term.value,)
    assert values and all(isinstance(v, want) for v in values)


def test_a_huge_expression_is_quoted_short():
    """A 130 KB expression is not echoed whole in its error."""
    with pytest.raises(FilterError) as err:
        parse_term("y" * 130_000 + "=1")
    assert len(str(err.value)) < 400 and "..." in str(err.value)
