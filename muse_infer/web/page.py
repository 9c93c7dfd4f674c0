"""The static results page of `muse-infer search --html FILE`: one HTML file that works from file://.

Built from plain data (``QueryHits`` of ``Hit``), so it does not care how an index stores its rows.
For each query a section of cards; a card shows a keyframe strip, rank, score, path, the time range
of a moment, and a ``<video>`` that plays the file (a moment from its start: media fragment
``#t=start,end``) when its play button is pressed. Links are relative to the page's folder (thumbnails, videos), so the page, the
index and the videos can move together.

File names of any bytes: a card shows a name's display text (``muse_infer.filenames``: bytes that
are not UTF-8 as ``\\xNN``), and links percent-encode the name's own bytes, so they open the file.

Safety: every string that comes from a file name or a query is escaped (``html.escape``, attributes
always double-quoted) and every URL path segment percent-encoded, so a file named
``<img src=x onerror=alert(1)>.mp4`` shows as text. As a second line of defence the page's
Content-Security-Policy lets only its own inline script run (by hash): no injected handler could.
The script marks each keyframe image ``data-state="loaded"`` or ``"failed"`` and counts them on
``<body>`` (``data-images-loaded``, ``-failed``, ``-total``, ``data-ready``), which also lets a test
read the outcome from the DOM, and gives a player its controls when its play button is pressed.

"More like this": a page opened from disk cannot search, so each card carries the videos most like
it (``Hit.similar``: a search by its row, ``RowQuery``, made when the page is written, with the
page's filters), hidden until its "more like this" button is pressed.
"""

from __future__ import annotations

import base64
import hashlib
import html
import os
from collections.abc import Sequence
from datetime import datetime, timezone
from pathlib import Path
from urllib.parse import quote

from ..atomic import atomic_write_bytes
from ..filenames import display_name
from .rows import Hit, QueryHits

ASSETS = Path(__file__).parent / "assets"
PAGE_SCRIPT = """(function () {
  var body = document.body;
  var images = Array.prototype.slice.call(document.querySelectorAll("img.keyframe"));
  function count() {
    var loaded = document.querySelectorAll('img.keyframe[data-state="loaded"]').length;
    var failed = document.querySelectorAll('img.keyframe[data-state="failed"]').length;
    body.setAttribute("data-images-loaded", String(loaded));
    body.setAttribute("data-images-failed", String(failed));
    body.setAttribute("data-images-total", String(images.length));
    body.setAttribute("data-ready", String(loaded + failed === images.length));
  }
  function settle(image) {
    image.setAttribute("data-state", image.naturalWidth > 0 ? "loaded" : "failed");
    count();
  }
  images.forEach(function (image) {
    if (image.complete) { settle(image); return; }
    image.addEventListener("load", function () { settle(image); });
    image.addEventListener("error", function () { settle(image); });
  });
  Array.prototype.forEach.call(document.querySelectorAll("button.more-like"), function (button) {
    var list = document.getElementById(button.getAttribute("aria-controls"));
    button.addEventListener("click", function () {
      list.hidden = !list.hidden;
      button.setAttribute("aria-expanded", String(!list.hidden));
    });
  });
  Array.prototype.forEach.call(document.querySelectorAll(".player-box"), function (box) {
    var video = box.querySelector("video"), button = box.querySelector("button.play");
    button.addEventListener("click", function () {
      video.controls = true;
      button.hidden = true;
      video.play();
    });
  });
  count();
})();"""


def css() -> str:
    """The stylesheet the static page inlines and the service serves."""
    return (ASSETS / "style.css").read_text(encoding="utf-8")


def relative_url(target: str | os.PathLike, page_folder: str | os.PathLike) -> str:
    """A URL for ``target`` relative to ``page_folder``, each path segment percent-encoded.

    Falls back to an absolute ``file://`` URL when no relative path exists (another drive on Windows).
    """
    target = Path(os.path.abspath(target))
    try:
        relative = os.path.relpath(target, os.path.abspath(page_folder))
    except ValueError:
        return target.as_uri()
    # each segment's bytes: a name that is not UTF-8 becomes %XX of its own bytes, the file's URL
    return "/".join(quote(os.fsencode(part), safe="") for part in Path(relative).parts)


def media_fragment(start_s: float | None, end_s: float | None) -> str:
    """``#t=start,end`` (W3C Media Fragments, seconds) for a moment; "" for a whole video."""
    if start_s is None and end_s is None:
        return ""
    start = _number(start_s or 0.0)
    return f"#t={start},{_number(end_s)}" if end_s is not None else f"#t={start}"


def _number(seconds: float) -> str:
    return f"{seconds:.3f}".rstrip("0").rstrip(".")


def clock(seconds: float) -> str:
    """62.5 -> "1:02.5", 3723 -> "1:02:03"."""
    whole, tenths = divmod(round(seconds * 10), 10)
    hours, rest = divmod(whole, 3600)
    minutes, secs = divmod(rest, 60)
    text = f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"
    return text + (f".{tenths}" if tenths else "")


def time_range(start_s: float | None, end_s: float | None) -> str:
    """The range as text ("0:02.5-0:07") for a moment, "" for a whole video."""
    if start_s is None and end_s is None:
        return ""
    return f"{clock(start_s or 0.0)}\u2013{clock(end_s) if end_s is not None else 'end'}"


def render_results_page(
    queries: Sequence[QueryHits],
    page_path: str | os.PathLike,
    details: Sequence[str] = (),
    title: str = "muse-infer search results",
    caution: str | None = None,
) -> str:
    """The page's HTML text. page_path: where it will be written (links are relative to its folder);
    details: short lines shown under the title (index, model, date); caution: why the scores mean
    little (``muse_infer.loading.reference.search_caution``), shown under them, or None."""
    folder = Path(os.path.abspath(page_path)).parent
    style = f"\n{css()}"
    policy = (
        f"default-src 'none'; script-src '{_sha256(PAGE_SCRIPT)}'; style-src '{_sha256(style)}'; "
        "img-src 'self' file: data:; media-src 'self' file:; base-uri 'none'; form-action 'none'"
    )
    nav = ""
    if len(queries) > 1:
        links = "".join(f'<a href="#query-{n}">{_text(q.query)}</a>' for n, q in enumerate(queries, start=1))
        nav = f'<nav class="queries">{links}</nav>'
    sections = "\n".join(_section(n, q, folder) for n, q in enumerate(queries, start=1))
    detail_spans = "".join(f"<span>{_text(line)}</span>" for line in details)
    caution_html = f'<p class="caution" role="note">Caution: {_text(caution)}</p>' if caution else ""
    return (
        "<!doctype html>\n"
        '<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        f'<meta http-equiv="Content-Security-Policy" content="{_text(policy)}">\n'
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        '<meta name="referrer" content="no-referrer">\n'
        f"<title>{_text(title)}</title>\n<style>{style}</style>\n</head>\n"
        f'<body data-ready="false">\n<header class="top"><h1>{_text(title)}</h1>'
        f'<p class="details">{detail_spans}</p>{caution_html}{nav}</header>\n'
        f"<main>\n{sections}\n</main>\n<script>{PAGE_SCRIPT}</script>\n</body>\n</html>\n"
    )


def _sha256(text: str) -> str:
    """A CSP hash source for an inline script or style."""
    return "sha256-" + base64.b64encode(hashlib.sha256(text.encode()).digest()).decode()


def _text(value: object) -> str:
    """Escaped for HTML text and double-quoted attribute values."""
    return html.escape(str(value), quote=True)


def _section(number: int, query: QueryHits, folder: Path) -> str:
    cards = "\n".join(_card(number, hit, folder) for hit in query.hits)
    body = f'<ol class="results">\n{cards}\n</ol>' if query.hits else '<p class="empty">No results.</p>'
    return (
        f'<section class="query" id="query-{number}" data-query="{_text(query.query)}">\n'
        f'<h2>Query {number}: <span class="query-text">{_text(query.query)}</span> '
        f'<span class="count">({len(query.hits)} results)</span></h2>\n{body}\n</section>'
    )


def _card(query_number: int, hit: Hit, folder: Path) -> str:
    video_url = relative_url(hit.video, folder) if hit.video is not None else ""
    player_url = video_url + media_fragment(hit.start_s, hit.end_s)
    thumbnail_urls = [relative_url(path, folder) for path in hit.thumbnails]
    poster = f' poster="{_text(thumbnail_urls[0])}"' if thumbnail_urls else ""
    name = _text(display_name(hit.path))  # text: a name's bytes that are not UTF-8 shown as \\xNN
    player = ""
    if video_url:  # native controls come with the first click: a grid of idle control bars is noise
        player = (
            f'<div class="player-box"><video class="player" preload="none"{poster} src="{_text(player_url)}">'
            f'</video><button class="play" type="button" aria-label="play {name}">\u25b6</button></div>'
        )
    images = "".join(
        f'<img class="keyframe" src="{_text(url)}" alt="keyframe {n} of {name}" decoding="async">'
        for n, url in enumerate(thumbnail_urls, start=1)
    )
    strip = (
        f'<div class="strip">{images}</div>' if images else '<div class="no-thumbnails">no thumbnails</div>'
    )
    span = time_range(hit.start_s, hit.end_s)
    span_html = f'<span class="range" title="time range">{_text(span)}</span>' if span else ""
    path_html = f'<a href="{_text(player_url)}">{name}</a>' if video_url else name
    card_id = f"query-{query_number}-rank-{hit.rank}"
    return (
        f'<li class="card" id="{card_id}" data-rank="{hit.rank}" '
        f'data-row="{hit.row}" data-score="{hit.score:.6f}">\n'
        f"{player}\n{strip}\n"
        f'<div class="meta"><span class="rank">#{hit.rank}</span>'
        f'<span class="score" title="cosine similarity">{hit.score:.4f}</span>{span_html}</div>\n'
        f'<p class="path" title="{name}">{path_html}</p>\n{_similar(card_id, hit, folder)}</li>'
    )


def _similar(card_id: str, hit: Hit, folder: Path) -> str:
    """The card's "more like this" button and its (hidden) list of the videos most like it ("" for a
    card without a list: ``hit.similar`` None)."""
    if hit.similar is None:
        return ""
    items = []
    for other in hit.similar:
        name = _text(display_name(other.path))
        url = (
            relative_url(other.video, folder) + media_fragment(other.start_s, other.end_s)
            if other.video
            else ""
        )
        image = (
            f'<img class="similar-keyframe" src="{_text(relative_url(other.thumbnails[0], folder))}" alt="keyframe of {name}" '
            'decoding="async">'
            if other.thumbnails
            else ""
        )
        label = f'<a href="{_text(url)}">{name}</a>' if url else name
        span = time_range(other.start_s, other.end_s)
        span_html = f' <span class="range">{_text(span)}</span>' if span else ""
        items.append(
            f'<li data-row="{other.row}" data-score="{other.score:.6f}">{image}<span class="score">'
            f"{other.score:.4f}</span> {label}{span_html}</li>"
        )
    body = "".join(items) or '<li class="empty">nothing else passes the filters</li>'
    return (
        f'<button class="more-like" type="button" aria-expanded="false" aria-controls="{card_id}-similar">'
        f'more like this</button><ol class="similar" id="{card_id}-similar" hidden>{body}</ol>\n'
    )


def write_results_page(
    path: str | os.PathLike, queries: Sequence[QueryHits], details: Sequence[str] = (), **options
) -> Path:
    """Write the page to ``path`` atomically; returns the path. ``options``: ``render_results_page``'s."""
    text = render_results_page(queries, path, details, **options)
    return atomic_write_bytes(path, text.encode("utf-8", "backslashreplace"))  # a query of odd bytes too


SIMILAR_COUNT = 5  # videos in a card's "more like this" list


def _with_similar(card: Hit, index, rows, store, make_thumbnails: bool, filters, count: int) -> Hit:
    """``card`` with the ``count`` results most like its row (itself left out)."""
    import dataclasses

    from ..index import RowQuery
    from .rows import hits_for

    found = index.search(RowQuery(card.row), top_k=count + 1, filters=filters)
    others = [hit for hit in found if hit.row != card.row][:count]
    return dataclasses.replace(card, similar=tuple(hits_for(others, rows, store, make_thumbnails)))


def default_details(index_path: str | os.PathLike, rows: int, model: str | None) -> list[str]:
    """The lines under the page's title: index file, row count, model, when it was made."""
    lines = [f"index {Path(index_path).name}", f"{rows} rows"]
    if model:
        lines.append(f"model {model}")
    lines.append(datetime.now(timezone.utc).strftime("made %Y-%m-%d %H:%M UTC"))
    return lines


def save_results_page(
    path: str | os.PathLike,
    index,
    index_path: str | os.PathLike,
    queries: Sequence[str],
    results: Sequence[Sequence],
    make_thumbnails: bool = True,
    filters=None,
    similar: int = SIMILAR_COUNT,
) -> Path:
    """Write the results page of ``index.search_batch(queries)`` (``results``) to ``path``.

    queries: the queries' labels (text, or "like FILE"). Thumbnails come from the index's ``.thumbs/``
    folder; with ``make_thumbnails``, hits without them get them now. Each card gets the ``similar``
    rows most like it (a search by its row with ``filters``; 0: none) for its "more like this" list.
    An index made with the demo model or random CLIP weights gets the caution the `search` command
    prints. Typical use::

        results = index.search_batch(queries, 10, text_encoder=encoder)
        save_results_page("results.html", index, "emb.npy", queries, results)
    """
    from ..index import IndexFiles
    from ..loading.reference import search_caution
    from ..video.thumbnails import ThumbnailStore
    from .rows import IndexRows, hits_for

    rows = IndexRows(index)
    store = ThumbnailStore(IndexFiles.of(index_path).thumbs)
    pages = []
    for query, hits in zip(queries, results, strict=True):
        cards = hits_for(hits, rows, store, make_thumbnails)
        if similar and hasattr(index, "row_vector"):
            cards = [
                _with_similar(card, index, rows, store, make_thumbnails, filters, similar) for card in cards
            ]
        pages.append(QueryHits(query, cards))
    model = (getattr(index, "model_source", None) or {}).get("model")
    details = default_details(index_path, len(rows), Path(str(model)).name if model else None)
    caution = search_caution(getattr(index, "identity", None))
    return write_results_page(path, pages, details, caution=caution)
