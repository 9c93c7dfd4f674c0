"""`muse-infer index build|merge|info`: thin wrappers over ``muse_infer.index`` (build_ann, merge_indexes,
EmbeddingIndex.describe)."""

from __future__ import annotations

import click

from .common import CommandGroup, UserError

KIND_CHOICE = click.Choice(["auto", "flat", "hnsw", "ivf-pq"])


@click.group("index", cls=CommandGroup)
def index_group() -> None:
    """Build the approximate index beside an index, merge shards, describe an index, re-root one.

    \b
    Example:
      muse-infer index build emb.npy
      muse-infer index merge all.npy part0.npy part1.npy --kind auto
      muse-infer index info emb.npy
      muse-infer index reroot emb.npy /mnt/new_disk/videos
    """


@index_group.command("build")
@click.argument("index_path", metavar="EMB.npy", type=click.Path())
@click.option(
    "--kind",
    type=KIND_CHOICE,
    default="auto",
    show_default=True,
    help="Index kind; auto chooses by rows and --memory.",
)
@click.option(
    "--memory",
    default="4G",
    show_default=True,
    help="Memory budget of the approximate index (e.g. 512M, 16G).",
)
@click.option(
    "--target-recall",
    type=click.FloatRange(0, 1, min_open=True),
    default=0.95,
    show_default=True,
    help="Recall@10 against exact search the search effort is tuned to reach.",
)
@click.option(
    "--tune-queries",
    type=click.Path(),
    default=None,
    help="A (Q, C) .npy of query embeddings (e.g. TextEncoder output of typical queries) to tune on.",
)
@click.option(
    "--threads", type=click.IntRange(min=1), default=None, help="Build threads [default: all cores]."
)
def build(index_path, kind, memory, target_recall, tune_queries, threads) -> None:
    """Build the approximate (ANN) index beside EMB.npy, so `search` reads a few hundred rows, not all.

    auto: exact search (flat) up to 64 MiB of rows, else HNSW below 250k rows when it fits --memory,
    else IVF-PQ with as many codes a row as fit --memory.
    Search effort is tuned to --target-recall on query-like vectors, and every result is re-ranked
    with the exact rows, so scores are exact cosines. Writes EMB.ann.faiss and EMB.ann.json; a
    format-1 index is converted to format 2 first. -v says each step as it starts (they take minutes
    on millions of rows).

    \b
    Example:
      muse-infer index build emb.npy
      muse-infer index build emb.npy --kind ivf-pq --memory 1G
      muse-infer index build emb.npy --tune-queries text_queries.npy --target-recall 0.98
    """
    from ..index.build import build_ann, describe_build

    queries = _load_queries(tune_queries) if tune_queries else None
    meta = build_ann(
        index_path,
        kind=kind,
        memory=memory,
        target_recall=target_recall,
        tune_queries=queries,
        threads=threads,
    )
    click.echo(describe_build(meta))


def _load_queries(path: str):
    import numpy as np

    try:
        return np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError) as error:
        raise UserError(f"--tune-queries {path}: not a readable .npy array ({error})") from None


@index_group.command("merge")
@click.argument("out", metavar="OUT.npy", type=click.Path())
@click.argument("shards", metavar="SHARD.npy...", nargs=-1, required=True, type=click.Path())
@click.option(
    "--kind",
    type=click.Choice(["none", "auto", "flat", "hnsw", "ivf-pq"]),
    default="none",
    show_default=True,
    help="Also build an approximate index of this kind over the merged rows.",
)
@click.option("--memory", default="4G", show_default=True, help="Memory budget of that approximate index.")
@click.option(
    "--overwrite", is_flag=True, help="Replace OUT if it is a muse-infer index (never another file)."
)
def merge(out, shards, kind, memory, overwrite) -> None:
    """Merge index shards into one index OUT: their rows end to end, paths relative to a common root.

    The result searches exactly like the shards searched together (`search --index A --index B`).
    Shards must come from the same model and settings; a video in two shards is an error.

    \b
    Example:
      muse-infer index merge all.npy machine0.npy machine1.npy machine2.npy --kind auto
    """
    from ..index import EmbeddingIndex, merge_indexes

    written = merge_indexes(
        out, shards, kind=None if kind == "none" else kind, memory=memory, overwrite=overwrite
    )
    merged = EmbeddingIndex.load(written, verify=False)
    click.echo(
        f"merged {len(merged)} rows of {len(shards)} indexes -> {written} (search: {merged.search_method})"
    )


@index_group.command("reroot")
@click.argument("index_path", metavar="EMB.npy", type=click.Path())
@click.argument("new_folder", metavar="NEW_FOLDER", type=click.Path())
@click.option(
    "--allow-missing",
    is_flag=True,
    help="Re-root even if some videos are missing or of another size there (they stay as they were).",
)
def reroot(index_path, new_folder, allow_missing) -> None:
    """Point an index at the new folder of its videos after they moved, without encoding again.

    Every video must be in NEW_FOLDER at its path relative to the old folder, with the size it had
    when encoded (else nothing changes and the missing ones are named); each one's new modification
    time is recorded, so a later encode-videos run on NEW_FOLDER sees nothing changed.

    \b
    Example:
      muse-infer index reroot emb.npy /mnt/new_disk/videos
      muse-infer index reroot emb.npy ~/videos --allow-missing
    """
    from ..index.reroot import reroot_index

    click.echo(reroot_index(index_path, new_folder, allow_missing).line(), err=True)


@index_group.command("info")
@click.argument("index_path", metavar="EMB.npy", type=click.Path())
@click.option(
    "--verify", is_flag=True, help="Check every chunk hash and the whole ANN file (reads everything)."
)
@click.option("--json", "as_json", is_flag=True, help="Print the description as JSON.")
def info(index_path, verify, as_json) -> None:
    """Describe an index: rows, dimension, model, settings, files and sizes, ANN index and its settings.

    \b
    Example:
      muse-infer index info emb.npy
      muse-infer index info emb.npy --verify --json
    """
    import json

    from ..index import EmbeddingIndex

    index = EmbeddingIndex.load(index_path, verify=True if verify else "auto")
    described = index.describe()
    described["verified"] = bool(verify)
    if as_json:
        click.echo(json.dumps(described, indent=1, sort_keys=True))
        return
    for line in describe_lines(described):
        click.echo(line)


def describe_lines(d: dict) -> list[str]:
    """The human-readable lines of ``EmbeddingIndex.describe()``."""
    from ..filenames import display_name
    from ..index.ann import format_bytes

    lines = [
        f"{d['index']}: format {d['format_version']}, {d['rows']} rows of {d['dim']}, "
        f"{format_bytes(d['bytes_on_disk'])} on disk",
        f"model: {d['model'] or 'none (search with vectors only)'}",
        f"settings: {json_compact(d['settings'])}",
        f"rows are: {_rows_are(d.get('windows'))}",
        f"root: {display_name(d['root']) if d['root'] else 'none (paths as written)'}",
        f"failed: {d['failed']} files",
        "files: " + ", ".join(f"{name} {format_bytes(size)}" for name, size in sorted(d["files"].items())),
    ]
    lines.append("search: " + _search_line(d))
    filters = d.get("filters") or {}
    served = [name for name, ok in filters.items() if ok]
    missing = [name for name, ok in filters.items() if not ok]
    if filters:
        lines.append(
            "filters: "
            + ", ".join(served)
            + (f"; not {', '.join(missing)} (not recorded: encode again with --overwrite)" if missing else "")
        )
    if d.get("verified"):
        lines.append("verified: every chunk hash (and the ANN file) matches")
    return lines


def _rows_are(windows: dict | None) -> str:
    """What a row is: a whole video, or a moment (encode-videos --window/--stride/--cuts)."""
    if not windows:
        return "whole videos"
    cuts = ", starting at shot cuts" if windows.get("cuts") == "shots" else ""
    return f"moments: windows of {windows['window']:g} s every {windows['stride']:g} s{cuts}"


def _search_line(d: dict) -> str:
    from ..index.ann import format_bytes

    ann = d["ann"]
    if d["ann_problem"]:
        return f"exact (the approximate index is unusable: {d['ann_problem']})"
    if ann is None:
        return "exact (no approximate index: muse-infer index build builds one)"
    if ann["kind"] == "flat":
        return f"exact (flat: {ann.get('reason', '')})"
    tuning = ann.get("tuning", {})
    return (
        f"{ann['kind']} ({json_compact(ann['params'])}); {json_compact(ann['search'])}; "
        f"recall@10 {tuning.get('recall')} on {tuning.get('source')} (target {tuning.get('target_recall')}); "
        f"{format_bytes(ann['index_bytes'])} (estimated {format_bytes(ann['estimated_bytes'])}); "
        f"built in {ann.get('build_seconds')} s with faiss {ann.get('faiss_version')}"
    )


def json_compact(value) -> str:
    import json

    return json.dumps(value, sort_keys=True) if value is not None else "none"
