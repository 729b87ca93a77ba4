"""The web app's sound map: layout time and quality, and page-ready time, at 1k, 10k and 100k points.

    python -m benchmarks.serve [--sizes 1000,10000,100000] [--tsne-up-to 10000] [--corpus DIR]

Vectors: the shipped model's embeddings of real clips (the bundled samples, or --corpus's clips), each repeated
with small noise up to the size, so neighbourhoods are as clumpy as a real library's. Per size it prints:
- layout seconds and quality for UMAP (the app's choice), PCA (the cheap baseline) and t-SNE (openTSNE, up to
  --tsne-up-to points): kNN recall@10 (how many of a point's 10 nearest neighbours in the 256-d space are also
  among its 10 nearest on the map) and same-label@10 on the map, over 1,000 sampled points;
- page-ready seconds: a real `serve` process with the map cached, Chromium loading the page until every point is
  drawn, beside the bare fetch of /api/points?compact=1 it needs (the floor), and their ratio.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import numpy as np

from audiosim.searcher import layout as maps
from audiosim.shared.audio import read_clips, walk_audio
from audiosim.shared.encoder import Encoder
from audiosim.shared.settings import SHIPPED_MODEL
from audiosim.shared.store import point_id
from audiosim.shared.store.edge import EdgeStore

REPO = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
CHROMIUM = "/usr/bin/chromium"


def real_vectors(root: Path, encoder: Encoder, limit: int = 4000) -> tuple[np.ndarray, list[str], list[str]]:
    """(M, D) unit vectors of up to `limit` clips under root, their file names and parent-folder labels."""
    files = [str(f.path) for f in walk_audio([root])]
    files = [files[i] for i in np.random.default_rng(0).permutation(len(files))[:limit]]
    clips = read_clips(files, encoder.clip_spec)[0]
    x = np.stack([c.samples for _, c in clips])  # (M, n_samples)
    v = np.concatenate([encoder.embed(x[i : i + 256]) for i in range(0, len(x), 256)])
    return v, [Path(p).name for p, _ in clips], [Path(p).parent.name for p, _ in clips]


def grow(v: np.ndarray, labels: list[str], n: int) -> tuple[np.ndarray, list[str]]:
    reps = -(-n // len(v))
    rng = np.random.default_rng(1)
    out = np.concatenate([v + (r > 0) * 0.03 * rng.standard_normal(v.shape).astype(np.float32) for r in range(reps)])
    out = out[:n] / np.linalg.norm(out[:n], axis=1, keepdims=True)
    return out.astype(np.float32), (labels * reps)[:n]


def quality(v: np.ndarray, xy: np.ndarray, labels: list[str], k: int = 10, m: int = 1000) -> tuple[float, float]:
    """(kNN recall@k between the vectors and the map, share of same-label points among the k nearest on the map)."""
    lab = np.array(labels)
    idx = np.random.default_rng(2).choice(len(v), min(m, len(v)), replace=False)
    rec, same = [], []
    for i in idx:
        sims = v @ v[i]
        sims[i] = -9
        d = ((xy - xy[i]) ** 2).sum(axis=1)
        d[i] = np.inf
        hi, lo = np.argpartition(-sims, k)[:k], np.argpartition(d, k)[:k]
        rec.append(len(set(hi) & set(lo)) / k)
        same.append(float((lab[lo] == lab[i]).mean()))
    return float(np.mean(rec)), float(np.mean(same))


def page_ready(store_dir: Path, xy: np.ndarray, ids: list[str], digest: str) -> tuple[float, float]:
    """(seconds until the page has drawn every point, seconds of the bare /api/points?compact=1 fetch)."""
    from playwright.sync_api import sync_playwright

    maps.save(maps.Layout(ids, xy, digest, 0.0, "tsne"), store_dir / "bench" / "map.npz")
    env = {**os.environ, "AUDIOSIM_STORE": str(store_dir), "AUDIOSIM_COLLECTION": "bench"}
    env.pop("AUDIOSIM_QDRANT_URL", None)
    proc = subprocess.Popen([str(BIN / "audiosim-search"), "serve", "--port", "0"], env=env,
                            stdout=subprocess.PIPE, text=True)  # fmt: skip
    try:
        assert proc.stdout is not None
        url = re.search(r"(http://\S+/)", proc.stdout.readline()).group(1)  # type: ignore[union-attr]
        urllib.request.urlopen(url + "api/points?compact=1").read()  # the map is loaded once, as a user's first visit
        t0 = time.perf_counter()
        json.loads(urllib.request.urlopen(url + "api/points?compact=1").read())
        fetch = time.perf_counter() - t0
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu"])
            page = browser.new_page(viewport={"width": 1400, "height": 900})
            t0 = time.perf_counter()
            page.goto(url)
            page.wait_for_function(f"window.audiosim.ready && window.audiosim.drawn === {len(ids)}", timeout=600_000)
            ready = time.perf_counter() - t0
            browser.close()
        return ready, fetch
    finally:
        proc.terminate()
        proc.wait()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", default="1000,10000,100000")
    ap.add_argument("--tsne-up-to", type=int, default=10000)
    ap.add_argument("--corpus", type=Path, default=REPO / "samples")
    ap.add_argument("--methods", default="pca,umap,tsne", help="pca is always run: it is the baseline")
    args = ap.parse_args()
    encoder = Encoder(SHIPPED_MODEL)
    base, names, labels = real_vectors(args.corpus, encoder)
    print(f"{len(base)} real clips from {args.corpus}; vectors grown with noise to each size\n")
    warm = base[:300]
    for method in {"pca", *args.methods.split(",")}:  # imports and numba's compilation, once per process: not timed
        maps.fit(warm, method)
    print(f"{'points':>7} {'method':6} {'layout s':>9} {'kNN recall@10':>14} {'same label@10':>14}")
    for n in [int(s) for s in args.sizes.split(",")]:
        v, lab = grow(base, labels, n)
        results = {}
        for method in ("pca", "umap", "tsne"):
            if (method == "tsne" and n > args.tsne_up_to) or method not in {"pca", *args.methods.split(",")}:
                continue
            t0 = time.perf_counter()
            xy = maps.fit(v, method)
            results[method] = (time.perf_counter() - t0, xy)
            rec, same = quality(v, xy, lab)
            print(f"{n:7d} {method:6} {results[method][0]:9.1f} {rec:14.3f} {same:14.3f}", flush=True)
        for method in ("umap", "tsne"):
            if method in results:
                ratio = results[method][0] / max(results["pca"][0], 1e-3)
                print(f"{'':7} {method}/pca layout time ratio {ratio:.0f}x")
        with tempfile.TemporaryDirectory() as d:
            store = EdgeStore(Path(d), "bench")
            store.ensure_collection(encoder.identity)
            ids, payloads = [], []
            for i in range(n):
                path = f"/library/{lab[i]}/{i:06d}_{names[i % len(names)]}"
                ids.append(point_id(path))
                payloads.append({"path": path, "name": path.rsplit("/", 1)[1], "folder": lab[i],
                                 "duration": 1.0, "ext": ".wav"})  # fmt: skip
            for s in range(0, n, 2000):
                store.upsert(ids[s : s + 2000], v[s : s + 2000], payloads[s : s + 2000])
            store.close()
            ready, fetch = page_ready(
                Path(d), results["tsne"][1] if "tsne" in results else results["pca"][1], ids, encoder.identity.digest
            )
        print(f"{'':7} page ready {ready:.2f} s (the points fetch alone {fetch:.2f} s; ratio {ready / fetch:.1f})")


if __name__ == "__main__":
    main()
