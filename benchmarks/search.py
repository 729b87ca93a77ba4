"""Search latency: cold CLI starts and filtered queries, embedded store against qdrant-client's local mode.

    python -m benchmarks.search [N]     (default 100000 synthetic points)

Prints the cold wall time of `audiosim-search id` and `audiosim-search file` on an N-point embedded collection
beside a bare `python -c pass`, and the same filtered query through qdrant-edge and qdrant-client local mode.
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from audiosim.shared.encoder import Encoder
from audiosim.shared.filters import parse_filters
from audiosim.shared.identity import ModelIdentity
from audiosim.shared.settings import SHIPPED_MODEL
from audiosim.shared.store import Store, point_id
from audiosim.shared.store.base import Page
from audiosim.shared.store.edge import EdgeStore
from audiosim.shared.store.server import LocalStore

REPO = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent


def synthetic(n: int, dim: int, rng: np.random.Generator) -> tuple[np.ndarray, list[str], list[dict]]:
    """Low-rank vectors (like real embeddings) and sample-library payloads."""
    basis = rng.standard_normal((32, dim)).astype(np.float32)
    vectors = (rng.standard_normal((n, 32)).astype(np.float32) @ basis) + 0.1 * rng.standard_normal((n, dim)).astype(
        np.float32
    )
    kinds = ["Kicks", "Snares", "Hats", "Toms", "Cymbals", "Percussion", "Bass", "Keys", "Pads", "FX"]
    paths, payloads = [], []
    for i in range(n):
        kind = kinds[i % len(kinds)]
        path = f"/library/Pack {i % 97}/{kind}/{kind.lower()}_{i:06d}.wav"
        paths.append(path)
        payloads.append(
            {
                "path": path,
                "name": path.rsplit("/", 1)[1],
                "folder": f"Pack {i % 97}/{kind}",
                "tags": [f"Pack {i % 97}", kind],
                "ext": "wav" if i % 3 else "flac",
                "duration": (i % 40) / 10,
                "sample_rate": 44100,
                "channels": 2,
                "size": 10_000 + i,
                "mtime": 1.7e9,
                "mtime_ns": 17 * 10**17,
                "root": "/library",
            }
        )
    return vectors, paths, payloads


def fill(store: Store, identity: ModelIdentity, vectors: np.ndarray, paths: list[str], payloads: list[dict]) -> None:
    store.ensure_collection(identity)
    for s in range(0, len(paths), 2000):
        store.upsert([point_id(p) for p in paths[s : s + 2000]], vectors[s : s + 2000], payloads[s : s + 2000])
    store.maintain()  # as `audiosim-index run` does at its end


def cold(cmd: list[str], env: dict[str, str], runs: int = 7) -> tuple[float, float]:
    """Median and best wall time of `runs` fresh processes (this shared VM is noisy: both are worth seeing)."""
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        out = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
        times.append(time.perf_counter() - t0)
        if out.returncode != 0:
            raise SystemExit(f"{' '.join(cmd)} failed: {out.stderr.strip()}")
    return statistics.median(times), min(times)


def warm_query(store: Store, q: np.ndarray, where: list[str], runs: int = 20) -> float:
    terms = parse_filters(where)
    store.query(q, Page(limit=10, terms=terms))
    t0 = time.perf_counter()
    for _ in range(runs):
        store.query(q, Page(limit=10, terms=terms))
    return (time.perf_counter() - t0) / runs


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 100_000
    identity = Encoder(SHIPPED_MODEL).identity
    rng = np.random.default_rng(0)
    vectors, paths, payloads = synthetic(n, identity.dim, rng)
    with tempfile.TemporaryDirectory() as d:
        t0 = time.perf_counter()
        edge = EdgeStore(Path(d) / "edge", "bench")
        fill(edge, identity, vectors, paths, payloads)
        edge.close()
        print(f"{n} points upserted into the embedded store in {time.perf_counter() - t0:.1f} s")
        env = {**os.environ, "AUDIOSIM_STORE": str(Path(d) / "edge"), "AUDIOSIM_COLLECTION": "bench"}
        env.pop("AUDIOSIM_QDRANT_URL", None)
        bare = cold([sys.executable, "-c", "pass"], env)
        by_id = cold([str(BIN / "audiosim-search"), "id", paths[123], "-k", "10", "-f", "jsonl"], env)
        query_file = str(REPO / "samples" / "Drums" / "Kicks" / "bd_808.flac")  # not in this collection
        by_file = cold([str(BIN / "audiosim-search"), "file", query_file, "-k", "10", "-f", "jsonl"], env)
        print("cold wall time, 7 runs                 median      best")
        for label, (median, best), target in [
            ("bare python start                    ", bare, ""),
            ("audiosim-search id   (indexed path)  ", by_id, "target < 300 ms"),
            ("audiosim-search file (unindexed file)", by_file, "target < 500 ms"),
        ]:
            print(f"{label} {median * 1000:5.0f} ms  {best * 1000:5.0f} ms   {target}")

        edge = EdgeStore(Path(d) / "edge", "bench")
        t0 = time.perf_counter()
        local = LocalStore(str(Path(d) / "local"), "bench")
        fill(local, identity, vectors, paths, payloads)
        print(f"the same points into qdrant-client local mode in {time.perf_counter() - t0:.1f} s")
        q = vectors[7]
        print("warm query latency, top 10       embedded     local mode   ratio")
        for where in ([], ["tags=Kicks"], ["folder^=Pack 3", "duration<1"], ["name~snare_00", "ext=wav"]):
            e, loc = warm_query(edge, q, where), warm_query(local, q, where, runs=3)
            label = " ".join(where) or "(no filter)"
            print(f"  {label:30s} {e * 1000:9.2f} ms {loc * 1000:10.1f} ms {loc / e:7.0f}x")
        edge.close()
        local.close()


if __name__ == "__main__":
    main()
