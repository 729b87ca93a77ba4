"""`audiosim-search`: parse arguments, build queries, search, render."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from audiosim.searcher.output import Format, render
from audiosim.searcher.query import (
    Query,
    SearchOptions,
    queries_from_files,
    queries_from_ids,
    queries_from_vectors,
    search,
    search_examples,
)
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
from audiosim.shared.filters import parse_filters
from audiosim.shared.store import Store, open_store

FILTER_HELP = (
    "Payload filter, repeatable (ANDed): KEY=VALUE, KEY!=VALUE, KEY<N (<=, >, >=), KEY=A..B (range), "
    "KEY=A|B (any of), folder^=PREFIX (folder or below), name~TEXT (contains, any case), !EXPR (not). "
    "Keys: path name folder tags ext category (text); duration mtime (seconds); category_score (0-1); "
    "sample_rate channels size (integers)."
)
EPILOG = (
    "Filter examples: --where 'ext=wav|flac'  --where 'duration<1'  --where duration=0.1..0.5  "
    "--where folder^=Drums/  --where name~snare  --where '!tags=Loops'  --where sample_rate>=44100"
)

app = typer.Typer(
    name="audiosim-search",
    help="Find the indexed sounds most similar to a file, a vector or an indexed sample.",
    no_args_is_help=True,
    add_completion=False,
    epilog=EPILOG,
    pretty_exceptions_enable=False,
)
console = Console(highlight=False, soft_wrap=True)
# Set by main(), the console script, which ends with os._exit: a search only reads, so the store is left open for
# the process's end to release. Closing a qdrant-edge shard flushes and drops its files from the page cache, so
# the next search would read them from disk again (100k points: ~100 ms per search).
_exit_without_close = False


@contextmanager
def _opened(ctx: typer.Context) -> Iterator[Store]:
    store = open_store(state(ctx).settings)
    try:
        yield store
    finally:
        if not _exit_without_close:
            store.close()


Limit = Annotated[int, typer.Option("--limit", "-k", min=1, max=10000, help="Results per query.")]
Offset = Annotated[int, typer.Option(min=0, help="Skip this many results (paging).")]
Where = Annotated[list[str] | None, typer.Option("--where", "-w", help=FILTER_HELP)]
IncludeSelf = Annotated[
    bool, typer.Option("--include-self", help="Let an indexed query file or id be its own first hit.")
]
Threshold = Annotated[float | None, typer.Option(help="Only results with cosine similarity at least this.")]
TimbreOpt = Annotated[
    bool,
    typer.Option(
        "--timbre",
        help="Rank by how the sounds sound alone: leave out the part of the vector that says what the model names "
        "them (the shipped model's category probabilities).",
    ),
]
FormatOpt = Annotated[Format, typer.Option("--format", "-f", help="Output format.")]
HtmlOpt = Annotated[
    Path | None, typer.Option("--html", help="Also write a self-contained page with pictures and players.")
]


@app.callback()
def main_options(
    ctx: typer.Context,
    store: StoreOpt = None,
    collection: CollectionOpt = None,
    qdrant_url: QdrantUrlOpt = None,
    model: ModelOpt = None,
    debug: DebugOpt = False,
) -> None:
    setup_logging(debug)
    ctx.obj = State(
        settings=cli_settings(store=store, collection=collection, qdrant_url=qdrant_url, model=model),
        debug=debug,
    )


def _options(
    limit: int, offset: int, where: list[str] | None, include_self: bool, threshold: float | None, timbre: bool
) -> SearchOptions:
    return SearchOptions(limit=limit, offset=offset, terms=parse_filters(where), include_self=include_self,
                         threshold=threshold, timbre=timbre)  # fmt: skip


def _run(
    ctx: typer.Context,
    make_queries: Callable[[Store], list[Query]],
    opts: SearchOptions,
    fmt: Format,
    html: Path | None,
    examples: Callable[[Store], tuple[list[Query], list[Query]]] | None = None,
) -> None:
    if html:
        check_writable(html, "--html")
    with _opened(ctx) as store:
        if examples is not None:
            likes, unlikes = examples(store)
            results = [search_examples(store, likes, unlikes, opts)]
            queries = [*likes, *unlikes]
        else:
            queries = make_queries(store)
            results = search(store, queries, opts)
    render(results, fmt, console)
    if damaged := sum(h.score == 0.0 for r in results for h in r.hits):
        err_console.print(f"warning: {damaged} results have no usable vector (score 0): run `audiosim-index check`")
    if html:
        from audiosim.searcher.html import write_html

        paths = {q.label: q.path for q in queries}
        if examples is not None:
            paths[results[0].query] = queries[0].path
        write_html(results, html, query_paths=paths)
        err_console.print(f"wrote {html}")


@app.command()
@errors_to_exit
def file(
    ctx: typer.Context,
    files: Annotated[
        list[Path], typer.Argument(help="Audio files, indexed or not; quoted globs like 'Kicks/**/*.wav' too.")
    ],
    limit: Limit = 10,
    offset: Offset = 0,
    where: Where = None,
    include_self: IncludeSelf = False,
    threshold: Threshold = None,
    timbre: TimbreOpt = False,
    fmt: FormatOpt = Format.table,
    html: HtmlOpt = None,
) -> None:
    """Sounds similar to each FILE (one result list per file)."""
    model = state(ctx).settings.model
    opts = _options(limit, offset, where, include_self, threshold, timbre)
    _run(ctx, lambda store: queries_from_files(store, files, model), opts, fmt, html)


@app.command()
@errors_to_exit
def vector(
    ctx: typer.Context,
    source: Annotated[str, typer.Argument(help="An .npy file, a JSON file, or - for a JSON list on stdin.")],
    limit: Limit = 10,
    offset: Offset = 0,
    where: Where = None,
    threshold: Threshold = None,
    timbre: TimbreOpt = False,
    fmt: FormatOpt = Format.table,
    html: HtmlOpt = None,
) -> None:
    """Sounds nearest to a vector (or to each row of a matrix)."""
    queries = queries_from_vectors(source)
    opts = _options(limit, offset, where, True, threshold, timbre)
    _run(ctx, lambda store: queries, opts, fmt, html)


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
    timbre: TimbreOpt = False,
    fmt: FormatOpt = Format.table,
    html: HtmlOpt = None,
) -> None:
    """Sounds similar to indexed samples, named by point id or path (no audio decoding, no model)."""
    opts = _options(limit, offset, where, include_self, threshold, timbre)
    _run(ctx, lambda store: queries_from_ids(store, refs), opts, fmt, html)


@app.command()
@errors_to_exit
def like(
    ctx: typer.Context,
    like: Annotated[list[Path], typer.Option("--like", help="An example to be near (repeatable).")],
    unlike: Annotated[list[Path] | None, typer.Option("--unlike", help="An example to stay away from.")] = None,
    limit: Limit = 10,
    offset: Offset = 0,
    where: Where = None,
    include_self: IncludeSelf = False,
    threshold: Threshold = None,
    timbre: TimbreOpt = False,
    fmt: FormatOpt = Format.table,
    html: HtmlOpt = None,
) -> None:
    """Sounds like all the --like examples and unlike the --unlike ones (one result list)."""
    model = state(ctx).settings.model

    def examples(store: Store) -> tuple[list[Query], list[Query]]:
        return queries_from_files(store, like, model), queries_from_files(store, unlike or [], model)

    opts = _options(limit, offset, where, include_self, threshold, timbre)
    _run(ctx, lambda store: [], opts, fmt, html, examples)


@app.command()
@errors_to_exit
def duplicates(
    ctx: typer.Context,
    threshold: Annotated[float, typer.Option(min=-1.0, max=1.0, help="Minimum cosine similarity.")] = 0.98,
    where: Where = None,
    same_folder: Annotated[bool, typer.Option("--same-folder", help="Only pairs within one folder.")] = False,
    limit: Annotated[int | None, typer.Option("--limit", "-k", min=1, help="At most this many pairs.")] = None,
    fmt: FormatOpt = Format.table,
) -> None:
    """Near-duplicate pairs: the same sound stored twice (within a folder or the whole collection)."""
    from audiosim.searcher.duplicates import find_duplicates
    from audiosim.searcher.output import render_pairs

    with _opened(ctx) as store:
        pairs = find_duplicates(
            store, threshold=threshold, terms=parse_filters(where), same_folder=same_folder, limit=limit
        )
    render_pairs(pairs, fmt, console)


@app.command()
@errors_to_exit
def serve(
    ctx: typer.Context,
    port: Annotated[int, typer.Option(min=0, max=65535, help="Port (0: any free one).")] = 8765,
    host: Annotated[str, typer.Option(help="Address to listen on; only this machine by default.")] = "127.0.0.1",
    open_browser: Annotated[bool, typer.Option("--open", help="Open the page in the web browser.")] = False,
    collections_dir: Annotated[
        Path | None, typer.Option(help="Where 'save as collection' makes its folders [default: beside the store].")
    ] = None,
    layout: Annotated[str, typer.Option(help="Map layout: tsne, umap (needs umap-learn) or pca.")] = "tsne",
) -> None:
    """A web app for the collection: the sound map, search by click or dropped file, players, collections."""
    import socket

    try:
        import uvicorn

        from audiosim.searcher.serve import Server, create_app
    except ImportError:
        raise ConfigError("the web app needs its extra: pip install 'audiosim[serve]'") from None
    if layout not in ("tsne", "umap", "pca"):
        raise typer.BadParameter("choose tsne, umap or pca", param_hint="--layout")
    s = state(ctx).settings
    if host not in ("127.0.0.1", "localhost", "::1"):
        err_console.print(f"warning: listening on {host}: anyone who can reach it can list and play your library")
    if collections_dir is None:
        base = Path(s.store) if not s.qdrant_url else Path(platformdirs_data())
        collections_dir = base.parent / f"{base.name}-collections"
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        raise ConfigError(f"cannot listen on {host}:{port}: {exc.strerror}; choose another --port") from None
    sock.listen(128)  # before the URL is printed: whoever reads it can connect at once
    url = f"http://{host if family == socket.AF_INET else f'[{host}]'}:{sock.getsockname()[1]}/"
    app_ = create_app(s, collections_dir=collections_dir, layout_method=layout)
    server = Server(uvicorn.Config(app_, log_level="warning", lifespan="on"))
    console.print(f"serving {s.collection} at {url} (Ctrl-C stops)")
    sys.stdout.flush()
    if open_browser:
        import webbrowser

        webbrowser.open(url)
    server.run(sockets=[sock])
    console.print("stopped")


def platformdirs_data() -> str:
    from platformdirs import user_data_dir

    return user_data_dir("audiosim")


def main() -> None:
    global _exit_without_close
    _exit_without_close = True
    code = 0
    try:
        app()
    except SystemExit as exc:
        if isinstance(exc.code, str):
            print(exc.code, file=sys.stderr)
        code = exc.code if isinstance(exc.code, int) else 0 if exc.code is None else 1
    try:
        sys.stdout.flush()
        sys.stderr.flush()
    except BrokenPipeError:  # `audiosim-search ... | head`
        pass
    os._exit(code)
