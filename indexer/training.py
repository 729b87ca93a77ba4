"""Train the encoder on a folder of clips: reconstruction, plus a contrastive term on augmented views and,
when the library's folders name what each sound is, a classifier on those names."""

from __future__ import annotations

import logging
import math
import os
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from fnmatch import fnmatch
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from audiosim.indexer.encoding import spawn_pool
from audiosim.shared.audio import AudioFile, ClipSpec, read_clips, walk_audio
from audiosim.shared.checkpoint import export, save_checkpoint
from audiosim.shared.errors import ConfigError
from audiosim.shared.features import MelSpec, mel_images
from audiosim.shared.model import AutoEncoder, ModelConfig, Restyle

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Preset:
    """A network and how to train it. The image size is the mel spec's, so the two cannot disagree."""

    mel: MelSpec
    clip: ClipSpec
    channels: tuple[int, ...]
    batch_norm: bool
    pooling: str
    losses: dict[str, float]
    augment: dict[str, float] | None  # keywords of augment(): pitch, masks, eq, stretch, floor, reverb; or none
    cross_source: bool = False  # supcon's positives come from other sources (see supcon and source_of)
    balance: float = 0.0  # a clip is drawn with weight (its source's clip count) ** -balance; 0 = uniform
    adversary: float = 0.0  # weight of a source classifier the encoder is trained to defeat (gradient reversal)
    mixup: float = 0.0  # Beta(mixup, mixup) mixing weights for a second, mixed batch the classifier learns; 0 = none
    depth: int = 1  # convolutions per encoder level
    first_time_pool: int = 2  # the first level's pool in time
    mixstyle: float = 0.0  # chance per batch that the first two levels' channel statistics are mixed (MixStyle)
    swa: float = 0.0  # the last fraction of the epochs whose weights are averaged after every step (SWA); 0 = none
    margin: float = 0.0  # cosine taken off each clip's own class while training the classifier (CosFace); 0 = none
    smoothing: float = 0.0  # share of each training target spread evenly over the classes (label smoothing)

    def model_config(self, n_classes: int = 0) -> ModelConfig:
        return ModelConfig(
            n_mels=self.mel.n_mels,
            frames=self.mel.frames,
            channels=self.channels,
            batch_norm=self.batch_norm,
            pooling=self.pooling,
            n_classes=n_classes,
            decoder=self.losses["recon"] > 0,
            depth=self.depth,
            first_time_pool=self.first_time_pool,
        )


PRESETS: dict[str, Preset] = {
    # The owner's network as first written down: 128x128 images, 128-64-32-16 filters, flattened code, MSE only.
    "seed": Preset(
        mel=MelSpec(n_mels=128, frames=128, n_fft=2048),
        clip=ClipSpec(),
        channels=(128, 64, 32, 16),
        batch_norm=False,
        pooling="flatten",
        losses={"recon": 1.0, "contrastive": 0.0, "classify": 0.0},
        augment=None,
    ),
    # Few filters at full resolution, more as it drops; mean+max pooled 256-d code. With folder labels:
    # reconstruction (weight 0.2) plus a cosine classifier on the code; without labels: reconstruction plus a
    # SimCLR term on augmented views. Chosen by the cross-source measurements in MODEL_CARD.md.
    "v1": Preset(
        mel=MelSpec(n_mels=64, frames=64, n_fft=1024),
        clip=ClipSpec(),
        channels=(16, 32, 64, 128),
        batch_norm=True,
        pooling="meanmax",
        losses={"recon": 0.2, "contrastive": 0.5, "classify": 1.0},
        augment={"pitch": 2, "masks": 0},
    ),
}
# v1 on onset-aligned clips, plus a supervised contrastive term on the folder classes.
PRESETS["v2"] = replace(PRESETS["v1"], clip=ClipSpec(start="onset"), losses={**PRESETS["v1"].losses, "supcon": 0.5})
# v2 with augmentation against what differs between libraries: EQ curves and decay lengths.
PRESETS["v3"] = replace(PRESETS["v2"], augment={"pitch": 2, "masks": 0, "eq": 0.08, "stretch": 0.25})
# v2 without the decoder (reconstruction cost 60% of a training step and its weight was never measured at 0),
# spending that time on twice the filters: a 512-d vector.
PRESETS["v4"] = replace(PRESETS["v2"], channels=(32, 64, 128, 256), losses={**PRESETS["v2"].losses, "recon": 0.0})
# v2 whose supervised contrastive positives are the same class from another source where the batch has one.
PRESETS["v5"] = replace(PRESETS["v2"], cross_source=True)
# v5 whose vector also pools the next-to-last level (finer detail): 384-d.
PRESETS["v6"] = replace(PRESETS["v5"], pooling="multiscale")
# v6 with sources drawn more evenly: each source's share of a batch grows as the square root of its size.
PRESETS["v7"] = replace(PRESETS["v6"], balance=0.5)
# v6 with a source classifier behind gradient reversal: the vector is pushed to not tell libraries apart.
PRESETS["v8"] = replace(PRESETS["v6"], adversary=0.1)
# v6 with a randomly raised noise floor (up to -48 dB): recorded libraries hiss where soundfonts are silent.
PRESETS["v9"] = replace(PRESETS["v6"], augment={"pitch": 2, "masks": 0, "floor": 0.4})
# v6 plus a classifier term on pairs of clips mixed as sound (their powers added) with soft labels.
PRESETS["v10"] = replace(PRESETS["v6"], mixup=0.4)
# v6 without the cross-source positives (v2 with the two-level pooling): which of the two carries v6's gain.
PRESETS["v11"] = replace(PRESETS["v2"], pooling="multiscale")
# v6 on images twice as fine in time (128 frames, a 16 ms hop): a hi-hat or a kick's click spans more than one frame.
PRESETS["v12"] = replace(PRESETS["v6"], mel=replace(PRESETS["v6"].mel, frames=128))
# v6 whose vector also pools the level before (three levels: 448-d).
PRESETS["v13"] = replace(PRESETS["v6"], pooling="multiscale3")
# v6 and v12 without reconstruction (no decoder): what the decoder's 60% of a training step buys.
PRESETS["v14"] = replace(PRESETS["v6"], losses={**PRESETS["v6"].losses, "recon": 0.0})
PRESETS["v15"] = replace(PRESETS["v12"], losses={**PRESETS["v12"].losses, "recon": 0.0})
# v6 with a 512-point FFT (a 23 ms window instead of 46 ms): sharper onsets in each frame at v6's image size and cost.
PRESETS["v16"] = replace(PRESETS["v6"], mel=replace(PRESETS["v6"].mel, n_fft=512))
# v6 with two convolutions per level (a VGG-style encoder): 3.4x the encoder's multiply-adds.
PRESETS["v17"] = replace(PRESETS["v6"], depth=2)
# v6 with reverberation: recorded kits ring in a room where rendered notes are dry.
PRESETS["v18"] = replace(PRESETS["v6"], augment={**(PRESETS["v6"].augment or {}), "reverb": 0.5})
# v12's 128-frame images, merged to v6's 64 frames by the first level's pool: the first convolution sees the
# 16 ms hop, the rest of the network costs what v6's does.
PRESETS["v19"] = replace(PRESETS["v12"], first_time_pool=4)
# v18's room at a fifth of the level: a tail of up to a tenth of the dry power (-10 dB).
PRESETS["v20"] = replace(PRESETS["v6"], augment={**(PRESETS["v6"].augment or {}), "reverb": 0.1})
# v6 on images spanning 60 dB instead of 80: a recording's noise floor and room tail, 60-80 dB below its peak,
# fall under the floor where a rendered note's silence is, so both look alike there.
PRESETS["v21"] = replace(PRESETS["v6"], mel=replace(PRESETS["v6"].mel, top_db=60.0))
# v6 with MixStyle after the first two levels in half the batches: a library's style mixed into another's clip.
PRESETS["v22"] = replace(PRESETS["v6"], mixstyle=0.5)
# v6 whose kept network is the running mean of its weights over the second half of training (every step).
PRESETS["v23"] = replace(PRESETS["v6"], swa=0.5)
# v6 with the supervised contrastive term at the classifier's weight instead of half of it.
PRESETS["v24"] = replace(PRESETS["v6"], losses={**PRESETS["v6"].losses, "supcon": 1.0})
# v6 whose classifier must win by a cosine margin of 0.2 on the clip's own class (CosFace): classes packed tighter.
PRESETS["v25"] = replace(PRESETS["v6"], margin=0.2)
# v6 with the reconstruction term at weight 0.5 instead of 0.2: without it (v14) held-out sources were heard worse.
PRESETS["v26"] = replace(PRESETS["v6"], losses={**PRESETS["v6"].losses, "recon": 0.5})
# v6 with the supervised contrastive term at a quarter of the classifier's weight: v24 and v25 pulled classes
# tighter and transferred worse, so the other direction.
PRESETS["v27"] = replace(PRESETS["v6"], losses={**PRESETS["v6"].losses, "supcon": 0.25})
# v6 on a frequency scale with more than twice the bands below 300 Hz (ln(1 + f / 200 Hz) instead of Slaney's mel:
# 13 there instead of 5, 36 above 1 kHz instead of 45): held out, kicks were named toms and basses guitars.
PRESETS["v28"] = replace(PRESETS["v6"], mel=replace(PRESETS["v6"].mel, break_hz=200.0))
# v28 with SpecAugment: two frequency and two time masks of up to an eighth of the image each, so that no one
# band or moment (a library's EQ, a kit's click) carries a clip's class alone.
PRESETS["v29"] = replace(PRESETS["v28"], augment={**(PRESETS["v28"].augment or {}), "masks": 2})
# v28 whose classifier learns targets with a tenth of their weight spread evenly over the classes: a head less
# sure of the training libraries' classes, in case that transfers to others.
PRESETS["v30"] = replace(PRESETS["v28"], smoothing=0.1)
# v28 with the scale's break at 400 Hz: 10 bands below 300 Hz (v28 13, v6 5) and 23 from 1 to 4 kHz (v28 20,
# v6 26), where a clap's body lies; claps and pads were found worse with v28 than with v6.
PRESETS["v31"] = replace(PRESETS["v28"], mel=replace(PRESETS["v28"].mel, break_hz=400.0))
PRESETS["default"] = PRESETS["v28"]


@dataclass
class TrainConfig:
    preset: str = "default"
    epochs: int = 40
    batch_size: int = 64
    lr: float = 2e-3
    seed: int = 0
    val_fraction: float = 0.1
    labels: str | None = None  # "folder": each file's parent folder name is its class
    exclude: tuple[str, ...] = ()  # file-name glob patterns to leave out
    resume: bool = False  # continue from the state file beside `out`
    workers: int = field(default_factory=lambda: os.cpu_count() or 1)


@dataclass
class Dataset:
    images: np.ndarray  # (N, n_mels, frames) float32 in [0, 1]
    paths: list[str]
    labels: np.ndarray | None  # (N,) int64 class index, or None
    classes: list[str]
    failed: int


def _decode_chunk(args: tuple[list[str], ClipSpec, MelSpec]) -> list[np.ndarray | None]:
    """Mel images (n_mels, frames) of the paths, None where a file does not decode."""
    paths, clip_spec, mel_spec = args
    clips = dict(read_clips(paths, clip_spec)[0])
    return [
        mel_images(clips[p].samples[None], sample_rate=clip_spec.sample_rate, spec=mel_spec)[0] if p in clips else None
        for p in paths
    ]


def load_images(
    files: list[AudioFile], clip_spec: ClipSpec, mel_spec: MelSpec, workers: int
) -> tuple[list[np.ndarray | None], list[str]]:
    """Mel images of files, decoded on all cores; None where a file fails to decode."""
    paths = [str(f.path) for f in files]
    chunks = [(paths[i : i + 64], clip_spec, mel_spec) for i in range(0, len(paths), 64)]
    if workers <= 1:
        results = [_decode_chunk(c) for c in chunks]
    else:
        with spawn_pool(workers) as pool:
            results = list(pool.map(_decode_chunk, chunks))
    return [img for chunk in results for img in chunk], paths


def build_dataset(
    roots: list[Path],
    clip_spec: ClipSpec,
    mel_spec: MelSpec,
    *,
    labels: str | None,
    workers: int,
    exclude: tuple[str, ...] = (),
) -> Dataset:
    files = [f for f in walk_audio(roots) if not any(fnmatch(f.path.name, pat) for pat in exclude)]
    if not files:
        raise ConfigError(f"no audio files under {', '.join(map(str, roots))}")
    images, paths = load_images(files, clip_spec, mel_spec, workers)
    keep = [i for i, img in enumerate(images) if img is not None]
    failed = len(images) - len(keep)
    if len(keep) < 4:
        raise ConfigError(f"only {len(keep)} clips decoded; training needs at least 4")
    stacked = np.stack([img for img in images if img is not None]).astype(np.float32)
    kept_paths = [paths[i] for i in keep]
    if labels is None:
        return Dataset(stacked, kept_paths, None, [], failed)
    if labels != "folder":
        raise ConfigError(f"unknown --labels {labels!r}: use 'folder'")
    names = [Path(p).parent.name for p in kept_paths]
    classes = sorted(set(names))
    if len(classes) < 2:
        raise ConfigError("--labels folder needs clips in at least two folders")
    index = {c: i for i, c in enumerate(classes)}
    return Dataset(stacked, kept_paths, np.array([index[n] for n in names]), classes, failed)


def source_of(path: str) -> str:
    """A clip's source: the part of its file name before `__` (the corpus names files `<source>__<name>`);
    "" for a name without one, so a library not built that way is a single source."""
    name = Path(path).name
    return name.split("__", 1)[0] if "__" in name else ""


class _Reverse(torch.autograd.Function):
    """Identity forward, negated gradient backward: what the source classifier learns, the encoder unlearns."""

    @staticmethod
    def forward(ctx: object, x: torch.Tensor) -> torch.Tensor:
        return x.view_as(x)

    @staticmethod
    def backward(ctx: object, grad: torch.Tensor) -> torch.Tensor:
        return -grad


def _shift(img: torch.Tensor, k: int, dim: int) -> torch.Tensor:
    """Shift along dim by k (either sign), filling with silence (0) instead of wrapping around."""
    if k == 0:
        return img
    out = torch.zeros_like(img)
    n = img.shape[dim]
    src = img.narrow(dim, max(0, -k), n - abs(k))
    out.narrow(dim, max(0, k), n - abs(k)).copy_(src)
    return out


def _stretch(img: torch.Tensor, factor: float) -> torch.Tensor:
    """(1, M, T) -> (1, M, T): played `factor` times longer (cut, or padded with silence)."""
    t = img.shape[-1]
    n = max(2, round(t * factor))
    longer = F.interpolate(img[None], size=(img.shape[-2], n), mode="bilinear", align_corners=False)[0]
    return longer[..., :t] if n >= t else F.pad(longer, (0, t - n))


def reverberate(x: torch.Tensor, gen: torch.Generator, wet: float, top_db: float = 80.0) -> torch.Tensor:
    """A room on mel images (B, 1, M, T) in [0, 1]: each band's power plus an exponentially decaying tail of
    itself, with a decay to -60 dB over 2-48 frames (about 0.06-1.5 s at the default image's 31 ms frames)
    and a tail carrying up to `wet` times the dry power, both drawn per clip; peak-relative again after."""
    b, t = x.shape[0], x.shape[-1]
    power = 10.0 ** (top_db * (x - 1.0) / 10.0)  # (B, 1, M, T) relative to each clip's peak
    rt60 = 2.0 + torch.rand(b, generator=gen) * 46.0  # (B,) frames
    gains = torch.rand(b, generator=gen) * wet  # (B,)
    lags = torch.arange(1, t, dtype=torch.float32)  # (T - 1,)
    kernels = 10.0 ** (-6.0 * lags[None, :] / rt60[:, None])  # (B, T - 1) power decay after each lag
    kernels = gains[:, None] * kernels / kernels.sum(dim=1, keepdim=True)
    out = power.clone()
    for i in range(b):
        # tail[f, n] = sum_k power[f, n - k] * kernel[k - 1]: a causal convolution along time
        padded = F.pad(power[i, 0][:, None, :], (t - 1, 0))  # (M, 1, 2T - 1)
        tail = F.conv1d(padded, kernels[i].flip(0).view(1, 1, -1))[:, 0, :t]  # (M, T)
        out[i, 0] += tail
    db = 10.0 * torch.log10(out / out.amax(dim=(1, 2, 3), keepdim=True))
    return (db / top_db + 1.0).clamp(0.0, 1.0)


def augment(
    x: torch.Tensor,
    gen: torch.Generator,
    *,
    pitch: float = 2,
    masks: float = 0,
    eq: float = 0.0,
    stretch: float = 0.0,
    floor: float = 0.0,
    reverb: float = 0.0,
) -> torch.Tensor:
    """Random view of a batch of mel images (B, 1, M, T) in [0, 1]: a room's tail of up to `reverb` times the
    dry power, time shift, pitch shift of up to `pitch` mel bins, time stretch by up to 1 + `stretch` either
    way, EQ tilt plus a smooth random EQ curve of up to `eq` per cosine (1.0 = 80 dB), level change near the
    floor, noise, `masks` frequency and time masks, and a noise floor raised by up to `floor` (a recording's
    hiss where a rendered note is silent)."""
    if reverb:
        x = reverberate(x, gen, reverb)
    b, _, m, t = x.shape
    pitch, masks = int(pitch), int(masks)
    out = torch.empty_like(x)
    shifts_t = torch.randint(0, max(1, t // 8), (b,), generator=gen)
    shifts_f = torch.randint(-pitch, pitch + 1, (b,), generator=gen)
    factors = torch.exp((torch.rand(b, generator=gen) * 2 - 1) * math.log1p(stretch)) if stretch else torch.ones(b)
    for i in range(b):
        img = _stretch(x[i], float(factors[i])) if stretch else x[i]
        out[i] = _shift(_shift(img, int(shifts_f[i]), 1), int(shifts_t[i]), 2)
        for _ in range(masks):
            f0, fw = (
                int(torch.randint(0, m, (1,), generator=gen)),
                int(torch.randint(0, m // 8 + 1, (1,), generator=gen)),
            )
            t0, tw = (
                int(torch.randint(0, t, (1,), generator=gen)),
                int(torch.randint(0, t // 8 + 1, (1,), generator=gen)),
            )
            out[i, :, f0 : f0 + fw, :] = 0.0
            out[i, :, :, t0 : t0 + tw] = 0.0
    ramp = torch.linspace(-0.5, 0.5, m).view(1, 1, m, 1)
    tilt = (torch.rand(b, 1, 1, 1, generator=gen) - 0.5) * 0.3
    gain = (torch.rand(b, 1, 1, 1, generator=gen) - 0.5) * 0.2
    noise = torch.rand(b, 1, 1, 1, generator=gen) * 0.05 * torch.rand(x.shape, generator=gen)
    curve = torch.zeros(b, 1, m, 1)
    if eq:
        bins = torch.arange(m).view(1, 1, m, 1) / m
        for k in (1, 2, 3):
            amp = (torch.rand(b, 1, 1, 1, generator=gen) * 2 - 1) * eq
            phase = torch.rand(b, 1, 1, 1, generator=gen) * 2 * math.pi
            curve = curve + amp * torch.cos(math.pi * k * bins + phase)
    sounding = (out > 0).float()  # the EQ curve changes what sounds, not the silence floor
    out = out + tilt * ramp + curve * sounding + gain + noise
    if floor:
        level = torch.rand(b, 1, 1, 1, generator=gen) * floor
        hiss = level * (0.8 + 0.2 * torch.rand(x.shape, generator=gen))  # (B, 1, M, T)
        out = torch.maximum(out, hiss)
    return out.clamp(0.0, 1.0)


def partners(b: int, alpha: float, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """For a batch of b clips: each one's own weight w ~ Beta(alpha, alpha), (B,) float, and the batch position of
    the clip it is mixed with, (B,) int64."""
    rng = np.random.default_rng(int(torch.randint(2**31, (1,), generator=gen)))  # torch's Beta takes no generator
    w = torch.from_numpy(rng.beta(alpha, alpha, b)).float()
    return w, torch.randperm(b, generator=gen)


def mix(
    x: torch.Tensor, y: torch.Tensor, n_classes: int, alpha: float, gen: torch.Generator, top_db: float = 80.0
) -> tuple[torch.Tensor, torch.Tensor]:
    """Mixup of mel images (B, 1, M, T) in [0, 1] with class labels (B,): each clip mixed with another of the
    batch as sound mixes (powers added; the images span `top_db`, as mel_images made them), with the weight
    w ~ Beta(alpha, alpha) on the first applied to its power; returns the mixed images and soft targets
    (B, n_classes)."""
    b = x.shape[0]
    w, other = partners(b, alpha, gen)  # (B,), (B,)
    power = 10.0 ** (top_db * (x - 1.0) / 10.0)  # (B, 1, M, T) relative to each clip's peak
    ww = w.view(b, 1, 1, 1)
    mixed = ww * power + (1 - ww) * power[other]
    db = 10.0 * torch.log10(mixed / mixed.amax(dim=(1, 2, 3), keepdim=True))  # peak-relative again, <= 0
    one_hot = F.one_hot(y, n_classes).float()
    return (db / top_db + 1.0).clamp(0.0, 1.0), w[:, None] * one_hot + (1 - w[:, None]) * one_hot[other]


def mixstyle(h: torch.Tensor, gen: torch.Generator, alpha: float = 0.1, eps: float = 1e-6) -> torch.Tensor:
    """MixStyle (Zhou et al., ICLR 2021) on feature maps (B, C, H, W): each clip's per-channel mean and standard
    deviation are replaced by a mix of its own and another clip's of the batch (weight ~ Beta(alpha, alpha)),
    what the channels show staying in place: level, noise floor and colour, which differ between libraries more
    than between kinds of sound, stop being something the later levels can lean on."""
    b = h.shape[0]
    mu = h.mean(dim=(2, 3), keepdim=True).detach()  # (B, C, 1, 1)
    sigma = (h.var(dim=(2, 3), keepdim=True) + eps).sqrt().detach()  # (B, C, 1, 1)
    w, other = partners(b, alpha, gen)  # (B,), (B,)
    lam = w.view(b, 1, 1, 1)
    return (h - mu) / sigma * (lam * sigma + (1 - lam) * sigma[other]) + lam * mu + (1 - lam) * mu[other]


def supcon(
    emb: torch.Tensor, labels: torch.Tensor, temperature: float = 0.1, sources: torch.Tensor | None = None
) -> torch.Tensor:
    """Supervised contrastive loss on unit embeddings (B, D) with class labels (B,): every other clip of the
    same class is a positive. With sources (B,), a clip's positives are those of the same class from other
    sources where the batch has any (the protocol asks for exactly that neighbour), else all of its class."""
    sim = emb @ emb.T / temperature  # (B, B)
    eye = torch.eye(len(emb), dtype=torch.bool)
    sim = sim.masked_fill(eye, -1e9)
    pos = (labels[:, None] == labels[None, :]) & ~eye
    if sources is not None:
        other = pos & (sources[:, None] != sources[None, :])
        pos = torch.where(other.any(dim=1, keepdim=True), other, pos)
    log_prob = sim - torch.logsumexp(sim, dim=1, keepdim=True)
    has = pos.any(dim=1)
    per = (log_prob * pos).sum(1)[has] / pos.sum(1)[has]
    return -per.mean() if has.any() else emb.sum() * 0.0


def margin_logits(model: AutoEncoder, emb: torch.Tensor, labels: torch.Tensor, margin: float) -> torch.Tensor:
    """The cosine classifier's logits (B, n_classes) for unit embeddings (B, D), each clip's own class (labels,
    (B,)) lowered by `margin` in cosine (CosFace, Wang et al. 2018): a clip counts as learnt only when it lies
    that much nearer its class than any other."""
    logits = model.logits(emb)
    if not margin:
        return logits
    return logits - model.logits_scale * margin * F.one_hot(labels, logits.shape[1])


def nt_xent(a: torch.Tensor, b: torch.Tensor, temperature: float = 0.1) -> torch.Tensor:
    """SimCLR loss between two views' unit embeddings (B, D) and (B, D)."""
    z = torch.cat([a, b])  # (2B, D)
    sim = z @ z.T / temperature
    n = a.shape[0]
    sim.fill_diagonal_(-1e9)
    target = torch.cat([torch.arange(n, 2 * n), torch.arange(0, n)])
    return F.cross_entropy(sim, target)


@dataclass
class EpochLog:
    epoch: int
    train_loss: float
    val_loss: float
    seconds: float


def state_path(out: Path) -> Path:
    """Where training keeps what `--resume` needs: model, optimiser, schedule, random state, history."""
    return out.with_name(out.name + ".state")


def plot_losses(history: list[EpochLog], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.5), dpi=100)
    epochs = [e.epoch for e in history]
    ax.plot(epochs, [e.train_loss for e in history], marker="o", label="train (augmented)")
    ax.plot(epochs, [e.val_loss for e in history], marker="o", label="validation")
    best = min(history, key=lambda e: e.val_loss)
    ax.axvline(best.epoch, color="grey", linestyle=":", label=f"kept: epoch {best.epoch}")
    ax.set(xlabel="epoch", ylabel="loss", title="training loss")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def plot_reconstructions(model: AutoEncoder, images: torch.Tensor, path: Path) -> None:
    """Grid: validation mel images (top row) and the autoencoder's reconstructions (bottom row)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    model.eval()
    with torch.no_grad():
        recon, _ = model(images)  # (K, 1, M, T)
    k = images.shape[0]
    fig, axes = plt.subplots(2, k, figsize=(1.6 * k, 3.6), dpi=100, squeeze=False)
    for i in range(k):
        for row, img in enumerate((images[i, 0], recon[i, 0])):
            axes[row][i].imshow(img.numpy(), origin="lower", aspect="auto", vmin=0, vmax=1, cmap="magma")
            axes[row][i].set_xticks([])
            axes[row][i].set_yticks([])
    axes[0][0].set_ylabel("input")
    axes[1][0].set_ylabel("reconstruction")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


@dataclass
class Run:
    """Everything one training run changes as it goes: what `--resume` saves and restores."""

    model: AutoEncoder
    adversary: torch.nn.Module | None  # the source classifier behind gradient reversal, training only
    opt: torch.optim.Optimizer
    sched: torch.optim.lr_scheduler.OneCycleLR
    gen: torch.Generator
    history: list[EpochLog] = field(default_factory=list)
    best: float = math.inf
    start: int = 1  # the next epoch
    average: torch.optim.swa_utils.AveragedModel | None = None  # the weights' running mean (preset.swa)


def _seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def _split(n: int, cfg: TrainConfig) -> tuple[np.ndarray, np.ndarray]:
    """(validation, training) indices: a seeded shuffle, the first val_fraction held out."""
    order = np.random.default_rng(cfg.seed).permutation(n)
    n_val = max(1, int(n * cfg.val_fraction))
    return order[:n_val], order[n_val:]


def _losses(preset: Preset, data: Dataset) -> dict[str, float]:
    losses = dict(preset.losses)
    if data.labels is None:
        losses["classify"] = losses["supcon"] = 0.0
    elif losses["classify"]:
        losses["contrastive"] = 0.0  # with labels it only hurt (MODEL_CARD.md)
    return losses


def _new_run(model: AutoEncoder, adversary: torch.nn.Module | None, cfg: TrainConfig, steps: int) -> Run:
    params = [*model.parameters(), *(adversary.parameters() if adversary is not None else ())]
    opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=cfg.lr, total_steps=steps)
    return Run(model, adversary, opt, sched, torch.Generator().manual_seed(cfg.seed))


def _save_state(run: Run, cfg: TrainConfig, clips: int, path: Path) -> None:
    """What `--resume` needs. Only tensors, numbers, strings and lists: loaded with weights_only=True, a
    planted state file cannot run code."""
    state = {
        "model": run.model.state_dict(),
        "adversary": run.adversary.state_dict() if run.adversary is not None else {},
        "optimizer": run.opt.state_dict(),
        "scheduler": run.sched.state_dict(),
        "total_steps": run.sched.total_steps,
        "generator": run.gen.get_state(),
        "epoch": run.start - 1,
        "best": run.best,
        "history": [[e.epoch, e.train_loss, e.val_loss, e.seconds] for e in run.history],
        "average": run.average.state_dict() if run.average is not None else {},
        "preset": cfg.preset,
        "seed": cfg.seed,
        "clips": clips,
    }
    tmp = path.with_name(path.name + ".tmp")
    torch.save(state, tmp)
    tmp.replace(path)


def _resume(run: Run, cfg: TrainConfig, clips: int, steps: int, path: Path) -> None:
    """Restore `run` from the state file a previous run of the same preset, seed and clips left."""
    if not path.is_file():
        raise ConfigError(f"nothing to resume: {path} not found (train without --resume first)")
    try:
        saved = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise ConfigError(f"cannot resume from {path}: not a training state this version wrote ({exc})"[:300]) from None
    if saved["preset"] != cfg.preset or saved["seed"] != cfg.seed or saved["clips"] != clips:
        raise ConfigError("--resume needs the same preset, seed and clips as the run it continues")
    run.model.load_state_dict(saved["model"])
    if run.adversary is not None:
        run.adversary.load_state_dict(saved["adversary"])
    run.opt.load_state_dict(saved["optimizer"])
    if saved["total_steps"] == steps:
        run.sched.load_state_dict(saved["scheduler"])
    else:  # more (or fewer) epochs than first planned: the same one-cycle shape over the new length
        done = saved["scheduler"]["last_epoch"]
        run.sched = torch.optim.lr_scheduler.OneCycleLR(run.opt, max_lr=cfg.lr, total_steps=steps, last_epoch=done - 1)
    run.gen.set_state(saved["generator"])
    if saved.get("average"):
        run.average = torch.optim.swa_utils.AveragedModel(run.model)
        run.average.load_state_dict(saved["average"])
    run.history = [EpochLog(int(e), float(t), float(v), float(sec)) for e, t, v, sec in saved["history"]]
    run.best, run.start = float(saved["best"]), int(saved["epoch"]) + 1
    if run.start > cfg.epochs:
        raise ConfigError(f"the run already reached epoch {saved['epoch']}; ask for more --epochs to go on")


def train(
    roots: list[Path],
    out: Path,
    cfg: TrainConfig,
    *,
    on_epoch: Callable[[EpochLog], None] = lambda e: None,
    on_data: Callable[[Dataset], None] = lambda d: None,
) -> list[EpochLog]:
    """Train and write the checkpoint with the best validation loss to `out` and its ONNX export beside it
    (`out` with `.onnx`), with `loss.png` and `reconstructions.png`; with cfg.resume, continue from the state
    file a previous run left."""
    if cfg.preset not in PRESETS:
        raise ConfigError(f"unknown preset {cfg.preset!r}: choose from {', '.join(PRESETS)}")
    preset = PRESETS[cfg.preset]
    _seed_everything(cfg.seed)
    clip_spec = preset.clip
    data = build_dataset(roots, clip_spec, preset.mel, labels=cfg.labels, workers=cfg.workers, exclude=cfg.exclude)
    on_data(data)
    losses = _losses(preset, data)
    model = AutoEncoder(preset.model_config(len(data.classes) if losses["classify"] else 0))
    if cfg.workers:
        torch.set_num_threads(cfg.workers)
    n = len(data.images)
    val_idx, train_idx = _split(n, cfg)
    x_all = torch.from_numpy(data.images).unsqueeze(1)  # (N, 1, M, T)
    y_all = torch.from_numpy(data.labels) if data.labels is not None else None
    names = [source_of(p) for p in data.paths]
    index = {s: i for i, s in enumerate(sorted(set(names)))}
    src_all = torch.tensor([index[s] for s in names])  # (N,) int64 source index
    counts = torch.bincount(src_all).double()  # (S,) clips per source
    weights = counts[src_all[torch.from_numpy(train_idx)]] ** -preset.balance if preset.balance else None
    adversary = torch.nn.Linear(model.cfg.embedding_dim, len(index)) if preset.adversary and len(index) > 1 else None
    steps = max(1, cfg.epochs * math.ceil(len(train_idx) / cfg.batch_size))
    run = _new_run(model, adversary, cfg, steps)
    if cfg.resume:
        _resume(run, cfg, n, steps, state_path(out))
    elif state_path(out).exists():
        state_path(out).unlink()

    def step_loss(idx: torch.Tensor, training: bool) -> torch.Tensor:
        x = x_all[idx]  # (b, 1, M, T)
        aug = preset.augment
        view = augment(x, run.gen, **aug) if aug is not None and training else x
        restyle = None
        if training and preset.mixstyle and float(torch.rand(1, generator=run.gen)) < preset.mixstyle:
            restyle = _restyle_early(run.gen)
        if losses["recon"]:
            recon, emb = model(view, restyle)
            loss = losses["recon"] * F.mse_loss(recon, x)
        else:
            emb = model.embed(view, restyle)
            loss = emb.sum() * 0.0
        if losses["contrastive"] and training and len(idx) > 1:
            emb2 = model.embed(augment(x, run.gen, **(aug or {})))
            loss = loss + losses["contrastive"] * nt_xent(emb, emb2)
        if losses["classify"] and y_all is not None:
            loss = loss + losses["classify"] * F.cross_entropy(
                margin_logits(model, emb, y_all[idx], preset.margin),
                y_all[idx],
                label_smoothing=preset.smoothing if training else 0.0,
            )
        if losses.get("supcon") and y_all is not None and training:
            sources = src_all[idx] if preset.cross_source else None
            loss = loss + losses["supcon"] * supcon(emb, y_all[idx], sources=sources)
        if preset.mixup and losses["classify"] and y_all is not None and training:
            mixed, soft = mix(view, y_all[idx], len(data.classes), preset.mixup, run.gen, preset.mel.top_db)
            logits = model.logits(model.embed(mixed))
            loss = loss + losses["classify"] * -(soft * F.log_softmax(logits, dim=1)).sum(1).mean()
        if adversary is not None and training:
            loss = loss + preset.adversary * F.cross_entropy(adversary(_Reverse.apply(emb)), src_all[idx])
        return loss

    preview = x_all[torch.from_numpy(val_idx[:8])]  # (K, 1, M, T)
    swa_from = cfg.epochs - round(cfg.epochs * preset.swa) + 1 if preset.swa else cfg.epochs + 1
    if run.start <= swa_from:
        run.average = None  # a resumed run given more epochs starts its mean again where the new plan says
    for epoch in range(run.start, cfg.epochs + 1):
        t0 = time.perf_counter()
        if epoch >= swa_from and run.average is None:
            run.average = torch.optim.swa_utils.AveragedModel(model)
        train_loss = _train_epoch(run, train_idx, cfg.batch_size, step_loss, weights)
        kept_mean = run.average if epoch == cfg.epochs else None
        if kept_mean is not None:
            # the network kept is the mean of the weights: its batch norm measured again, its loss the epoch's
            model.load_state_dict(kept_mean.module.state_dict())
            _refresh_batch_norm(model, x_all[torch.from_numpy(train_idx)], cfg.batch_size)
        model.eval()
        with torch.no_grad():
            val = float(step_loss(torch.from_numpy(val_idx), training=False))
        entry = EpochLog(epoch, train_loss, val, time.perf_counter() - t0)
        run.history.append(entry)
        run.start = epoch + 1
        on_epoch(entry)
        if val < run.best or kept_mean is not None:  # the mean is kept whatever its validation loss
            run.best = val
            extra = {"preset": cfg.preset, "epoch": epoch, "val_loss": val, "seed": cfg.seed, "labels": cfg.labels}
            extra |= {"averaged_from": swa_from} if kept_mean is not None else {}
            extra |= {"exclude": list(cfg.exclude), "classes": data.classes, "clips": n, "failed": data.failed}
            save_checkpoint(
                out, model, clip=clip_spec, mel=preset.mel, name=out.stem, extra={**extra, "losses": losses}
            )
        _save_state(run, cfg, n, state_path(out))
        plot_losses(run.history, out.parent / "loss.png")
        if losses["recon"]:
            plot_reconstructions(model, preview, out.parent / "reconstructions.png")
    export(out)
    return run.history


def _refresh_batch_norm(model: AutoEncoder, images: torch.Tensor, batch_size: int) -> None:
    """Batch norm's running statistics measured again on `images` (N, 1, M, T) for averaged weights, whose
    statistics no batch ever saw; the model is left in eval mode."""
    batches = [images[i : i + batch_size] for i in range(0, len(images), batch_size)]
    with torch.no_grad():  # without a decoder, the encoder alone holds every batch norm
        torch.optim.swa_utils.update_bn(batches, model if model.decoder is not None else model.encoder)
    model.eval()


def _restyle_early(gen: torch.Generator) -> Restyle:
    """MixStyle after the first two levels, where the maps still describe the sound's surface."""
    return lambda level, h: mixstyle(h, gen) if level < 2 else h


def epoch_order(n: int, gen: torch.Generator, weights: torch.Tensor | None = None) -> torch.Tensor:
    """(n,) positions for one epoch: a shuffle, or n draws with replacement in proportion to weights (n,)."""
    if weights is None:
        return torch.randperm(n, generator=gen)
    return torch.multinomial(weights, n, replacement=True, generator=gen)


def _train_epoch(
    run: Run,
    train_idx: np.ndarray,
    batch_size: int,
    step_loss: Callable[[torch.Tensor, bool], torch.Tensor],
    weights: torch.Tensor | None = None,
) -> float:
    """One pass over the shuffled training clips, or as many clips drawn by `weights` (one per training clip);
    the mean loss per clip."""
    run.model.train()
    perm = torch.from_numpy(train_idx)[epoch_order(len(train_idx), run.gen, weights)]
    total = 0.0
    for i in range(0, len(perm), batch_size):
        idx = perm[i : i + batch_size]
        if len(idx) < 2:
            continue
        loss = step_loss(idx, True)
        run.opt.zero_grad()
        loss.backward()
        run.opt.step()
        run.sched.step()
        if run.average is not None:
            run.average.update_parameters(run.model)
        total += float(loss.detach()) * len(idx)
    return total / max(1, len(train_idx))
