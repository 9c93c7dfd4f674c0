"""The index: format 2 files, exact search (the oracle), the approximate kinds against it, damaged or
stale ANN files, format 1 indexes, shards and merging, growing in place, and the `index` commands.

Rows are synthetic (``muse_infer.data.vectors``: clusters on the sphere) and queries come from a
shifted distribution, as text queries sit apart from video rows; sizes are small so the file runs in
well under a minute. Larger runs: benchmarks/bench_index.py and the slow test at the end.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest

from muse_infer.data.vectors import clustered_rows, shifted_queries
from muse_infer.errors import IndexFileError, IndexInputError, ModelMismatchError
from muse_infer.index import (
    EmbeddingIndex,
    ShardedIndex,
    build_ann,
    exact_search,
    merge_indexes,
    plan_ann,
    write_index,
)

sys.path.insert(0, str(Path(__file__).parent))
from test_encode_search import invoke, noise_video  # noqa: E402

DIM = 48


def paths_for(count: int, prefix: str = "v") -> list[str]:
    return [f"{prefix}/{i:05d}.mp4" for i in range(count)]


def oracle(embeddings: np.ndarray, query: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The old search: every score at once, a full stable sort (equal scores keep row order). Scores
    are computed as the index computes them (``row_scores``) and checked against float64 dot products."""
    from muse_infer.index.search import row_scores

    scores = row_scores(np.asarray(embeddings, np.float32), np.asarray(query, np.float32))
    np.testing.assert_allclose(scores, np.asarray(embeddings, np.float64) @ query, rtol=0, atol=1e-5)
    order = np.argsort(-scores, kind="stable")[:k]
    return order, scores[order]


def recall(found: list[np.ndarray], truth: list[np.ndarray]) -> float:
    return float(np.mean([len(np.intersect1d(f, t)) / len(t) for f, t in zip(found, truth, strict=True)]))


def fake_model(name: str):
    """An object with what write_index(model=...) records: an identity, a source, a backend name."""
    from types import SimpleNamespace

    identity = {"kind": "config", "name": name, "clip_weights": "random", "config": {"name": name}}
    return SimpleNamespace(identity=identity, source={"model": name, "clip_weights": "random"}, name="torch")


# --- exact search: the oracle -------------------------------------------------------------------


def test_select_top_breaks_ties_by_lowest_row():
    from muse_infer.index.search import select_top

    rng = np.random.default_rng(0)
    for count in (1, 2, 9, 100, 1001):
        rows = rng.permutation(count * 3)[:count].astype(np.int64)
        scores = rng.integers(0, 5, count).astype(np.float32)  # many ties
        for k in (1, 3, count, count + 4):
            expected = np.lexsort((rows, -scores))[:k]
            got_rows, got_scores = select_top(rows, scores, k)
            np.testing.assert_array_equal(got_rows, rows[expected])
            np.testing.assert_array_equal(got_scores, scores[expected])


@pytest.mark.parametrize(
    "count, dim, block_rows", [(1, 3, None), (5, 17, 2), (257, 17, 7), (1000, 5, 64), (1000, 33, None)]
)
def test_exact_search_agrees_with_a_full_sort(count, dim, block_rows):
    rng = np.random.default_rng(count + dim)
    rows = rng.standard_normal((count, dim)).astype(np.float32)
    rows[count // 2 :: 3] = rows[0]  # exact ties, across blocks
    queries = rng.standard_normal((4, dim)).astype(np.float32)
    queries[0] = rows[0]
    for top_k in (1, 3, count, count + 5):
        found = exact_search(rows, queries, top_k, block_rows=block_rows)
        for query, (got_rows, got_scores) in zip(queries, found, strict=True):
            want_rows, want_scores = oracle(rows, query, top_k)
            np.testing.assert_array_equal(got_rows, want_rows)
            np.testing.assert_array_equal(got_scores, want_scores)
        alone = [exact_search(rows, q[None], top_k, block_rows=block_rows)[0] for q in queries]
        for (a_rows, a_scores), (b_rows, b_scores) in zip(alone, found, strict=True):
            np.testing.assert_array_equal(a_rows, b_rows)  # a query's results do not depend on the batch
            np.testing.assert_array_equal(a_scores, b_scores)
        batched = exact_search(rows, queries, top_k, matmul=True, block_rows=block_rows)
        for (_, a_scores), (_, b_scores) in zip(batched, found, strict=True):
            np.testing.assert_allclose(a_scores, b_scores, rtol=0, atol=1e-5)  # BLAS: last bits may differ


# --- writing and opening ------------------------------------------------------------------------


def test_write_index_round_trip(tmp_path):
    rows = clustered_rows(50, DIM, seed=1)
    rows[7] *= 3.0  # not unit length: stored scaled
    paths = paths_for(50)
    out = write_index(
        tmp_path / "emb.npy",
        rows,
        paths,
        root=tmp_path / "videos",
        sizes=list(range(50)),
        mtimes_ns=[10**18 + i for i in range(50)],
        start_s=[None] * 49 + [2.5],
        end_s=[float("nan")] * 49 + [4.0],
        columns={"caption": [f"clip {i}" for i in range(50)]},
        failures=[{"path": "bad.mp4", "reason": "empty file", "size": 0, "mtime_ns": 1}],
    )
    index = EmbeddingIndex.load(out)
    assert isinstance(index.embeddings, np.memmap) and len(index) == 50 and index.dim == DIM
    unchanged = np.arange(50) != 7
    np.testing.assert_array_equal(index.embeddings[unchanged], rows[unchanged])  # unit rows: bit for bit
    np.testing.assert_allclose(index.embeddings[7], rows[7] / 3.0, atol=1e-6)
    assert list(index.paths) == paths and index.paths[-1] == paths[-1] and index.paths[2:4] == paths[2:4]
    assert index.rows.column("caption")[3].as_py() == "clip 3"
    assert index.metadata["failed"] == 1 and index.identity is None
    hits = index.search(rows[49], top_k=3)
    assert hits[0].row == 49 and hits[0].path == paths[49] and abs(hits[0].score - 1) < 1e-6
    assert hits[0].absolute_path == str(tmp_path / "videos" / paths[49])
    assert (hits[0].start_s, hits[0].end_s) == (2.5, 4.0) and hits[1].start_s is None
    assert hits[0].to_dict()["start_s"] == 2.5 and "start_s" not in hits[1].to_dict()
    with pytest.raises(ModelMismatchError, match="records no model"):
        index.search("a cat")
    again = write_index(tmp_path / "emb2.npy", np.asarray(index.embeddings), paths)
    assert EmbeddingIndex.load(again).content_id == index.content_id  # identity of the rows, not the files


def test_write_index_refuses_bad_input(tmp_path):
    rows = clustered_rows(10, 8)
    cases = {
        "NaN": (np.where(np.arange(10)[:, None] == 4, np.nan, rows), paths_for(10), "row 4"),
        "zero row": (np.where(np.arange(10)[:, None] == 2, 0.0, rows), paths_for(10), "row 2 is all zeros"),
        "too few paths": (rows, paths_for(9), "9 values for 10 rows"),
        "one dimension": (rows[0], paths_for(1), "must be an .N, C. array"),
    }
    for name, (array, paths, message) in cases.items():
        with pytest.raises(IndexInputError, match=message):
            write_index(tmp_path / f"{name}.npy", array, paths)
        assert not (tmp_path / f"{name}.npy").exists(), name  # nothing half-written
    foreign = tmp_path / "mine.npy"
    foreign.write_bytes(b"someone else's file")
    with pytest.raises(IndexInputError, match="not a muse-infer index"):
        write_index(foreign, rows, paths_for(10))
    assert foreign.read_bytes() == b"someone else's file"
    with pytest.raises(IndexInputError, match="ends with .npy"):
        write_index(tmp_path / "x.bin", rows, paths_for(10))
    empty = EmbeddingIndex.load(write_index(tmp_path / "empty.npy", np.zeros((0, 8), np.float32), []))
    assert len(empty) == 0 and empty.search(rows[0], top_k=3) == []


def corrupt(path: Path, offset: int) -> None:
    with open(path, "r+b") as handle:
        handle.seek(offset)
        byte = handle.read(1)
        handle.seek(offset)
        handle.write(bytes([byte[0] ^ 0xFF]))


def test_opening_checks_chunks_without_reading_everything(tmp_path, monkeypatch):
    from muse_infer.index import store

    monkeypatch.setattr(store, "CHUNK_BYTES", 64 * 16 * 4)  # chunks of 64 rows of 16
    out = write_index(tmp_path / "emb.npy", clustered_rows(1000, 16), paths_for(1000))
    assert len(json.loads(out.with_suffix(".json").read_text())["chunk_sha256"]) == 16
    monkeypatch.setattr(store, "AUTO_VERIFY_BYTES", 0)  # as if it were large: first and last chunk only
    header = out.stat().st_size - 1000 * 16 * 4
    corrupt(out, header + 500 * 16 * 4)  # row 500: chunk 7 of 16
    EmbeddingIndex.load(out)  # not read: opens
    with pytest.raises(IndexFileError, match="does not match its sidecar emb.json at rows 448-511"):
        EmbeddingIndex.load(out, verify=True)
    corrupt(out, header + 500 * 16 * 4)
    corrupt(out, header + 3)  # row 0: the first chunk, always checked
    with pytest.raises(IndexFileError, match="rows 0-63"):
        EmbeddingIndex.load(out)
    EmbeddingIndex.load(out, verify=False)
    corrupt(out, header + 3)
    rows_file = out.with_suffix(".rows.parquet")
    rows_file.rename(tmp_path / "away.parquet")
    with pytest.raises(IndexFileError, match="rows file not found"):
        EmbeddingIndex.load(out)
    (tmp_path / "away.parquet").rename(rows_file)
    data = out.read_bytes()
    out.write_bytes(data[:-10])
    with pytest.raises(IndexFileError, match="truncated"):
        EmbeddingIndex.load(out, verify=False)


def write_v1_index(out: Path, embeddings: np.ndarray, paths: list[str], root: Path) -> None:
    """An index as muse-infer wrote it before format 2 (the former muse_infer.index.write_index)."""
    np.save(out, embeddings, allow_pickle=False)
    sidecar = {
        "format": "muse-infer-index",
        "format_version": 1,
        "count": len(embeddings),
        "dim": embeddings.shape[1],
        "dtype": "float32",
        "embeddings_file": out.name,
        "embeddings_sha256": hashlib.sha256(np.ascontiguousarray(embeddings, "<f4").tobytes()).hexdigest(),
        "failures_file": out.with_suffix(".failures.jsonl").name,
        "failed": 0,
        "root": str(root),
        "paths": paths,
        "file_stats": [[100 + i, 10**18 + i] for i in range(len(paths))],
        "model": fake_model("old").identity,
        "model_source": fake_model("old").source,
        "backend": "torch",
        "settings": {"max_frames": 12, "framerate": 1.0, "slice_mode": "uniform", "image_size": 224},
    }
    out.with_suffix(".failures.jsonl").write_text("")
    lines = [f" {json.dumps(k)}: {json.dumps(sidecar[k], sort_keys=True)}" for k in sorted(sidecar)]
    out.with_suffix(".json").write_text("{\n" + ",\n".join(lines) + "\n}\n")


def test_a_format_1_index_still_opens_and_upgrades(tmp_path, caplog):
    rows = clustered_rows(40, DIM, seed=3)
    scaled = rows * np.linspace(0.5, 3.0, 40, dtype=np.float32)[:, None]  # format 1 scored by norms
    out = tmp_path / "old.npy"
    write_v1_index(out, scaled, paths_for(40), tmp_path)
    old = EmbeddingIndex.load(out)
    assert old.metadata["format_version"] == 1 and list(old.paths) == paths_for(40)
    query = shifted_queries(rows, 1, seed=4)[0]
    hits = old.search(query, top_k=5)
    want_rows, want_scores = oracle(rows, query, 5)
    assert [h.row for h in hits] == list(want_rows)
    np.testing.assert_allclose([h.score for h in hits], want_scores, atol=1e-6)
    assert old.rows.column("size")[3].as_py() == 103
    with caplog.at_level(logging.WARNING):
        build_ann(out, kind="flat")
    assert "converted to index format 2" in caplog.text
    new = EmbeddingIndex.load(out)
    assert new.metadata["format_version"] == 2 and "paths" not in new.metadata
    assert list(new.paths) == paths_for(40) and new.identity == old.identity
    assert [h.row for h in new.search(query, top_k=5)] == list(want_rows)
    np.testing.assert_allclose(np.linalg.norm(new.embeddings, axis=1), 1.0, atol=1e-6)
    other = tmp_path / "other.npy"
    write_v1_index(other, scaled, paths_for(40), tmp_path)
    np.save(other, scaled[::-1].copy())  # rows of another run under the same sidecar
    with pytest.raises(IndexFileError, match="does not match its sidecar"):
        EmbeddingIndex.load(other)


# --- the approximate kinds ----------------------------------------------------------------------


def test_plan_ann_rules():
    assert plan_ann(10_000, 512).kind == "flat"  # 20 MiB: scanned exactly
    assert plan_ann(0, 512).kind == "flat"
    with pytest.raises(IndexInputError, match="no rows"):
        plan_ann(0, 512, kind="hnsw")
    mid = plan_ann(200_000, 512, 4 << 30)
    assert mid.kind == "hnsw" and 150e6 < mid.estimated_bytes < 170e6  # 784 bytes a row
    assert plan_ann(200_000, 512, 100 << 20).kind == "ivf-pq"  # hnsw does not fit 100 MiB
    one_million = plan_ann(1_000_000, 512, 4 << 30)
    assert one_million.kind == "ivf-pq" and one_million.params == {
        "factory": "IVF2048,PQ128x4fs",
        "nlist": 2048,
        "m": 128,
        "nbits": 4,
    }
    assert plan_ann(10_000_000, 512, 4 << 30).params["m"] == 128
    assert plan_ann(10_000_000, 512, 512 << 20).params["m"] == 64  # a smaller budget: fewer codes a row
    assert plan_ann(1_000_000, 512, kind="hnsw").estimated_bytes == pytest.approx(784e6, rel=0.01)
    assert plan_ann(500, 512, kind="hnsw").kind == "hnsw"
    with pytest.raises(IndexInputError, match="raise --memory"):
        plan_ann(10_000_000, 512, 64 << 20)
    with pytest.raises(IndexInputError, match="more than the memory budget"):
        plan_ann(10_000_000, 512, 4 << 30, kind="hnsw")  # asked for, but 7.3 GiB
    with pytest.raises(IndexInputError, match="at least 1000 rows"):
        plan_ann(200, 512, kind="ivf-pq")
    from muse_infer.index import parse_memory

    assert (
        parse_memory("4G") == 4 << 30
        and parse_memory("512MiB") == 512 << 20
        and parse_memory("1.5g") == 3 << 29
    )
    with pytest.raises(IndexInputError, match="4G"):
        parse_memory("lots")


ANN_ROWS = 6000


@pytest.fixture(scope="module")
def ann_indexes(tmp_path_factory) -> dict[str, Path]:
    """One index of clustered rows, with an hnsw and an ivf-pq index built beside two copies."""
    folder = tmp_path_factory.mktemp("ann")
    base = write_index(
        folder / "flat.npy", clustered_rows(ANN_ROWS, DIM, seed=11), paths_for(ANN_ROWS), root=folder
    )
    out = {"flat": base}
    for kind in ("hnsw", "ivf-pq"):
        copy = folder / f"{kind}.npy"
        for suffix in (".npy", ".json", ".rows.parquet", ".failures.jsonl"):
            shutil.copy(base.with_suffix(suffix), copy.with_suffix(suffix))
        json_path = copy.with_suffix(".json")
        json_path.write_text(
            json_path.read_text().replace('"flat.npy"', f'"{kind}.npy"').replace('"flat.', f'"{kind}.')
        )
        build_ann(copy, kind=kind, threads=1)
        out[kind] = copy
    return out


@pytest.mark.parametrize("kind", ["hnsw", "ivf-pq"])
def test_approximate_search_recall_and_exact_scores(ann_indexes, kind):
    index = EmbeddingIndex.load(ann_indexes[kind], ann=True)
    assert index.search_method == kind
    meta = index.ann_meta
    assert 0.85 < meta["index_bytes"] / meta["estimated_bytes"] < 1.15  # the memory estimate, checked
    assert meta["tuning"]["recall"] >= 0.95
    queries = shifted_queries(index.embeddings, 100, offset=1.2, noise=0.8, seed=21)  # not the tuning set
    truth = exact_search(index.embeddings, queries, 10)
    found = index.search_rows(queries, 10)
    assert recall([f[0] for f in found], [t[0] for t in truth]) >= 0.9
    for query, (rows, scores) in zip(queries, found, strict=True):
        np.testing.assert_allclose(scores, np.asarray(index.embeddings[rows]) @ query, rtol=0, atol=1e-6)
        assert np.all(np.diff(scores) <= 0)
    hits = index.search_batch(queries[:5], top_k=7)
    for query, batch_hits in zip(queries[:5], hits, strict=True):
        assert index.search(query, top_k=7) == batch_hits  # bit-identical alone or in a batch
    exact = index.search(queries[0], top_k=10, exact=True)
    assert [h.row for h in exact] == list(truth[0][0])
    assert len(index.search(queries[0], top_k=ANN_ROWS + 3)) == ANN_ROWS  # more than it holds: all rows


def test_flat_kind_searches_exactly(ann_indexes, tmp_path):
    out = write_index(tmp_path / "small.npy", clustered_rows(300, DIM, seed=5), paths_for(300))
    meta = build_ann(out)  # auto: 300 rows are scanned
    assert meta["kind"] == "flat" and not (tmp_path / "small.ann.faiss").exists()
    index = EmbeddingIndex.load(out, ann=True)
    assert index.search_method == "exact"
    queries = shifted_queries(index.embeddings, 10, seed=6)
    for query, (rows, scores) in zip(queries, index.search_rows(queries, 10), strict=True):
        want_rows, want_scores = oracle(np.asarray(index.embeddings), query, 10)
        np.testing.assert_array_equal(rows, want_rows)
        np.testing.assert_allclose(scores, want_scores, rtol=0, atol=1e-6)


def damage(case: str, npy: Path, other: Path) -> str:
    """Damage the ANN files beside ``npy`` one way; returns a fragment of the expected message."""
    faiss_file, meta_file = npy.with_suffix(".ann.faiss"), npy.with_suffix(".ann.json")
    if case == "truncated":
        faiss_file.write_bytes(faiss_file.read_bytes()[:-100])
        return "truncated"
    if case == "missing":
        faiss_file.unlink()
        return "ANN index file not found"
    if case == "no description":
        meta_file.unlink()
        return "has no description"
    if case == "garbled description":
        meta_file.write_text('{"format": "muse-inf')
        return "unreadable"
    if case == "built for other rows":
        shutil.copy(other.with_suffix(".ann.faiss"), faiss_file)
        shutil.copy(other.with_suffix(".ann.json"), meta_file)
        return "built for other rows"
    if case == "unreadable by faiss":
        faiss_file.write_bytes(b"IHNs" + bytes(5000))  # our magic, garbage after it, description updated
        meta = json.loads(meta_file.read_text())
        from muse_infer.index.ann import sample_sha256

        meta |= {"index_bytes": 5004, "sample_sha256": sample_sha256(faiss_file)}
        meta_file.write_text(json.dumps(meta))
        return "unreadable ANN index"
    raise AssertionError(case)


@pytest.mark.parametrize(
    "case",
    [
        "truncated",
        "missing",
        "no description",
        "garbled description",
        "built for other rows",
        "unreadable by faiss",
    ],
)
def test_a_damaged_or_stale_ann_index_falls_back_to_exact_search(ann_indexes, tmp_path, case, caplog):
    npy = tmp_path / "hnsw.npy"
    for suffix in (".npy", ".json", ".rows.parquet", ".ann.faiss", ".ann.json"):
        shutil.copy(ann_indexes["hnsw"].with_suffix(suffix), npy.with_suffix(suffix))
    other = tmp_path / "other.npy"
    write_index(other, clustered_rows(ANN_ROWS, DIM, seed=99), paths_for(ANN_ROWS), ann="hnsw")
    message = damage(case, npy, other)
    queries = shifted_queries(np.load(npy), 5, seed=8)
    with caplog.at_level(logging.WARNING):
        index = EmbeddingIndex.load(npy)
        found = index.search_rows(queries, 10)
    assert message in caplog.text and "searching exactly" in caplog.text
    assert index.search_method == "exact"
    for (rows, _), (want, _) in zip(found, exact_search(index.embeddings, queries, 10), strict=True):
        np.testing.assert_array_equal(rows, want)  # never wrong results
    with pytest.raises(IndexFileError, match=message):
        required = EmbeddingIndex.load(npy, ann=True)
        required.search_rows(queries, 10)
    assert message in invoke("index", "info", npy, check_rc=0).output


def test_building_on_one_thread_leaves_the_process_threads_as_they_were(tmp_path):
    """faiss and torch share one OpenMP runtime: ``build_ann(threads=1)`` sets it for the build and
    restores the count after (it used to leave torch on one thread for the rest of the process)."""
    import torch

    out = write_index(tmp_path / "e.npy", clustered_rows(2000, DIM, seed=3), paths_for(2000))
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        build_ann(out, kind="hnsw", threads=1)
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)


def test_the_ann_file_read_meanwhile_is_the_one_searched(ann_indexes):
    """``ann_read_meanwhile`` reads the faiss file in another thread while the block runs, and the
    search then uses that index: the same results as a fresh load."""
    import threading

    from muse_infer.index import ann_read_meanwhile

    index = EmbeddingIndex.load(ann_indexes["hnsw"], ann=True)
    queries = shifted_queries(index.embeddings, 5, seed=31)
    readers = []
    real_load = index.load_ann

    def load_and_note():
        readers.append(threading.current_thread())
        real_load()

    index.load_ann = load_and_note
    with ann_read_meanwhile(index):
        pass
    assert len(readers) == 1 and readers[0] is not threading.current_thread()
    assert index._faiss is not None
    fresh = EmbeddingIndex.load(ann_indexes["hnsw"], ann=True)
    for (rows, scores), (want_rows, want_scores) in zip(
        index.search_rows(queries, 10), fresh.search_rows(queries, 10), strict=True
    ):
        np.testing.assert_array_equal(rows, want_rows)
        np.testing.assert_array_equal(scores, want_scores)


def test_nothing_is_read_meanwhile_for_an_exact_search(ann_indexes):
    from muse_infer.index import ann_read_meanwhile

    for index, exact in (
        (EmbeddingIndex.load(ann_indexes["flat"]), False),
        (EmbeddingIndex.load(ann_indexes["hnsw"]), True),
    ):
        with ann_read_meanwhile(index, exact):
            pass
        assert index._faiss is None


def test_without_faiss_the_search_after_a_read_meanwhile_falls_back_as_before(
    ann_indexes, monkeypatch, caplog
):
    """faiss not installed: nothing is read meanwhile, and the search warns and scans exactly, as it
    does without ``ann_read_meanwhile``; required (ann=True), the search raises the error naming faiss."""
    from muse_infer.index import ann as ann_module
    from muse_infer.index import ann_read_meanwhile

    def no_faiss():
        raise IndexFileError("approximate search needs faiss: pip install faiss-cpu")

    monkeypatch.setattr(ann_module, "faiss_module", no_faiss)
    index = EmbeddingIndex.load(ann_indexes["hnsw"])
    queries = shifted_queries(index.embeddings, 3, seed=12)
    with caplog.at_level(logging.WARNING):
        with ann_read_meanwhile(index):
            pass
        found = index.search_rows(queries, 10)
    assert "needs faiss" in caplog.text and index.search_method == "exact"
    for (rows, _), (want, _) in zip(found, exact_search(index.embeddings, queries, 10), strict=True):
        np.testing.assert_array_equal(rows, want)
    required = EmbeddingIndex.load(ann_indexes["hnsw"], ann=True)
    with ann_read_meanwhile(required):
        pass
    with pytest.raises(IndexFileError, match="needs faiss"):
        required.search_rows(queries, 10)


def test_an_ann_file_read_meanwhile_reports_as_a_search_would(ann_indexes, tmp_path, caplog):
    """A file faiss cannot read: required (ann=True), its IndexFileError comes out when the block ends;
    by default, the warning and an exact search. An error of the block itself wins over the reading's."""
    from muse_infer.index import ann_read_meanwhile

    npy = tmp_path / "hnsw.npy"
    for suffix in (".npy", ".json", ".rows.parquet", ".ann.faiss", ".ann.json"):
        shutil.copy(ann_indexes["hnsw"].with_suffix(suffix), npy.with_suffix(suffix))
    message = damage("unreadable by faiss", npy, npy)
    with pytest.raises(IndexFileError, match=message):
        with ann_read_meanwhile(EmbeddingIndex.load(npy, ann=True)):
            pass
    with pytest.raises(KeyError, match="the block's own"):
        with ann_read_meanwhile(EmbeddingIndex.load(npy, ann=True)):
            raise KeyError("the block's own")
    with caplog.at_level(logging.WARNING):
        index = EmbeddingIndex.load(npy)
        with ann_read_meanwhile(index):
            pass
    assert message in caplog.text and index.search_method == "exact"
    queries = shifted_queries(np.load(npy), 3, seed=9)
    for (rows, _), (want, _) in zip(
        index.search_rows(queries, 10), exact_search(index.embeddings, queries, 10), strict=True
    ):
        np.testing.assert_array_equal(rows, want)


# --- shards and merging -------------------------------------------------------------------------


def test_shards_search_and_merge_like_one_index(tmp_path):
    sizes = [300, 1, 200]
    blocks = [clustered_rows(n, DIM, seed=30 + i) for i, n in enumerate(sizes)]
    blocks[2][5] = blocks[0][9]  # the same vector in two shards: a tie broken by shard order
    roots = [tmp_path / "a", tmp_path / "a" / "sub", tmp_path / "b"]
    shard_paths = []
    for i, (rows, root) in enumerate(zip(blocks, roots, strict=True)):
        shard_paths.append(
            write_index(
                tmp_path / f"part{i}.npy",
                rows,
                paths_for(len(rows), f"s{i}"),
                model=fake_model("m"),
                root=root,
            )
        )
    build_ann(shard_paths[0], kind="hnsw", threads=1)  # shards may mix kinds
    everything = np.concatenate(blocks)
    relative = [f"a/{p}" for p in paths_for(300, "s0")] + [f"a/sub/{p}" for p in paths_for(1, "s1")]
    relative += [f"b/{p}" for p in paths_for(200, "s2")]
    single = EmbeddingIndex.load(write_index(tmp_path / "single.npy", everything, relative, root=tmp_path))
    merged_path = merge_indexes(tmp_path / "merged.npy", shard_paths)
    merged = EmbeddingIndex.load(merged_path)
    assert (
        merged.root == tmp_path
        and list(merged.paths) == relative
        and merged.identity == fake_model("m").identity
    )
    np.testing.assert_array_equal(np.asarray(merged.embeddings), np.asarray(single.embeddings))
    sharded = ShardedIndex.load(shard_paths)
    queries = np.concatenate([blocks[0][9][None], shifted_queries(everything, 20, seed=9)])
    for query in queries:
        want = single.search(query, top_k=8, exact=True)
        for got in (sharded.search(query, top_k=8, exact=True), merged.search(query, top_k=8)):
            assert [(h.row, h.absolute_path) for h in got] == [(h.row, h.absolute_path) for h in want]
            np.testing.assert_array_equal([h.score for h in got], [h.score for h in want])  # the same bits
        assert [h.path for h in merged.search(query, top_k=8)] == [h.path for h in want]
    tie = sharded.search(blocks[0][9], top_k=2, exact=True)
    assert [(h.shard, h.row) for h in tie] == [(0, 9), (2, 306)]  # 300 + 1 + 5
    assert sharded.search_method == "mixed (exact, hnsw)"
    with pytest.raises(IndexInputError, match="more than one of the shards"):
        merge_indexes(tmp_path / "twice.npy", [shard_paths[0], shard_paths[0]])
    write_index(tmp_path / "othermodel.npy", blocks[1], ["x.mp4"], model=fake_model("n"), root=tmp_path)
    with pytest.raises(IndexInputError, match="only indexes of one model"):
        merge_indexes(tmp_path / "bad.npy", [shard_paths[0], tmp_path / "othermodel.npy"])
    with pytest.raises(IndexInputError, match="already exists"):
        merge_indexes(merged_path, shard_paths)


# --- growing in place ---------------------------------------------------------------------------


def finish(out: Path, embeddings: dict[str, np.ndarray], stats: dict[str, int]):
    """Run the encode job's final step on synthetic results: path -> row, path -> mtime."""
    from muse_infer.index import read_previous
    from muse_infer.jobs.encode import Entry, Known, finish_index

    entries = [Entry(p, 100, stats[p]) for p in sorted(embeddings)]
    known = {p: Known(100, stats[p], embedding=e) for p, e in embeddings.items()}
    job = {"root": "/videos", "model": fake_model("m").identity, "settings": {"max_frames": 4}}
    previous = read_previous(out)  # as the job reads it when it opens
    fields = {"precision": "fp32"}
    return finish_index(out, entries, known, job, fake_model("m").source, "torch", DIM, fields, previous)


@pytest.mark.parametrize("kind, removal", [("hnsw", "rebuilt"), ("ivf-pq", "re-added all")])
def test_growing_adds_rows_in_place_and_rebuilds_after_removals(tmp_path, kind, removal):
    rows = clustered_rows(1500, DIM, seed=40)
    names = paths_for(1500)
    current = {p: rows[i] for i, p in enumerate(names[:1200])}
    stats = dict.fromkeys(names, 1)
    out = tmp_path / "emb.npy"
    finish(out, current, stats)
    build_ann(out, kind=kind, threads=1)
    current |= {p: rows[1200 + i] for i, p in enumerate(names[1200:1300])}
    note = finish(out, current, stats).index_note
    assert note == f"added 100 rows to the {kind} index"
    grown = EmbeddingIndex.load(out, ann=True)
    assert list(grown.paths) == names[:1300] and grown.ann_meta["count"] == 1300
    assert grown.metadata["precision"] == "fp32" and grown.metadata["backend"] == "torch"
    del current[names[5]]
    current[names[17]] = rows[1400]  # a changed file: its old row must go
    stats[names[17]] = 2
    current[names[1450]] = rows[1450]
    note = finish(out, current, stats).index_note
    assert removal in note
    index = EmbeddingIndex.load(out, ann=True)
    assert names[5] not in set(index.paths) and len(index) == 1300
    assert list(index.paths[-2:]) == [names[17], names[1450]]  # changed and new files come last
    np.testing.assert_array_equal(index.embeddings[index.paths.index(names[17])], rows[1400])
    queries = shifted_queries(index.embeddings, 30, seed=41)
    truth = exact_search(index.embeddings, queries, 10)
    assert recall([r for r, _ in index.search_rows(queries, 10)], [t for t, _ in truth]) >= 0.9
    assert finish(out, current, stats).index_note == f"{kind} index unchanged"


# --- the command line ---------------------------------------------------------------------------


def test_index_commands_build_grow_and_search(tmp_path):
    videos = tmp_path / "videos"
    videos.mkdir()
    for seed in range(4):
        noise_video(videos / f"v{seed}.mp4", seed, 4, 2)
    out = tmp_path / "emb.npy"
    options = ["--model", "tiny", "--device", "cpu", "--frames", "2", "--workers", "0", "-q"]
    invoke("encode-videos", videos, "--out", out, *options, check_rc=0)
    built = invoke("index", "build", out, "--kind", "hnsw", "--threads", "1", check_rc=0).output
    assert "hnsw (HNSW32,SQ8) for 4 rows" in built
    noise_video(videos / "v9.mp4", 9, 4, 2)
    grown = invoke("encode-videos", videos, "--out", out, *options, check_rc=0)
    assert "added 1 rows to the hnsw index" in grown.output
    info = invoke("index", "info", out, "--json", check_rc=0).output
    described = json.loads(info)
    assert described["rows"] == 5 and described["search"] == "hnsw" and described["ann"]["count"] == 5
    approximate = json.loads(invoke("search", "a cat", "--index", out, "--json", check_rc=0).stdout)
    exact = json.loads(invoke("search", "a cat", "--index", out, "--json", "--exact", check_rc=0).stdout)
    assert {r["search"] for r in approximate} == {"hnsw"} and {r["search"] for r in exact} == {"exact"}
    assert [(r["path"], r["score"]) for r in approximate] == [(r["path"], r["score"]) for r in exact]
    assert approximate[0]["absolute_path"] == str(videos / approximate[0]["path"])
    assert "verified: every chunk hash" in invoke("index", "info", out, "--verify", check_rc=0).output


def test_index_commands_refuse_bad_input_in_one_line(tmp_path):
    good = write_index(tmp_path / "good.npy", clustered_rows(100, DIM), paths_for(100))
    other_dim = write_index(tmp_path / "narrow.npy", clustered_rows(10, 8), paths_for(10, "n"))
    foreign = tmp_path / "foreign.npy"
    foreign.write_bytes(b"not ours")
    np.save(tmp_path / "queries.npy", np.ones((20, 7), np.float32))
    truncated = tmp_path / "trunc.npy"
    for suffix in (".npy", ".json", ".rows.parquet"):
        shutil.copy(good.with_suffix(suffix), truncated.with_suffix(suffix))
    truncated.write_bytes(truncated.read_bytes()[:-8])
    cases = [
        (["index", "build", tmp_path / "missing.npy"], "no such index"),
        (["index", "build", tmp_path / "x.txt"], "an index is an EMB.npy file"),
        (["index", "build", good, "--memory", "lots"], "memory budget"),
        (["index", "build", good, "--kind", "hnsw", "--memory", "1K"], "more than the memory budget"),
        (["index", "build", good, "--tune-queries", tmp_path / "queries.npy"], "tuning queries must be"),
        (["index", "build", good, "--tune-queries", tmp_path / "none.npy"], "--tune-queries"),
        (["index", "merge", foreign, good], "not replacing it"),
        (["index", "merge", good, good], "is one of the shards"),
        (["index", "merge", tmp_path / "m.npy", good, other_dim], "rows of 8"),
        (["index", "info", truncated], "truncated"),
        (["search", "a cat", "--index", good], "records no model"),
    ]
    for args, message in cases:
        output = invoke(*args, check_rc=2).output
        lines = [line for line in output.splitlines() if line.strip()]
        assert len(lines) == 1 and lines[0].startswith("Error: ") and message in lines[0], (args, output)
    assert foreign.read_bytes() == b"not ours" and not (tmp_path / "m.npy").exists()


def test_every_index_command_has_help_with_an_example():
    for command in (["index"], ["index", "build"], ["index", "merge"], ["index", "info"], ["search"]):
        result = invoke(*command, "--help", check_rc=0)
        assert "Example:" in result.output and "muse-infer " + " ".join(command) in result.output


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["hnsw", "ivf-pq"])
def test_recall_at_a_hundred_thousand_rows(tmp_path, kind):
    out = write_index(tmp_path / "emb.npy", clustered_rows(100_000, 256, seed=50), paths_for(100_000))
    build_ann(out, kind=kind)
    index = EmbeddingIndex.load(out, ann=True)
    queries = shifted_queries(index.embeddings, 300, seed=51)
    truth = exact_search(index.embeddings, queries, 10, matmul=True)
    assert recall([r for r, _ in index.search_rows(queries, 10)], [t for t, _ in truth]) >= 0.95
