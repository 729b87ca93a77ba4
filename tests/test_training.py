"""Training for real on the bundled samples: the loss falls, the checkpoint rebuilds, a seed repeats."""

from __future__ import annotations

import numpy as np
import pytest

from audiosim.indexer.training import TrainConfig, train
from audiosim.shared.checkpoint import build_model, load_checkpoint
from audiosim.shared.encoder import Encoder
from tests.conftest import SAMPLES, shipped_checkpoints, torch_outputs


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
    assert enc.dim == build_model(load_checkpoint(out)).cfg.embedding_dim
    assert enc.clip_spec.sample_rate == 22050 and enc.clip_spec.seconds == 2.0
    v = enc.embed(np.random.default_rng(0).standard_normal((3, enc.clip_spec.n_samples)).astype(np.float32))
    np.testing.assert_allclose(np.linalg.norm(v, axis=1), 1.0, atol=1e-5)


def test_same_seed_same_model(trained, tmp_path):
    out, _, cfg = trained
    again = tmp_path / "again.pt"
    train([SAMPLES], again, cfg)
    assert Encoder(again).identity.digest == Encoder(out).identity.digest


def test_pictures_and_state_are_written_beside_the_model(trained):
    out, _, _ = trained
    for name in ("loss.png", "reconstructions.png"):
        data = (out.parent / name).read_bytes()
        assert data.startswith(b"\x89PNG") and len(data) > 2000
    assert (out.parent / "m.pt.state").is_file()


def test_resume_continues_from_the_saved_epoch(tmp_path):
    out = tmp_path / "r" / "m.pt"
    cfg = TrainConfig(epochs=2, batch_size=16, seed=5, workers=1)
    first = train([SAMPLES], out, cfg)
    assert [e.epoch for e in first] == [1, 2]
    more = train([SAMPLES], out, TrainConfig(epochs=4, batch_size=16, seed=5, workers=1, resume=True))
    assert [e.epoch for e in more] == [1, 2, 3, 4]
    assert [e.train_loss for e in more[:2]] == [e.train_loss for e in first]


def test_resume_without_a_previous_run_is_an_error(tmp_path):
    from audiosim.shared.errors import ConfigError

    with pytest.raises(ConfigError, match="nothing to resume"):
        train([SAMPLES], tmp_path / "x.pt", TrainConfig(epochs=1, workers=1, resume=True))


def test_eval_ranks_a_planted_near_copy_first(tmp_path, model_path):
    """Folder 'twins' holds a clip and a quieter, slightly noisy copy: each must be the other's first hit."""
    import shutil

    import soundfile as sf
    from typer.testing import CliRunner

    from audiosim.indexer.cli import app

    lib = tmp_path / "lib"
    shutil.copytree(SAMPLES, lib, ignore=shutil.ignore_patterns("*.md"))
    twins = lib / "twins"
    twins.mkdir()
    src = lib / "Drums" / "Snares" / "sn_dub.wav"
    y, sr = sf.read(src)
    shutil.move(src, twins / "a.wav")
    noisy = 0.5 * y + 0.002 * np.random.default_rng(0).standard_normal(y.shape)
    sf.write(twins / "b.wav", noisy, sr)

    r = CliRunner().invoke(app, ["--model", str(model_path), "eval", str(lib), "--format", "json"])
    assert r.exit_code == 0, r.output
    import json

    report = json.loads(r.stdout)
    assert report["model_scores"]["per_class"]["twins"]["p@1"] == 1.0
    assert report["clips"] == 47
    assert set(report["baseline_scores"]["overall"]) == {"p@1", "p@10", "map", "queries"}


def test_the_same_file_gives_the_same_vector_everywhere(tmp_path, model_path, monkeypatch):
    """Training's decode (in spawned workers), indexing (in spawned workers) and a search-time encode agree."""
    from audiosim.indexer.job import IndexJob, IndexOptions
    from audiosim.indexer.stages import run_index
    from audiosim.indexer.training import load_images
    from audiosim.shared.audio import read_clip, walk_audio
    from audiosim.shared.store import point_id
    from audiosim.shared.store.edge import EdgeStore

    enc = Encoder(model_path)
    files = list(walk_audio([SAMPLES / "Drums" / "Snares"]))
    images, _ = load_images(files, enc.clip_spec, enc.mel_spec, workers=2)
    from_training, _ = torch_outputs(shipped_checkpoints(), np.stack(images))

    store = EdgeStore(tmp_path, "c")
    run_index(IndexJob(store, [SAMPLES / "Drums" / "Snares"], model_path, IndexOptions(workers=2, batch_size=4)))
    stored = {r.id: r.vector for r in store.retrieve([point_id(f.path) for f in files], with_vector=True)}
    store.close()
    at_search = enc.embed(np.stack([read_clip(f.path, enc.clip_spec).samples for f in files]))
    for i, f in enumerate(files):
        np.testing.assert_allclose(from_training[i], at_search[i], atol=1e-5)
        np.testing.assert_allclose(stored[point_id(f.path)], at_search[i], atol=5e-4)  # stored as float16


def test_a_planted_state_file_cannot_run_code(tmp_path):
    """--resume loads its state with weights_only=True: a pickle that would run code is refused, not run."""
    import pickle

    from audiosim.shared.errors import ConfigError

    marker = tmp_path / "ran"

    class Planted:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    out = tmp_path / "m.pt"
    (tmp_path / "m.pt.state").write_bytes(pickle.dumps({"model": Planted()}))
    with pytest.raises(ConfigError, match="cannot resume"):
        train([SAMPLES / "Drums"], out, TrainConfig(epochs=1, workers=1, resume=True))
    assert not marker.exists()


def test_a_preset_without_reconstruction_carries_no_decoder(tmp_path):
    out = tmp_path / "v4" / "m.pt"
    cfg = TrainConfig(preset="v4", epochs=2, batch_size=16, seed=1, labels="folder", workers=1)
    history = train([SAMPLES], out, cfg)
    assert history[-1].train_loss < history[0].train_loss
    ckpt = load_checkpoint(out)
    assert ckpt["model"]["decoder"] is False and not any(k.startswith("decoder.") for k in ckpt["state_dict"])
    assert not (out.parent / "reconstructions.png").exists() and (out.parent / "loss.png").is_file()
    enc = Encoder(out.with_suffix(".onnx"))  # the export training wrote
    assert enc.dim == 512 and enc.identity.digest == Encoder(out).identity.digest


def test_cross_source_positives_are_the_same_class_from_another_source():
    import torch

    from audiosim.indexer.training import source_of, supcon

    assert source_of("/lib/kick/hydrogen__k1.wav") == "hydrogen" and source_of("/lib/kick/k1.wav") == ""
    # clips 0 and 1: kicks of source 0; clip 2: a kick of source 1; clip 3: a snare of source 0.
    labels, sources = torch.tensor([0, 0, 0, 1]), torch.tensor([0, 0, 1, 0])
    near_same_source = torch.nn.functional.normalize(torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0], [-1.0, 0.0]]))
    near_other_source = torch.nn.functional.normalize(torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 0.0], [-1.0, 0.0]]))
    # Plain supcon cannot tell which kick sits next to clip 0; the cross-source loss prefers the other source's.
    assert torch.isclose(supcon(near_same_source, labels), supcon(near_other_source, labels), atol=1e-4)
    assert supcon(near_other_source, labels, sources=sources) < supcon(near_same_source, labels, sources=sources)
    # one source only: the same loss as plain supcon
    one = torch.zeros(4, dtype=torch.long)
    assert torch.isclose(supcon(near_same_source, labels, sources=one), supcon(near_same_source, labels))


@pytest.mark.parametrize(
    ("preset", "pooling", "dim"),
    [
        ("v6", "multiscale", 2 * (64 + 128)),
        ("v13", "multiscale3", 2 * (32 + 64 + 128)),
        ("v17", "multiscale", 2 * (64 + 128)),  # two convolutions per level, each folded with its batch norm
        ("v19", "multiscale", 2 * (64 + 128)),  # 128-frame images, pooled 2x4 at the first level
    ],
)
def test_multiscale_pooling_exports_the_vector_torch_computes(tmp_path, preset, pooling, dim):
    import onnxruntime as ort
    import torch

    out = tmp_path / preset / "m.pt"
    train([SAMPLES], out, TrainConfig(preset=preset, epochs=1, batch_size=16, seed=1, labels="folder", workers=1))
    model = build_model(load_checkpoint(out)).eval()
    assert model.cfg.pooling == pooling and model.cfg.embedding_dim == dim
    images = torch.rand(3, 64, model.cfg.frames)  # (B, n_mels, frames)
    with torch.no_grad():
        expected = model.embed(images.unsqueeze(1)).numpy()  # (B, dim)
    session = ort.InferenceSession(str(out.with_suffix(".onnx")), providers=["CPUExecutionProvider"])
    got = session.run(["vectors"], {"images": images.numpy()})[0]
    assert got.shape == (3, dim) and np.abs(got - expected).max() < 1e-5


def test_balanced_epochs_draw_small_sources_more_often():
    import torch

    from audiosim.indexer.training import epoch_order

    gen = torch.Generator().manual_seed(0)
    assert sorted(epoch_order(6, gen).tolist()) == list(range(6))  # unweighted: every clip once
    # 900 clips of a large source, 100 of a small one, weights count ** -0.5: shares 3:1 instead of 9:1
    counts = torch.tensor([900.0] * 900 + [100.0] * 100)
    drawn = epoch_order(1000, gen, counts**-0.5)
    small = float((drawn >= 900).float().mean())
    assert len(drawn) == 1000 and 0.2 < small < 0.3


def test_the_source_adversary_trains_against_the_vector(tmp_path):
    """Gradient reversal: the source classifier's gradient reaches the encoder negated. A two-source library
    trains with the adversary, saves it for --resume, and its checkpoint carries no trace of it."""
    import shutil

    import torch

    from audiosim.indexer.training import _Reverse, state_path

    x = torch.ones(3, requires_grad=True)
    (_Reverse.apply(x) * torch.tensor([1.0, 2.0, 3.0])).sum().backward()
    assert x.grad.tolist() == [-1.0, -2.0, -3.0]

    lib = tmp_path / "lib"
    for f in SAMPLES.rglob("*.*"):
        if f.suffix != ".md":
            for source in ("a", "b"):
                (lib / f.parent.name).mkdir(parents=True, exist_ok=True)
                shutil.copy(f, lib / f.parent.name / f"{source}__{f.name}")
    out = tmp_path / "v8" / "m.pt"
    cfg = TrainConfig(preset="v8", epochs=1, batch_size=16, seed=1, labels="folder", workers=1)
    train([lib], out, cfg)
    state = torch.load(state_path(out), weights_only=True)
    assert state["adversary"]["weight"].shape == (2, 384)  # two sources, the 384-d vector
    assert not any("adversary" in k for k in load_checkpoint(out)["state_dict"])
    more = train([lib], out, TrainConfig(**{**cfg.__dict__, "epochs": 2, "resume": True}))
    assert [e.epoch for e in more] == [1, 2]


def test_a_raised_noise_floor_fills_silence_and_leaves_loud_sound():
    import torch

    from audiosim.indexer.training import augment

    x = torch.zeros(8, 1, 64, 64)  # (B, 1, M, T): silence, with one loud band
    x[:, :, 30:34, :] = 0.9
    plain = augment(x, torch.Generator().manual_seed(0), pitch=0)
    hissy = augment(x, torch.Generator().manual_seed(0), pitch=0, floor=0.4)
    silent = plain < 0.3
    assert (hissy[silent] >= plain[silent]).all() and hissy[silent].mean() > plain[silent].mean() + 0.05
    assert hissy[silent].max() <= 0.4 + 1e-6 and torch.equal(hissy[~silent], plain[~silent])


def test_reverberation_rings_after_a_hit_and_not_before():
    import torch

    from audiosim.indexer.training import reverberate

    x = torch.zeros(4, 1, 8, 32)  # (B, 1, M, T): silence (-80 dB) with one hit at frame 10
    x[:, :, :, 10] = 1.0
    dry = reverberate(x, torch.Generator().manual_seed(0), wet=0.0)
    wet = reverberate(x, torch.Generator().manual_seed(0), wet=0.5)
    assert torch.allclose(dry, x)
    # before the hit only the -80 dB floor's own ring (at most 10 log10(1.5) = 1.8 dB), the hit still the peak
    assert torch.allclose(wet[..., :10], x[..., :10], atol=1.8 / 80) and torch.allclose(wet[..., 10], x[..., 10])
    tail = wet[..., 11:]  # (B, 1, M, 21)
    assert (tail[..., 0] > 0.3).all() and (tail[..., 1:] <= tail[..., :-1] + 1e-6).all()  # it rings, and dies away


def test_mixup_adds_the_sounds_and_their_labels():
    import torch

    from audiosim.indexer.training import mix

    x = torch.zeros(2, 1, 64, 64)  # (B, 1, M, T): two clips sounding in different bands at their peak
    x[0, :, 10, :] = 1.0
    x[1, :, 50, :] = 1.0
    mixed, soft = mix(x, torch.tensor([0, 2]), 3, alpha=0.4, gen=torch.Generator().manual_seed(0))
    assert soft.shape == (2, 3) and torch.allclose(soft.sum(1), torch.ones(2)) and (soft[:, 1] == 0).all()
    assert (soft.max(1).values < 1).all()  # this seed pairs the two clips
    for i in range(2):
        w = soft[i, [0, 2][i]]  # the clip's own share of the power
        # both bands sound; the quieter is 10*log10(w_small / w_big) dB below the peak, in 80 dB units
        own, other = mixed[i, 0, [10, 50][i], 0], mixed[i, 0, [50, 10][i], 0]
        lo, hi = min(w, 1 - w), max(w, 1 - w)
        expected = 1.0 + 10 * torch.log10(lo / hi) / 80
        assert torch.isclose(min(own, other), expected.clamp(0, 1), atol=1e-4) and max(own, other) == 1.0


def test_finer_images_reach_the_exported_model(tmp_path):
    """v12's 128-frame images: the checkpoint records them, and the exported model takes and embeds them."""
    out = tmp_path / "v12" / "m.pt"
    train([SAMPLES], out, TrainConfig(preset="v12", epochs=1, batch_size=16, seed=1, labels="folder", workers=1))
    enc = Encoder(out.with_suffix(".onnx"))
    assert (enc.mel_spec.n_mels, enc.mel_spec.frames) == (64, 128)
    clips = np.random.default_rng(0).normal(0, 0.1, (2, enc.clip_spec.n_samples)).astype(np.float32)
    images = enc.images(clips)  # (2, 64, 128)
    assert images.shape == (2, 64, 128)
    vectors = enc.embed(clips)  # (2, 384) unit vectors
    assert vectors.shape == (2, 384) and np.allclose(np.linalg.norm(vectors, axis=1), 1, atol=1e-5)


def test_every_preset_builds_the_network_its_comment_names():
    """The recipes differ only as their names say: image size, pooling and the decoder follow each preset."""
    from dataclasses import replace

    import torch

    from audiosim.indexer.training import PRESETS
    from audiosim.shared.model import AutoEncoder

    shapes = {}
    for name, preset in PRESETS.items():
        cfg = preset.model_config(n_classes=3)
        model = AutoEncoder(cfg)
        assert (model.decoder is not None) == (preset.losses["recon"] > 0), name
        shapes[name] = (cfg.n_mels, cfg.frames, cfg.embedding_dim)
    assert shapes["v6"] == (64, 64, 384) and shapes["v14"] == shapes["v6"]
    assert shapes["v12"] == (64, 128, 384) and shapes["v15"] == shapes["v12"]
    assert shapes["v13"] == (64, 64, 448) and shapes["seed"] == (128, 128, 16 * 8 * 8)
    assert shapes["v16"] == shapes["v6"] and PRESETS["v16"].mel.n_fft == 512
    assert shapes["v17"] == shapes["v6"]
    assert PRESETS["v18"].augment == {**(PRESETS["v6"].augment or {}), "reverb": 0.5}
    assert PRESETS["v20"].augment == {**(PRESETS["v6"].augment or {}), "reverb": 0.1}
    convs = {
        name: sum(isinstance(m, torch.nn.Conv2d) for m in AutoEncoder(p.model_config()).encoder.modules())
        for name, p in PRESETS.items()
    }
    assert convs["v6"] == 4 and convs["v17"] == 8
    assert shapes["v19"] == shapes["v12"]  # v12's images; after the first level, v6's maps
    maps = AutoEncoder(PRESETS["v19"].model_config()).encoder(torch.rand(1, 1, 64, 128))
    assert [tuple(f.shape[2:]) for f in maps] == [(32, 32), (16, 16), (8, 8), (4, 4)]
    assert shapes["v21"] == shapes["v6"] and PRESETS["v21"].mel.top_db == 60.0
    assert shapes["v22"] == shapes["v6"] and PRESETS["v22"].mixstyle == 0.5
    assert PRESETS["v23"] == replace(PRESETS["v6"], swa=0.5)
    assert PRESETS["v24"].losses == {**PRESETS["v6"].losses, "supcon": 1.0} and shapes["v24"] == shapes["v6"]
    assert PRESETS["v25"] == replace(PRESETS["v6"], margin=0.2)
    assert PRESETS["v26"].losses == {**PRESETS["v6"].losses, "recon": 0.5} and shapes["v26"] == shapes["v6"]
    assert PRESETS["v27"].losses == {**PRESETS["v6"].losses, "supcon": 0.25} and shapes["v27"] == shapes["v6"]
    assert PRESETS["v28"] == replace(PRESETS["v6"], mel=replace(PRESETS["v6"].mel, break_hz=200.0))
    assert PRESETS["v29"] == replace(PRESETS["v28"], augment={**(PRESETS["v28"].augment or {}), "masks": 2})
    assert PRESETS["v30"] == replace(PRESETS["v28"], smoothing=0.1)
    assert PRESETS["v31"] == replace(PRESETS["v28"], mel=replace(PRESETS["v28"].mel, break_hz=400.0))
    assert PRESETS["default"] == PRESETS["v28"]


def test_the_margin_lowers_only_each_clips_own_class():
    """CosFace: the logit of a clip's own class drops by the scale times the margin, every other logit stays, so
    the loss is higher until the clip lies that much nearer its class; no margin leaves the classifier as is."""
    import torch
    import torch.nn.functional as F

    from audiosim.indexer.training import margin_logits
    from audiosim.shared.model import AutoEncoder, ModelConfig

    torch.manual_seed(0)
    model = AutoEncoder(ModelConfig(n_mels=64, frames=64, n_classes=5, pooling="multiscale"))
    emb = F.normalize(torch.randn(8, model.cfg.embedding_dim), dim=1)  # (8, D)
    labels = torch.tensor([0, 1, 2, 3, 4, 0, 1, 2])
    plain, lowered = model.logits(emb), margin_logits(model, emb, labels, 0.2)  # (8, 5) each
    assert torch.equal(margin_logits(model, emb, labels, 0.0), plain)
    drop = plain - lowered
    own = F.one_hot(labels, 5).bool()
    assert torch.allclose(drop[own], torch.full((8,), 16.0 * 0.2)) and torch.equal(drop[~own], torch.zeros(32))
    assert F.cross_entropy(lowered, labels) > F.cross_entropy(plain, labels)


def test_mixstyle_swaps_channel_statistics_and_keeps_the_pattern():
    """Each clip's per-channel mean and spread become a mix of its own and another clip's; what varies where
    within the map stays (the normalised map is the same, up to scale and offset)."""
    import torch

    from audiosim.indexer.training import mixstyle

    gen = torch.Generator().manual_seed(0)
    base = torch.rand(1, 4, 8, 8)  # (1, C, H, W): one pattern ...
    h = base * torch.arange(1.0, 9.0).view(8, 1, 1, 1) + torch.arange(8.0).view(8, 1, 1, 1)  # ... 8 styles
    out = mixstyle(h, gen)  # (8, 4, 8, 8)
    mu, sigma = out.mean(dim=(2, 3)), out.std(dim=(2, 3), correction=0)  # (8, 4)
    assert not torch.allclose(mu, h.mean(dim=(2, 3)), atol=1e-3)  # the styles moved
    assert mu.min() >= h.mean(dim=(2, 3)).min() - 1e-4 and mu.max() <= h.mean(dim=(2, 3)).max() + 1e-4  # mixes
    normed = (out - mu[..., None, None]) / sigma[..., None, None]
    ref = (base - base.mean(dim=(2, 3), keepdim=True)) / base.std(dim=(2, 3), correction=0, keepdim=True)
    assert torch.allclose(normed, ref.expand_as(normed), atol=1e-3)


def test_mixstyle_trains_and_leaves_the_exported_model_alone(tmp_path):
    """v22 mixes styles only while training: the checkpoint is a plain v6 network, and its export matches torch."""
    import torch

    out = tmp_path / "v22" / "m.pt"
    train([SAMPLES], out, TrainConfig(preset="v22", epochs=1, batch_size=16, seed=1, labels="folder", workers=1))
    model = build_model(load_checkpoint(out)).eval()
    enc = Encoder(out.with_suffix(".onnx"))
    clips = np.random.default_rng(0).normal(0, 0.1, (3, enc.clip_spec.n_samples)).astype(np.float32)
    images = enc.images(clips)  # (3, 64, 64)
    with torch.no_grad():
        expected = model.embed(torch.from_numpy(images)[:, None]).numpy()  # (3, 384)
    assert np.allclose(enc.embed(clips), expected, atol=1e-5)


@pytest.fixture(scope="module")
def two_members(tmp_path_factory):
    """Two v6 checkpoints of one epoch on the bundled samples, seeds 1 and 2."""
    members = []
    for seed in (1, 2):
        out = tmp_path_factory.mktemp(f"s{seed}") / "m.pt"
        train([SAMPLES], out, TrainConfig(preset="v6", epochs=1, batch_size=16, seed=seed, labels="folder", workers=1))
        members.append(out)
    return members


def test_an_ensemble_of_checkpoints_is_one_model(tmp_path, runner, two_members):
    """`export A.pt B.pt --out E.onnx`: the members' unit vectors side by side over sqrt(2), so a cosine is the
    mean of theirs; their probabilities averaged; an identity of its own. Members must read the same images."""
    from audiosim.indexer.cli import app
    from audiosim.shared.audio import read_clips, walk_audio

    members = two_members
    ens = tmp_path / "ens.onnx"
    result = runner.invoke(app, ["export", *map(str, members), "--out", str(ens)])
    assert result.exit_code == 0, result.output
    enc, a, b = Encoder(ens), Encoder(members[0]), Encoder(members[1])
    clips = np.random.default_rng(0).normal(0, 0.1, (4, enc.clip_spec.n_samples)).astype(np.float32)
    got, va, vb = enc.run(clips), a.run(clips), b.run(clips)
    assert enc.dim == 768 and got.vectors.shape == (4, 768)
    np.testing.assert_allclose(got.vectors, np.concatenate([va.vectors, vb.vectors], 1) / np.sqrt(2), atol=1e-5)
    mean_cosines = (va.vectors @ va.vectors.T + vb.vectors @ vb.vectors.T) / 2  # (4, 4)
    np.testing.assert_allclose(got.vectors @ got.vectors.T, mean_cosines, atol=1e-5)
    assert got.probs is not None and va.probs is not None and vb.probs is not None
    np.testing.assert_allclose(got.probs, (va.probs + vb.probs) / 2, atol=1e-5)
    assert enc.classes == a.classes
    assert enc.identity.digest not in (a.identity.digest, b.identity.digest)
    # the same members in the same order make the same identity; another order is another vector layout
    again = runner.invoke(app, ["export", *map(str, members), "--out", str(tmp_path / "again.onnx")])
    swapped = runner.invoke(app, ["export", *map(str, members[::-1]), "--out", str(tmp_path / "swapped.onnx")])
    assert again.exit_code == 0 and swapped.exit_code == 0
    assert Encoder(tmp_path / "again.onnx").identity.same_vectors(enc.identity)
    assert Encoder(tmp_path / "swapped.onnx").identity.digest != enc.identity.digest

    finer = tmp_path / "v12" / "m.pt"
    train([SAMPLES], finer, TrainConfig(preset="v12", epochs=1, batch_size=16, seed=1, labels="folder", workers=1))
    refused = runner.invoke(app, ["export", str(members[0]), str(finer), "--out", str(tmp_path / "bad.onnx")])
    assert refused.exit_code != 0 and "cannot join the ensemble" in refused.output and "Traceback" not in refused.output
    no_out = runner.invoke(app, ["export", *map(str, members)])
    assert no_out.exit_code != 0 and "--out" in no_out.output

    # --dim K --fit FOLDER: with K as large as the folder's clip count, the projection spans every fitted clip's
    # vector, so their cosines are the full ensemble's; a smaller K keeps unit vectors in K dimensions
    images = enc.images(np.stack([c.samples for _, c in read_clips(list(walk_audio([SAMPLES])), enc.clip_spec)[0]]))
    n = len(images)  # 46 bundled samples
    full = enc.run_images(images).vectors  # (n, 768)
    projected = {}
    for k in (n, 8):
        proj = tmp_path / f"p{k}.onnx"
        made = runner.invoke(
            app, ["export", *map(str, members), "--out", str(proj), "--dim", str(k), "--fit", str(SAMPLES)]
        )
        assert made.exit_code == 0, made.output
        p = Encoder(proj)
        got = p.run_images(images)
        assert p.dim == k and got.vectors.shape == (n, k) and p.identity.digest != enc.identity.digest
        np.testing.assert_allclose(np.linalg.norm(got.vectors, axis=1), 1, atol=1e-5)
        assert got.probs is not None and np.allclose(got.probs, enc.run_images(images).probs, atol=1e-5)
        projected[k] = got.vectors
    np.testing.assert_allclose(projected[n] @ projected[n].T, full @ full.T, atol=1e-4)
    too_many = runner.invoke(app, ["export", *map(str, members), "--out", str(tmp_path / "x.onnx"), "--dim", str(n + 1),
                                   "--fit", str(SAMPLES)])  # fmt: skip
    assert too_many.exit_code != 0 and f"at least {n + 1} clips" in too_many.output
    half = runner.invoke(app, ["export", *map(str, members), "--out", str(tmp_path / "x.onnx"), "--dim", "8"])
    assert half.exit_code != 0 and "--fit" in half.output


def test_the_class_probabilities_can_join_the_vector(tmp_path, runner, two_members):
    """`export ... --posterior W`: the unit probabilities, scaled by sqrt(W), follow the vector and the whole is
    normalised again, so a cosine is (the networks' cosine + W x the probabilities' cosine) / (1 + W); one
    checkpoint can be exported so too; a model without a classifier head has nothing to append."""
    from audiosim.indexer.cli import app

    plain_path, fused_path, single_path = (tmp_path / f"{n}.onnx" for n in ("plain", "fused", "single"))
    assert runner.invoke(app, ["export", *map(str, two_members), "--out", str(plain_path)]).exit_code == 0
    made = runner.invoke(app, ["export", *map(str, two_members), "--out", str(fused_path), "--posterior", "0.25"])
    assert made.exit_code == 0, made.output
    plain, fused = Encoder(plain_path), Encoder(fused_path)
    n_classes = len(plain.classes)
    assert fused.dim == plain.dim + n_classes and fused.classes == plain.classes
    assert fused.identity.digest != plain.identity.digest
    clips = np.random.default_rng(1).normal(0, 0.1, (5, plain.clip_spec.n_samples)).astype(np.float32)
    a, b = plain.run(clips), fused.run(clips)
    assert a.probs is not None and b.probs is not None
    np.testing.assert_allclose(b.probs, a.probs, atol=1e-6)
    units = a.probs / np.linalg.norm(a.probs, axis=1, keepdims=True)  # (5, C)
    np.testing.assert_allclose(b.vectors[:, : plain.dim], a.vectors / np.sqrt(1.25), atol=1e-5)
    np.testing.assert_allclose(b.vectors[:, plain.dim :], units * np.sqrt(0.25 / 1.25), atol=1e-5)
    expected = (a.vectors @ a.vectors.T + 0.25 * units @ units.T) / 1.25  # (5, 5)
    np.testing.assert_allclose(b.vectors @ b.vectors.T, expected, atol=1e-5)

    one = runner.invoke(app, ["export", str(two_members[0]), "--out", str(single_path), "--posterior", "1"])
    assert one.exit_code == 0, one.output
    single, alone = Encoder(single_path), Encoder(two_members[0])
    got, ref = single.run(clips), alone.run(clips)
    assert ref.probs is not None and single.dim == alone.dim + n_classes
    expected = np.concatenate([ref.vectors, ref.probs / np.linalg.norm(ref.probs, axis=1, keepdims=True)], 1)
    np.testing.assert_allclose(got.vectors, expected / np.sqrt(2), atol=1e-5)
    beside = runner.invoke(app, ["export", str(two_members[0]), "--posterior", "1"])  # would replace model.onnx
    assert beside.exit_code != 0 and "--out" in beside.output

    headless = tmp_path / "headless" / "m.pt"
    train([SAMPLES], headless, TrainConfig(preset="v6", epochs=1, batch_size=16, labels=None, workers=1))
    refused = runner.invoke(app, ["export", str(headless), "--out", str(tmp_path / "x.onnx"), "--posterior", "0.5"])
    assert refused.exit_code != 0 and "no classifier head" in refused.output and "Traceback" not in refused.output


def test_batch_norm_is_measured_again_on_the_images_given():
    """After averaging, each batch norm's running mean and variance are those of its input over all the images
    (a plain mean over the pass), not a blend with what it held before."""
    import torch

    from audiosim.indexer.training import PRESETS, _refresh_batch_norm
    from audiosim.shared.model import AutoEncoder

    model = AutoEncoder(PRESETS["v6"].model_config(n_classes=3))
    norm = model.encoder.blocks[0][0][1]
    assert isinstance(norm, torch.nn.BatchNorm2d)
    norm.running_mean.fill_(5.0)  # stale statistics from other weights
    images = torch.rand(40, 1, 64, 64)  # (N, 1, M, T)
    _refresh_batch_norm(model, images, batch_size=16)
    with torch.no_grad():
        h = model.encoder.blocks[0][0][0](images)  # (N, 16, 64, 64): what the first norm sees
    # three unequal batches (16, 16, 8) averaged equally: close to, not exactly, the pooled mean
    batches = [h[i : i + 16].mean(dim=(0, 2, 3)) for i in range(0, 40, 16)]
    assert torch.allclose(norm.running_mean, torch.stack(batches).mean(0), atol=1e-5)
    assert not model.training and norm.momentum == 0.1


def test_weight_averaging_keeps_the_mean_of_the_last_epochs(tmp_path):
    """v23 trains exactly as v6 (same seed, same losses every epoch); what it keeps is the mean of the
    weights over its second half, so its network differs from the one v6 keeps and says where the mean began."""
    import torch

    runs = {}
    for preset in ("v6", "v23"):
        out = tmp_path / preset / "m.pt"
        cfg = TrainConfig(preset=preset, epochs=4, batch_size=16, seed=2, labels="folder", workers=1)
        runs[preset] = (out, train([SAMPLES], out, cfg))
    (v6, h6), (v23, h23) = runs["v6"], runs["v23"]
    assert [e.train_loss for e in h23] == [e.train_loss for e in h6]
    assert [e.val_loss for e in h23[:-1]] == [e.val_loss for e in h6[:-1]]
    kept = load_checkpoint(v23)
    assert kept["extra"]["averaged_from"] == 3 and kept["extra"]["epoch"] == 4
    assert kept["extra"]["val_loss"] == h23[-1].val_loss != h6[-1].val_loss
    last = load_checkpoint(v6)["state_dict"]
    w = "encoder.blocks.0.0.0.weight"
    assert not torch.allclose(kept["state_dict"][w], last[w])
    assert Encoder(v23.with_suffix(".onnx")).dim == Encoder(v6.with_suffix(".onnx")).dim


def test_a_resumed_average_goes_on_or_starts_again_as_the_plan_says(tmp_path):
    """Resumed mid-average, the mean carries on as if never stopped (the same network as a run never stopped);
    given more epochs after it ended, the mean starts again where the longer plan's second half begins."""
    import shutil

    import torch

    from audiosim.indexer.training import state_path

    cfg = dict(preset="v23", batch_size=16, seed=4, labels="folder", workers=1)
    whole = tmp_path / "whole" / "m.pt"
    stopped = tmp_path / "stopped" / "m.pt"
    stopped.parent.mkdir()

    def keep_epoch_3_state(entry):  # called before epoch 4's state is saved: the file still holds epoch 3's
        if entry.epoch == 4:
            shutil.copy(state_path(whole), state_path(stopped))

    train([SAMPLES], whole, TrainConfig(epochs=4, **cfg), on_epoch=keep_epoch_3_state)
    assert torch.load(state_path(stopped), weights_only=True)["average"]  # stopped inside the averaged half
    train([SAMPLES], stopped, TrainConfig(epochs=4, resume=True, **cfg))
    w = "encoder.blocks.0.0.0.weight"
    assert torch.allclose(load_checkpoint(stopped)["state_dict"][w], load_checkpoint(whole)["state_dict"][w])

    longer = tmp_path / "longer" / "m.pt"
    train([SAMPLES], longer, TrainConfig(epochs=2, **cfg))
    history = train([SAMPLES], longer, TrainConfig(epochs=4, resume=True, **cfg))
    assert [e.epoch for e in history] == [1, 2, 3, 4]
    assert load_checkpoint(longer)["extra"]["averaged_from"] == 3
