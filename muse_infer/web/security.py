"""The search service's guards: who may ask (token, Host), what it answers with (headers), which files it serves.

- Token: with one set, every request but the login page's two assets must carry
  ``Authorization: Bearer TOKEN`` or the session cookie that ``POST /api/session`` (itself
  authenticated by the bearer token) sets for browsers, whose ``<img>`` and ``<video>`` cannot send
  headers. Both are compared in constant time (``hmac.compare_digest``); the cookie holds an HMAC of
  the token, not the token, and is ``HttpOnly; SameSite=Strict``.
- Host: a loopback service answers only requests whose Host header names a loopback address, so a
  web page cannot reach it by pointing its own domain at 127.0.0.1 (DNS rebinding).
- Headers: a strict Content-Security-Policy (scripts, styles, images, media from this origin only;
  no frames), ``X-Content-Type-Options: nosniff``, no referrer, and
  ``Cross-Origin-Resource-Policy: same-origin`` (another site cannot even embed our images or
  videos). No CORS headers at all: other origins cannot read the API.
- Files: ``file_under`` resolves a path (symlinks included) and accepts it only when the real
  path lies inside the given folder (``Path.is_relative_to`` on resolved paths, not string prefixes).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
from collections.abc import Iterable
from pathlib import Path

SESSION_COOKIE = "muse_session"
PUBLIC_PATHS = frozenset(
    {"/static/style.css", "/static/login.js", "/favicon.ico"}
)  # what the login page needs
LOOPBACK_HOSTS = frozenset({"127.0.0.1", "localhost", "[::1]"})
CONTENT_SECURITY_POLICY = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; media-src 'self'; "
    "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)
SECURITY_HEADERS = [
    (b"content-security-policy", CONTENT_SECURITY_POLICY.encode()),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
    (b"x-frame-options", b"DENY"),
    (b"cross-origin-resource-policy", b"same-origin"),
]


def session_value(token: str) -> str:
    """The session cookie's value for ``token``: an HMAC of it, so the cookie never holds the token."""
    return hmac.new(token.encode(), b"muse-infer session v1", hashlib.sha256).hexdigest()


def session_cookie(token: str) -> str:
    """A Set-Cookie header value for the session."""
    return f"{SESSION_COOKIE}={session_value(token)}; HttpOnly; SameSite=Strict; Path=/"


def host_name(header: str) -> str:
    """The host part of a Host header, lower-case: "127.0.0.1:8000" -> "127.0.0.1", "[::1]:80" -> "[::1]"."""
    header = header.strip().lower()
    if header.startswith("["):
        return header[: header.find("]") + 1] if "]" in header else header
    return header.split(":", 1)[0]


def file_under(folder: Path, relative: str | os.PathLike) -> Path | None:
    """The real path of ``folder / relative`` if it is an existing regular file inside ``folder``
    (itself already resolved), after following every symlink; None otherwise.

    An absolute ``relative`` replaces ``folder`` in the join and then fails the containment check,
    as do "..", symlinks leading out, NUL bytes and names the OS rejects.
    """
    text = os.fspath(relative)
    if "\0" in text:
        return None
    try:
        real = (folder / text).resolve(strict=True)
        return real if real.is_relative_to(folder) and real.is_file() else None
    except (OSError, RuntimeError, ValueError):  # missing, a symlink loop, an unusable name
        return None


class Guard:
    """ASGI middleware: Host check, token check, security headers on every response."""

    def __init__(self, app, token: str | None, allowed_hosts: Iterable[str] | None, login_page: bytes):
        self.app, self.token, self.login_page = app, token, login_page
        self.allowed_hosts = None if allowed_hosts is None else {h.lower() for h in allowed_hosts}
        self.session = session_value(token) if token else None

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        headers = _headers(scope)

        async def send_with_headers(message):
            if message["type"] == "http.response.start":
                message = {**message, "headers": [*message.get("headers", []), *SECURITY_HEADERS]}
            await send(message)

        if self.allowed_hosts is not None and host_name(headers.get("host", "")) not in self.allowed_hosts:
            reason = "the Host header names no address of this loopback service (DNS rebinding?)"
            return await _json(send_with_headers, 400, reason)
        if self.token and scope["path"] not in PUBLIC_PATHS and not self._authorised(headers):
            return await self._refuse(scope, send_with_headers)
        return await self.app(scope, receive, send_with_headers)

    def _authorised(self, headers: dict[str, str]) -> bool:
        scheme, _, given = headers.get("authorization", "").partition(" ")
        if scheme.lower() == "bearer" and hmac.compare_digest(given.strip().encode(), self.token.encode()):
            return True
        cookie = _cookie(headers.get("cookie", ""), SESSION_COOKIE)
        return cookie is not None and hmac.compare_digest(cookie.encode(), self.session.encode())

    async def _refuse(self, scope, send) -> None:
        challenge = (b"www-authenticate", b'Bearer realm="muse-infer"')
        if scope["path"] == "/" and scope["method"] in ("GET", "HEAD"):
            headers = [
                (b"content-type", b"text/html; charset=utf-8"),
                challenge,
                (b"cache-control", b"no-store"),
            ]
            await send({"type": "http.response.start", "status": 401, "headers": headers})
            await send({"type": "http.response.body", "body": self.login_page})
            return
        await _json(
            send, 401, "this service needs its token: send 'Authorization: Bearer TOKEN'", [challenge]
        )


def _headers(scope) -> dict[str, str]:
    return {name.decode("latin-1").lower(): value.decode("latin-1") for name, value in scope["headers"]}


def _cookie(header: str, name: str) -> str | None:
    for part in header.split(";"):
        key, _, value = part.strip().partition("=")
        if key == name:
            return value
    return None


async def _json(send, status: int, message: str, extra_headers=()) -> None:
    body = json.dumps({"error": message, "status": status}).encode()
    headers = [(b"content-type", b"application/json"), (b"cache-control", b"no-store"), *extra_headers]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
