"""The index run as small stages over one job: scan -> plan -> encode + upsert -> tidy."""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from audiosim.indexer.encoding import Encoded, Encoders, pool_size
from audiosim.indexer.job import Failure, IndexJob, Plan
from audiosim.shared.audio import AudioFile, walk_audio
from audiosim.shared.errors import ConfigError
from audiosim.shared.payload import file_path
from audiosim.shared.store import point_id
from audiosim.shared.store.base import usable

log = logging.getLogger(__name__)


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


def scan(job: IndexJob) -> list[AudioFile]:
    """The files under the job's roots (walked now unless the caller just did)."""
    job.roots = check_roots(job.roots)
    if job.files is None:
        job.files = list(walk_audio(job.roots, job.skipped.append))
    job.summary.failed.extend(Failure(str(s.path), s.reason) for s in job.skipped)
    return job.files


def plan(job: IndexJob) -> Plan:
    """Compare the walk with the collection: new or changed (size or mtime_ns) files are to do.

    Only files this partition owns are considered, for encoding and for removal alike.
    """
    part = job.options.partition
    # A point whose vector is missing or zero (damage) is re-encoded like a changed file: a re-run heals.
    known = {
        str(file_path(r.payload)): (
            r.id,
            r.payload.get("size") if usable(r.vector) else None,
            r.payload.get("mtime_ns"),
        )
        for r in job.store.scroll(["path", "path_bytes", "size", "mtime_ns"], with_vector=True)
        if "path" in r.payload
    }
    todo, unchanged, seen = [], 0, set()
    for f in job.files or []:
        key = str(f.path)
        if not part.owns(key):
            continue
        seen.add(key)
        old = known.get(key)
        if old is not None and old[1] == f.size and old[2] == f.mtime_ns:
            unchanged += 1
        else:
            todo.append(f)
    unread = [Path(s.path) for s in job.skipped if s.folder]  # files there are unknown, not gone
    vanished = [
        pid
        for path, (pid, _, _) in known.items()
        if path not in seen and _under(path, job.roots) and not _under(path, unread) and part.owns(path)
    ]
    job.plan = Plan(todo=todo, unchanged=unchanged, vanished=vanished)
    return job.plan


def _expects_work(job: IndexJob) -> int:
    """Before the diff: about how many files a run will encode (owned files the collection lacks), so that a
    large job starts its workers loading while the diff runs, and an unchanged re-run starts none."""
    owned = sum(job.options.partition.owns(f.path) for f in job.files or [])
    have = job.store.count() if job.store.exists() else 0
    return max(0, owned - have)


def encode_and_upsert(job: IndexJob, encoders: Encoders) -> None:
    """Encode the plan's files and upsert them in batches; Ctrl-C keeps what is encoded and stops."""
    assert job.plan is not None
    store, summary, todo = job.store, job.summary, job.plan.todo
    job.progress.on_start(len(todo))
    if not todo:
        return
    job.store.check_space(len(todo))
    encoders.start(pool_size(job.options.workers, len(todo)))
    buffer: list[Encoded] = []

    def flush() -> None:
        if buffer:
            store.upsert([e.id for e in buffer], np.stack([e.vector for e in buffer]), [e.payload for e in buffer])
            summary.indexed += len(buffer)
            buffer.clear()
            store.share()  # an embedded store is let go when a searcher waits for it

    results = encoders.map(todo)
    first: tuple[float, int] | None = None  # (time, files done) when the first chunk came back
    done = 0
    try:
        for points, failures, n in results:
            buffer.extend(points)
            summary.failed.extend(failures)
            summary.warnings.extend(Failure(e.payload["path"], e.warning) for e in points if e.warning)
            if len(buffer) >= job.options.batch_size:
                flush()
            done += n
            if first is None:
                first = (time.perf_counter(), done)
            job.progress.on_advance(n)
        flush()
    except KeyboardInterrupt:
        summary.interrupted = True
        results.close()  # running chunks finish, queued ones are dropped
        flush()  # the points already encoded are whole; keep them
    streamed = time.perf_counter()
    if first is not None and streamed > first[0]:
        summary.steady_rate = (done - first[1]) / (streamed - first[0])


def tidy(job: IndexJob) -> None:
    """Drop the stale points of files that now fail to decode, then let the store optimise itself."""
    try:
        job.store.delete([point_id(f.path) for f in job.summary.failed])
        job.store.check_space(0)
        job.store.maintain()
    except KeyboardInterrupt:  # the points are all written; only tidying up was cut short
        job.summary.interrupted = True


def run_index(job: IndexJob) -> IndexJob:
    """Bring the collection in step with the files under the job's roots; one bad file never stops the run."""
    scan(job)
    expected = _expects_work(job)
    job.store.check_space(expected)  # before the first write: a full disk ends qdrant-edge in SIGBUS
    with Encoders(job.model) as encoders:
        job.store.ensure_collection(encoders.encoder.identity)
        if expected:
            encoders.start(pool_size(job.options.workers, expected))
        p = plan(job)
        job.summary.unchanged = p.unchanged
        job.store.delete(p.vanished)
        job.summary.removed = len(p.vanished)
        encode_and_upsert(job, encoders)
    tidy(job)
    job.summary.seconds = time.perf_counter() - job.started
    return job
