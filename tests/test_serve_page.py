"""The web app as a user meets it: a real `audiosim-search serve` process, Debian's Chromium through playwright,
and an indexer run beside it. Every wait is on an event (a printed line, a page flag, a process exit)."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from audiosim.indexer.cli import app as index_app
from tests.conftest import SAMPLES

CHROMIUM = Path("/usr/bin/chromium")
BIN = Path(sys.executable).parent


@pytest.fixture
def backend() -> str:
    """The embedded store only: it is the one an indexer shares with the app through the waiting protocol (the
    server code path's test stand-in, qdrant-client's local mode, admits one process by design); the API tests
    cover both back ends."""
    return "edge"


def get(url: str) -> dict:
    with urllib.request.urlopen(url, timeout=120) as r:
        return json.loads(r.read())


@pytest.fixture
def served(env: dict[str, str], samples: Path, tmp_path: Path) -> Iterator[str]:
    r = CliRunner().invoke(index_app, ["run", str(samples)])
    assert r.exit_code == 0, r.output
    proc = subprocess.Popen(
        [str(BIN / "audiosim-search"), "serve", "--port", "0", "--layout", "pca",
         "--collections-dir", str(tmp_path / "collections")],
        env={**os.environ, **env}, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    assert proc.stdout is not None
    line = proc.stdout.readline()  # printed once the socket listens
    match = re.search(r"at (http://127\.0\.0\.1:\d+/)", line)
    assert match, line + (proc.stderr.read() if proc.stderr and proc.poll() is not None else "")
    yield match.group(1)
    proc.send_signal(signal.SIGTERM)  # stops cleanly: the store is closed, the process says so and exits 0
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0 and out.strip().endswith("stopped"), err


def test_an_indexer_runs_while_the_app_serves(served, env, tmp_path):
    before = get(served + "api/points?compact=1")  # the app now holds the store
    assert before["count"] == 46
    more = tmp_path / "more"
    more.mkdir()
    for name in ("bd_zum.wav", "bd_boom.wav"):
        shutil.copy(SAMPLES / "Drums" / "Kicks" / name, more / f"copy_{name}")
    run = subprocess.run(
        [str(BIN / "audiosim-index"), "run", str(more)],
        env={**os.environ, **env, "AUDIOSIM_LOCK_TIMEOUT": "300"}, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr
    after = get(served + "api/points?compact=1")
    assert after["count"] == 48 and sum(n.startswith("copy_") for n in after["name"]) == 2
    kept = dict(zip(before["ids"], zip(before["x"], before["y"], strict=True), strict=True))
    moved = [i for i, x, y in zip(after["ids"], after["x"], after["y"], strict=True) if i in kept and kept[i] != (x, y)]
    assert not moved  # the map was extended, not redrawn


def browser_page(p):
    if not CHROMIUM.exists():
        if os.environ.get("CI"):
            pytest.fail("CI must install Debian's chromium (make browser) for this test")
        pytest.skip("Debian's chromium is not installed: `make browser` installs it")
    browser = p.chromium.launch(
        executable_path=str(CHROMIUM),
        args=["--no-sandbox", "--disable-gpu", "--autoplay-policy=no-user-gesture-required",
              "--disable-background-networking", "--disable-component-update"],
    )  # fmt: skip
    return browser, browser.new_page(viewport={"width": 1200, "height": 800})


def test_the_map_plays_lists_neighbours_and_searches_files(served, samples, tmp_path):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser, page = browser_page(p)
        page.goto(served)
        page.wait_for_function("window.audiosim.ready")
        assert page.evaluate("window.audiosim.count") == 46
        assert page.evaluate("window.audiosim.drawn") == 46  # one mark per point
        legend = page.inner_text("#legend")
        assert "category" in legend
        kick = page.evaluate("(async () => (await (await fetch('/api/points?compact=1')).json()))()")
        target = kick["ids"][kick["name"].index("bd_zum.wav")]
        x, y = page.evaluate("id => window.audiosim.screenOf(id)", target)
        page.mouse.move(x, y)  # hover: the tooltip names it and the player plays it
        page.wait_for_function("document.getElementById('tip').textContent.includes('bd_zum.wav')")
        page.wait_for_function("document.getElementById('player').currentTime > 0")
        assert target in page.evaluate("document.getElementById('player').src")
        page.mouse.click(x, y)  # click: its neighbours are listed and ringed on the map
        page.wait_for_function("document.querySelectorAll('#results li').length === 20")
        assert "bd_zum.wav" in page.inner_text("#results-title")
        players = page.eval_on_selector_all("#results audio", "els => els.length")
        assert players == 20
        plain = page.evaluate("document.querySelector('#results li:first-child .name').textContent")
        page.check("#timbre")  # by sound alone: the same query again, ranked and scored as --timbre does
        page.wait_for_function(f"document.querySelector('#results li:first-child .name').textContent !== {plain!r}")
        api = get(f"{served}api/search?id={target}&k=20&timbre=true")["results"]
        shown = page.eval_on_selector_all("#results li", "els => els.map(e => e.dataset.id)")
        assert shown == [h["id"] for h in api]
        assert "by sound alone" in page.inner_text("#results-title")
        assert f"{api[0]['score']:.3f}" in page.inner_text("#results li:first-child .name")
        page.set_input_files("#pick", str(samples / "Drums" / "Snares" / "sn_dub.wav"))  # search by a file
        page.wait_for_function("document.getElementById('results-title').textContent.includes('sn_dub.wav')")
        first = page.inner_text("#results li:first-child .name")
        assert first.startswith("sn_dub.wav")
        page.fill("#where", "categroy=snare")  # a typo: the CLI's message, inline
        page.click("#filter button")
        page.wait_for_function("document.getElementById('filter-error').textContent.length > 0")
        assert "did you mean 'category'" in page.inner_text("#filter-error")
        page.fill("#where", "folder^=Drums/Kicks")
        page.click("#filter button")
        page.wait_for_function("window.audiosim.count === 8 && window.audiosim.drawn === 8")
        assert page.inner_text("#filter-error") == ""
        page.screenshot(path=str(tmp_path / "map.png"))
        browser.close()


def test_a_dropped_file_is_searched(served, samples):
    from playwright.sync_api import sync_playwright

    data = (samples / "Drums" / "Kicks" / "bd_boom.wav").read_bytes()
    with sync_playwright() as p:
        browser, page = browser_page(p)
        page.goto(served)
        page.wait_for_function("window.audiosim.ready")
        page.evaluate(
            """bytes => {
                const file = new File([new Uint8Array(bytes)], 'dropped.wav', {type: 'audio/wav'});
                const dt = new DataTransfer();
                dt.items.add(file);
                document.dispatchEvent(new DragEvent('drop', {dataTransfer: dt, bubbles: true, cancelable: true}));
            }""",
            list(data),
        )
        page.wait_for_function("document.querySelectorAll('#results li').length > 0")
        assert "dropped.wav" in page.inner_text("#results-title")
        assert page.inner_text("#results li:first-child .name").startswith("bd_boom.wav")
        browser.close()


def test_only_the_latest_search_fills_the_list(served, samples):
    """Two searches in flight: the first one's answer, held back until the second is shown, is dropped."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser, page = browser_page(p)
        held = []
        page.route("**/api/search?*", lambda route: held.append(route) if not held else route.continue_())
        page.goto(served)
        page.wait_for_function("window.audiosim.ready")
        pts = page.evaluate("(async () => (await (await fetch('/api/points?compact=1')).json()))()")
        for name in ("bd_zum.wav", "sn_dub.wav"):
            x, y = page.evaluate("id => window.audiosim.screenOf(id)", pts["ids"][pts["name"].index(name)])
            page.mouse.click(x, y)
        page.wait_for_function("document.getElementById('results-title').textContent.includes('sn_dub.wav')")
        assert len(held) == 1 and "bd_zum" not in page.inner_text("#results-title")
        held[0].continue_()  # the first search answers last
        page.wait_for_function("window.audiosim.answered === 2")
        assert "sn_dub.wav" in page.inner_text("#results-title")
        snare = pts["ids"][pts["name"].index("sn_dub.wav")]
        shown = page.eval_on_selector_all("#results li", "els => els.map(e => e.dataset.id)")
        assert shown == [h["id"] for h in get(f"{served}api/search?id={snare}&k=20")["results"]]
        browser.close()
