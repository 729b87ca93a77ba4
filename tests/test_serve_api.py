"""`audiosim-search serve`'s JSON API on the bundled samples, both store back ends, in process."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from audiosim.indexer.cli import app as index_app
from audiosim.searcher import serve
from audiosim.searcher.cli import app as search_app
from tests.conftest import settings_for


@pytest.fixture
def client(env: dict[str, str], samples: Path, tmp_path: Path):
    r = CliRunner().invoke(index_app, ["run", str(samples)])
    assert r.exit_code == 0, r.output
    app = serve.create_app(settings_for(env), collections_dir=tmp_path / "collections", layout_method="pca")
    with TestClient(app) as c:
        yield c


def cli_jsonl(*args: str) -> dict:
    r = CliRunner().invoke(search_app, [*args, "-f", "jsonl"])
    assert r.exit_code == 0, r.output
    return json.loads(r.stdout)


def test_points_cover_the_collection_with_positions(client, samples):
    full = client.get("/api/points").json()
    assert full["count"] == 46 and len(full["points"]) == 46
    p = full["points"][0]
    assert set(p) == {"id", "x", "y", "path", "payload"} and -1 <= p["x"] <= 1 and -1 <= p["y"] <= 1
    assert Path(p["path"]).is_file() and "folders" not in p["payload"]
    compact = client.get("/api/points", params={"compact": 1}).json()
    assert compact["count"] == 46 and set(compact) >= {"ids", "x", "y", "name", "folder", "duration", "category"}
    kicks = client.get("/api/points", params={"where": "folder^=Drums/Kicks", "compact": 1}).json()
    assert kicks["count"] == 8 and all(f == "Drums/Kicks" for f in kicks["folder"])
    # positions come from one cached layout: the same point has the same place in every answer
    xy = {i: (x, y) for i, x, y in zip(compact["ids"], compact["x"], compact["y"], strict=True)}
    assert all(xy[i] == (x, y) for i, x, y in zip(kicks["ids"], kicks["x"], kicks["y"], strict=True))


def test_search_by_id_answers_like_the_cli(client, samples):
    query = str(samples / "Drums" / "Snares" / "sn_dub.wav")
    cli = cli_jsonl("id", query, "-k", "5", "--where", "duration<2")
    got = client.get("/api/search", params={"id": cli_point(query), "k": 5, "where": "duration<2"}).json()
    assert [h["id"] for h in got["results"]] == [h["id"] for h in cli["results"]]
    assert set(got) == {"query", "results"} and set(got["results"][0]) == {"id", "score", "path", "payload"}
    page2 = client.get("/api/search", params={"id": cli_point(query), "k": 5, "offset": 5}).json()["results"]
    assert not {h["id"] for h in page2} & {h["id"] for h in got["results"]}


def cli_point(path: str) -> str:
    from audiosim.shared.store import point_id

    return point_id(path)


def test_upload_search_and_its_errors(client, samples):
    wav = samples / "Drums" / "Kicks" / "bd_zum.wav"
    with wav.open("rb") as fh:
        r = client.post("/api/search", files={"file": ("mine.wav", fh, "audio/wav")}, data={"k": "3"})
    assert r.status_code == 200, r.text
    hits = r.json()["results"]
    assert r.json()["query"] == "mine.wav" and hits[0]["path"] == str(wav) and hits[0]["score"] > 0.999
    r = client.post("/api/search", files={"file": ("x.wav", b"RIFF not really", "audio/wav")})
    assert r.status_code == 400 and r.json()["detail"].startswith("cannot use x.wav as a query")
    r = client.post("/api/search", files={"file": ("empty.wav", b"", "audio/wav")})
    assert r.status_code == 400 and "empty" in r.json()["detail"]


def test_an_oversized_upload_is_refused(client, monkeypatch):
    monkeypatch.setattr(serve, "UPLOAD_LIMIT", 1000)
    r = client.post("/api/search", files={"file": ("big.wav", b"\0" * 5000, "audio/wav")})
    assert r.status_code == 413 and "larger than" in r.json()["detail"]


def test_a_bad_filter_gets_the_clis_words(client, samples):
    r = client.get("/api/points", params={"where": "categroy=kick"})
    cli = CliRunner().invoke(search_app, ["id", str(samples / "x.wav"), "--where", "categroy=kick"])
    assert r.status_code == 400 and r.json()["detail"] in cli.stderr
    r = client.get("/api/search", params={"id": "nope"})
    assert r.status_code == 404 and "not a point id" in r.json()["detail"]
    r = client.get("/api/search", params={"id": "00000000-0000-0000-0000-000000000000"})
    assert r.status_code == 404 and "not in the collection" in r.json()["detail"]
    r = client.get("/api/search", params={"k": "many", "id": "x"})
    assert r.status_code == 422 and r.json()["detail"].startswith("k:")


def test_audio_is_served_by_point_id_only(client, samples):
    wav = samples / "Drums" / "Kicks" / "bd_zum.wav"
    r = client.get(f"/audio/{cli_point(str(wav))}")
    assert r.status_code == 200 and r.content == wav.read_bytes() and r.headers["content-type"] == "audio/x-wav"
    for attempt in ("../../../etc/passwd", "..%2F..%2Fetc%2Fpasswd", "%2Fetc%2Fpasswd", str(wav)):
        r = client.get(f"/audio/{attempt}")
        assert r.status_code == 404 and b"root:" not in r.content
    outside = client.get("/../../etc/passwd")
    assert outside.status_code == 404 and b"root:" not in outside.content


def test_like_unlike_and_save_as_collection(client, samples, tmp_path):
    kick, snare = (
        cli_point(str(samples / "Drums" / d / f)) for d, f in (("Kicks", "bd_zum.wav"), ("Snares", "sn_dub.wav"))
    )
    r = client.post("/api/recommend", json={"like": [kick], "unlike": [snare], "k": 5})
    assert r.status_code == 200 and len(r.json()["results"]) == 5
    assert kick not in {h["id"] for h in r.json()["results"]}
    ids = [h["id"] for h in r.json()["results"]]
    saved = client.post("/api/collections", json={"name": "kicks I like", "ids": ids}).json()
    folder = Path(saved["folder"])
    assert folder == tmp_path / "collections" / "kicks I like" and saved["total"] == 5
    assert all(p.is_symlink() and p.resolve().is_file() for p in folder.iterdir())
    for bad in ("../escape", "", ".hidden", "a/b"):
        r = client.post("/api/collections", json={"name": bad, "ids": ids})
        assert r.status_code == 400, bad
    assert not (tmp_path / "escape").exists()
    (folder / "mine.txt").write_text("a user's file")
    r = client.post("/api/collections", json={"name": "kicks I like", "ids": ids})
    assert r.status_code == 409 and (folder / "mine.txt").read_text() == "a user's file"


def test_timbre_answers_like_the_clis(client, samples):
    """`timbre` on all three searches ranks and scores as `--timbre` does."""
    query = str(samples / "Bass" / "bass_hit_c.flac")
    cli = cli_jsonl("id", query, "-k", "8", "--timbre")["results"]  # the CLI first: local mode admits one holder
    like = cli_jsonl("like", "--like", query, "-k", "3", "--timbre")["results"]
    assert client.get("/api/info").json()["timbre"] is True
    got = client.get("/api/search", params={"id": cli_point(query), "k": 8, "timbre": "true"}).json()["results"]
    assert [(h["id"], h["score"]) for h in got] == [(h["id"], h["score"]) for h in cli]
    plain = client.get("/api/search", params={"id": cli_point(query), "k": 8}).json()["results"]
    assert [h["score"] for h in plain] != [h["score"] for h in got]
    with open(query, "rb") as fh:
        up = client.post("/api/search", files={"file": ("q.flac", fh)}, data={"k": "9", "timbre": "true"}).json()
    assert [h["id"] for h in up["results"][1:]] == [h["id"] for h in cli]  # itself first, then the same order
    r = client.post("/api/recommend", json={"like": [cli_point(query)], "k": 3, "timbre": True}).json()
    assert [h["id"] for h in r["results"]] == [h["id"] for h in like]


def test_a_model_without_categories_offers_no_timbre(env, samples, tmp_path, model_path):
    from audiosim.shared.encoder import Encoder

    member = model_path.parent / Encoder(model_path).members[0]["file"]
    plain = tmp_path / "plain.onnx"
    assert CliRunner().invoke(index_app, ["export", str(member), "--out", str(plain)]).exit_code == 0
    made = CliRunner().invoke(index_app, ["--model", str(plain), "run", str(samples)])
    assert made.exit_code == 0, made.output
    settings = settings_for({**env, "AUDIOSIM_MODEL": str(plain)})
    with TestClient(serve.create_app(settings, collections_dir=tmp_path / "c", layout_method="pca")) as client:
        assert client.get("/api/info").json()["timbre"] is False
        query = cli_point(str(samples / "Bass" / "bass_hit_c.flac"))
        r = client.get("/api/search", params={"id": query, "timbre": "true"})
        assert r.status_code == 400 and "has none: search without it" in r.json()["detail"]
        assert client.get("/api/search", params={"id": query}).status_code == 200


def test_the_page_and_its_files_are_served(client):
    page = client.get("/")
    assert page.status_code == 200 and "<canvas" in page.text
    assert client.get("/app.js").status_code == 200 and client.get("/app.css").status_code == 200
    info = client.get("/api/info").json()
    assert info["points"] == 46 and info["collection"] == "test" and info["categories"]


def test_a_store_held_elsewhere_is_a_503_with_the_clis_words(client, env, backend):
    if backend != "edge":
        pytest.skip("only the embedded store is held by one process at a time")
    from audiosim.shared.store import open_store

    other = open_store(settings_for(env))  # another process's hold, past the 5 s lock timeout of the tests
    other.count()
    try:
        r = client.get("/api/search", params={"id": "00000000-0000-0000-0000-000000000000"})
        assert r.status_code == 503 and "locked by another audiosim process" in r.json()["detail"]
    finally:
        other.close()
    assert client.get("/api/info").json()["points"] == 46  # and it is served again once let go
