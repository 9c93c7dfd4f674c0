"""Arrow columns built from buffers (muse_infer.index.arrow_columns) against pyarrow's own conversions,
and the commands that write or read them never importing pandas."""

import json
import subprocess
import sys
import unicodedata

import numpy as np
import pyarrow as pa
import pytest
from video_factory import make_video

from muse_infer.index.arrow_columns import array, binaries, numbers, numpy_values, texts

SIZES = (0, 1, 7, 8, 9, 63, 64, 65, 1000)
NUMERIC = {
    "int64": (pa.int64(), lambda rng, n: rng.integers(-(2**62), 2**62, n)),
    "int32": (pa.int32(), lambda rng, n: rng.integers(-(2**31), 2**31, n)),
    "uint8": (pa.uint8(), lambda rng, n: rng.integers(0, 256, n)),
    "float64": (pa.float64(), lambda rng, n: rng.standard_normal(n) * 1e6),
    "float32": (pa.float32(), lambda rng, n: rng.standard_normal(n).astype(np.float32)),
}
CHARACTERS = ["a", "Z", "/", " ", "é", unicodedata.normalize("NFD", "é"), "日本", "🎬", "\x00", "\n", ""]


def with_nulls(values: list, rng, share: float) -> list:
    return [None if rng.random() < share else v for v in values]


def random_text(rng) -> str:
    return "".join(rng.choice(CHARACTERS) for _ in range(rng.integers(0, 12)))


def assert_same_array(got, want):
    got.validate(full=True)
    assert got.type == want.type
    assert got.equals(want), (got, want)
    assert got.to_pylist() == want.to_pylist()


@pytest.mark.parametrize("name", sorted(NUMERIC))
@pytest.mark.parametrize("share", (0.0, 0.3, 1.0))
def test_numbers_are_what_pa_array_makes(name, share):
    type_, draw = NUMERIC[name]
    rng = np.random.default_rng(len(name) + int(share * 10))
    for n in SIZES:
        drawn = draw(rng, n)
        as_python = with_nulls(drawn.tolist(), rng, share)
        assert_same_array(numbers(as_python, type_), pa.array(as_python, type_))
        assert_same_array(array(as_python, type_), pa.array(as_python, type_))
        assert_same_array(numbers(drawn, type_), pa.array(drawn.tolist(), type_))  # a NumPy array


def test_numbers_take_nan_as_a_value_and_integral_floats_as_integers():
    values = [1.5, float("nan"), None, float("inf")]
    got, want = numbers(values, pa.float64()), pa.array(values, pa.float64())
    assert got.null_count == want.null_count == 1
    np.testing.assert_array_equal(numpy_values(got, np.float64, -1.0), [1.5, np.nan, -1.0, np.inf])
    assert_same_array(numbers([3.0, None, -2.0], pa.int64()), pa.array([3, None, -2], pa.int64()))


@pytest.mark.parametrize(
    "values, type_, error",
    [
        (["7"], pa.int64(), TypeError),
        ([1.5], pa.int64(), TypeError),  # pa.array truncates it to 1
        ([float("nan")], pa.int32(), TypeError),
        ([2**63], pa.int64(), OverflowError),
        ([2**31], pa.int32(), OverflowError),
        ([-1], pa.uint8(), OverflowError),
        ([2**80], pa.int64(), TypeError),  # NumPy keeps it as an object
        ([b"x"], pa.float64(), TypeError),
    ],
)
def test_numbers_refuse_what_is_not_a_number_of_the_type(values, type_, error):
    with pytest.raises(error):
        numbers(values, type_)


@pytest.mark.parametrize("share", (0.0, 0.3, 1.0))
def test_texts_and_binaries_are_what_pa_array_makes(share):
    rng = np.random.default_rng(int(share * 10))
    for n in SIZES:
        words = with_nulls([random_text(rng) for _ in range(n)], rng, share)
        assert_same_array(texts(words), pa.array(words, pa.string()))
        assert_same_array(array(words, pa.string()), pa.array(words, pa.string()))
        raw = [
            None if w is None else w.encode("utf-8") + bytes(rng.integers(0, 256, 3).tolist()) for w in words
        ]
        assert_same_array(binaries(raw), pa.array(raw, pa.binary()))
        assert_same_array(array(raw, pa.binary()), pa.array(raw, pa.binary()))


def test_a_name_that_is_not_utf8_is_refused_as_pa_array_refuses_it():
    name = b"caf\xe9.mp4".decode("utf-8", "surrogateescape")  # as os.walk gives it
    with pytest.raises(UnicodeEncodeError):
        pa.array([name], pa.string())
    with pytest.raises(UnicodeEncodeError):
        texts(["ok.mp4", name])
    with pytest.raises(TypeError):
        texts([b"bytes.mp4"])
    with pytest.raises(TypeError):
        binaries(["str.mp4"])


def test_another_type_goes_to_pa_array():
    assert_same_array(array([True, None], pa.bool_()), pa.array([True, None], pa.bool_()))


@pytest.mark.parametrize("name", ["int64", "int32", "float64", "float32", "uint8"])
def test_numpy_values_read_every_layout_like_to_pylist(name):
    type_, draw = NUMERIC[name]
    rng = np.random.default_rng(3)
    fill = {"float64": np.nan, "float32": np.nan}.get(name, 0)
    dtype = np.float64 if name.startswith("float") else np.int64
    for n in SIZES[1:]:
        values = with_nulls(draw(rng, n).tolist(), rng, 0.3)
        whole = pa.array(values, type_)
        cut = int(rng.integers(0, n))
        start = int(rng.integers(0, 20))  # an offset into the buffers that is not a multiple of 8
        padded = pa.array([None] * start + values + [1] * 5, type_).slice(start, n)
        chunked = pa.chunked_array([whole.slice(0, cut), padded.slice(cut)], type_)
        for column in (whole, padded, chunked):
            want = np.array([fill if v is None else v for v in column.to_pylist()], dtype)
            np.testing.assert_array_equal(numpy_values(column, dtype, fill), want)
    for empty in (pa.array([], type_), pa.chunked_array([], type_)):
        assert numpy_values(empty, dtype, fill).shape == (0,)


def test_numpy_values_never_write_into_the_arrow_buffer():
    column = pa.array([1.0, None, 3.0], pa.float64())
    numpy_values(column, np.float64, 9.0)[0] = 42.0
    assert column.to_pylist() == [1.0, None, 3.0]


PANDAS_WATCH = r"""
import json, sys, traceback
attempts = []
command = None

class Watch:
    def find_spec(self, name, path=None, target=None):
        if name == "pandas" and not attempts:
            where = [f"{f.filename}:{f.lineno}" for f in traceback.extract_stack() if "muse_infer" in f.filename]
            attempts.append({"command": command, "where": where[-3:]})
        return None

sys.meta_path.insert(0, Watch())
from muse_infer.cli import main

for command in json.loads(sys.argv[1]):
    try:
        main(command)
    except SystemExit as end:
        if end.code:
            print(json.dumps({"failed": command, "code": end.code}))
            raise
print(json.dumps({"attempts": attempts}))
"""


def test_encode_merge_reroot_and_search_do_not_import_pandas(tmp_path):
    """pyarrow's conversions import pandas (0.5-0.7 s of a cold start) when it is installed; the index
    code builds and reads its columns from buffers instead. The watch sees an import attempt whether or
    not pandas is installed."""
    for folder, count in (("one", 2), ("two", 2)):
        (tmp_path / folder).mkdir()
        for i in range(count):
            make_video(tmp_path / folder / f"clip_{i}.mp4", 8, 8.0)
    (tmp_path / "moved").mkdir()
    for i in range(2):
        (tmp_path / "moved" / f"clip_{i}.mp4").write_bytes((tmp_path / "one" / f"clip_{i}.mp4").read_bytes())
    options = ["--model", "tiny", "--device", "cpu", "--frames", "4"]
    commands = [
        ["encode-videos", "one", "--out", "one.npy", *options],
        ["encode-videos", "two", "--out", "two.npy", *options],
        ["encode-videos", "one", "--out", "moments.npy", "--window", "0.5", "--stride", "0.5", *options],
        ["search", "a cat", "--index", "moments.npy", "--per-video", "2", "--json"],
        ["index", "merge", "all.npy", "one.npy", "two.npy", "--kind", "none"],
        ["search", "a cat", "--index", "one.npy", "--index", "two.npy", "--json"],
        ["search", "a cat", "--index", "all.npy", "--min-duration", "0.1", "--json"],
        ["index", "reroot", "one.npy", "moved"],
    ]
    result = subprocess.run(
        [sys.executable, "-c", PANDAS_WATCH, json.dumps(commands)],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report == {"attempts": []}, report
    from muse_infer import EmbeddingIndex

    assert len(EmbeddingIndex.load(tmp_path / "all.npy")) == 4
    moments = EmbeddingIndex.load(tmp_path / "moments.npy")
    spans = [moments.span(row) for row in range(len(moments))]
    assert len(spans) > 2 and all(start is not None and end > start for start, end in spans)


def repeated_by_group_by(table, keys) -> set:
    """The reference: the rows whose keys ``group_by`` counts more than once."""
    counts = table.group_by(keys).aggregate([([], "count_all")]).to_pylist()
    repeated = {tuple(c[k] for k in keys) for c in counts if c["count_all"] > 1}
    return {i for i, row in enumerate(table.select(keys).to_pylist()) if tuple(row.values()) in repeated}


@pytest.mark.parametrize("seed", range(6))
def test_first_repeated_row_finds_what_group_by_counts(seed):
    from muse_infer.index.shards import first_repeated_row

    rng = np.random.default_rng(seed)
    keys = ["path", "path_bytes", "start_s", "end_s"]
    for n in (0, 1, 2, 9, 64, 300):
        pool = max(1, n // (1 + seed % 3))  # few distinct keys: repeats; as many as rows: maybe none
        paths = [f"v{int(i)}.mp4" for i in rng.integers(0, pool, n)]
        raw = [None if rng.random() < 0.8 else bytes([int(i)]) for i in rng.integers(0, 3, n)]
        starts = [None if rng.random() < 0.3 else float(i) for i in rng.integers(0, 3, n)]
        ends = [None if s is None else s + 1.5 for s in starts]
        table = pa.table(
            [texts(paths), binaries(raw), numbers(starts, pa.float64()), numbers(ends, pa.float64())],
            names=keys,
        )
        for chunked in (table, pa.concat_tables([table.slice(0, n // 2), table.slice(n // 2)])):
            want = repeated_by_group_by(chunked, keys)
            got = first_repeated_row(chunked, keys)
            assert (got is None) == (not want), (n, got, want)
            assert got is None or got in want
