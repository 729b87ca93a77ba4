"""`audiosim-search`: parse arguments, build queries, search, render."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from searcher.output import Format, render
from searcher.query import (
    Query,
    SearchOptions,
    queries_from_files,
    queries_from_ids,
    queries_from_vectors,
    search,
)
from shared.console import State, build_settings, errors_to_exit, setup_logging, state
from shared.filters import parse_filters
from shared.settings import Settings
from shared.store import open_store

FILTER_HELP = (
    "Payload filter KEY<op>VALUE, repeatable and ANDed. Ops: = != < <= > >=. "
    "Keys: path name folder tags ext (text); duration mtime (seconds); sample_rate channels size (integers). "
    "Examples: --where ext=wav --where 'duration<1' --where tags=Kicks --where 'folder!=Loops'."
)

app = typer.Typer(
    name="audiosim-search",
    help="Find the indexed sounds most similar to a file, a vector or an indexed sample.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
console = Console(highlight=False, soft_wrap=True)

Limit = Annotated[int, typer.Option("--limit", "-k", min=1, max=10000, help="Results per query.")]
Offset = Annotated[int, typer.Option(min=0, help="Skip this many results (paging).")]
Where = Annotated[list[str] | None, typer.Option("--where", "-w", help=FILTER_HELP)]
IncludeSelf = Annotated[
    bool, typer.Option("--include-self", help="Let an indexed query file or id be its own first hit.")
]
Threshold = Annotated[float | None, typer.Option(help="Only results with cosine similarity at least this.")]
FormatOpt = Annotated[Format, typer.Option("--format", "-f", help="Output format.")]


@app.callback()
def main_options(
    ctx: typer.Context,
    store: Annotated[Path | None, typer.Option(help="Embedded store directory [env AUDIOSIM_STORE].")] = None,
    collection: Annotated[str | None, typer.Option(help="Collection name [env AUDIOSIM_COLLECTION].")] = None,
    qdrant_url: Annotated[
        str | None, typer.Option(help="Qdrant server URL; server mode when set [env AUDIOSIM_QDRANT_URL].")
    ] = None,
    model: Annotated[Path | None, typer.Option(help="Encoder checkpoint [env AUDIOSIM_MODEL].")] = None,
    debug: Annotated[bool, typer.Option("--debug", help="Log details and show tracebacks.")] = False,
) -> None:
    setup_logging(debug)
    ctx.obj = State(
        settings=_settings(ctx, store=store, collection=collection, qdrant_url=qdrant_url, model=model),
        debug=debug,
    )


@errors_to_exit
def _settings(ctx: typer.Context, **overrides: object) -> Settings:
    return build_settings(**overrides)


def _run(
    ctx: typer.Context,
    make_queries: object,
    *,
    limit: int,
    offset: int,
    where: list[str] | None,
    include_self: bool,
    threshold: float | None,
    fmt: Format,
) -> None:
    s = state(ctx).settings
    opts = SearchOptions(
        limit=limit, offset=offset, terms=parse_filters(where), include_self=include_self, threshold=threshold
    )
    with open_store(s) as store:
        queries: list[Query] = make_queries(store)  # type: ignore[operator]
        results = search(store, queries, opts)
    render(results, fmt, console)


@app.command()
@errors_to_exit
def file(
    ctx: typer.Context,
    files: Annotated[list[Path], typer.Argument(help="Audio files, indexed or not.")],
    limit: Limit = 10,
    offset: Offset = 0,
    where: Where = None,
    include_self: IncludeSelf = False,
    threshold: Threshold = None,
    fmt: FormatOpt = Format.table,
) -> None:
    """Sounds similar to each FILE (one result list per file)."""
    model = state(ctx).settings.model
    _run(
        ctx,
        lambda store: queries_from_files(store, files, model),
        limit=limit,
        offset=offset,
        where=where,
        include_self=include_self,
        threshold=threshold,
        fmt=fmt,
    )


@app.command()
@errors_to_exit
def vector(
    ctx: typer.Context,
    source: Annotated[str, typer.Argument(help="An .npy file, a JSON file, or - for a JSON list on stdin.")],
    limit: Limit = 10,
    offset: Offset = 0,
    where: Where = None,
    threshold: Threshold = None,
    fmt: FormatOpt = Format.table,
) -> None:
    """Sounds nearest to a vector (or to each row of a matrix)."""
    queries = queries_from_vectors(source)
    _run(
        ctx,
        lambda store: queries,
        limit=limit,
        offset=offset,
        where=where,
        include_self=True,
        threshold=threshold,
        fmt=fmt,
    )


@app.command(name="id")
@errors_to_exit
def by_id(
    ctx: typer.Context,
    refs: Annotated[list[str], typer.Argument(metavar="ID_OR_PATH...", help="Point ids or indexed file paths.")],
    limit: Limit = 10,
    offset: Offset = 0,
    where: Where = None,
    include_self: IncludeSelf = False,
    threshold: Threshold = None,
    fmt: FormatOpt = Format.table,
) -> None:
    """Sounds similar to indexed samples, named by point id or path (no audio decoding, no model)."""
    _run(
        ctx,
        lambda store: queries_from_ids(store, refs),
        limit=limit,
        offset=offset,
        where=where,
        include_self=include_self,
        threshold=threshold,
        fmt=fmt,
    )


def main() -> None:
    app()
