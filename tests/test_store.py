"""The store's behaviour, checked identically on qdrant-edge and on qdrant-client (local mode)."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from audiosim.shared.errors import ModelError, QueryError, StoreError
from audiosim.shared.filters import parse_filters
from audiosim.shared.identity import ModelIdentity
from audiosim.shared.payload import INDEXED
from audiosim.shared.store import point_id
from audiosim.shared.store.base import Page
from audiosim.shared.store.edge import EdgeStore

DIM = 16
F16 = 5e-4  # vectors are stored as float16: a unit vector's components come back within half a step
IDENTITY = ModelIdentity(name="t", digest="d1", dim=DIM, clip={"sample_rate": 22050}, mel={"n_mels": 64})


def fill(store, n=40):
    rng = np.random.default_rng(1)
    vectors = rng.standard_normal((n, DIM)).astype(np.float32)
    paths = [f"/lib/Drums/{'Kicks' if i % 2 else 'Snares'}/{'Big' if i % 5 else 'Tiny'}S{i}.wav" for i in range(n)]
    paths[0] = "/lib/Drums/s0.wav"
    paths[1] = "/lib/DrumsExtra/s1.wav"
    payloads = [
        {
            "path": p,
            "name": p.rsplit("/", 1)[1],
            "folder": p[5:].rsplit("/", 1)[0],
            "tags": p[5:].split("/")[:-1],
            "ext": "wav" if i % 3 else "flac",
            "duration": i / 10,
            "sample_rate": 44100 if i % 4 else 48000,
            "channels": 1 + i % 2,
            "size": 1000 + i,
            "mtime": 1.7e9 + i / 3,
            "mtime_ns": 17 * 10**17 + i,
            "root": "/lib",
        }
        for i, p in enumerate(paths)
    ]
    store.ensure_collection(IDENTITY)
    store.upsert([point_id(p) for p in paths], vectors, payloads)
    return vectors, paths, payloads


def test_ids_are_deterministic():
    assert point_id("/a/b.wav") == point_id("/a/b.wav") != point_id("/a/c.wav")


def test_query_is_exact_cosine(store):
    vectors, paths, _ = fill(store)
    q = vectors[5] + 0.1
    hits = store.query(q, Page(limit=40))
    unit = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
    expected = np.argsort(-(unit @ (q / np.linalg.norm(q))))
    assert [h.payload["path"] for h in hits] == [paths[i] for i in expected]


def test_paging_threshold_and_exclusion(store):
    vectors, paths, _ = fill(store)
    all_hits = store.query(vectors[0], Page(limit=10))
    page2 = store.query(vectors[0], Page(limit=5, offset=5))
    assert [h.id for h in page2] == [h.id for h in all_hits[5:]]
    assert all(h.score >= 0.2 for h in store.query(vectors[0], Page(limit=40, threshold=0.2)))
    assert point_id(paths[0]) not in {
        h.id for h in store.query(vectors[0], Page(limit=40, exclude=[point_id(paths[0])]))
    }


@pytest.mark.parametrize(
    ("where", "check"),
    [
        (["folder=Drums/Kicks"], lambda p: p["folder"] == "Drums/Kicks"),
        (["tags!=Kicks"], lambda p: "Kicks" not in p["tags"]),
        (["tags=Drums"], lambda p: "Drums" in p["tags"]),
        (["folder^=Drums/"], lambda p: p["folder"] == "Drums" or p["folder"].startswith("Drums/")),
        (["folder^=Drums/Kicks"], lambda p: p["folder"] == "Drums/Kicks"),
        (["!folder^=Drums/Kicks"], lambda p: p["folder"] != "Drums/Kicks"),
        (["path^=/lib/Drums/Kicks/"], lambda p: p["path"].startswith("/lib/Drums/Kicks/")),
        (["name~tiny"], lambda p: "tiny" in p["name"].lower()),
        (["name~S1"], lambda p: "s1" in p["name"].lower()),
        (["!name~tiny"], lambda p: "tiny" not in p["name"].lower()),
        (["ext=wav|flac", "size=1005..1020"], lambda p: p["ext"] in ("wav", "flac") and 1005 <= p["size"] <= 1020),
        (["sample_rate=48000|1"], lambda p: p["sample_rate"] == 48000),
        (["duration=0.5..1.5"], lambda p: 0.5 <= p["duration"] <= 1.5),
        (["!duration=0.5..1.5"], lambda p: not 0.5 <= p["duration"] <= 1.5),
        (["ext=flac"], lambda p: p["ext"] == "flac"),
        (["duration<1"], lambda p: p["duration"] < 1),
        (["duration<=1"], lambda p: p["duration"] <= 1),
        (["duration=1.5"], lambda p: p["duration"] == 1.5),
        (["duration!=1.5"], lambda p: p["duration"] != 1.5),
        (["size>1030"], lambda p: p["size"] > 1030),
        (["sample_rate=48000"], lambda p: p["sample_rate"] == 48000),
        (["channels>=2", "ext=wav"], lambda p: p["channels"] >= 2 and p["ext"] == "wav"),
    ],
)
def test_filters_match_python(store, where, check):
    vectors, _, payloads = fill(store)
    terms = parse_filters(where)
    expected = sum(check(p) for p in payloads)
    assert 0 < expected < len(payloads)
    for _ in ("before maintain(): an embedded store scans", "after: it uses the payload indexes"):
        assert store.count(terms) == expected
        hits = store.query(vectors[0], Page(limit=100, terms=terms))
        assert len(hits) == expected and all(check(h.payload) for h in hits)
        store.maintain()


def test_edge_indexes_come_with_maintain_and_stay(tmp_path):
    st = EdgeStore(tmp_path, "c")
    vectors, _, _ = fill(st)
    assert st.indexed_fields() == set()  # bulk-loaded without indexes
    st.maintain()
    assert st.indexed_fields() == set(INDEXED)
    st.upsert([point_id("/lib/new.wav")], vectors[:1], [{"path": "/lib/new.wav", "name": "new.wav", "ext": "wav"}])
    assert st.count(parse_filters(["ext=wav", "name~new"])) == 1  # upserts after that keep them up to date
    st.close()


def test_edge_maintenance_drops_indexes_an_older_version_built(tmp_path):
    """Earlier versions indexed every field; fields nobody narrows by lose their index at the next maintain."""
    import qdrant_edge as q

    from audiosim.shared.store.edge import INDEX_KINDS

    st = EdgeStore(tmp_path, "c")
    fill(st)
    for name, kind in {"path": "keyword", "size": "integer", "mtime": "float"}.items():
        st._open().update(q.UpdateOperation.create_field_index(name, INDEX_KINDS[kind]()))
    assert {"path", "size", "mtime"} <= st.indexed_fields()
    st.maintain()
    assert st.indexed_fields() == set(INDEXED)
    assert st.count(parse_filters(["size>0", "path~/lib/"])) == st.count()  # unindexed fields still filter
    st.close()


def test_edge_drop_leaves_no_shard_and_no_identity(tmp_path):
    st = EdgeStore(tmp_path, "c")
    fill(st)
    st.maintain()
    (st.dir / "shard.dropped-1").mkdir()  # what a drop cut short between its rename and its removal leaves
    st.drop()
    assert not st.exists() and not (st.dir / "shard").exists() and not list(st.dir.glob("shard.dropped-*"))
    other = replace(IDENTITY, digest="another")
    st.ensure_collection(other)  # a new collection under the same name, for another model
    assert st.count() == 0 and st.model() == other
    st.close()


def test_scroll_retrieve_delete(store):
    vectors, paths, _ = fill(store)
    assert sorted(r.payload["path"] for r in store.scroll(["path"])) == sorted(paths)
    [rec] = store.retrieve([point_id(paths[3])], with_vector=True)
    np.testing.assert_allclose(rec.vector, vectors[3] / np.linalg.norm(vectors[3]), atol=F16)
    assert rec.payload["mtime_ns"] == 17 * 10**17 + 3  # integers come back exactly
    assert store.retrieve(["not-an-id", point_id("/nope")]) == []
    store.delete([point_id(p) for p in paths[:10]])
    assert store.count() == 30


def test_identity_is_recorded_and_checked(store):
    fill(store)
    assert store.model() == IDENTITY
    store.ensure_collection(IDENTITY)  # same model: fine
    with pytest.raises(ModelError, match="was built with model"):
        store.ensure_collection(replace(IDENTITY, digest="other"))
    with pytest.raises(ModelError):
        store.check_model(replace(IDENTITY, mel={"n_mels": 128}))


def test_bad_vectors_are_refused(store):
    fill(store)
    with pytest.raises(QueryError, match="dimensions"):
        store.query(np.ones(DIM + 1))
    with pytest.raises(QueryError, match="NaN"):
        store.query(np.full(DIM, np.nan))
    with pytest.raises(QueryError, match="all zeros"):
        store.query(np.zeros(DIM))
    lists = [([1.0] * (DIM - 1), "dimensions"), ([float("inf")] * DIM, "NaN"), ([[1.0] * DIM], "flat list")]
    for bad, message in lists:
        with pytest.raises(QueryError, match=message):
            store.query(bad)  # a plain list, as a stored vector comes back
    with pytest.raises(QueryError, match="NaN"):
        store.upsert([point_id("/x")], np.full((1, DIM), np.nan, dtype=np.float32), [{"path": "/x"}])
    with pytest.raises(StoreError, match="cannot store"):
        store.upsert([point_id("/x")], np.ones((1, DIM), dtype=np.float32), [{"path": "/x", "duration": np.inf}])


def test_missing_and_empty_collection(store):
    with pytest.raises(StoreError, match="does not exist"):
        store.query(np.ones(DIM))
    store.ensure_collection(IDENTITY)
    with pytest.raises(QueryError, match="is empty"):
        store.query(np.ones(DIM))


def test_edge_store_reopens_with_everything_after_writes(tmp_path):
    a = EdgeStore(tmp_path, "c")
    vectors, paths, _ = fill(a)
    a.delete([point_id(paths[0])])
    a.close()  # ends the log with a no-op delete of a sentinel id, which must not touch real points
    b = EdgeStore(tmp_path, "c")
    assert b.count() == 39
    [rec] = b.retrieve([point_id(paths[5])], with_vector=True)
    np.testing.assert_allclose(rec.vector, vectors[5] / np.linalg.norm(vectors[5]), atol=F16)
    assert b.query(vectors[5], Page(limit=1))[0].id == point_id(paths[5])
    b.close()


def test_edge_lock_waits_then_fails_clearly(tmp_path):
    a = EdgeStore(tmp_path, "c", lock_timeout=0.3)
    fill(a)
    b = EdgeStore(tmp_path, "c", lock_timeout=0.3)
    with pytest.raises(StoreError, match="locked by another audiosim process"):
        b.count()
    a.release()
    assert b.count() == 40
    b.close()


def test_edge_writer_shares_only_when_someone_waits(tmp_path):
    a = EdgeStore(tmp_path, "c", lock_timeout=0.3)
    fill(a)
    a.share(hold_seconds=0)
    assert a.count() == 40 and a.is_open  # nobody waiting: keeps the shard (and its lock)
    b = EdgeStore(tmp_path, "c", lock_timeout=0.3)
    with pytest.raises(StoreError, match="locked"):
        b.count()  # times out, but has asked the holder to let go
    a.share(hold_seconds=0)
    assert b.count() == 40  # got in without waiting
    a.share(hold_seconds=0)  # the request was answered once; a has nothing to give back now
    b.close()
    assert a.count() == 40
    a.close()


def test_recommend_by_examples(store):
    vectors, paths, _ = fill(store)
    examples = [point_id(paths[i]) for i in (2, 4, 7)]
    hits = store.recommend(vectors[[2, 4]], vectors[[7]], page=Page(limit=40, exclude=examples))
    unit = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
    pos = np.maximum(unit @ unit[2], unit @ unit[4])
    neg = unit @ unit[7]
    # best-score strategy: closer to a positive than to every negative -> the positive score; else penalised
    score = np.where(pos > neg, pos, -(neg**2))
    score[[2, 4, 7]] = -np.inf
    expected = [paths[i] for i in np.argsort(-score)[:10]]
    assert [h.payload["path"] for h in hits[:10]] == expected
    only_pos = store.recommend(vectors[[2]], page=Page(limit=3, exclude=[point_id(paths[2])]))
    assert [h.id for h in only_pos] == [
        h.id for h in store.query(vectors[2], Page(limit=3, exclude=[point_id(paths[2])]))
    ]


def test_server_errors_name_the_place_but_never_the_key():
    from audiosim.shared.store.server import ServerStore

    key = "sekrit-api-key-123"
    st = ServerStore("https://user:pw@127.0.0.1:9/", "c", api_key=key, timeout=2)
    with pytest.raises(StoreError) as err:
        st.exists()
    text = str(err.value)
    assert "https://127.0.0.1:9" in text
    assert key not in text and "pw" not in text
    st.close()


def test_cli_never_prints_the_key(runner, tmp_path, monkeypatch):
    from audiosim.searcher.cli import app

    key = "another-sekrit-key"
    monkeypatch.setenv("AUDIOSIM_QDRANT_URL", "http://127.0.0.1:9")
    monkeypatch.setenv("AUDIOSIM_QDRANT_API_KEY", key)
    monkeypatch.setenv("AUDIOSIM_TIMEOUT", "2")
    r = runner.invoke(app, ["id", "00000000-0000-0000-0000-000000000000"])
    assert r.exit_code == 1 and "Qdrant at http://127.0.0.1:9" in r.stderr
    assert key not in r.output


def test_edge_waiters_are_served_first_come_first_served(tmp_path):
    """Issue 10, item 11: an indexer that let searchers in is queued behind them, not behind every later one,
    and searchers are served in order: neither side starves. Synchronised on the queue's ticket files."""
    import threading
    import time

    writer = EdgeStore(tmp_path, "c", lock_timeout=60)
    fill(writer)
    queue = tmp_path / "c" / "queue"
    order: list[str] = []

    def tickets(n: int) -> None:
        deadline = time.monotonic() + 60
        while len(list(queue.glob("*"))) < n:
            assert time.monotonic() < deadline, "no ticket appeared"
            time.sleep(0.005)

    def use(store: EdgeStore, name: str) -> None:
        store.count()
        order.append(name)
        store.close()

    searcher_b = EdgeStore(tmp_path, "c", lock_timeout=60)
    b = threading.Thread(target=use, args=(searcher_b, "b"))
    b.start()
    deadline = time.monotonic() + 60
    while not (tmp_path / "c" / "waiting").exists():  # b has asked the holder to let go
        assert time.monotonic() < deadline, "b never asked"
        time.sleep(0.005)
    writer.share(hold_seconds=0)  # ...and the writer lets go
    b.join(timeout=60)
    searcher_c = EdgeStore(tmp_path, "c", lock_timeout=60)
    blocker = EdgeStore(tmp_path, "c", lock_timeout=60)
    blocker.count()  # someone holds the store while the next two line up
    w = threading.Thread(target=use, args=(writer, "writer"))
    w.start()
    tickets(1)
    c = threading.Thread(target=use, args=(searcher_c, "c"))
    c.start()
    tickets(2)
    blocker.close()
    w.join(timeout=60)
    c.join(timeout=60)
    assert order == ["b", "writer", "c"]
    assert not list(queue.glob("*"))  # every ticket is gone
