"""Decode and encode files into points: in this process, or in a pool of spawned single-threaded workers."""

from __future__ import annotations

import ctypes
import os
import signal
from collections.abc import Generator, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from dataclasses import dataclass
from multiprocessing import get_context
from pathlib import Path
from typing import Any

import numpy as np

from audiosim.indexer.job import Failure
from audiosim.shared.audio import AudioFile, read_clips
from audiosim.shared.encoder import Encoder
from audiosim.shared.errors import ModelError
from audiosim.shared.payload import Source, make_payload
from audiosim.shared.store import point_id

SMALL_JOB = 200  # fewer files than this are encoded in-process: starting workers would cost more than it saves
CHUNK = 32  # files per worker task: large enough to batch the encoder, small enough to keep both cores busy
THREAD_VARS = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS")
PR_SET_PDEATHSIG = 1


@dataclass
class Encoded:
    """One file's point, ready to upsert."""

    id: str
    vector: np.ndarray  # (D,) float32 unit vector
    payload: dict[str, Any]
    warning: str | None = None


def encode_files(encoder: Encoder, files: list[AudioFile]) -> tuple[list[Encoded], list[Failure]]:
    """Decode and encode one chunk: (points, failures)."""
    clips, failures = read_clips(files, encoder.clip_spec)
    failed = [Failure(str(f.path), reason) for f, reason in failures]
    if not clips:
        return [], failed
    out = encoder.run(np.stack([c.samples for _, c in clips]))  # vectors (B, D), probs (B, C) or None
    points = []
    for i, (f, c) in enumerate(clips):
        heard: dict[str, Any] = {}
        if out.probs is not None:
            top = int(out.probs[i].argmax())
            heard = {"category": encoder.classes[top], "category_score": float(out.probs[i, top])}
        points.append(Encoded(point_id(f.path), out.vectors[i], make_payload(Source(f, c.info, **heard)), c.warning))
    return points, failed


# -- worker processes -------------------------------------------------------------------------------

_worker_encoder: Encoder | None = None
_worker_error: ModelError | None = None  # why this worker has no encoder; raised by each task it is given


def _die_with(parent: int) -> None:
    """Ask Linux to kill this worker when its parent dies (even by SIGKILL), so no worker outlives an indexer."""
    try:
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    except (OSError, AttributeError):  # not Linux
        return
    if os.getppid() != parent:  # the parent died before the request was made
        os._exit(1)


def init_worker(model_path: str, parent: int) -> None:
    """Load the encoder once per process, single-threaded: two such processes use two cores well."""
    global _worker_encoder, _worker_error
    _die_with(parent)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the whole group; the parent decides
    from threadpoolctl import threadpool_limits

    threadpool_limits(1)
    try:
        _worker_encoder = Encoder(Path(model_path), threads=1)
    except ModelError as exc:  # raised from an initializer it would break the pool, after a traceback
        _worker_error = exc


def _encode_in_worker(files: list[AudioFile]) -> tuple[list[Encoded], list[Failure]]:
    if _worker_encoder is None:
        raise _worker_error or ModelError("worker has no encoder")
    return encode_files(_worker_encoder, files)


def spawn_pool(workers: int, **kwargs: Any) -> ProcessPoolExecutor:
    """A pool of fresh processes, each single-threaded: two such processes use two cores well, while BLAS
    threads left at their defaults oversubscribe them badly. Spawn, not fork: a forked child would inherit an
    open embedded store's lock."""
    for var in THREAD_VARS:  # inherited by the workers before they import numpy
        os.environ.setdefault(var, "1")
    return ProcessPoolExecutor(workers, mp_context=get_context("spawn"), **kwargs)


def _chunks(files: list[AudioFile], size: int) -> Iterator[list[AudioFile]]:
    for i in range(0, len(files), size):
        yield files[i : i + size]


class Encoders:
    """The run's encoder in this process and, for a large job, a pool of workers that each load their own.

    The pool starts in `start()` and ends in `close()` (the `with` block's end), nowhere else.
    """

    def __init__(self, model: Path):
        self.encoder = Encoder(model)
        self.pool: ProcessPoolExecutor | None = None
        self.workers = 0

    def __enter__(self) -> Encoders:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def start(self, workers: int) -> None:
        """Start `workers` processes (none for 0); they load the model at once, while this process goes on."""
        if workers > 0 and self.pool is None:
            self.workers = workers
            self.pool = spawn_pool(workers, initializer=init_worker, initargs=(str(self.encoder.file), os.getpid()))
            # The pool spawns a process per submitted task: one no-op task each starts them all loading now.
            for _ in range(workers):
                self.pool.submit(int)

    def map(self, files: list[AudioFile]) -> Generator[tuple[list[Encoded], list[Failure], int], None, None]:
        """Yields (points, failures, files done) per finished chunk."""
        if self.pool is None:
            from threadpoolctl import threadpool_limits

            for chunk in _chunks(files, CHUNK):
                with threadpool_limits(1):  # as in a worker, so that both give the very same numbers
                    points = encode_files(self.encoder, chunk)
                yield (*points, len(chunk))
            return
        pending: dict[Future[tuple[list[Encoded], list[Failure]]], int] = {}
        chunks = _chunks(files, CHUNK)
        try:
            for chunk in chunks:
                pending[self.pool.submit(_encode_in_worker, chunk)] = len(chunk)
                if len(pending) >= 3 * self.workers:
                    break
            while pending:
                done, _ = wait(pending, return_when=FIRST_COMPLETED)
                for fut in done:
                    n = pending.pop(fut)
                    nxt = next(chunks, None)
                    if nxt is not None:
                        pending[self.pool.submit(_encode_in_worker, nxt)] = len(nxt)
                    yield (*fut.result(), n)
        finally:  # on an early end (Ctrl-C) queued chunks are dropped; close() stops the workers
            for fut in pending:
                fut.cancel()

    def close(self) -> None:
        if self.pool is not None:
            self.pool.shutdown(wait=True, cancel_futures=True)
            self.pool = None


def pool_size(workers: int | None, files: int) -> int:
    """Worker processes for a job of `files` files: as asked, or one per core for a large job, none for a small."""
    return workers if workers is not None else (os.cpu_count() or 1) if files >= SMALL_JOB else 0
