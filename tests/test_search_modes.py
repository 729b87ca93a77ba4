"""Query modes beyond one file: globs, examples (--like/--unlike), duplicates, paging, the HTML page."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest

from audiosim.indexer.cli import app as index_app
from audiosim.searcher.cli import app as search_app


def jsonl(output: str) -> list[dict]:
    return [json.loads(line) for line in output.splitlines() if line.strip()]


@pytest.fixture
def indexed(runner, env, samples):
    r = runner.invoke(index_app, ["run", str(samples)])
    assert r.exit_code == 0, r.output
    return samples


def test_globs_expand_to_one_list_per_file(runner, indexed):
    pattern = str(indexed / "Drums" / "Snares" / "sn_*")
    r = runner.invoke(search_app, ["file", pattern, "-k", "1", "-f", "jsonl"])
    assert r.exit_code == 0, r.output
    queries = [x["query"] for x in jsonl(r.stdout)]
    assert queries == sorted(str(p) for p in (indexed / "Drums" / "Snares").glob("sn_*"))
    r = runner.invoke(search_app, ["file", str(indexed / "**" / "bd_*.flac"), "-k", "1", "-f", "jsonl"])
    assert len(jsonl(r.stdout)) == len(list(indexed.rglob("bd_*.flac")))
    r = runner.invoke(search_app, ["file", str(indexed / "nothing*.wav")])
    assert r.exit_code == 1 and "no audio file matches" in r.stderr
    (indexed / "notes.txt").write_text("x")
    r = runner.invoke(search_app, ["file", str(indexed / "notes.txt")])
    assert r.exit_code == 1 and "not a supported audio file" in r.stderr


def test_paging_and_threshold(runner, indexed):
    q = str(indexed / "Drums" / "Kicks" / "bd_boom.wav")
    first = jsonl(runner.invoke(search_app, ["file", q, "-k", "10", "-f", "jsonl"]).stdout)[0]["results"]
    page = jsonl(runner.invoke(search_app, ["file", q, "-k", "5", "--offset", "5", "-f", "jsonl"]).stdout)[0]
    assert [h["id"] for h in page["results"]] == [h["id"] for h in first[5:]]
    cut = (first[3]["score"] + first[4]["score"]) / 2
    above = jsonl(runner.invoke(search_app, ["file", q, "-k", "50", "--threshold", str(cut), "-f", "jsonl"]).stdout)
    assert [h["id"] for h in above[0]["results"]] == [h["id"] for h in first[:4]]


def test_like_and_unlike(runner, indexed):
    kicks = [str(indexed / "Drums" / "Kicks" / n) for n in ("bd_808.flac", "bd_boom.wav")]
    r = runner.invoke(search_app, ["like", "--like", kicks[0], "--like", kicks[1], "-k", "5", "-f", "jsonl"])
    assert r.exit_code == 0, r.output
    [res] = jsonl(r.stdout)
    paths = [h["path"] for h in res["results"]]
    assert len(paths) == 5 and not set(paths) & set(kicks)  # examples are not their own results
    # one positive and no negative is the same as a plain search
    one = jsonl(runner.invoke(search_app, ["like", "--like", kicks[0], "-k", "5", "-f", "jsonl"]).stdout)[0]
    plain = jsonl(runner.invoke(search_app, ["file", kicks[0], "-k", "5", "-f", "jsonl"]).stdout)[0]
    assert [h["id"] for h in one["results"]] == [h["id"] for h in plain["results"]]
    # a negative example and the sounds closer to it than to the positive drop out of the list
    top = plain["results"][0]["path"]
    args = ["like", "--like", kicks[0], "--unlike", top, "-k", "5", "-f", "jsonl"]
    unlike = jsonl(runner.invoke(search_app, args).stdout)[0]["results"]
    assert top not in [h["path"] for h in unlike]
    assert [h["score"] for h in unlike] == sorted((h["score"] for h in unlike), reverse=True)
    from audiosim.shared.settings import Settings
    from audiosim.shared.store import open_store, point_id

    with open_store(Settings()) as st:
        ids = [plain["results"][0]["id"], *(h["id"] for h in unlike)]
        recs = {r.id: np.asarray(r.vector) for r in st.retrieve(ids, with_vector=True)}
        [kick] = st.retrieve([point_id(kicks[0])], with_vector=True)
    neg = recs[plain["results"][0]["id"]]
    for h in unlike:  # best-score: a positive score only for sounds nearer the example than the negative
        v = recs[h["id"]]
        assert (h["score"] > 0) == (float(v @ np.asarray(kick.vector)) > float(v @ neg))
    r = runner.invoke(search_app, ["like", "-k", "3"])
    assert r.exit_code == 2  # --like is required


def test_duplicates_finds_a_planted_copy(runner, env, samples):
    src = samples / "Percussion" / "tabla_na.flac"
    shutil.copy(src, samples / "Drums" / "tabla_na copy.flac")
    shutil.copy(src, samples / "Percussion" / "tabla_na again.flac")
    assert runner.invoke(index_app, ["run", str(samples)]).exit_code == 0
    r = runner.invoke(search_app, ["duplicates", "--threshold", "0.9999", "-f", "jsonl"])
    assert r.exit_code == 0, r.output
    pairs = jsonl(r.stdout)
    names = {frozenset((p["a"]["name"], p["b"]["name"])) for p in pairs}
    assert names == {
        frozenset(("tabla_na.flac", "tabla_na copy.flac")),
        frozenset(("tabla_na.flac", "tabla_na again.flac")),
        frozenset(("tabla_na copy.flac", "tabla_na again.flac")),
    }
    assert all(p["score"] >= 0.9999 for p in pairs)
    r = runner.invoke(search_app, ["duplicates", "--threshold", "0.9999", "--same-folder", "-f", "jsonl"])
    assert {frozenset((p["a"]["name"], p["b"]["name"])) for p in jsonl(r.stdout)} == {
        frozenset(("tabla_na.flac", "tabla_na again.flac"))
    }
    r = runner.invoke(search_app, ["duplicates", "--threshold", "0.9999", "--where", "folder^=Drums", "-f", "jsonl"])
    assert jsonl(r.stdout) == []
    r = runner.invoke(search_app, ["duplicates", "--threshold", "0.9999"])
    assert "3 near-duplicate pairs" in r.stdout


CHROMIUM = Path("/usr/bin/chromium")


def test_html_page_has_pictures_and_players(runner, indexed, tmp_path):
    if not CHROMIUM.exists():
        if os.environ.get("CI"):
            pytest.fail("CI must install Debian's chromium (make browser) for this test")
        pytest.skip("Debian's chromium is not installed: `make browser` installs it")
    from playwright.sync_api import sync_playwright

    page_file = tmp_path / "results.html"
    q = str(indexed / "Drums" / "Kicks" / "bd_boom.wav")
    r = runner.invoke(search_app, ["file", q, "-k", "4", "--html", str(page_file)])
    assert r.exit_code == 0, r.output
    with sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=str(CHROMIUM),
            args=["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update"],
        )
        page = browser.new_page()
        page.goto(page_file.as_uri())
        page.wait_for_function("[...document.images].every(i => i.complete)")
        images = page.eval_on_selector_all("img", "els => els.map(e => e.naturalWidth)")
        assert len(images) == 5 and all(w > 0 for w in images)  # the query and 4 hits, all decoded
        page.wait_for_function("[...document.querySelectorAll('audio')].every(a => a.readyState >= 1)")
        durations = page.eval_on_selector_all("audio", "els => els.map(e => e.duration)")
        assert len(durations) == 5 and all(d > 0 for d in durations)
        assert "bd_boom.wav" in page.inner_text("body")
        page.screenshot(path=str(tmp_path / "results.png"), full_page=True)
        browser.close()


@pytest.mark.parametrize("backend", ["edge"], indirect=True)
def test_an_unindexed_query_file_opens_the_store_once(runner, indexed, tmp_path, monkeypatch):
    """Encoding a query file needs no store; nobody waiting, the shard stays open instead of being loaded twice."""
    import qdrant_edge as q

    loads = []
    real_load = q.EdgeShard.load
    monkeypatch.setattr(q.EdgeShard, "load", lambda *a, **k: loads.append(a) or real_load(*a, **k))
    outside = tmp_path / "outside.flac"
    shutil.copy(indexed / "Drums" / "Kicks" / "bd_808.flac", outside)
    r = runner.invoke(search_app, ["file", str(outside), "-k", "3", "-f", "jsonl"])
    assert r.exit_code == 0, r.output
    assert len(jsonl(r.stdout)[0]["results"]) == 3 and len(loads) == 1


def test_timbre_ranks_by_how_the_sounds_sound_alone(runner, indexed, model_path, tmp_path):
    """`--timbre`: the category part of every vector left out, so hits are ranked and scored by the networks'
    cosine alone, and --threshold is in those units; a collection whose model appends no category refuses it."""
    from audiosim.shared.audio import read_clips, walk_audio
    from audiosim.shared.encoder import Encoder

    enc = Encoder(model_path)
    assert enc.identity.posterior is not None
    n_cat = enc.identity.posterior["dims"]
    decoded = dict(read_clips([str(f.path) for f in walk_audio([indexed])], enc.clip_spec)[0])
    paths = sorted(decoded)
    heads = enc.embed(np.stack([decoded[p].samples for p in paths]))[:, :-n_cat]  # (N, D - C)
    heads /= np.linalg.norm(heads, axis=1, keepdims=True)
    query = str(indexed / "Bass" / "bass_hit_c.flac")
    expected = {p: float(heads[i] @ heads[paths.index(query)]) for i, p in enumerate(paths) if p != query}

    def scores(*extra: str) -> dict[str, float]:
        r = runner.invoke(search_app, ["id", query, "-k", "100", "-f", "jsonl", *extra])
        assert r.exit_code == 0, r.output
        return {h["path"]: h["score"] for h in jsonl(r.stdout)[0]["results"]}

    got = scores("--timbre")
    assert set(got) == set(expected)
    assert max(abs(got[p] - expected[p]) for p in got) < 2e-3  # vectors are stored as float16
    assert max(abs(s - expected[p]) for p, s in scores().items()) > 0.01  # without it the category part counts
    ranked = sorted(got.values(), reverse=True)
    cut = (ranked[3] + ranked[4]) / 2
    assert sorted(scores("--timbre", "--threshold", str(cut)).values(), reverse=True) == ranked[:4]
    best = max(got, key=got.__getitem__)
    r = runner.invoke(search_app, ["like", "--like", query, "--timbre", "-k", "1", "-f", "jsonl"])
    assert r.exit_code == 0 and jsonl(r.stdout)[0]["results"][0]["path"] == best

    plain = tmp_path / "plain.onnx"
    member = model_path.parent / enc.members[0]["file"]
    assert runner.invoke(index_app, ["export", str(member), "--out", str(plain)]).exit_code == 0
    made = runner.invoke(index_app, ["--model", str(plain), "--collection", "plain", "run", str(indexed)])
    assert made.exit_code == 0, made.output
    r = runner.invoke(search_app, ["--model", str(plain), "--collection", "plain", "id", query, "--timbre"])
    assert r.exit_code != 0 and "has none: search without it" in r.stderr and "Traceback" not in r.output
