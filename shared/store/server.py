"""A Qdrant server or cluster through qdrant-client; and qdrant-client's local mode (`local:DIR`), a
brute-force prototype engine that runs the same client calls without a server (the tests use it)."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from qdrant_client import QdrantClient
from qdrant_client import models as m

from audiosim.shared.errors import StoreError
from audiosim.shared.filters import Term
from audiosim.shared.store import base
from audiosim.shared.store.base import META_KEY, Hit, Page, Recommend, Record, Store, Target
from audiosim.shared.store.conditions import build_filter

if TYPE_CHECKING:
    import numpy as np

INDEX_KINDS = {
    "keyword": m.PayloadSchemaType.KEYWORD,
    "integer": m.PayloadSchemaType.INTEGER,
    "float": m.PayloadSchemaType.FLOAT,
}


class ClientDialect:
    def value(self, key: str, v: str | int) -> Any:
        return m.FieldCondition(key=key, match=m.MatchValue(value=v))

    def any_of(self, key: str, vs: list[str] | list[int]) -> Any:
        return m.FieldCondition(key=key, match=m.MatchAny(any=vs))

    def range(self, key: str, **bounds: float) -> Any:
        return m.FieldCondition(key=key, range=m.Range(**bounds))

    def prefix(self, key: str, v: str) -> Any:
        return m.FieldCondition(key=key, match=m.MatchPrefix(prefix=v))

    def substring(self, key: str, v: str) -> Any:
        return m.FieldCondition(key=key, match=m.MatchSubstring(substring=v))

    def has_id(self, ids: Sequence[str]) -> Any:
        return m.HasIdCondition(has_id=list(ids))

    def filter(self, must: list[Any], must_not: list[Any]) -> Any:
        return m.Filter(must=must or None, must_not=must_not or None)


DIALECT = ClientDialect()


class ServerStore(Store):
    """A collection on a Qdrant server or cluster at `url` (http(s)://host:port)."""

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
        self.url = url
        self._secret = api_key
        self.shards, self.replication_factor, self.on_disk = shards, replication_factor, on_disk
        try:
            self.client = self._connect(timeout)
        except Exception as exc:
            raise StoreError(f"cannot open Qdrant at {self.location}: {base.first_line(exc)}") from exc

    def _connect(self, timeout: float) -> QdrantClient:
        return QdrantClient(url=self.url, api_key=self._secret, timeout=int(timeout), check_compatibility=False)

    @property
    def location(self) -> str:
        parts = urlsplit(self.url)
        return f"{parts.scheme}://{parts.hostname}{f':{parts.port}' if parts.port else ''}"

    def _call(self, what: str, fn: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except Exception as exc:
            text = base.first_line(exc)
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

    def indexed_fields(self) -> set[str]:
        info = self._call("read the collection", self.client.get_collection, self.collection)
        return set(info.payload_schema or {})

    def _ensure_indexes(self) -> None:
        drop, create = self.index_changes()
        for name in drop:
            self._call("drop a payload index", self.client.delete_payload_index, self.collection, name, wait=True)
        for name, kind in create.items():
            self._call(
                "create a payload index",
                self.client.create_payload_index,
                self.collection,
                name,
                field_schema=INDEX_KINDS[kind],
                wait=True,
            )

    def _upsert(self, ids: list[str], vectors: np.ndarray, payloads: list[dict[str, Any]]) -> None:
        points = m.Batch(ids=list(ids), vectors=vectors.tolist(), payloads=payloads)
        self._call("upsert points", self.client.upsert, self.collection, points=points, wait=True)

    def delete(self, ids: Sequence[str]) -> None:
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
            "count points", self.client.count, self.collection, count_filter=build_filter(terms, DIALECT), exact=True
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
                scroll_filter=build_filter(terms, DIALECT),
                limit=base.SCROLL_PAGE,
                offset=offset,
                with_payload=list(fields),
                with_vectors=with_vector,
            )
            for r in recs:
                yield base.record(r, with_vector)
            if offset is None:
                return

    def retrieve(self, ids: Sequence[str], *, with_vector: bool = False) -> list[Record]:
        valid = [i for i in ids if base.is_point_id(i)]
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
        return [base.record(r, with_vector) for r in recs]

    def _query(self, target: Target, page: Page) -> list[Hit]:
        res = self._call(
            "query",
            self.client.query_points,
            self.collection,
            query=_client_query(target),
            query_filter=build_filter(page.terms, DIALECT, page.exclude),
            limit=page.limit,
            offset=page.offset,
            score_threshold=page.threshold,
            with_payload=True,
        )
        return [base.hit(p) for p in res.points]

    def drop(self) -> None:
        self._call("delete the collection", self.client.delete_collection, self.collection)

    def release(self) -> None:
        """Nothing to let go: a server serves every client at once."""

    def share(self, hold_seconds: float = 1.0) -> None:
        """Nothing to let go: a server serves every client at once."""

    def maintain(self) -> None:
        """Nothing to do: the server's own optimizers vacuum and index in the background."""

    def check_space(self, new_points: int) -> None:
        """The server's disk is the server's to watch."""

    def close(self) -> None:
        self.client.close()


class LocalStore(ServerStore):
    """qdrant-client's local mode in a folder: the server code path without a server (no payload indexes;
    it scans)."""

    def __init__(self, folder: str, collection: str):
        super().__init__(f"local:{folder}", collection)

    def _connect(self, timeout: float) -> QdrantClient:
        return QdrantClient(path=self.url.removeprefix("local:"))

    @property
    def location(self) -> str:
        return self.url

    def _ensure_indexes(self) -> None:
        """Local mode has no payload indexes."""


def _client_query(target: Target) -> Any:
    if not isinstance(target, Recommend):
        return target
    positives: list[Any] = list(target.positives)
    negatives: list[Any] = list(target.negatives)
    return m.RecommendQuery(
        recommend=m.RecommendInput(
            positive=positives, negative=negatives or None, strategy=m.RecommendStrategy.BEST_SCORE
        )
    )
