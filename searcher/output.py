"""Render search results: a rich table for people; json, jsonl or paths for scripts."""

from __future__ import annotations

import json
from enum import StrEnum
from typing import Any

from rich.console import Console
from rich.table import Table

from searcher.query import Result


class Format(StrEnum):
    table = "table"
    json = "json"
    jsonl = "jsonl"
    paths = "paths"


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
    elif fmt is Format.paths:
        for r in results:
            for h in r.hits:
                console.out(str(h.payload.get("path", "")), highlight=False)
    else:
        for r in results:
            console.print(_table(r))


def _table(r: Result) -> Table:
    table = Table(title=f"similar to {r.query}", title_justify="left", show_edge=False)
    table.add_column("#", justify="right", style="dim")
    table.add_column("score", justify="right")
    table.add_column("name", style="bold")
    table.add_column("folder")
    table.add_column("dur (s)", justify="right")
    for i, h in enumerate(r.hits, 1):
        p = h.payload
        table.add_row(
            str(i),
            f"{h.score:.3f}",
            str(p.get("name", "")),
            str(p.get("folder", "")),
            f"{p.get('duration', 0):.2f}",
        )
    if not r.hits:
        table.caption = "no matches (try fewer --where filters or a lower --threshold)"
    return table
