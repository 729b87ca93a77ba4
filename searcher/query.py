"""Turn what the user names (files, vectors, ids or indexed paths) into query vectors and search the store.

Only a query by a file that is not indexed (or changed since) loads the encoder (ONNX Runtime), so numpy, the
decoder and the runtime are imported lazily: a search by id needs none of them.
"""

from __future__ import annotations

import glob
import json
import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING

from audiosim.shared.errors import ConfigError, QueryError
from audiosim.shared.filters import Term
from audiosim.shared.payload import file_path, shown
from audiosim.shared.store import Hit, Page, Store, is_point_id, point_id

if TYPE_CHECKING:
    import numpy as np


@dataclass
class Query:
    label: str  # what the user named, for output
    vector: Sequence[float] | np.ndarray  # (D,): the stored list, or the encoder's float32 array
    self_id: str | None = None  # the point this query came from, excluded unless --include-self
    path: str | None = None  # the audio file behind the query, if any


@dataclass
class Result:
    query: str
    hits: list[Hit] = field(default_factory=list)


@dataclass(frozen=True)
class SearchOptions:
    limit: int = 10
    offset: int = 0
    terms: Sequence[Term] = ()
    include_self: bool = False
    threshold: float | None = None
    timbre: bool = False  # rank by the networks' part of the vector alone (see Timbre)

    def page(self, exclude: Sequence[str]) -> Page:
        return Page(self.limit, self.offset, self.terms, exclude, self.threshold)


@dataclass(frozen=True)
class Timbre:
    """A collection whose vectors end in the class probabilities (C numbers, appended at weight W and the whole
    normalised): a query with that part zeroed scores each point by the networks' cosine over sqrt(1 + W), so
    scaling scores up by sqrt(1 + W) (and the threshold down) ranks and scores by how the sounds sound alone."""

    dims: int
    weight: float

    @classmethod
    def of(cls, store: Store) -> Timbre:
        identity = store.model()
        if not identity.posterior:
            raise ConfigError(
                f"ranking by sound alone (--timbre, timbre in the API) needs vectors with a category part; this"
                f" collection's model ({identity.name}) has none: search without it"
            )
        return cls(int(identity.posterior["dims"]), float(identity.posterior["weight"]))

    @property
    def scale(self) -> float:
        return float((1 + self.weight) ** 0.5)

    def vector(self, vector: Sequence[float] | np.ndarray) -> np.ndarray:
        """(D,) -> (D,): the category part zeroed, the rest normalised again."""
        import numpy as np

        v = np.array(vector, dtype=np.float32)
        if v.ndim == 1 and len(v) > self.dims:  # another length is for the store to refuse
            v[-self.dims :] = 0
            if (norm := np.linalg.norm(v)) > 0:
                v /= norm
        return v

    def page(self, page: Page) -> Page:
        return page if page.threshold is None else replace(page, threshold=page.threshold / self.scale)

    def hits(self, hits: list[Hit]) -> list[Hit]:
        return [replace(h, score=h.score * self.scale) for h in hits]


def search(store: Store, queries: list[Query], opts: SearchOptions) -> list[Result]:
    timbre = Timbre.of(store) if opts.timbre else None
    results = []
    for q in queries:
        exclude = [q.self_id] if q.self_id and not opts.include_self else []
        vector, page = q.vector, opts.page(exclude)
        if timbre is not None:
            vector, page = timbre.vector(vector), timbre.page(page)
        hits = store.query(vector, page)
        results.append(Result(q.label, hits if timbre is None else timbre.hits(hits)))
    return results


def queries_from_files(store: Store, files: list[Path], model_path: Path) -> list[Query]:
    """A query per file: the stored vector when the file is indexed and unchanged, else the encoder's."""
    store.require()
    out: list[Query | None] = []
    todo: list[tuple[int, Path]] = []
    files = expand_globs(files)
    paths = [Path(os.path.abspath(f.expanduser())) for f in files]
    stored = {r.id: r for r in store.retrieve([point_id(p) for p in paths], with_vector=True)}
    for i, p in enumerate(paths):
        pid = point_id(p)
        rec = stored.get(pid)
        st = p.stat()
        if rec is not None and rec.payload.get("size") == st.st_size and rec.payload.get("mtime_ns") == st.st_mtime_ns:
            assert rec.vector is not None
            out.append(Query(shown(str(files[i])), rec.vector, pid, str(p)))
        else:
            out.append(None)
            todo.append((i, p))
    if todo:
        import numpy as np

        from audiosim.shared.encoder import Encoder

        # Loading the model and decoding need no store: an indexer waiting for it gets it meanwhile. Nobody
        # waiting, it stays open: a second load of the shard would cost as much as the first.
        store.share(hold_seconds=0.0)

        encoder = Encoder(model_path)
        store.check_model(encoder.identity)
        clips = np.stack([_read_query(p, encoder.clip_spec) for _, p in todo])  # (B, n_samples)
        vectors = encoder.embed(clips)  # (B, D)
        for (i, p), v in zip(todo, vectors, strict=True):
            out[i] = Query(shown(str(files[i])), v, point_id(p) if point_id(p) in stored else None, str(p))
    return [q for q in out if q is not None]


def expand_globs(files: list[Path]) -> list[Path]:
    """Arguments with * ? or [ that are not files themselves are globs (`**` spans folders)."""
    from audiosim.shared.audio import AUDIO_EXTENSIONS, is_audio

    out: list[Path] = []
    for f in files:
        text = str(f.expanduser())
        if not Path(text).exists() and any(c in text for c in "*?["):
            matches = sorted(p for p in glob.glob(text, recursive=True) if is_audio(Path(p)) and Path(p).is_file())
            if not matches:
                raise ConfigError(f"no audio file matches {text!r}")
            out.extend(Path(m) for m in matches)
        elif not Path(text).is_file():
            raise ConfigError(f"query file not found: {f}")
        elif not is_audio(Path(text)):
            raise QueryError(f"{f} is not a supported audio file (supported: {', '.join(sorted(AUDIO_EXTENSIONS))})")
        else:
            out.append(Path(text))
    return out


def _read_query(path: Path, spec: object) -> np.ndarray:
    from audiosim.shared.audio import ClipSpec, read_clip
    from audiosim.shared.errors import DecodeError

    assert isinstance(spec, ClipSpec)
    try:
        return read_clip(path, spec).samples
    except DecodeError as exc:
        raise QueryError(f"cannot use {path} as a query: {exc}") from None


def queries_from_ids(store: Store, refs: list[str]) -> list[Query]:
    """A query per point id or indexed path, with its stored vector."""
    ids = [r if is_point_id(r) else point_id(os.path.abspath(os.path.expanduser(r))) for r in refs]
    store.require()
    found = {r.id: r for r in store.retrieve(ids, with_vector=True)}
    out = []
    for ref, pid in zip(refs, ids, strict=True):
        rec = found.get(pid)
        if rec is None or rec.vector is None:
            raise QueryError(f"{ref!r} is not in the collection (give a point id or the path of an indexed file)")
        out.append(Query(shown(ref), rec.vector, pid, str(file_path(rec.payload))))
    return out


def queries_from_vectors(source: str) -> list[Query]:
    """Vectors from an .npy file (D,) or (N, D), a JSON file, or '-' for JSON on stdin."""
    import numpy as np

    if source == "-":
        data = _parse_json(sys.stdin.read(), "standard input")
        label = "stdin"
    else:
        path = Path(source).expanduser()
        if not path.is_file():
            raise ConfigError(f"vector file not found: {source}")
        label = str(path)
        if path.suffix == ".npy":
            try:
                data = np.load(path, allow_pickle=False)
            except (ValueError, OSError) as exc:
                raise QueryError(f"{source} is not a readable .npy file: {exc}") from None
        else:
            data = _parse_json(path.read_text(), source)
    label = shown(label)
    expected = f"{label}: expected a list of numbers or a list of such lists"
    if not isinstance(data, np.ndarray) and not _numbers(data):
        raise QueryError(expected)
    try:
        arr = np.asarray(data, dtype=np.float64)
    except (TypeError, ValueError):
        raise QueryError(expected) from None
    if arr.dtype.kind not in "fiu" and arr.size:
        raise QueryError(expected)
    if arr.ndim == 1:
        arr = arr[None, :]
    if arr.ndim != 2 or arr.shape[1] == 0 or arr.shape[0] == 0:
        raise QueryError(f"{label}: expected a vector or a list of vectors, got shape {arr.shape}")
    if not np.all(np.isfinite(arr)) or np.any(np.abs(arr) > np.finfo(np.float32).max):
        raise QueryError(f"{label}: vector contains NaN, infinite or out-of-range values")
    arr = arr.astype(np.float32)
    return [Query(label if len(arr) == 1 else f"{label}[{i}]", v) for i, v in enumerate(arr)]


def _parse_json(text: str, where: str) -> object:
    try:
        return json.loads(text)
    except ValueError as exc:
        raise QueryError(f"{where} is not valid JSON: {exc}") from None
    except RecursionError:
        raise QueryError(f"{where}: JSON nested too deeply for a vector") from None


def _numbers(data: object) -> bool:
    """A number, or a list (of lists) of numbers; not a string or a boolean (JSON true is not 1.0)."""
    if isinstance(data, bool):
        return False
    if isinstance(data, int | float):
        return True
    if isinstance(data, list):
        return all(isinstance(x, int | float) and not isinstance(x, bool) for x in data) or all(
            isinstance(row, list) and _numbers(row) and not any(isinstance(x, list) for x in row) for row in data
        )
    return False


def search_examples(store: Store, likes: list[Query], unlikes: list[Query], opts: SearchOptions) -> Result:
    """One result list for a set of examples: like these, unlike those (Qdrant's recommend query)."""
    import numpy as np

    exclude = [] if opts.include_self else [q.self_id for q in (*likes, *unlikes) if q.self_id]
    if opts.timbre:  # the examples' category parts go; the scores stay the recommend query's own
        timbre = Timbre.of(store)
        likes = [replace(q, vector=timbre.vector(q.vector)) for q in likes]
        unlikes = [replace(q, vector=timbre.vector(q.vector)) for q in unlikes]
    hits = store.recommend(
        np.stack([q.vector for q in likes]),
        np.stack([q.vector for q in unlikes]) if unlikes else None,
        opts.page(exclude),
    )
    label = " + ".join(q.label for q in likes) + "".join(f" - {q.label}" for q in unlikes)
    return Result(label, hits)
