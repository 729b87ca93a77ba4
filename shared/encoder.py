"""Model file -> Encoder: a batch of clips in, a batch of unit vectors out (ONNX Runtime), plus the model's
identity and, when it has a classifier head, the class it hears.

The model file is the ONNX graph that training exports (`audiosim-index export`); its metadata carries the
identity (weights digest, dimension, clip and mel recipe) and the class names. A training checkpoint (`.pt`)
may be named instead: the up-to-date `.onnx` beside it is used, or made on the spot when torch is installed.
Indexing and search never import torch.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from audiosim.shared.audio import ClipSpec
from audiosim.shared.errors import ModelError
from audiosim.shared.features import MelSpec, mel_images
from audiosim.shared.identity import ModelIdentity

META_KEY = "audiosim"


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as fh:
        while block := fh.read(1 << 20):
            h.update(block)
    return h.hexdigest()


@dataclass(frozen=True)
class Embedded:
    vectors: np.ndarray  # (B, D) float32 unit vectors
    probs: np.ndarray | None  # (B, C) class probabilities, or None for a model without a classifier head


def resolve(path: Path) -> Path:
    """The ONNX file to run for a model setting: the file itself, or for a `.pt` checkpoint its exported
    `.onnx` (exported now if it is missing or stale and torch is installed)."""
    if not path.is_file():
        raise ModelError.missing(path)
    if path.suffix != ".pt":
        return path
    onnx_file = path.with_suffix(".onnx")
    if onnx_file.is_file() and _meta(_session(onnx_file, 1), onnx_file).get("checkpoint_sha256") == file_sha256(path):
        return onnx_file
    try:
        from audiosim.shared.checkpoint import export
    except ImportError:  # torch is not installed: this is a light install
        raise ModelError(
            f"{path} is a training checkpoint with no up-to-date {onnx_file.name} beside it: export it with "
            f"`audiosim-index export {path}` (needs `pip install 'audiosim[train]'`)"
        ) from None
    try:
        return export(path)
    except OSError as exc:
        raise ModelError(
            f"cannot write {onnx_file} next to {path}: {exc.strerror}; export it elsewhere with "
            f"`audiosim-index export {path} --out FILE.onnx` and use that file"
        ) from None


def _session(path: Path, threads: int) -> Any:
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.log_severity_level = 3
    try:
        return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    except Exception as exc:
        raise ModelError(f"cannot read model {path}: {str(exc).splitlines()[0][:200]}") from None


def _meta(sess: Any, path: Path) -> dict[str, Any]:
    text = sess.get_modelmeta().custom_metadata_map.get(META_KEY)
    if text is None:
        raise ModelError(f"{path} is an ONNX model but not an audiosim encoder (no '{META_KEY}' metadata)")
    meta: dict[str, Any] = json.loads(text)
    return meta


class Encoder:
    """Clips -> unit vectors with a trained model; feature parameters come from the model file.

    threads: ONNX Runtime's threads for this session (1 in each indexing worker: two single-threaded processes
    use two cores better than one process with two threads).
    """

    def __init__(self, path: Path, *, threads: int = 1):
        self.path = path
        self.file = resolve(path)
        self._sess = _session(self.file, threads)
        meta = _meta(self._sess, self.file)
        self.identity = ModelIdentity.from_dict(meta["identity"])
        self.classes: list[str] = list(meta.get("classes") or [])
        # an ensemble's members: name, digest, checkpoint_sha256 and file (beside this model); empty for one network
        self.members: list[dict[str, str]] = list(meta.get("members") or [])
        self.clip_spec = ClipSpec(**self.identity.clip)
        self.mel_spec = MelSpec(**self.identity.mel)
        self._outputs = [o.name for o in self._sess.get_outputs()]

    @property
    def dim(self) -> int:
        return self.identity.dim

    def images(self, clips: np.ndarray) -> np.ndarray:
        """(B, n_samples) -> (B, n_mels, frames)."""
        return mel_images(clips, sample_rate=self.clip_spec.sample_rate, spec=self.mel_spec)

    def run_images(self, images: np.ndarray) -> Embedded:
        """(B, n_mels, frames) -> unit vectors (B, D) and, with a classifier head, probabilities (B, C)."""
        out = self._sess.run(None, {"images": np.ascontiguousarray(images, dtype=np.float32)})
        named = dict(zip(self._outputs, out, strict=True))
        return Embedded(named["vectors"], named.get("probs"))

    def embed_images(self, images: np.ndarray) -> np.ndarray:
        """(B, n_mels, frames) -> (B, D) float32 unit vectors."""
        return self.run_images(images).vectors

    def embed(self, clips: np.ndarray) -> np.ndarray:
        """(B, n_samples) -> (B, D) float32 unit vectors."""
        return self.embed_images(self.images(clips))

    def run(self, clips: np.ndarray) -> Embedded:
        """(B, n_samples) -> vectors and class probabilities."""
        return self.run_images(self.images(clips))
