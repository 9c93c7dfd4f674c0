"""`muse-infer search`: a thin wrapper over ``muse_infer.index.EmbeddingIndex.search_batch`` (or
``ShardedIndex.search_batch`` for several indexes)."""

from __future__ import annotations

import click

from .common import UserError, query_model_options, search_filter_options


@click.command("search")
@click.argument("queries", nargs=-1)
@click.option(
    "--index",
    "index_paths",
    required=True,
    multiple=True,
    type=click.Path(),
    help="The index (.npy or its .json sidecar); repeat it to search several shards as one.",
)
@click.option(
    "--like",
    "like_files",
    multiple=True,
    type=click.Path(dir_okay=False),
    help="Search by example: a video (encoded as videos are) or an image (JPEG, PNG, WebP, BMP, TIFF: "
    "a one-frame clip); repeatable.",
)
@click.option(
    "--like-row",
    "like_rows",
    multiple=True,
    type=click.IntRange(min=0),
    help="Search by a row of the index (its stored vector: no model is loaded); repeatable. The row "
    "itself comes first (score 1).",
)
@click.option(
    "--top-k", type=click.IntRange(min=1), default=10, show_default=True, help="Videos to list a query."
)
@click.option(
    "--per-video",
    type=click.IntRange(min=0),
    default=None,
    help="Moments listed a video, for an index of moments (encode-videos --window) [default: 1, its best; "
    "0: the best rows as they are, not grouped].",
)
@search_filter_options
@click.option(
    "--dedup",
    is_flag=True,
    help="One result per group of duplicate videos (the best ranked; `muse-infer duplicates` groups).",
)
@click.option(
    "--json",
    "as_json",
    is_flag=True,
    help="Print a JSON list of {query, query_type, rank, path, absolute_path, score, row, search} "
    "(moments: also start_s, end_s; --like: like; --like-row: like_row), by query then rank. path "
    "and absolute_path are exact (open them; a file name's bytes that are not UTF-8 are \\udcXX escapes, "
    "which Python's json reads back); display_path and display_absolute_path, text to show (such "
    "bytes as \\xNN), come where they differ.",
)
@click.option(
    "--exact", is_flag=True, help="Scan every row exactly, even with an approximate index beside it."
)
@click.option(
    "--absolute",
    is_flag=True,
    help="Print each video's absolute path (the file to open), not the relative one.",
)
@click.option(
    "--html",
    "html_path",
    type=click.Path(dir_okay=False),
    default=None,
    help="Also write a results page (keyframes, scores, players, 'more like this'; open it from disk).",
)
@query_model_options
def search(
    queries,
    index_paths,
    like_files,
    like_rows,
    top_k,
    per_video,
    under,
    min_duration,
    max_duration,
    modified_after,
    modified_before,
    min_score,
    dedup,
    as_json,
    exact,
    absolute,
    html_path,
    model,
    clip_weights,
    tokenizer,
    device,
    backend,
    precision,
) -> None:
    """Find the videos of an index that best match each text QUERY (cosine similarity), or each
    example: a video or image file (--like FILE), a row of the index (--like-row N).

    Queries are searched in the order: texts, --like files, --like-row rows; any mix in one call. The
    index's own model encodes texts and examples (its video tower for --like, loaded only then);
    --like-row loads no model.

    Filters apply inside the search (a row that fails is never ranked): --under FOLDER (repeatable:
    any of them; relative to the indexed folder as results show paths, or absolute), --min-duration
    and --max-duration SECONDS, --modified-after (from that time on) and --modified-before (before
    it) DATE (YYYY-MM-DD or YYYY-MM-DDTHH:MM, local time unless an offset is given); --min-score S
    leaves out results below S (fewer than --top-k then). An index written before durations were
    recorded says so for the duration filters.

    An index of moments (encode-videos --window) gives time ranges: the best moment of each of the
    --top-k best videos (--per-video K: up to K moments each), overlapping windows that score alike
    (within 0.02) merged into one range; "start_s"/"end_s" in --json (seconds from the video's first
    frame), MM:SS-MM:SS in the listing. An index of whole videos lists rows as before (no time fields).

    Uses the approximate index beside the index when there is one (`muse-infer index build`; results
    re-ranked exactly), else scans every row; -v says which, --json gives it as "search". Paths are
    relative to the folder that was encoded; "absolute_path" is the file to open. --html writes one
    HTML page (relative links to the index's thumbnails and to the videos, so it works from disk),
    each card with a "more like this" list; hits without thumbnails get them made. Any --precision
    searches any index (an index encoded in bf16 with fp32 queries, say).

    \b
    Example:
      muse-infer search "a dog catches a frisbee" --index emb.npy --top-k 5
      muse-infer search "a cat" "a red car" --index emb.npy --json
      muse-infer search --like clip.webm --like photo.jpg --index emb.npy
      muse-infer search --like-row 42 --index emb.npy --dedup
      muse-infer search "a cat" --index emb.npy --under holidays/2024 --min-duration 60
      muse-infer search "a cat" --index emb.npy --modified-after 2024-05-01 --min-score 0.25
      muse-infer search "a cat" "a red car" --index emb.npy --html results.html
      muse-infer search "a cat" --index emb.npy --device cpu --precision bf16
      muse-infer search "a cat" --index part0.npy --index part1.npy --exact
      muse-infer search "a red car turns left" --index moments.npy --per-video 3 --json
      muse-infer search "a cat" --index emb.npy --absolute
    """
    import json
    import logging
    from pathlib import Path

    from ..errors import MuseError, VideoDecodeError
    from ..index import EmbeddingIndex, RowQuery, ShardedIndex, ann_read_meanwhile
    from ..index.queries import query_label
    from ..loading.reference import search_caution

    _check_queries(queries, like_files, like_rows)
    if html_path and len(index_paths) > 1:
        raise UserError("--html: pass one --index (merge shards first: muse-infer index merge)")
    if dedup and len(index_paths) > 1:
        raise UserError("--dedup: pass one --index (merge shards first: muse-infer index merge)")
    filters = filters_of(under, min_duration, max_duration, modified_after, modified_before, min_score)
    options = dict(
        model=model, clip_weights=clip_weights, device=device, backend=backend, precision=precision
    )
    options["tokenizer"] = tokenizer
    if len(index_paths) == 1:
        index = EmbeddingIndex.load(index_paths[0])
    else:
        index = ShardedIndex.load(index_paths)
    _check_rows(like_rows, len(index))
    method = "exact" if exact else index.search_method
    logging.getLogger(__name__).info("searching %d rows: %s", len(index), _method_text(index, method))
    asked = [*queries, *(Path(f) for f in like_files), *(RowQuery(r) for r in like_rows)]
    try:
        with ann_read_meanwhile(index, exact):  # the ANN file is read while the model loads
            encoders = _encoders(index, bool(queries), bool(like_files), options)
        hits = index.search_batch(
            asked, top_k, exact=exact, per_video=per_video, filters=filters, dedup=dedup, **encoders
        )
    except VideoDecodeError as error:  # an example file (--like) that turned out unreadable
        raise UserError(f"--like {error.path}: {error.reason}") from None
    except MuseError as error:
        raise UserError(f"{error}{_moved_hint(_recorded_source(index), model, clip_weights)}") from None
    caution = search_caution(getattr(index, "identity", None))
    if caution:
        click.echo(f"caution: {caution}", err=True)
    labels = [query_label(q) for q in asked]
    if html_path:
        from ..web.page import save_results_page

        written = save_results_page(html_path, index, index_paths[0], labels, hits, filters=filters)
        click.echo(f"results page: {written} (open it in a browser)", err=True)
    if as_json:
        rows = [
            {**_query_fields(q, label), **hit.to_dict(), "search": method}
            for q, label, results in zip(asked, labels, hits, strict=True)
            for hit in results
        ]
        click.echo(json.dumps(rows, indent=1))
        return
    _print_listing(labels, hits, absolute, filters)


def _check_queries(queries, like_files, like_rows) -> None:
    """Something to search for, no blank text, and every --like file readable as a file (before the
    index and model load, which take a while)."""
    from ..errors import VideoDecodeError

    if not (queries or like_files or like_rows):
        raise UserError(
            'give a text QUERY, --like FILE or --like-row N, e.g. muse-infer search "a dog" --index emb.npy'
        )
    # TextEncoder refuses these too (QueryError); here before the index and model load, which take a while.
    blank = [str(i) for i, query in enumerate(queries, 1) if not query.strip()]
    if blank:
        raise UserError(
            f'query {", ".join(blank)} is empty: give the words to search for, e.g. "a dog on a beach"'
        )
    for path in like_files:
        from ..video.examples import kind_of  # only for examples: a text search does without it

        try:
            kind_of(path)
        except VideoDecodeError as error:
            raise UserError(f"--like {path}: {error.reason}") from None


def _check_rows(rows, count: int) -> None:
    for row in rows:
        if row >= count:
            where = f"rows 0 to {count - 1}" if count else "no rows"
            raise UserError(f"--like-row {row}: the index has {where}")


def _encoders(index, texts: bool, examples: bool, options: dict) -> dict:
    """The encoders the queries need: {"text_encoder": ..., "video_encoder": ...}, the index's model
    loaded once (both share it); {} for --like-row alone (no model)."""
    from ..encoders import TextEncoder, VideoEncoder

    encoders = {}
    if examples:
        encoders["video_encoder"] = VideoEncoder.for_index(index, **options)
    if texts:
        shared = encoders.get("video_encoder")
        encoders["text_encoder"] = (
            TextEncoder(shared.backend) if shared is not None else TextEncoder.for_index(index, **options)
        )
    return encoders


def _query_fields(query, label: str) -> dict:
    """The JSON fields naming a query: its label, its type, and the file or row it is."""
    import os

    from ..filenames import with_display
    from ..index import RowQuery

    if isinstance(query, RowQuery):
        return {"query": label, "query_type": "like_row", "like_row": query.row}
    if isinstance(query, os.PathLike):
        fields = {"query": label, "query_type": "like", "like": os.fspath(query)}
        return with_display(fields, "like", "display_like")
    return {"query": label, "query_type": "text"}


def filters_of(under, min_duration, max_duration, modified_after, modified_before, min_score):
    """The ``SearchFilter`` of the filter options (None when none is given); bad values -> UserError."""
    from ..errors import MuseError
    from ..index.filters import filter_of

    try:
        return filter_of(
            under=tuple(under),
            min_duration=min_duration,
            max_duration=max_duration,
            modified_after=modified_after,
            modified_before=modified_before,
            min_score=min_score,
        )
    except MuseError as error:
        raise UserError(option_names(str(error))) from None


def option_names(message: str) -> str:
    """A filter error as the command line names it: "min_duration 5x: ..." -> "--min-duration 5x: ..."."""
    from ..index.filters import FILTER_NAMES

    for name in FILTER_NAMES:
        if message.startswith(name + " "):
            return "--" + name.replace("_", "-") + message[len(name) :]
    return message


def _print_listing(labels, hits, absolute: bool, filters=None) -> None:
    """Each query, then its hits: rank, score, path (absolute with --absolute) as text (a name's
    bytes that are not UTF-8 as \\xNN), a moment's time range."""
    from ..filenames import display_name

    for label, results in zip(labels, hits, strict=True):
        click.echo(display_name(label))
        for hit in results:
            path = display_name((hit.absolute_path or hit.path) if absolute else hit.path)  # \xNN, \n
            click.echo(f"  {hit.rank:>3}  {hit.score:+.4f}  {path}{_span_text(hit)}")
        if not results:
            click.echo(
                f"  (no video passes the filters: {filters.describe()})"
                if filters
                else "  (the index is empty)"
            )


def _span_text(hit) -> str:
    """ "  [01:03.0-01:15.0]" for a moment, "" for a whole video."""
    if hit.start_s is None or hit.end_s is None:
        return ""
    return f"  [{_clock(hit.start_s)}-{_clock(hit.end_s)}]"


def _clock(seconds: float) -> str:
    minutes, rest = divmod(seconds, 60)
    hours, minutes = divmod(int(minutes), 60)
    return (f"{hours}:{minutes:02d}" if hours else f"{minutes:02d}") + f":{rest:04.1f}"


def _recorded_source(index) -> dict:
    """The index's recorded ``model_source`` (the first shard's), {} when it records none."""
    first = index.shards[0] if hasattr(index, "shards") else index
    return first.metadata.get("model_source") or {}


def _moved_hint(source: dict, model: str | None, clip_weights: str | None) -> str:
    """What to pass when a file the index's model was loaded from is no longer where it was."""
    if model is None and _is_missing_file(source.get("model")):
        return f"; the index's model file {source['model']} is gone: pass --model with its new location"
    if clip_weights is None and _is_missing_file(source.get("clip_weights")):
        return (
            f"; the index's CLIP weights {source['clip_weights']} are gone: pass --clip-weights with their new "
            "location"
        )
    return ""


def _is_missing_file(value) -> bool:
    from pathlib import Path

    return isinstance(value, str) and Path(value).is_absolute() and not Path(value).exists()


def _method_text(index, method: str) -> str:
    if method == "exact":
        return "exact scan of every row"
    meta = getattr(index, "ann_meta", None) or {}
    settings = ", ".join(f"{k} {v}" for k, v in (meta.get("search") or {}).items())
    return f"{method} approximate index ({settings}), candidates re-ranked exactly"
