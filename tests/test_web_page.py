"""`muse-infer search --html`: the static results page, checked as text and in headless Chromium from file://.

The browser test opens the page the command wrote and asserts what a person sees: one card a result,
every keyframe image loaded, the hostile file name shown as text (no dialog, no injected element),
players whose links reach the videos. The screenshot it takes is docs/results_page.png (copied when
MUSE_SCREENSHOTS_DIR is set).
"""

from __future__ import annotations

import html
import sys
from html.parser import HTMLParser
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from chromium import keep_screenshot  # noqa: E402
from web_corpus import HOSTILE_NAME, ODD_NAME  # noqa: E402

from muse_infer.index import EmbeddingIndex, RowQuery  # noqa: E402
from muse_infer.web.page import (  # noqa: E402
    PAGE_SCRIPT,
    clock,
    media_fragment,
    relative_url,
    render_results_page,
    time_range,
    write_results_page,
)
from muse_infer.web.rows import Hit, QueryHits  # noqa: E402

HOSTILE_QUERY = '</script><script>alert("query")</script>'


class Elements(HTMLParser):
    """Every start tag of a document with its attributes, and its text."""

    def __init__(self, text: str):
        super().__init__()
        self.tags: list[tuple[str, dict]] = []
        self.text: list[str] = []
        self.feed(text)

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))

    def handle_data(self, data):
        self.text.append(data)

    def named(self, tag: str) -> list[dict]:
        return [attrs for name, attrs in self.tags if name == tag]


def test_relative_urls_fragments_and_clock(tmp_path):
    page_folder = tmp_path / "out"
    video = tmp_path / "videos" / "odd names" / "café #1 ?%.mp4"
    assert relative_url(video, page_folder) == "../videos/odd%20names/caf%C3%A9%20%231%20%3F%25.mp4"
    assert relative_url(tmp_path / "out" / "a.jpg", page_folder) == "a.jpg"
    assert media_fragment(None, None) == "" and media_fragment(2.5, 7.0) == "#t=2.5,7"
    assert media_fragment(0.0, 1 / 3) == "#t=0,0.333" and media_fragment(4.0, None) == "#t=4"
    assert [clock(s) for s in (0, 62.5, 3723)] == ["0:00", "1:02.5", "1:02:03"]
    assert time_range(None, None) == "" and time_range(2.5, 7) == "0:02.5\u20130:07"


def test_page_escapes_every_name_and_query(tmp_path):
    video = tmp_path / "videos" / HOSTILE_NAME
    thumbnail = tmp_path / "emb.thumbs" / "k-0.jpg"
    hit = Hit(1, 0.5, 3, HOSTILE_NAME, video, 1.0, 2.5, (thumbnail,))
    text = render_results_page([QueryHits(HOSTILE_QUERY, [hit])], tmp_path / "results.html")
    parsed = Elements(text)
    assert parsed.named("img") == [
        {
            "class": "keyframe",
            "src": "emb.thumbs/k-0.jpg",
            "alt": f"keyframe 1 of {HOSTILE_NAME}",
            "decoding": "async",
        }
    ]
    assert len(parsed.named("script")) == 1 and text.count("<script>") == 1  # only the page's own
    (player,) = parsed.named("video")
    assert player["src"] == "videos/%3Cimg%20src%3Dx%20onerror%3Dalert%281%29%3E.mp4#t=1,2.5"
    assert HOSTILE_NAME in "".join(parsed.text) and HOSTILE_QUERY in "".join(parsed.text)
    assert html.escape(HOSTILE_NAME) in text and "onerror=alert(1)>" not in text.replace(
        html.escape(HOSTILE_NAME), ""
    )
    policy = next(
        m["content"] for m in parsed.named("meta") if m.get("http-equiv") == "Content-Security-Policy"
    )
    assert "script-src 'sha256-" in policy and "'unsafe-inline'" not in policy


def test_page_lists_queries_without_results_and_hits_without_thumbnails(tmp_path):
    hit = Hit(1, 0.25, 0, "a.mp4", tmp_path / "a.mp4")
    text = render_results_page([QueryHits("first", [hit]), QueryHits("second", [])], tmp_path / "r.html")
    parsed = Elements(text)
    assert [a["href"] for a in parsed.named("a")][:2] == ["#query-1", "#query-2"]
    assert "no thumbnails" in text and "No results." in text and not parsed.named("img")
    assert PAGE_SCRIPT in text
    assert 'class="caution"' not in text  # no caution given, none shown
    warned = render_results_page(
        [QueryHits("first", [hit])], tmp_path / "r.html", caution="<b>x</b> means little"
    )
    assert '<p class="caution" role="note">Caution: &lt;b&gt;x&lt;/b&gt; means little</p>' in warned


def test_page_is_written_atomically(tmp_path, monkeypatch):
    import muse_infer.atomic as atomic

    target = tmp_path / "results.html"
    target.write_text("the previous page")

    def failing_replace(source, destination):
        raise OSError("disk full")

    monkeypatch.setattr(atomic.os, "replace", failing_replace)
    with pytest.raises(OSError):
        write_results_page(target, [QueryHits("q", [])])
    assert target.read_text() == "the previous page" and [p.name for p in tmp_path.iterdir()] == [
        "results.html"
    ]


def invoke(*args):
    from click.testing import CliRunner

    from muse_infer.cli import main

    result = CliRunner().invoke(main, [str(a) for a in args])
    assert result.exit_code == 0, result.output
    return result


WAIT_FOR_METADATA = """Promise.all(Array.from(document.querySelectorAll("video")).map((video) =>
    new Promise((resolve) => {
        video.addEventListener("loadedmetadata", () => resolve({src: video.currentSrc, duration: video.duration,
            time: video.currentTime}), {once: true});
        video.addEventListener("error", () => resolve({src: video.currentSrc, error: video.error.code}), {once: true});
        video.preload = "metadata";
        video.load();
    })))"""


def test_results_page_in_chromium_from_file(demo_corpus, browser, tmp_path):
    captions = demo_corpus.captions
    queries = [captions["clip_2.mp4"], captions[HOSTILE_NAME], captions[ODD_NAME]]
    page_path = tmp_path / "pages" / "results.html"
    result = invoke(
        "search", *queries, HOSTILE_QUERY, "--index", demo_corpus.index, "--top-k", 4, "--html", page_path
    )
    assert f"results page: {page_path}" in result.output

    page = browser.page(width=1280, height=1000)
    page.goto(page_path.as_uri())
    counts = page.wait_for(
        "document.body.dataset.ready === 'true' && [+document.body.dataset.imagesLoaded, "
        "+document.body.dataset.imagesFailed, document.querySelectorAll('img.keyframe').length]"
    )
    assert counts == [4 * 4 * 3, 0, 4 * 4 * 3]  # 4 queries x 4 cards x 3 keyframes, all loaded
    # "more like this": every card lists the 5 other videos most like it (7 in the index), hidden
    # until its button is pressed; the first card's list is its row's search (RowQuery) without it
    lists = page.evaluate(
        "Array.from(document.querySelectorAll('.card')).map((c) => [c.dataset.row, "
        "c.querySelector('button.more-like').textContent, c.querySelector('ol.similar').hidden, "
        "Array.from(c.querySelectorAll('ol.similar li')).map((li) => li.dataset.row)])"
    )
    assert len(lists) == 16 and all(label == "more like this" and hidden for _, label, hidden, _ in lists)
    assert all(len(rows) == 5 and row not in rows for row, _, _, rows in lists)
    expected = [
        str(hit.row) for hit in EmbeddingIndex.load(demo_corpus.index).search(RowQuery(int(lists[0][0])), 6)
    ][1:]
    assert lists[0][3] == expected
    page.evaluate("document.querySelector('.card button.more-like').click()")
    shown = page.wait_for(
        "!document.querySelector('.card ol.similar').hidden && Array.from(document.querySelectorAll("
        "'.card ol.similar')[0].querySelectorAll('img')).map((image) => image.complete && image.naturalWidth > 0)"
    )
    assert shown == [True] * 5
    assert page.evaluate("Array.from(document.images).every((image) => image.naturalWidth > 0)")
    sections = page.evaluate(
        "Array.from(document.querySelectorAll('section.query')).map((s) => [s.dataset.query, "
        "Array.from(s.querySelectorAll('.card .path')).map((p) => p.textContent)])"
    )
    assert [query for query, _ in sections] == [*queries, HOSTILE_QUERY]
    assert all(len(paths) == 4 for _, paths in sections)
    for (query, paths), target in zip(sections, ["clip_2.mp4", HOSTILE_NAME, ODD_NAME], strict=False):
        assert paths[0] == target, (query, paths)  # the demo model finds each caption's video first
    assert page.evaluate("document.querySelectorAll('img[src=\"x\"], [onerror]').length") == 0
    caution = page.evaluate(  # the demo model's caution, as `search` prints it, in view under the title
        "(() => { const c = document.querySelector('header .caution'); return c.offsetHeight > 0 && c.textContent; })()"
    )
    assert caution.startswith("Caution: this index was made with the packaged 'demo' model"), caution
    assert "caution: " + caution[len("Caution: ") :] in result.output  # the same words on stderr
    assert page.dialogs == [] and page.exceptions == [] and page.console_errors == []
    page.screenshot(tmp_path / "results_page.png")
    keep_screenshot(tmp_path / "results_page.png")

    players = page.evaluate(WAIT_FOR_METADATA)
    assert len(players) == 16 and all(p.get("duration", 0) > 5 for p in players), players  # 6 s videos
    names = {Path(p["src"]).name for p in players}
    assert {"%3Cimg%20src%3Dx%20onerror%3Dalert%281%29%3E.mp4", "caf%C3%A9%20%231%20%3F%2520.webm"} <= names


def test_moment_cards_play_from_their_start(demo_corpus, browser, tmp_path):
    video = demo_corpus.root / "clip_0.mp4"
    hits = [Hit(1, 0.9, 0, "clip_0.mp4", video, 2.0, 4.5), Hit(2, 0.8, 0, "clip_0.mp4", video)]
    page_path = write_results_page(tmp_path / "moments.html", [QueryHits("a moment", hits)])
    page = browser.page()
    page.goto(page_path.as_uri())
    page.wait_for("document.body.dataset.ready === 'true'")
    assert page.evaluate("Array.from(document.querySelectorAll('.range')).map((r) => r.textContent)") == [
        "0:02\u20130:04.5"
    ]
    first, second = page.evaluate(WAIT_FOR_METADATA)
    assert first["src"].endswith("clip_0.mp4#t=2,4.5") and first["time"] == pytest.approx(2.0, abs=0.05)
    assert second["src"].endswith("clip_0.mp4") and second["time"] == 0
    page.evaluate("document.querySelector('button.play').click()")  # what a person does
    stopped_at = page.wait_for(
        "(() => { const v = document.querySelector('video'); "
        "return v.controls && v.paused && v.currentTime > 4 && v.currentTime; })()"
    )
    assert stopped_at == pytest.approx(4.5, abs=0.3)  # played the moment, stopped at its end


def test_service_without_the_web_extra_names_it(monkeypatch):
    from click.testing import CliRunner

    from muse_infer.cli import main
    from muse_infer.errors import MissingExtraError
    from muse_infer.web import require_web_extra

    monkeypatch.setitem(sys.modules, "starlette", None)  # importing it now fails
    with pytest.raises(MissingExtraError, match=r'pip install "muse-infer\[web\]"'):
        require_web_extra()
    result = CliRunner().invoke(main, ["serve", "--index", "emb.npy"])
    assert result.exit_code == 2 and "Error: the search service needs Starlette" in result.output
    assert "serve" in CliRunner().invoke(main, ["--help"]).output
    assert "--token" in CliRunner().invoke(main, ["serve", "--help"]).output


def test_hits_without_thumbnails_get_them_for_the_page(demo_corpus, tmp_path):
    from muse_infer import EmbeddingIndex, TextEncoder
    from muse_infer.index import IndexFiles
    from muse_infer.video.thumbnails import ThumbnailStore
    from muse_infer.web.page import save_results_page
    from muse_infer.web.rows import IndexRows

    index = EmbeddingIndex.load(demo_corpus.index)
    store = ThumbnailStore(IndexFiles.of(demo_corpus.index).thumbs)
    row = index.paths.index("clip_1.mp4")
    source = IndexRows(index).sources[row]
    for path in store.files(source):
        path.unlink()
    query = demo_corpus.captions["clip_1.mp4"]
    results = index.search_batch([query], 2, text_encoder=TextEncoder.for_index(index, device="cpu"))
    page = save_results_page(tmp_path / "r.html", index, demo_corpus.index, [query], results)
    assert store.has(source)
    sources = [img["src"] for img in Elements(page.read_text()).named("img")]
    assert sources[:3] == [relative_url(path, tmp_path) for path in store.files(source)]
