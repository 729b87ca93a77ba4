"""Near-duplicate pairs: every two points whose cosine similarity reaches a threshold."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from audiosim.shared.filters import Term
from audiosim.shared.store import Store

BLOCK = 2048  # rows per matrix product: (BLOCK, N) similarities at a time bounds memory


@dataclass
class Pair:
    score: float
    a: dict[str, Any]  # payload, with "id"
    b: dict[str, Any]


def find_duplicates(
    store: Store,
    *,
    threshold: float = 0.98,
    terms: Sequence[Term] = (),
    same_folder: bool = False,
    limit: int | None = None,
) -> list[Pair]:
    """All pairs (a, b) with similarity >= threshold among the points the terms select, best first.

    Exact: one blocked matrix product over the unit vectors, so 100k points cost a few seconds per block row.
    """
    import numpy as np

    store.require()
    recs = list(store.scroll(["path", "name", "folder", "duration"], terms, with_vector=True))
    if len(recs) < 2:
        return []
    vectors = np.stack([r.vector for r in recs if r.vector is not None]).astype(np.float32)  # (N, D)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    folders = np.array([r.payload.get("folder", "") for r in recs])
    found: list[tuple[float, int, int]] = []
    n = len(recs)
    for start in range(0, n, BLOCK):
        sims = vectors[start : start + BLOCK] @ vectors.T  # (b, N)
        rows, cols = np.nonzero(sims >= threshold)
        rows += start
        keep = cols > rows  # each pair once, never a point with itself
        if same_folder:
            keep &= folders[rows] == folders[cols]
        found.extend((float(sims[r - start, c]), int(r), int(c)) for r, c in zip(rows[keep], cols[keep], strict=True))
    found.sort(key=lambda t: -t[0])
    if limit is not None:
        found = found[:limit]
    return [
        Pair(score, {"id": recs[i].id, **recs[i].payload}, {"id": recs[j].id, **recs[j].payload})
        for score, i, j in found
    ]
