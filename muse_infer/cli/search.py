"""`muse-infer search`: a thin wrapper over ``muse_infer.index.EmbeddingIndex.search_batch``."""

from __future__ import annotations

import click

from .common import BACKEND_CHOICE, UserError


@click.command("search")
@click.argument("queries", nargs=-1, required=True)
@click.option(
    "--index", "index_path", required=True, type=click.Path(), help="The index (.npy or its .json sidecar)."
)
@click.option(
    "--top-k", type=click.IntRange(min=1), default=10, show_default=True, help="Videos to list a query."
)
@click.option(
    "--json",
    "as_json",
    is_flag=True,
    help="Print a JSON list of {query, rank, path, score}, by query then rank.",
)
@click.option(
    "--html",
    "html_path",
    type=click.Path(dir_okay=False),
    default=None,
    help="Also write a results page (keyframes, scores, players; open it from disk in a browser).",
)
@click.option(
    "--model",
    default=None,
    help="Model to encode the queries [default: the index's]; refused if it is not the index's.",
)
@click.option(
    "--clip-weights", default=None, help="CLIP weights of a named/config model [default: the index's]."
)
@click.option("--device", default="auto", show_default=True, help="cpu, cuda, cuda:N, or auto.")
@click.option(
    "--backend", type=BACKEND_CHOICE, default="torch", show_default=True, help="What runs the model."
)
def search(queries, index_path, top_k, as_json, html_path, model, clip_weights, device, backend) -> None:
    """Find the videos of an index that best match each text QUERY (cosine similarity).

    Several queries are encoded in one model call. Paths are relative to the folder that was encoded.
    --html writes one HTML page (relative links to the index's thumbnails and to the videos, so it
    works from disk); hits without thumbnails get them made.

    \b
    Example:
      muse-infer search "a dog catches a frisbee" --index emb.npy --top-k 5
      muse-infer search "a cat" "a red car" --index emb.npy --json
      muse-infer search "a cat" "a red car" --index emb.npy --html results.html
    """
    import json

    from ..encoders import TextEncoder
    from ..errors import BackendError
    from ..index import EmbeddingIndex

    index = EmbeddingIndex.load(index_path)
    source = index.model_source
    weights = clip_weights if clip_weights is not None or model is not None else source.get("clip_weights")
    try:
        encoder = TextEncoder(model or source["model"], device=device, backend=backend, clip_weights=weights)
        hits = index.search_batch(list(queries), top_k, text_encoder=encoder)
    except BackendError as error:
        hint = "" if model else "; if the index's model moved, pass --model with its new location"
        raise UserError(f"{error}{hint}") from None
    if html_path:
        from ..web.page import save_results_page

        written = save_results_page(html_path, index, index_path, list(queries), hits)
        click.echo(f"results page: {written} (open it in a browser)", err=True)
    if as_json:
        rows = [
            {"query": q, **hit.to_dict()} for q, results in zip(queries, hits, strict=True) for hit in results
        ]
        click.echo(json.dumps(rows, indent=1))
        return
    for query, results in zip(queries, hits, strict=True):
        click.echo(f"{query}")
        for hit in results:
            click.echo(f"  {hit.rank:>3}  {hit.score:+.4f}  {hit.path}")
        if not results:
            click.echo("  (the index is empty)")
