"""Golden regression: preprocessing and the shipped model must not drift (regenerate with make_golden.py)."""

from __future__ import annotations

import numpy as np
import pytest

from shared.audio import read_clip
from shared.encoder import Encoder
from shared.features import MelSpec, hop_length, mel_image
from tests.conftest import AUDIO, FIXTURES


@pytest.fixture(scope="module")
def golden():
    return np.load(FIXTURES / "golden.npz")


@pytest.fixture(scope="module")
def encoder(model_path):
    return Encoder(model_path)


def test_golden_clips_images_and_embeddings(golden, encoder):
    assert str(golden["digest"]) == encoder.identity.digest, "shipped model changed: run make_golden.py"
    clips = np.stack([read_clip(AUDIO / "good" / n, encoder.clip_spec).samples for n in golden["names"]])
    np.testing.assert_allclose(clips[:, :2048], golden["clip_heads"], atol=1e-6)
    np.testing.assert_allclose(np.sqrt((clips**2).mean(axis=1)), golden["clip_rms"], rtol=1e-5)
    images = encoder.images(clips)
    assert images.shape == golden["images"].shape
    np.testing.assert_allclose(images, golden["images"], atol=1e-5)
    np.testing.assert_allclose(encoder.embed(clips), golden["embeddings"], atol=1e-5)


def test_image_spans_the_whole_width():
    spec = MelSpec(n_mels=32, frames=64)
    sr, n = 22050, 44100
    assert 1 + n // hop_length(n, spec.frames) >= spec.frames
    noise = np.random.default_rng(0).standard_normal(n).astype(np.float32)
    img = mel_image(noise, sample_rate=sr, spec=spec)
    assert img.shape == (32, 64)
    assert img.min() >= 0.0 and img.max() == pytest.approx(1.0)
    # steady noise fills every column, the last one included: no part of the image is unused padding
    assert img.mean(axis=0).min() > 0.5


def test_image_ignores_loudness():
    spec = MelSpec()
    clip = read_clip(AUDIO / "good" / "stereo_44k_24bit.wav").samples
    a = mel_image(clip, sample_rate=22050, spec=spec)
    b = mel_image(clip * 0.1, sample_rate=22050, spec=spec)
    np.testing.assert_allclose(a, b, atol=1e-5)


def test_embeddings_are_unit_vectors_and_batch_independent(encoder):
    clips = np.stack([read_clip(p, encoder.clip_spec).samples for p in sorted((AUDIO / "good").iterdir())])
    batch = encoder.embed(clips)
    assert batch.shape == (len(clips), encoder.dim)
    np.testing.assert_allclose(np.linalg.norm(batch, axis=1), 1.0, atol=1e-5)
    one_by_one = np.concatenate([encoder.embed(c[None]) for c in clips])
    np.testing.assert_allclose(batch, one_by_one, atol=1e-5)
