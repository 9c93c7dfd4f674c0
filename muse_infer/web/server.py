"""Run the search service with uvicorn: the bind rules, the socket, and a clean stop on Ctrl-C.

Why Starlette on uvicorn: the service needs a handful of routes, file responses with HTTP Range
(video seeking) and a thread pool for the model; Starlette is a small, maintained ASGI toolkit that
does exactly that (FastAPI is built on it and would add pydantic and OpenAPI generation this service
does not use), and uvicorn is the standard ASGI server, stopping gracefully on SIGINT/SIGTERM.

Bind rules: loopback (127.0.0.1) by default. Any other address makes the service reachable from
other machines, so it is refused unless a token is set (``ServeError``, exit status 2), and then
every request must carry it. A loopback service answers only Host headers naming loopback.
"""

from __future__ import annotations

import ipaddress
import logging
import os
import socket

from ..errors import ServeError
from .security import LOOPBACK_HOSTS

logger = logging.getLogger(__name__)
DEFAULT_HOST, DEFAULT_PORT = "127.0.0.1", 8000
WEAK_TOKEN_CHARS = 16


def is_loopback(host: str) -> bool:
    """Whether ``host`` (an address or "localhost") binds loopback only; other names count as public."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def check_bind(host: str, token: str | None) -> None:
    """Refuse a non-loopback bind without a token, naming the fix (``ServeError``)."""
    if not is_loopback(host) and not token:
        raise ServeError(
            f"--host {host} makes the service reachable from other machines; it then needs a token: "
            "add --token (or set MUSE_INFER_TOKEN), e.g. --token \"$(python -c 'import secrets; "
            "print(secrets.token_urlsafe(24))')\", or keep the default --host 127.0.0.1"
        )
    if token and len(token) < WEAK_TOKEN_CHARS:
        logger.warning(
            "the token has %d characters; use %d or more random ones", len(token), WEAK_TOKEN_CHARS
        )


def allowed_hosts(host: str) -> set[str] | None:
    """Host header names a loopback service answers (None: any, for a public bind guarded by its token)."""
    if not is_loopback(host):
        return None
    bare = host.strip("[]").lower()
    return set(LOOPBACK_HOSTS) | {f"[{bare}]" if ":" in bare else bare}


def bind_socket(host: str, port: int) -> socket.socket:
    """A listening TCP socket on (host, port); port 0 picks a free one. ``ServeError`` when it cannot."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as error:
        raise ServeError(f"--host {host}: not an address of this machine ({error.strerror})") from None
    family, kind, protocol, _, address = infos[0]
    sock = socket.socket(family, kind, protocol)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        sock.listen(2048)
    except OSError as error:
        sock.close()
        hint = "; pick another --port (0 picks a free one)" if error.errno == 98 else ""
        raise ServeError(f"cannot listen on {host}:{port}: {error.strerror}{hint}") from None
    sock.set_inheritable(True)
    return sock


def url_of(sock: socket.socket) -> str:
    """http://HOST:PORT/ of a bound socket (IPv6 in brackets)."""
    host, port = sock.getsockname()[:2]
    return f"http://[{host}]:{port}/" if ":" in host else f"http://{host}:{port}/"


def run(app, sock: socket.socket, log_level: str = "warning", access_log: bool = False) -> None:
    """Serve ``app`` on ``sock`` until SIGINT/SIGTERM (uvicorn's own handlers: open requests finish).

    Returns normally after Ctrl-C: uvicorn raises the SIGINT again once it has shut down, which is
    the stop the user asked for, not an error.
    """
    import uvicorn

    config = uvicorn.Config(
        app,
        log_level=log_level,
        access_log=access_log,
        proxy_headers=False,  # no proxy in front by default: never trust X-Forwarded-* from clients
        http="h11",
        # Read request heads up to 1 MiB (h11's default is 16 KiB), so an oversized query gets the app's
        # clear 400 instead of a dropped connection; the app allows 1000 characters.
        h11_max_incomplete_event_size=1 << 20,
        server_header=False,
        timeout_graceful_shutdown=5,
        lifespan="off",
    )
    try:
        uvicorn.Server(config).run(sockets=[sock])
    except KeyboardInterrupt:
        pass
    finally:
        sock.close()


def open_index_service(
    index_path: str | os.PathLike,
    token: str | None = None,
    host: str = DEFAULT_HOST,
    port: int = DEFAULT_PORT,
    text_encoder=None,
    model_options: dict | None = None,
):
    """(app, socket) serving ``index_path``: the checks first, then the model (loaded once), then the bind.

    text_encoder: the index's own model when None (``TextEncoder.for_index`` with ``model_options``:
    model, clip_weights, device, backend, precision, as ``muse-infer search`` takes them).
    """
    from . import require_web_extra

    check_bind(host, token)
    require_web_extra()
    from ..encoders import TextEncoder
    from ..index import EmbeddingIndex, IndexFiles, ann_read_meanwhile
    from ..video.thumbnails import ThumbnailStore
    from .app import create_app

    index = EmbeddingIndex.load(index_path)
    root = index.root
    if root is None or not root.is_dir():
        raise ServeError(
            f"{index_path}: the folder it indexes ({root}) is not there; the service serves videos from it"
        )
    with ann_read_meanwhile(index):  # the ANN file is read while the model loads
        encoder = text_encoder or TextEncoder.for_index(index, **(model_options or {}))
    sock = bind_socket(host, port)
    app = create_app(
        index,
        encoder,
        root,
        token,
        thumbnails=ThumbnailStore(IndexFiles.of(index_path).thumbs),
        allowed_hosts=allowed_hosts(host),
        index_name=os.path.basename(index_path),
    )
    return app, sock
