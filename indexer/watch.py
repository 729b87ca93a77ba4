"""Service mode: index, then keep the collection in step with the folders until stopped."""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from audiosim.indexer.job import IndexJob, IndexOptions, Summary
from audiosim.indexer.stages import check_roots, run_index
from audiosim.shared.audio import AudioFile, Skipped, walk_audio
from audiosim.shared.errors import StoreError
from audiosim.shared.store import Store

log = logging.getLogger("audiosim.watch")

Snapshot = dict[str, tuple[int, int]]  # path -> (size, mtime_ns)


@dataclass
class Changes:
    added: list[str]
    changed: list[str]
    removed: list[str]
    renamed: list[tuple[str, str]]

    def __bool__(self) -> bool:
        return bool(self.added or self.changed or self.removed or self.renamed)

    def lines(self) -> list[str]:
        return (
            [f"added {p}" for p in self.added]
            + [f"changed {p}" for p in self.changed]
            + [f"removed {p}" for p in self.removed]
            + [f"renamed {a} -> {b}" for a, b in self.renamed]
        )


def snapshot(files: Iterable[AudioFile]) -> Snapshot:
    return {str(f.path): (f.size, f.mtime_ns) for f in files}


def diff(old: Snapshot, new: Snapshot) -> Changes:
    """What happened between two walks; a file that vanished while another with the same size and mtime
    appeared is reported as a rename (the indexer still re-encodes it under its new path)."""
    added = sorted(p for p in new if p not in old)
    removed = sorted(p for p in old if p not in new)
    changed = sorted(p for p in new if p in old and new[p] != old[p])
    renamed = []
    by_stat = {old[p]: p for p in removed}
    for p in list(added):
        src = by_stat.pop(new[p], None)
        if src is not None:
            renamed.append((src, p))
            added.remove(p)
            removed.remove(src)
    return Changes(added, changed, removed, renamed)


def watch(
    store: Store,
    roots: list[Path],
    *,
    model: Path,
    options: IndexOptions,
    interval: float = 2.0,
    retry_for: float = 300.0,
    on_summary: Callable[[Summary], None] = lambda s: None,
) -> None:
    """Full run first, then a walk every `interval` seconds; when anything changed, an incremental run.

    A store error (say the server is down) is retried with backoff for up to `retry_for` seconds before it
    ends the watch. Between runs an embedded store is released, so searchers are never kept waiting.
    """
    roots = check_roots(roots)
    current: Snapshot = {}
    first = True
    failing_since: float | None = None
    backoff = 1.0
    while True:
        skipped: list[Skipped] = []
        files = list(walk_audio(roots, skipped.append))
        new = snapshot(f for f in files if options.partition.owns(f.path))
        for s in skipped:  # an unreadable folder's files are unknown, not removed
            if s.folder:
                new.update({p: v for p, v in current.items() if p.startswith(str(s.path) + os.sep)})
        changes = diff(current, new)
        if first or changes:
            if not first:
                for line in changes.lines():
                    log.info("%s", line)
            try:
                job = run_index(IndexJob(store, roots, model, options, files=files, skipped=skipped))
            except StoreError as exc:
                now = time.monotonic()
                failing_since = failing_since or now
                if now - failing_since > retry_for:
                    raise StoreError(f"{exc} (gave up after retrying for {retry_for:g} s)") from exc
                log.warning("store unavailable, retrying in %.0f s: %s", backoff, exc)
                time.sleep(backoff)
                backoff = min(backoff * 2, 60.0)
                continue
            finally:
                store.release()
            failing_since, backoff = None, 1.0
            touched = {*changes.added, *changes.changed, *(b for _, b in changes.renamed)}
            for f in job.summary.failed:
                if first or f.path in touched or Path(f.path) in {s.path for s in skipped}:
                    log.warning("failed %s: %s", f.path, f.reason)
            on_summary(job.summary)
            if job.summary.interrupted:
                return
            current, first = new, False
        time.sleep(interval)
