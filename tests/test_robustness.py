"""Hostile input and conditions, as a user meets them: searchers beside an indexer, unreadable folders, FIFOs,
names that are not UTF-8 or look like markup, a killed indexer's workers."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from audiosim.shared.encoder import Encoder
from audiosim.shared.settings import SHIPPED_MODEL
from audiosim.shared.store import open_store
from tests.conftest import SAMPLES, backend_env, settings_for
from tests.test_indexer_processes import big_library, cli, wait_for_points

BIN = Path(sys.executable).parent


def run(*args: str, env: dict[str, str], **kw) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(BIN / args[0]), *args[1:]], env={**os.environ, **env}, capture_output=True, timeout=300, **kw
    )


def stored(env: dict[str, str]) -> tuple[int, dict[str, bool]]:
    """(count, {id: has a non-zero vector}) of the collection the env names."""
    with open_store(settings_for(env)) as st:
        ids = [r.id for r in st.scroll(["path"])]
        vectors = {r.id: r.vector is not None and any(r.vector) for r in st.retrieve(ids, with_vector=True)}
        return st.count(), vectors


def test_searchers_in_a_loop_beside_an_indexer_lose_nothing(tmp_path):
    """Issue 10, item 1: searchers opening the store while the indexer shares it between batches lose no point
    and damage nothing: afterwards every file has its point, every point its vector, and a re-run agrees."""
    env = {**backend_env("edge", tmp_path), "AUDIOSIM_BATCH_SIZE": "32", "AUDIOSIM_LOCK_TIMEOUT": "120"}
    lib = big_library(tmp_path / "lib", 20)
    n_files = 20 * 46
    indexer = cli("audiosim-index", "run", str(lib), "--workers", "0", env=env)
    wait_for_points(indexer, Path(env["AUDIOSIM_STORE"]))
    probe = str(lib / "set00" / "Drums" / "Kicks" / "bd_808.flac")
    # Each searcher loops while the indexer runs, and at least 3 times: the test does not depend on speed.
    loop = (
        f"n=0; while kill -0 {indexer.pid} 2>/dev/null || [ $n -lt 3 ]; do n=$((n+1)); "
        f"{BIN / 'audiosim-search'} id {probe} -k 3 -f paths >/dev/null 2>>errors || echo FAILED >> errors; "
        "echo x >> searches; done"
    )
    searchers = [subprocess.Popen(["bash", "-c", loop], cwd=tmp_path, env={**os.environ, **env}) for _ in range(4)]
    _, err = indexer.communicate(timeout=600)
    for s in searchers:
        s.wait(timeout=300)
    assert indexer.returncode == 0, err[-800:]
    assert (tmp_path / "searches").read_text().count("x") >= 12
    errors = (tmp_path / "errors").read_text() if (tmp_path / "errors").exists() else ""
    assert "FAILED" not in errors, errors[-800:]
    count, has_vector = stored(env)
    assert count == n_files == len(has_vector) and all(has_vector.values())
    again = run("audiosim-index", "run", str(lib), env=env, text=True)
    assert again.returncode == 0 and f"0 indexed, {n_files} unchanged" in again.stdout


# Root reads any folder; without these two capabilities it is held to the permission bits like a normal user.
AS_A_USER = ["setpriv", "--inh-caps=-dac_override,-dac_read_search", "--bounding-set=-dac_override,-dac_read_search"]


def as_a_user() -> list[str]:
    """A command prefix under which permission bits apply (nothing for a normal user); skips where impossible."""
    if os.geteuid() != 0:
        return []
    if shutil.which("setpriv") is None:
        pytest.skip("running as root without setpriv: permissions cannot be made to apply")
    return AS_A_USER


def test_an_unreadable_folder_keeps_its_points(tmp_path):
    """Item 3: a folder the walk cannot read is a failure (exit 3), never a deletion."""
    prefix = as_a_user()
    lib = tmp_path / "lib"
    shutil.copytree(SAMPLES / "Drums", lib, ignore=shutil.ignore_patterns("*.md"))
    env = {**os.environ, **backend_env("edge", tmp_path)}
    index = [*prefix, str(BIN / "audiosim-index"), "run", str(lib)]
    first = subprocess.run(index, env=env, capture_output=True, text=True, timeout=300)
    assert first.returncode == 0, first.stderr[-800:]
    os.chmod(lib / "Snares", 0)
    try:
        second = subprocess.run(index, env=env, capture_output=True, text=True, timeout=300)
    finally:
        os.chmod(lib / "Snares", 0o755)
    assert second.returncode == 3, second.stdout + second.stderr
    assert "0 removed" in second.stdout and "cannot read folder: permission denied" in second.stdout
    assert stored(backend_env("edge", tmp_path))[0] == 27
    locked = lib / "Kicks" / "locked.wav"  # an unreadable file says so, not "System error."
    shutil.copy(SAMPLES / "Drums" / "Snares" / "sn_dub.wav", locked)
    os.chmod(locked, 0)
    third = subprocess.run(index, env=env, capture_output=True, text=True, timeout=300)
    assert third.returncode == 3 and "locked.wav: cannot open: permission denied" in third.stdout, third.stdout


@pytest.mark.parametrize("workers", ["0", "2"])
def test_a_fifo_named_like_audio_is_skipped_not_waited_for(tmp_path, workers):
    """Item 7: only regular files are audio; a FIFO would block a reader until someone writes into it."""
    lib = tmp_path / "lib"
    shutil.copytree(SAMPLES / "Drums" / "Kicks", lib)
    os.mkfifo(lib / "pipe.wav")
    env = backend_env("edge", tmp_path)
    r = run("audiosim-index", "run", str(lib), "--workers", workers, env=env, text=True)
    assert r.returncode == 3, r.stdout + r.stderr
    assert "pipe.wav: not a regular file (a FIFO), skipped" in r.stdout
    assert f"{len([p for p in lib.iterdir() if p.name != 'pipe.wav'])} indexed" in r.stdout


def test_a_name_that_is_not_utf8_is_a_file_like_any_other(tmp_path):
    """Item 8: indexed, found by its path, filtered, printed (its own bytes with -f paths), on the page."""
    lib = tmp_path / "lib"
    shutil.copytree(SAMPLES / "Drums" / "Snares", lib)
    odd = os.path.join(os.fsencode(lib), b"caf\xe9 snare.wav")
    shutil.copy(SAMPLES / "Drums" / "Snares" / "sn_dub.wav", odd)
    env = backend_env("edge", tmp_path)
    r = run("audiosim-index", "run", str(lib), env=env)
    assert r.returncode == 0, r.stderr[-800:]
    found = run("audiosim-search", "id", odd, "-k", "3", "-f", "paths", "--include-self", env=env)
    assert found.returncode == 0, found.stderr[-800:]
    assert odd in found.stdout.splitlines()
    by_name = run("audiosim-search", "id", odd, "-f", "jsonl", "--include-self", "--where", "name~caf", env=env)
    hits = json.loads(by_name.stdout)["results"]
    assert [h["payload"]["name"] for h in hits] == ["caf\\xe9 snare.wav"]
    assert bytes.fromhex(hits[0]["payload"]["path_bytes"]) == odd
    page = tmp_path / "page.html"
    assert run("audiosim-search", "id", odd, "-k", "2", "--html", str(page), env=env).returncode == 0
    assert "caf\\xe9 snare.wav" in page.read_text() and "<audio" in page.read_text()
    part = [run("audiosim-index", "--collection", f"p{i}", "run", str(lib), "--partition", f"{i}/2", env=env)
            for i in (1, 2)]  # fmt: skip
    assert all(p.returncode == 0 for p in part)
    assert sum(int(p.stdout.split(b"done: ")[1].split()[0]) for p in part) == len(list(lib.iterdir()))


def test_names_are_never_read_as_markup(tmp_path):
    """Item 9: `[red]red.wav` prints as itself, and a `[/b]` in a name breaks nothing."""
    lib = tmp_path / "lib"
    lib.mkdir()
    (lib / "x[").mkdir()  # a path with `[/b]` in it: x[/b]y.wav
    for name in ("[red]red.wav", "x[/b]y.wav"):
        shutil.copy(SAMPLES / "Drums" / "Snares" / "sn_dub.wav", lib / name)
    (lib / "x[/b]broken.wav").write_bytes(b"not audio")
    env = backend_env("edge", tmp_path)
    r = run("audiosim-index", "run", str(lib), env=env, text=True)
    assert r.returncode == 3 and "x[/b]broken.wav" in r.stdout and "2 indexed" in r.stdout, r.stderr
    table = run("audiosim-search", "id", str(lib / "[red]red.wav"), "--include-self", env={**env, "COLUMNS": "200"},
                text=True)  # fmt: skip
    assert table.returncode == 0, table.stderr
    assert "[red]red.wav" in table.stdout and "b]y.wav" in table.stdout and "x[" in table.stdout
    dups = run("audiosim-search", "duplicates", "--threshold", "0.99", env={**env, "COLUMNS": "200"}, text=True)
    assert dups.returncode == 0 and "[red]red.wav" in dups.stdout and "b]y.wav" in dups.stdout


def _children(pid: int) -> set[int]:
    out: set[int] = set()
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:  # a thread can end between the listing and the read
            out |= {int(c) for c in (task / "children").read_text().split()}
        except (FileNotFoundError, ProcessLookupError):
            continue
    return out


def _alive(pid: int) -> bool:
    """Running, not a zombie left for its new parent to reap."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def test_workers_die_with_a_killed_indexer(tmp_path):
    """Item 10: SIGKILL of the parent takes its worker processes with it."""
    env = {**backend_env("edge", tmp_path), "AUDIOSIM_BATCH_SIZE": "16"}
    lib = big_library(tmp_path / "lib", 60)
    indexer = cli("audiosim-index", "run", str(lib), "--workers", "2", env=env)
    workers: set[int] = set()
    while len(workers) < 2:  # the workers start before the diff and live until the last chunk is back
        assert indexer.poll() is None, "the indexer ended before its workers were seen"
        workers = _children(indexer.pid)
        time.sleep(0.01)
    indexer.send_signal(signal.SIGKILL)
    indexer.wait(timeout=60)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and any(_alive(w) for w in workers):
        time.sleep(0.05)
    alive = [w for w in workers if _alive(w)]
    assert not alive, f"workers outlived their indexer: {alive}"


def _zero_a_vector(store_dir: Path, path: Path) -> None:
    """Outside damage: overwrite one point's vector with zeros, through the engine itself."""
    import uuid

    import qdrant_edge as q

    from audiosim.shared.store import point_id

    shard = q.EdgeShard.load(str(store_dir / "test" / "shard"))
    pid = uuid.UUID(point_id(path))
    [rec] = shard.retrieve([pid], True, False)
    shard.update(q.UpdateOperation.upsert_points([q.Point(pid, [0.0] * Encoder(SHIPPED_MODEL).dim, dict(rec.payload))]))
    shard.close()


def test_check_reports_damage_and_a_rerun_heals_it(tmp_path):
    """Item 2: `check` finds points without a usable vector (exit 3); `run` re-encodes them; then healthy."""
    env = backend_env("edge", tmp_path)
    lib = tmp_path / "lib"
    shutil.copytree(SAMPLES / "Drums" / "Kicks", lib)
    assert run("audiosim-index", "run", str(lib), env=env).returncode == 0
    healthy = run("audiosim-index", "check", env=env, text=True)
    assert healthy.returncode == 0 and "healthy" in healthy.stdout, healthy.stderr
    victim = sorted(lib.iterdir())[0]
    _zero_a_vector(Path(env["AUDIOSIM_STORE"]), victim)
    search = run("audiosim-search", "id", str(sorted(lib.iterdir())[1]), env=env, text=True)
    assert "no usable vector" in search.stderr  # not a silent 0.000
    sick = run("audiosim-index", "check", env={**env, "COLUMNS": "300"}, text=True)
    assert sick.returncode == 3 and "1 points have no usable vector" in sick.stdout and victim.name in sick.stdout
    healed = run("audiosim-index", "run", str(lib), env=env, text=True)
    assert healed.returncode == 0 and "1 indexed" in healed.stdout
    assert run("audiosim-index", "check", env=env).returncode == 0
    assert healthy.stdout.split("ids digest")[1].split()[0] in run("audiosim-index", "check", env=env, text=True).stdout


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        ("delete", "holds data but audiosim.json is missing"),
        ("empty", "is damaged (no model identity)"),
    ],
)
def test_damaged_metadata_is_named_as_such(tmp_path, damage, message):
    """Item 6: a lost or emptied audiosim.json beside a full shard is damage, not 'no collection yet'."""
    env = backend_env("edge", tmp_path)
    assert run("audiosim-index", "run", str(SAMPLES / "Drums" / "Kicks"), env=env).returncode == 0
    meta = Path(env["AUDIOSIM_STORE"]) / "test" / "audiosim.json"
    if damage == "delete":
        meta.unlink()
    else:
        meta.write_text("{}")
    for cmd in (
        ["audiosim-index", "status"],
        ["audiosim-search", "id", str(SAMPLES / "Drums" / "Kicks" / "bd_808.flac")],
    ):
        r = run(*cmd, env=env, text=True)
        assert r.returncode == 1 and message in r.stderr and "Traceback" not in r.stderr, r.stderr
        assert len(r.stderr.strip().splitlines()) == 1


def test_unwritable_outputs_are_refused_before_the_work(tmp_path):
    """Item 12: --report and --html that cannot be written are found first, not after the whole run."""
    env = backend_env("edge", tmp_path)
    r = run("audiosim-index", "run", str(SAMPLES), "--report", str(tmp_path / "no" / "r.jsonl"), env=env, text=True)
    assert r.returncode == 1 and "--report" in r.stderr and "does not exist" in r.stderr
    assert not (Path(env["AUDIOSIM_STORE"]) / "test").exists()  # nothing was indexed
    assert run("audiosim-index", "run", str(SAMPLES / "Bass"), env=env).returncode == 0
    page = run("audiosim-search", "id", str(SAMPLES / "Bass" / "bass_hit_c.flac"), "--html", str(tmp_path), env=env,
               text=True)  # fmt: skip
    assert page.returncode == 1 and "is a folder" in page.stderr


@pytest.mark.parametrize(
    ("payload", "message"),
    [
        (np.zeros((0, 256), np.float32), "got shape (0, 256)"),
        ("[" * 100000 + "]" * 100000, "nested too deeply"),
        ('["1", 2]', "expected a list of numbers"),
        ("[true, 1.0]", "expected a list of numbers"),
        ("[1e308, 1.0]", "out-of-range"),
    ],
)
def test_hostile_vectors_are_one_line_errors(tmp_path, payload, message):
    env = backend_env("edge", tmp_path)
    assert run("audiosim-index", "run", str(SAMPLES / "Bass"), env=env).returncode == 0
    source = tmp_path / ("v.npy" if isinstance(payload, np.ndarray) else "v.json")
    if isinstance(payload, np.ndarray):
        np.save(source, payload)
    else:
        source.write_text(payload)
    r = run("audiosim-search", "vector", str(source), env=env, text=True)
    assert r.returncode == 1 and message in r.stderr and r.stdout == "", r.stderr
    assert r.stderr.startswith("error: ") and "Warning" not in r.stderr and len(r.stderr.splitlines()) == 1


def test_paths0_separates_names_with_newlines(tmp_path):
    """Item 12: a name holding a newline survives `-f paths0` (NUL-separated, for xargs -0)."""
    lib = tmp_path / "lib"
    lib.mkdir()
    odd = lib / "two\nlines.wav"
    shutil.copy(SAMPLES / "Drums" / "Snares" / "sn_dub.wav", odd)
    shutil.copy(SAMPLES / "Drums" / "Snares" / "sn_dub.wav", lib / "plain.wav")
    env = backend_env("edge", tmp_path)
    assert run("audiosim-index", "run", str(lib), env=env).returncode == 0
    r = run("audiosim-search", "id", str(lib / "plain.wav"), "-f", "paths0", env=env)
    assert r.stdout.split(b"\0")[:-1] == [os.fsencode(odd)]


def _mount_tmpfs(where: Path, size: str) -> None:
    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs needs root")
    where.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(where)]).returncode:
        pytest.skip("this machine does not let the tests mount a tmpfs")


def test_a_full_disk_is_a_clear_message_and_a_rerun_converges(tmp_path):
    """Item 4: on a 3 MB tmpfs the run stops before writing, with one line naming the store and the space.
    On an ext4 disk that fills up after indexing, status, search and run each say so in one line (no SIGBUS),
    and once space is freed a re-run converges."""
    small = tmp_path / "small"
    _mount_tmpfs(small, "3m")
    try:
        env = {**backend_env("edge", tmp_path), "AUDIOSIM_STORE": str(small / "store")}
        full = run("audiosim-index", "run", str(SAMPLES), env=env, text=True)
        assert full.returncode == 1, full.stdout + full.stderr
        assert full.stderr.startswith("error: not enough disk space for the store at ") and "MB needed" in full.stderr
        assert len(full.stderr.strip().splitlines()) == 1
        assert not (small / "store" / "test" / "shard").exists()  # nothing half-written
    finally:
        subprocess.run(["umount", str(small)], check=True)

    # A real file system (ext4 on a loop device): full after indexing, then freed.
    if shutil.which("mkfs.ext4") is None:
        pytest.skip("no mkfs.ext4 for the loop-device part")
    image, disk = tmp_path / "disk.img", tmp_path / "disk"
    with image.open("wb") as fh:
        fh.truncate(200 * 2**20)
    subprocess.run(["mkfs.ext4", "-q", str(image)], check=True)
    disk.mkdir()
    if subprocess.run(["mount", "-o", "loop", str(image), str(disk)]).returncode:
        pytest.skip("this machine does not let the tests mount a loop device")
    try:
        env = {**backend_env("edge", tmp_path), "AUDIOSIM_STORE": str(disk / "store")}
        assert run("audiosim-index", "run", str(SAMPLES), env=env).returncode == 0
        subprocess.run(["dd", "if=/dev/zero", f"of={disk / 'filler'}", "bs=1M"], capture_output=True)
        kick = str(SAMPLES / "Drums" / "Kicks" / "bd_808.flac")
        for cmd in (
            ["audiosim-index", "status"],
            ["audiosim-search", "id", kick],
            ["audiosim-index", "run", str(SAMPLES)],
        ):
            r = run(*cmd, env=env, text=True)
            assert r.returncode == 1 and len(r.stderr.strip().splitlines()) == 1, (cmd, r.stderr)
            assert "is full" in r.stderr or "not enough disk space" in r.stderr, r.stderr
        (disk / "filler").unlink()
        again = run("audiosim-index", "run", str(SAMPLES), env=env, text=True)
        assert again.returncode == 0 and "0 indexed, 46 unchanged" in again.stdout, again.stdout + again.stderr
        assert run("audiosim-index", "check", env=env).returncode == 0
    finally:
        subprocess.run(["umount", str(disk)], check=True)


def test_two_runs_started_at_once_on_a_fresh_store_both_succeed(tmp_path):
    """Item 5: creation happens under the store's lock with the metadata first, so the second run waits and
    then finds the collection (never 'holds data but no audiosim.json')."""
    for attempt in range(3):
        env = {**backend_env("edge", tmp_path / f"try{attempt}"), "AUDIOSIM_LOCK_TIMEOUT": "120"}
        runs = [cli("audiosim-index", "run", str(SAMPLES), env=env) for _ in range(2)]
        results = [r.communicate(timeout=300) for r in runs]
        assert [r.returncode for r in runs] == [0, 0], [err[-400:] for _, err in results]
        assert stored(env)[0] == 46
    # The same race made certain: both runs line up behind the store's lock, then start together.
    from audiosim.shared.store.edge import StoreLock

    env = {**backend_env("edge", tmp_path / "lined-up"), "AUDIOSIM_LOCK_TIMEOUT": "120"}
    collection = Path(env["AUDIOSIM_STORE"]) / "test"
    held = StoreLock(collection / "lock")
    assert held.try_acquire()
    runs = [cli("audiosim-index", "run", str(SAMPLES), env=env) for _ in range(2)]
    deadline = time.monotonic() + 120
    while len(list((collection / "queue").glob("*"))) < 2:
        assert time.monotonic() < deadline and all(r.poll() is None for r in runs), "the runs did not line up"
        time.sleep(0.01)
    held.release()
    results = [r.communicate(timeout=300) for r in runs]
    assert [r.returncode for r in runs] == [0, 0], [err[-400:] for _, err in results]
    assert stored(env)[0] == 46


def test_watch_takes_fifos_odd_names_and_unreadable_folders_in_its_stride(tmp_path):
    """Items 3, 7 and 8 in `watch`: a FIFO is skipped, a name that is not UTF-8 is indexed, and a folder that
    becomes unreadable keeps its points. Synchronised on the watch's log lines."""
    from tests.test_watch import log_reader

    prefix = as_a_user()
    lib = tmp_path / "lib"
    shutil.copytree(SAMPLES / "Drums" / "Kicks", lib / "Kicks")
    shutil.copytree(SAMPLES / "Drums" / "Snares", lib / "Snares")
    os.mkfifo(lib / "pipe.wav")
    shutil.copy(SAMPLES / "Bass" / "bass_hit_c.flac", os.path.join(os.fsencode(lib), b"caf\xe9.flac"))
    files = len(list((lib / "Kicks").iterdir())) + len(list((lib / "Snares").iterdir())) + 1
    env = {**os.environ, **backend_env("edge", tmp_path), "AUDIOSIM_LOCK_TIMEOUT": "30"}
    proc = subprocess.Popen(
        [*prefix, str(BIN / "audiosim-index"), "watch", str(lib), "--interval", "0.3"],
        env=env,
        stderr=subprocess.PIPE,
        text=True,
        errors="backslashreplace",
    )
    expect = log_reader(proc)

    try:
        expect("pipe.wav: not a regular file (a FIFO), skipped")
        expect(f"in step: {files} indexed")
        os.chmod(lib / "Snares", 0)
        shutil.copy(SAMPLES / "Drums" / "Kicks" / "bd_808.flac", lib / "Kicks" / "new.flac")
        expect("cannot read folder: permission denied")
        assert "0 removed" in expect("in step: 1 indexed")
    finally:
        os.chmod(lib / "Snares", 0o755)
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=60)
    assert proc.returncode == 0
    assert stored(backend_env("edge", tmp_path))[0] == files + 1


def test_a_corrupt_log_is_named_as_damage_not_as_a_lock(tmp_path):
    """Item 6: a write-ahead log with a garbage header is damage; saying 'locked' sent users to wait."""
    env = backend_env("edge", tmp_path)
    assert run("audiosim-index", "run", str(SAMPLES / "Drums" / "Kicks"), env=env).returncode == 0
    [log_file] = sorted((Path(env["AUDIOSIM_STORE"]) / "test" / "shard" / "wal").glob("open-*"))[:1]
    with log_file.open("r+b") as fh:
        fh.write(b"\xff" * 4096)
    for cmd in (["audiosim-index", "status"], ["audiosim-index", "check"]):
        r = run(*cmd, env=env, text=True)
        assert r.returncode == 1 and "it is damaged" in r.stderr and "locked" not in r.stderr, r.stderr
        assert len(r.stderr.strip().splitlines()) == 1
