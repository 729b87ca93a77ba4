"""Render search results: a rich table for people; json, jsonl or paths for scripts."""

from __future__ import annotations

import json
import os
import sys
from enum import StrEnum
from typing import TYPE_CHECKING, Any

from rich.markup import escape

from audiosim.searcher.duplicates import Pair
from audiosim.searcher.query import Result
from audiosim.shared.payload import file_path

if TYPE_CHECKING:
    from rich.console import Console
    from rich.table import Table


class Format(StrEnum):
    table = "table"
    json = "json"
    jsonl = "jsonl"
    paths = "paths"
    paths0 = "paths0"  # NUL after each path, for `xargs -0`: a name may hold a newline


def result_dict(r: Result) -> dict[str, Any]:
    return {
        "query": r.query,
        "results": [
            {"id": h.id, "score": round(h.score, 6), "path": h.payload.get("path"), "payload": h.payload}
            for h in r.hits
        ],
    }


def render(results: list[Result], fmt: Format, console: Console) -> None:
    if fmt is Format.json:
        console.out(json.dumps([result_dict(r) for r in results], indent=2), highlight=False)
    elif fmt is Format.jsonl:
        for r in results:
            console.out(json.dumps(result_dict(r)), highlight=False)
    elif fmt in (Format.paths, Format.paths0):
        end = b"\n" if fmt is Format.paths else b"\0"
        for r in results:
            for h in r.hits:  # the path's own bytes, so that `xargs` gets the very file
                sys.stdout.buffer.write(os.fsencode(file_path(h.payload)) + end)
        sys.stdout.buffer.flush()
    else:
        for r in results:
            console.print(_table(r))


def _table(r: Result) -> Table:
    from rich.table import Table

    table = Table(title=f"similar to {escape(r.query)}", title_justify="left", show_edge=False)
    table.add_column("#", justify="right", style="dim")
    table.add_column("score", justify="right")
    table.add_column("name", style="bold")
    table.add_column("folder")
    table.add_column("dur (s)", justify="right")
    heard = any("category" in h.payload for h in r.hits)
    if heard:
        table.add_column("category")
    for i, h in enumerate(r.hits, 1):
        p = h.payload
        cells = [str(i), f"{h.score:.3f}", escape(str(p.get("name", ""))), escape(str(p.get("folder", "")))]
        cells.append(f"{p.get('duration', 0):.2f}")
        if heard:
            cells.append(escape(f"{p['category']} {p.get('category_score', 0):.2f}") if "category" in p else "")
        table.add_row(*cells)
    if not r.hits:
        table.caption = "no matches (try fewer --where filters or a lower --threshold)"
    return table


def render_pairs(pairs: list[Pair], fmt: Format, console: Console) -> None:
    def side(p: dict[str, Any]) -> dict[str, Any]:
        return {"id": p["id"], "path": p.get("path"), "name": p.get("name"), "folder": p.get("folder")}

    if fmt in (Format.json, Format.jsonl):
        rows = [{"score": round(p.score, 6), "a": side(p.a), "b": side(p.b)} for p in pairs]
        if fmt is Format.json:
            console.out(json.dumps(rows, indent=2), highlight=False)
        else:
            for row in rows:
                console.out(json.dumps(row), highlight=False)
    elif fmt in (Format.paths, Format.paths0):
        end = b"\n" if fmt is Format.paths else b"\0"
        for p in pairs:
            a, b = os.fsencode(file_path(p.a)), os.fsencode(file_path(p.b))
            sys.stdout.buffer.write(a + b"\t" + b + end)
        sys.stdout.buffer.flush()
    else:
        from rich.table import Table

        table = Table(title=f"{len(pairs)} near-duplicate pairs", title_justify="left", show_edge=False)
        for col in ("score", "a", "folder a", "b", "folder b"):
            table.add_column(col, justify="right" if col == "score" else "left")
        for p in pairs:
            table.add_row(
                f"{p.score:.4f}",
                escape(str(p.a.get("name"))),
                escape(str(p.a.get("folder"))),
                escape(str(p.b.get("name"))),
                escape(str(p.b.get("folder"))),
            )
        console.print(table)
