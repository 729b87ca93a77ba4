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
    if cat := report.get("category"):
        acc = Table(
            title=f"category accuracy of the model's classifier on the {cat['clips']} queries of a class it knows"
        )
        acc.add_column("class")
        acc.add_column("clips", justify="right")
        acc.add_column("accuracy", justify="right")
        acc.add_row("overall", str(cat["clips"]), f"{cat['accuracy']:.3f}", style="bold")
        for c, v in cat["per_class"].items():
            acc.add_row(escape(c), str(v["clips"]), f"{v['accuracy']:.3f}")
        console.print(acc)
        _print_by_score(cat.get("by_score", {}))
        if cat["unknown_classes"]:
            console.print(
                f"classes the model has no name for (not counted): {escape(', '.join(cat['unknown_classes']))}"
            )


def render_protocol(summary: dict[str, Any]) -> None:
    table = Table(title="held-out folds: P@10 and mAP of the model and the log-mel baseline; category accuracy")
    for col in ("fold", "queries", "P@10", "baseline", "mAP", "baseline", "category"):
        table.add_column(col, justify="left" if col == "fold" else "right")

    def cat(x: float | None) -> str:
        return "-" if x is None else f"{x:.3f}"

    def row(name: str, queries: str, m: dict[str, float], b: dict[str, float], c: float | None, **kw: Any) -> None:
        table.add_row(escape(name), queries, f"{m['p@10']:.3f}", f"{b['p@10']:.3f}", f"{m['map']:.3f}",
                      f"{b['map']:.3f}", cat(c), **kw)  # fmt: skip

    for name, f in summary["folds"].items():
        row(name, str(f["queries"]), f["model"], f["baseline"], f["category_accuracy"])
    macro = summary["macro"]
    row("macro", "", macro["model"], macro["baseline"], summary["category_accuracy"], style="bold")
    if old := summary.get("old_protocol"):
        row("old protocol", str(old["model"]["queries"]), old["model"], old["baseline"], old["category_accuracy"])
    console.print(table, width=max(console.width, 100))
    for name, f in summary["folds"].items():
        console.print(f"  {escape(name)} holds out {escape(', '.join(f['held_out']))}")
    console.print("  old protocol: timgm6mb queries against hydrogen, fluidr3, lmms and sonicpi")
    per = Table(title="per class P@10, macro over the folds holding the class")
    for col in ("class", "folds", "model", "baseline"):
        per.add_column(col, justify="left" if col == "class" else "right")
    for c, v in summary["per_class_p@10"].items():
        per.add_row(escape(c), str(v["folds"]), f"{v['model']:.3f}", f"{v['baseline']:.3f}")
    console.print(per)
    _print_by_score(summary.get("category_by_score", {}), "macro over the folds")


def _print_by_score(by_score: dict[str, dict[str, float | None]], where: str = "") -> None:
    """One line: how often the category is right among the clips whose category_score reaches each threshold."""
    if by_score:
        parts = [f">= {t}: " + ("-" if v["accuracy"] is None else f"{v['accuracy']:.3f}") + f" of {v['share']:.0%}"
                 for t, v in by_score.items()]  # fmt: skip
        console.print(f"category accuracy by category_score{f' ({where})' if where else ''}: " + ", ".join(parts))
