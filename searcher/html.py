"""A self-contained HTML page of results: each query and hit with its mel picture, score and a player."""

from __future__ import annotations

import base64
import html
import io
from pathlib import Path

import numpy as np

from audiosim.searcher.query import Result
from audiosim.shared.audio import ClipSpec, read_clip
from audiosim.shared.errors import DecodeError
from audiosim.shared.features import MelSpec, mel_image
from audiosim.shared.payload import file_path, shown

PICTURE = MelSpec(n_mels=96, frames=192, n_fft=2048)
PLAY_SECONDS = 4.0
LISTEN = ClipSpec(seconds=PLAY_SECONDS)  # what the page plays; its picture shows the first 2 s, as the model sees
STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em; background: #fafafa; color: #222; }
h2 { margin-top: 2em; } .grid { display: flex; flex-wrap: wrap; gap: 1em; }
.card { background: #fff; border: 1px solid #ddd; border-radius: 8px; padding: .6em; width: 260px; }
.card img { width: 100%; image-rendering: pixelated; border-radius: 4px; }
.card audio { width: 100%; } .score { font-weight: bold; } .meta { color: #666; font-size: .85em; }
.query { border-color: #4a7; }
"""


def _png(image: np.ndarray) -> str:
    """(n_mels, frames) in [0, 1] -> base64 PNG, low frequencies at the bottom."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    plt.imsave(buf, image[::-1], cmap="magma", vmin=0.0, vmax=1.0, format="png")
    return base64.b64encode(buf.getvalue()).decode()


def _wav(samples: np.ndarray, sample_rate: int) -> str:
    import soundfile as sf

    buf = io.BytesIO()
    sf.write(buf, samples, sample_rate, format="WAV", subtype="PCM_16")
    return base64.b64encode(buf.getvalue()).decode()


def _card(title: str, path: str | None, score: str, meta: str, css: str = "card") -> str:
    media = "<p class='meta'>(no audio: a vector query)</p>"
    if path:
        try:
            sr = LISTEN.sample_rate
            clip = read_clip(Path(path), LISTEN)
            image = mel_image(clip.samples[: 2 * sr], sample_rate=sr, spec=PICTURE)
            audible = clip.samples[: max(1, round(min(clip.info.duration, PLAY_SECONDS) * sr))]
            media = (
                f"<img alt='mel spectrogram of {html.escape(title)}' src='data:image/png;base64,{_png(image)}'>"
                f"<audio controls preload='auto' src='data:audio/wav;base64,{_wav(audible, sr)}'></audio>"
            )
        except DecodeError as exc:
            media = f"<p class='meta'>cannot show this file: {html.escape(str(exc))}</p>"
    return (
        f"<div class='{css}'><div class='score'>{html.escape(score)}</div>"
        f"<div>{html.escape(title)}</div><div class='meta'>{html.escape(meta)}</div>{media}</div>"
    )


def write_html(results: list[Result], out: Path, *, query_paths: dict[str, str | None]) -> None:
    """query_paths maps each result's query label to the audio file it came from (None for vectors)."""
    parts = [
        f"<!doctype html><html><head><meta charset='utf-8'><title>audiosim results</title>"
        f"<style>{STYLE}</style></head><body><h1>audiosim results</h1>"
    ]
    for r in results:
        qpath = query_paths.get(r.query)
        parts.append(f"<h2>similar to {html.escape(r.query)}</h2><div class='grid'>")
        title = shown(Path(qpath).name) if qpath else r.query
        parts.append(_card(title, qpath, "query", shown(qpath or ""), "card query"))
        for h in r.hits:
            p = h.payload
            meta = f"{p.get('folder', '')} · {float(p.get('duration', 0)):.2f} s"
            parts.append(_card(str(p.get("name", h.id)), str(file_path(p)), f"{h.score:.3f}", meta))
        parts.append("</div>")
    parts.append("</body></html>")
    out.write_text("".join(parts), encoding="utf-8")
