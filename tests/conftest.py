"""Shared fixtures: the bundled samples, the real shipped model, and both real store back ends."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from audiosim.shared.settings import SHIPPED_MODEL, Settings
from audiosim.shared.store import Store, open_store

REPO = Path(__file__).resolve().parent.parent
SAMPLES = REPO / "samples"
FIXTURES = Path(__file__).resolve().parent / "fixtures"
AUDIO = FIXTURES / "audio"
BACKENDS = ["edge", "server"]


@pytest.fixture
def samples(tmp_path: Path) -> Path:
    """A private copy of the bundled samples that a test may change."""
    dst = tmp_path / "library"
    shutil.copytree(SAMPLES, dst, ignore=shutil.ignore_patterns("*.md"))
    return dst


@pytest.fixture(scope="session")
def model_path() -> Path:
    assert SHIPPED_MODEL.is_file(), "the shipped model is missing"
    return SHIPPED_MODEL


def shipped_checkpoints() -> list[Path]:
    """The training checkpoints the shipped model was exported from: its members, or the one beside it."""
    from audiosim.shared.encoder import Encoder, file_sha256

    members = Encoder(SHIPPED_MODEL).members
    if not members:
        return [SHIPPED_MODEL.with_suffix(".pt")]
    paths = [SHIPPED_MODEL.parent / m["file"] for m in members]
    assert [file_sha256(p) for p in paths] == [m["checkpoint_sha256"] for m in members], "stale export"
    return paths


def shipped_projection() -> np.ndarray | None:
    """The shipped ensemble's projection (sum of D, k), read from its ONNX graph; None without one."""
    import onnx
    from onnx import numpy_helper

    found = [i for i in onnx.load(str(SHIPPED_MODEL)).graph.initializer if i.name == "projection"]
    return numpy_helper.to_array(found[0]) if found else None


def torch_outputs(checkpoints: list[Path], images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """What the shipped model computes, in torch from its checkpoints (batch norm not folded): images (B, n_mels,
    frames) -> unit vectors (B, D) (the members' side by side over sqrt(K), then projected and normalised again
    when the ensemble has a projection, then the unit probabilities appended at the model's posterior weight
    and normalised again) and class probabilities (B, C), averaged over the members."""
    import torch

    from audiosim.shared.checkpoint import build_model, load_checkpoint
    from audiosim.shared.encoder import Encoder

    x = torch.from_numpy(np.ascontiguousarray(images, dtype=np.float32)).unsqueeze(1)
    vectors, probs = [], []
    with torch.no_grad():
        for path in checkpoints:
            model = build_model(load_checkpoint(path))
            emb = model.embed(x)  # (B, D)
            vectors.append(emb.numpy())
            probs.append(torch.softmax(model.logits(emb), dim=1).numpy())
    joined = np.concatenate(vectors, axis=1) / np.sqrt(len(vectors))  # (B, sum of D)
    if len(checkpoints) > 1 and (projection := shipped_projection()) is not None:
        joined = joined @ projection  # (B, k)
        joined /= np.linalg.norm(joined, axis=1, keepdims=True)
    mean_probs = np.mean(probs, axis=0)  # (B, C)
    if posterior := Encoder(SHIPPED_MODEL).identity.posterior:
        weight = posterior["weight"]
        tail = np.sqrt(weight) * mean_probs / np.linalg.norm(mean_probs, axis=1, keepdims=True)
        joined = np.concatenate([joined, tail], axis=1) / np.sqrt(1 + weight)  # (B, D + C)
    return joined, mean_probs


def backend_env(backend: str, tmp_path: Path) -> dict[str, str]:
    """Environment that points the CLIs at a fresh store of the given back end."""
    env = {"AUDIOSIM_COLLECTION": "test", "AUDIOSIM_WORKERS": "0", "AUDIOSIM_LOCK_TIMEOUT": "5"}
    if backend == "edge":
        env["AUDIOSIM_STORE"] = str(tmp_path / "edge-store")
        env["AUDIOSIM_QDRANT_URL"] = ""
    else:
        # The server code path (qdrant-client) against qdrant-client's local mode: no server runs here.
        env["AUDIOSIM_QDRANT_URL"] = f"local:{tmp_path / 'qdrant-local'}"
        env["AUDIOSIM_STORE"] = str(tmp_path / "unused-edge-store")
    return env


def settings_for(env: dict[str, str]) -> Settings:
    """The settings a CLI started with env (AUDIOSIM_* variables) would build."""
    return Settings(**{k.removeprefix("AUDIOSIM_").lower(): v for k, v in env.items() if k.startswith("AUDIOSIM_")})


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def env(backend: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    e = backend_env(backend, tmp_path)
    for k, v in e.items():
        monkeypatch.setenv(k, v)
    return e


@pytest.fixture
def store(env: dict[str, str]) -> Iterator[Store]:
    s = open_store(Settings())
    yield s
    s.close()


@pytest.fixture
def runner() -> CliRunner:
    return CliRunner()


@pytest.fixture(autouse=True, scope="session")
def _private_model_cache(tmp_path_factory: pytest.TempPathFactory) -> None:
    """Model identities are cached under XDG_CACHE_HOME; keep the tests' cache out of the user's."""
    import os

    os.environ["XDG_CACHE_HOME"] = str(tmp_path_factory.mktemp("cache"))
