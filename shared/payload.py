"""The payload schema: every field a point carries, declared once.

Each field says its name, its type, how it is derived and whether it is indexed. The filter language (which
keys `--where` takes, and how), the store (which payload indexes it builds) and the indexer (what it stores
for a file) all read `SCHEMA`, so a new field is one line here.

File names are bytes on Linux. Text fields show a name that is not valid UTF-8 with each undecodable byte
as `\\xNN` (`caf\\xe9.wav`), and `path_bytes` keeps the path's exact bytes (hex) for such files only, so
`file_path(payload)` always names the file the walk found; point ids are made from the same bytes.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:  # a search by id must not import numpy (audio.py does)
    from audiosim.shared.audio import AudioFile, AudioInfo

FieldType = Literal["keyword", "integer", "float"]


@dataclass(frozen=True)
class Source:
    """What one point's payload is made from: the file as walked and the facts its decoder read."""

    file: AudioFile
    info: AudioInfo
    category: str | None = None  # the class a model with a classifier head hears
    category_score: float | None = None  # its probability


@dataclass(frozen=True)
class Field:
    """One payload field.

    of_file: derives the field from the file (stored by the indexer); of_payload: derives it from the other
    fields (filter helpers, added by the store to whatever is upserted). `filter`: offered to `--where`;
    `index`: the store builds a payload index for it. Every index costs every cold open of the embedded store
    (about 20 ms each at 100k points) and a filter on an unindexed field reads every payload (about 0.4 s at
    100k points), so only what a producer narrows by is indexed: folders, tags, ext, duration, category and
    its score, and names by substring (`python -m benchmarks.sizing` measures both sides).
    `prefix_via` / `contains_via`: the field that `KEY^=` / `KEY~` match (the key itself for a native prefix
    match).
    """

    name: str
    type: FieldType
    help: str
    of_file: Callable[[Source], Any] | None = None
    of_payload: Callable[[Mapping[str, Any]], Any] | None = None
    filter: bool = True
    index: bool = True
    is_list: bool = False
    prefix_via: str | None = None
    contains_via: str | None = None


def _relative(f: AudioFile) -> Path:
    return f.path.relative_to(f.root) if f.path != f.root else Path(f.path.name)


def _folder(s: Source) -> str:
    rel = _relative(s.file)
    return rel.parent.as_posix() if rel.parent.parts else ""


def _ancestors(p: Mapping[str, Any]) -> list[str] | None:
    """ "Drums/Kicks" -> ["Drums", "Drums/Kicks"]: `folder^=Drums` matches any of them."""
    folder = p.get("folder")
    if not isinstance(folder, str):
        return None
    parts = [x for x in folder.split("/") if x]
    return ["/".join(parts[: i + 1]) for i in range(len(parts))]


def _lower(key: str) -> Callable[[Mapping[str, Any]], str | None]:
    return lambda p: p[key].lower() if isinstance(p.get(key), str) else None


def shown(text: str) -> str:
    """A name as payload text: itself when it is valid UTF-8, else with each undecodable byte as `\\xNN`."""
    return text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


def raw_hex(path: Path) -> str | None:
    """The path's bytes in hex when its name is not valid UTF-8 (then `shown` alone would not round-trip)."""
    raw = os.fsencode(path)
    try:
        raw.decode("utf-8")
        return None
    except UnicodeDecodeError:
        return raw.hex()


def file_path(payload: Mapping[str, Any]) -> Path:
    """The file a payload names: from `path_bytes` when the name is not valid UTF-8, else from `path`."""
    raw = payload.get("path_bytes")
    return Path(os.fsdecode(bytes.fromhex(raw))) if isinstance(raw, str) else Path(str(payload.get("path", "")))


SCHEMA: tuple[Field, ...] = (
    Field(
        "path",
        "keyword",
        "absolute path",
        of_file=lambda s: shown(str(s.file.path)),
        index=False,
        prefix_via="path",
        contains_via="path_lc",
    ),
    Field(
        "name",
        "keyword",
        "file name with extension",
        of_file=lambda s: shown(s.file.path.name),
        index=False,
        contains_via="name_lc",
    ),
    Field(
        "folder",
        "keyword",
        'folder relative to the indexed root (`Drums/Kicks`; `""` at the root)',
        of_file=lambda s: shown(_folder(s)),
        prefix_via="folders",
    ),
    Field(
        "tags",
        "keyword",
        "each folder name on the way (`tags=Drums` matches `Drums/Kicks/x.wav`)",
        of_file=lambda s: [shown(t) for t in _relative(s.file).parent.parts],
        is_list=True,
    ),
    Field("ext", "keyword", "extension, lower case, no dot", of_file=lambda s: s.file.path.suffix.lower().lstrip(".")),
    Field("duration", "float", "seconds, whole file", of_file=lambda s: round(s.info.duration, 6)),
    Field("sample_rate", "integer", "as in the file", of_file=lambda s: s.info.sample_rate, index=False),
    Field("channels", "integer", "as in the file", of_file=lambda s: s.info.channels, index=False),
    Field("size", "integer", "bytes", of_file=lambda s: s.file.size, index=False),
    Field("mtime", "float", "modification time, Unix seconds", of_file=lambda s: s.file.mtime_ns / 1e9, index=False),
    Field(
        "category",
        "keyword",
        "what the model hears: its top class (models with a classifier head only)",
        of_file=lambda s: s.category,
    ),
    Field(
        "category_score",
        "float",
        "the probability of that class, 0 to 1",
        of_file=lambda s: None if s.category_score is None else round(s.category_score, 4),
    ),
    # Change detection: integers come back exactly, floats may be 1 ULP off. Never filtered, so no index.
    Field(
        "path_bytes",
        "keyword",
        "the path's bytes in hex, only for names that are not UTF-8",
        of_file=lambda s: raw_hex(s.file.path),
        filter=False,
        index=False,
    ),
    Field("mtime_ns", "integer", "modification time, ns", of_file=lambda s: s.file.mtime_ns, filter=False, index=False),
    Field(
        "root", "keyword", "the indexed folder", of_file=lambda s: shown(str(s.file.root)), filter=False, index=False
    ),
    # Filter helpers, derived from the fields above by the store.
    Field("folders", "keyword", "every ancestor folder", of_payload=_ancestors, filter=False, is_list=True),
    Field("name_lc", "keyword", "name, lower case", of_payload=_lower("name"), filter=False),
    Field("path_lc", "keyword", "path, lower case", of_payload=_lower("path"), filter=False, index=False),
)

BY_NAME: dict[str, Field] = {f.name: f for f in SCHEMA}
FILTERABLE: dict[str, Field] = {f.name: f for f in SCHEMA if f.filter}
INDEXED: dict[str, FieldType] = {f.name: f.type for f in SCHEMA if f.index}


def make_payload(source: Source) -> dict[str, Any]:
    """Every field the indexer stores for one file (the store adds the filter helpers)."""
    fields = ((f.name, f.of_file(source)) for f in SCHEMA if f.of_file is not None)
    return {name: value for name, value in fields if value is not None}


def with_helpers(payload: Mapping[str, Any]) -> dict[str, Any]:
    """payload plus the filter helper fields derived from it; refuses what Qdrant cannot store."""
    for k, v in payload.items():
        if isinstance(v, float) and not math.isfinite(v):
            from audiosim.shared.errors import StoreError

            raise StoreError(f"payload field {k!r} is {v}, which Qdrant cannot store")
    out = dict(payload)
    for f in SCHEMA:
        if f.of_payload is not None and (value := f.of_payload(payload)) is not None:
            out[f.name] = value
    return out
