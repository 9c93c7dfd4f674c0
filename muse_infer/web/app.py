"""The search service: a Starlette app with a search page and a JSON API over one index.

Routes (all GET unless noted; every error is a JSON ``{"error", "status"}`` with a 4xx status):
    /                          the search page (``/?q=a+cat&k=10`` searches on load)
    /static/{name}             the page's script and stylesheet (a fixed list, not a folder)
    /favicon.ico               204 (there is none; answered so browsers do not log an error)
    /api/info                  {"index", "rows", "model", "max_k", "max_query_chars", "caution"}
                               (caution: why the scores mean little, e.g. the demo model; or null)
    /api/search?q=TEXT&k=N     {"query", "k", "offset", "total", "next_offset", "took_ms", "results":
                               [{"rank", "score", "row", "path", "start_s", "end_s", "media":
                               "/media/ROW", "thumbnails": ["/thumbs/ROW/0", ...]}]}; "path" is the
                               exact name (a byte that is not UTF-8 as a \\udcXX escape), and
                               "display_path" (text to show) follows it where it differs
    /api/search?like=ROW       the same, searching by the row's stored vector ("more like this": no
                               model call); "like": ROW in the answer
      &offset=N                pagination: results N+1.. of the query's ranked top max_k, computed
                               once and kept (the same search is never re-run differently)
      &under=FOLDER&min_duration=S&max_duration=S&modified_after=DATE&modified_before=DATE&min_score=S
                               filters, as `muse-infer search` takes them (under repeatable)
    POST /api/search?k=N&...   search by an uploaded image or short clip, the request's body (or a
                               multipart form's file field): 413 above the size limit, 400 for
                               anything that is not an image or video, or a URL (never fetched);
                               decoded in a process of its own with a timeout (``web.uploads``)
    /media/{row}               the row's video (HTTP Range requests answered: players can seek)
    /thumbs/{row}/{n}          the row's n-th keyframe (JPEG), made on first request when missing
    POST /api/session          with the bearer token: sets the browser's session cookie

Files are named by row number only, never by a path from the client, and served only when their
real path (symlinks followed) lies inside the index's root (videos) or its thumbnails folder.
``create_app`` takes every dependency as an argument, so tests build it without a server;
``muse_infer.web.server`` runs it. The text encoder runs in a worker thread under a lock (one
model, called from many request threads); the search itself runs in the thread pool unlocked.
A query's ranking (its top ``max_k``, filters applied) is kept (``RANKINGS_KEPT`` of them), so pages
of it are slices of one ranking.
"""

from __future__ import annotations

import json
import mimetypes
import re
import threading
import time
from collections import OrderedDict
from pathlib import Path

import numpy as np

from ..filenames import with_display
from ..video.thumbnails import ThumbnailStore
from . import require_web_extra
from .rows import IndexRows, moment_span
from .security import Guard, file_under, session_cookie
from .uploads import MAX_UPLOAD_BYTES, UPLOAD_TIMEOUT_S, UploadError

ASSETS = Path(__file__).parent / "assets"
STATIC = {  # name -> media type: the only files /static/ serves
    "style.css": "text/css; charset=utf-8",
    "search.js": "text/javascript; charset=utf-8",
    "login.js": "text/javascript; charset=utf-8",
}
VIDEO_TYPES = {
    ".mp4": "video/mp4",
    ".m4v": "video/mp4",
    ".mov": "video/quicktime",
    ".webm": "video/webm",
    ".mkv": "video/x-matroska",
    ".ogv": "video/ogg",
}
MAX_K, MAX_QUERY_CHARS = 100, 1000
RANKINGS_KEPT = 128
_DIGITS = re.compile(r"[0-9]{1,9}")


class SearchService:
    """What the routes do, without HTTP: search (text, a row, an uploaded file; filtered; paged), and
    the files of a row (checked, or None)."""

    def __init__(
        self,
        index,
        text_encoder,
        root,
        thumbnails: ThumbnailStore | None,
        make_missing: bool,
        window: int = MAX_K,
        video_encoder=None,
        upload_timeout: float = UPLOAD_TIMEOUT_S,
    ):
        self.index, self.text_encoder, self.window = index, text_encoder, window
        self.rows = IndexRows(index)
        self.root = Path(root).resolve()
        self.thumbnails, self.make_missing = thumbnails, make_missing
        self.video_encoder, self.upload_timeout = video_encoder, upload_timeout
        self._model_lock = threading.Lock()
        self._thumbnail_locks: dict[int, threading.Lock] = {}
        self._locks_lock = threading.Lock()
        self._rankings: OrderedDict = OrderedDict()  # (kind, what, filters) -> ranked results
        self._rankings_lock = threading.Lock()

    def search(self, query: str, k: int, filters=None, offset: int = 0) -> list[dict]:
        """Results ``offset``.. ``offset + k`` of ``query``'s ranking as JSON-ready dicts (links by row)."""
        return self.text_ranking(query, filters)[offset : offset + k]

    def text_ranking(self, query: str, filters=None) -> list[dict]:
        """The ranked top ``window`` results of a text query (kept: see ``ranking``)."""

        def vector():
            with self._model_lock:  # one model, not known to be safe to call from two threads at once
                return np.asarray(self.text_encoder.encode([query]), dtype=np.float32)[0]

        return self.ranking(("text", query), vector, filters)

    def row_ranking(self, row: int, filters=None) -> list[dict]:
        """The ranking of row ``row``'s stored vector: "more like this" (no model call)."""
        if not hasattr(self.index, "row_vector"):
            raise UploadError(400, "this index cannot search by a row")
        return self.ranking(("row", row), lambda: self.index.row_vector(row), filters)

    def upload_ranking(self, data: bytes, filters=None) -> list[dict]:
        """The ranking of an uploaded image or clip (decoded in a process of its own: ``web.uploads``)."""
        from .uploads import decode_upload, digest

        def vector():
            encoder = self._examples_encoder()
            clip = decode_upload(data, encoder.frame_settings, self.upload_timeout)
            with self._model_lock:
                return encoder.encode_clip(clip)

        return self.ranking(("upload", digest(data)), vector, filters)

    def ranking(self, key: tuple, vector, filters=None) -> list[dict]:
        """The top ``window`` results of the query ``key`` (``vector()`` computes its vector), kept for
        the next pages; a filter the index cannot serve raises ``UploadError(400)``."""
        from ..errors import MuseError

        key = (*key, filters)
        with self._rankings_lock:
            if key in self._rankings:
                self._rankings.move_to_end(key)
                return self._rankings[key]
        options = {"filters": filters} if filters is not None else {}
        try:
            hits = self.index.search(vector(), top_k=self.window, **options)
        except MuseError as error:
            raise UploadError(400, str(error)) from None
        ranked = [self._result(hit) for hit in hits]
        with self._rankings_lock:
            self._rankings[key] = ranked
            while len(self._rankings) > RANKINGS_KEPT:
                self._rankings.popitem(last=False)
        return ranked

    def _examples_encoder(self):
        """The video encoder of uploaded examples: the one given, else one sharing the text encoder's
        model (its video tower; no second load)."""
        if self.video_encoder is None:
            from ..encoders import VideoEncoder
            from ..runtime import Backend

            backend = getattr(self.text_encoder, "backend", None)
            if not isinstance(backend, Backend) or (backend.text_only and backend.spec is None):
                raise UploadError(400, "this service cannot encode uploaded files (no video model)")
            frames = (getattr(self.index, "settings", None) or {}).get("max_frames")
            self.video_encoder = VideoEncoder(backend, max_frames=frames if isinstance(frames, int) else None)
        return self.video_encoder

    def _result(self, hit) -> dict:
        row = self.rows.row_of(hit)
        source = self.rows.sources[row]
        count = self.thumbnails.count if self.thumbnails is not None else 0
        return with_display(
            {
                "rank": int(hit.rank),
                "score": float(hit.score),
                "row": row,
                "path": source.path,
                "start_s": moment_span(hit, source)[0],
                "end_s": moment_span(hit, source)[1],
                "media": f"/media/{row}",
                "thumbnails": [f"/thumbs/{row}/{n}" for n in range(count)],
            }
        )

    def media_file(self, row: int) -> Path | None:
        """The row's video if its real path is inside the root."""
        return file_under(self.root, self.rows.sources[row].path)

    def thumbnail_file(self, row: int, number: int) -> Path | None:
        """The row's ``number``-th keyframe file, made first when missing (and allowed); None if none."""
        if self.thumbnails is None:
            return None
        source = self.rows.sources[row]
        folder = self.thumbnails.folder.resolve()
        name = self.thumbnails.files(source)[number].name
        found = file_under(folder, name)
        if found is None and self.make_missing:
            video = self.media_file(row)
            if video is not None:
                with self._lock_for(row):
                    if not self.thumbnails.has(source):
                        self.thumbnails.ensure(video, source)
                found = file_under(folder, name)
        return found

    def _lock_for(self, row: int) -> threading.Lock:
        with self._locks_lock:
            return self._thumbnail_locks.setdefault(row, threading.Lock())


def create_app(
    index,
    text_encoder,
    root,
    token: str | None = None,
    *,
    thumbnails: ThumbnailStore | None = None,
    allowed_hosts=None,
    max_k: int = MAX_K,
    max_query_chars: int = MAX_QUERY_CHARS,
    make_missing_thumbnails: bool = True,
    index_name: str = "",
    video_encoder=None,
    max_upload_bytes: int = MAX_UPLOAD_BYTES,
    upload_timeout: float = UPLOAD_TIMEOUT_S,
):
    """The service's ASGI app.

    index: an ``EmbeddingIndex`` (or anything with ``paths`` and ``search(vector, top_k)``);
    text_encoder: anything with ``encode(list_of_str) -> (N, C)`` (a ``TextEncoder``); root: the
    folder the index's paths are relative to; token: require it (bearer or session cookie) on
    every request; thumbnails: where keyframes live (None: no thumbnails); allowed_hosts: Host
    header names to answer (None: any; ``serve`` passes the loopback names on a loopback bind);
    video_encoder: encodes uploaded files (None: one sharing ``text_encoder``'s model);
    max_upload_bytes, upload_timeout: an upload's limits (413 above the size; 400 when its decoding
    takes longer, in seconds).
    """
    require_web_extra()
    from starlette.applications import Starlette
    from starlette.exceptions import HTTPException
    from starlette.routing import Route

    from ..loading.reference import search_caution

    service = SearchService(
        index,
        text_encoder,
        root,
        thumbnails,
        make_missing_thumbnails,
        max_k,
        video_encoder,
        upload_timeout,
    )
    info = {
        "index": index_name,
        "rows": len(service.rows),
        "model": str((getattr(index, "model_source", None) or {}).get("model", "")),
        "max_k": max_k,
        "max_query_chars": max_query_chars,
        "caution": search_caution(getattr(index, "identity", None)),  # shown on the page
    }
    handlers = _Handlers(service, info, max_k, max_query_chars, token)
    handlers.max_upload_bytes = max_upload_bytes
    routes = [
        Route("/", handlers.page),
        Route("/favicon.ico", handlers.no_icon),
        Route("/static/{name}", handlers.static),
        Route("/api/info", handlers.info),
        Route("/api/search", handlers.search),
        Route("/api/search", handlers.search_upload, methods=["POST"]),
        Route("/api/session", handlers.session, methods=["POST"]),
        Route("/media/{row}", handlers.media),
        Route("/thumbs/{row}/{number}", handlers.thumbnail),
    ]
    app = Starlette(routes=routes, exception_handlers={HTTPException: _http_error, Exception: _server_error})
    login_page = (ASSETS / "login.html").read_bytes()
    return Guard(app, token, allowed_hosts, login_page)


class _Handlers:
    """The route functions, sharing the service and its limits."""

    def __init__(self, service: SearchService, info: dict, max_k: int, max_query_chars: int, token):
        self.service, self.details, self.token = service, info, token
        self.max_k, self.max_query_chars = max_k, max_query_chars

    async def page(self, request):
        return _asset_response("search.html", "text/html; charset=utf-8")

    async def no_icon(self, request):
        from starlette.responses import Response

        return Response(status_code=204, headers={"cache-control": "max-age=86400"})  # browsers ask for it

    async def static(self, request):
        name = request.path_params["name"]
        if name not in STATIC:
            _fail(404, "no such file")
        return _asset_response(name, STATIC[name])

    async def info(self, request):
        return json_response(self.details, headers={"cache-control": "no-store"})

    async def search(self, request):
        from starlette.concurrency import run_in_threadpool

        from .uploads import refuse_url_parameters

        params = request.query_params
        _refused(refuse_url_parameters, params)
        k, offset = self._page(params)
        filters = _filters(params)
        like = params.get("like")
        started = time.perf_counter()
        if like is not None:
            if "q" in params:
                _fail(400, "give q (text) or like (a row), not both")
            row = self._row(like)
            ranked = await run_in_threadpool(_refused, self.service.row_ranking, row, filters)
            label, extra = f"like row {row}", {"like": row}
        else:
            query = self._query(params)
            ranked = await run_in_threadpool(_refused, self.service.text_ranking, query, filters)
            label, extra = query, {}
        return self._answer(label, extra, ranked, k, offset, filters, started)

    async def search_upload(self, request):
        from starlette.concurrency import run_in_threadpool

        from .uploads import read_body, refuse_url_parameters, uploaded_file

        params = request.query_params
        _refused(refuse_url_parameters, params)
        k, offset = self._page(params)
        filters = _filters(params)
        started = time.perf_counter()
        body = await _refused_async(read_body(request, self.max_upload_bytes))
        data = _refused(uploaded_file, body, request.headers.get("content-type", ""))
        ranked = await run_in_threadpool(_refused, self.service.upload_ranking, data, filters)
        return self._answer("like the uploaded file", {"like": "upload"}, ranked, k, offset, filters, started)

    def _answer(self, label, extra, ranked, k, offset, filters, started):
        page = ranked[offset : offset + k]
        following = offset + k if offset + k < len(ranked) else None
        took = round((time.perf_counter() - started) * 1000, 2)
        body = {"query": label, **extra, "k": k, "offset": offset, "total": len(ranked)}
        body |= {"next_offset": following, "took_ms": took, "results": page}
        if filters is not None:
            body["filters"] = filters.describe()
        return json_response(body, headers={"cache-control": "no-store"})

    def _page(self, params) -> tuple[int, int]:
        """(k, offset): k results from ``offset`` of the ranked top max_k."""
        k_text = params.get("k", "10")
        if not _DIGITS.fullmatch(k_text) or not 1 <= int(k_text) <= self.max_k:
            _fail(400, f"k must be a whole number from 1 to {self.max_k}, got {k_text[:20]!r}")
        offset_text = params.get("offset", "0")
        if not _DIGITS.fullmatch(offset_text) or int(offset_text) + int(k_text) > self.max_k:
            _fail(
                400,
                f"offset must be a whole number with offset + k <= {self.max_k} (the results a query "
                f"ranks), got {offset_text[:20]!r}",
            )
        return int(k_text), int(offset_text)

    def _query(self, params) -> str:
        query = params.get("q", "").strip()
        if not query:
            _fail(400, "give a query: /api/search?q=TEXT&k=10 (or like=ROW)")
        if len(query) > self.max_query_chars:
            _fail(400, f"the query has {len(query)} characters; at most {self.max_query_chars} are allowed")
        return query

    async def session(self, request):
        from starlette.responses import Response

        # The Guard let this request through, so it carried the token (or a valid session).
        response = Response(status_code=204, headers={"cache-control": "no-store"})
        if self.token:
            response.headers["set-cookie"] = session_cookie(self.token)
        return response

    async def media(self, request):
        from starlette.concurrency import run_in_threadpool
        from starlette.responses import FileResponse

        row = self._row(request.path_params["row"])
        path = await run_in_threadpool(self.service.media_file, row)
        if path is None:
            _fail(404, f"row {row}'s video is not available (missing, or outside the indexed folder)")
        media_type = VIDEO_TYPES.get(path.suffix.lower()) or mimetypes.guess_type(path.name)[0]
        return FileResponse(
            path, media_type=media_type or "application/octet-stream", content_disposition_type="inline"
        )

    async def thumbnail(self, request):
        from starlette.concurrency import run_in_threadpool
        from starlette.responses import FileResponse

        row = self._row(request.path_params["row"])
        count = self.service.thumbnails.count if self.service.thumbnails is not None else 0
        number = request.path_params["number"]
        if not _DIGITS.fullmatch(number) or int(number) >= count:
            _fail(404, f"thumbnail numbers run from 0 to {count - 1}")
        path = await run_in_threadpool(self.service.thumbnail_file, row, int(number))
        if path is None:
            _fail(404, f"row {row} has no thumbnails (its video could not be read)")
        return FileResponse(path, media_type="image/jpeg", headers={"cache-control": "private, max-age=600"})

    def _row(self, text: str) -> int:
        if not _DIGITS.fullmatch(text):
            _fail(400, "a row number is a whole number (links come from /api/search)")
        row = int(text)
        if row >= len(self.service.rows):
            _fail(404, f"no row {row}: the index has {len(self.service.rows)} rows")
        return row


FILTER_PARAMETERS = (
    "under",
    "min_duration",
    "max_duration",
    "modified_after",
    "modified_before",
    "min_score",
)
_NUMBER = re.compile(r"[0-9]{1,9}(\.[0-9]{1,9})?")
_SCORE = re.compile(r"-?[0-9](\.[0-9]{1,9})?")


def _filters(params):
    """The ``SearchFilter`` of the query parameters (None without any); 400 for a bad value."""
    from ..errors import MuseError
    from ..index.filters import filter_of

    values = {}
    folders = params.getlist("under")
    if len(folders) > 32 or any(len(folder) > 1000 or "\0" in folder for folder in folders):
        _fail(400, "under: at most 32 folders of at most 1000 characters")
    values["under"] = tuple(folders)
    for name in ("min_duration", "max_duration"):
        text = params.get(name)
        if text is not None and not _NUMBER.fullmatch(text):
            _fail(400, f"{name} must be a number of seconds >= 0, got {text[:20]!r}")
        values[name] = float(text) if text is not None else None
    for name in ("modified_after", "modified_before"):
        values[name] = params.get(name)
        if values[name] is not None and len(values[name]) > 40:
            _fail(400, f"{name} must be a date (YYYY-MM-DD or YYYY-MM-DDTHH:MM)")
    text = params.get("min_score")
    if text is not None and not _SCORE.fullmatch(text):
        _fail(400, f"min_score must be a number from -1 to 1, got {text[:20]!r}")
    values["min_score"] = float(text) if text is not None else None
    try:
        return filter_of(**values)
    except MuseError as error:
        _fail(400, str(error))


def _refused(function, *args):
    """``function(*args)``, an ``UploadError`` becoming its HTTP error."""
    try:
        return function(*args)
    except UploadError as error:
        _fail(error.status, error.message)


async def _refused_async(awaitable):
    try:
        return await awaitable
    except UploadError as error:
        _fail(error.status, error.message)


def _asset_response(name: str, media_type: str):
    from starlette.responses import Response

    return Response(
        (ASSETS / name).read_bytes(), media_type=media_type, headers={"cache-control": "no-cache"}
    )


def _fail(status: int, message: str):
    from starlette.exceptions import HTTPException

    raise HTTPException(status, message)


def json_response(body, status: int = 200, headers: dict | None = None):
    """A JSON answer in ASCII: a name that is not UTF-8 (a str with lone surrogates) goes out as
    ``\\udcXX`` escapes, where Starlette's JSONResponse (UTF-8, no escapes) would fail on it."""
    from starlette.responses import Response

    text = json.dumps(body, ensure_ascii=True, allow_nan=False, separators=(",", ":"))
    return Response(text.encode("ascii"), status, headers, media_type="application/json")


async def _http_error(request, error):
    headers = dict(error.headers or {}) | {"cache-control": "no-store"}
    return json_response({"error": error.detail, "status": error.status_code}, error.status_code, headers)


async def _server_error(request, error):
    # Starlette re-raises the error after this answer, and the server logs it with its traceback.
    return json_response({"error": "internal error (see the server's log)", "status": 500}, 500)
