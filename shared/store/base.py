"""The engine-neutral contract: what every store does, and the checks both engines share."""

from __future__ import annotations

import hashlib
import math
import os
import uuid
from abc import ABC, abstractmethod
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from audiosim.shared.errors import ModelError, QueryError, StoreError
from audiosim.shared.filters import Term
from audiosim.shared.identity import ModelIdentity
from audiosim.shared.payload import INDEXED, SCHEMA, FieldType, with_helpers

if TYPE_CHECKING:
    import numpy as np

ID_NAMESPACE = uuid.UUID("8f1f7a4e-2b5c-5d7e-9a43-0c6e1d2b3a59")
META_KEY = "audiosim"
SCROLL_PAGE = 5000  # records per scroll call: 1,000 made a 100k-point diff take 1.9 s, 5,000 takes 1.1 s


def point_id(path: Path | str) -> str:
    """The same absolute path always maps to the same point id: a UUID5 of the path's bytes (the same as
    `uuid.uuid5` for a UTF-8 name; a name that is not UTF-8 gets one too)."""
    digest = hashlib.sha1(ID_NAMESPACE.bytes + os.fsencode(path)).digest()
    return str(uuid.UUID(bytes=digest[:16], version=5))


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


@dataclass(frozen=True)
class Page:
    """Which hits a query returns: how many, from which rank, and which points it may return at all."""

    limit: int = 10
    offset: int = 0
    terms: Sequence[Term] = ()
    exclude: Sequence[str] = ()  # point ids
    threshold: float | None = None  # minimum cosine similarity


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


def usable(vector: Sequence[float] | None) -> bool:
    """Whether a stored vector can be searched: present and not all zeros (upserts refuse NaN and inf, so only
    damage makes one unusable; `any` stops at the first non-zero, which keeps a 100k-point diff quick)."""
    return vector is not None and any(vector)


class Store(ABC):
    """A Qdrant collection of clip vectors with their file metadata (the payload schema's fields).

    Lifecycle: `release()`, `share()` and `maintain()` are part of the contract because the embedded engine
    needs them (one process holds a shard at a time; segments are optimised on request). A server shares
    itself between clients and optimises on its own, and says so in its implementations.
    """

    indexed: Mapping[str, FieldType] = INDEXED  # the payload indexes the store builds (benchmarks vary it)

    def __init__(self, collection: str):
        self.collection = collection

    # -- collection and identity ------------------------------------------------------------------
    @abstractmethod
    def exists(self) -> bool: ...

    @abstractmethod
    def read_meta(self) -> dict[str, Any] | None:
        """The collection's metadata ({"model": identity}), or None if there is no collection."""

    @abstractmethod
    def _create(self, dim: int, meta: dict[str, Any]) -> None: ...

    @abstractmethod
    def _ensure_indexes(self) -> None: ...

    @abstractmethod
    def indexed_fields(self) -> set[str]:
        """The payload fields that have an index now."""

    def index_changes(self) -> tuple[list[str], dict[str, FieldType]]:
        """(indexes to drop, indexes to create): schema fields indexed but not in `indexed` (an earlier version
        indexed every field), and the fields of `indexed` that have none yet."""
        have = self.indexed_fields()
        drop = sorted(f.name for f in SCHEMA if f.name in have and f.name not in self.indexed)
        return drop, {name: kind for name, kind in self.indexed.items() if name not in have}

    @property
    @abstractmethod
    def location(self) -> str:
        """Where the collection lives, for messages (never includes credentials)."""

    def ensure_collection(self, identity: ModelIdentity) -> None:
        """Create the collection for this model, or check that an existing one was made by it."""
        meta = self.read_meta()
        if meta is None:
            self._create(identity.dim, {"model": identity.to_dict()})  # a no-op if another process just did
            meta = self.require()
        self.check_model(identity, meta)
        self._ensure_indexes()

    def check_model(self, identity: ModelIdentity, meta: dict[str, Any] | None = None) -> None:
        stored = self.model(meta)
        if not stored.same_vectors(identity):
            raise ModelError(
                f"collection {self.collection!r} at {self.location} was built with model "
                f"{stored.name} ({stored.digest}, {stored.dim}-d), not "
                f"{identity.name} ({identity.digest}, {identity.dim}-d): re-index it with this model "
                f"(`audiosim-index run PATH --rebuild`), use the model it was built with (--model), or index "
                f"into another collection (--collection NAME)"
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

    def model(self, meta: dict[str, Any] | None = None) -> ModelIdentity:
        """The identity of the model that made this collection's vectors."""
        meta = meta if meta is not None else self.require()
        try:
            return ModelIdentity.from_dict(meta["model"])
        except (KeyError, TypeError, ValueError):
            raise StoreError(
                f"the metadata of collection {self.collection!r} at {self.location} is damaged (no model "
                f"identity): re-index into a new collection (--collection NAME)"
            ) from None

    def dim(self) -> int:
        return self.model().dim

    # -- points -----------------------------------------------------------------------------------
    def upsert(self, ids: Sequence[str], vectors: np.ndarray, payloads: Sequence[dict[str, Any]]) -> None:
        """Write points; vectors (N, D) float32 must be finite and non-zero."""
        if not ids:
            return
        vectors = check_vectors(vectors, vectors.shape[1] if vectors.ndim == 2 else -1)
        self._upsert(list(ids), vectors, [with_helpers(p) for p in payloads])

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
    def _query(self, target: Target, page: Page) -> list[Hit]: ...

    def query(self, vector: Sequence[float] | np.ndarray, page: Page = Page()) -> list[Hit]:
        """Nearest points by cosine similarity to vector (D,), best first."""
        hits = self._query(check_vector(vector, self.dim()), page)
        return hits or self._require_points()

    def recommend(self, positives: np.ndarray, negatives: np.ndarray | None = None, page: Page = Page()) -> list[Hit]:
        """Points like the positives (P, D) and unlike the negatives (N, D), best first."""
        dim = self.dim()
        pos = check_vectors(positives, dim)
        neg = check_vectors(negatives, dim) if negatives is not None and len(negatives) else None
        hits = self._query(Recommend(pos.tolist(), neg.tolist() if neg is not None else []), page)
        return hits or self._require_points()

    def _require_points(self) -> list[Hit]:
        """No hits: an empty collection is an error (index first); otherwise the filters matched nothing."""
        if self.count() == 0:
            raise QueryError(
                f"collection {self.collection!r} is empty: index a folder first with `audiosim-index run PATH`"
            )
        return []

    # -- lifecycle --------------------------------------------------------------------------------
    @abstractmethod
    def release(self) -> None:
        """Let other processes use the collection now (the next call opens it again)."""

    @abstractmethod
    def drop(self) -> None:
        """Delete the collection: every point and its model identity (never a file that was indexed)."""

    @property
    def is_open(self) -> bool:
        """Whether this process holds the collection now (a server is shared, never held)."""
        return False

    def someone_waiting(self) -> bool:
        """Whether another process waits for this one to let go (never, for a server)."""
        return False

    @abstractmethod
    def share(self, hold_seconds: float = 1.0) -> None:
        """Let go if another process waits and this one has held the collection for hold_seconds: a long
        writer calls this between batches so that searchers get in."""

    @abstractmethod
    def maintain(self) -> None:
        """After a batch of writes: reclaim space from deletions and make the data quick to open."""

    @abstractmethod
    def check_space(self, new_points: int) -> None:
        """Refuse to start writing `new_points` points (then optimising) when the disk cannot hold them."""

    @abstractmethod
    def close(self) -> None: ...

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def record(r: Any, with_vector: bool) -> Record:
    """An engine's record (either client's) -> ours."""
    vector = list(r.vector) if with_vector and r.vector is not None else None
    return Record(id=str(r.id), payload=dict(r.payload or {}), vector=vector)


def hit(p: Any) -> Hit:
    return Hit(id=str(p.id), score=float(p.score), payload=dict(p.payload or {}))


def first_line(exc: Exception) -> str:
    text = str(exc).strip().split("\n")[0] or type(exc).__name__
    return text[:300]
