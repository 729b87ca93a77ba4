"""Encoder cost per clip: the shipped model against one network of its recipe, in the same run.

    python -m benchmarks.encoder [--models A.onnx B.onnx ...] [--clips 2048] [--repeats 7]

ONNX Runtime, one thread (as in each indexing worker), batches of 32 images; the models take turns within each
repeat, so a busy moment of the machine falls on all of them. The cost of a convolution does not depend on what
the image shows, so the images are random. Default models: the shipped one and, when it is an ensemble, its
first member exported on its own (needs torch), which is the network the previous default shipped. Prints the
median ms per clip and each model's ratio to the first.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import numpy as np  # noqa: E402

from audiosim.shared.encoder import Encoder  # noqa: E402
from audiosim.shared.settings import SHIPPED_MODEL  # noqa: E402


def default_models(tmp: Path) -> list[Path]:
    members = Encoder(SHIPPED_MODEL).members
    if not members:
        return [SHIPPED_MODEL]
    from audiosim.shared.checkpoint import export

    one = export(SHIPPED_MODEL.parent / members[0]["file"], tmp / "member.onnx")
    return [one, SHIPPED_MODEL]


def ms_per_clip(encoder: Encoder, images: np.ndarray) -> float:
    t0 = time.perf_counter()
    for i in range(0, len(images), 32):
        encoder.embed_images(images[i : i + 32])
    return (time.perf_counter() - t0) * 1000 / len(images)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", type=Path, nargs="+", help="ONNX models (default: see above)")
    ap.add_argument("--clips", type=int, default=2048)
    ap.add_argument("--repeats", type=int, default=7)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        paths = args.models or default_models(Path(tmp))
        encoders = [Encoder(p, threads=1) for p in paths]
        shape = (encoders[0].mel_spec.n_mels, encoders[0].mel_spec.frames)
        images = np.random.default_rng(0).random((args.clips, *shape), dtype=np.float32)  # (N, n_mels, frames)
        for enc in encoders:
            ms_per_clip(enc, images[:256])  # warm up
        times: list[list[float]] = [[] for _ in encoders]
        for _ in range(args.repeats):
            for enc, t in zip(encoders, times, strict=True):
                t.append(ms_per_clip(enc, images))
    first = statistics.median(times[0])
    print(f"encoder, ms per clip (median of {args.repeats}; one thread, batches of 32, {args.clips} clips)")
    for path, enc, t in zip(paths, encoders, times, strict=True):
        med = statistics.median(t)
        kind = f"ensemble of {len(enc.members)}" if enc.members else "one network"
        print(f"  {path.name:24s} {kind:15s} {enc.dim:5d}-d  {med:.3f} ms  (min {min(t):.3f})  x{med / first:.2f}")


if __name__ == "__main__":
    main()
