"""A model's identity, and a small cache of it keyed by the checkpoint file's bytes.

A process that needs only the identity (an unchanged re-run checking its collection's model) reads it here
instead of importing torch and loading the weights (~2 s). The cache holds derived data only: identical bytes
are an identical model, and a miss just means loading the checkpoint once more.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class ModelIdentity:
    """What made a collection's vectors; stored with the collection and compared on every use."""

    name: str
    digest: str  # sha256 of the weights, first 16 hex digits
    dim: int
    clip: dict[str, Any]
    mel: dict[str, Any]

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "digest": self.digest, "dim": self.dim, "clip": self.clip, "mel": self.mel}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ModelIdentity:
        return cls(name=d["name"], digest=d["digest"], dim=int(d["dim"]), clip=dict(d["clip"]), mel=dict(d["mel"]))


def cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "audiosim" / "models"


def _entry(checkpoint: Path) -> Path:
    h = hashlib.sha256()
    with checkpoint.open("rb") as fh:
        while block := fh.read(1 << 20):
            h.update(block)
    return cache_dir() / f"{h.hexdigest()}.json"


def cached_identity(checkpoint: Path) -> ModelIdentity | None:
    try:
        return ModelIdentity.from_dict(json.loads(_entry(checkpoint).read_text()))
    except (OSError, ValueError, KeyError, TypeError):
        return None


def remember_identity(checkpoint: Path, identity: ModelIdentity) -> None:
    """Best effort: a read-only home only costs the next run a checkpoint load."""
    try:
        entry = _entry(checkpoint)
        entry.parent.mkdir(parents=True, exist_ok=True)
        tmp = entry.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(json.dumps(identity.to_dict()))
        tmp.replace(entry)
    except OSError:
        pass
