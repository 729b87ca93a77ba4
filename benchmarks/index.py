"""Indexing speed: our pipeline against its floor and against the owner's original way, on the same files.

    python -m benchmarks.index [FOLDER]      (default: the bundled samples; the development corpus is the
                                             real target: ../shared/corpus/build.sh /tmp/corpus)

(a) floor: decode the first 2 s and make the mel image, one single-threaded process per core, nothing else;
(b) `audiosim-index run` into a fresh embedded store, end to end (process start, model load, workers), and its
    steady rate once the workers are up;
(c) the owner's way: librosa.load(sr=22050, duration=2), the mel image and the encoder one clip at a time.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import numpy as np  # noqa: E402

from shared.audio import ClipSpec, read_clip, walk_audio  # noqa: E402
from shared.errors import DecodeError  # noqa: E402
from shared.features import MelSpec, mel_images  # noqa: E402
from shared.settings import SHIPPED_MODEL  # noqa: E402

REPO = Path(__file__).resolve().parent.parent


def _floor_chunk(paths: list[str]) -> int:
    spec, mel = ClipSpec(), MelSpec()
    done = 0
    for p in paths:
        try:
            clip = read_clip(Path(p), spec).samples
        except DecodeError:
            continue
        mel_images(clip[None], sample_rate=spec.sample_rate, spec=mel)
        done += 1
    return done


def floor(paths: list[str], workers: int) -> float:
    chunks = [paths[i : i + 16] for i in range(0, len(paths), 16)]
    with ProcessPoolExecutor(workers, mp_context=get_context("spawn")) as pool:
        list(pool.map(_floor_chunk, chunks[: workers * 2]))  # warm up: imports and the first mel
        t0 = time.perf_counter()
        list(pool.map(_floor_chunk, chunks))
        return len(paths) / (time.perf_counter() - t0)


def full_run(folder: Path) -> tuple[float, float]:
    """(end-to-end files/s, steady files/s reported by the run)."""
    with tempfile.TemporaryDirectory() as store:
        env = {**os.environ, "AUDIOSIM_STORE": store, "AUDIOSIM_COLLECTION": "bench"}
        env.pop("AUDIOSIM_QDRANT_URL", None)
        cmd = [
            str(Path(sys.executable).parent / "audiosim-index"),
            "--quiet",
            "run",
            str(folder),
            "--workers",
            str(os.cpu_count() or 1),
        ]
        t0 = time.perf_counter()
        out = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
        wall = time.perf_counter() - t0
    if out.returncode not in (0, 3):
        raise SystemExit(f"audiosim-index failed: {out.stderr.strip()}")
    line = next(x for x in out.stdout.splitlines() if x.startswith("done"))
    indexed = int(line.split(":")[1].split()[0])
    steady = next(x for x in out.stdout.splitlines() if x.startswith("steady rate"))
    return indexed / wall, float(steady.split()[2])


def owners_way(paths: list[str]) -> float:
    import librosa
    import torch

    from shared.encoder import Encoder

    enc = Encoder(SHIPPED_MODEL)
    torch.set_num_threads(1)
    t0 = time.perf_counter()
    for p in paths:
        try:
            y, _ = librosa.load(p, sr=22050, duration=2.0)
        except Exception:
            continue
        y = np.pad(y, (0, max(0, 44100 - len(y))))
        enc.embed_images(enc.images(y[None]))
    return len(paths) / (time.perf_counter() - t0)


def main() -> None:
    folder = Path(sys.argv[1]) if len(sys.argv) > 1 else REPO / "samples"
    paths = [str(f.path) for f in walk_audio([folder])]
    workers = os.cpu_count() or 1
    print(f"{len(paths)} files under {folder}, {workers} cores")
    a = floor(paths, workers)
    print(f"(a) floor: decode + mel, {workers} processes      {a:8.1f} files/s")
    b_wall, b_steady = full_run(folder)
    print(f"(b) audiosim-index run, end to end           {b_wall:8.1f} files/s")
    print(f"    its own rate, after start-up             {b_steady:8.1f} files/s")
    sample = paths[: min(len(paths), 300)]
    c = owners_way(sample)
    print(f"(c) owner's way, one clip at a time ({len(sample)} files) {c:8.1f} files/s")
    print(
        f"ratios: (b)/(a) end to end {b_wall / a:.2f}, steady {b_steady / a:.2f};  (b)/(c) end to end "
        f"{b_wall / c:.1f}x, steady {b_steady / c:.1f}x"
    )


if __name__ == "__main__":
    main()
