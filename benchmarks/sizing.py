"""The embedded store's cost per point: the payload indexes we build now against indexing every field (the
recipe before), in the same run on the same points.

    python -m benchmarks.sizing [N]     (default 100000 synthetic points with sample-library payloads)

For each recipe: upsert and maintenance time, disk per point (segments, payload indexes, write-ahead log),
the engine's cold open (what every `audiosim-search` pays), and warm filtered queries on every field.
"""

from __future__ import annotations

import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import qdrant_edge as q

from audiosim.shared.filters import parse_filters
from audiosim.shared.payload import FILTERABLE, SCHEMA
from audiosim.shared.store import point_id
from audiosim.shared.store.base import Page
from audiosim.shared.store.edge import EdgeStore

from .search import synthetic

FILTERS = (
    [],
    ["folder^=Pack 3"],
    ["folder=Pack 3/Kicks"],
    ["tags=Kicks"],
    ["ext=flac"],
    ["duration<1"],
    ["category=snare"],
    ["category_score>=0.8"],
    ["name~snare_00"],
    ["folder^=Pack 3", "duration<1"],
    ["sample_rate=48000"],
    ["channels=1"],
    ["size>100000"],
    ["path~pack 3/"],
)
# Every field a filter could name, and the helpers: what was indexed before fields had to earn an index.
EVERY_FIELD = {f.name: f.type for f in SCHEMA if f.name in FILTERABLE or f.of_payload is not None}


class EveryFieldIndexed(EdgeStore):
    """The recipe before: a payload index on every filterable field and helper."""

    indexed = EVERY_FIELD


def disk_bytes(root: Path) -> int:
    """Blocks actually used (WAL and mmap files are preallocated sparse, so their size overstates it)."""
    return sum(p.stat().st_blocks * 512 for p in root.rglob("*") if p.is_file())


def measure(store_type: type[EdgeStore], root: Path, n: int) -> dict[str, float]:
    from audiosim.shared.encoder import Encoder
    from audiosim.shared.settings import SHIPPED_MODEL

    identity = Encoder(SHIPPED_MODEL).identity
    vectors, paths, payloads = synthetic(n, identity.dim, np.random.default_rng(0))
    categories = ["kick", "snare", "hihat", "bass", "piano", "fx"]
    for i, p in enumerate(payloads):
        p["category"], p["category_score"] = categories[i % len(categories)], (i % 100) / 100
    ids = [point_id(p) for p in paths]
    store = store_type(root, "sizing")
    store.ensure_collection(identity)
    t0 = time.perf_counter()
    for s in range(0, n, 2000):
        store.upsert(ids[s : s + 2000], vectors[s : s + 2000], payloads[s : s + 2000])
    out = {"upsert s": time.perf_counter() - t0}
    t0 = time.perf_counter()
    store.maintain()
    out["maintain s"] = time.perf_counter() - t0
    indexes = len(store.indexed_fields())
    store.close()
    shard = root / "sizing" / "shard"
    segments = list((shard / "segments").iterdir())
    out |= {
        "indexes": indexes,
        "disk B/point": disk_bytes(shard) / n,
        "  payload indexes": sum(disk_bytes(s / "payload_index") for s in segments) / n,
        "  write-ahead log": disk_bytes(shard / "wal") / n,
    }
    opens = []
    for _ in range(7):
        t0 = time.perf_counter()
        q.EdgeShard.load(str(shard)).close()
        opens.append(time.perf_counter() - t0)
    out["cold open ms"] = statistics.median(opens) * 1000
    store = store_type(root, "sizing")
    for where in FILTERS:
        page = Page(limit=10, terms=parse_filters(where))
        store.query(vectors[7], page)
        t0 = time.perf_counter()
        for _ in range(5):
            store.query(vectors[7], page)
        out[f"query ms {' '.join(where) or '(no filter)'}"] = (time.perf_counter() - t0) / 5 * 1000
    store.close()
    return out


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 100_000
    results = {}
    for label, store_type in (("every field (before)", EveryFieldIndexed), ("schema (now)", EdgeStore)):
        with tempfile.TemporaryDirectory() as d:
            results[label] = measure(store_type, Path(d), n)
            print(f"measured: {label}", file=sys.stderr)
    before, now = results.values()
    print(f"{n} points{'':25s} {'every field':>12s} {'schema':>12s} {'ratio':>7s}")
    for key in before:
        ratio = now[key] / before[key] if before[key] else float("nan")
        print(f"  {key:33s} {before[key]:12.2f} {now[key]:12.2f} {ratio:7.2f}")


if __name__ == "__main__":
    main()
