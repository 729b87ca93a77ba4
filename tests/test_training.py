"""Training for real on the bundled samples: the loss falls, the checkpoint rebuilds, a seed repeats."""

from __future__ import annotations

import numpy as np
import pytest

from indexer.training import TrainConfig, train
from shared.encoder import Encoder, load_checkpoint
from tests.conftest import SAMPLES


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    out = tmp_path_factory.mktemp("train") / "m.pt"
    cfg = TrainConfig(epochs=4, batch_size=16, seed=3, labels="folder", workers=1)
    history = train([SAMPLES], out, cfg)
    return out, history, cfg


def test_loss_falls_and_best_epoch_is_kept(trained):
    out, history, _ = trained
    assert len(history) == 4
    assert history[-1].train_loss < history[0].train_loss
    ckpt = load_checkpoint(out)
    best = min(history, key=lambda e: e.val_loss)
    assert ckpt["extra"]["epoch"] == best.epoch
    assert ckpt["extra"]["classes"] == sorted({p.parent.name for p in SAMPLES.rglob("*.*") if p.suffix != ".md"})


def test_checkpoint_rebuilds_the_encoder(trained):
    out, _, _ = trained
    enc = Encoder(out)
    assert enc.dim == 256
    assert enc.clip_spec.sample_rate == 22050 and enc.clip_spec.seconds == 2.0
    v = enc.embed(np.random.default_rng(0).standard_normal((3, enc.clip_spec.n_samples)).astype(np.float32))
    np.testing.assert_allclose(np.linalg.norm(v, axis=1), 1.0, atol=1e-5)


def test_same_seed_same_model(trained, tmp_path):
    out, _, cfg = trained
    again = tmp_path / "again.pt"
    train([SAMPLES], again, cfg)
    assert Encoder(again).identity.digest == Encoder(out).identity.digest
