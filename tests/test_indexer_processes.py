"""Real processes: SIGKILL and SIGTERM mid-run, a searcher beside a running indexer, partitioned workers."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from audiosim.shared.encoder import Encoder
from audiosim.shared.settings import SHIPPED_MODEL
from audiosim.shared.store import open_store
from audiosim.shared.store.edge import EdgeStore
from tests.conftest import SAMPLES, backend_env, settings_for

BIN = Path(sys.executable).parent


def big_library(root: Path, copies: int) -> Path:
    """`copies` copies of the bundled samples under different folders: many real files, quickly."""
    for i in range(copies):
        shutil.copytree(SAMPLES, root / f"set{i:02d}", ignore=shutil.ignore_patterns("*.md"))
    return root


def cli(name: str, *args: str, env: dict[str, str], **kw) -> subprocess.Popen:
    return subprocess.Popen(
        [str(BIN / name), *args],
        env={**os.environ, **env},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        **kw,
    )


def wait_for_points(proc: subprocess.Popen, store_dir: Path, timeout: float = 120) -> None:
    """Block until the running indexer has stored points (checked the way a searcher would: open, count,
    close, waiting for the lock the indexer shares between batches), or fail."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, f"indexer ended early: {proc.communicate()}"
        if (store_dir / "test" / "audiosim.json").exists():
            st = EdgeStore(store_dir, "test", lock_timeout=60)
            try:
                if st.count() > 0:
                    return
            finally:
                st.close()
        time.sleep(0.1)
    pytest.fail("the indexer stored nothing in time")


def point_ids(env: dict[str, str]) -> set[str]:
    with open_store(settings_for(env)) as st:
        return {r.id for r in st.scroll(["path"])}


@pytest.fixture
def edge_env(tmp_path):
    return {**backend_env("edge", tmp_path), "AUDIOSIM_BATCH_SIZE": "16"}


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM])
def test_killed_run_converges_to_a_clean_run(tmp_path, edge_env, sig):
    lib = big_library(tmp_path / "lib", 30)
    n_files = 30 * 46
    proc = cli("audiosim-index", "run", str(lib), "--workers", "0", env=edge_env)
    wait_for_points(proc, Path(edge_env["AUDIOSIM_STORE"]))
    proc.send_signal(sig)
    out, err = proc.communicate(timeout=60)
    if sig == signal.SIGTERM:
        assert proc.returncode == 130, err
        assert "interrupted:" in out
    else:
        assert proc.returncode == -signal.SIGKILL
    partial = point_ids(edge_env)
    assert len(partial) < n_files  # it really was stopped mid-run

    again = cli("audiosim-index", "run", str(lib), "--workers", "0", env=edge_env)
    out, err = again.communicate(timeout=300)
    assert again.returncode == 0, err
    assert f"{n_files - len(partial)} indexed, {len(partial)} unchanged" in out

    clean_env = {**edge_env, "AUDIOSIM_STORE": str(tmp_path / "clean-store")}
    clean = cli("audiosim-index", "run", str(lib), "--workers", "0", env=clean_env)
    assert clean.wait(timeout=300) == 0
    assert point_ids(edge_env) == point_ids(clean_env)
    assert len(point_ids(edge_env)) == n_files
    st = EdgeStore(Path(edge_env["AUDIOSIM_STORE"]), "test")
    assert st.count() == n_files  # no duplicates either
    st.close()


def test_search_works_while_an_indexer_runs(tmp_path, edge_env):
    lib = big_library(tmp_path / "lib", 50)
    indexer = cli("audiosim-index", "run", str(lib), "--workers", "0", env=edge_env)
    try:
        wait_for_points(indexer, Path(edge_env["AUDIOSIM_STORE"]))
        query = json.dumps([0.1] * Encoder(SHIPPED_MODEL).dim)
        for _ in range(3):
            search = cli(
                "audiosim-search",
                "vector",
                "-",
                "-k",
                "3",
                "-f",
                "jsonl",
                env={**edge_env, "AUDIOSIM_LOCK_TIMEOUT": "60"},
                stdin=subprocess.PIPE,
            )
            out, err = search.communicate(query, timeout=90)
            assert search.returncode == 0, err
            assert len(json.loads(out)["results"]) == 3
            # Whether the indexer still runs now depends on the machine's speed, so nothing here asks; the
            # looped version in test_robustness.py checks that nothing is lost either way.
    finally:
        indexer.wait(timeout=300)
    assert indexer.returncode == 0


def test_console_search_by_path_is_light_and_exits_cleanly(tmp_path, edge_env):
    lib = big_library(tmp_path / "lib", 1)
    assert cli("audiosim-index", "run", str(lib), env=edge_env).wait(timeout=300) == 0
    kick = str(lib / "set00" / "Drums" / "Kicks" / "bd_808.flac")
    search = subprocess.run(
        [sys.executable, "-X", "importtime", str(BIN / "audiosim-search"), "id", kick, "-k", "3", "-f", "jsonl"],
        env={**os.environ, **edge_env},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert search.returncode == 0, search.stderr[-800:]
    assert len(json.loads(search.stdout)["results"]) == 3  # output complete although the process ends with _exit
    imported = {line.split("|")[-1].strip().split(".")[0] for line in search.stderr.splitlines() if "|" in line}
    assert "qdrant_edge" in imported
    assert not imported & {"torch", "librosa", "numpy", "soundfile"}
    # the store is free again and intact: the searcher left it to the process's end instead of closing it
    st = EdgeStore(Path(edge_env["AUDIOSIM_STORE"]), "test", lock_timeout=0)
    assert st.count() == 46
    st.close()
    missing = cli("audiosim-search", "id", str(lib / "nope.wav"), env=edge_env)
    out, err = missing.communicate(timeout=120)
    assert missing.returncode == 1 and out == ""
    assert err.startswith("error: ") and "not in the collection" in err and "Traceback" not in err


def test_partitions_together_equal_one_run(runner, backend, tmp_path, monkeypatch):
    from audiosim.indexer.cli import app

    lib = big_library(tmp_path / "lib", 2)
    env = backend_env(backend, tmp_path)
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    seen: list[set[str]] = []
    for i in (1, 2, 3):
        before = point_ids(env) if seen else set()
        r = runner.invoke(app, ["run", str(lib), "--partition", f"{i}/3"])
        assert r.exit_code == 0, r.output
        after = point_ids(env)
        seen.append(after - before)
        assert before <= after  # a partition never removes another partition's points
    assert all(seen) and sum(len(s) for s in seen) == len(set().union(*seen))
    monkeypatch.setenv("AUDIOSIM_COLLECTION", "single")
    assert runner.invoke(app, ["run", str(lib)]).exit_code == 0
    assert set().union(*seen) == point_ids({**env, "AUDIOSIM_COLLECTION": "single"})
    r = runner.invoke(app, ["run", str(lib), "--partition", "4/3"])
    assert r.exit_code == 1 and "1 <= I <= N" in r.stderr


def test_indexing_never_imports_torch_and_an_unchanged_rerun_starts_no_workers(tmp_path):
    """Workers and the parent run the ONNX model; an unchanged re-run walks, diffs and is done."""
    code = (
        "import sys; from pathlib import Path; import audiosim.indexer.encoding as E; "
        "from audiosim.indexer.job import IndexJob, IndexOptions; from audiosim.indexer.stages import run_index; "
        "from audiosim.shared.settings import SHIPPED_MODEL; from audiosim.shared.store.edge import EdgeStore; "
        "pools = []; spawn = E.spawn_pool; "
        "E.spawn_pool = lambda *a, **k: pools.append(1) or spawn(*a, **k); "
        f"st = EdgeStore(Path({str(tmp_path / 'store')!r}), 'test'); lib = [Path({str(SAMPLES)!r})]; "
        "s = run_index(IndexJob(st, lib, SHIPPED_MODEL, IndexOptions(workers=2, batch_size=16))).summary; "
        "again = run_index(IndexJob(st, lib, SHIPPED_MODEL, IndexOptions(workers=2))).summary; "
        "print(s.indexed, st.count(), again.unchanged, len(pools), 'torch' in sys.modules); st.close()"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-800:]
    indexed, count, unchanged, pools, torch_loaded = out.stdout.split()
    assert indexed == count == unchanged == "46"
    assert pools == "1" and torch_loaded == "False"


@pytest.mark.parametrize("content", [None, b"not a checkpoint"])
def test_a_bad_model_is_one_line_with_workers_too(tmp_path, edge_env, content):
    model = tmp_path / "model.onnx"
    if content is not None:
        model.write_bytes(content)
    run = cli("audiosim-index", "--model", str(model), "run", str(SAMPLES), "--workers", "2", env=edge_env)
    _, err = run.communicate(timeout=300)
    assert run.returncode == 1
    expected = "model checkpoint not found" if content is None else "cannot read model"
    assert err.startswith("error: ") and expected in err and "Traceback" not in err, err
