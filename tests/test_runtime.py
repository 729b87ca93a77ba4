"""Inference on ONNX Runtime: the same numbers as torch, and torch never loaded to index or search."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np

from audiosim.shared.audio import read_clips, walk_audio
from audiosim.shared.encoder import Encoder
from tests.conftest import AUDIO, SAMPLES, backend_env, shipped_checkpoints, torch_outputs

BIN = Path(sys.executable).parent


def test_runtime_and_torch_give_the_same_vectors_and_classes(model_path):
    encoder = Encoder(model_path)
    clips, _ = read_clips(list(walk_audio([SAMPLES])), encoder.clip_spec)
    images = encoder.images(np.stack([c.samples for _, c in clips]))  # (46, n_mels, frames)
    out = encoder.run_images(images)
    vectors, probs = torch_outputs(shipped_checkpoints(), images)
    np.testing.assert_allclose(out.vectors, vectors, atol=1e-5)
    assert out.probs is not None
    np.testing.assert_allclose(out.probs, probs, atol=1e-5)
    assert encoder.classes and len(encoder.classes) == out.probs.shape[1]


def test_index_and_file_search_never_import_torch(tmp_path):
    """Every process (the CLI and its spawned workers) reports its imports to the same stderr."""
    env = {**os.environ, **backend_env("edge", tmp_path), "AUDIOSIM_WORKERS": "2", "PYTHONPROFILEIMPORTTIME": "1"}
    run = subprocess.run(
        [str(BIN / "audiosim-index"), "run", str(SAMPLES)], env=env, capture_output=True, text=True, timeout=300
    )
    assert run.returncode == 0, run.stderr[-800:]
    outside = tmp_path / "query.wav"
    shutil.copy(AUDIO / "good" / "stereo_44k_24bit.wav", outside)
    search = subprocess.run(
        [str(BIN / "audiosim-search"), "file", str(outside), "-k", "3", "-f", "paths"],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert search.returncode == 0, search.stderr[-800:]
    assert len(search.stdout.splitlines()) == 3
    for proc in (run, search):
        imported = {line.split("|")[-1].strip().split(".")[0] for line in proc.stderr.splitlines() if "|" in line}
        assert "onnxruntime" in imported
        assert "torch" not in imported
    # two workers and the parent each loaded the runtime
    assert sum(line.rstrip().endswith("| onnxruntime") for line in run.stderr.splitlines()) == 3


def test_a_checkpoint_without_torch_is_a_clear_message(tmp_path, model_path):
    """A light install (no torch) named a `.pt` with no up-to-date export beside it: say how to convert it."""
    ckpt = tmp_path / "mine.pt"
    shutil.copy(shipped_checkpoints()[0], ckpt)
    code = (
        "import sys; sys.modules['torch'] = None; from pathlib import Path; "
        "from audiosim.shared.encoder import Encoder; from audiosim.shared.errors import ModelError\n"
        f"try: Encoder(Path({str(ckpt)!r}))\nexcept ModelError as e: print(e)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert "audiosim-index export" in out.stdout and "audiosim[train]" in out.stdout, out.stderr[-500:]
    # with torch, the same checkpoint is exported beside itself on first use, and then reused as it is
    first = Encoder(ckpt)
    from audiosim.shared.checkpoint import load_checkpoint, weights_digest

    assert first.file == ckpt.with_suffix(".onnx")
    assert first.identity.digest == weights_digest(load_checkpoint(ckpt)["state_dict"])
    stamp = ckpt.with_suffix(".onnx").stat().st_mtime_ns
    Encoder(ckpt)
    assert ckpt.with_suffix(".onnx").stat().st_mtime_ns == stamp
