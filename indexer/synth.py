"""Synthesised one-shots with randomised parameters: the corpus's code-made source.

Each class has a maker: `params(rng)` draws one preset, `variants(rng)` the notes or velocities it is played
at (one group), `render(params, variant, rng)` returns (N,) float64 mono at SR. Oscillators are additive (band-
limited, with a time-varying low-pass per harmonic), noise is filtered with Butterworth sections.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy.signal import butter, sosfilt

SR = 22050
N = int(SR * 2.0)
T = np.arange(N) / SR  # (N,) seconds
Params = dict[str, Any]


def seed_of(label: str) -> int:
    return zlib.crc32(label.encode())


def midi_hz(note: float) -> float:
    return float(440.0 * 2 ** ((note - 69) / 12))


def additive(
    freq: np.ndarray | float, cutoff: np.ndarray | float, shape: str, *, order: int = 2, max_k: int = 200
) -> np.ndarray:
    """(N,) band-limited oscillator: saw, square, pulse or sine with pitch curve `freq` (Hz) and a low-pass of
    `order` at `cutoff` (Hz, may vary in time) applied to each harmonic's amplitude."""
    f = np.broadcast_to(np.asarray(freq, dtype=np.float64), (N,))
    fc = np.broadcast_to(np.asarray(cutoff, dtype=np.float64), (N,))
    phase = 2 * np.pi * np.cumsum(f) / SR  # (N,)
    top = min(max_k, int(10000 / max(float(f.max()), 20.0)))
    out = np.zeros(N)
    for k in range(1, max(1, top) + 1):
        if shape == "sine" and k > 1:
            break
        if shape == "square" and k % 2 == 0:
            continue
        amp = 1.0 / k if shape != "pulse" else abs(np.sin(np.pi * k * 0.25)) / k
        lp = 1.0 / np.sqrt(1.0 + (k * f / np.maximum(fc, 1.0)) ** (2 * order))  # (N,)
        out += amp * lp * np.sin(k * phase)
    return out


def noise(rng: np.random.Generator) -> np.ndarray:
    return rng.standard_normal(N)


def band(x: np.ndarray, low: float | None, high: float | None, order: int = 2) -> np.ndarray:
    nyq = SR / 2 * 0.98
    if low and high:
        sos = butter(order, [low, min(high, nyq)], btype="bandpass", fs=SR, output="sos")
    elif low:
        sos = butter(order, min(low, nyq), btype="highpass", fs=SR, output="sos")
    else:
        sos = butter(order, min(high or nyq, nyq), btype="lowpass", fs=SR, output="sos")
    return np.asarray(sosfilt(sos, x))


def decay(tau: float, start: float = 0.0) -> np.ndarray:
    return np.where(start <= T, np.exp(-np.maximum(T - start, 0) / tau), 0.0)


def adsr(attack: float, decay_s: float, sustain: float, release_at: float, release: float) -> np.ndarray:
    a = np.clip(T / max(attack, 1e-3), 0, 1)
    d = sustain + (1 - sustain) * np.exp(-np.maximum(T - attack, 0) / max(decay_s, 1e-3))
    r = np.where(release_at > T, 1.0, np.exp(-(T - release_at) / max(release, 1e-3)))
    return a * d * r


@dataclass(frozen=True)
class Maker:
    params: Callable[[np.random.Generator], Params]
    variants: Callable[[np.random.Generator], list[float]]
    render: Callable[[Params, float, np.random.Generator], np.ndarray]


def _velocities(rng: np.random.Generator) -> list[float]:
    return [0.5, 0.8, 1.0]


def _kick(p: Params, vel: float, rng: np.random.Generator) -> np.ndarray:
    f = p["f1"] + (p["f0"] - p["f1"]) * np.exp(-T / (p["ptau"] * (0.7 + 0.3 * vel)))
    body = additive(f, 20000.0, "sine") * decay(p["decay"] * (0.8 + 0.2 * vel))
    click = p["click"] * vel * band(noise(rng), 1000, 8000) * decay(0.004)
    return np.tanh(p["drive"] * vel * (body + click))


def _snare(p: Params, vel: float, rng: np.random.Generator) -> np.ndarray:
    tone = additive(p["f"] * (1 + 0.3 * np.exp(-T / 0.01)), 20000.0, "sine") * decay(p["tone_decay"])
    rattle = band(noise(rng), p["lo"], p["hi"]) * decay(p["noise_decay"] * (0.8 + 0.2 * vel))
    return np.tanh(p["drive"] * vel * ((1 - p["mix"]) * tone + p["mix"] * 3 * rattle))


def _hihat(p: Params, vel: float, rng: np.random.Generator) -> np.ndarray:
    metal = sum(np.sign(np.sin(2 * np.pi * f * p["ratio"] * T)) for f in (205.3, 304.4, 369.6, 522.7, 540.0, 800.0))
    src = p["metal"] * np.asarray(metal) / 6 + (1 - p["metal"]) * noise(rng)
    return vel * band(src, p["hp"], None, order=4) * decay(p["decay"])


def _clap(p: Params, vel: float, rng: np.random.Generator) -> np.ndarray:
    env = sum(decay(0.006, start=i * p["gap"]) for i in range(p["bursts"]))
    env = np.asarray(env) + decay(p["tail"], start=p["bursts"] * p["gap"])
    return vel * band(noise(rng), p["centre"] / 1.6, p["centre"] * 1.6) * env


def _tom(p: Params, step: float, rng: np.random.Generator) -> np.ndarray:
    f0 = p["f0"] * step
    f = f0 / p["drop"] + (f0 - f0 / p["drop"]) * np.exp(-T / 0.08)
    body = additive(f, 20000.0, "sine") * decay(p["decay"])
    return np.tanh(1.5 * (body + 0.2 * band(noise(rng), 200, 3000) * decay(0.03)))


def _bass(p: Params, note: float, rng: np.random.Generator) -> np.ndarray:
    cut = p["cut"] + p["env"] * decay(p["env_decay"])
    y = additive(midi_hz(note), cut, p["shape"], order=p["order"])
    if p["sub"]:
        y = y + p["sub"] * additive(midi_hz(note - 12), 20000.0, "sine")
    return np.tanh(p["drive"] * y * adsr(0.003, p["decay"], p["sustain"], p["release_at"], 0.08))


def _lead(p: Params, note: float, rng: np.random.Generator) -> np.ndarray:
    vib = 1 + p["vib"] * np.sin(2 * np.pi * p["vib_rate"] * T) * np.clip((T - 0.15) / 0.3, 0, 1)
    f = midi_hz(note) * vib
    y = additive(f, p["cut"], p["shape"]) + additive(f * (1 + p["detune"]), p["cut"], p["shape"])
    return y * adsr(p["attack"], 0.3, p["sustain"], p["release_at"], p["release"])


def _pad(p: Params, note: float, rng: np.random.Generator) -> np.ndarray:
    lfo = p["cut"] * (1 + 0.3 * np.sin(2 * np.pi * p["lfo"] * T))
    y = np.zeros(N)
    for interval in p["chord"]:
        for d in np.linspace(-p["spread"], p["spread"], p["voices"]):
            y += additive(midi_hz(note + interval) * (1 + d), lfo, p["shape"], max_k=60)
    return y * adsr(p["attack"], 0.5, 0.8, 1.6, 0.3)


def _fx(p: Params, v: float, rng: np.random.Generator) -> np.ndarray:
    kind, dur = p["kind"], p["dur"] * (0.8 + 0.4 * v)
    ramp = np.clip(T / dur, 0, 1)
    if kind == "zap":
        f = p["f_hi"] * (p["f_lo"] / p["f_hi"]) ** ramp
        return additive(f, 6000.0, "square") * decay(dur / 2)
    if kind == "riser":
        f = p["f_lo"] * (p["f_hi"] / p["f_lo"]) ** ramp
        return (additive(f, 8000.0, "saw") + band(noise(rng), 2000, None)) * ramp * (dur > T)
    if kind == "boom":
        return band(noise(rng), None, p["f_lo"] * 4) * decay(dur) * 4
    if kind == "blip":  # FM bell-like blip
        mod = p["index"] * np.sin(2 * np.pi * p["f_lo"] * p["ratio"] * T) * decay(dur)
        return np.sin(2 * np.pi * p["f_lo"] * T + mod) * decay(dur)
    f = p["f_lo"] + (p["f_hi"] - p["f_lo"]) * (0.5 + 0.5 * np.sin(2 * np.pi * p["wobble"] * T))  # "wobble"
    return additive(f, 5000.0, "saw") * decay(dur * 2)


def _u(rng: np.random.Generator, lo: float, hi: float) -> float:
    return float(rng.uniform(lo, hi))


MAKERS: dict[str, Maker] = {
    "kick": Maker(
        lambda r: {"f0": _u(r, 80, 250), "f1": _u(r, 35, 65), "ptau": _u(r, 0.015, 0.12), "decay": _u(r, 0.12, 0.8),
                   "click": _u(r, 0, 0.6), "drive": _u(r, 1, 5)},
        _velocities, _kick),
    "snare": Maker(
        lambda r: {"f": _u(r, 150, 300), "tone_decay": _u(r, 0.03, 0.2), "noise_decay": _u(r, 0.06, 0.35),
                   "lo": _u(r, 800, 3000), "hi": _u(r, 5000, 10000), "mix": _u(r, 0.4, 0.9), "drive": _u(r, 1, 3)},
        _velocities, _snare),
    "hihat": Maker(
        lambda r: {"ratio": _u(r, 0.8, 1.4), "metal": _u(r, 0, 1), "hp": _u(r, 5000, 9000),
                   "decay": _u(r, 0.015, 0.1) if r.random() < 0.6 else _u(r, 0.2, 0.8)},
        _velocities, _hihat),
    "clap": Maker(
        lambda r: {"bursts": int(r.integers(2, 6)), "gap": _u(r, 0.006, 0.016), "centre": _u(r, 800, 2200),
                   "tail": _u(r, 0.05, 0.35)},
        _velocities, _clap),
    "tom": Maker(
        lambda r: {"f0": _u(r, 70, 260), "drop": _u(r, 1.1, 1.8), "decay": _u(r, 0.15, 0.7)},
        lambda r: [1.0, 1.26, 1.5], _tom),
    "bass": Maker(
        lambda r: {"shape": str(r.choice(["saw", "square", "pulse", "sine"])), "cut": _u(r, 80, 600),
                   "env": _u(r, 0, 3000), "env_decay": _u(r, 0.03, 0.5), "order": int(r.integers(1, 4)),
                   "sub": _u(r, 0, 0.8) * (r.random() < 0.5), "drive": _u(r, 0.8, 3), "decay": _u(r, 0.1, 0.8),
                   "sustain": _u(r, 0, 0.9), "release_at": _u(r, 0.3, 1.6)},
        lambda r: [float(n) for n in r.choice(np.arange(28, 53), 3, replace=False)], _bass),
    "lead": Maker(
        lambda r: {"shape": str(r.choice(["saw", "square", "pulse"])), "cut": _u(r, 1500, 9000),
                   "vib": _u(r, 0, 0.012), "vib_rate": _u(r, 4, 7), "detune": _u(r, 0, 0.012),
                   "attack": _u(r, 0.003, 0.06), "sustain": _u(r, 0.5, 1), "release_at": _u(r, 0.5, 1.6),
                   "release": _u(r, 0.03, 0.3)},
        lambda r: [float(n) for n in r.choice(np.arange(57, 86), 3, replace=False)], _lead),
    "pad": Maker(
        lambda r: {"shape": str(r.choice(["saw", "square", "pulse"])), "cut": _u(r, 500, 3500),
                   "lfo": _u(r, 0.2, 2), "spread": _u(r, 0.002, 0.012), "voices": int(r.integers(2, 5)),
                   "attack": _u(r, 0.2, 1.0),
                   "chord": [[0], [0, 7], [0, 4, 7], [0, 3, 7], [0, 12]][int(r.integers(5))]},
        lambda r: [float(n) for n in r.choice(np.arange(45, 70), 3, replace=False)], _pad),
    "fx": Maker(
        lambda r: {"kind": str(r.choice(["zap", "riser", "boom", "blip", "wobble"])), "dur": _u(r, 0.1, 1.5),
                   "f_lo": _u(r, 60, 400), "f_hi": _u(r, 800, 5000), "index": _u(r, 1, 8), "ratio": _u(r, 0.5, 3.5),
                   "wobble": _u(r, 2, 12)},
        _velocities, _fx),
}  # fmt: skip
