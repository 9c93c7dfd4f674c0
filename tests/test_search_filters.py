"""Search filters: applied inside the search, exactly (against a brute-force reference on random rows of
awkward sizes) and through the ANN index (recall against the exact filtered search), by path prefix
(names of any bytes, exact comparison), duration, modification time and score; older indexes say which
filters they cannot serve; shards, moments and the SDK keywords."""

from __future__ import annotations

import os
import shutil
import sys
import unicodedata
from datetime import date, datetime, timezone
from pathlib import Path

import numpy as np
import pytest

from muse_infer.data.vectors import clustered_rows, shifted_queries
from muse_infer.errors import IndexInputError
from muse_infer.index import (
    EmbeddingIndex,
    RowQuery,
    SearchFilter,
    ShardedIndex,
    build_ann,
    filtered,
    write_index,
)
from muse_infer.index.arrow_columns import numpy_values
from muse_infer.index.filters import RowSelection, folder_prefix, parse_time, under_mask

sys.path.insert(0, str(Path(__file__).parent))
from test_index import paths_for, write_v1_index  # noqa: E402

DIM = 24


def reference(rows: np.ndarray, query: np.ndarray, mask: np.ndarray, k: int):
    """Every allowed row scored in float64, a full stable sort: the filtered top k, rows and scores."""
    unit = rows / np.linalg.norm(rows.astype(np.float64), axis=1, keepdims=True)
    scores = unit @ query.astype(np.float64)
    allowed = np.flatnonzero(mask)
    order = allowed[np.argsort(-scores[allowed], kind="stable")][:k]
    return order, scores[order]


@pytest.mark.parametrize("count, dim", [(1, 3), (1037, 7), (4099, DIM)])
@pytest.mark.parametrize("density", [0.0005, 0.02, 0.3, 0.9, 1.0])
@pytest.mark.parametrize("unit", [True, False])
def test_filtered_exact_search_equals_a_brute_force_reference(count, dim, density, unit):
    rng = np.random.default_rng(count + dim)
    rows = rng.standard_normal((count, dim)).astype(np.float32)
    if unit:  # format 2 rows; else rows of any length, scored through their inverse norms (format 1)
        rows /= np.linalg.norm(rows, axis=1, keepdims=True)
    else:
        rows *= rng.uniform(0.2, 5.0, (count, 1)).astype(np.float32)
    index = EmbeddingIndex(rows, {"paths": [f"{i}.mp4" for i in range(count)]})
    mask = rng.random(count) < density
    selection = RowSelection(mask)
    for query in rng.standard_normal((3, dim)).astype(np.float32):
        query /= np.linalg.norm(query)
        want_rows, want_scores = reference(rows, query, mask, 10)
        for rows_found, scores in (
            filtered.exact_selected(index.embeddings, query[None], 10, selection, index.inverse_norms)[0],
            index.search_rows(query[None], 10, selection=selection)[0],
        ):
            assert mask[rows_found].all()
            np.testing.assert_allclose(scores, want_scores, atol=2e-6)
            assert set(rows_found) == set(want_rows) or np.allclose(np.sort(scores), np.sort(want_scores))
        # the same bits as an exact search of every row, kept to the allowed ones
        all_rows, all_scores = index.search_rows(query[None], count)[0]
        kept = mask[all_rows]
        found_rows, found_scores = index.search_rows(query[None], 10, selection=selection)[0]
        assert list(found_rows) == list(all_rows[kept][:10])
        assert found_scores.tobytes() == all_scores[kept][:10].tobytes()


@pytest.fixture(scope="module")
def ann_pair(tmp_path_factory):
    """5,000 clustered rows in 200 folders with durations and mtimes, with hnsw and ivf-pq indexes."""
    folder = tmp_path_factory.mktemp("filtered")
    count = 5000
    rng = np.random.default_rng(2)
    paths = [f"f{int(f):03d}/{i:05d}.mp4" for i, f in enumerate(rng.integers(0, 200, count))]
    durations = rng.uniform(1, 100, count).tolist()
    base = write_index(
        folder / "flat.npy", clustered_rows(count, DIM, seed=9), paths, root=folder,
        facts={"duration_s": durations}, mtimes_ns=(10**18 + rng.integers(0, 10**15, count)).tolist(),
    )  # fmt: skip
    out = {}
    for kind in ("hnsw", "ivf-pq"):
        copy = folder / f"{kind}.npy"
        for suffix in (".npy", ".json", ".rows.parquet", ".failures.jsonl"):
            shutil.copy(base.with_suffix(suffix), copy.with_suffix(suffix))
        sidecar = copy.with_suffix(".json")
        sidecar.write_text(sidecar.read_text().replace('"flat.', f'"{kind}.'))
        build_ann(copy, kind=kind, threads=1)
        out[kind] = copy
    return out


@pytest.mark.parametrize("kind", ["hnsw", "ivf-pq"])
@pytest.mark.parametrize("mode", filtered.MODES)
def test_filtered_approximate_search_reaches_the_exact_filtered_results(ann_pair, kind, mode, monkeypatch):
    monkeypatch.setattr(filtered, "EXACT_ROWS", 40)  # so even small selections go through faiss
    index = EmbeddingIndex.load(ann_pair[kind], ann=True)
    faiss_index = index._faiss_index()
    queries = shifted_queries(index.embeddings, 40, offset=1.2, noise=0.8, seed=4)
    durations = numpy_values(index.row_column("duration_s"), np.float64, np.nan)
    for filters in (
        SearchFilter.make(min_duration=float(np.median(durations))),  # half the rows
        SearchFilter.make(under=[f"f{n:03d}" for n in range(0, 200, 20)]),  # 5 %
    ):
        selection = index.selection(filters)
        hits = 0
        for query in queries:
            truth, _ = filtered.exact_selected(index.embeddings, query[None], 10, selection)[0]
            rows, scores = filtered.approximate_selected(
                faiss_index, index.ann_meta, index._scattered, query, 10, selection, None, mode
            )
            assert selection.mask[rows].all() and len(rows) == 10
            np.testing.assert_allclose(scores, np.asarray(index.embeddings[rows]) @ query, atol=1e-6)
            hits += len(np.intersect1d(rows, truth))
        assert hits / (10 * len(queries)) >= 0.9, (filters.describe(), hits)


def test_a_small_selection_is_searched_exactly_through_an_ann_index(ann_pair):
    index = EmbeddingIndex.load(ann_pair["ivf-pq"], ann=True)
    query = shifted_queries(index.embeddings, 1, seed=6)[0]
    filters = SearchFilter.make(under=["f007"])
    got = index.search(query, top_k=10, filters=filters)
    want = index.search(query, top_k=10, filters=filters, exact=True)
    assert got == want and all(hit.path.startswith("f007/") for hit in got)


ODD_NAMES = [
    "a+b/x.mp4",
    "a+b/(1)/y.mp4",
    "a+bc/z.mp4",  # not under "a+b"
    "[x]/.*/w.mp4",
    "odd names/café #1 ?%20.webm",
    unicodedata.normalize("NFD", "café/nfd.mp4"),
    unicodedata.normalize("NFC", "café/nfc.mp4"),
    os.fsdecode(b"latin\xe9/v.mp4"),  # not UTF-8: kept as bytes
    "latin\\xe9/display-twin.mp4",  # the display text of the name above, as a real name
    "top.mp4",
]


def test_under_matches_exact_names_against_a_python_reference(tmp_path):
    rows = clustered_rows(len(ODD_NAMES), DIM, seed=1)
    out = write_index(tmp_path / "odd.npy", rows, ODD_NAMES, root=tmp_path)
    index = EmbeddingIndex.load(out)
    folders = [
        ["a+b"], ["a+b/"], ["a+b/(1)"], ["[x]/.*"], ["odd names"], [unicodedata.normalize("NFC", "café")],
        [unicodedata.normalize("NFD", "café")], [os.fsdecode(b"latin\xe9")], ["latin\\xe9"],
        ["a+b", "odd names", os.fsdecode(b"latin\xe9")], ["."], [str(tmp_path / "a+b")], ["nowhere"],
    ]  # fmt: skip
    for given in folders:
        prefixes = [folder_prefix(folder, tmp_path) for folder in given]
        want = [any(path.startswith(p) for p in prefixes) for path in ODD_NAMES]
        assert under_mask(index, given).tolist() == want, given
        hits = index.search(rows[0], top_k=len(ODD_NAMES), under=given)
        assert sorted(hit.path for hit in hits) == sorted(
            p for p, w in zip(ODD_NAMES, want, strict=True) if w
        )
    assert under_mask(index, ["café"]).sum() == 1  # the NFC twin only: names are compared exactly


def test_folder_prefix_rules(tmp_path):
    (tmp_path / "real").mkdir()
    (tmp_path / "link").symlink_to(tmp_path / "real", target_is_directory=True)
    assert folder_prefix("a/b", tmp_path) == "a/b/" and folder_prefix("./a//b/", tmp_path) == "a/b/"
    assert folder_prefix(".", tmp_path) == "" and folder_prefix(str(tmp_path), tmp_path) == ""
    assert folder_prefix(str(tmp_path / "x" / "y"), tmp_path) == "x/y/"
    assert folder_prefix(str(tmp_path / "link" / "a"), tmp_path / "real") == "a/"  # symlinks resolved
    assert folder_prefix("/videos/a", None) == "/videos/a/"  # an index without a root: paths as given
    for bad in ("..", "../x", "a/../../x", "/elsewhere", " "):
        with pytest.raises(IndexInputError, match="under"):
            folder_prefix(bad, tmp_path)


def test_duration_and_modified_filters_with_unknown_values(tmp_path):
    count = 8
    local = datetime(2024, 5, 1).astimezone()
    mtimes = [int(local.timestamp() * 1e9) + n * 3600 * 10**9 for n in range(-4, 4)]
    mtimes[0] = -1  # unknown
    durations = [1.0, 5.0, 5.0, 30.0, 60.0, 61.0, None, 3600.0]
    out = write_index(
        tmp_path / "e.npy", clustered_rows(count, DIM, seed=2), paths_for(count), root=tmp_path,
        mtimes_ns=mtimes, facts={"duration_s": durations, "codec": ["h264"] * count},
    )  # fmt: skip
    index = EmbeddingIndex.load(out)
    query = index.row_vector(3)

    def rows(**filters):
        return sorted(hit.row for hit in index.search(query, top_k=count, **filters))

    assert rows(min_duration=5) == [1, 2, 3, 4, 5, 7]  # bounds included; unknown (row 6) left out
    assert rows(max_duration=60) == [0, 1, 2, 3, 4]
    assert rows(min_duration=5, max_duration=60) == [1, 2, 3, 4]
    assert rows(modified_after="2024-05-01") == [4, 5, 6, 7]  # local midnight, inclusive
    assert rows(modified_before=date(2024, 5, 1)) == [1, 2, 3]  # exclusive; unknown (row 0) left out
    assert rows(modified_after=local.replace(hour=1)) == [5, 6, 7]
    utc = local.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S+00:00")
    assert rows(modified_after=utc) == rows(modified_after="2024-05-01")
    assert rows(min_duration=5, modified_after="2024-05-01") == [4, 5, 7]
    assert parse_time("2024-05-01T00:00:00+00:00") == 1714521600 * 10**9
    scores = [hit.score for hit in index.search(query, top_k=count)]
    cut = sorted(scores)[3]
    hits = index.search(query, top_k=count, min_score=cut)
    assert len(hits) == 5 and all(hit.score >= cut for hit in hits)  # fewer than top_k
    assert index.rows.column("codec").to_pylist() == ["h264"] * count
    for bad in ({"modified_after": "May 1st"}, {"min_duration": -1}, {"min_score": float("nan")}):
        with pytest.raises(IndexInputError):
            index.search(query, **bad)
    with pytest.raises(TypeError, match="unknown filter"):
        index.search(query, longer_than=5)
    with pytest.raises(ValueError, match="both"):
        index.search(query, filters=SearchFilter.make(min_duration=1), min_duration=2)


def test_indexes_without_durations_say_which_filters_they_cannot_serve(tmp_path):
    rows = clustered_rows(12, DIM, seed=3)
    write_v1_index(tmp_path / "old.npy", rows, paths_for(12), tmp_path)
    plain = write_index(tmp_path / "plain.npy", rows, paths_for(12), root=tmp_path)
    for npy in (tmp_path / "old.npy", plain):
        index = EmbeddingIndex.load(npy)
        with pytest.raises(
            IndexInputError, match="--min-duration/--max-duration: .*records no video durations"
        ):
            index.search(rows[0], min_duration=10)
        assert len(index.search(rows[0], top_k=20, under="v")) == 12  # what it has still works
    with pytest.raises(IndexInputError, match="--modified-after/--modified-before: .*no file modification"):
        EmbeddingIndex.load(plain).search(rows[0], modified_after="2020-01-01")
    assert len(EmbeddingIndex.load(tmp_path / "old.npy").search(rows[0], modified_after="2000-01-01")) == 10
    from click.testing import CliRunner

    from muse_infer.cli import main

    info = CliRunner().invoke(main, ["index", "info", str(plain)]).output
    assert "filters: --under, --min-score; not --min-duration/--max-duration, --modified-after/" in info


def test_filters_on_shards_and_moments_match_one_index(tmp_path):
    count = 60
    rows = clustered_rows(count, DIM, seed=4)
    paths = [f"{'ab'[i % 2]}/video{i // 3:02d}.mp4" for i in range(count)]  # 3 moments a video
    starts = [float(4 * (i % 3)) for i in range(count)]
    durations = [float(10 + i // 3) for i in range(count)]
    common = {"root": tmp_path, "start_s": starts, "end_s": [s + 4 for s in starts]}
    whole = write_index(tmp_path / "all.npy", rows, paths, facts={"duration_s": durations}, **common)
    halves = []
    for number, part in enumerate((slice(0, 30), slice(30, 60))):
        options = {**common, "start_s": starts[part], "end_s": [s + 4 for s in starts[part]]}
        halves.append(
            write_index(
                tmp_path / f"part{number}.npy", rows[part], paths[part],
                facts={"duration_s": durations[part]}, **options,
            )
        )  # fmt: skip
    one, two = EmbeddingIndex.load(whole), ShardedIndex.load(halves)
    query = shifted_queries(rows, 1, seed=8)[0]
    for filters in (
        {"under": "a"},
        {"min_duration": 20},
        {"under": "b", "max_duration": 20, "min_score": -0.5},
    ):
        for per_video in (None, 2, 0):
            got = two.search(query, top_k=5, per_video=per_video, **filters)
            want = one.search(query, top_k=5, per_video=per_video, **filters)
            assert [(h.path, h.score, h.start_s, h.end_s) for h in got] == [
                (h.path, h.score, h.start_s, h.end_s) for h in want
            ]
            assert all(h.path.startswith(filters.get("under", "")) for h in got)
    for row in (0, 29, 30, 59):  # a row of either shard, counted end to end
        got, want = (
            two.search(RowQuery(row), top_k=4, per_video=0),
            one.search(RowQuery(row), top_k=4, per_video=0),
        )
        assert [(h.path, h.row, h.score) for h in got] == [(h.path, h.row, h.score) for h in want]
        assert got[0].row == row and got[0].score == pytest.approx(1.0, abs=1e-6)
