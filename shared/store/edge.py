"""The embedded default: a qdrant-edge shard in this process, no server.

Layout: `root/collection/` holds `audiosim.json` (the model identity), `shard/` (qdrant-edge's files), `lock`
(our own lock file) and, while a process waits for the store, `waiting`.

The locking protocol, in one place:
- No process calls into qdrant-edge on a shard unless it holds an exclusive `flock` on `lock`. It takes the
  lock before `EdgeShard.create`/`load` and lets it go only after `close()` has returned. (qdrant-edge's own
  WAL lock is taken after its load has already read segment files, and a load racing a writer's reopen lost
  and damaged data: notes/qdrant-edge.md. Its lock is a last line, never the protocol.)
- A process that finds `lock` held (or other processes waiting) takes a ticket in `queue/` (time-ordered) and
  tries the lock only when its ticket is the oldest, so waiters are served first come first served and neither
  an indexer nor a crowd of searchers starves the other; meanwhile it touches `waiting`, for up to
  `lock_timeout` seconds. Tickets of processes that died are removed by the next waiter.
- A long writer calls `share()` between batches: when `waiting` exists (and it has held the store for a second)
  it removes it and releases, so the waiters get in, and takes a ticket behind them for its next batch; with
  nobody waiting it keeps the shard open.
- Creation happens under the lock: the metadata is written before the shard, so a shard never exists
  without its identity except by outside damage, which is reported as such.
- The lock dies with its process (kill -9 included), so a crash never leaves the store locked.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import random
import shutil
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import qdrant_edge as q

from audiosim.shared.errors import StoreError
from audiosim.shared.filters import Term
from audiosim.shared.store.base import (
    SCROLL_PAGE,
    Hit,
    Page,
    Recommend,
    Record,
    Store,
    Target,
    hit,
    is_point_id,
    record,
)
from audiosim.shared.store.conditions import build_filter

if TYPE_CHECKING:
    import numpy as np

log = logging.getLogger(__name__)

# Bytes on disk per new point, an upper bound: 1.96 KB after maintain() at 100k points (benchmarks.sizing), more
# while the write-ahead log still holds the batch.
SPACE_PER_POINT = 4096
WAL_ROOM = 64 * 2**20  # qdrant-edge preallocates its write-ahead log in 32 MB pieces
OPEN_ROOM = 33 * 2**20  # a load may start a new log piece
# A point id no path maps to (uuid5 ids are version 5; this is version 4): deleting it is a no-op update.
WAL_SENTINEL = uuid.UUID("00000000-0000-4000-8000-000000000000")
INDEX_KINDS: dict[str, Callable[[], Any]] = {
    "keyword": lambda: q.KeywordIndexParams(on_disk=True),
    "integer": lambda: q.IntegerIndexParams(lookup=True, range=True, on_disk=True),
    "float": lambda: q.FloatIndexParams(on_disk=True),
}


class EdgeDialect:
    def value(self, key: str, v: str | int) -> Any:
        return q.FieldCondition(key, match=q.MatchValue(v))

    def any_of(self, key: str, vs: list[str] | list[int]) -> Any:
        return q.FieldCondition(key, match=q.MatchAny(vs))

    def range(self, key: str, **bounds: float) -> Any:
        return q.FieldCondition(key, range=q.RangeFloat(**bounds))

    def prefix(self, key: str, v: str) -> Any:
        return q.FieldCondition(key, match=q.MatchPrefix(v))

    def substring(self, key: str, v: str) -> Any:
        return q.FieldCondition(key, match=q.MatchSubstring(v))

    def has_id(self, ids: Sequence[str]) -> Any:
        return q.HasIdCondition({uuid.UUID(i) for i in ids})

    def filter(self, must: list[Any], must_not: list[Any]) -> Any:
        return q.Filter(must=must or None, must_not=must_not or None)


DIALECT = EdgeDialect()


class StoreLock:
    """An exclusive, non-blocking `flock` on one file; released by `release()` or by the process's end."""

    def __init__(self, path: Path):
        self.path = path
        self._fd: int | None = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def try_acquire(self) -> bool:
        if self._fd is not None:
            return True
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return False
        self._fd = fd
        return True

    def release(self) -> None:
        if self._fd is not None:
            fd, self._fd = self._fd, None
            os.close(fd)  # closing the only descriptor drops the flock


class EdgeStore(Store):
    """A qdrant-edge shard in `root/collection/shard`, with the model identity in `audiosim.json` beside it.

    Opened on first use; `release()` closes it so another process can get in (see the module docstring for
    the locking protocol).
    """

    def __init__(self, root: Path, collection: str, *, lock_timeout: float = 30.0):
        super().__init__(collection)
        self.dir = Path(root).expanduser() / collection
        self.lock_timeout = lock_timeout
        self._lock = StoreLock(self.dir / "lock")
        self._shard: Any = None
        self._opened_at = 0.0
        self._wrote = False

    @property
    def location(self) -> str:
        return str(self.dir.parent)

    @property
    def is_open(self) -> bool:
        """Whether this process holds the shard (and the lock) now."""
        return self._shard is not None

    @property
    def _meta_path(self) -> Path:
        return self.dir / "audiosim.json"

    @property
    def _waiting_path(self) -> Path:
        return self.dir / "waiting"

    def someone_waiting(self) -> bool:
        return self._waiting_path.exists()

    @property
    def _shard_dir(self) -> Path:
        return self.dir / "shard"

    def exists(self) -> bool:
        return self._meta_path.is_file()

    def read_meta(self) -> dict[str, Any] | None:
        if not self._meta_path.is_file():
            if self._shard_dir.is_dir() and any(self._shard_dir.iterdir()):
                raise StoreError(
                    f"{self._shard_dir} holds data but {self._meta_path.name} is missing, so nothing says which "
                    f"model made its vectors: restore the file, or index into another collection (--collection NAME)"
                )
            return None
        try:
            meta = json.loads(self._meta_path.read_text())
        except (OSError, ValueError) as exc:
            raise StoreError(f"cannot read {self._meta_path}: {exc}") from exc
        if not isinstance(meta, dict):
            raise StoreError(f"{self._meta_path} is damaged (not a JSON object)")
        return meta

    def _create(self, dim: int, meta: dict[str, Any]) -> None:
        self._acquire()
        if self.read_meta() is not None:  # another process created it while this one waited for the lock
            return
        if self._shard_dir.exists() and any(self._shard_dir.iterdir()):
            raise StoreError(
                f"{self._shard_dir} holds data but {self._meta_path.name} is missing, so nothing says which model "
                f"made its vectors: restore the file, or index into another collection (--collection NAME)"
            )
        tmp = self._meta_path.with_suffix(".tmp")
        tmp.write_text(json.dumps(meta, indent=2))
        tmp.replace(self._meta_path)
        self._new_shard(dim)

    def _new_shard(self, dim: int) -> None:
        """An empty shard (called under the lock, after the metadata is written)."""
        self._shard_dir.mkdir(parents=True, exist_ok=True)
        config = q.EdgeConfig(
            # float16 halves vector RAM and disk (and a cold open); on the development corpus scores move by at
            # most 1.3e-4 and top-10 lists agree on 99.6% of their members (near-ties swap).
            vectors=q.EdgeVectorParams(size=dim, distance=q.Distance.Cosine, datatype=q.VectorStorageDatatype.Float16),
            # Searches are exact, so no HNSW graph (m=0); optimize() still turns big appendable segments into
            # immutable ones whose on-disk payload indexes open in a fraction of the time (100k points:
            # 0.8 s -> 0.3 s), which is what a cold `audiosim-search` pays.
            hnsw_config=q.HnswIndexConfig(m=0, ef_construct=100, full_scan_threshold=10000, payload_m=0),
        )
        self._shard = q.EdgeShard.create(str(self._shard_dir), config)
        self._opened_at = time.monotonic()

    def _acquire(self) -> None:
        """Take our lock, first come first served: a process that finds the store held (or others waiting) takes
        a ticket in `queue/` and tries the lock only when its ticket is the oldest; meanwhile it leaves `waiting`
        so the holder lets go at its next batch. Gives up after lock_timeout seconds."""
        if self._lock.held:
            return
        queue = self.dir / "queue"
        if not _tickets(queue) and self._lock.try_acquire():
            return
        queue.mkdir(parents=True, exist_ok=True)
        ticket = queue / f"{time.time_ns():020d}-{os.getpid()}-{id(self)}"
        ticket.touch()
        deadline = time.monotonic() + self.lock_timeout
        log.warning("store %s is busy (another process holds it); waiting...", self.dir)
        try:
            while not (_tickets(queue)[:1] == [ticket.name] and self._lock.try_acquire()):
                if time.monotonic() >= deadline:
                    raise StoreError(
                        f"the store at {self.dir} is locked by another audiosim process; waited "
                        f"{self.lock_timeout:g} s (raise AUDIOSIM_LOCK_TIMEOUT, or stop the other process)"
                    )
                with contextlib.suppress(OSError):  # ask the holder to let go at its next batch
                    self._waiting_path.touch()
                time.sleep(0.01 * random.uniform(0.5, 1.5))
        finally:
            ticket.unlink(missing_ok=True)

    def _open(self) -> Any:
        if self._shard is not None:
            return self._shard
        meta = self.require()
        if (free := _free_bytes(self.dir)) < OPEN_ROOM:  # a load on a full disk ends in SIGBUS, not an error
            raise StoreError(
                f"the disk holding the store at {self.dir} is full ({free / 2**20:.0f} MB free; opening the store "
                f"may write up to {OPEN_ROOM / 2**20:.0f} MB to its log): free some space and try again"
            )
        self._acquire()
        if not self._shard_dir.is_dir() or not any(self._shard_dir.iterdir()):
            # The metadata is written first: a creation that died before its shard left nothing to lose.
            self._new_shard(self.model(meta).dim)
            return self._shard
        try:
            self._shard = q.EdgeShard.load(str(self._shard_dir))
        except Exception as exc:
            self._lock.release()
            if "No space left on device" in str(exc):
                raise StoreError(
                    f"the disk holding the store at {self.dir} is full (opening it writes to its log): free some "
                    f"space and try again"
                ) from exc
            raise StoreError(
                f"cannot open the store at {self.dir}: it is damaged ({str(exc).splitlines()[0][:200]}); index "
                f"into another collection (--collection NAME), or move {self.dir} aside and index again"
            ) from exc
        self._opened_at = time.monotonic()
        return self._shard

    def _ensure_indexes(self) -> None:
        """Deferred to maintain(): a fresh collection is bulk-loaded without payload indexes, made one immutable
        segment, and indexed on disk there. At 100k points that peaks at +380 MB of RSS instead of +850 MB for
        indexes kept up to date in RAM through every upsert, and takes 20 s instead of 24 s. Until then filters
        scan (correct, slower); later upserts keep the indexes up to date."""

    def indexed_fields(self) -> set[str]:
        return set(self._open().info().payload_schema)

    def _build_indexes(self) -> None:
        drop, create = self.index_changes()
        for name in drop:
            self._open().update(q.UpdateOperation.delete_field_index(name))
        for name, kind in create.items():
            self._open().update(q.UpdateOperation.create_field_index(name, INDEX_KINDS[kind]()))

    def _upsert(self, ids: list[str], vectors: np.ndarray, payloads: list[dict[str, Any]]) -> None:
        points = [q.Point(uuid.UUID(i), v, p) for i, v, p in zip(ids, vectors, payloads, strict=True)]
        self._open().update(q.UpdateOperation.upsert_points(points))
        self._wrote = True

    def delete(self, ids: Sequence[str]) -> None:
        if ids:
            self._open().update(q.UpdateOperation.delete_points([uuid.UUID(i) for i in ids]))
            self._wrote = True

    def count(self, terms: Sequence[Term] = ()) -> int:
        return int(self._open().count(q.CountRequest(exact=True, filter=build_filter(terms, DIALECT))))

    def scroll(
        self, fields: Sequence[str], terms: Sequence[Term] = (), *, with_vector: bool = False
    ) -> Iterator[Record]:
        shard, offset = self._open(), None
        while True:
            req = q.ScrollRequest(
                offset=offset,
                limit=SCROLL_PAGE,
                filter=build_filter(terms, DIALECT),
                with_payload=list(fields),
                with_vector=with_vector,
            )
            recs, offset = shard.scroll(req)
            for r in recs:
                yield record(r, with_vector)
            if offset is None:
                return

    def retrieve(self, ids: Sequence[str], *, with_vector: bool = False) -> list[Record]:
        valid = [uuid.UUID(i) for i in ids if is_point_id(i)]
        if not valid:
            return []
        return [record(r, with_vector) for r in self._open().retrieve(valid, True, with_vector)]

    def _query(self, target: Target, page: Page) -> list[Hit]:
        req = q.QueryRequest(
            limit=page.limit,
            offset=page.offset,
            query=_edge_query(target),
            filter=build_filter(page.terms, DIALECT, page.exclude),
            score_threshold=page.threshold,
            with_payload=True,
            with_vector=False,
            params=q.SearchParams(exact=True),
        )
        return [hit(p) for p in self._open().query(req)]

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
                self._shard.update(q.UpdateOperation.delete_points([WAL_SENTINEL]))
                self._wrote = False
            self._shard.close()
            self._shard = None
        self._lock.release()

    def drop(self) -> None:
        self._acquire()
        if self._shard is not None:
            self._shard.close()
            self._shard, self._wrote = None, False
        # The shard is moved aside in one rename before its identity goes: a drop cut short leaves either the
        # identity over no shard (the next open makes a fresh one, see _open) or nothing, never half a shard.
        trash = self.dir / f"shard.dropped-{os.getpid()}"
        if self._shard_dir.exists():
            self._shard_dir.rename(trash)
        self._meta_path.unlink(missing_ok=True)
        for old in self.dir.glob("shard.dropped-*"):  # this drop's, and any an earlier cut-short drop left
            shutil.rmtree(old, ignore_errors=True)
        self.release()

    def check_space(self, new_points: int) -> None:
        """A full disk ends a qdrant-edge write in SIGBUS (no message, exit 135), so look first: the new points
        (about 4 KB each on disk, with their log) plus the store's present size again, which optimize() may
        rewrite, plus 64 MB of room for the write-ahead log."""
        free = _free_bytes(self.dir)
        # st_blocks, not st_size: the write-ahead log is preallocated as sparse files
        present = sum(f.stat().st_blocks * 512 for f in self._shard_dir.rglob("*") if f.is_file())
        need = new_points * SPACE_PER_POINT + present + WAL_ROOM
        if free < need:
            raise StoreError(
                f"not enough disk space for the store at {self.dir}: {free / 2**20:.0f} MB free, about "
                f"{need / 2**20:.0f} MB needed; free some space (or move AUDIOSIM_STORE) and run again"
            )

    def close(self) -> None:
        self.release()


def _tickets(queue: Path) -> list[str]:
    """The waiting processes' tickets, oldest first; tickets of processes that died are removed."""
    try:
        names = sorted(os.listdir(queue))
    except FileNotFoundError:
        return []
    alive = []
    for name in names:
        pid = int(name.split("-")[1])
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            (queue / name).unlink(missing_ok=True)
            continue
        except PermissionError:  # alive, another user's
            pass
        alive.append(name)
    return alive


def _free_bytes(path: Path) -> int:
    """Free bytes, for an unprivileged writer, on the disk that holds path (or its nearest existing parent)."""
    here = path if path.exists() else next(p for p in path.parents if p.exists())
    st = os.statvfs(here)
    return st.f_bavail * st.f_frsize


def _edge_query(target: Target) -> Any:
    if isinstance(target, Recommend):
        positives: list[Any] = list(target.positives)
        return q.Query.RecommendBestScore(q.RecommendQuery(positives, list(target.negatives)))
    return q.Query.Nearest(target)
