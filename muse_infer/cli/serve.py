"""`muse-infer serve`: a thin wrapper over ``muse_infer.web.server`` (checks, model, bind, run)."""

from __future__ import annotations

import click

from .common import query_model_options


@click.command("serve")
@click.option(
    "--index", "index_path", required=True, type=click.Path(), help="The index (.npy or its .json sidecar)."
)
@click.option(
    "--host",
    default="127.0.0.1",
    show_default=True,
    help="Address to listen on. Anything but loopback needs --token.",
)
@click.option(
    "--port", type=click.IntRange(0, 65535), default=8000, show_default=True, help="Port (0: a free one)."
)
@click.option(
    "--token",
    envvar="MUSE_INFER_TOKEN",
    default=None,
    help="Require this bearer token on every request [env: MUSE_INFER_TOKEN]; needed off loopback.",
)
@click.option("--log-requests", is_flag=True, help="Log every request (uvicorn's access log).")
@query_model_options
def serve(
    index_path, host, port, token, log_requests, model, clip_weights, tokenizer, device, backend, precision
) -> None:
    """Serve a search page and a JSON API over an index, until Ctrl-C.

    The model is loaded once at start. Videos and keyframes are served by row number only, and only
    from inside the folder that was indexed (symlinks that lead out are refused). The service listens
    on loopback unless --host says otherwise; a non-loopback --host is refused without --token, and
    with one every request must send "Authorization: Bearer TOKEN" (the page asks for it once and
    keeps a session cookie). API: GET /api/search?q=TEXT&k=10 (k <= 100, q <= 1000 characters), or
    ?like=ROW (more like a row: no model call); &offset=N pages through one ranking; the filters of
    `muse-infer search` as parameters (under, min_duration, max_duration, modified_after,
    modified_before, min_score); POST /api/search with an image or short clip as the body (at most
    32 MiB, decoded in a process of its own with a timeout; a URL is never fetched).
    The model options mean what they mean for `muse-infer search`: the index's own model by default.

    \b
    Example:
      muse-infer serve --index emb.npy                       # http://127.0.0.1:8000/
      muse-infer serve --index emb.npy --port 0 --log-requests
      muse-infer serve --index emb.npy --device cpu --precision fp32
      MUSE_INFER_TOKEN=... muse-infer serve --index emb.npy --host 0.0.0.0 --port 8080
      curl -H "Authorization: Bearer $MUSE_INFER_TOKEN" "http://HOST:8080/api/search?q=a+cat&k=5"
      curl --data-binary @photo.jpg "http://127.0.0.1:8000/api/search?k=5&min_duration=60"
    """
    from ..web.server import open_index_service, run, url_of

    choices = dict(
        model=model, clip_weights=clip_weights, device=device, backend=backend, precision=precision
    )
    choices |= {"tokenizer": tokenizer}
    app, sock = open_index_service(index_path, token=token, host=host, port=port, model_options=choices)
    guarded = " (token required)" if token else ""
    click.echo(f"serving {index_path} at {url_of(sock)}{guarded}; Ctrl-C stops", err=True)
    run(app, sock, log_level="info" if log_requests else "warning", access_log=log_requests)
    click.echo("stopped", err=True)
