"""Decoding real files: formats, rates, channels, lengths, bad files, and the folder walk."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from audiosim.shared.audio import ClipSpec, read_clip, walk_audio
from audiosim.shared.errors import DecodeError
from tests.conftest import AUDIO

SPEC = ClipSpec()


@pytest.mark.parametrize("name", sorted(p.name for p in (AUDIO / "good").iterdir()))
def test_good_files_give_exact_length_mono_clips(name):
    clip = read_clip(AUDIO / "good" / name, SPEC)
    assert clip.samples.shape == (SPEC.n_samples,)
    assert clip.samples.dtype == np.float32
    assert np.abs(clip.samples).max() > 0.01


def test_header_facts_of_the_whole_file():
    clip = read_clip(AUDIO / "good" / "stereo_44k_24bit.wav", SPEC)
    assert (clip.info.sample_rate, clip.info.channels) == (44100, 2)
    assert clip.info.duration == pytest.approx(1.5)
    # 1.5 s of sound, then zero padding up to 2 s
    assert np.abs(clip.samples[int(1.6 * SPEC.sample_rate) :]).max() == 0.0


def test_resampling_keeps_the_pitch(tmp_path):
    sr, f = 44100, 1000.0
    t = np.arange(sr * 2) / sr
    sf.write(tmp_path / "sine.flac", 0.5 * np.sin(2 * np.pi * f * t), sr)
    clip = read_clip(tmp_path / "sine.flac", SPEC).samples
    spectrum = np.abs(np.fft.rfft(clip))
    peak_hz = np.argmax(spectrum) * SPEC.sample_rate / len(clip)
    assert peak_hz == pytest.approx(f, abs=2)


def test_long_file_reads_only_the_clip_and_offset_works(tmp_path):
    sr = 8000
    seconds = 600  # ten minutes; only the first 2 s (or 2 s from the offset) are read
    ramp = np.repeat(np.arange(seconds, dtype=np.float32) / seconds, sr) * 0.9 + 0.05
    sf.write(tmp_path / "long.wav", ramp, sr, subtype="FLOAT")
    head = read_clip(tmp_path / "long.wav", SPEC)
    assert head.info.duration == pytest.approx(seconds)
    assert head.samples[100] == pytest.approx(0.05, abs=1e-3)
    later = read_clip(tmp_path / "long.wav", ClipSpec(offset=300.0))
    assert later.samples[100] == pytest.approx(0.05 + 0.9 * 300 / seconds, abs=1e-3)
    with pytest.raises(DecodeError, match="shorter than the offset"):
        read_clip(tmp_path / "long.wav", ClipSpec(offset=700.0))


def test_clip_parameters():
    clip = read_clip(AUDIO / "good" / "mono_float.wav", ClipSpec(sample_rate=16000, seconds=0.5))
    assert clip.samples.shape == (8000,)


def test_very_short_clip_is_a_warning():
    clip = read_clip(AUDIO / "good" / "ten_ms.wav", SPEC)
    assert clip.warning and "very short" in clip.warning


@pytest.mark.parametrize(
    ("name", "reason"),
    [
        ("empty.wav", "empty file"),
        ("not_audio.flac", "not audio"),
        ("garbage.mp3", "not audio"),
        ("truncated.wav", "cannot decode"),
        ("silent.wav", "silent"),
    ],
)
def test_broken_files_raise_with_a_reason(name, reason):
    with pytest.raises(DecodeError, match=reason):
        read_clip(AUDIO / "broken" / name, SPEC)


def test_walk_skips_hidden_and_non_audio_and_survives_link_loops(tmp_path):
    root = tmp_path / "lib"
    (root / "Kicks").mkdir(parents=True)
    (root / ".cache").mkdir()
    for p in [root / "Kicks" / "a.wav", root / "b.FLAC", root / ".cache" / "c.wav", root / ".d.wav"]:
        p.write_bytes(b"x")
    (root / "readme.txt").write_text("x")
    os.symlink(root, root / "Kicks" / "loop")  # a link back up the tree
    os.symlink(root / "missing.wav", root / "dangling.wav")
    found = [f.path.relative_to(root).as_posix() for f in walk_audio([root])]
    assert found == ["b.FLAC", "Kicks/a.wav"]
    assert all(f.root == root for f in walk_audio([root]))
    single = list(walk_audio([root / "b.FLAC"]))
    assert [f.path.name for f in single] == ["b.FLAC"]


def test_walk_sees_size_and_mtime(tmp_path):
    p = tmp_path / "x.wav"
    p.write_bytes(b"12345")
    [f] = walk_audio([tmp_path])
    assert (f.size, f.mtime_ns) == (5, p.stat().st_mtime_ns)
    assert isinstance(f.path, Path) and f.path.is_absolute()


def _hit_after(tmp_path: Path, gap: float, sr: int = 44100) -> Path:
    """A decaying 440 Hz hit after `gap` seconds of near-silence (a little hiss, as real files have)."""
    t = np.arange(int(sr * 1.0)) / sr
    hit = np.sin(2 * np.pi * 440 * t) * np.exp(-t / 0.2)
    hiss = np.random.default_rng(0).standard_normal(int(sr * gap)) * 1e-4
    path = tmp_path / f"gap{gap}.wav"
    sf.write(path, np.concatenate([hiss, hit]).astype(np.float32), sr)
    return path


def test_an_onset_aligned_clip_skips_leading_silence(tmp_path):
    onset = ClipSpec(start="onset")
    with_gap = read_clip(_hit_after(tmp_path, 0.5), onset).samples
    without = read_clip(_hit_after(tmp_path, 0.0), onset).samples
    lead = round(0.002 * onset.sample_rate)  # kept before the first sound

    def first_sound(x: np.ndarray) -> int:
        return int(np.flatnonzero(np.abs(x) > 0.01)[0])

    assert abs(first_sound(with_gap) - lead) <= 2 and first_sound(without) <= 2
    assert np.abs(with_gap).max() == pytest.approx(np.abs(without).max(), rel=0.02)
    from_file = read_clip(_hit_after(tmp_path, 0.5), SPEC).samples
    assert np.abs(from_file[: round(0.45 * SPEC.sample_rate)]).max() < 1e-3  # the default keeps the file's start


def test_an_onset_is_looked_for_in_the_first_second_only(tmp_path):
    clip = read_clip(_hit_after(tmp_path, 1.5), ClipSpec(start="onset")).samples
    sound = np.flatnonzero(np.abs(clip) > 0.01)[0] / 22050
    assert sound == pytest.approx(0.5, abs=0.01)  # skipped 1 s (less the 2 ms lead) of the 1.5 s gap
    with pytest.raises(ValueError, match="clip start"):
        ClipSpec(start="peak")
