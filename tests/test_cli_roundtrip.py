"""The real commands end to end, on both store back ends: index, re-run, change, delete, search, filter."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from audiosim.indexer.cli import EXIT_SOME_FAILED
from audiosim.indexer.cli import app as index_app
from audiosim.searcher.cli import app as search_app
from tests.conftest import AUDIO, shipped_checkpoints

N_SAMPLES = 46


def index(runner: CliRunner, *args: str) -> object:
    return runner.invoke(index_app, ["run", *args])


def search(runner: CliRunner, *args: str) -> object:
    return runner.invoke(search_app, list(args))


def jsonl(output: str) -> list[dict]:
    return [json.loads(line) for line in output.splitlines() if line.strip()]


def summary_line(output: str) -> str:
    return next(line for line in output.splitlines() if line.startswith(("done", "interrupted")))


def test_index_rerun_change_delete(runner, env, samples):
    r = index(runner, str(samples))
    assert r.exit_code == 0, r.output
    assert f"{N_SAMPLES} indexed, 0 unchanged, 0 removed, 0 failed" in summary_line(r.output)

    r = index(runner, str(samples))
    assert r.exit_code == 0
    assert f"0 indexed, {N_SAMPLES} unchanged, 0 removed" in summary_line(r.output)

    gone = samples / "Drums" / "Kicks" / "bd_808.flac"
    gone.unlink()
    changed = samples / "Bass" / "bass_hit_c.flac"
    os.utime(changed, ns=(changed.stat().st_atime_ns, changed.stat().st_mtime_ns + 10**9))
    r = index(runner, str(samples))
    assert r.exit_code == 0
    assert f"1 indexed, {N_SAMPLES - 2} unchanged, 1 removed" in summary_line(r.output)

    r = runner.invoke(index_app, ["status"])
    assert r.exit_code == 0
    assert str(N_SAMPLES - 1) in r.output

    r = search(runner, "id", str(gone))
    assert r.exit_code == 1
    assert "not in the collection" in r.output


def test_search_by_file_vector_and_id(runner, env, samples, tmp_path):
    assert index(runner, str(samples)).exit_code == 0
    kick = samples / "Drums" / "Kicks" / "bd_boom.wav"

    r = search(runner, "file", str(kick), "-k", "5", "--format", "jsonl")
    assert r.exit_code == 0, r.output
    [res] = jsonl(r.stdout)
    paths = [h["path"] for h in res["results"]]
    assert len(paths) == 5
    assert str(kick) not in paths  # an indexed query file is not its own hit by default
    assert all(
        set(h["payload"])
        >= {"path", "name", "folder", "tags", "ext", "duration", "sample_rate", "channels", "size", "mtime"}
        for h in res["results"]
    )
    scores = [h["score"] for h in res["results"]]
    assert scores == sorted(scores, reverse=True)

    r = search(runner, "file", str(kick), "-k", "3", "--include-self", "--format", "jsonl")
    [res] = jsonl(r.stdout)
    assert res["results"][0]["path"] == str(kick)
    # the embedded store keeps and scores float16 vectors: a self-match reads 0.99985 with the shipped model
    assert res["results"][0]["score"] == pytest.approx(1.0, abs=5e-4)
    self_id = res["results"][0]["id"]

    # by id and by indexed path give the same neighbours as by file
    by_file = [h["id"] for h in jsonl(search(runner, "file", str(kick), "--format", "jsonl").stdout)[0]["results"]]
    by_id = [h["id"] for h in jsonl(search(runner, "id", self_id, "--format", "jsonl").stdout)[0]["results"]]
    by_path = [h["id"] for h in jsonl(search(runner, "id", str(kick), "--format", "jsonl").stdout)[0]["results"]]
    assert by_file == by_id == by_path

    # a file that is not indexed (a copy under another name) is encoded and finds the original first
    outside = tmp_path / "query copy.wav"
    shutil.copy(kick, outside)
    r = search(runner, "file", str(outside), "-k", "1", "--format", "paths")
    assert r.exit_code == 0, r.output
    assert r.stdout.strip() == str(kick)

    # several query files: one result list each
    snare = samples / "Drums" / "Snares" / "sn_dub.wav"
    res = jsonl(search(runner, "file", str(kick), str(snare), "-k", "2", "--format", "jsonl").stdout)
    assert [x["query"] for x in res] == [str(kick), str(snare)]

    # by vector: .npy, JSON file and stdin JSON all find the same point first
    from audiosim.shared.settings import Settings
    from audiosim.shared.store import open_store

    with open_store(Settings()) as st:
        [rec] = st.retrieve([self_id], with_vector=True)
    vec = np.asarray(rec.vector, dtype=np.float32)
    np.save(tmp_path / "q.npy", vec)
    (tmp_path / "q.json").write_text(json.dumps(vec.tolist()))
    for args, stdin in [
        (["vector", str(tmp_path / "q.npy")], None),
        (["vector", str(tmp_path / "q.json")], None),
        (["vector", "-"], json.dumps(vec.tolist())),
    ]:
        r = runner.invoke(search_app, [*args, "-k", "1", "--format", "jsonl"], input=stdin)
        assert r.exit_code == 0, r.output
        assert jsonl(r.stdout)[0]["results"][0]["id"] == self_id

    r = search(runner, "file", str(kick), "--format", "json")
    assert json.loads(r.stdout)[0]["query"] == str(kick)
    r = search(runner, "file", str(kick), "-k", "3")
    assert r.exit_code == 0 and "score" in r.stdout


def test_filters_narrow_results(runner, env, samples):
    assert index(runner, str(samples)).exit_code == 0
    kick = str(samples / "Drums" / "Kicks" / "bd_boom.wav")

    def hits(*where: str) -> list[dict]:
        args = ["file", kick, "-k", "100", "--format", "jsonl"]
        for w in where:
            args += ["--where", w]
        r = search(runner, *args)
        assert r.exit_code == 0, r.output
        return [h["payload"] for h in jsonl(r.stdout)[0]["results"]]

    everything = hits()
    assert len(everything) == N_SAMPLES - 1
    assert {p["ext"] for p in hits("ext=ogg")} == {"ogg"}
    assert len(hits("ext=ogg")) == sum(p["ext"] == "ogg" for p in everything)
    assert all(p["ext"] != "flac" for p in hits("ext!=flac"))
    assert all("Drums" in p["tags"] for p in hits("tags=Drums"))
    assert {p["folder"] for p in hits("folder=Drums/Snares")} == {"Drums/Snares"}
    short = hits("duration<1")
    assert short and all(p["duration"] < 1 for p in short)
    assert len(short) == sum(p["duration"] < 1 for p in everything)
    assert all(p["duration"] >= 1 for p in hits("duration>=1"))
    assert {p["sample_rate"] for p in hits("sample_rate=48000")} == {48000}
    assert all(p["channels"] == 2 for p in hits("channels>1"))
    both = hits("tags=Drums", "duration<=0.5")
    assert both and all("Drums" in p["tags"] and p["duration"] <= 0.5 for p in both)
    assert hits("ext=nothing") == []


def test_broken_files_are_reported_and_skipped(runner, env, samples, tmp_path):
    shutil.copytree(AUDIO / "broken", samples / "Broken")
    shutil.copytree(AUDIO / "good", samples / "Odd formats")
    (samples / "notes.txt").write_text("not audio, not counted")
    (samples / ".hidden.wav").write_bytes(b"")
    report = tmp_path / "failed.jsonl"
    r = index(runner, str(samples), "--report", str(report))
    assert r.exit_code == EXIT_SOME_FAILED, r.output
    assert f"{N_SAMPLES + 5} indexed, 0 unchanged, 0 removed, 5 failed" in summary_line(r.output)
    failures = {Path(x["path"]).name: x["reason"] for x in jsonl(report.read_text())}
    assert set(failures) == {"empty.wav", "not_audio.flac", "truncated.wav", "silent.wav", "garbage.mp3"}
    assert "empty" in failures["empty.wav"]
    assert "silent" in failures["silent.wav"]
    assert "very short" in r.output  # ten_ms.wav: indexed with a warning
    # the failed files are tried again next time; nothing else is re-encoded
    r = index(runner, str(samples))
    assert r.exit_code == EXIT_SOME_FAILED
    assert f"0 indexed, {N_SAMPLES + 5} unchanged, 0 removed, 5 failed" in summary_line(r.output)


def test_worker_pool_gives_the_same_vectors(runner, env, samples, tmp_path, monkeypatch):
    """Two spawned worker processes produce the vectors the in-process path does."""
    from audiosim.shared.settings import Settings
    from audiosim.shared.store import open_store

    sub = samples / "Drums"
    assert index(runner, str(sub)).exit_code == 0
    with open_store(Settings()) as st:
        ids = [r.id for r in st.scroll(["path"])]
        before = {r.id: r.vector for r in st.retrieve(ids, with_vector=True)}
    for f in sub.rglob("*.*"):
        os.utime(f, ns=(f.stat().st_atime_ns, f.stat().st_mtime_ns + 10**9))
    r = index(runner, str(sub), "--workers", "2")
    assert r.exit_code == 0, r.output
    assert f"{len(before)} indexed" in summary_line(r.output)
    with open_store(Settings()) as st:
        after = {r.id: r.vector for r in st.retrieve(ids, with_vector=True)}
    assert before.keys() == after.keys()
    for k in before:
        np.testing.assert_allclose(before[k], after[k], atol=1e-5)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["file", "/no/such/file.wav"], "query file not found"),
        (["file", "{broken}"], "cannot use"),
        (["id", "00000000-0000-0000-0000-000000000000"], "not in the collection"),
        (["id", "/not/indexed.wav"], "not in the collection"),
        (["file", "{kick}", "--where", "duraton<1"], "did you mean 'duration'"),
        (["file", "{kick}", "--where", "duration<abc"], "not a number"),
        (["file", "{kick}", "--where", "ext<3"], "is text, so < does not apply"),
        (["vector", "{short_vec}"], "dimensions"),
        (["vector", "{nan_vec}"], "NaN"),
        (["vector", "{bad_json}"], "not valid JSON"),
        (["vector", "/no/vector.npy"], "vector file not found"),
    ],
)
def test_bad_input_is_one_line(runner, env, samples, tmp_path, args, message):
    assert index(runner, str(samples / "Drums" / "Kicks")).exit_code == 0
    (tmp_path / "short.json").write_text("[1, 2, 3]")
    (tmp_path / "nan.json").write_text(json.dumps([float("nan")] + [0.1] * 255))
    (tmp_path / "bad.json").write_text("[1, 2,")
    subst = {
        "{broken}": str(AUDIO / "broken" / "garbage.mp3"),
        "{kick}": str(samples / "Drums/Kicks/bd_808.flac"),
        "{short_vec}": str(tmp_path / "short.json"),
        "{nan_vec}": str(tmp_path / "nan.json"),
        "{bad_json}": str(tmp_path / "bad.json"),
    }
    r = search(runner, *[subst.get(a, a) for a in args])
    assert r.exit_code == 1, r.output
    assert message in r.stderr
    assert r.stderr.startswith("error: ") and r.stderr.count("\n") == 1
    assert "Traceback" not in r.output


def test_errors_before_anything_is_indexed(runner, env, samples, tmp_path):
    r = search(runner, "id", "00000000-0000-0000-0000-000000000000")
    assert r.exit_code == 1 and "does not exist" in r.stderr and "audiosim-index run" in r.stderr
    r = index(runner, str(tmp_path / "missing-folder"))
    assert r.exit_code == 1 and "path not found" in r.stderr
    r = runner.invoke(index_app, ["--model", str(tmp_path / "nope.pt"), "run", str(samples)])
    assert r.exit_code == 1 and "model checkpoint not found" in r.stderr
    r = runner.invoke(index_app, ["--debug", "--model", str(tmp_path / "nope.pt"), "run", str(samples)])
    assert r.exit_code != 0 and r.exception is not None  # --debug lets the traceback through


def test_empty_collection(runner, env, samples, tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    assert index(runner, str(empty)).exit_code == 0
    r = search(runner, "file", str(samples / "Drums/Kicks/bd_808.flac"))
    assert r.exit_code == 1 and "is empty" in r.stderr


def test_model_mismatch_is_refused(runner, env, samples, tmp_path, model_path):
    """A collection remembers its model; another model is refused for indexing and for file queries."""
    import torch

    from audiosim.shared.audio import ClipSpec
    from audiosim.shared.checkpoint import build_model, load_checkpoint, save_checkpoint
    from audiosim.shared.features import MelSpec

    ckpt = load_checkpoint(shipped_checkpoints()[0])
    model = build_model(ckpt)
    with torch.no_grad():
        next(model.parameters()).add_(0.01)
    other = tmp_path / "other.pt"
    save_checkpoint(other, model, clip=ClipSpec(**ckpt["clip"]), mel=MelSpec(**ckpt["mel"]), name="other")

    assert index(runner, str(samples / "Drums" / "Kicks")).exit_code == 0
    r = runner.invoke(index_app, ["--model", str(other), "run", str(samples / "Bass")])
    assert r.exit_code == 1
    assert "was built with model" in r.stderr and "--rebuild" in r.stderr and "--collection" in r.stderr
    outside = tmp_path / "q.wav"
    shutil.copy(AUDIO / "good" / "stereo_44k_24bit.wav", outside)
    r = runner.invoke(search_app, ["--model", str(other), "file", str(outside)])
    assert r.exit_code == 1 and "was built with model" in r.stderr
    # the same model under another collection name is fine
    r = runner.invoke(index_app, ["--model", str(other), "--collection", "other", "run", str(samples / "Bass")])
    assert r.exit_code == 0, r.output
    # --rebuild: the collection is made again with the new model, from every file under the given paths
    kicks = sorted(p.name for p in (samples / "Drums" / "Kicks").iterdir())
    r = runner.invoke(index_app, ["--model", str(other), "run", str(samples / "Bass"), "--rebuild"])
    assert r.exit_code == 0 and "deleted collection 'test'" in r.stdout, r.output
    r = runner.invoke(search_app, ["--model", str(other), "file", str(outside), "-k", "100", "-f", "jsonl"])
    assert r.exit_code == 0, r.output
    hits = json.loads(r.stdout)["results"]
    bass = str(samples / "Bass") + "/"
    assert hits and all(h["path"].startswith(bass) for h in hits)  # the kicks' points went with the old model
    assert sorted(p.name for p in (samples / "Drums" / "Kicks").iterdir()) == kicks  # files untouched
    r = runner.invoke(index_app, ["run", str(samples / "Bass"), "--rebuild", "--partition", "1/2"])
    assert r.exit_code == 1 and "--partition" in r.stderr


def test_help_shows_the_environment_variables_and_defaults(runner):
    """Square brackets in help texts are rich markup unless escaped; these must reach the user."""
    env = {"COLUMNS": "200"}
    for app in (index_app, search_app):
        text = runner.invoke(app, ["--help"], env=env).output
        for var in ("AUDIOSIM_STORE", "AUDIOSIM_COLLECTION", "AUDIOSIM_QDRANT_URL", "AUDIOSIM_MODEL"):
            assert f"[env {var}]" in text
    assert "[default: one per core" in runner.invoke(index_app, ["run", "--help"], env=env).output
