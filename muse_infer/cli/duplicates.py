"""`muse-infer duplicates`: a thin wrapper over ``muse_infer.index.duplicates.find_duplicates``."""

from __future__ import annotations

import click

from .common import UserError


@click.command("duplicates")
@click.option(
    "--index", "index_path", required=True, type=click.Path(), help="The index (.npy or its .json sidecar)."
)
@click.option(
    "--threshold",
    type=click.FloatRange(min=0, max=1, min_open=True),
    default=None,
    help="Share of each video's frames (or moments) that must be found in the other [default: 0.5, "
    "chosen on a generated corpus: docs/benchmarks.md].",
)
@click.option(
    "--compare",
    type=click.Choice(["auto", "frames", "moments", "embeddings"]),
    default="auto",
    show_default=True,
    help="How candidate pairs are compared: auto = frames of the videos where the files can be read, "
    "else moment rows (an index of moments), else whole-video embeddings.",
)
@click.option(
    "--candidates",
    "candidate_cosine",
    type=click.FloatRange(min=-1, max=1),
    default=None,
    help="Cosine of two rows that makes their videos a candidate pair [default: 0.5].",
)
@click.option(
    "--workers", type=click.IntRange(min=1), default=2, show_default=True, help="Threads reading frames."
)
@click.option(
    "--json", "as_json", is_flag=True, help="Print the groups as JSON (paths exact, as search --json)."
)
@click.option(
    "--html",
    "html_path",
    type=click.Path(dir_okay=False),
    default=None,
    help="Also write a page of the groups.",
)
def duplicates(index_path, threshold, compare, candidate_cosine, workers, as_json, html_path) -> None:
    """Group the videos of an index that are the same content: re-encoded, rescaled, in another
    container, trimmed by a few seconds.

    Candidates are each row's nearest rows through the approximate index (`muse-infer index build`
    first for large indexes: a temporary one is built otherwise). Each candidate pair is then compared
    over the videos' length, not by one vector: 16 frames of each video (the files are read), or the
    moment rows of an index of moments, so two different videos sharing an intro are not grouped. A
    pair whose videos each have at least --threshold of their frames in the other is a duplicate;
    groups are the connected sets of duplicate pairs. `search --dedup` uses the same test.

    \b
    Example:
      muse-infer duplicates --index emb.npy
      muse-infer duplicates --index emb.npy --threshold 0.6 --json
      muse-infer duplicates --index emb.npy --html duplicates.html
      muse-infer duplicates --index moments.npy --compare moments
    """
    import json
    import sys

    from ..index import EmbeddingIndex
    from ..index import duplicates as found_duplicates

    index = EmbeddingIndex.load(index_path)
    settings = {
        "threshold": threshold if threshold is not None else found_duplicates.DEFAULT_THRESHOLD,
        "candidate_cosine": (
            candidate_cosine if candidate_cosine is not None else found_duplicates.CANDIDATE_COSINE
        ),
    }
    progress = sys.stderr.isatty()
    found = found_duplicates.find_duplicates(
        index, compare=compare, workers=workers, progress=progress, **settings
    )
    if found.unreadable:
        click.echo(
            f"{len(found.unreadable)} videos could not be read (compared by their rows instead), e.g. "
            f"{found.unreadable[0]}",
            err=True,
        )
    if html_path:
        written = _save_page(html_path, index, index_path, found)
        click.echo(f"duplicates page: {written} (open it in a browser)", err=True)
    if as_json:
        click.echo(json.dumps(found.to_dict(index), indent=1))
        return
    _print_groups(found)


def _print_groups(found) -> None:
    from ..filenames import display_name

    compared = ", ".join(f"{n} by {kind}" for kind, n in sorted(found.counts().items())) or "none"
    click.echo(
        f"{len(found.groups)} groups of duplicates among {len(found.videos)} videos ({len(found.first)} "
        f"candidate pairs compared: {compared}; threshold {found.threshold:g}) in {found.seconds:.1f} s"
    )
    for number, members in enumerate(found.groups, start=1):
        click.echo(f"group {number} ({len(members)} videos)")
        best = _best_scores(found, members)
        for member in members:
            score, how = best.get(member, (None, ""))
            detail = f"  {score:.2f} ({how})" if score is not None else ""
            click.echo(f"  {display_name(found.videos[member].path)}{detail}")


def _best_scores(found, members) -> dict:
    """{video: (its best duplicate score in the group, how it was compared)}."""
    inside, best = set(members), {}
    for pair in found.duplicate_pairs():
        if pair.first in inside:
            for video in (pair.first, pair.second):
                if pair.score > best.get(video, (-1.0, ""))[0]:
                    best[video] = (pair.score, pair.compared)
    return best


def _save_page(html_path, index, index_path, found):
    """A results page with a section a group (cards: its videos, score their best pair's)."""
    from ..errors import MuseError
    from ..index import IndexFiles, SearchResult
    from ..video.thumbnails import ThumbnailStore
    from ..web.page import default_details, write_results_page
    from ..web.rows import IndexRows, QueryHits, hits_for

    rows, store = IndexRows(index), ThumbnailStore(IndexFiles.of(index_path).thumbs)
    sections = []
    for number, members in enumerate(found.groups, start=1):
        best = _best_scores(found, members)
        results = [
            SearchResult(
                rank,
                found.videos[m].path,
                best.get(m, (0.0, ""))[0],
                int(found.videos[m].rows[0]),
                index.absolute_path(int(found.videos[m].rows[0])),
            )
            for rank, m in enumerate(members, start=1)
        ]
        sections.append(QueryHits(f"group {number}: {len(members)} videos", hits_for(results, rows, store)))
    details = default_details(index_path, len(rows), None) + [f"threshold {found.threshold:g}"]
    try:
        return write_results_page(html_path, sections, details, title="muse-infer duplicates")
    except OSError as error:
        raise UserError(f"--html {html_path}: cannot write it ({error.strerror})") from None
    except MuseError as error:
        raise UserError(str(error)) from None
