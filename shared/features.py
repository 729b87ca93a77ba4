"""The mel-spectrogram image of a clip, and nothing else."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from functools import lru_cache

import numpy as np


@dataclass(frozen=True)
class MelSpec:
    """Shape and scale of the mel image; stored in every checkpoint so training and indexing agree."""

    n_mels: int = 64
    frames: int = 64
    n_fft: int = 1024
    fmin: float = 20.0
    top_db: float = 80.0

    def to_dict(self) -> dict[str, float | int]:
        return asdict(self)


def hop_length(n_samples: int, frames: int) -> int:
    """The hop that spreads n_samples over exactly `frames` centred STFT frames (1 + n // hop >= frames)."""
    return max(1, n_samples // (frames - 1))


@lru_cache(maxsize=8)
def _mel_basis(sample_rate: int, n_fft: int, n_mels: int, fmin: float) -> np.ndarray:
    import librosa

    return librosa.filters.mel(sr=sample_rate, n_fft=n_fft, n_mels=n_mels, fmin=fmin, dtype=np.float32)


def mel_images(clips: np.ndarray, *, sample_rate: int, spec: MelSpec) -> np.ndarray:
    """(B, n_samples) float32 clips -> (B, n_mels, frames) float32 images in [0, 1].

    Power mel spectrogram in dB relative to each clip's own peak, floored at -top_db, scaled to [0, 1]:
    loudness does not change the image, only the shape of the sound does.
    """
    import librosa

    clips = np.atleast_2d(clips).astype(np.float32, copy=False)
    hop = hop_length(clips.shape[-1], spec.frames)
    stft = librosa.stft(clips, n_fft=spec.n_fft, hop_length=hop, center=True, pad_mode="constant")
    power = np.abs(stft[..., : spec.frames]) ** 2  # (B, 1 + n_fft // 2, frames)
    mel = np.einsum("mf,bft->bmt", _mel_basis(sample_rate, spec.n_fft, spec.n_mels, spec.fmin), power)
    ref = np.maximum(mel.max(axis=(1, 2), keepdims=True), 1e-10)
    db = 10.0 * np.log10(np.maximum(mel, 1e-10) / ref)  # (B, n_mels, frames), <= 0
    return ((np.maximum(db, -spec.top_db) + spec.top_db) / spec.top_db).astype(np.float32)


def mel_image(clip: np.ndarray, *, sample_rate: int, spec: MelSpec) -> np.ndarray:
    """(n_samples,) clip -> (n_mels, frames) image."""
    return mel_images(clip[None, :], sample_rate=sample_rate, spec=spec)[0]
