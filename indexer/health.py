"""`audiosim-index check`: a read-only look at the collection's health."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

from audiosim.shared.payload import file_path
from audiosim.shared.store import Store
from audiosim.shared.store.base import usable


@dataclass
class Health:
    model: str
    count: int  # what the engine counts
    records: int  # what a full scroll returns
    without_vector: list[str] = field(default_factory=list)  # paths of points whose vector is missing or zero
    digest: str = ""  # sha256 of the sorted point ids: two stores with the same points give the same digest

    @property
    def problems(self) -> list[str]:
        out = []
        if self.count != self.records:
            out.append(f"the engine counts {self.count} points but {self.records} can be read")
        if self.without_vector:
            out.append(f"{len(self.without_vector)} points have no usable vector")
        return out


def check_collection(store: Store) -> Health:
    """Counts, points without a usable vector and a digest of the ids; raises StoreError when the store does
    not open or its metadata is damaged."""
    model = store.model()
    count = store.count()
    ids, bad = [], []
    for r in store.scroll(["path", "path_bytes"], with_vector=True):
        ids.append(r.id)
        if not usable(r.vector):
            bad.append(str(file_path(r.payload)))
    digest = hashlib.sha256("\n".join(sorted(ids)).encode()).hexdigest()[:16]
    return Health(f"{model.name} ({model.digest}, {model.dim}-d)", count, len(ids), bad, digest)
