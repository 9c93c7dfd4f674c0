"""`muse-infer serve`: the JSON API, its limits and guards, path traversal, a load test, and the page in Chromium.

Three levels: the app built by ``create_app`` and driven by Starlette's TestClient (no server); a
crafted index whose rows name files outside its folder; and the real command in a subprocess on a
free loopback port, attacked with raw HTTP requests (sent byte for byte: no client normalises the
path), loaded with 200 requests from 8 clients, shown in headless Chromium, and stopped with Ctrl-C.
"""

from __future__ import annotations

import hashlib
import os
import socket
import sys
from pathlib import Path
from types import SimpleNamespace
from urllib.parse import urlsplit

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).parent))
sys.path.insert(0, str(Path(__file__).parents[1] / "benchmarks"))
from bench_serve import load_test, start_server, stop_server  # noqa: E402
from chromium import keep_screenshot  # noqa: E402
from video_factory import make_video  # noqa: E402
from web_corpus import HOSTILE_NAME, ODD_NAME  # noqa: E402

from muse_infer.index import IndexFiles  # noqa: E402
from muse_infer.video.thumbnails import ThumbnailSource, ThumbnailStore, thumbnail_sources  # noqa: E402

pytest.importorskip("starlette", reason='needs the web extra: pip install "muse-infer[web]"')
from starlette.testclient import TestClient  # noqa: E402

from muse_infer.web.app import create_app  # noqa: E402
from muse_infer.web.page import media_fragment, time_range  # noqa: E402
from muse_infer.web.server import allowed_hosts, is_loopback  # noqa: E402

TOKEN = "correct-horse-battery-staple-42"
SECRET = b"TOP-SECRET-MARKER"
PASSWD = b"root:x:0:"


@pytest.fixture(scope="module")
def demo(demo_corpus):
    from muse_infer import EmbeddingIndex, TextEncoder

    index = EmbeddingIndex.load(demo_corpus.index)
    return SimpleNamespace(
        corpus=demo_corpus,
        index=index,
        encoder=TextEncoder.for_index(index, device="cpu"),
        store=ThumbnailStore(IndexFiles.of(demo_corpus.index).thumbs),
    )


def client_for(demo, token=None, **options) -> TestClient:
    app = create_app(demo.index, demo.encoder, demo.corpus.root, token, thumbnails=demo.store, **options)
    return TestClient(app)


@pytest.fixture(scope="module")
def client(demo):
    return client_for(demo)


def assert_json_error(response, status: int) -> None:
    assert response.status_code == status, (response.status_code, response.text[:300])
    assert response.headers["content-type"].startswith("application/json")
    assert response.json()["status"] == status and response.json()["error"]


# --- the API --------------------------------------------------------------------------------------


def test_search_matches_the_sdk_and_links_by_row(demo, client):
    caption = demo.corpus.captions[HOSTILE_NAME]
    body = client.get("/api/search", params={"q": caption, "k": 5}).json()
    expected = demo.index.search(caption, top_k=5, text_encoder=demo.encoder)
    assert [(r["path"], r["rank"]) for r in body["results"]] == [(e.path, e.rank) for e in expected]
    np.testing.assert_allclose([r["score"] for r in body["results"]], [e.score for e in expected], atol=1e-6)
    first = body["results"][0]
    assert first["path"] == HOSTILE_NAME and first["start_s"] is None and first["end_s"] is None
    row = demo.index.paths.index(HOSTILE_NAME)
    assert first["media"] == f"/media/{row}" and first["thumbnails"] == [
        f"/thumbs/{row}/{n}" for n in range(3)
    ]
    info = client.get("/api/info").json()
    assert {k: v for k, v in info.items() if k != "caution"} == {
        "index": "", "rows": 7, "model": "demo", "max_k": 100, "max_query_chars": 1000
    }  # fmt: skip
    assert "packaged 'demo' model" in info["caution"]


@pytest.mark.parametrize(
    "params",
    [
        {},
        {"q": ""},
        {"q": "   "},
        {"q": "x" * 1001},
        {"q": "a", "k": "0"},
        {"q": "a", "k": "101"},
        {"q": "a", "k": "-1"},
    ]
    + [{"q": "a", "k": k} for k in ("abc", "1e3", "5.0", " 5", "+5", "5_0", "99999999999", "")],
)
def test_bad_queries_get_a_clear_400(client, params):
    assert_json_error(client.get("/api/search", params=params), 400)


def test_limits_hold_at_their_edges(client):
    assert client.get("/api/search", params={"q": "x" * 1000, "k": "100"}).json()["k"] == 100
    assert len(client.get("/api/search", params={"q": "a", "k": "100"}).json()["results"]) == 7  # all rows


def test_errors_are_json_and_nothing_else_is_routed(client):
    assert_json_error(client.get("/nowhere"), 404)
    assert_json_error(client.put("/api/search?q=a"), 405)
    assert_json_error(client.post("/api/search?q=a"), 400)  # a search by upload, without a file
    assert_json_error(client.get("/static/app.py"), 404)


def test_no_cors_and_strict_headers(client):
    evil = {"origin": "https://evil.example", "access-control-request-method": "GET"}
    for response in (
        client.get("/api/search?q=a", headers=evil),
        client.options("/api/search", headers=evil),
    ):
        assert not [h for h in response.headers if h.lower().startswith("access-control-")]
    headers = client.get("/").headers
    assert "script-src 'self'" in headers["content-security-policy"]
    assert "frame-ancestors 'none'" in headers["content-security-policy"]
    assert (
        headers["x-content-type-options"] == "nosniff"
        and headers["cross-origin-resource-policy"] == "same-origin"
    )


def test_media_answers_range_requests(demo, client):
    row = demo.index.paths.index(ODD_NAME)
    data = (demo.corpus.root / ODD_NAME).read_bytes()
    whole = client.get(f"/media/{row}")
    assert whole.status_code == 200 and whole.content == data
    assert whole.headers["content-type"] == "video/webm" and whole.headers["accept-ranges"] == "bytes"
    part = client.get(f"/media/{row}", headers={"range": "bytes=100-1099"})
    assert part.status_code == 206 and part.content == data[100:1100]
    assert part.headers["content-range"] == f"bytes 100-1099/{len(data)}"
    assert client.get(f"/media/{row}", headers={"range": f"bytes={len(data) + 5}-"}).status_code == 416


def test_thumbnails_are_served_and_made_again_when_missing(demo, client):
    row = demo.index.paths.index("clip_3.mp4")
    stats = (demo.index.rows.column(name)[row].as_py() for name in ("size", "mtime_ns"))
    source = ThumbnailSource("clip_3.mp4", *stats)
    for path in demo.store.files(source):
        path.unlink()
    response = client.get(f"/thumbs/{row}/2")
    assert response.status_code == 200 and response.headers["content-type"] == "image/jpeg"
    assert response.content[:2] == b"\xff\xd8" and demo.store.has(source)
    assert_json_error(client.get(f"/thumbs/{row}/3"), 404)


# --- who may ask ----------------------------------------------------------------------------------


def test_token_is_required_on_every_route(demo):
    client = client_for(demo, token=TOKEN)
    routes = ["/api/search?q=a", "/api/info", "/media/0", "/thumbs/0/0", "/static/search.js", "/nowhere"]
    wrong = [
        {},
        {"authorization": "Bearer nope"},
        {"authorization": f"Bearer {TOKEN}x"},
        {"authorization": TOKEN},
    ]
    wrong += [{"authorization": f"Basic {TOKEN}"}, {"cookie": f"muse_session={TOKEN}"}, {"x-token": TOKEN}]
    for route in routes:
        for headers in wrong:
            response = client.get(route, headers=headers)
            assert_json_error(response, 401)
            assert response.headers["www-authenticate"].startswith("Bearer")
    page = client.get("/")
    assert page.status_code == 401 and "token" in page.text and 'id="login-form"' in page.text
    for public in ("/static/style.css", "/static/login.js"):  # what the sign-in page needs
        assert client.get(public).status_code == 200
    good = {"authorization": f"Bearer {TOKEN}"}
    assert client.get("/api/search?q=a", headers=good).status_code == 200
    assert client.get("/media/0", headers=good).status_code == 200


def test_browser_session_cookie(demo):
    client = client_for(demo, token=TOKEN)
    assert client.post("/api/session").status_code == 401
    signed_in = client.post("/api/session", headers={"authorization": f"Bearer {TOKEN}"})
    cookie = signed_in.headers["set-cookie"]
    assert signed_in.status_code == 204 and "HttpOnly" in cookie and "SameSite=Strict" in cookie
    assert TOKEN not in cookie
    assert client.get("/thumbs/0/0").status_code == 200  # the client now sends the cookie
    client.cookies.set("muse_session", "0" * 64)
    assert client.get("/thumbs/0/0").status_code == 401


def test_loopback_service_answers_only_loopback_host_names(demo):
    client = client_for(demo, allowed_hosts=allowed_hosts("127.0.0.1"))
    for host in ("127.0.0.1:8000", "localhost:8000", "[::1]:8000", "LOCALHOST"):
        assert client.get("/api/info", headers={"host": host}).status_code == 200, host
    for host in ("evil.example", "evil.example:8000", "127.0.0.1.evil.example", "", "[::2]:80"):
        assert_json_error(client.get("/api/info", headers={"host": host}), 400)
    assert allowed_hosts("0.0.0.0") is None  # a public bind is guarded by its token instead
    assert [is_loopback(h) for h in ("127.0.0.1", "::1", "[::1]", "localhost", "127.0.0.9")] == [True] * 5
    assert [is_loopback(h) for h in ("0.0.0.0", "::", "192.168.1.5", "example.com", "")] == [False] * 5


# --- files outside the folder ---------------------------------------------------------------------


class FakeIndex:
    """What create_app needs of an index (root, per-row thumbnail sources and files, search by vector),
    holding any paths at all: a real index refuses the hostile ones these tests plant."""

    def __init__(self, paths: list[str], root: Path):
        self.paths = paths
        self.metadata = {"root": str(root), "model_source": {"model": "fake"}}

    start_s = end_s = None  # moments: lists of seconds, as SearchResult will carry them

    @property
    def root(self) -> Path:
        return Path(self.metadata["root"])

    @property
    def thumbnail_sources(self):
        count = len(self.paths)
        return thumbnail_sources(self.paths, [1] * count, [1] * count, self.start_s, self.end_s)

    def absolute_path(self, row: int) -> str:
        return os.path.join(self.metadata["root"], self.paths[row])

    def search(self, vector, top_k=10):
        starts, ends = self.start_s or [None] * len(self.paths), self.end_s or [None] * len(self.paths)
        return [
            SimpleNamespace(rank=i + 1, path=p, score=1.0 - i / 100, row=i, start_s=starts[i], end_s=ends[i])
            for i, p in enumerate(self.paths[:top_k])
        ]


class FakeEncoder:
    def encode(self, texts):
        return np.stack(
            [np.frombuffer(hashlib.sha256(t.encode()).digest()[:32], np.uint8) / 255.0 for t in texts]
        )


def test_info_carries_the_caution_of_the_indexs_model(demo, client, tmp_path):
    from muse_infer.loading.reference import search_caution

    info = client.get("/api/info").json()
    assert info["caution"] == search_caution(demo.index.identity)  # what `search` prints, word for word
    assert "packaged 'demo' model" in info["caution"] and "synthetic" in info["caution"]
    plain = TestClient(create_app(FakeIndex(["a.mp4"], tmp_path), FakeEncoder(), tmp_path))
    assert plain.get("/api/info").json()["caution"] is None  # no model identity: nothing to caution


def test_moments_come_with_their_time_range(tmp_path):
    make_video(tmp_path / "a.mp4", 30, 3.0, size=(48, 64))
    index = FakeIndex(["a.mp4", "a.mp4", "a.mp4"], tmp_path)
    index.start_s, index.end_s = [0.0, 4.0, None], [4.0, 8.0, None]  # two moments and the whole video
    store = ThumbnailStore(tmp_path / "emb.thumbs")
    client = TestClient(create_app(index, FakeEncoder(), tmp_path, thumbnails=store))
    results = client.get("/api/search?q=a&k=3").json()["results"]
    assert [(r["row"], r["start_s"], r["end_s"]) for r in results] == [
        (0, 0.0, 4.0),
        (1, 4.0, 8.0),
        (2, None, None),
    ]
    assert all(client.get(f"/thumbs/{row}/0").status_code == 200 for row in range(3))
    assert (
        len(
            {
                store.files(ThumbnailSource("a.mp4", 1, 1, 4.0, 8.0))[0].read_bytes(),
                store.files(ThumbnailSource("a.mp4", 1, 1))[0].read_bytes(),
            }
        )
        == 2
    )


def test_rows_naming_files_outside_the_folder_are_refused(tmp_path):
    root, outside = tmp_path / "root", tmp_path / "outside"
    (root / "sub").mkdir(parents=True)
    outside.mkdir()
    secret = outside / "secret.mp4"
    secret.write_bytes(SECRET)
    make_video(root / "good.mp4", 6, 3.0, size=(48, 64))
    (root / "leak.mp4").symlink_to(secret)
    (root / "linked").symlink_to(outside, target_is_directory=True)
    (root / "loop.mp4").symlink_to(root / "loop.mp4")
    bad = [
        "../outside/secret.mp4",
        str(secret),
        "leak.mp4",
        "linked/secret.mp4",
        "sub/../../outside/secret.mp4",
    ]
    bad += [
        "..\\outside\\secret.mp4",
        "good.mp4\x00.txt",
        "missing.mp4",
        "sub",
        "/etc/passwd",
        "loop.mp4",
        "",
        ".",
    ]
    index = FakeIndex(["good.mp4", *bad], root)
    store = ThumbnailStore(tmp_path / "emb.thumbs")
    store.folder.mkdir()
    good_source = ThumbnailSource("good.mp4", 1, 1)
    store.make(root / "good.mp4", good_source)
    for row, path in enumerate(index.paths[1:], start=1):  # planted thumbnail files pointing outside
        store.files(ThumbnailSource(path, 1, 1))[0].symlink_to(secret if row % 2 else Path("/etc/passwd"))
    client = TestClient(create_app(index, FakeEncoder(), root, thumbnails=store))
    assert client.get("/media/0").status_code == 200 and client.get("/thumbs/0/0").status_code == 200
    for row, path in enumerate(bad, start=1):
        for route in (f"/media/{row}", f"/thumbs/{row}/0", f"/thumbs/{row}/1"):
            response = client.get(route)
            assert response.status_code == 404, (path, route, response.status_code)
            assert SECRET not in response.content and PASSWD not in response.content
    assert not any(store.has(ThumbnailSource(path, 1, 1)) for path in bad[1:] if path not in ("leak.mp4",))


# --- the real command -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def served(demo_corpus):
    process, url = start_server(demo_corpus.index)
    yield SimpleNamespace(process=process, url=url)
    if process.poll() is None:
        process.kill()
        process.wait()


def raw_request(url: str, target: bytes, extra: bytes = b"") -> tuple[int | None, bytes]:
    """Send ``GET target`` byte for byte on a fresh connection; (status or None, whole response)."""
    address = urlsplit(url)
    with socket.create_connection((address.hostname, address.port), timeout=30) as connection:
        connection.sendall(
            b"GET "
            + target
            + b" HTTP/1.1\r\nHost: "
            + address.netloc.encode()
            + b"\r\nConnection: close\r\n"
            + extra
            + b"\r\n"
        )
        chunks = []
        while chunk := connection.recv(65536):
            chunks.append(chunk)
    response = b"".join(chunks)
    parts = response.split(b" ", 2)
    return (int(parts[1]) if len(parts) > 1 and parts[1].isdigit() else None), response


TRAVERSALS = [
    "../../../../etc/passwd",
    "..%2f..%2f..%2f..%2fetc%2fpasswd",
    "%2e%2e%2f%2e%2e%2f%2e%2e%2fetc%2fpasswd",
    "%2e%2e/%2e%2e/%2e%2e/etc/passwd",
    "%252e%252e%252f%252e%252e%252fetc%252fpasswd",
    "..%252f..%252f..%252fetc%252fpasswd",
    "%25252e%25252e%25252fetc%25252fpasswd",
    "....//....//....//etc/passwd",
    "..;/..;/..;/etc/passwd",
    "%2fetc%2fpasswd",
    "%2F%2Fetc%2Fpasswd",
    "/etc/passwd",
    "//etc/passwd",
    "..\\..\\..\\..\\etc\\passwd",
    "..%5c..%5c..%5c..%5cetc%5cpasswd",
    "%5c%5c..%5cetc%5cpasswd",
    "..%255c..%255cetc%255cpasswd",
    "%c0%ae%c0%ae%c0%afetc%c0%afpasswd",
    "%e0%80%ae%e0%80%ae/etc/passwd",
    "%ef%bc%8e%ef%bc%8e%ef%bc%8fetc%ef%bc%8fpasswd",
    "..%00/etc/passwd",
    "0%00",
    "0%00.mp4",
    "%00",
    "0%2f..%2f..%2fetc%2fpasswd",
    "0/../../../etc/passwd",
    "-1",
    "%2d1",
    "+1",
    "1e3",
    "0x1",
    "1.0",
    "%201",
    "99999999999999999999",
    "4294967296",
    "7",
    "1000000",
    "file:%2f%2f%2fetc%2fpasswd",
    "http:%2f%2fevil.example%2f",
    "%7e",
    ".",
    "..",
    "%2e",
    "%2e%2e",
]
ROUTES = ["/media/{}", "/thumbs/{}/0", "/thumbs/0/{}", "/static/{}", "/thumbs/{}", "/api/{}"]


def test_path_traversal_over_the_wire(served):
    tried = 0
    for route in ROUTES:
        for attack in TRAVERSALS:
            status, response = raw_request(served.url, route.format(attack).encode())
            assert status is not None and 400 <= status < 500, (route.format(attack), response[:200])
            assert PASSWD not in response and b"\xff\xd8" not in response and b"ftyp" not in response
            tried += 1
    for target in (
        b"/media/../../etc/passwd",
        b"/thumbs/0/../../../../etc/passwd",
        b"/media/\x00",
        b"/media/0\\..\\1",
    ):
        status, response = raw_request(served.url, target)
        assert status is not None and 400 <= status < 500 and PASSWD not in response, target
    assert tried == len(ROUTES) * len(TRAVERSALS) > 250


def test_oversized_requests_are_refused(served):
    status, response = raw_request(served.url, b"/api/search?k=5&q=" + b"a" * 1001)
    assert status == 400 and b"at most 1000" in response
    status, response = raw_request(served.url, b"/api/search?q=" + b"a" * 200_000)
    assert status == 400 and b"at most 1000" in response
    status, _ = raw_request(served.url, b"/api/search?q=a&k=5000")
    assert status == 400


def test_default_bind_is_loopback(served):
    from muse_infer.cli.serve import serve

    assert urlsplit(served.url).hostname == "127.0.0.1"
    assert {p.name: p.default for p in serve.params}["host"] == "127.0.0.1"


def test_public_bind_without_token_is_refused():
    import subprocess

    command = [sys.executable, "-c", "from muse_infer.cli import main; main()", "serve", "--index", "x.npy"]
    for host in ("0.0.0.0", "::", "192.168.1.5"):
        result = subprocess.run(
            [*command, "--host", host], capture_output=True, text=True, timeout=120, env=_no_token()
        )
        assert result.returncode == 2, result.stderr
        assert (
            f"Error: --host {host} makes the service reachable" in result.stderr
            and "--token" in result.stderr
        )


def _no_token() -> dict:
    import os

    return {k: v for k, v in os.environ.items() if k != "MUSE_INFER_TOKEN"}


def test_200_requests_from_8_clients_without_an_error(served):
    result = load_test(served.url, requests=200, clients=8)
    assert result.errors == [] and len(result.latencies) == 200, result.errors[:5]
    print("load test:", result.summary())


def test_search_page_in_chromium(served, demo_corpus, browser, tmp_path):
    query = demo_corpus.captions[HOSTILE_NAME]
    page = browser.page(width=1280, height=900)
    page.goto(f"{served.url}/?q={query.replace(' ', '+')}&k=6")
    counts = page.wait_for(
        "document.body.dataset.ready === 'true' && document.querySelectorAll('.card').length && "
        "[document.querySelectorAll('.card').length, +document.body.dataset.imagesLoaded, "
        "+document.body.dataset.imagesFailed]"
    )
    assert counts == [6, 18, 0]
    paths = page.evaluate("Array.from(document.querySelectorAll('.card .path')).map((p) => p.textContent)")
    assert paths[0] == HOSTILE_NAME and ODD_NAME in paths
    assert page.evaluate("document.querySelectorAll('img[src=\"x\"], [onerror]').length") == 0
    assert page.evaluate("document.getElementById('query').value") == query
    caution = page.wait_for(  # filled from /api/info: the demo model's caution, in view
        "!document.getElementById('caution').hidden && document.getElementById('caution').offsetHeight > 0 "
        "&& document.getElementById('caution').textContent"
    )
    assert caution.startswith("Caution: this index was made with the packaged 'demo' model"), caution
    twins = (
        "[mediaFragment(2, 4.5), mediaFragment(0, 1 / 3), mediaFragment(null, null), timeRange(62.5, 3723)]"
    )
    assert page.evaluate(twins) == [  # the page's script formats as the static page's Python does
        media_fragment(2, 4.5),
        media_fragment(0, 1 / 3),
        media_fragment(None, None),
        time_range(62.5, 3723),
    ]
    page.screenshot(tmp_path / "search_service.png")
    keep_screenshot(tmp_path / "search_service.png")
    page.evaluate("document.querySelector('button.play').click()")
    page.wait_for("(() => { const v = document.querySelector('video'); return v.currentTime > 0.5; })()")
    assert page.dialogs == [] and page.exceptions == [] and page.console_errors == []


def test_signing_in_with_the_token_in_chromium(demo_corpus, browser):
    process, url = start_server(demo_corpus.index, "--token", TOKEN)
    try:
        page = browser.page()
        page.goto(f"{url}/?q=a+green+triangle&k=3")
        assert page.evaluate("document.title") == "muse-infer search: token needed"
        page.evaluate(
            "document.getElementById('token').value = 'wrong'; document.getElementById('login-form').requestSubmit()"
        )
        assert (
            page.wait_for("document.getElementById('status').textContent") == "That token was not accepted."
        )
        page.navigating(
            f"document.getElementById('token').value = '{TOKEN}'; document.getElementById('login-form').requestSubmit()"
        )
        counts = page.wait_for(
            "document.body.dataset.ready === 'true' && document.querySelectorAll('.card').length && "
            "[document.querySelectorAll('.card').length, +document.body.dataset.imagesLoaded]"
        )
        assert counts == [3, 9] and page.exceptions == []  # images and videos ride on the session cookie
        assert page.evaluate("document.cookie") == ""  # HttpOnly: scripts cannot read it
    finally:
        assert stop_server(process) == 0


def test_ctrl_c_stops_the_service_cleanly(served):
    assert stop_server(served.process) == 0
    assert any(line.startswith("stopped") for line in served.process.log), served.process.log
    assert not any("Traceback" in line for line in served.process.log), "".join(served.process.log)
