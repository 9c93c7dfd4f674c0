"""`muse-infer search`: a thin wrapper over ``muse_infer.index.EmbeddingIndex.search_batch`` (or
``ShardedIndex.search_batch`` for several indexes)."""

from __future__ import annotations

import click

from .common import UserError, query_model_options


@click.command("search")
@click.argument("queries", nargs=-1, required=True)
@click.option(
    "--index",
    "index_paths",
    required=True,
    multiple=True,
    type=click.Path(),
    help="The index (.npy or its .json sidecar); repeat it to search several shards as one.",
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
@click.option(
    "--json",
    "as_json",
    is_flag=True,
    help="Print a JSON list of {query, rank, path, absolute_path, score, row, search} (moments: also "
    "start_s, end_s), by query then rank. path and absolute_path are exact (open them; a file name's "
    "bytes that are not UTF-8 are \\udcXX escapes, which Python's json reads back); display_path and "
    "display_absolute_path, text to show (such bytes as \\xNN), come where they differ.",
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
    help="Also write a results page (keyframes, scores, players; open it from disk in a browser).",
)
@query_model_options
def search(
    queries,
    index_paths,
    top_k,
    per_video,
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
    """Find the videos of an index that best match each text QUERY (cosine similarity).

    An index of moments (encode-videos --window) gives time ranges: the best moment of each of the
    --top-k best videos (--per-video K: up to K moments each), overlapping windows that score alike
    (within 0.02) merged into one range; "start_s"/"end_s" in --json (seconds from the video's first
    frame), MM:SS-MM:SS in the listing. An index of whole videos lists rows as before (no time fields).

    Uses the approximate index beside the index when there is one (`muse-infer index build`; results
    re-ranked exactly), else scans every row; -v says which, --json gives it as "search". Paths are
    relative to the folder that was encoded; "absolute_path" is the file to open. --html writes one
    HTML page (relative links to the index's thumbnails and to the videos, so it works from disk);
    hits without thumbnails get them made. Any --precision searches any index (an index encoded in
    bf16 with fp32 queries, say).

    \b
    Example:
      muse-infer search "a dog catches a frisbee" --index emb.npy --top-k 5
      muse-infer search "a cat" "a red car" --index emb.npy --json
      muse-infer search "a cat" "a red car" --index emb.npy --html results.html
      muse-infer search "a cat" --index emb.npy --device cpu --precision bf16
      muse-infer search "a cat" --index part0.npy --index part1.npy --exact
      muse-infer search "a red car turns left" --index moments.npy --per-video 3 --json
      muse-infer search "a cat" --index emb.npy --absolute
    """
    import json
    import logging

    from ..encoders import TextEncoder
    from ..errors import MuseError
    from ..index import EmbeddingIndex, ShardedIndex
    from ..loading.reference import search_caution

    # TextEncoder refuses these too (QueryError); here before the index and model load, which take a while.
    blank = [str(i) for i, query in enumerate(queries, 1) if not query.strip()]
    if blank:
        raise UserError(
            f'query {", ".join(blank)} is empty: give the words to search for, e.g. "a dog on a beach"'
        )
    if html_path and len(index_paths) > 1:
        raise UserError("--html: pass one --index (merge shards first: muse-infer index merge)")
    if len(index_paths) == 1:
        index = EmbeddingIndex.load(index_paths[0])
    else:
        index = ShardedIndex.load(index_paths)
    method = "exact" if exact else index.search_method
    logging.getLogger(__name__).info("searching %d rows: %s", len(index), _method_text(index, method))
    source = index.model_source
    try:
        encoder = TextEncoder.for_index(
            index,
            device=device,
            backend=backend,
            precision=precision,
            model=model,
            clip_weights=clip_weights,
            tokenizer=tokenizer,
        )
        hits = index.search_batch(
            list(queries), top_k, text_encoder=encoder, exact=exact, per_video=per_video
        )
    except MuseError as error:
        raise UserError(f"{error}{_moved_hint(source, model, clip_weights)}") from None
    caution = search_caution(getattr(index, "identity", None))
    if caution:
        click.echo(f"caution: {caution}", err=True)
    if html_path:
        from ..web.page import save_results_page

        written = save_results_page(html_path, index, index_paths[0], list(queries), hits)
        click.echo(f"results page: {written} (open it in a browser)", err=True)
    if as_json:
        rows = [
            {"query": q, **hit.to_dict(), "search": method}
            for q, results in zip(queries, hits, strict=True)
            for hit in results
        ]
        click.echo(json.dumps(rows, indent=1))
        return
    _print_listing(queries, hits, absolute)


def _print_listing(queries, hits, absolute: bool) -> None:
    """Each query, then its hits: rank, score, path (absolute with --absolute) as text (a name's
    bytes that are not UTF-8 as \\xNN), a moment's time range."""
    from ..filenames import display_name

    for query, results in zip(queries, hits, strict=True):
        click.echo(f"{query}")
        for hit in results:
            path = display_name((hit.absolute_path or hit.path) if absolute else hit.path)  # \xNN, \n
            click.echo(f"  {hit.rank:>3}  {hit.score:+.4f}  {path}{_span_text(hit)}")
        if not results:
            click.echo("  (the index is empty)")


def _span_text(hit) -> str:
    """ "  [01:03.0-01:15.0]" for a moment, "" for a whole video."""
    if hit.start_s is None or hit.end_s is None:
        return ""
    return f"  [{_clock(hit.start_s)}-{_clock(hit.end_s)}]"


def _clock(seconds: float) -> str:
    minutes, rest = divmod(seconds, 60)
    hours, minutes = divmod(int(minutes), 60)
    return (f"{hours}:{minutes:02d}" if hours else f"{minutes:02d}") + f":{rest:04.1f}"


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
