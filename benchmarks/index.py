"""Indexing speed: our pipeline against its floor and against the owner's original way, on the same files.

    python -m benchmarks.index [FOLDER] [--copies N]   (default: the bundled samples; the development corpus is
                            the real target: ../shared/corpus/build.sh /tmp/corpus; --copies 9 hard-links it
                            nine times over, 21,879 files)
    python -m benchmarks.index --scale 1000 100000   (generated libraries: peak RSS, files/s, re-run cost)

(a) floor: the leanest decode + mel there is, one single-threaded process per core: soundfile reads only the
    frames needed, then one FFT and one matrix product per clip; nothing else (no checks, no file facts, no
    resampling: the corpus is 22,050 Hz). (a') the same work as indexing does it (read_clips: checks, info, resampling;
    mel_images in blocks), to show what the pipeline's own decode + mel costs on top of the lean floor;
(b) `audiosim-index run` into a fresh embedded store, end to end (process start, model load, workers), and its
    steady rate while files stream (without start-up and the final maintain());
(c) the owner's way: librosa.load(sr=22050, duration=2), a librosa mel image and the owner's network, one clip
    at a time in one process.
"""

from __future__ import annotations

import argparse
import functools
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import numpy as np  # noqa: E402

from audiosim.shared.audio import ClipSpec, read_clips, walk_audio  # noqa: E402
from audiosim.shared.features import MelSpec, mel_images  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
ROUNDS = 3


def _lean_chunk(paths: list[str]) -> int:
    """The lean floor: soundfile reads only the first 2 s, mono, zero-padded; then one FFT and one mel matrix
    product per clip (mel_images, in blocks of 4) at the shipped model's image size. No checks, no file facts, no
    resampling."""
    import soundfile as sf

    spec, mel = ClipSpec(), _shipped_specs()[1]
    clips = []
    for p in paths:
        try:
            y, _ = sf.read(p, frames=spec.n_samples, dtype="float32", always_2d=True)
        except Exception:
            continue
        clips.append(np.pad(y.mean(axis=1), (0, spec.n_samples - len(y))))
    if clips:
        mel_images(np.stack(clips), sample_rate=spec.sample_rate, spec=mel)
    return len(clips)


def _pipeline_chunk(paths: list[str]) -> int:
    """Decode and mel as indexing does them (read_clips with the shipped model's clip recipe, which may read
    past 2 s to find the first sound; mel_images in blocks), without the encoder."""
    spec, mel = _shipped_specs()
    clips, _ = read_clips(paths, spec)
    if clips:
        mel_images(np.stack([c.samples for _, c in clips]), sample_rate=spec.sample_rate, spec=mel)
    return len(clips)


@functools.cache
def _shipped_specs() -> tuple[ClipSpec, MelSpec]:
    from audiosim.shared.encoder import Encoder
    from audiosim.shared.settings import SHIPPED_MODEL

    encoder = Encoder(SHIPPED_MODEL)
    return encoder.clip_spec, encoder.mel_spec


def floor(paths: list[str], workers: int, chunk: Callable[[list[str]], int] = _lean_chunk) -> float:
    chunks = [paths[i : i + 32] for i in range(0, len(paths), 32)]
    with ProcessPoolExecutor(workers, mp_context=get_context("spawn")) as pool:
        list(pool.map(chunk, chunks[: workers * 2]))  # warm up: imports, the first FFT, the page cache
        t0 = time.perf_counter()
        list(pool.map(chunk, chunks))
        return len(paths) / (time.perf_counter() - t0)


def per_clip_costs(paths: list[str]) -> dict[str, float]:
    """ms per clip of each step in one single-threaded worker process: decode, mel image, encoder."""
    with ProcessPoolExecutor(1, mp_context=get_context("spawn")) as pool:
        pool.submit(_per_clip_costs, paths[:64]).result()  # warm up
        return pool.submit(_per_clip_costs, paths).result()


def _per_clip_costs(paths: list[str]) -> dict[str, float]:
    from audiosim.shared.encoder import Encoder
    from audiosim.shared.settings import SHIPPED_MODEL

    encoder = Encoder(SHIPPED_MODEL)
    t0 = time.perf_counter()
    clips, _ = read_clips(paths, encoder.clip_spec)
    t1 = time.perf_counter()
    x = np.stack([c.samples for _, c in clips])  # (N, n_samples)
    images = np.concatenate([encoder.images(x[i : i + 32]) for i in range(0, len(x), 32)])
    t2 = time.perf_counter()
    for i in range(0, len(images), 32):
        encoder.embed_images(images[i : i + 32])
    t3 = time.perf_counter()
    n = len(clips) / 1000
    return {"decode": (t1 - t0) / n, "mel": (t2 - t1) / n, "encoder": (t3 - t2) / n}


def full_run(folder: Path) -> tuple[float, float]:
    """(end-to-end files/s, steady files/s reported by the run) of `audiosim-index run` into a fresh store."""
    with tempfile.TemporaryDirectory() as store:
        wall, _, out = timed_run(folder, store)
    line = next(x for x in out.splitlines() if x.startswith("done"))
    indexed = int(line.split(":")[1].split()[0])
    steady = next(x for x in out.splitlines() if x.startswith("steady rate"))
    return indexed / wall, float(steady.split()[2])


def owners_way(paths: list[str]) -> float:
    """The owner's original loop: librosa.load, a librosa 128x128 mel image, and the owner's network (the seed
    preset: 128-64-32-16 filters at full resolution; random weights, only its cost matters here) per clip."""
    import librosa
    import torch

    from audiosim.indexer.training import PRESETS
    from audiosim.shared.model import AutoEncoder

    seed = PRESETS["seed"]
    model = AutoEncoder(seed.model_config()).eval()
    n_mels, frames, n_fft = seed.mel.n_mels, seed.mel.frames, seed.mel.n_fft
    torch.set_num_threads(1)
    t0 = time.perf_counter()
    for p in paths:
        try:
            y, _ = librosa.load(p, sr=22050, duration=2.0)
        except Exception:
            continue
        y = np.pad(y, (0, max(0, 44100 - len(y))))
        mel = librosa.feature.melspectrogram(
            y=y, sr=22050, n_fft=n_fft, hop_length=44100 // (frames - 1), n_mels=n_mels
        )[:, :frames]
        db = librosa.power_to_db(mel, ref=np.max, top_db=80.0)
        with torch.inference_mode():
            model.embed(torch.from_numpy((db + 80.0) / 80.0).float()[None, None])
    return len(paths) / (time.perf_counter() - t0)


def generate_library(root: Path, n: int) -> None:
    """n short real-format files (16-bit WAV, 0.1-0.5 s of synthesised hits) in folders of 1,000."""
    import soundfile as sf

    rng = np.random.default_rng(n)
    sr = 22050
    for i in range(n):
        folder = root / f"pack{i // 10000:02d}" / f"kit{(i // 1000) % 10}"
        if i % 1000 == 0:
            folder.mkdir(parents=True, exist_ok=True)
        t = np.arange(int(sr * rng.uniform(0.1, 0.5))) / sr
        tone = np.sin(2 * np.pi * rng.uniform(40, 4000) * t) * rng.uniform(0, 1)
        noise = rng.standard_normal(len(t)) * rng.uniform(0, 1)
        y = (tone + noise) * np.exp(-t * rng.uniform(5, 60)) * 0.3
        sf.write(folder / f"hit{i:06d}.wav", y.astype(np.float32), sr, subtype="PCM_16")


def tree_rss(pid: int) -> tuple[int, int, int]:
    """Resident bytes of a process and all its descendants, of the process alone, and of its anonymous memory
    alone (without files mapped in, such as the embedded store's segments: page cache the kernel can reclaim)."""
    total, own, anon, todo = 0, 0, 0, [pid]
    while todo:
        p = todo.pop()
        try:
            status = Path(f"/proc/{p}/status").read_text()
            fields = {x.split(":")[0]: x.split()[1] for x in status.splitlines() if x.startswith(("VmRSS", "RssAnon"))}
            rss = int(fields["VmRSS"]) * 1024
            total += rss
            if p == pid:
                own, anon = rss, int(fields.get("RssAnon", 0)) * 1024
            for task in Path(f"/proc/{p}/task").iterdir():
                todo += [int(c) for c in (task / "children").read_text().split()]
        except (OSError, KeyError):
            continue
    return total, own, anon


def timed_run(folder: Path, store: str, *options: str) -> tuple[float, tuple[int, int, int], str]:
    """(seconds, peak RSS of the whole process tree, of the parent, and of the parent's anonymous memory,
    stdout) of one `audiosim-index run` on all cores."""
    env = {**os.environ, "AUDIOSIM_STORE": store, "AUDIOSIM_COLLECTION": "bench"}
    env.pop("AUDIOSIM_QDRANT_URL", None)
    cmd = [
        str(Path(sys.executable).parent / "audiosim-index"),
        "--quiet",
        "run",
        str(folder),
        "--workers",
        str(os.cpu_count() or 1),
        *options,
    ]
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        t0 = time.perf_counter()
        proc = subprocess.Popen(cmd, env=env, stdout=out, stderr=err, text=True)
        peak, parent, anon = tree_rss(proc.pid)
        while True:
            try:
                proc.wait(timeout=0.2)
                break
            except subprocess.TimeoutExpired:
                sample = tree_rss(proc.pid)
                peak, parent, anon = max(peak, sample[0]), max(parent, sample[1]), max(anon, sample[2])
        seconds = time.perf_counter() - t0
        out.seek(0)
        err.seek(0)
        if proc.returncode not in (0, 3):
            raise SystemExit(f"audiosim-index failed: {err.read().strip()}")
        return seconds, (peak, parent, anon), out.read()


def scale(sizes: list[int]) -> None:
    for n in sizes:
        with tempfile.TemporaryDirectory() as d:
            t0 = time.perf_counter()
            generate_library(Path(d) / "lib", n)
            print(f"{n} generated files in {time.perf_counter() - t0:.0f} s")
            first, peak, out = timed_run(Path(d) / "lib", str(Path(d) / "store"), "--batch-size", "256")
            line = next(x for x in out.splitlines() if x.startswith("done"))
            print(
                f"  first run   {first:7.1f} s  {n / first:6.0f} files/s  peak RSS {peak[0] / 2**20:5.0f} MB "
                f"(parent {peak[1] / 2**20:4.0f} MB, {peak[2] / 2**20:4.0f} MB not file-backed)  | {line}"
            )
            again, peak2, out2 = timed_run(Path(d) / "lib", str(Path(d) / "store"), "--batch-size", "256")
            line2 = next(x for x in out2.splitlines() if x.startswith("done"))
            print(
                f"  re-run      {again:7.1f} s  ({again / first:.1%} of the first)  peak RSS {peak2[0] / 2**20:5.0f} MB"
                f"  | {line2}"
            )


def hard_linked_copies(folder: Path, copies: int, into: Path) -> Path:
    """`copies` copies of folder made of hard links: many distinct paths, no extra disk, the same page cache."""
    for i in range(copies):
        subprocess.run(["cp", "-al", str(folder), str(into / f"copy{i:02d}")], check=True)
    return into


def main() -> None:
    ap = argparse.ArgumentParser(
        prog="python -m benchmarks.index", description="Indexing speed against its floor and the owner's way."
    )
    ap.add_argument("folder", nargs="?", type=Path, default=REPO / "samples", help="audio to index")
    ap.add_argument("--copies", type=int, default=1, help="hard-link the folder this many times over")
    ap.add_argument("--scale", type=int, nargs="*", metavar="N", help="generated libraries of N files instead")
    args = ap.parse_args()
    if args.scale is not None:
        scale(args.scale or [1000, 100_000])
        return
    if not args.folder.is_dir():
        ap.error(f"{args.folder} is not a folder")
    with tempfile.TemporaryDirectory() as tmp:
        folder = hard_linked_copies(args.folder, args.copies, Path(tmp)) if args.copies > 1 else args.folder
        compare(folder)


def compare(folder: Path) -> None:
    paths = [str(f.path) for f in walk_audio([folder])]
    workers = os.cpu_count() or 1
    print(f"{len(paths)} files under {folder}, {workers} cores; (a), (a') and (b) alternate {ROUNDS} times")
    floors, pipes, walls, steadies = [], [], [], []
    for _ in range(ROUNDS):  # alternating spreads this shared machine's slow spells over all of them
        floors.append(floor(paths, workers))
        pipes.append(floor(paths, workers, _pipeline_chunk))
        wall, steady = full_run(folder)
        walls.append(wall)
        steadies.append(steady)
        print(
            f"  (a) {floors[-1]:7.1f}  (a') {pipes[-1]:7.1f}  (b) end to end {wall:7.1f}, steady {steady:7.1f} files/s"
        )
    a, a2, b_wall, b_steady = (statistics.median(x) for x in (floors, pipes, walls, steadies))
    print(f"(a)  lean floor: decode + FFT + matmul, {workers} processes {a:8.1f} files/s (median)")
    print(f"(a') decode + mel as indexing does them            {a2:8.1f} files/s ({a2 / a:.2f} of the floor)")
    print(f"(b)  audiosim-index run, end to end                {b_wall:8.1f} files/s")
    print(f"     while files stream (its steady rate)          {b_steady:8.1f} files/s")
    costs = per_clip_costs(paths[:2000])
    print("per clip, one process: " + ", ".join(f"{k} {v:.3f} ms" for k, v in costs.items()))
    sample = paths[: min(len(paths), 200)]
    c = owners_way(sample)
    print(f"(c) owner's way, one clip at a time ({len(sample)} files) {c:8.1f} files/s")
    print(
        f"ratios: (b)/(a) end to end {b_wall / a:.2f}, steady {b_steady / a:.2f};  (b)/(c) end to end "
        f"{b_wall / c:.1f}x, steady {b_steady / c:.1f}x"
    )


if __name__ == "__main__":
    main()
