"""Golden regression: preprocessing and the shipped model must not drift (regenerate with make_golden.py)."""

from __future__ import annotations

import numpy as np
import pytest

from audiosim.shared.audio import read_clip
from audiosim.shared.encoder import Encoder
from audiosim.shared.features import MEL_BLOCK, MelSpec, hop_length, mel_image
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
    many = np.concatenate([clips] * (MEL_BLOCK + 1))  # more clips than one STFT block
    np.testing.assert_array_equal(encoder.images(many), np.concatenate([encoder.images(c[None]) for c in many]))


@pytest.mark.parametrize("spec", [MelSpec(), MelSpec(n_mels=128, frames=128, n_fft=2048), MelSpec(n_mels=96, fmin=40)])
def test_mel_image_matches_librosa(spec):
    """Our numpy STFT and filterbank give librosa's mel spectrogram (librosa itself stays off the hot path)."""
    import librosa

    from audiosim.shared.features import hop_length, mel_basis

    sr = 22050
    np.testing.assert_allclose(
        mel_basis(sr, spec.n_fft, spec.n_mels, spec.fmin),
        librosa.filters.mel(sr=sr, n_fft=spec.n_fft, n_mels=spec.n_mels, fmin=spec.fmin, dtype=np.float32),
        atol=1e-7,
    )
    clip = read_clip(AUDIO / "good" / "stereo_44k_24bit.wav").samples
    ref = librosa.feature.melspectrogram(
        y=clip,
        sr=sr,
        n_fft=spec.n_fft,
        hop_length=hop_length(len(clip), spec.frames),
        n_mels=spec.n_mels,
        fmin=spec.fmin,
        center=True,
        pad_mode="constant",
    )[:, : spec.frames]
    db = librosa.power_to_db(ref, ref=np.max, top_db=spec.top_db, amin=1e-10)
    expected = (db + spec.top_db) / spec.top_db
    np.testing.assert_allclose(mel_image(clip, sample_rate=sr, spec=spec), expected, atol=1e-4)


def test_scale_with_a_break_frequency():
    """break_hz spaces the bands evenly on ln(1 + f / break_hz): at 700 Hz that is HTK's mel, as librosa has it;
    at 200 Hz the low end gets more than twice Slaney's bands, none of them empty."""
    import librosa

    from audiosim.shared.features import _band_edges, mel_basis

    sr = 22050
    np.testing.assert_allclose(
        mel_basis(sr, 2048, 64, 20.0, 700.0),
        librosa.filters.mel(sr=sr, n_fft=2048, n_mels=64, fmin=20.0, htk=True, dtype=np.float32),
        atol=1e-7,
    )
    low = _band_edges(20.0, sr / 2, 66, 200.0)[1:-1]  # (64,) band centres in Hz
    assert np.allclose(np.diff(np.log1p(low / 200.0)), np.log1p(low[1] / 200.0) - np.log1p(low[0] / 200.0))
    slaney = _band_edges(20.0, sr / 2, 66, 0.0)[1:-1]
    assert (low < 300).sum() >= 2 * (slaney < 300).sum()
    assert (mel_basis(sr, 1024, 64, 20.0, 200.0).sum(axis=1) > 0).all()


def test_mel_recipe_dict_keeps_older_recipes_identities(encoder):
    """A recipe on Slaney's scale writes the dict it wrote before break_hz existed, so the identities stored with
    existing collections still match; one with a break frequency keeps it through the dict, the checkpoint and the
    export: the shipped model (v28) reads its images at 200 Hz."""
    assert "break_hz" not in MelSpec().to_dict() and MelSpec(**MelSpec().to_dict()) == MelSpec()
    spec = MelSpec(break_hz=200.0)
    assert MelSpec(**spec.to_dict()) == spec
    assert encoder.identity.mel == spec.to_dict() and encoder.mel_spec == spec


def test_search_and_index_paths_do_not_import_librosa():
    import subprocess
    import sys

    code = (
        "import sys, numpy as np; from audiosim.shared.encoder import Encoder;"
        "from audiosim.shared.settings import SHIPPED_MODEL;"
        "from audiosim.searcher.cli import app; from audiosim.indexer.stages import run_index;"
        "Encoder(SHIPPED_MODEL).embed(np.random.rand(2, 44100).astype('float32'));"
        "print(sorted(m for m in ('librosa', 'scipy', 'numba', 'torch') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
