"""Synthesised one-shots with randomised parameters: the corpus's code-made source.

Each class has a maker: `params(rng)` draws one preset, `variants(rng)` the notes or velocities it is played
at (one group), `render(params, variant, rng)` returns (N,) float64 mono at SR. Oscillators are additive (band-
limited, with a time-varying low-pass per harmonic), noise is filtered with Butterworth sections.
"""

from __future__ import annotations

import math
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


# ------------------------------------------------------------------ FM patches (the corpus's `fm` source)
# Two-operator frequency modulation in the manner of the DX7's and OPL chips' instrument patches: each class's
# preset is drawn around the textbook recipe for that instrument (Chowning's brass, the tine electric piano,
# inharmonic-ratio bells), so the labels are what the patches are designed to imitate.
def fm_op(
    freq: np.ndarray | float,
    ratio: float,
    index: np.ndarray | float,
    *,
    feedback: float = 0.0,
    ceiling: float = 10000.0,
) -> np.ndarray:
    """(N,) a carrier at `freq` (Hz, may vary in time) phase-modulated by a sine at `ratio` x freq with
    modulation index `index` (may vary in time), capped so the strongest sidebands stay under `ceiling` Hz. With
    `feedback` (0-1.5) the modulator also modulates itself, as a DX7 operator's feedback loop does, which
    turns its sine towards a sawtooth and the carrier's spectrum from a few sidebands to a full one."""
    f = np.broadcast_to(np.asarray(freq, dtype=np.float64), (N,))
    phase = 2 * np.pi * np.cumsum(f) / SR  # (N,)
    cap = max(0.0, (ceiling - float(f.max())) / max(ratio * float(f.max()), 1.0) - 1.0)
    if feedback > 0:
        mod, last = np.empty(N), 0.0
        for i, ph in enumerate((ratio * phase).tolist()):
            last = math.sin(ph + feedback * last)
            mod[i] = last
    else:
        mod = np.sin(ratio * phase)
    return np.sin(phase + np.minimum(index, cap) * mod)


def _vibrato(p: Params) -> np.ndarray:
    """(N,) a pitch factor: vibrato of depth p["vib"] fading in after 0.2 s."""
    return 1 + p["vib"] * np.sin(2 * np.pi * p["vib_rate"] * T) * np.clip((T - 0.2) / 0.3, 0, 1)


def _pitch_decay(tau: float, note: float) -> float:
    """A decay time `tau` (s, at middle C) made shorter for higher notes, as a struck string's is."""
    return tau * 2 ** (-(note - 60) / 24)


def _fm_struck(p: Params, note: float, rng: np.random.Generator) -> np.ndarray:  # piano, mallet, guitar
    f, vel = midi_hz(note), _u(rng, 0.6, 1.0)
    amp = decay(_pitch_decay(p["decay"], note)) * np.clip(T / 0.002, 0, 1)
    body = fm_op(f, p["ratio"], p["index"] * vel * decay(p["index_decay"]), feedback=p["feedback"]) * amp
    tine = fm_op(f, p["tine_ratio"], p["tine_index"] * vel * decay(0.03)) * decay(p["tine_decay"])
    return vel * (body + p["tine"] * tine)


def _fm_held(
    p: Params, note: float, rng: np.random.Generator
) -> np.ndarray:  # brass, reed, flute, organ, strings, lead
    vel = _u(rng, 0.6, 1.0)
    env = adsr(p["attack"], 0.3, p["sustain"], p["release_at"], p["release"])
    index = p["index"] * vel * (env if p["index_follows"] else 1.0)  # brass brightens as it swells
    y = np.zeros(N)
    for d in np.linspace(-p["detune"], p["detune"], p["voices"]):
        y += fm_op(midi_hz(note) * (1 + d) * _vibrato(p), p["ratio"], index, feedback=p["feedback"])
    y = y / p["voices"] + p["breath"] * band(noise(rng), midi_hz(note), midi_hz(note) * 4)
    return vel * y * env


def _fm_pad(p: Params, note: float, rng: np.random.Generator) -> np.ndarray:
    index = p["index"] * (1 + 0.5 * np.sin(2 * np.pi * p["lfo"] * T))
    y = np.zeros(N)
    for interval in p["chord"]:
        for d in np.linspace(-p["detune"], p["detune"], p["voices"]):
            y += fm_op(midi_hz(note + interval) * (1 + d), p["ratio"], index, feedback=p["feedback"])
    return y * adsr(p["attack"], 0.5, 0.8, 1.6, 0.3)


def _fm_bass(p: Params, note: float, rng: np.random.Generator) -> np.ndarray:
    vel = _u(rng, 0.6, 1.0)
    y = fm_op(midi_hz(note), p["ratio"], p["index"] * vel * decay(p["index_decay"]), feedback=p["feedback"])
    return np.tanh(p["drive"] * vel * y * adsr(0.002, p["decay"], p["sustain"], p["release_at"], 0.06))


def _notes(lo: int, hi: int) -> Callable[[np.random.Generator], list[float]]:
    return lambda r: [float(n) for n in r.choice(np.arange(lo, hi), 3, replace=False)]


def _held(
    r: np.random.Generator,
    *,
    ratio: list[float],
    index: tuple[float, float],
    attack: tuple[float, float],
    follows: bool,
    breath: float = 0.0,
    voices: int = 1,
    detune: float = 0.0,
    vib: float = 0.004,
    feedback: float = 0.8,
) -> Params:
    return {"ratio": float(r.choice(ratio)), "index": _u(r, *index), "attack": _u(r, *attack),
            "sustain": _u(r, 0.6, 1.0), "release_at": _u(r, 0.6, 1.6), "release": _u(r, 0.05, 0.3),
            "index_follows": follows, "breath": _u(r, 0, breath), "voices": voices, "detune": _u(r, 0, detune),
            "vib": _u(r, 0, vib), "vib_rate": _u(r, 4.5, 6.5), "feedback": _u(r, 0, feedback)}  # fmt: skip


def _struck(
    r: np.random.Generator,
    *,
    ratio: list[float],
    index: tuple[float, float],
    decay: tuple[float, float],
    index_decay: tuple[float, float],
    tine: float,
    tine_ratio: list[float],
    feedback: float = 0.5,
) -> Params:
    return {"ratio": float(r.choice(ratio)), "index": _u(r, *index), "decay": _u(r, *decay),
            "index_decay": _u(r, *index_decay), "tine": _u(r, 0, tine), "tine_ratio": float(r.choice(tine_ratio)),
            "tine_index": _u(r, 0.5, 3), "tine_decay": _u(r, 0.05, 0.4), "feedback": _u(r, 0, feedback)}  # fmt: skip


FM_MAKERS: dict[str, Maker] = {
    "piano": Maker(lambda r: _struck(r, ratio=[1.0, 1.0, 2.0], index=(1, 5), decay=(0.8, 2.5),
                                     index_decay=(0.2, 1.0), tine=0.6, tine_ratio=[14.0, 11.0, 7.0]),
                   _notes(36, 85), _fm_struck),
    "mallet": Maker(lambda r: _struck(r, ratio=[3.5, 4.0, 1.4, 2.76, 5.4, 7.0], index=(1, 5), decay=(0.15, 1.5),
                                      index_decay=(0.02, 0.4), tine=0.3, tine_ratio=[9.0, 13.0]),
                    _notes(55, 91), _fm_struck),
    "guitar": Maker(lambda r: _struck(r, ratio=[1.0, 3.0, 2.0], index=(2, 6), decay=(0.5, 1.6),
                                      index_decay=(0.04, 0.25), tine=0.2, tine_ratio=[5.0, 7.0]),
                    _notes(40, 76), _fm_struck),
    "bass": Maker(lambda r: {"ratio": float(r.choice([1.0, 0.5, 2.0])), "index": _u(r, 1, 6),
                             "index_decay": _u(r, 0.04, 0.4), "drive": _u(r, 0.8, 2.5), "decay": _u(r, 0.2, 1.2),
                             "sustain": _u(r, 0, 0.7), "release_at": _u(r, 0.4, 1.5), "feedback": _u(r, 0, 1.2)},
                  _notes(28, 53), _fm_bass),
    "brass": Maker(lambda r: _held(r, ratio=[1.0], index=(3, 8), attack=(0.03, 0.12), follows=True, feedback=1.2),
                   _notes(43, 73), _fm_held),
    "reed": Maker(lambda r: _held(r, ratio=[2.0, 1.0, 3.0], index=(2, 6), attack=(0.02, 0.07), follows=True,
                                  breath=0.05), _notes(50, 80), _fm_held),
    "flute": Maker(lambda r: _held(r, ratio=[1.0, 2.0], index=(0.2, 0.9), attack=(0.05, 0.15), follows=False,
                                   breath=0.2), _notes(60, 92), _fm_held),
    "organ": Maker(lambda r: _held(r, ratio=[1.0, 2.0, 0.5, 3.0], index=(0.5, 4), attack=(0.003, 0.01),
                                   follows=False, vib=0.0), _notes(36, 80), _fm_held),
    "strings": Maker(lambda r: _held(r, ratio=[1.0], index=(1.5, 5), attack=(0.08, 0.4), follows=True, voices=3,
                                     detune=0.006, vib=0.006), _notes(43, 80), _fm_held),
    "lead": Maker(lambda r: _held(r, ratio=[1.0, 2.0, 3.0], index=(3, 10), attack=(0.003, 0.03), follows=False,
                                  voices=2, detune=0.01, feedback=1.5), _notes(55, 86), _fm_held),
    "pad": Maker(lambda r: {"ratio": float(r.choice([1.0, 2.0, 0.5])), "index": _u(r, 0.5, 3), "lfo": _u(r, 0.2, 2),
                            "detune": _u(r, 0.002, 0.01), "voices": int(r.integers(2, 4)), "attack": _u(r, 0.2, 1.0),
                            "chord": [[0], [0, 7], [0, 4, 7], [0, 3, 7], [0, 12]][int(r.integers(5))],
                            "feedback": _u(r, 0, 1.0)},
                 _notes(45, 70), _fm_pad),
}  # fmt: skip
