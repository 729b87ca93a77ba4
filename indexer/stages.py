"""The index run as small stages: scan -> diff -> decode + encode (worker processes) -> upsert -> prune."""

from __future__ import annotations

import functools
import hashlib
import logging
import os
import signal
import time
from collections.abc import Callable, Generator, Iterable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from dataclasses import dataclass, field
from multiprocessing import get_context
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from shared.audio import AudioFile, AudioInfo, ClipSpec, read_clip, walk_audio
from shared.errors import ConfigError, DecodeError, ModelError
from shared.store import Store, point_id

if TYPE_CHECKING:
    from shared.encoder import Encoder

log = logging.getLogger(__name__)

SMALL_JOB = 200  # fewer files than this are encoded in-process: starting workers would cost more than it saves
CHUNK = 32  # files per worker task: large enough to batch the encoder, small enough to keep both cores busy
THREAD_VARS = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS")


@dataclass
class Failure:
    path: str
    reason: str


@dataclass
class Encoded:
    """One file's point, ready to upsert."""

    id: str
    vector: np.ndarray  # (D,) float32 unit vector
    payload: dict[str, Any]
    warning: str | None = None


@dataclass
class Plan:
    """What the diff decided: files to encode, how many are unchanged, points whose files vanished."""

    todo: list[AudioFile]
    unchanged: int
    vanished: list[str]  # point ids


@dataclass
class Summary:
    indexed: int = 0
    unchanged: int = 0
    removed: int = 0
    failed: list[Failure] = field(default_factory=list)
    warnings: list[Failure] = field(default_factory=list)
    seconds: float = 0.0
    # files/s from the first chunk back to the last one written: without the start-up (workers loading the
    # model) and the final maintain(), which `seconds` includes
    steady_rate: float = 0.0
    interrupted: bool = False

    @property
    def files_per_second(self) -> float:
        return self.indexed / self.seconds if self.seconds > 0 else 0.0


# -- scan and diff ----------------------------------------------------------------------------------


def check_roots(roots: Iterable[Path]) -> list[Path]:
    out = []
    for r in roots:
        p = Path(os.path.abspath(Path(r).expanduser()))
        if not p.exists():
            raise ConfigError(f"path not found: {r}")
        out.append(p)
    return out


def _under(path: str, roots: list[Path]) -> bool:
    return any(path == str(r) or path.startswith(str(r).rstrip(os.sep) + os.sep) for r in roots)


@dataclass(frozen=True)
class Partition:
    """Worker `index` (1-based) of `count`: owns the files whose path hashes to it, so N workers share a library."""

    index: int = 1
    count: int = 1

    @classmethod
    def parse(cls, text: str) -> Partition:
        i, sep, n = text.partition("/")
        try:
            part = cls(int(i), int(n))
        except ValueError:
            raise ConfigError(f"--partition {text!r}: expected I/N, e.g. 2/4") from None
        if not sep or not 1 <= part.index <= part.count:
            raise ConfigError(f"--partition {text!r}: expected I/N with 1 <= I <= N")
        return part

    def owns(self, path: str) -> bool:
        if self.count == 1:
            return True
        digest = hashlib.blake2b(path.encode(), digest_size=8).digest()
        return int.from_bytes(digest, "big") % self.count == self.index - 1


def plan(store: Store, roots: list[Path], files: Iterable[AudioFile], partition: Partition = Partition()) -> Plan:
    """Compare the walk with the collection: new or changed (size or mtime_ns) files are to do.

    Only files this partition owns are considered, for encoding and for removal alike.
    """
    known = {
        r.payload["path"]: (r.id, r.payload.get("size"), r.payload.get("mtime_ns"))
        for r in store.scroll(["path", "size", "mtime_ns"])
        if "path" in r.payload
    }
    todo, unchanged, seen = [], 0, set()
    for f in files:
        key = str(f.path)
        if not partition.owns(key):
            continue
        seen.add(key)
        old = known.get(key)
        if old is not None and old[1] == f.size and old[2] == f.mtime_ns:
            unchanged += 1
        else:
            todo.append(f)
    vanished = [
        pid for path, (pid, _, _) in known.items() if path not in seen and _under(path, roots) and partition.owns(path)
    ]
    return Plan(todo=todo, unchanged=unchanged, vanished=vanished)


# -- decode and encode (runs in worker processes) ---------------------------------------------------


def make_payload(f: AudioFile, info: AudioInfo) -> dict[str, Any]:
    rel = f.path.relative_to(f.root) if f.path != f.root else Path(f.path.name)
    tags = list(rel.parent.parts)
    return {
        "path": str(f.path),
        "name": f.path.name,
        "folder": rel.parent.as_posix() if tags else "",
        "tags": tags,
        "ext": f.path.suffix.lower().lstrip("."),
        "duration": round(info.duration, 6),
        "sample_rate": info.sample_rate,
        "channels": info.channels,
        "size": f.size,
        "mtime": f.mtime_ns / 1e9,
        "mtime_ns": f.mtime_ns,
        "root": str(f.root),
    }


_worker_encoder: Any = None
_worker_error: ModelError | None = None  # why this worker has no encoder; raised by each task it is given


def init_worker(model_path: str, single_thread: bool) -> None:
    """Load the encoder once per process; one thread per process, so two processes use two cores well."""
    global _worker_encoder, _worker_error
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the whole group; the parent decides
    if single_thread:
        import torch
        from threadpoolctl import threadpool_limits

        threadpool_limits(1)
        torch.set_num_threads(1)
    from shared.encoder import Encoder

    try:
        _worker_encoder = Encoder(Path(model_path))
    except ModelError as exc:  # raised from an initializer it would break the pool, after a traceback
        _worker_error = exc


def _worker_model() -> Encoder:
    if _worker_error is not None:
        raise _worker_error
    return _worker_encoder  # type: ignore[no-any-return]


def encode_files(files: list[AudioFile]) -> tuple[list[Encoded], list[Failure]]:
    """Decode and encode one chunk with this process's encoder: (points, failures)."""
    enc = _worker_model()
    spec: ClipSpec = enc.clip_spec
    clips, infos, ok, failures = [], [], [], []
    for f in files:
        try:
            clip = read_clip(f.path, spec)
        except DecodeError as exc:
            failures.append(Failure(str(f.path), str(exc)))
            continue
        except Exception as exc:  # a decoder bug must not end the run either
            failures.append(Failure(str(f.path), f"unexpected error: {type(exc).__name__}: {exc}"))
            continue
        clips.append(clip.samples)
        infos.append(clip)
        ok.append(f)
    if not ok:
        return [], failures
    vectors = enc.embed(np.stack(clips))  # (B, D)
    points = [
        Encoded(point_id(f.path), v, make_payload(f, c.info), c.warning)
        for f, v, c in zip(ok, vectors, infos, strict=True)
    ]
    return points, failures


# -- the run ----------------------------------------------------------------------------------------


def _chunks(files: list[AudioFile], size: int) -> Iterator[list[AudioFile]]:
    for i in range(0, len(files), size):
        yield files[i : i + size]


def spawn_pool(workers: int, **kwargs: Any) -> ProcessPoolExecutor:
    """A pool of fresh processes, each single-threaded: two such processes use two cores well, while BLAS and
    numba threads left at their defaults oversubscribe them badly. Spawn, not fork: a forked child would
    inherit an open embedded store's lock."""
    for var in THREAD_VARS:  # inherited by the workers before they import numpy
        os.environ.setdefault(var, "1")
    return ProcessPoolExecutor(workers, mp_context=get_context("spawn"), **kwargs)


def describe_worker_model() -> dict[str, Any]:
    """This worker's model identity, for a parent that has not loaded the model (nor imported torch)."""
    return _worker_model().identity.to_dict()


class Encoders:
    """Runs encode_files over chunks: in this process, or in a spawn pool of processes that each load the
    checkpoint. Given a checkpoint path and a pool, this process never loads the model (nor imports torch, ~2 s
    and ~300 MB): the identity cache (shared.identity) or one of the workers tells it the model's identity."""

    def __init__(self, model: Encoder | Path):
        self.path = model if isinstance(model, Path) else model.path
        self.encoder = None if isinstance(model, Path) else model
        self.pool: ProcessPoolExecutor | None = None
        self.workers = 0
        self._described: list[Future[dict[str, Any]]] = []

    def start(self, workers: int) -> None:
        if not self.path.is_file():
            raise ModelError.missing(self.path)  # now, not after the workers have imported torch
        if workers > 0 and self.pool is None:
            self.workers = workers
            self.pool = spawn_pool(workers, initializer=init_worker, initargs=(str(self.path), True))
            # The pool spawns a process per submitted task: one task each starts them all loading at once.
            self._described = [self.pool.submit(describe_worker_model) for _ in range(workers)]

    def _loaded(self) -> Encoder:
        if self.encoder is None:
            from shared.encoder import Encoder

            self.encoder = Encoder(self.path)
        return self.encoder

    @functools.cached_property
    def cached_identity(self) -> dict[str, Any] | None:
        """The identity cache's answer for this checkpoint (hashing it once per run), when nothing is loaded."""
        from shared.identity import cached_identity

        found = cached_identity(self.path) if self.encoder is None and self.path.is_file() else None
        return found.to_dict() if found else None

    def identity(self) -> dict[str, Any]:
        if self.encoder is None and (known := self.cached_identity):
            return known
        if self.encoder is not None or self.pool is None:
            return self._loaded().identity.to_dict()
        return self._described[0].result()

    def map(self, files: list[AudioFile]) -> Generator[tuple[list[Encoded], list[Failure], int], None, None]:
        """Yields (points, failures, files done) per finished chunk."""
        if not files:
            return
        if self.pool is None:
            global _worker_encoder
            _worker_encoder = self._loaded()
            for chunk in _chunks(files, CHUNK):
                yield (*encode_files(chunk), len(chunk))
            return
        pending: dict[Future[tuple[list[Encoded], list[Failure]]], int] = {}
        chunks = _chunks(files, CHUNK)
        try:
            for chunk in chunks:
                pending[self.pool.submit(encode_files, chunk)] = len(chunk)
                if len(pending) >= 3 * self.workers:
                    break
            while pending:
                done, _ = wait(pending, return_when=FIRST_COMPLETED)
                for fut in done:
                    n = pending.pop(fut)
                    nxt = next(chunks, None)
                    if nxt is not None:
                        pending[self.pool.submit(encode_files, nxt)] = len(nxt)
                    yield (*fut.result(), n)
        finally:
            for fut in pending:
                fut.cancel()
            self.close()

    def close(self) -> None:
        if self.pool is not None:
            self.pool.shutdown(wait=True, cancel_futures=True)
            self.pool = None


def run_index(
    store: Store,
    roots: list[Path],
    *,
    model: Encoder | Path,
    workers: int | None,
    batch_size: int,
    on_start: Callable[[int], None] = lambda total: None,
    on_progress: Callable[[int], None] = lambda n: None,
    partition: Partition = Partition(),
    files: list[AudioFile] | None = None,
) -> Summary:
    """Bring the collection in step with the files under roots; one bad file never stops the run.

    model: a loaded encoder, or a checkpoint path (then, with workers, only the workers load it).
    workers: decode/encode processes (0: in this process); None picks one per core for large jobs and
    in-process for small ones. files: the walk of roots, when the caller has just made it.
    """
    t0 = time.perf_counter()
    roots = check_roots(roots)
    walked = list(walk_audio(roots) if files is None else files)
    encoders = Encoders(model)
    if isinstance(model, Path) and encoders.cached_identity is None:
        # Nothing loaded and the identity unknown: a large job starts its workers now and asks one of them.
        mine = sum(partition.owns(str(f.path)) for f in walked)
        encoders.start(_pool_size(workers, mine))
    try:
        return _run(store, roots, walked, encoders, workers, batch_size, on_start, on_progress, partition, t0)
    finally:
        encoders.close()


def _pool_size(workers: int | None, files: int) -> int:
    return workers if workers is not None else (os.cpu_count() or 1) if files >= SMALL_JOB else 0


def _run(
    store: Store,
    roots: list[Path],
    files: list[AudioFile],
    encoders: Encoders,
    workers: int | None,
    batch_size: int,
    on_start: Callable[[int], None],
    on_progress: Callable[[int], None],
    partition: Partition,
    t0: float,
) -> Summary:
    store.ensure_collection(encoders.identity())
    p = plan(store, roots, files, partition)
    summary = Summary(unchanged=p.unchanged)
    store.delete(p.vanished)
    summary.removed = len(p.vanished)
    on_start(len(p.todo))
    buffer: list[Encoded] = []

    def flush() -> None:
        if buffer:
            store.upsert([e.id for e in buffer], np.stack([e.vector for e in buffer]), [e.payload for e in buffer])
            summary.indexed += len(buffer)
            buffer.clear()
            store.share()  # an embedded store is let go when a searcher waits for it

    if p.todo:
        encoders.start(_pool_size(workers, len(p.todo)))
    results = encoders.map(p.todo)
    first: tuple[float, int] | None = None  # (time, files done) when the first chunk came back
    done = 0
    try:
        for points, failures, n in results:
            buffer.extend(points)
            summary.failed.extend(failures)
            summary.warnings.extend(Failure(e.payload["path"], e.warning) for e in points if e.warning)
            if len(buffer) >= batch_size:
                flush()
            done += n
            if first is None:
                first = (time.perf_counter(), done)
            on_progress(n)
        flush()
    except KeyboardInterrupt:
        summary.interrupted = True
        results.close()  # running chunks finish, queued ones are dropped, the workers stop
        flush()  # the points already encoded are whole; keep them
    streamed = time.perf_counter()
    try:
        # A file that now fails to decode must not keep its stale vector.
        store.delete([point_id(f.path) for f in summary.failed])
        store.maintain()
    except KeyboardInterrupt:  # the points are all written; only tidying up was cut short
        summary.interrupted = True
    summary.seconds = time.perf_counter() - t0
    if first is not None and streamed > first[0]:
        summary.steady_rate = (done - first[1]) / (streamed - first[0])
    return summary
