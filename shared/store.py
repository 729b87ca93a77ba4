"""The one place that knows Qdrant: collection schema, model identity, payload indexes, upsert, query.

Two back ends with one behaviour: `EdgeStore` (qdrant-edge, in-process, the default) and `ServerStore`
(qdrant-client: a Qdrant server or cluster, or qdrant-client's local mode for tests and prototypes).
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import random
import time
import uuid
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from shared.errors import ModelError, QueryError, StoreError
from shared.filters import CONTAINS_FIELDS, FIELDS, Term

if TYPE_CHECKING:
    import numpy as np

log = logging.getLogger(__name__)

ID_NAMESPACE = uuid.UUID("8f1f7a4e-2b5c-5d7e-9a43-0c6e1d2b3a59")
META_KEY = "audiosim"
# A point id no path maps to (uuid5 ids are version 5; this is version 4): deleting it is a no-op update.
WAL_SENTINEL = uuid.UUID("00000000-0000-4000-8000-000000000000")
SCROLL_PAGE = 5000  # records per scroll call: 1,000 made a 100k-point diff take 1.9 s, 5,000 takes 1.1 s
# Fields read by change detection only; they are stored but not offered as filters.
# Stored beside the user's fields: mtime_ns (change detection: integers come back exactly, floats may not),
# root, folders (every ancestor folder, "Drums" and "Drums/Kicks": `folder^=` matches one of them) and
# name_lc / path_lc (lower-cased: `name~` and `path~` match substrings of these).
# Every field a filter can touch is indexed (a substring match over a keyword index is ~20x faster than a scan
# at 100k points); each index costs load time, so mtime_ns and root are not.
INDEXED_FIELDS: dict[str, str] = {**FIELDS, "folders": "keyword", "name_lc": "keyword", "path_lc": "keyword"}


def point_id(path: Path | str) -> str:
    """The same absolute path always maps to the same point id (a UUID5)."""
    return str(uuid.uuid5(ID_NAMESPACE, str(path)))


def is_point_id(text: str) -> bool:
    try:
        uuid.UUID(text)
    except ValueError:
        return False
    return True


@dataclass
class Record:
    id: str
    payload: dict[str, Any]
    vector: list[float] | None = None  # (D,), as the engine returns it


@dataclass(frozen=True)
class Recommend:
    """Query by examples: near the positives, away from the negatives (Qdrant's best-score strategy)."""

    positives: list[list[float]]
    negatives: list[list[float]]


Target = list[float] | Recommend


@dataclass
class Hit:
    id: str
    score: float
    payload: dict[str, Any] = field(default_factory=dict)


def _wrong_dim(got: int, dim: int) -> QueryError:
    return QueryError(f"vector has {got} dimensions, the collection holds {dim}-dimensional vectors")


NOT_FINITE = "vector contains NaN or infinite values"
ALL_ZERO = "vector is all zeros, so it has no direction to compare"


def check_vectors(vectors: np.ndarray, dim: int) -> np.ndarray:
    """(N, D) -> the same as float32; refuses a wrong D, NaN or inf, and all-zero rows (no direction)."""
    import numpy as np

    vectors = np.asarray(vectors, dtype=np.float32)
    if vectors.ndim != 2 or vectors.shape[1] != dim:
        raise _wrong_dim(vectors.shape[-1] if vectors.ndim else 0, dim)
    if not np.all(np.isfinite(vectors)):
        raise QueryError(NOT_FINITE)
    if np.any(np.linalg.norm(vectors, axis=1) == 0):
        raise QueryError(ALL_ZERO)
    return vectors


def check_vector(vector: Sequence[float] | np.ndarray, dim: int) -> list[float]:
    """One vector (D,), a list or an array, checked as `check_vectors` does but without numpy, which a search
    by id never imports (it costs ~60 ms of a cold start)."""
    raw = vector.tolist() if hasattr(vector, "tolist") else list(vector)
    try:
        values = [float(x) for x in raw]
    except (TypeError, ValueError):
        raise QueryError("expected one vector: a flat list of numbers") from None
    if len(values) != dim:
        raise _wrong_dim(len(values), dim)
    if not all(math.isfinite(x) for x in values):
        raise QueryError(NOT_FINITE)
    if not any(values):
        raise QueryError(ALL_ZERO)
    return values


def _clean_payload(payload: dict[str, Any]) -> dict[str, Any]:
    """Refuse what Qdrant cannot store, and add the derived fields that `^=` and `~` filters match."""
    for k, v in payload.items():
        if isinstance(v, float) and not math.isfinite(v):
            raise StoreError(f"payload field {k!r} is {v}, which Qdrant cannot store")
    out = dict(payload)
    if isinstance(folder := payload.get("folder"), str):
        parts = [p for p in folder.split("/") if p]
        out["folders"] = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    for key, derived in CONTAINS_FIELDS.items():
        if isinstance(payload.get(key), str):
            out[derived] = payload[key].lower()
    return out


class Store(ABC):
    """A Qdrant collection of clip vectors with their file metadata."""

    def __init__(self, collection: str):
        self.collection = collection

    # -- collection and identity ------------------------------------------------------------------
    @abstractmethod
    def exists(self) -> bool: ...

    @abstractmethod
    def read_meta(self) -> dict[str, Any] | None:
        """The identity of the model that made this collection's vectors, or None if there is no collection."""

    @abstractmethod
    def _create(self, dim: int, meta: dict[str, Any]) -> None: ...

    @abstractmethod
    def _ensure_indexes(self) -> None: ...

    @property
    @abstractmethod
    def location(self) -> str:
        """Where the collection lives, for messages (never includes credentials)."""

    def ensure_collection(self, identity: dict[str, Any]) -> None:
        """Create the collection for this model, or check that an existing one was made by it."""
        meta = self.read_meta()
        if meta is None:
            self._create(int(identity["dim"]), {"model": identity})
        else:
            self.check_model(identity, meta)
        self._ensure_indexes()

    def check_model(self, identity: dict[str, Any], meta: dict[str, Any] | None = None) -> None:
        meta = meta if meta is not None else self.require()
        stored = meta.get("model") or {}
        keys = ("digest", "dim", "clip", "mel")
        if any(stored.get(k) != identity.get(k) for k in keys):
            raise ModelError(
                f"collection {self.collection!r} at {self.location} was built with model "
                f"{stored.get('name', '?')} ({stored.get('digest', '?')}, {stored.get('dim', '?')}-d), not "
                f"{identity['name']} ({identity['digest']}, {identity['dim']}-d): use the model it was built with "
                f"(--model), or index into another collection (--collection NAME)"
            )

    def require(self) -> dict[str, Any]:
        """The collection's metadata; a clear error when there is no collection."""
        meta = self.read_meta()
        if meta is None:
            raise StoreError(
                f"collection {self.collection!r} does not exist at {self.location}: "
                f"index a folder first with `audiosim-index run PATH`"
            )
        return meta

    def dim(self) -> int:
        return int(self.require()["model"]["dim"])

    # -- points -----------------------------------------------------------------------------------
    def upsert(self, ids: Sequence[str], vectors: np.ndarray, payloads: Sequence[dict[str, Any]]) -> None:
        """Write points; vectors (N, D) float32 must be finite and non-zero."""
        if not ids:
            return
        vectors = check_vectors(vectors, vectors.shape[1] if vectors.ndim == 2 else -1)
        self._upsert(list(ids), vectors, [_clean_payload(p) for p in payloads])

    @abstractmethod
    def _upsert(self, ids: list[str], vectors: np.ndarray, payloads: list[dict[str, Any]]) -> None: ...

    @abstractmethod
    def delete(self, ids: Sequence[str]) -> None: ...

    @abstractmethod
    def count(self, terms: Sequence[Term] = ()) -> int: ...

    @abstractmethod
    def scroll(
        self, fields: Sequence[str], terms: Sequence[Term] = (), *, with_vector: bool = False
    ) -> Iterator[Record]:
        """Every point (matching terms), with only the named payload fields."""

    @abstractmethod
    def retrieve(self, ids: Sequence[str], *, with_vector: bool = False) -> list[Record]:
        """The points that exist among ids, in no particular order."""

    @abstractmethod
    def _query(
        self,
        target: Target,
        *,
        limit: int,
        offset: int,
        terms: Sequence[Term],
        exclude: Sequence[str],
        threshold: float | None,
    ) -> list[Hit]: ...

    def query(
        self,
        vector: Sequence[float] | np.ndarray,
        *,
        limit: int = 10,
        offset: int = 0,
        terms: Sequence[Term] = (),
        exclude: Sequence[str] = (),
        threshold: float | None = None,
    ) -> list[Hit]:
        """Nearest points by cosine similarity to vector (D,), best first."""
        meta = self.require()
        vec = check_vector(vector, int(meta["model"]["dim"]))
        hits = self._query(vec, limit=limit, offset=offset, terms=terms, exclude=exclude, threshold=threshold)
        return hits or self._require_points()

    def recommend(
        self,
        positives: np.ndarray,
        negatives: np.ndarray | None = None,
        *,
        limit: int = 10,
        offset: int = 0,
        terms: Sequence[Term] = (),
        exclude: Sequence[str] = (),
        threshold: float | None = None,
    ) -> list[Hit]:
        """Points like the positives (P, D) and unlike the negatives (N, D), best first."""
        dim = self.dim()
        pos = check_vectors(positives, dim)
        neg = check_vectors(negatives, dim) if negatives is not None and len(negatives) else None
        target = Recommend(pos.tolist(), neg.tolist() if neg is not None else [])
        hits = self._query(target, limit=limit, offset=offset, terms=terms, exclude=exclude, threshold=threshold)
        return hits or self._require_points()

    def _require_points(self) -> list[Hit]:
        """No hits: an empty collection is an error (index first); otherwise the filters matched nothing."""
        if self.count() == 0:
            raise QueryError(
                f"collection {self.collection!r} is empty: index a folder first with `audiosim-index run PATH`"
            )
        return []

    def release(self) -> None:
        """Let other processes in (embedded store); a no-op for a server."""

    def share(self, hold_seconds: float = 1.0) -> None:
        """Release the embedded store if another process is waiting for it and this one has held it for
        hold_seconds: a long writer calls this between batches so that searchers get in."""

    def maintain(self) -> None:
        """Embedded store: reclaim space after deletions and turn large appendable segments into immutable,
        quick-to-open ones. Cheap when there is nothing to do."""

    @abstractmethod
    def close(self) -> None: ...

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# ------------------------------------------------------------------------------------------------
# qdrant-edge: the embedded default
# ------------------------------------------------------------------------------------------------


class Dialect:
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
    v = t.value
    if t.op == "prefix":
        assert isinstance(v, str)
        return d.value("folders", v) if t.key == "folder" else d.prefix(t.key, v)
    if t.op == "contains":
        assert isinstance(v, str)
        return d.substring(CONTAINS_FIELDS[t.key], v)
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


class EdgeDialect(Dialect):
    def __init__(self) -> None:
        import qdrant_edge

        self.q = qdrant_edge

    def value(self, key: str, v: str | int) -> Any:
        return self.q.FieldCondition(key, match=self.q.MatchValue(v))

    def any_of(self, key: str, vs: list[str] | list[int]) -> Any:
        return self.q.FieldCondition(key, match=self.q.MatchAny(vs))

    def range(self, key: str, **bounds: float) -> Any:
        return self.q.FieldCondition(key, range=self.q.RangeFloat(**bounds))

    def prefix(self, key: str, v: str) -> Any:
        return self.q.FieldCondition(key, match=self.q.MatchPrefix(v))

    def substring(self, key: str, v: str) -> Any:
        return self.q.FieldCondition(key, match=self.q.MatchSubstring(v))

    def has_id(self, ids: Sequence[str]) -> Any:
        return self.q.HasIdCondition({uuid.UUID(i) for i in ids})

    def filter(self, must: list[Any], must_not: list[Any]) -> Any:
        return self.q.Filter(must=must or None, must_not=must_not or None)


def _is_would_block(exc: Exception) -> bool:
    return "WouldBlock" in str(exc) or "Can't init WAL" in str(exc)


class EdgeStore(Store):
    """A qdrant-edge shard in `root/collection/shard`, with the model identity in `audiosim.json` beside it.

    The shard holds an exclusive lock while open; it is opened on first use, and `release()` closes it
    so another process (a searcher beside a running indexer) can get in. Opening waits up to
    `lock_timeout` seconds for a lock held elsewhere, and while it waits it leaves a `waiting` file beside
    the shard: a long writer's `share()` releases the shard when it sees one, and otherwise keeps it open
    (reopening costs ~0.1-0.3 s at 100k points, which a release every second would pay for nothing).
    """

    def __init__(self, root: Path, collection: str, *, lock_timeout: float = 30.0):
        super().__init__(collection)
        self.dir = Path(root).expanduser() / collection
        self.lock_timeout = lock_timeout
        self._shard: Any = None
        self._opened_at = 0.0
        self._wrote = False
        self.dialect = EdgeDialect()

    @property
    def location(self) -> str:
        return str(self.dir.parent)

    @property
    def _meta_path(self) -> Path:
        return self.dir / "audiosim.json"

    @property
    def _waiting_path(self) -> Path:
        return self.dir / "waiting"

    def exists(self) -> bool:
        return self._meta_path.is_file()

    def read_meta(self) -> dict[str, Any] | None:
        if not self._meta_path.is_file():
            return None
        try:
            meta: dict[str, Any] = json.loads(self._meta_path.read_text())
        except (OSError, ValueError) as exc:
            raise StoreError(f"cannot read {self._meta_path}: {exc}") from exc
        return meta

    def _create(self, dim: int, meta: dict[str, Any]) -> None:
        import qdrant_edge as q

        shard_dir = self.dir / "shard"
        if shard_dir.exists() and any(shard_dir.iterdir()):
            raise StoreError(
                f"{shard_dir} holds data but no {self._meta_path.name}: remove it or pick another collection name"
            )
        shard_dir.mkdir(parents=True, exist_ok=True)
        config = q.EdgeConfig(
            # float16 halves vector RAM and disk (and a cold open); on the development corpus scores move by at
            # most 1.3e-4 and top-10 lists agree on 99.6% of their members (near-ties swap).
            vectors=q.EdgeVectorParams(size=dim, distance=q.Distance.Cosine, datatype=q.VectorStorageDatatype.Float16),
            # Searches are exact, so no HNSW graph (m=0); optimize() still turns big appendable segments into
            # immutable ones whose on-disk payload indexes open in a fraction of the time (100k points:
            # 0.8 s -> 0.3 s), which is what a cold `audiosim-search` pays.
            hnsw_config=q.HnswIndexConfig(m=0, ef_construct=100, full_scan_threshold=10000, payload_m=0),
        )
        self._shard = q.EdgeShard.create(str(shard_dir), config)
        self._opened_at = time.monotonic()
        tmp = self._meta_path.with_suffix(".tmp")
        tmp.write_text(json.dumps(meta, indent=2))
        tmp.replace(self._meta_path)

    def _open(self) -> Any:
        if self._shard is not None:
            return self._shard
        import qdrant_edge as q

        self.require()
        deadline = time.monotonic() + self.lock_timeout
        delay, told = 0.05, False
        while True:
            try:
                self._shard = q.EdgeShard.load(str(self.dir / "shard"))
                self._opened_at = time.monotonic()
                return self._shard
            except Exception as exc:
                if not _is_would_block(exc):
                    raise StoreError(f"cannot open the store at {self.dir}: {exc}".split("\n")[0]) from exc
                if time.monotonic() >= deadline:
                    raise StoreError(
                        f"the store at {self.dir} is locked by another audiosim process; waited "
                        f"{self.lock_timeout:g} s (raise AUDIOSIM_LOCK_TIMEOUT, or stop the other process)"
                    ) from exc
                if not told:
                    log.warning("store %s is busy (another process holds it); waiting...", self.dir)
                    told = True
                with contextlib.suppress(OSError):  # ask the holder to let go at its next batch
                    self._waiting_path.touch()
                time.sleep(delay * random.uniform(0.5, 1.0))
                delay = min(delay * 2, 0.2)

    def _ensure_indexes(self) -> None:
        """Deferred to maintain(): a fresh collection is bulk-loaded without payload indexes, made one immutable
        segment, and indexed on disk there. At 100k points that peaks at +380 MB of RSS instead of +850 MB for
        indexes kept up to date in RAM through every upsert, and takes 20 s instead of 24 s. Until then filters
        scan (correct, slower); later upserts keep the indexes up to date."""

    def _build_indexes(self) -> None:
        import qdrant_edge as q

        shard = self._open()
        have = set(shard.info().payload_schema)
        kinds: dict[str, Callable[[], Any]] = {
            "keyword": lambda: q.KeywordIndexParams(on_disk=True),
            "integer": lambda: q.IntegerIndexParams(lookup=True, range=True, on_disk=True),
            "float": lambda: q.FloatIndexParams(on_disk=True),
        }
        for name, kind in INDEXED_FIELDS.items():
            if name not in have:
                shard.update(q.UpdateOperation.create_field_index(name, kinds[kind]()))

    def _upsert(self, ids: list[str], vectors: np.ndarray, payloads: list[dict[str, Any]]) -> None:
        import qdrant_edge as q

        points = [q.Point(uuid.UUID(i), v, p) for i, v, p in zip(ids, vectors, payloads, strict=True)]
        self._open().update(q.UpdateOperation.upsert_points(points))
        self._wrote = True

    def delete(self, ids: Sequence[str]) -> None:
        import qdrant_edge as q

        if ids:
            self._open().update(q.UpdateOperation.delete_points([uuid.UUID(i) for i in ids]))
            self._wrote = True

    def count(self, terms: Sequence[Term] = ()) -> int:
        import qdrant_edge as q

        return int(self._open().count(q.CountRequest(exact=True, filter=build_filter(terms, self.dialect))))

    def scroll(
        self, fields: Sequence[str], terms: Sequence[Term] = (), *, with_vector: bool = False
    ) -> Iterator[Record]:
        import qdrant_edge as q

        shard, offset = self._open(), None
        while True:
            req = q.ScrollRequest(
                offset=offset,
                limit=SCROLL_PAGE,
                filter=build_filter(terms, self.dialect),
                with_payload=list(fields),
                with_vector=with_vector,
            )
            recs, offset = shard.scroll(req)
            for r in recs:
                yield _record(r, with_vector)
            if offset is None:
                return

    def retrieve(self, ids: Sequence[str], *, with_vector: bool = False) -> list[Record]:
        valid = [uuid.UUID(i) for i in ids if is_point_id(i)]
        if not valid:
            return []
        recs = self._open().retrieve(valid, True, with_vector)
        return [_record(r, with_vector) for r in recs]

    def _query(
        self,
        target: Target,
        *,
        limit: int,
        offset: int,
        terms: Sequence[Term],
        exclude: Sequence[str],
        threshold: float | None,
    ) -> list[Hit]:
        import qdrant_edge as q

        req = q.QueryRequest(
            limit=limit,
            offset=offset,
            query=self._edge_query(target),
            filter=build_filter(terms, self.dialect, exclude),
            score_threshold=threshold,
            with_payload=True,
            with_vector=False,
            params=q.SearchParams(exact=True),
        )
        return [_hit(p) for p in self._open().query(req)]

    def _edge_query(self, target: Target) -> Any:
        q = self.dialect.q
        if isinstance(target, Recommend):
            positives: list[Any] = list(target.positives)
            return q.Query.RecommendBestScore(q.RecommendQuery(positives, list(target.negatives)))
        return q.Query.Nearest(target)

    def maintain(self) -> None:
        self._open().optimize()
        self._build_indexes()

    def share(self, hold_seconds: float = 1.0) -> None:
        if self._shard is None or time.monotonic() - self._opened_at < hold_seconds:
            return
        try:
            self._waiting_path.unlink()
        except FileNotFoundError:
            return  # nobody is waiting
        except OSError:
            pass
        self.release()

    def release(self) -> None:
        if self._shard is not None:
            if self._wrote:
                # qdrant-edge 0.9 keeps the last WAL entry and deserialises and re-applies it on every load:
                # after a 2,000-point upsert that is ~80 ms of each cold search. End with a tiny no-op instead.
                import qdrant_edge as q

                self._shard.update(q.UpdateOperation.delete_points([WAL_SENTINEL]))
                self._wrote = False
            self._shard.close()
            self._shard = None

    def close(self) -> None:
        self.release()


# ------------------------------------------------------------------------------------------------
# qdrant-client: a server or cluster (or qdrant-client's local mode)
# ------------------------------------------------------------------------------------------------


class ClientDialect(Dialect):
    def __init__(self) -> None:
        from qdrant_client import models

        self.m = models

    def value(self, key: str, v: str | int) -> Any:
        return self.m.FieldCondition(key=key, match=self.m.MatchValue(value=v))

    def any_of(self, key: str, vs: list[str] | list[int]) -> Any:
        return self.m.FieldCondition(key=key, match=self.m.MatchAny(any=vs))

    def range(self, key: str, **bounds: float) -> Any:
        return self.m.FieldCondition(key=key, range=self.m.Range(**bounds))

    def prefix(self, key: str, v: str) -> Any:
        return self.m.FieldCondition(key=key, match=self.m.MatchPrefix(prefix=v))

    def substring(self, key: str, v: str) -> Any:
        return self.m.FieldCondition(key=key, match=self.m.MatchSubstring(substring=v))

    def has_id(self, ids: Sequence[str]) -> Any:
        return self.m.HasIdCondition(has_id=list(ids))

    def filter(self, must: list[Any], must_not: list[Any]) -> Any:
        return self.m.Filter(must=must or None, must_not=must_not or None)


class ServerStore(Store):
    """A collection on a Qdrant server or cluster, through qdrant-client.

    `url` is http(s)://host:port for a server, or `local:DIR` for qdrant-client's local mode (a brute-force
    prototype engine that runs the same client calls without a server; used by the tests).
    """

    def __init__(
        self,
        url: str,
        collection: str,
        *,
        api_key: str | None = None,
        timeout: float = 30.0,
        shards: int = 1,
        replication_factor: int = 1,
        on_disk: bool = False,
    ):
        super().__init__(collection)
        from qdrant_client import QdrantClient

        self.url = url
        self._secret = api_key
        self.dialect = ClientDialect()
        self.shards, self.replication_factor, self.on_disk = shards, replication_factor, on_disk
        try:
            if url.startswith("local:"):
                self.client = QdrantClient(path=url.removeprefix("local:"))
            else:
                self.client = QdrantClient(url=url, api_key=api_key, timeout=int(timeout), check_compatibility=False)
        except Exception as exc:
            raise StoreError(f"cannot open Qdrant at {self.location}: {_first_line(exc)}") from exc

    @property
    def location(self) -> str:
        from urllib.parse import urlsplit

        if self.url.startswith("local:"):
            return self.url
        parts = urlsplit(self.url)
        return f"{parts.scheme}://{parts.hostname}{f':{parts.port}' if parts.port else ''}"

    def _call(self, what: str, fn: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except Exception as exc:
            text = _first_line(exc)
            if self._secret:
                text = text.replace(self._secret, "***")
            raise StoreError(f"Qdrant at {self.location} failed to {what}: {text}") from None

    def exists(self) -> bool:
        return bool(self._call("list collections", self.client.collection_exists, self.collection))

    def read_meta(self) -> dict[str, Any] | None:
        if not self.exists():
            return None
        info = self._call("read the collection", self.client.get_collection, self.collection)
        meta = (info.config.metadata or {}).get(META_KEY)
        if meta is None:
            raise StoreError(
                f"collection {self.collection!r} at {self.location} was not made by audiosim: "
                f"pick another name with --collection"
            )
        return dict(meta)

    def _create(self, dim: int, meta: dict[str, Any]) -> None:
        from qdrant_client import models as m

        self._call(
            "create the collection",
            self.client.create_collection,
            self.collection,
            vectors_config=m.VectorParams(
                size=dim, distance=m.Distance.COSINE, on_disk=self.on_disk or None, datatype=m.Datatype.FLOAT16
            ),
            shard_number=self.shards,
            replication_factor=self.replication_factor,
            on_disk_payload=self.on_disk or None,
            metadata={META_KEY: meta},
        )

    def _ensure_indexes(self) -> None:
        from qdrant_client import models as m

        if self.url.startswith("local:"):
            return  # local mode has no payload indexes; it scans
        kinds = {
            "keyword": m.PayloadSchemaType.KEYWORD,
            "integer": m.PayloadSchemaType.INTEGER,
            "float": m.PayloadSchemaType.FLOAT,
        }
        info = self._call("read the collection", self.client.get_collection, self.collection)
        for name, kind in INDEXED_FIELDS.items():
            if name not in (info.payload_schema or {}):
                self._call(
                    "create a payload index",
                    self.client.create_payload_index,
                    self.collection,
                    name,
                    field_schema=kinds[kind],
                    wait=True,
                )

    def _upsert(self, ids: list[str], vectors: np.ndarray, payloads: list[dict[str, Any]]) -> None:
        from qdrant_client import models as m

        points = m.Batch(ids=list(ids), vectors=vectors.tolist(), payloads=payloads)
        self._call("upsert points", self.client.upsert, self.collection, points=points, wait=True)

    def delete(self, ids: Sequence[str]) -> None:
        from qdrant_client import models as m

        if ids:
            self._call(
                "delete points",
                self.client.delete,
                self.collection,
                points_selector=m.PointIdsList(points=list(ids)),
                wait=True,
            )

    def count(self, terms: Sequence[Term] = ()) -> int:
        res = self._call(
            "count points",
            self.client.count,
            self.collection,
            count_filter=build_filter(terms, self.dialect),
            exact=True,
        )
        return int(res.count)

    def scroll(
        self, fields: Sequence[str], terms: Sequence[Term] = (), *, with_vector: bool = False
    ) -> Iterator[Record]:
        offset = None
        while True:
            recs, offset = self._call(
                "scroll points",
                self.client.scroll,
                self.collection,
                scroll_filter=build_filter(terms, self.dialect),
                limit=SCROLL_PAGE,
                offset=offset,
                with_payload=list(fields),
                with_vectors=with_vector,
            )
            for r in recs:
                yield _record(r, with_vector)
            if offset is None:
                return

    def retrieve(self, ids: Sequence[str], *, with_vector: bool = False) -> list[Record]:
        valid = [i for i in ids if is_point_id(i)]
        if not valid:
            return []
        recs = self._call(
            "retrieve points",
            self.client.retrieve,
            self.collection,
            valid,
            with_payload=True,
            with_vectors=with_vector,
        )
        return [_record(r, with_vector) for r in recs]

    def _query(
        self,
        target: Target,
        *,
        limit: int,
        offset: int,
        terms: Sequence[Term],
        exclude: Sequence[str],
        threshold: float | None,
    ) -> list[Hit]:
        res = self._call(
            "query",
            self.client.query_points,
            self.collection,
            query=self._client_query(target),
            query_filter=build_filter(terms, self.dialect, exclude),
            limit=limit,
            offset=offset,
            score_threshold=threshold,
            with_payload=True,
        )
        return [_hit(p) for p in res.points]

    def _client_query(self, target: Target) -> Any:
        if not isinstance(target, Recommend):
            return target
        m = self.dialect.m
        return m.RecommendQuery(
            recommend=m.RecommendInput(
                positive=target.positives, negative=target.negatives or None, strategy=m.RecommendStrategy.BEST_SCORE
            )
        )

    def close(self) -> None:
        self.client.close()


def _record(r: Any, with_vector: bool) -> Record:
    """An engine's record (either client's) -> ours."""
    vector = list(r.vector) if with_vector and r.vector is not None else None
    return Record(id=str(r.id), payload=dict(r.payload or {}), vector=vector)


def _hit(p: Any) -> Hit:
    return Hit(id=str(p.id), score=float(p.score), payload=dict(p.payload or {}))


def _first_line(exc: Exception) -> str:
    text = str(exc).strip().split("\n")[0] or type(exc).__name__
    return text[:300]


def open_store(settings: Any) -> Store:
    """The store the settings name: a server when `qdrant_url` is set, else the embedded store."""
    if settings.qdrant_url:
        key = settings.qdrant_api_key.get_secret_value() if settings.qdrant_api_key else None
        return ServerStore(
            settings.qdrant_url,
            settings.collection,
            api_key=key,
            timeout=settings.timeout,
            shards=settings.shards,
            replication_factor=settings.replication_factor,
            on_disk=settings.on_disk,
        )
    return EdgeStore(settings.store, settings.collection, lock_timeout=settings.lock_timeout)
