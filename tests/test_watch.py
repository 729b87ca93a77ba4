"""`audiosim-index watch` as a real process: it follows additions, changes, removals and renames."""

from __future__ import annotations

import os
import queue
import shutil
import signal
import subprocess
import threading
import time
from collections.abc import Callable

from audiosim.indexer.watch import diff
from tests.conftest import AUDIO, SAMPLES, backend_env
from tests.test_indexer_processes import cli, point_ids


def log_reader(proc: subprocess.Popen) -> Callable[[str], str]:
    """expect(text): the next stderr line of proc that contains text, waiting up to 90 s (proc must live)."""
    lines: queue.Queue[str] = queue.Queue()
    assert proc.stderr is not None
    threading.Thread(target=lambda: [lines.put(x) for x in proc.stderr], daemon=True).start()

    def expect(text: str) -> str:
        end = time.monotonic() + 90
        while time.monotonic() < end:
            try:
                line = lines.get(timeout=0.5)
            except queue.Empty:
                assert proc.poll() is None, "watch ended early"
                continue
            if text in line:
                return line
        raise AssertionError(f"no log line with {text!r}")

    return expect


def test_diff_names_each_kind_of_change():
    old = {"/a": (1, 1), "/b": (2, 2), "/c": (3, 3)}
    new = {"/a": (1, 1), "/b": (2, 5), "/d": (3, 3), "/e": (4, 4)}
    ch = diff(old, new)
    assert (ch.added, ch.changed, ch.removed, ch.renamed) == (["/e"], ["/b"], [], [("/c", "/d")])
    assert not diff(new, dict(new))


def test_watch_follows_the_folder(tmp_path):
    lib = tmp_path / "lib"
    shutil.copytree(SAMPLES / "Drums", lib / "Drums")
    env = {**backend_env("edge", tmp_path), "AUDIOSIM_LOCK_TIMEOUT": "30"}
    proc = cli("audiosim-index", "watch", str(lib), "--interval", "0.3", env=env)
    expect = log_reader(proc)

    try:
        expect("in step: 27 indexed")
        shutil.copy(SAMPLES / "Bass" / "bass_hit_c.flac", lib / "Drums" / "new.flac")
        expect("added " + str(lib / "Drums" / "new.flac"))
        expect("in step: 1 indexed")
        changed = lib / "Drums" / "Kicks" / "bd_808.flac"
        shutil.copy(SAMPLES / "Bass" / "bass_hard_c.wav", changed)
        expect("changed " + str(changed))
        gone = lib / "Drums" / "Toms" / "drum_tom_hi_hard.flac"
        gone.unlink()
        expect("removed " + str(gone))
        src, dst = lib / "Drums" / "Hats" / "elec_tick.flac", lib / "Drums" / "Hats" / "tick renamed.flac"
        os.rename(src, dst)
        expect(f"renamed {src} -> {dst}")
        shutil.copy(AUDIO / "broken" / "garbage.mp3", lib / "Drums" / "bad.mp3")
        expect("failed " + str(lib / "Drums" / "bad.mp3"))
        shutil.copy(SAMPLES / "Keys" / "elec_bell.flac", lib / "Drums" / "after bad.flac")
        expect("in step: 1 indexed")  # still going after a bad file
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=60)
    assert proc.returncode == 0
    clean = {**env, "AUDIOSIM_STORE": str(tmp_path / "clean")}
    ran = cli("audiosim-index", "run", str(lib), env=clean)
    ran.communicate(timeout=120)
    assert point_ids(env) == point_ids(clean)
