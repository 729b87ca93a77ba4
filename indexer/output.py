"""Render what the indexer's commands report: run summaries, status, evaluation tables (rich, for people).

Every name and path is printed as text, never as rich markup, so a file called `[red]x.wav` shows as itself.
"""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from audiosim.indexer.job import Summary
from audiosim.shared.payload import shown

console = Console(highlight=False, soft_wrap=True)


def render_summary(summary: Summary) -> None:
    for w in summary.warnings:
        console.print(f"[yellow]warning[/] {escape(shown(w.path))}: {escape(w.reason)}")
    for f in summary.failed:
        console.print(f"[red]failed[/]  {escape(shown(f.path))}: {escape(f.reason)}")
    state_word = "interrupted" if summary.interrupted else "done"
    console.print(
        f"{state_word}: {summary.indexed} indexed, {summary.unchanged} unchanged, {summary.removed} removed, "
        f"{len(summary.failed)} failed in {summary.seconds:.1f} s ({summary.files_per_second:.0f} files/s)",
        markup=False,
    )
    if summary.steady_rate:
        console.print(
            f"steady rate {summary.steady_rate:.0f} files/s while files streamed (start-up and tidy-up excluded)",
            style="dim",
            markup=False,
        )


def render_status(rows: list[tuple[str, str]]) -> None:
    table = Table(show_header=False, box=None)
    for key, value in rows:
        table.add_row(key, escape(value))
    console.print(table)


def render_eval(report: dict[str, Any]) -> None:
    m, b = report["model_scores"], report["baseline_scores"]
    table = Table(title=f"retrieval on {report['clips']} clips ({report['failed']} failed to decode)")
    table.add_column("class")
    table.add_column("queries", justify="right")
    for who in ("model", "baseline"):
        for k in ("p@1", "p@10", "map"):
            table.add_column(f"{who} {k}", justify="right")
    rows = [("overall", m["overall"], b["overall"])]
    rows += [(c, m["per_class"][c], b["per_class"][c]) for c in m["per_class"]]
    for name, ms, bs in rows:
        table.add_row(
            escape(name),
            str(ms["queries"]),
            *[f"{ms[k]:.3f}" for k in ("p@1", "p@10", "map")],
            *[f"{bs[k]:.3f}" for k in ("p@1", "p@10", "map")],
        )
    console.print(table)
