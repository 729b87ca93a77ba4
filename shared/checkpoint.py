"""Training checkpoints (torch) and their export to the ONNX graph that indexing and search run.

A checkpoint (`model.pt`) holds the weights and the recipe that rebuilds them (clip, mel and network
parameters), as nanoGPT saves `model_args`. `export` writes `model.onnx` beside it: the encoder with batch norm
folded in, unit-normalised vectors out (and class probabilities when the model has a classifier head), with
the model's identity and recipe in the graph's metadata. Only this module and training import torch.
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval

from audiosim.shared.audio import ClipSpec
from audiosim.shared.encoder import META_KEY, file_sha256
from audiosim.shared.errors import ModelError
from audiosim.shared.features import MelSpec
from audiosim.shared.identity import ModelIdentity
from audiosim.shared.model import AutoEncoder, ModelConfig, level_maps

CHECKPOINT_FORMAT = "audiosim-encoder/1"
OPSET = 17


def weights_digest(state_dict: dict[str, torch.Tensor]) -> str:
    h = hashlib.sha256()
    for key in sorted(state_dict):
        h.update(key.encode())
        h.update(state_dict[key].detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


def save_checkpoint(
    path: Path,
    model: AutoEncoder,
    *,
    clip: ClipSpec,
    mel: MelSpec,
    name: str,
    extra: dict[str, Any] | None = None,
) -> None:
    """Weights plus the recipe (clip, mel and model parameters) that rebuilds them."""
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    ckpt = {
        "format": CHECKPOINT_FORMAT,
        "name": name,
        "clip": clip.to_dict(),
        "mel": mel.to_dict(),
        "model": model.cfg.to_dict(),
        "state_dict": state,
        "extra": extra or {},
    }
    tmp = path.with_suffix(path.suffix + ".tmp")
    torch.save(ckpt, tmp)
    tmp.replace(path)


def load_checkpoint(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise ModelError.missing(path)
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise ModelError(f"cannot read model checkpoint {path}: {exc}".split("\n")[0]) from exc
    if not isinstance(ckpt, dict) or ckpt.get("format") != CHECKPOINT_FORMAT:
        raise ModelError(f"{path} is not an audiosim encoder checkpoint (expected format {CHECKPOINT_FORMAT})")
    return ckpt


def build_model(ckpt: dict[str, Any]) -> AutoEncoder:
    model = AutoEncoder(ModelConfig(**ckpt["model"]))
    model.load_state_dict(ckpt["state_dict"])
    return model.eval()


def identity_of(ckpt: dict[str, Any], path: Path) -> ModelIdentity:
    return ModelIdentity(
        name=str(ckpt.get("name") or path.stem),
        digest=weights_digest(ckpt["state_dict"]),
        dim=ModelConfig(**ckpt["model"]).embedding_dim,
        clip=dict(ckpt["clip"]),
        mel=dict(ckpt["mel"]),
    )


def folded_encoder(model: AutoEncoder) -> nn.Sequential:
    """The encoder half with batch norm folded into the convolutions (the same numbers, to float rounding)."""
    blocks: list[nn.Module] = []
    for level in copy.deepcopy(model.encoder).eval().blocks:
        assert isinstance(level, nn.Sequential)
        *conv_blocks, pool = list(level)
        layers: list[nn.Module] = []
        for conv_block in conv_blocks:
            assert isinstance(conv_block, nn.Sequential)
            parts = list(conv_block)
            if len(parts) == 3 and isinstance(parts[0], nn.Conv2d) and isinstance(parts[1], nn.BatchNorm2d):
                parts = [fuse_conv_bn_eval(parts[0], parts[1]), parts[2]]
            layers.extend(parts)
        blocks.append(nn.Sequential(*layers, pool))
    return nn.Sequential(*blocks).eval()


class InferenceGraph(nn.Module):
    """What the ONNX file computes: (B, n_mels, frames) images -> (B, D) unit vectors, plus (B, C) class
    probabilities when the model has a classifier head."""

    def __init__(self, model: AutoEncoder):
        super().__init__()
        self.net = folded_encoder(model)
        self.model = model

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, ...]:
        maps = level_maps(self.net, images.unsqueeze(1))  # images: (B, n_mels, frames)
        emb = F.normalize(self.model.pool(maps), dim=1)  # (B, D)
        if self.model.classifier is None:
            return (emb,)
        return emb, torch.softmax(self.model.logits(emb), dim=1)  # (B, C)


class EnsembleGraph(nn.Module):
    """Several members' graphs on the same images: their unit vectors concatenated and scaled by 1/sqrt(K), so
    the result is a unit vector whose cosine with another is the mean of the members' cosines; their class
    probabilities averaged. With a projection (sum of D, k) (orthonormal columns, see `fit_projection`), the
    vector is projected onto those k directions and normalised again; the ONNX graph names it `projection`.
    With posterior w > 0 the unit class-probability vector, scaled by sqrt(w), is appended and the whole
    normalised again (k + C dims): a cosine is then (the members' cosine + w x the probabilities' cosine) / (1 + w).
    """

    projection: torch.Tensor | None

    def __init__(self, members: list[InferenceGraph]):
        super().__init__()
        self.members = nn.ModuleList(members)
        self.register_buffer("projection", None)  # set by export_ensemble when it fits one
        self.posterior = 0.0  # set by export_ensemble when the probabilities join the vector

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, ...]:
        outs = [m(images) for m in self.members]  # K x ((B, D_k), maybe (B, C))
        emb = torch.cat([o[0] for o in outs], dim=1) / len(outs) ** 0.5  # (B, sum D_k)
        if self.projection is not None:
            emb = F.normalize(emb @ self.projection, dim=1)  # (B, k)
        if len(outs[0]) == 1:
            return (emb,)
        probs = torch.stack([o[1] for o in outs]).mean(dim=0)  # (B, C)
        if self.posterior > 0:
            tail = self.posterior**0.5 * F.normalize(probs, dim=1)
            emb = F.normalize(torch.cat([emb, tail], dim=1), dim=1)  # (B, k + C)
        return emb, probs


def fit_projection(graph: EnsembleGraph, images: np.ndarray, dim: int) -> torch.Tensor:
    """The `dim` directions that keep the most of the ensemble's vectors of `images` (B, n_mels, frames): the top
    right singular vectors of the (B, D) matrix, not centred (centring moves the origin that cosine measures
    from), as (D, dim) orthonormal columns."""
    with torch.no_grad():
        vectors = torch.cat([graph(torch.from_numpy(images[i : i + 256]))[0] for i in range(0, len(images), 256)])
    n, d = vectors.shape
    if not 0 < dim <= min(n, d):
        raise ModelError(f"a {dim}-d projection needs at least {dim} clips to fit on (got {n}) and at most {d} dims")
    _, _, vt = np.linalg.svd(vectors.numpy().astype(np.float64), full_matrices=False)  # vt: (min(n, d), D)
    return torch.from_numpy(np.ascontiguousarray(vt[:dim].T, dtype=np.float32))


def onnx_path(checkpoint: Path) -> Path:
    return checkpoint.with_suffix(".onnx")


def _classes(ckpt: dict[str, Any], model: AutoEncoder) -> list[str]:
    return list(ckpt.get("extra", {}).get("classes") or []) if model.classifier is not None else []


def export(checkpoint: Path, out: Path | None = None) -> Path:
    """Write the ONNX graph of a checkpoint (default: beside it, `.onnx`) and return its path."""
    ckpt = load_checkpoint(checkpoint)
    model = build_model(ckpt)
    classes = _classes(ckpt, model)
    meta = {
        "identity": identity_of(ckpt, checkpoint).to_dict(),
        "classes": classes,
        "checkpoint_sha256": file_sha256(checkpoint),
    }
    return _write(InferenceGraph(model).eval(), MelSpec(**ckpt["mel"]), meta, out or onnx_path(checkpoint))


def member_recipe(checkpoint: Path) -> tuple[ClipSpec, MelSpec]:
    ckpt = load_checkpoint(checkpoint)
    return ClipSpec(**ckpt["clip"]), MelSpec(**ckpt["mel"])


def export_ensemble(
    checkpoints: list[Path],
    out: Path,
    *,
    dim: int | None = None,
    fit: np.ndarray | None = None,
    posterior: float = 0.0,
) -> Path:
    """Write one ONNX graph running every checkpoint on the same images (see `EnsembleGraph`), its vector
    projected to `dim` directions fitted on the images `fit` (B, n_mels, frames) when dim is given, with the
    class probabilities appended at weight `posterior` when it is above 0. The members must share the clip and
    mel recipe and the class names; the identity's digest covers every member's weights, the projection and the
    posterior weight."""
    ckpts = [load_checkpoint(p) for p in checkpoints]
    models = [build_model(c) for c in ckpts]
    ids = [identity_of(c, p) for c, p in zip(ckpts, checkpoints, strict=True)]
    classes = [_classes(c, m) for c, m in zip(ckpts, models, strict=True)]
    for path, ident, names in zip(checkpoints[1:], ids[1:], classes[1:], strict=True):
        if (ident.clip, ident.mel) != (ids[0].clip, ids[0].mel):
            raise ModelError(f"{path} reads clips or mel images unlike {checkpoints[0]}: it cannot join the ensemble")
        if names != classes[0]:
            raise ModelError(f"{path} names other classes than {checkpoints[0]}: it cannot join the ensemble")
    graph = EnsembleGraph([InferenceGraph(m).eval() for m in models]).eval()
    digest = hashlib.sha256(" ".join(i.digest for i in ids).encode())
    if dim is not None:
        if fit is None:
            raise ModelError("a projected ensemble needs clips to fit the projection on")
        graph.projection = fit_projection(graph, fit, dim)
        digest.update(graph.projection.numpy().tobytes())
    if posterior > 0:
        if not classes[0]:
            raise ModelError(f"{checkpoints[0]} has no classifier head: there are no class probabilities to append")
        graph.posterior = posterior
        digest.update(f"posterior {posterior!r}".encode())
    joined = sum(i.dim for i in ids)
    tail = len(classes[0]) if posterior > 0 else 0
    identity = ModelIdentity(
        name=out.stem,
        digest=digest.hexdigest()[:16],
        dim=(dim or joined) + tail,
        clip=ids[0].clip,
        mel=ids[0].mel,
        posterior={"weight": posterior, "dims": tail} if tail else None,
    )
    members = [
        {"name": i.name, "digest": i.digest, "checkpoint_sha256": file_sha256(p),
         "file": os.path.relpath(p.resolve(), out.resolve().parent)}
        for i, p in zip(ids, checkpoints, strict=True)
    ]  # fmt: skip
    meta: dict[str, Any] = {"identity": identity.to_dict(), "classes": classes[0], "members": members}
    if graph.projection is not None and fit is not None:
        meta["projection"] = {"dim": dim, "from": joined, "fitted_on_clips": len(fit)}
    return _write(graph, MelSpec(**ckpts[0]["mel"]), meta, out)


def _write(graph: nn.Module, mel: MelSpec, meta: dict[str, Any], out: Path) -> Path:
    example = torch.rand(2, mel.n_mels, mel.frames)
    outputs = ["vectors", "probs"] if meta["classes"] else ["vectors"]
    tmp = out.with_suffix(".onnx.tmp")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the TorchScript-based exporter is deprecated, and all we need here
        torch.onnx.export(
            graph,
            (example,),
            str(tmp),
            input_names=["images"],
            output_names=outputs,
            dynamic_axes={name: {0: "batch"} for name in ["images", *outputs]},
            opset_version=OPSET,
            dynamo=False,
        )
    import onnx

    proto = onnx.load(str(tmp))
    entry = proto.metadata_props.add()
    entry.key, entry.value = META_KEY, json.dumps(meta)
    onnx.save(proto, str(tmp))
    tmp.replace(out)
    return out
