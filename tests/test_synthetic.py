"""The synthetic benchmark: determinism, unique captions, what the captions say is what is drawn, files."""

import json

import av
import numpy as np
import pytest

from muse_infer.data import synthetic
from muse_infer.data.synthetic import (
    COLOURS,
    DEFAULT_SIZES,
    SampleSpec,
    demo_samples,
    generate_synthetic_benchmark,
    render_sample,
    spec_from_record,
    split_specs,
    target_masks,
)


def make_spec(**changes):
    fields = dict(
        kind="scene",
        shape="circle",
        colour="red",
        size="large",
        count=1,
        direction="right",
        event="none",
        colour_to=None,
        seed=7,
    )
    fields.update(changes)
    return SampleSpec(**fields)


def centroid(mask):
    """(H, W) bool -> (x, y) mean position of the set pixels."""
    ys, xs = np.nonzero(mask)
    return xs.mean(), ys.mean()


def nearest_colour(rgb):
    return min(COLOURS, key=lambda name: np.sum((np.asarray(COLOURS[name], float) - rgb) ** 2))


def decode(path):
    with av.open(str(path)) as container:
        return np.stack([frame.to_ndarray(format="rgb24") for frame in container.decode(video=0)])


def test_same_seed_same_specs_and_frames():
    first, again = split_specs("train", 60, seed=3), split_specs("train", 60, seed=3)
    assert first == again
    assert [s.caption for s in split_specs("train", 60, seed=4)] != [s.caption for s in first]
    for spec in (first[0], split_specs("test_small", 1, seed=3)[0]):
        assert render_sample(spec).tobytes() == render_sample(spec).tobytes()


def test_smaller_split_is_a_prefix_and_splits_are_independent():
    assert split_specs("train", 30, seed=0) == split_specs("train", 200, seed=0)[:30]
    assert split_specs("test", 20, seed=0)[0] != split_specs("val", 20, seed=0)[0]


def test_captions_unique_and_kinds_per_split():
    for split, count in DEFAULT_SIZES.items():
        specs = split_specs(split, count, seed=0)
        assert len({spec.caption for spec in specs}) == count, split
    assert {s.kind for s in split_specs("test", 100)} == {"scene"}
    small = split_specs("test_small", 100)
    assert {(s.kind, s.size, s.count) for s in small} == {("small", "tiny", 1)}
    train_kinds = [s.kind for s in split_specs("train", 800)]
    assert train_kinds.count("small") == 320
    with pytest.raises(ValueError, match="unique captions"):
        split_specs("test_small", 900)  # only 840 small-object captions exist
    with pytest.raises(ValueError, match="unknown split"):
        split_specs("holdout", 5)


def test_caption_wording():
    assert make_spec().caption == "a large red circle moves right"
    assert (
        make_spec(count=2, shape="cross", event="turns", colour_to="blue").caption
        == "two large red crosses move right and turn blue"
    )
    assert (
        make_spec(count=3, size="small", event="appears", direction="up").caption
        == "three small red circles appear and move up"
    )
    assert make_spec(event="disappears").caption == "a large red circle moves right and disappears"
    assert (
        make_spec(kind="small", size="tiny", event="stops").caption
        == "a tiny red circle moves right and stops"
    )


def test_small_object_is_small():
    for spec in split_specs("test_small", 12, seed=1):
        masks = target_masks(spec)  # (T, H, W) tiny object only
        frames = render_sample(spec)
        visible = [t for t in range(len(masks)) if masks[t].any()]
        assert len(visible) >= len(masks) // 2
        for t in visible:
            ys, xs = np.nonzero(masks[t])
            assert 20 <= masks[t].sum() <= 100, spec  # 8-10 px shapes: 0.04-0.2% of a 224x224 frame
            assert np.ptp(xs) < 11 and np.ptp(ys) < 11
        # The distractor is drawn too, and is far bigger: many more saturated pixels than the tiny object.
        t = visible[0]
        saturated = (frames[t].max(-1).astype(int) - frames[t].min(-1)) > 120
        assert saturated.sum() > 20 * masks[t].sum()


def test_tiny_object_never_touches_the_distractor():
    times = np.arange(12) / 2.0
    for spec in split_specs("test_small", 50, seed=0):
        _, (distractor, tiny) = synthetic._layout(spec, 224, 2.0, 6.0)
        assert not distractor.target and tiny.target
        assert distractor.colours[0] not in (spec.colour, spec.colour_to)
        assert synthetic._min_gap(distractor, tiny, times) >= 4


def test_sizes_counts_and_lanes():
    for size, low, high in (("small", 250, 600), ("large", 1200, 2400)):
        for count in (1, 2, 3):
            for shape in ("circle", "square"):
                mask = target_masks(make_spec(size=size, count=count, shape=shape, seed=count))[0]
                assert low * count <= mask.sum() <= high * count, (size, count, shape)


@pytest.mark.parametrize("direction", ["left", "right", "up", "down"])
def test_motion_goes_where_the_caption_says(direction):
    masks = target_masks(make_spec(direction=direction, seed=11))
    (x0, y0), (x1, y1) = centroid(masks[0]), centroid(masks[-1])
    dx, dy = {"left": (-1, 0), "right": (1, 0), "up": (0, -1), "down": (0, 1)}[direction]
    assert (x1 - x0) * dx + (y1 - y0) * dy > 60  # 14-20 px/s over 5.5 s
    assert abs((x1 - x0) * dy) + abs((y1 - y0) * dx) < 1  # and nowhere else


def test_events_happen_at_the_halfway_mark():
    half = 6  # 12 frames at 2 fps; frame 6 is t = 3 s
    appears = target_masks(make_spec(event="appears")).any(axis=(1, 2))
    assert not appears[:half].any() and appears[half:].all()
    disappears = target_masks(make_spec(event="disappears")).any(axis=(1, 2))
    assert disappears[:half].all() and not disappears[half:].any()
    stops = target_masks(make_spec(event="stops"))
    assert centroid(stops[half - 1]) != centroid(stops[0])
    assert all(np.array_equal(stops[t], stops[half]) for t in range(half, 12))
    spec = make_spec(event="turns", colour_to="blue", kind="small", size="tiny")
    frames, masks = render_sample(spec), target_masks(spec)
    assert nearest_colour(frames[0][masks[0]].mean(0)) == "red"
    assert nearest_colour(frames[-1][masks[-1]].mean(0)) == "blue"


def test_demo_samples():
    demo = demo_samples(seed=0)
    assert 5 <= len(demo) <= 8 and demo == demo_samples(seed=0)
    specs = [spec for spec, _ in demo]
    assert len({s.colour for s in specs}) == len(specs)
    assert {s.kind for s in specs} == {"scene"}
    assert [caption for _, caption in demo] == [s.caption for s in specs]


def test_generate_tiny_benchmark(tmp_path):
    sizes = {"train": 3, "val": 2, "test": 2, "test_small": 2}
    manifest_path = generate_synthetic_benchmark(tmp_path, seed=5, sizes=sizes, workers=1)
    manifest = json.loads(open(manifest_path).read())
    assert manifest["splits"] == {
        split: {"jsonl": f"{split}.jsonl", "videos": n} for split, n in sizes.items()
    }
    for split, count in sizes.items():
        lines = [json.loads(line) for line in (tmp_path / f"{split}.jsonl").read_text().splitlines()]
        assert len(lines) == count
        for line in lines:
            assert line["video"].startswith(f"{split}/") and line["video"].endswith(".mp4")
            assert isinstance(line["caption"], str) and set(synthetic.SPEC_FIELDS) <= set(line)
            spec = spec_from_record(line)
            assert spec.caption == line["caption"]
            decoded = decode(tmp_path / line["video"])
            expected = render_sample(spec)
            assert decoded.shape == expected.shape == (12, 224, 224, 3)
            assert np.abs(decoded.astype(int) - expected).mean() < 3
            if spec.kind == "small":  # the tiny object's colour survives 4:2:0 encoding
                masks = target_masks(spec)
                t = int(np.argmax(masks.any(axis=(1, 2))))
                assert nearest_colour(decoded[t][masks[t]].mean(0)) == spec.colour


def test_parallel_generation_is_byte_identical(tmp_path):
    sizes = {"test_small": 3, "test": 2}
    serial = generate_synthetic_benchmark(tmp_path / "a", seed=2, sizes=sizes, workers=1)
    parallel = generate_synthetic_benchmark(tmp_path / "b", seed=2, sizes=sizes, workers=2)
    for name in ("test_small.jsonl", "test.jsonl", "test_small/test_small_00002.mp4", "test/test_00001.mp4"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes(), name
    assert open(serial).read() == open(parallel).read()


def test_command_line(tmp_path, capsys):
    synthetic.main([str(tmp_path), "--seed", "1", "--sizes", "test=2", "--workers", "1"])
    assert "wrote 2 videos" in capsys.readouterr().out
    assert len((tmp_path / "test.jsonl").read_text().splitlines()) == 2
    assert sorted(p.name for p in (tmp_path / "test").iterdir()) == ["test_00000.mp4", "test_00001.mp4"]
