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
    # 0: Slaney's mel scale (librosa's default), linear to 1 kHz: 5 of 64 bands below 300 Hz.
    # Otherwise the scale m = ln(1 + f / break_hz) (HTK's mel is 700 Hz): at 200, 13 bands below 300 Hz.
    break_hz: float = 0.0

    def to_dict(self) -> dict[str, float | int]:
        d = asdict(self)
        if not self.break_hz:  # recipes from before the field keep the dict, and so the identity, they had
            del d["break_hz"]
        return d


def hop_length(n_samples: int, frames: int) -> int:
    """The hop that spreads n_samples over exactly `frames` centred STFT frames (1 + n // hop >= frames)."""
    return max(1, n_samples // (frames - 1))


def _hz_to_mel(f: np.ndarray | float) -> np.ndarray:
    """Slaney's mel scale (librosa's default): linear below 1 kHz, logarithmic above."""
    f = np.asarray(f, dtype=np.float64)
    linear = f / (200.0 / 3)
    log_part = 15.0 + np.log(np.maximum(f, 1e-10) / 1000.0) / (np.log(6.4) / 27.0)
    return np.where(f >= 1000.0, log_part, linear)


def _mel_to_hz(m: np.ndarray) -> np.ndarray:
    m = np.asarray(m, dtype=np.float64)
    return np.where(m >= 15.0, 1000.0 * np.exp((np.log(6.4) / 27.0) * (m - 15.0)), m * (200.0 / 3))


def _band_edges(fmin: float, fmax: float, n: int, break_hz: float) -> np.ndarray:
    """(n,) frequencies in Hz equally spaced on the scale: Slaney's mel, or ln(1 + f / break_hz)."""
    if not break_hz:
        return _mel_to_hz(np.linspace(_hz_to_mel(fmin), _hz_to_mel(fmax), n))
    return break_hz * np.expm1(np.linspace(np.log1p(fmin / break_hz), np.log1p(fmax / break_hz), n))


@lru_cache(maxsize=8)
def mel_basis(sample_rate: int, n_fft: int, n_mels: int, fmin: float, break_hz: float = 0.0) -> np.ndarray:
    """(n_mels, 1 + n_fft // 2) triangular filters, Slaney-normalised, up to Nyquist: on Slaney's scale the
    same numbers as librosa.filters.mel, without importing librosa (and scipy) on the indexing and search path."""
    fft_freqs = np.linspace(0.0, sample_rate / 2, 1 + n_fft // 2)
    mel_f = _band_edges(fmin, sample_rate / 2, n_mels + 2, break_hz)
    fdiff = np.diff(mel_f)
    ramps = mel_f[:, None] - fft_freqs[None, :]
    lower = -ramps[:-2] / fdiff[:-1, None]
    upper = ramps[2:] / fdiff[1:, None]
    weights = np.maximum(0.0, np.minimum(lower, upper))
    weights *= (2.0 / (mel_f[2 : n_mels + 2] - mel_f[:n_mels]))[:, None]
    return weights.astype(np.float32)


@lru_cache(maxsize=8)
def _hann(n: int) -> np.ndarray:
    """Periodic Hann window, as STFTs use."""
    return (0.5 - 0.5 * np.cos(2 * np.pi * np.arange(n) / n)).astype(np.float32)


def power_frames(clips: np.ndarray, *, n_fft: int, hop: int, frames: int) -> np.ndarray:
    """(B, n) clips -> (B, 1 + n_fft // 2, frames) power spectrogram of the first `frames` centred,
    zero-padded, Hann-windowed frames."""
    padded = np.pad(clips, ((0, 0), (n_fft // 2, n_fft // 2)))
    needed = (frames - 1) * hop + n_fft
    if padded.shape[1] < needed:
        padded = np.pad(padded, ((0, 0), (0, needed - padded.shape[1])))
    windows = np.lib.stride_tricks.sliding_window_view(padded, n_fft, axis=1)[:, : (frames - 1) * hop + 1 : hop]
    # In float64: numpy's float32 FFT took 4-8x as long here (numpy 2.4), and float64 is the more exact.
    spectrum = np.fft.rfft(windows * _hann(n_fft).astype(np.float64), axis=-1)  # (B, frames, 1 + n_fft // 2)
    return (spectrum.real**2 + spectrum.imag**2).astype(np.float32).transpose(0, 2, 1)


MEL_BLOCK = 4  # clips per STFT: 32 at once spill the (B, frames, n_fft) intermediates out of the CPU cache and
# cost 1.2-1.9x as much per clip


def mel_images(clips: np.ndarray, *, sample_rate: int, spec: MelSpec) -> np.ndarray:
    """(B, n_samples) float32 clips -> (B, n_mels, frames) float32 images in [0, 1].

    Power mel spectrogram in dB relative to each clip's own peak, floored at -top_db, scaled to [0, 1]:
    loudness does not change the image, only the shape of the sound does.
    """
    clips = np.atleast_2d(clips).astype(np.float32, copy=False)
    if len(clips) > MEL_BLOCK:
        blocks = [
            mel_images(clips[i : i + MEL_BLOCK], sample_rate=sample_rate, spec=spec)
            for i in range(0, len(clips), MEL_BLOCK)
        ]
        return np.concatenate(blocks)
    hop = hop_length(clips.shape[-1], spec.frames)
    power = power_frames(clips, n_fft=spec.n_fft, hop=hop, frames=spec.frames)
    mel = mel_basis(sample_rate, spec.n_fft, spec.n_mels, spec.fmin, spec.break_hz) @ power  # (B, n_mels, frames)
    ref = np.maximum(mel.max(axis=(1, 2), keepdims=True), 1e-10)
    db = 10.0 * np.log10(np.maximum(mel, 1e-10) / ref)  # (B, n_mels, frames), <= 0
    return ((np.maximum(db, -spec.top_db) + spec.top_db) / spec.top_db).astype(np.float32)


def mel_image(clip: np.ndarray, *, sample_rate: int, spec: MelSpec) -> np.ndarray:
    """(n_samples,) clip -> (n_mels, frames) image."""
    return mel_images(clip[None, :], sample_rate=sample_rate, spec=spec)[0]
