"""The sound map: a 2-D position for every point, from its vector, cached beside the collection.

The first layout of a collection runs t-SNE (openTSNE, FFT-accelerated) on the unit vectors (cosine); later
calls keep every cached position and place only the points added since, each at the similarity-weighted mean
of its nearest already placed neighbours, so an index run does not move what the user has learnt to find.
Points no longer in the collection are dropped. When more than a third of the map is new, it is laid out again
from scratch. The choice of t-SNE (quality and time at 1k to 100k points, beside UMAP and PCA) is measured in
`benchmarks/serve.py`: at 100k points it keeps more neighbours together than UMAP and needs no numba
compilation in a fresh process.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from audiosim.shared.errors import ConfigError

log = logging.getLogger(__name__)

NEIGHBOURS = 8  # placing a new point: how many placed neighbours it is averaged over
RELAYOUT_SHARE = 1 / 3  # more new points than this share of the map: lay it all out again
LAYOUT_VERSION = 1


@dataclass
class Layout:
    ids: list[str]
    xy: np.ndarray  # (N, 2) float32, scaled to [-1, 1] on the longer axis
    digest: str  # the model identity the vectors came from
    seconds: float = 0.0  # how long the last computation took
    method: str = "tsne"


def fit(vectors: np.ndarray, method: str = "tsne", seed: int = 0) -> np.ndarray:
    """(N, D) unit vectors -> (N, 2) float32 positions in [-1, 1]."""
    n = len(vectors)
    if n == 0:
        return np.zeros((0, 2), np.float32)
    if n < 16 or method == "pca":
        xy = _pca(vectors)
    elif method == "umap":
        try:
            import umap  # numba-compiled; imported only when a map is computed
        except ImportError:
            raise ConfigError("--layout umap needs umap-learn: pip install umap-learn") from None

        reducer = umap.UMAP(
            n_neighbors=min(15, n - 1), min_dist=0.1, metric="cosine", random_state=seed, low_memory=True
        )
        xy = np.asarray(reducer.fit_transform(vectors))
    elif method == "tsne":
        from openTSNE import TSNE

        xy = np.asarray(TSNE(metric="cosine", random_state=seed, n_jobs=2, verbose=False).fit(vectors))
    else:
        raise ValueError(f"unknown layout method {method!r}")
    return _normalise(xy)


def _pca(vectors: np.ndarray) -> np.ndarray:
    centred = vectors - vectors.mean(axis=0)
    if len(vectors) < 2:
        return np.zeros((len(vectors), 2), np.float32)
    _, _, vt = np.linalg.svd(centred[:20000], full_matrices=False)
    out = centred @ vt[:2].T
    return out if out.shape[1] == 2 else np.pad(out, ((0, 0), (0, 2 - out.shape[1])))


def _normalise(xy: np.ndarray) -> np.ndarray:
    xy = xy - (xy.max(axis=0) + xy.min(axis=0)) / 2
    span = float(np.abs(xy).max()) or 1.0
    return (xy / span).astype(np.float32)


def place_new(placed: np.ndarray, placed_xy: np.ndarray, new: np.ndarray) -> np.ndarray:
    """(M, D) new unit vectors -> (M, 2): the similarity-weighted mean position of each one's NEIGHBOURS
    most similar placed points (placed: (N, D) unit vectors at placed_xy (N, 2))."""
    out = np.empty((len(new), 2), np.float32)
    k = min(NEIGHBOURS, len(placed))
    for start in range(0, len(new), 1024):
        sims = new[start : start + 1024] @ placed.T  # (b, N)
        top = np.argpartition(-sims, k - 1, axis=1)[:, :k]  # (b, k)
        w = np.maximum(np.take_along_axis(sims, top, axis=1), 0) + 1e-6  # (b, k)
        out[start : start + 1024] = (placed_xy[top] * w[..., None]).sum(axis=1) / w.sum(axis=1, keepdims=True)
    return out


def load(path: Path) -> Layout | None:
    try:
        with np.load(path, allow_pickle=False) as z:
            meta = json.loads(str(z["meta"]))
            if meta.get("version") != LAYOUT_VERSION:
                return None
            return Layout(list(z["ids"]), z["xy"].astype(np.float32), meta["digest"], meta["seconds"], meta["method"])
    except (OSError, ValueError, KeyError):
        return None  # no cache, or one this version cannot read: it is computed again


def save(layout: Layout, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    meta = {"version": LAYOUT_VERSION, "digest": layout.digest, "seconds": layout.seconds, "method": layout.method}
    tmp = path.with_name(path.name + ".tmp.npz")
    np.savez(tmp, ids=np.array(layout.ids), xy=layout.xy, meta=np.array(json.dumps(meta)))
    tmp.replace(path)


def update(
    cached: Layout | None,
    ids: list[str],
    vectors: np.ndarray,
    digest: str,
    *,
    method: str = "tsne",
    say: Callable[[str], None] = lambda m: None,
) -> Layout:
    """The layout of exactly these points (ids, (N, D) unit vectors), reusing the cached one where it can."""
    t0 = time.perf_counter()
    if cached is not None and cached.digest == digest and cached.method == method:
        where = {i: k for k, i in enumerate(cached.ids)}
        known = np.array([i in where for i in ids], dtype=bool)
        if known.all() and len(ids) == len(cached.ids):
            return cached
        n_new = int((~known).sum())
        if known.any() and n_new <= RELAYOUT_SHARE * len(ids):
            xy = np.empty((len(ids), 2), np.float32)
            xy[known] = cached.xy[[where[i] for i, k in zip(ids, known, strict=True) if k]]
            if n_new:
                say(f"placing {n_new} new points on the map")
                xy[~known] = place_new(vectors[known], xy[known], vectors[~known])
            return Layout(ids, xy, digest, time.perf_counter() - t0, method)
    say(f"laying out {len(ids)} points ({method}); this is done once and cached")
    xy = fit(vectors, method)
    return Layout(ids, xy, digest, time.perf_counter() - t0, method)
