"""Service mode: index, then keep the collection in step with the folders until stopped."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from indexer.stages import Partition, Summary, check_roots, run_index
from shared.audio import AudioFile, walk_audio
from shared.errors import StoreError
from shared.store import Store

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
    index: Callable[..., Summary] = run_index,
    index_args: dict[str, Any],
    interval: float = 2.0,
    retry_for: float = 300.0,
    partition: Partition = Partition(),
    should_stop: Callable[[], bool] = lambda: False,
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
    while not should_stop():
        files = list(walk_audio(roots))
        new = snapshot(f for f in files if partition.owns(str(f.path)))
        changes = diff(current, new)
        if first or changes:
            if not first:
                for line in changes.lines():
                    log.info("%s", line)
            try:
                summary = index(store, roots, files=files, partition=partition, **index_args)
            except StoreError as exc:
                now = time.monotonic()
                failing_since = failing_since or now
                if now - failing_since > retry_for:
                    raise StoreError(f"{exc} (gave up after retrying for {retry_for:g} s)") from exc
                log.warning("store unavailable, retrying in %.0f s: %s", backoff, exc)
                _sleep(backoff, should_stop)
                backoff = min(backoff * 2, 60.0)
                continue
            finally:
                store.release()
            failing_since, backoff = None, 1.0
            touched = {*changes.added, *changes.changed, *(b for _, b in changes.renamed)}
            for f in summary.failed:
                if first or f.path in touched:
                    log.warning("failed %s: %s", f.path, f.reason)
            on_summary(summary)
            if summary.interrupted:
                return
            current, first = new, False
        _sleep(interval, should_stop)


def _sleep(seconds: float, should_stop: Callable[[], bool]) -> None:
    end = time.monotonic() + seconds
    while not should_stop() and time.monotonic() < end:
        time.sleep(min(0.1, max(0.0, end - time.monotonic())))
