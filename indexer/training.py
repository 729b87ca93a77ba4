"""Train the encoder on a folder of clips: reconstruction, plus a contrastive term on augmented views and,
when the library's folders name what each sound is, a classifier on those names."""

from __future__ import annotations

import logging
import math
import os
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from fnmatch import fnmatch
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from indexer.stages import spawn_pool
from shared.audio import AudioFile, ClipSpec, read_clip, walk_audio
from shared.encoder import save_checkpoint
from shared.errors import ConfigError, DecodeError
from shared.features import MelSpec, mel_images
from shared.model import AutoEncoder, ModelConfig

log = logging.getLogger(__name__)

PRESETS: dict[str, dict[str, Any]] = {
    # The owner's network as first written down: 128x128 images, 128-64-32-16 filters, flattened code, MSE only.
    "seed": {
        "mel": {"n_mels": 128, "frames": 128, "n_fft": 2048},
        "model": {
            "n_mels": 128,
            "frames": 128,
            "channels": (128, 64, 32, 16),
            "batch_norm": False,
            "pooling": "flatten",
        },
        "losses": {"recon": 1.0, "contrastive": 0.0, "classify": 0.0},
        "augment": None,
    },
    # Few filters at full resolution, more as it drops; mean+max pooled 256-d code. With folder labels:
    # reconstruction (weight 0.2) plus a cosine classifier on the code; without labels: reconstruction plus a
    # SimCLR term on augmented views. Chosen by the cross-source measurements in MODEL_CARD.md.
    "default": {
        "mel": {"n_mels": 64, "frames": 64, "n_fft": 1024},
        "model": {
            "n_mels": 64,
            "frames": 64,
            "channels": (16, 32, 64, 128),
            "batch_norm": True,
            "pooling": "meanmax",
        },
        "losses": {"recon": 0.2, "contrastive": 0.5, "classify": 1.0},
        "augment": {"pitch": 2, "masks": 0},
    },
}


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
    paths, clip_spec, mel_spec = args
    out: list[np.ndarray | None] = []
    for p in paths:
        try:
            clip = read_clip(Path(p), clip_spec).samples
        except DecodeError:
            out.append(None)
            continue
        out.append(mel_images(clip[None], sample_rate=clip_spec.sample_rate, spec=mel_spec)[0])
    return out


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


def _shift(img: torch.Tensor, k: int, dim: int) -> torch.Tensor:
    """Shift along dim by k (either sign), filling with silence (0) instead of wrapping around."""
    if k == 0:
        return img
    out = torch.zeros_like(img)
    n = img.shape[dim]
    src = img.narrow(dim, max(0, -k), n - abs(k))
    out.narrow(dim, max(0, k), n - abs(k)).copy_(src)
    return out


def augment(x: torch.Tensor, gen: torch.Generator, *, pitch: int = 2, masks: int = 0) -> torch.Tensor:
    """Random view of a batch of mel images (B, 1, M, T) in [0, 1]: time shift, pitch shift of up to `pitch`
    mel bins, EQ tilt, level change near the floor, noise, and `masks` frequency and time masks."""
    b, _, m, t = x.shape
    out = torch.empty_like(x)
    shifts_t = torch.randint(0, max(1, t // 8), (b,), generator=gen)
    shifts_f = torch.randint(-pitch, pitch + 1, (b,), generator=gen)
    for i in range(b):
        out[i] = _shift(_shift(x[i], int(shifts_f[i]), 1), int(shifts_t[i]), 2)
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
    return (out + tilt * ramp + gain + noise).clamp(0.0, 1.0)


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


def train(
    roots: list[Path],
    out: Path,
    cfg: TrainConfig,
    *,
    on_epoch: Callable[[EpochLog], None] = lambda e: None,
    on_data: Callable[[Dataset], None] = lambda d: None,
) -> list[EpochLog]:
    """Train and write the checkpoint with the best validation loss to `out`, with `loss.png` and
    `reconstructions.png` beside it; with cfg.resume, continue from the state file a previous run left."""
    if cfg.preset not in PRESETS:
        raise ConfigError(f"unknown preset {cfg.preset!r}: choose from {', '.join(PRESETS)}")
    preset = PRESETS[cfg.preset]
    random.seed(cfg.seed)
    np.random.seed(cfg.seed)
    torch.manual_seed(cfg.seed)
    clip_spec, mel_spec = ClipSpec(), MelSpec(**preset["mel"])
    data = build_dataset(roots, clip_spec, mel_spec, labels=cfg.labels, workers=cfg.workers, exclude=cfg.exclude)
    on_data(data)
    losses = dict(preset["losses"])
    if data.labels is None:
        losses["classify"] = 0.0
    elif losses["classify"]:
        losses["contrastive"] = 0.0  # with labels it only hurt (MODEL_CARD.md)
    model = AutoEncoder(ModelConfig(**preset["model"], n_classes=len(data.classes) if losses["classify"] else 0))
    if cfg.workers:
        torch.set_num_threads(cfg.workers)

    n = len(data.images)
    order = np.random.default_rng(cfg.seed).permutation(n)
    n_val = max(1, int(n * cfg.val_fraction))
    val_idx, train_idx = order[:n_val], order[n_val:]
    x_all = torch.from_numpy(data.images).unsqueeze(1)  # (N, 1, M, T)
    y_all = torch.from_numpy(data.labels) if data.labels is not None else None
    gen = torch.Generator().manual_seed(cfg.seed)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=1e-4)
    steps = cfg.epochs * math.ceil(len(train_idx) / cfg.batch_size)
    steps = max(1, steps)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=cfg.lr, total_steps=steps)

    aug: dict[str, int] | None = preset["augment"] or None  # {"pitch": bins, "masks": count}

    def step_loss(idx: torch.Tensor, training: bool) -> torch.Tensor:
        x = x_all[idx]
        view = augment(x, gen, **aug) if aug is not None and training else x
        recon, emb = model(view)
        loss = losses["recon"] * F.mse_loss(recon, x)
        if losses["contrastive"] and training and len(idx) > 1:
            _, emb2 = model(augment(x, gen, **(aug or {})))
            loss = loss + losses["contrastive"] * nt_xent(emb, emb2)
        if losses["classify"] and y_all is not None:
            loss = loss + losses["classify"] * F.cross_entropy(model.logits(emb), y_all[idx])
        return loss

    history: list[EpochLog] = []
    best = math.inf
    start = 1
    if cfg.resume:
        if not state_path(out).is_file():
            raise ConfigError(f"nothing to resume: {state_path(out)} not found (train without --resume first)")
        saved = torch.load(state_path(out), map_location="cpu", weights_only=False)
        if saved["preset"] != cfg.preset or saved["seed"] != cfg.seed or saved["clips"] != n:
            raise ConfigError("--resume needs the same preset, seed and clips as the run it continues")
        model.load_state_dict(saved["model"])
        opt.load_state_dict(saved["optimizer"])
        if saved["total_steps"] == steps:
            sched.load_state_dict(saved["scheduler"])
        else:  # more (or fewer) epochs than first planned: the same one-cycle shape over the new length
            done = saved["scheduler"]["last_epoch"]
            sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=cfg.lr, total_steps=steps, last_epoch=done - 1)
        gen.set_state(saved["generator"])
        history = [EpochLog(**e) for e in saved["history"]]
        best, start = saved["best"], saved["epoch"] + 1
        if start > cfg.epochs:
            raise ConfigError(f"the run already reached epoch {saved['epoch']}; ask for more --epochs to go on")
    elif state_path(out).exists():
        state_path(out).unlink()
    preview = x_all[torch.from_numpy(val_idx[:8])]  # (K, 1, M, T)
    for epoch in range(start, cfg.epochs + 1):
        t0 = time.perf_counter()
        model.train()
        perm = torch.from_numpy(train_idx)[torch.randperm(len(train_idx), generator=gen)]
        total = 0.0
        for i in range(0, len(perm), cfg.batch_size):
            idx = perm[i : i + cfg.batch_size]
            if len(idx) < 2:
                continue
            loss = step_loss(idx, training=True)
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            total += float(loss.detach()) * len(idx)
        model.eval()
        with torch.no_grad():
            val = float(step_loss(torch.from_numpy(val_idx), training=False))
        entry = EpochLog(epoch, total / max(1, len(train_idx)), val, time.perf_counter() - t0)
        history.append(entry)
        on_epoch(entry)
        if val < best:
            best = val
            save_checkpoint(
                out,
                model,
                clip=clip_spec,
                mel=mel_spec,
                name=out.stem,
                extra={
                    "preset": cfg.preset,
                    "epoch": epoch,
                    "val_loss": val,
                    "seed": cfg.seed,
                    "labels": cfg.labels,
                    "exclude": list(cfg.exclude),
                    "classes": data.classes,
                    "clips": n,
                    "failed": data.failed,
                    "losses": losses,
                },
            )
        torch.save(
            {
                "model": model.state_dict(),
                "optimizer": opt.state_dict(),
                "scheduler": sched.state_dict(),
                "total_steps": sched.total_steps,
                "generator": gen.get_state(),
                "epoch": epoch,
                "best": best,
                "history": [e.__dict__ for e in history],
                "preset": cfg.preset,
                "seed": cfg.seed,
                "clips": n,
            },
            state_path(out),
        )
        plot_losses(history, out.parent / "loss.png")
        plot_reconstructions(model, preview, out.parent / "reconstructions.png")
    return history
