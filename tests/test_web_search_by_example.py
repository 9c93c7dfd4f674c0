"""The service's search by example, filters and pages: ``GET /api/search?like=ROW``, filters as query
parameters, pagination over one ranking, ``POST /api/search`` with an uploaded image or clip (413 over
the size limit, 400 for anything that is not media or is a URL, decoded in a process of its own with a
timeout, never fetching a URL: a local HTTP server sees no request), token rules, and the page's "more
like this" button in Chromium."""

from __future__ import annotations

import http.server
import json
import socket
import sys
import threading
from pathlib import Path
from types import SimpleNamespace
from urllib.parse import urlsplit

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).parent))
sys.path.insert(0, str(Path(__file__).parents[1] / "benchmarks"))
from bench_serve import start_server, stop_server  # noqa: E402
from web_corpus import HOSTILE_NAME, ODD_NAME  # noqa: E402

pytest.importorskip("starlette", reason='needs the web extra: pip install "muse-infer[web]"')
from starlette.testclient import TestClient  # noqa: E402

from muse_infer.index import IndexFiles, RowQuery, SearchFilter  # noqa: E402
from muse_infer.video.thumbnails import ThumbnailStore  # noqa: E402
from muse_infer.web.app import create_app  # noqa: E402

TOKEN = "correct-horse-battery-staple-42"


@pytest.fixture(scope="module")
def demo(demo_corpus, tmp_path_factory):
    from PIL import Image

    from muse_infer import EmbeddingIndex, TextEncoder, VideoEncoder
    from muse_infer.data.writer import write_video

    index = EmbeddingIndex.load(demo_corpus.index)
    encoder = TextEncoder.for_index(index, device="cpu")
    folder = tmp_path_factory.mktemp("uploads")
    import av

    with av.open(str(demo_corpus.root / "clip_2.mp4")) as container:
        frames = np.stack([f.to_ndarray(format="rgb24") for f in container.decode(video=0)])
    small = np.stack([np.asarray(Image.fromarray(f).resize((132, 132))) for f in frames])
    clip = folder / "copy.webm"
    write_video(clip, small, 2.0)
    image = folder / "key.jpg"
    Image.fromarray(frames[0]).save(image)
    return SimpleNamespace(
        corpus=demo_corpus,
        index=index,
        encoder=encoder,
        video=VideoEncoder(encoder.backend),
        store=ThumbnailStore(IndexFiles.of(demo_corpus.index).thumbs),
        clip=clip,
        image=image,
    )


def client_for(demo, token=None, **options) -> TestClient:
    app = create_app(demo.index, demo.encoder, demo.corpus.root, token, thumbnails=demo.store, **options)
    return TestClient(app)


@pytest.fixture(scope="module")
def client(demo):
    return client_for(demo)


def error_of(response, status: int) -> str:
    assert response.status_code == status, (response.status_code, response.text[:300])
    assert response.headers["content-type"].startswith("application/json")
    return response.json()["error"]


def test_like_a_row_with_filters_as_the_sdk_searches(demo, client):
    row = demo.index.paths.index(HOSTILE_NAME)
    body = client.get("/api/search", params={"like": row, "k": 3}).json()
    expected = demo.index.search(RowQuery(row), top_k=3)
    assert body["like"] == row and body["query"] == f"like row {row}"
    assert [(r["path"], r["rank"]) for r in body["results"]] == [(e.path, e.rank) for e in expected]
    assert body["results"][0]["path"] == HOSTILE_NAME and body["results"][0]["score"] == pytest.approx(1.0)
    caption = demo.corpus.captions["clip_1.mp4"]
    params = [("q", caption), ("k", "7"), ("under", "odd names"), ("under", "."), ("min_duration", "5.5")]
    body = client.get("/api/search", params=params + [("max_duration", "6.5"), ("min_score", "-1")]).json()
    filters = SearchFilter.make(under=["odd names", "."], min_duration=5.5, max_duration=6.5, min_score=-1)
    sdk = demo.index.search(caption, 7, text_encoder=demo.encoder, filters=filters)
    assert [r["path"] for r in body["results"]] == [h.path for h in sdk] and body["filters"]
    only = client.get("/api/search", params={"q": caption, "under": "odd names"}).json()["results"]
    assert [r["path"] for r in only] == [ODD_NAME]
    assert client.get("/api/search", params={"like": row, "min_duration": "60"}).json()["total"] == 0
    assert (
        client.get("/api/search", params={"like": row, "modified_after": "2999-01-01"}).json()["total"] == 0
    )


@pytest.mark.parametrize(
    "params",
    [
        {"like": "abc"},
        {"like": "1", "q": "a cat"},
        {"like": "-1"},
        {"q": "a", "min_duration": "-5"},
        {"q": "a", "min_duration": "1e3"},
        {"q": "a", "max_duration": "nan"},
        {"q": "a", "min_score": "2.5"},
        {"q": "a", "modified_after": "yesterday"},
        {"q": "a", "modified_before": "2024-13-01"},
        {"q": "a", "under": "../outside"},
        {"q": "a", "under": "/etc"},
        {"q": "a", "offset": "-1"},
        {"q": "a", "offset": "95", "k": "10"},
        {"q": "a", "offset": "x"},
        {"q": "a", "url": "http://127.0.0.1:1/clip.mp4"},
        {"q": "http://127.0.0.1:1/clip.mp4"},
    ],
)
def test_bad_parameters_get_a_clear_400(client, params):
    assert error_of(client.get("/api/search", params=params), 400)


def test_pages_are_slices_of_one_ranking(client, demo):
    caption = demo.corpus.captions["clip_4.mp4"]
    whole = client.get("/api/search", params={"q": caption, "k": 7}).json()
    pages, offset = [], 0
    while offset is not None:
        page = client.get("/api/search", params={"q": caption, "k": 2, "offset": offset}).json()
        assert page["total"] == 7 and page["offset"] == offset
        pages += page["results"]
        offset = page["next_offset"]
    assert pages == whole["results"] and [r["rank"] for r in pages] == list(range(1, 8))
    like = client.get("/api/search", params={"like": 0, "k": 3, "offset": 3}).json()
    assert [r["rank"] for r in like["results"]] == [4, 5, 6] and like["next_offset"] == 6


def test_an_uploaded_clip_or_image_is_searched(client, demo):
    data = demo.clip.read_bytes()
    body = client.post("/api/search?k=3", content=data, headers={"content-type": "video/webm"}).json()
    assert body["results"][0]["path"] == "clip_2.mp4" and body["like"] == "upload"
    expected = demo.index.search(demo.clip, 3, video_encoder=demo.video)
    np.testing.assert_allclose([r["score"] for r in body["results"]], [h.score for h in expected], atol=1e-6)
    form = client.post("/api/search?k=3", files={"file": ("key.jpg", demo.image.read_bytes(), "image/jpeg")})
    assert "clip_2.mp4" in [r["path"] for r in form.json()["results"]]
    paged = client.post("/api/search?k=2&offset=2", content=data).json()  # the same ranking, page 2
    assert paged["results"] == body["results"][2:3] + [paged["results"][1]] and paged["offset"] == 2
    only = client.post("/api/search?k=5&under=odd%20names", content=data).json()["results"]
    assert [r["path"] for r in only] == [ODD_NAME]


class Recorder(http.server.BaseHTTPRequestHandler):
    """A local HTTP server's handler that notes every request (none must come)."""

    seen: list[str] = []

    def do_GET(self):  # noqa: N802
        Recorder.seen.append(self.path)
        self.send_response(200)
        self.end_headers()
        self.wfile.write(b"\x1aE\xdf\xa3" + b"\x00" * 64)

    def log_message(self, *args):
        pass


@pytest.fixture(scope="module")
def listener():
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Recorder)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def test_uploads_that_are_not_media_or_are_urls_get_400_and_no_url_is_fetched(demo, listener):
    client = client_for(demo, max_upload_bytes=200_000)
    url = f"{listener}/clip.webm"
    playlist = f"#EXTM3U\n#EXT-X-TARGETDURATION:2\n#EXTINF:2,\n{url}\n#EXT-X-ENDLIST\n".encode()
    concat = f"ffconcat version 1.0\nfile '{url}'\n".encode()
    cases = [
        (b"", {}),
        (url.encode(), {}),
        (b"  " + url.encode() + b"\n", {"content-type": "text/uri-list"}),
        (json.dumps({"url": url}).encode(), {"content-type": "application/json"}),
        (f"url={url}".encode(), {"content-type": "application/x-www-form-urlencoded"}),
        (playlist, {"content-type": "application/vnd.apple.mpegurl"}),
        (concat, {}),
        (b"<html><body>not a video</body></html>", {"content-type": "text/html"}),
        (b"\x00" * 5000, {}),
        (b"\x1aE\xdf\xa3" + b"\x00" * 5000, {"content-type": "video/webm"}),  # a header, then nothing
        (b"\xff\xd8\xff" + b"garbage" * 100, {"content-type": "image/jpeg"}),
    ]
    for body, headers in cases:
        error_of(client.post("/api/search", content=body, headers=headers), 400)
    form = client.post("/api/search", data={"url": url}, files={"note": ("a.txt", b"hello", "text/plain")})
    assert "URL" in error_of(form, 400)
    assert "URL" in error_of(client.post(f"/api/search?url={url}", content=demo.clip.read_bytes()), 400)
    assert Recorder.seen == []


def test_upload_size_limit_and_decoding_timeout(demo):
    client = client_for(demo, max_upload_bytes=50_000, upload_timeout=0.001)
    big = b"\xff\xd8\xff" + b"\x00" * 60_000
    assert "larger than" in error_of(client.post("/api/search", content=big), 413)

    def streamed():  # no Content-Length: refused once the limit is passed
        for _ in range(20):
            yield b"\x00" * 10_000

    error_of(client.post("/api/search", content=streamed()), 413)
    small = demo.image.read_bytes()
    assert len(small) < 50_000
    assert "within" in error_of(client.post("/api/search", content=small), 400)  # killed after the timeout


def test_uploads_need_the_token_like_every_route(demo):
    client = client_for(demo, token=TOKEN)
    data = demo.image.read_bytes()
    error_of(client.post("/api/search", content=data), 401)
    error_of(client.get("/api/search", params={"like": 0}), 401)
    good = {"authorization": f"Bearer {TOKEN}"}
    assert client.post("/api/search", content=data, headers=good).status_code == 200


def test_a_huge_declared_upload_is_refused_before_its_body_over_the_wire(demo_corpus):
    process, url = start_server(demo_corpus.index)
    try:
        address = urlsplit(url)
        with socket.create_connection((address.hostname, address.port), timeout=30) as connection:
            connection.sendall(
                b"POST /api/search HTTP/1.1\r\nHost: "
                + address.netloc.encode()
                + b"\r\nContent-Type: video/mp4\r\nContent-Length: 10000000000\r\n\r\n"
                + b"\x00" * 1000
            )
            response = connection.recv(65536)
        assert response.startswith(b"HTTP/1.1 413"), response[:200]
    finally:
        stop_server(process)


def test_more_like_this_on_the_search_page(demo_corpus, browser):
    process, url = start_server(demo_corpus.index)
    try:
        page = browser.page(width=1280, height=900)
        caption = demo_corpus.captions["clip_3.mp4"]
        page.goto(url + "?q=" + caption.replace(" ", "+") + "&k=3")
        page.wait_for("document.body.dataset.ready === 'true' && document.querySelectorAll('.card').length")
        row = page.evaluate("document.querySelector('.card').dataset.row")
        page.evaluate("document.querySelector('.card button.more-like').click()")
        heading = page.wait_for(
            "location.search.includes('like=') && document.body.dataset.ready === 'true' && "
            "document.querySelector('section.query .query-text').textContent"
        )
        assert heading == f"like row {row}" and f"like={row}" in page.evaluate("location.search")
        first = page.evaluate("document.querySelector('.card').dataset.row")
        assert first == row  # the row itself comes first
        page.evaluate("document.querySelector('button.more-results').click()")
        ranks = page.wait_for(
            "document.querySelectorAll('.card').length === 6 && Array.from(document.querySelectorAll('.card'))"
            ".map((c) => +c.dataset.rank)"
        )
        assert ranks == [1, 2, 3, 4, 5, 6]
        assert page.exceptions == [] and page.console_errors == []
    finally:
        stop_server(process)
