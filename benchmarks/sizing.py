"""Disk per point of the embedded store: N synthetic points with sample-library payloads.

python -m benchmarks.sizing [N]     (default 20000)
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from audiosim.shared.identity import ModelIdentity
from audiosim.shared.store import point_id
from audiosim.shared.store.edge import EdgeStore


def disk_bytes(root: Path) -> int:
    """Blocks actually used (WAL and mmap files are preallocated sparse, so their size overstates it)."""
    return sum(p.stat().st_blocks * 512 for p in root.rglob("*") if p.is_file())


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 20000
    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory() as d:
        store = EdgeStore(Path(d), "sizing")
        store.ensure_collection(ModelIdentity(name="synthetic", digest="-", dim=256, clip={}, mel={}))
        for start in range(0, n, 1000):
            rows = range(start, min(n, start + 1000))
            paths = [f"/home/producer/Samples/Vendor Pack {i % 50}/Drums/Kicks/Kick_{i:06d}_hard.wav" for i in rows]
            payloads = [
                {
                    "path": p,
                    "name": p.rsplit("/", 1)[1],
                    "folder": p.split("Samples/")[1].rsplit("/", 1)[0],
                    "tags": p.split("Samples/")[1].split("/")[:-1],
                    "ext": "wav",
                    "duration": 0.5,
                    "sample_rate": 44100,
                    "channels": 2,
                    "size": 88244,
                    "mtime": 1.7e9 + i,
                    "mtime_ns": 1_700_000_000_000_000_000 + i,
                    "root": "/home/producer/Samples",
                }
                for i, p in zip(rows, paths, strict=True)
            ]
            store.upsert(
                [point_id(p) for p in paths], rng.standard_normal((len(paths), 256)).astype(np.float32), payloads
            )
        store.close()
        written = disk_bytes(Path(d))
        t0 = time.perf_counter()
        store.maintain()
        store.close()
        print(
            f"{n} points: {written / 1e6:.0f} MB on disk ({written / n:.0f} bytes per point), "
            f"{disk_bytes(Path(d)) / 1e6:.0f} MB after optimize ({time.perf_counter() - t0:.1f} s)"
        )


if __name__ == "__main__":
    main()
