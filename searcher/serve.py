"""`audiosim-search serve`: a local web app over the store: the sound map, searches, players, collections.

The page (static/) talks only to the JSON API below, which scripts may use too:

    GET  /api/info                          collection, point count, model, categories, the map's state
    GET  /api/points?where=EXPR&compact=1   every point (or those the filters select): id, x, y, path, payload
    GET  /api/search?id=ID&k=N&offset=N&where=EXPR&timbre=1   neighbours of an indexed point
    POST /api/search (multipart: file, k, offset, where, timbre)   neighbours of an uploaded audio file
    POST /api/recommend {"like": [ids], "unlike": [ids], "k", "offset", "where": [...], "timbre": false}
    POST /api/collections {"name", "ids": [...]}      a folder of symbolic links to those files
    GET  /audio/{id}                        the indexed file's bytes, for points only (never a path)

`timbre` is the CLI's `--timbre` (rank by how the sounds sound alone); /api/info's `timbre` says whether the
collection's model has the category part it leaves out.
Search responses are one line of `--format jsonl`: {"query", "results": [{"id", "score", "path", "payload"}]}.
Errors are {"detail": "<one line>"} with a 4xx status (503 while an indexer holds the store).

The embedded store is held the way a searcher holds it and handed over when an indexer waits (the store's
`waiting` file): a watcher thread sees the file and releases the store; the next request reopens it, after the
indexer, first come first served.
"""

from __future__ import annotations

import json
import logging
import mimetypes
import re
import signal
import tempfile
import threading
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import uvicorn
from fastapi import FastAPI, File, Form, Query, Request, UploadFile
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel, Field
from starlette.exceptions import HTTPException as StarletteHTTPException

from audiosim.searcher import layout as maps
from audiosim.searcher.output import result_dict
from audiosim.searcher.query import Query as SearchQuery
from audiosim.searcher.query import SearchOptions, search, search_examples
from audiosim.shared.errors import AudiosimError, DecodeError, QueryError, StoreError
from audiosim.shared.filters import parse_filters
from audiosim.shared.payload import file_path
from audiosim.shared.settings import Settings
from audiosim.shared.store import Store, is_point_id, open_store

log = logging.getLogger(__name__)
STATIC = Path(__file__).parent / "static"
UPLOAD_LIMIT = 50 * 2**20  # bytes: an upload is one sample, not an album
MAX_K = 500
COMPACT_FIELDS = ("name", "folder", "duration", "category")
COLLECTION_NAME = re.compile(r"^[^/\\\x00]{1,100}$")


class Server(uvicorn.Server):
    """uvicorn's server, ending normally (exit status 0) on Ctrl-C or SIGTERM once it has shut down cleanly;
    uvicorn itself re-raises the signal after shutdown, which would end the process as if killed."""

    @contextmanager
    def capture_signals(self) -> Iterator[None]:
        def stop(sig: int, frame: object) -> None:
            self.force_exit = self.should_exit  # a second Ctrl-C does not wait for open connections
            self.should_exit = True

        previous = {s: signal.signal(s, stop) for s in (signal.SIGINT, signal.SIGTERM)}
        try:
            yield
        finally:
            for s, handler in previous.items():
                signal.signal(s, handler)


class HttpError(Exception):
    def __init__(self, status: int, detail: str):
        self.status, self.detail = status, detail


def _status(exc: AudiosimError) -> int:
    if isinstance(exc, StoreError) and "locked by another" in str(exc):
        return 503
    if isinstance(exc, QueryError) and "not in the collection" in str(exc):
        return 404
    return 400


class StoreHolder:
    """One store for the app's threads: opened on first use, handed to a waiting indexer, reopened after it."""

    def __init__(self, settings: Settings, poll_seconds: float = 0.2):
        self.settings = settings
        self._lock = threading.Lock()
        self._store: Store | None = None
        self._stop = threading.Event()
        self._watcher = threading.Thread(target=self._watch, args=(poll_seconds,), daemon=True)
        self._watcher.start()
        self.generation = 0  # counts hand-overs: after one, an indexer may have changed anything

    @contextmanager
    def store(self) -> Iterator[Store]:
        with self._lock:
            if self._store is None:
                self._store = open_store(self.settings)
            yield self._store
            self._hand_over()  # an indexer waiting since the request began goes first

    def _hand_over(self) -> None:
        assert self._store is not None
        was_open = self._store.is_open
        self._store.share(hold_seconds=0.0)
        if was_open and not self._store.is_open:
            self.generation += 1

    def _watch(self, poll: float) -> None:
        # Polling one file is what the store's protocol offers a reader that sits idle; requests hand over too.
        while not self._stop.wait(poll):
            store = self._store  # read once: close() may clear it meanwhile
            if store is not None and store.someone_waiting():
                with self._lock:
                    if self._store is not None:
                        self._hand_over()

    def close(self) -> None:
        self._stop.set()
        with self._lock:
            if self._store is not None:
                self._store.close()
                self._store = None


class Library:
    """What the endpoints share: the store, the encoder for uploads (loaded once), the map."""

    def __init__(self, settings: Settings, collections_dir: Path, layout_method: str = "tsne"):
        self.settings = settings
        self.holder = StoreHolder(settings)
        self.collections_dir = collections_dir
        self.layout_method = layout_method
        self._encoder: Any = None
        self._map_lock = threading.Lock()
        self._map: maps.Layout | None = None
        self._map_generation = -1
        self.map_state = "not computed"
        self._compact: dict[tuple[str, ...], bytes] = {}  # the page's points, serialised, per filter set
        self.categories: list[str] = []  # present in the whole collection, noted when its points are serialised

    @property
    def layout_path(self) -> Path:
        if self.settings.qdrant_url:
            from platformdirs import user_cache_dir

            return Path(user_cache_dir("audiosim")) / "maps" / f"{self.settings.collection}.npz"
        return Path(self.settings.store) / self.settings.collection / "map.npz"

    def encoder(self) -> Any:
        if self._encoder is None:
            from audiosim.shared.encoder import Encoder

            self._encoder = Encoder(self.settings.model)
        return self._encoder

    def layout(self) -> maps.Layout:
        """The map of every point, computed or extended when the store may have changed since it was made."""
        with self._map_lock:
            generation = self.holder.generation
            if self._map is not None and self._map_generation == generation:
                return self._map
            with self.holder.store() as store:
                store.require()
                digest = store.model().digest
                records = list(store.scroll([], with_vector=True))
            ids = [r.id for r in records]
            vectors = np.array([r.vector for r in records], dtype=np.float32).reshape(len(ids), -1)  # (N, D)
            vectors /= np.linalg.norm(vectors, axis=1, keepdims=True) + 1e-12
            cached = self._map or maps.load(self.layout_path)
            self.map_state = "computing"
            fresh = maps.update(cached, ids, vectors, digest, method=self.layout_method, say=log.info)
            if fresh is not cached:
                try:
                    maps.save(fresh, self.layout_path)
                except OSError as exc:
                    log.warning("cannot cache the map at %s: %s", self.layout_path, exc)
            self._map, self._map_generation, self.map_state = fresh, generation, "ready"
            self._compact.clear()
            return fresh

    def compact_points(self, where: list[str]) -> bytes:
        """The page's columns (ids, x, y and a few payload fields) as JSON bytes, kept until the store changes:
        a 100k-point map is read from the store and serialised once, not on every page load."""
        terms = parse_filters(where)
        lay = self.layout()
        key = tuple(where)
        if key not in self._compact:
            with self.holder.store() as store:
                records = list(store.scroll(list(COMPACT_FIELDS), terms))
            pos = dict(zip(lay.ids, lay.xy.tolist(), strict=True))
            rows = [r for r in records if r.id in pos]
            columns = {
                "count": len(rows),
                "ids": [r.id for r in rows],
                "x": [round(pos[r.id][0], 5) for r in rows],
                "y": [round(pos[r.id][1], 5) for r in rows],
                **{f: [r.payload.get(f) for r in rows] for f in COMPACT_FIELDS},
            }
            if not where:
                self.categories = sorted({str(r.payload["category"]) for r in rows if r.payload.get("category")})
            if len(self._compact) > 32:
                self._compact.clear()
            self._compact[key] = json.dumps(columns, separators=(",", ":")).encode()
        return self._compact[key]

    def close(self) -> None:
        self.holder.close()


class RecommendBody(BaseModel):
    like: list[str] = Field(min_length=1, max_length=100)
    unlike: list[str] = Field(default_factory=list, max_length=100)
    k: int = Field(10, ge=1, le=MAX_K)
    offset: int = Field(0, ge=0, le=10000)
    where: list[str] = Field(default_factory=list, max_length=20)
    timbre: bool = False


class CollectionBody(BaseModel):
    name: str
    ids: list[str] = Field(min_length=1, max_length=10000)


def _options(k: int, offset: int, where: list[str], timbre: bool) -> SearchOptions:
    return SearchOptions(limit=k, offset=offset, terms=parse_filters(where), timbre=timbre)


def _point_query(store: Store, point: str) -> SearchQuery:
    if not is_point_id(point):
        raise HttpError(404, f"{point!r} is not a point id")
    found = store.retrieve([point], with_vector=True)
    if not found or found[0].vector is None:
        raise HttpError(404, f"point {point} is not in the collection")
    return SearchQuery(str(found[0].payload.get("path", point)), found[0].vector, point)


def create_app(settings: Settings, *, collections_dir: Path, layout_method: str = "tsne") -> FastAPI:
    lib = Library(settings, collections_dir, layout_method)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        yield
        lib.close()

    app = FastAPI(
        title="audiosim", docs_url="/api/docs", redoc_url=None, openapi_url="/api/openapi.json", lifespan=lifespan
    )
    app.state.library = lib

    @app.exception_handler(HttpError)
    async def _http_error(request: Request, exc: HttpError) -> JSONResponse:
        return JSONResponse({"detail": exc.detail}, status_code=exc.status)

    @app.exception_handler(AudiosimError)
    async def _known(request: Request, exc: AudiosimError) -> JSONResponse:
        return JSONResponse({"detail": str(exc).splitlines()[0]}, status_code=_status(exc))

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        first = exc.errors()[0] if exc.errors() else {}
        where = ".".join(str(x) for x in first.get("loc", ()) if x not in ("body", "query"))
        return JSONResponse({"detail": f"{where}: {first.get('msg', 'invalid request')}"}, status_code=422)

    @app.exception_handler(StarletteHTTPException)
    async def _plain(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        return JSONResponse({"detail": str(exc.detail)}, status_code=exc.status_code)

    @app.exception_handler(Exception)
    async def _bug(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unexpected error on %s", request.url.path)
        return JSONResponse({"detail": f"internal error: {type(exc).__name__}: {exc}"[:300]}, status_code=500)

    @app.get("/api/info")
    def info() -> dict[str, Any]:
        with lib.holder.store() as store:
            meta = store.read_meta()
            count = store.count() if meta else 0
            identity = store.model(meta) if meta else None
        if count:
            lib.compact_points([])  # built once per store change; notes the categories
        categories = lib.categories if count else []
        return {
            "collection": settings.collection,
            "location": str(store.location),
            "points": count,
            "model": identity.name if identity else None,
            "timbre": bool(identity and identity.posterior),  # what --timbre leaves out is there
            "categories": categories,
            "map": lib.map_state,
        }

    @app.get("/api/points", response_model=None)
    def points(where: list[str] = Query(default=[]), compact: bool = False) -> dict[str, Any] | Response:
        if compact:  # columns: a 100k-point map is a few MB of JSON, served from memory after the first time
            return Response(lib.compact_points(where), media_type="application/json")
        terms = parse_filters(where)
        lay = lib.layout()
        pos = dict(zip(lay.ids, lay.xy.tolist(), strict=True))
        with lib.holder.store() as store:
            rows = [r for r in _full_scroll(store, terms) if r.id in pos]
        return {
            "count": len(rows),
            "points": [
                {"id": r.id, "x": pos[r.id][0], "y": pos[r.id][1], "path": r.payload.get("path"),
                 "payload": r.payload} for r in rows
            ],
        }  # fmt: skip

    @app.get("/api/search")
    def search_by_id(
        id: str,
        k: int = Query(10, ge=1, le=MAX_K),
        offset: int = Query(0, ge=0, le=10000),
        where: list[str] = Query(default=[]),
        timbre: bool = False,
    ) -> dict[str, Any]:
        opts = _options(k, offset, where, timbre)
        with lib.holder.store() as store:
            q = _point_query(store, id)
            return result_dict(search(store, [q], opts)[0])

    @app.post("/api/search")
    async def search_by_file(
        file: UploadFile = File(...),
        k: int = Form(10, ge=1, le=MAX_K),
        offset: int = Form(0, ge=0, le=10000),
        where: list[str] = Form(default=[]),
        timbre: bool = Form(False),
    ) -> dict[str, Any]:
        opts = _options(k, offset, where, timbre)
        data = await _read_limited(file)
        suffix = Path(file.filename or "upload").suffix.lower()[:8]
        with tempfile.NamedTemporaryFile(suffix=suffix) as tmp:
            tmp.write(data)
            tmp.flush()
            return _search_upload(lib, Path(tmp.name), file.filename or "upload", opts)

    @app.post("/api/recommend")
    def recommend(body: RecommendBody) -> dict[str, Any]:
        opts = _options(body.k, body.offset, body.where, body.timbre)
        with lib.holder.store() as store:
            likes = [_point_query(store, i) for i in body.like]
            unlikes = [_point_query(store, i) for i in body.unlike]
            return result_dict(search_examples(store, likes, unlikes, opts))

    @app.post("/api/collections")
    def save_collection(body: CollectionBody) -> dict[str, Any]:
        return _save_collection(lib, body)

    @app.get("/audio/{point}")
    def audio(point: str) -> FileResponse:
        if not is_point_id(point):
            raise HttpError(404, f"{point!r} is not a point id")
        with lib.holder.store() as store:
            found = store.retrieve([point])
        if not found:
            raise HttpError(404, f"point {point} is not in the collection")
        path = file_path(found[0].payload)
        if not path.is_file():
            raise HttpError(404, f"{found[0].payload.get('path')} is gone from the disk: run audiosim-index run again")
        kind = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
        return FileResponse(path, media_type=kind)

    app.mount("/", StaticFiles(directory=STATIC, html=True), name="static")
    return app


def _full_scroll(store: Store, terms: Any) -> Iterator[Any]:
    from audiosim.shared.payload import SCHEMA

    yield from store.scroll([f.name for f in SCHEMA if f.of_payload is None], terms)


async def _read_limited(file: UploadFile) -> bytes:
    chunks, size = [], 0
    while chunk := await file.read(2**20):
        size += len(chunk)
        if size > UPLOAD_LIMIT:
            raise HttpError(413, f"upload larger than {UPLOAD_LIMIT // 2**20} MB: send one sample")
        chunks.append(chunk)
    if not size:
        raise HttpError(400, "the upload is empty")
    return b"".join(chunks)


def _search_upload(lib: Library, path: Path, name: str, opts: SearchOptions) -> dict[str, Any]:
    from audiosim.shared.audio import read_clip

    encoder = lib.encoder()
    try:
        clip = read_clip(path, encoder.clip_spec)
    except DecodeError as exc:
        raise HttpError(400, f"cannot use {name} as a query: {exc}") from None
    vector = encoder.embed(clip.samples[None])[0]  # (D,)
    with lib.holder.store() as store:
        store.check_model(encoder.identity)
        return result_dict(search(store, [SearchQuery(name, vector)], opts)[0])


def _save_collection(lib: Library, body: CollectionBody) -> dict[str, Any]:
    name = body.name.strip()
    if not COLLECTION_NAME.match(name) or name in (".", "..") or name.startswith("."):
        raise HttpError(400, "a collection name is 1 to 100 characters, without '/' and not starting with '.'")
    folder = lib.collections_dir / name
    if folder.exists() and any(not p.is_symlink() for p in folder.iterdir()):
        raise HttpError(409, f"{folder} exists and holds files of its own: choose another name")
    with lib.holder.store() as store:
        found = {r.id: r for r in store.retrieve([i for i in body.ids if is_point_id(i)])}
    missing = [i for i in body.ids if i not in found]
    if missing:
        raise HttpError(404, f"{len(missing)} of the ids are not in the collection (first: {missing[0]!r})")
    folder.mkdir(parents=True, exist_ok=True)
    made = 0
    for i in body.ids:
        target = file_path(found[i].payload)
        link = folder / target.name
        if link.is_symlink() and link.resolve() == target.resolve():
            continue
        n = 1
        while link.exists() or link.is_symlink():
            link = folder / f"{target.stem} ({n}){target.suffix}"
            n += 1
        link.symlink_to(target)
        made += 1
    return {"folder": str(folder), "linked": made, "total": len(list(folder.iterdir()))}
