"""The convolutional autoencoder on mel images; the encoder's pooled output is the search vector."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from itertools import pairwise
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

# How many of the last levels' maps each mean+max pooling reads ("flatten" keeps the whole final map instead).
POOLED_LEVELS = {"meanmax": 1, "multiscale": 2, "multiscale3": 3}
# Training only: (level, map) -> the map the next level reads (MixStyle changes the early levels' statistics).
Restyle = Callable[[int, torch.Tensor], torch.Tensor]


@dataclass(frozen=True)
class ModelConfig:
    """Everything needed to rebuild the network; stored in every checkpoint."""

    n_mels: int = 64
    frames: int = 64
    channels: tuple[int, ...] = (16, 32, 64, 128)
    batch_norm: bool = True
    # "meanmax": mean and max over the final map; "multiscale": the same over the last two levels' maps,
    # "multiscale3" over the last three; "flatten": the whole final map (seed)
    pooling: str = "meanmax"
    n_classes: int = 0  # > 0 adds a cosine classifier head used only in training
    decoder: bool = True  # False: an encoder trained without reconstruction carries no decoder
    depth: int = 1  # 3x3 convolutions per encoder level before its pool
    first_time_pool: int = 2  # the first level's pool in time (4: a finer image's frames merged early)
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        object.__setattr__(self, "channels", tuple(self.channels))
        levels = 2 ** len(self.channels)
        time_levels = levels * self.first_time_pool // 2
        if self.n_mels % levels or self.frames % time_levels:
            raise ValueError(f"image {self.n_mels}x{self.frames} must be divisible by {levels}x{time_levels}")
        if self.pooling not in (*POOLED_LEVELS, "flatten"):
            raise ValueError(f"unknown pooling {self.pooling!r}")

    @property
    def pooled_levels(self) -> int:
        """How many of the last levels' maps the mean+max pooling reads."""
        return POOLED_LEVELS.get(self.pooling, 1)

    @property
    def embedding_dim(self) -> int:
        if self.pooling != "flatten":
            return 2 * sum(self.channels[-self.pooled_levels :])
        levels = 2 ** len(self.channels)
        return self.channels[-1] * (self.n_mels // levels) * (self.frames * 2 // self.first_time_pool // levels)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["channels"] = list(self.channels)
        return d


def _conv_block(c_in: int, c_out: int, batch_norm: bool) -> nn.Sequential:
    layers: list[nn.Module] = [nn.Conv2d(c_in, c_out, 3, padding=1, bias=not batch_norm)]
    if batch_norm:
        layers.append(nn.BatchNorm2d(c_out))
    layers.append(nn.ReLU(inplace=True))
    return nn.Sequential(*layers)


class Encoder(nn.Module):
    """(B, 1, n_mels, frames) -> every level's map, (B, C_i, n_mels / 2^i, frames / 2^i) for i = 1..L (the time
    axis halved once more at the first level when first_time_pool is 4); `depth` convs and one max-pool per
    level."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        chans = (1, *cfg.channels)
        self.blocks = nn.Sequential(
            *[
                nn.Sequential(
                    _conv_block(a, b, cfg.batch_norm),
                    *[_conv_block(b, b, cfg.batch_norm) for _ in range(cfg.depth - 1)],
                    nn.MaxPool2d((2, cfg.first_time_pool) if i == 0 else 2),
                )
                for i, (a, b) in enumerate(pairwise(chans))
            ]
        )

    def forward(self, x: torch.Tensor, restyle: Restyle | None = None) -> list[torch.Tensor]:
        return level_maps(self.blocks, x, restyle)


def level_maps(blocks: nn.Sequential, x: torch.Tensor, restyle: Restyle | None = None) -> list[torch.Tensor]:
    """Each of the blocks' outputs in turn, the input of the next (x: (B, 1, n_mels, frames))."""
    maps = []
    for level, block in enumerate(blocks):
        x = block(x)
        if restyle is not None:
            x = restyle(level, x)
        maps.append(x)
    return maps


class Decoder(nn.Module):
    """Mirror of the encoder: (B, C_last, h, w) -> (B, 1, n_mels, frames) in [0, 1]."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        chans = (*cfg.channels[::-1], cfg.channels[0])
        last = len(cfg.channels) - 1  # mirrors the encoder's first pool
        self.blocks = nn.Sequential(
            *[
                nn.Sequential(
                    nn.Upsample(scale_factor=(2, cfg.first_time_pool) if i == last else 2, mode="nearest"),
                    _conv_block(a, b, cfg.batch_norm),
                )
                for i, (a, b) in enumerate(pairwise(chans))
            ]
        )
        self.out = nn.Conv2d(cfg.channels[0], 1, 3, padding=1)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.out(self.blocks(z)))


class AutoEncoder(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg
        self.encoder = Encoder(cfg)
        self.decoder = Decoder(cfg) if cfg.decoder else None
        self.classifier = nn.Linear(cfg.embedding_dim, cfg.n_classes, bias=False) if cfg.n_classes else None

    def pool(self, maps: list[torch.Tensor]) -> torch.Tensor:
        """The levels' feature maps, (B, C_i, h_i, w_i) each -> (B, D) unnormalised embedding."""
        if self.cfg.pooling == "flatten":
            return maps[-1].flatten(1)
        used = maps[-self.cfg.pooled_levels :]
        return torch.cat([f.mean(dim=(2, 3)) for f in used] + [f.amax(dim=(2, 3)) for f in used], dim=1)

    def embed(self, x: torch.Tensor, restyle: Restyle | None = None) -> torch.Tensor:
        """(B, 1, n_mels, frames) -> (B, D) unit vectors."""
        return F.normalize(self.pool(self.encoder(x, restyle)), dim=1)

    def forward(self, x: torch.Tensor, restyle: Restyle | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, 1, n_mels, frames) -> reconstruction (B, 1, n_mels, frames), embedding (B, D) unit vectors."""
        assert self.decoder is not None, "this model was trained without a decoder"
        maps = self.encoder(x, restyle)
        return self.decoder(maps[-1]), F.normalize(self.pool(maps), dim=1)

    logits_scale = 16.0  # the cosine classifier's cosines times this are its logits

    def logits(self, emb: torch.Tensor) -> torch.Tensor:
        """Cosine classifier: (B, D) unit embeddings -> (B, n_classes)."""
        assert self.classifier is not None
        return self.logits_scale * emb @ F.normalize(self.classifier.weight, dim=1).T
