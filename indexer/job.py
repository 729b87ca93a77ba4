"""The job every stage of an index run takes: what to index, how, and what has happened so far.

As beets' import stages all take the session and the task, `scan -> plan -> encode + upsert -> tidy` all take
one `IndexJob`, so the data's way through a run reads from one object.
"""

from __future__ import annotations

import hashlib
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from audiosim.shared.audio import AudioFile, Skipped
from audiosim.shared.errors import ConfigError
from audiosim.shared.store import Store


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

    def owns(self, path: str | Path) -> bool:
        if self.count == 1:
            return True
        digest = hashlib.blake2b(os.fsencode(path), digest_size=8).digest()
        return int.from_bytes(digest, "big") % self.count == self.index - 1


@dataclass(frozen=True)
class IndexOptions:
    """How to run: decode/encode processes (0: in this process; None: one per core for large jobs, in-process
    for small ones), points per upsert, and this worker's share of the files."""

    workers: int | None = None
    batch_size: int = 64
    partition: Partition = Partition()


@dataclass
class Failure:
    path: str
    reason: str


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


@dataclass
class Plan:
    """What the diff decided: files to encode, how many are unchanged, points whose files vanished."""

    todo: list[AudioFile]
    unchanged: int
    vanished: list[str]  # point ids


@dataclass
class Progress:
    """Callbacks for a progress display: the number of files to encode, then files done per chunk."""

    on_start: Callable[[int], None] = lambda total: None
    on_advance: Callable[[int], None] = lambda n: None


@dataclass
class IndexJob:
    store: Store
    roots: list[Path]
    model: Path
    options: IndexOptions = IndexOptions()
    progress: Progress = field(default_factory=Progress)
    files: list[AudioFile] | None = None  # the walk of roots, when the caller has just made it
    skipped: list[Skipped] = field(default_factory=list)  # what that walk could not take
    plan: Plan | None = None
    summary: Summary = field(default_factory=Summary)
    started: float = field(default_factory=time.perf_counter)
