"""Duplicates: the generated corpus (originals, re-encoded/rescaled/trimmed copies, videos sharing an
intro, look-alike siblings) grouped with the packaged demo model; the command's listing, JSON and page;
``search --dedup``; and the parts (neighbour pairs, pair aggregation, groups, coverage) against
plain references."""

from __future__ import annotations

import json
from itertools import combinations

import numpy as np
import pytest

from muse_infer.data.duplicates import pair_scores, write_duplicate_corpus
from muse_infer.data.vectors import clustered_rows
from muse_infer.index import EmbeddingIndex, RowQuery, build_ann, write_index
from muse_infer.index.duplicates import connected_groups, find_duplicates, video_pairs
from muse_infer.index.neighbours import close_pairs
from muse_infer.video.signatures import coverage


def invoke(*args, expect: int = 0):
    from click.testing import CliRunner

    from muse_infer.cli import main

    result = CliRunner().invoke(main, [str(a) for a in args])
    assert result.exit_code == expect, result.output
    return result


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    """A small corpus (6 originals and their copies, 2 intro pairs, a sibling pair) encoded with demo."""
    from muse_infer import VideoEncoder
    from muse_infer.jobs.encode import encode_folder

    folder = tmp_path_factory.mktemp("duplicates")
    records = write_duplicate_corpus(folder / "videos", originals=6, intro_pairs=2, siblings=1, seed=3)
    encoder = VideoEncoder("demo", device="cpu")
    encode_folder(folder / "videos", folder / "emb.npy", encoder, workers=0, progress=False)
    return folder, records


def test_the_corpus_is_grouped_right_and_shared_intros_are_not(corpus):
    folder, records = corpus
    found = find_duplicates(EmbeddingIndex.load(folder / "emb.npy"))
    groups = [[found.videos[v].path for v in group] for group in found.groups]
    scores = pair_scores(groups, records)
    assert scores["precision"] >= 0.9 and scores["recall"] >= 0.9, scores
    kinds = {r["path"]: r["kind"] for r in records}
    for group in groups:  # videos sharing an intro, and siblings, are in no group
        assert not {kinds[path] for path in group} & {"shared_intro", "sibling"}, group
    assert {p.compared for p in found.pairs} == {"frames"} and not found.unreadable
    intro = [r["path"] for r in records if r["kind"] == "shared_intro"]
    compared = {frozenset((found.videos[p.first].path, found.videos[p.second].path)): p for p in found.pairs}
    for a, b in zip(intro[::2], intro[1::2], strict=True):  # when compared, they scored low
        pair = compared.get(frozenset((a, b)))
        assert pair is None or (not pair.duplicate and pair.score < 0.4), (a, b, pair)


def test_the_command_lists_writes_json_and_a_page(corpus, tmp_path):
    folder, records = corpus
    listing = invoke("duplicates", "--index", folder / "emb.npy").output
    assert "groups of duplicates among" in listing and "original_00.mp4" in listing
    report = json.loads(invoke("duplicates", "--index", folder / "emb.npy", "--json").stdout)
    assert report["threshold"] == 0.5 and report["videos"] == len(records)
    first = report["groups"][0]
    assert {"path", "absolute_path", "rows"} <= set(first["videos"][0])
    assert all(p["score"] >= 0.5 and p["compared"] == "frames" for p in first["pairs"])
    page = tmp_path / "dups.html"
    invoke("duplicates", "--index", folder / "emb.npy", "--html", page, "--threshold", 0.6)
    text = page.read_text()
    assert text.count('<section class="query"') == len(
        json.loads(invoke("duplicates", "--index", folder / "emb.npy", "--json", "--threshold", 0.6).stdout)[
            "groups"
        ]
    )
    assert "more like this" not in text and "threshold 0.6" in text
    bad = invoke("duplicates", "--index", folder / "emb.npy", "--threshold", 1.5, expect=2)
    assert "Traceback" not in bad.output


def test_search_dedup_shows_one_video_a_group(corpus):
    folder, records = corpus
    index = EmbeddingIndex.load(folder / "emb.npy")
    group_of = {r["path"]: r["group"] for r in records}
    row = index.paths.index("original_02.mp4")  # it has three copies
    plain = index.search(RowQuery(row), top_k=8)
    assert len({group_of[h.path] for h in plain[:4]}) == 1  # its copies crowd the top
    deduped = index.search(RowQuery(row), top_k=8, dedup=True)
    assert len(deduped) == 8 and [h.rank for h in deduped] == list(range(1, 9))
    assert len({group_of[h.path] for h in deduped}) == 8 and deduped[0].path == "original_02.mp4"
    assert [h.score for h in deduped] == sorted((h.score for h in deduped), reverse=True)
    listing = json.loads(
        invoke(
            "search", "--like-row", row, "--index", folder / "emb.npy", "--dedup", "--json", "--top-k", 8
        ).stdout
    )
    assert [r["path"] for r in listing] == [h.path for h in deduped]


def test_moments_are_compared_window_by_window(tmp_path):
    """An index of moments without readable files: a copy (every window close) is grouped, a video
    sharing only its first window (an intro) is not."""
    rng = np.random.default_rng(0)
    base = clustered_rows(40, 32, seed=1)  # 8 videos of 5 windows
    rows = base.copy()
    rows[5:10] = base[0:5] + 0.05 * rng.standard_normal((5, 32)).astype(np.float32) / np.sqrt(32)
    rows[10] = base[0] + 0.01 * rng.standard_normal(32).astype(np.float32) / np.sqrt(32)  # video 2's intro
    paths = [f"v{n // 5}.mp4" for n in range(40)]
    starts = [float(2 * (n % 5)) for n in range(40)]
    out = write_index(tmp_path / "m.npy", rows, paths, start_s=starts, end_s=[s + 4 for s in starts])
    found = find_duplicates(EmbeddingIndex.load(out), candidate_cosine=0.3)
    assert [[found.videos[v].path for v in g] for g in found.groups] == [["v0.mp4", "v1.mp4"]]
    assert {p.compared for p in found.pairs} == {"moments"}
    whole = write_index(tmp_path / "w.npy", rows[1::5], [f"w{n}.mp4" for n in range(8)])  # no root: no files
    again = find_duplicates(EmbeddingIndex.load(whole), candidate_cosine=0.3)
    assert {p.compared for p in again.pairs} == {"embeddings"}
    assert [[again.videos[v].path for v in g] for g in again.groups] == [["w0.mp4", "w1.mp4"]]


@pytest.mark.parametrize("kind", ["flat", "hnsw", "ivf-pq"])
def test_close_pairs_match_a_brute_force_reference(tmp_path, kind):
    count, dim, k, bar = 1500, 64, 5, 0.6
    rows = clustered_rows(count, dim, clusters=300, seed=4, spread=0.5)  # ~5 close rows a cluster
    rows[700:760] = rows[:60] + 0.01  # near-duplicates
    out = write_index(tmp_path / f"{kind}.npy", rows, [f"{i}.mp4" for i in range(count)], root=tmp_path)
    if kind != "flat":
        build_ann(out, kind=kind, threads=1)
    index = EmbeddingIndex.load(out)
    first, second, cosines = close_pairs(index, k, bar)
    unit = np.asarray(index.embeddings, np.float64)
    scores = unit @ unit.T
    np.fill_diagonal(scores, -np.inf)
    nearest = np.argsort(-scores, axis=1, kind="stable")[:, :k]
    want = {(min(i, j), max(i, j)) for i in range(count) for j in nearest[i] if scores[i, j] >= bar}
    got = set(zip(first.tolist(), second.tolist(), strict=True))
    assert got <= {(i, j) for i, j in combinations(range(count), 2) if scores[i, j] >= bar}
    np.testing.assert_allclose(cosines, scores[first, second], atol=1e-5)  # exact cosines
    if kind == "flat":
        assert got == want
    else:  # neighbours at cosine ~0.8 are found approximately; near-duplicates (~1.0) all of them
        assert len(got & want) / len(want) >= 0.6
    assert {(i, i + 700) for i in range(60)} <= got  # every planted near-duplicate


def test_video_pairs_and_groups_match_plain_references():
    rng = np.random.default_rng(1)
    first, second = rng.integers(0, 30, 500), rng.integers(0, 30, 500)
    cosines = rng.random(500).astype(np.float32)
    best: dict = {}
    for a, b, c in zip(first.tolist(), second.tolist(), cosines.tolist(), strict=True):
        if a != b:
            key = (min(a, b), max(a, b))
            best[key] = max(best.get(key, -1.0), c)
    a, b, c = video_pairs(first, second, cosines)
    assert dict(zip(zip(a.tolist(), b.tolist(), strict=True), c.tolist(), strict=True)) == pytest.approx(best)
    edges = [(int(x), int(y)) for x, y in zip(a[:25], b[:25], strict=True)]
    groups = connected_groups(30, edges)
    reach = {n: {n} for n in range(30)}
    for _ in range(30):
        for x, y in edges:
            merged = reach[x] | reach[y]
            for member in merged:
                reach[member] = merged
    assert sorted(map(tuple, groups)) == sorted({tuple(sorted(s)) for s in reach.values() if len(s) > 1})


def test_coverage_is_the_smaller_share_found():
    scores = np.array([[0.9, 0.1, 0.0], [0.95, 0.2, 0.3]])  # both rows found; 1 of 3 columns found
    assert coverage(scores, 0.85) == pytest.approx(1 / 3)
    assert coverage(scores.T, 0.85) == pytest.approx(1 / 3) and coverage(np.zeros((0, 3)), 0.5) == 0.0


def test_the_command_has_help_with_an_example():
    result = invoke("duplicates", "--help")
    assert "Example:" in result.output and "muse-infer duplicates --index emb.npy" in result.output
    assert "muse-infer duplicates" in invoke("--help").output
