"""Retrieval metrics against plain-Python loops (the oracle) and hand-made cases."""

import numpy as np
import pytest
import torch

from muse_infer import metrics
from muse_infer.metrics import metrics_from_ranks, multi_caption_metrics, ranks, retrieval_metrics


def loop_ranks(sim, targets):
    """The definition, one query at a time: 1 + items scoring strictly above the true one."""
    out = []
    for i, row in enumerate(sim.tolist()):
        true_score = row[targets[i]]
        out.append(1 + sum(1 for score in row if score > true_score))
    return out


def loop_metrics(rank_list):
    n = len(rank_list)
    ordered = sorted(rank_list)
    median = ordered[n // 2] if n % 2 else (ordered[n // 2 - 1] + ordered[n // 2]) / 2
    return {
        "R@1": 100 * sum(r <= 1 for r in rank_list) / n,
        "R@5": 100 * sum(r <= 5 for r in rank_list) / n,
        "R@10": 100 * sum(r <= 10 for r in rank_list) / n,
        "MdR": median,
        "MnR": sum(rank_list) / n,
    }


def loop_v2t_ranks(sim, caption_to_video, per_group):
    """Video->text by the definitions in multi_caption_metrics' docstring, one video at a time."""
    num_captions, num_videos = sim.shape
    groups = {v: [c for c in range(num_captions) if caption_to_video[c] == v] for v in range(num_videos)}
    groups = {v: cs for v, cs in groups.items() if cs}
    out = []
    for video, own in sorted(groups.items()):
        best = max(sim[c, video] for c in own)
        if per_group:
            others = [max(sim[c, video] for c in cs) for v, cs in groups.items() if v != video]
        else:
            others = [sim[c, video] for c in range(num_captions) if caption_to_video[c] != video]
        out.append(1 + sum(1 for score in others if score > best))
    return out


def assert_metrics_close(got, expected):
    assert set(got) == {"R@1", "R@5", "R@10", "MdR", "MnR"}
    for key, value in expected.items():
        assert got[key] == pytest.approx(value, abs=1e-9), key
        assert isinstance(got[key], float)


@pytest.mark.parametrize("shape", [(1, 1), (7, 7), (113, 113), (37, 203), (64, 65)])
def test_random_matches_loop(shape):
    rng = np.random.default_rng(sum(shape))
    sim = rng.standard_normal(shape).astype(np.float32)
    expected = loop_ranks(sim, list(range(shape[0])))
    np.testing.assert_array_equal(ranks(sim), expected)
    assert_metrics_close(retrieval_metrics(sim), loop_metrics(expected))


@pytest.mark.parametrize("shape", [(50, 50), (31, 90)])
def test_ties_never_hurt(shape):
    # Integer scores in a tiny range: most rows have ties with the true item.
    sim = np.random.default_rng(1).integers(0, 4, shape)
    expected = loop_ranks(sim, list(range(shape[0])))
    np.testing.assert_array_equal(ranks(sim), expected)
    assert_metrics_close(retrieval_metrics(sim), loop_metrics(expected))


def test_hand_made_cases():
    assert ranks(np.zeros((3, 3))).tolist() == [1, 1, 1]  # all tied: everyone is first
    sim = np.array(
        [
            [0.9, 0.1, 0.2],  # true is best -> 1
            [0.5, 0.4, 0.3],  # one above -> 2
            [0.8, 0.9, 0.7],  # two above -> 3
        ]
    )
    assert ranks(sim).tolist() == [1, 2, 3]
    assert retrieval_metrics(sim) == {
        "R@1": pytest.approx(100 / 3),
        "R@5": 100.0,
        "R@10": 100.0,
        "MdR": 2.0,
        "MnR": 2.0,
    }
    assert ranks(sim.T).tolist() == [1, 2, 1]  # video->text is the transpose
    assert ranks([[1.0, 5.0, 5.0, 5.0]]).tolist() == [4]
    assert ranks([[5.0, 5.0, 1.0, 5.0]]).tolist() == [1]


def test_rank_thresholds_and_even_median():
    got = metrics_from_ranks([1, 5, 6, 10, 11, 100])
    assert got == {
        "R@1": pytest.approx(100 / 6),
        "R@5": pytest.approx(200 / 6),
        "R@10": pytest.approx(400 / 6),
        "MdR": 8.0,
        "MnR": pytest.approx(133 / 6),
    }


def test_rectangular_more_items_than_queries():
    sim = np.array([[0.1, 0.3, 0.9, 0.0], [0.0, 0.5, 0.2, 0.6]])
    assert ranks(sim).tolist() == [3, 2]
    with pytest.raises(ValueError, match="queries must be <= items"):
        ranks(sim.T)


def test_explicit_targets():
    sim = np.array([[0.1, 0.3, 0.9], [0.7, 0.5, 0.2], [0.3, 0.2, 0.1]])
    assert ranks(sim, targets=[2, 0, 2]).tolist() == [1, 1, 3]
    with pytest.raises(ValueError, match="targets must lie in"):
        ranks(sim, targets=[0, 1, 3])


def test_torch_inputs_and_dtypes():
    sim = torch.randn(40, 50)
    expected = ranks(sim.numpy())
    np.testing.assert_array_equal(ranks(sim), expected)
    np.testing.assert_array_equal(ranks(sim.double().T.contiguous().T), expected)  # non-contiguous
    half = sim.half()
    np.testing.assert_array_equal(ranks(half), loop_ranks(half.float().numpy(), list(range(40))))
    bf16 = sim.bfloat16()
    np.testing.assert_array_equal(ranks(bf16), loop_ranks(bf16.float().numpy(), list(range(40))))
    np.testing.assert_array_equal(ranks(sim.requires_grad_()), expected)


def test_nan_is_a_clear_error():
    sim = np.eye(5)
    sim[3, 1] = np.nan
    with pytest.raises(ValueError, match=r"NaN \(first in row 3\)"):
        retrieval_metrics(sim)
    with pytest.raises(ValueError, match="NaN"):
        multi_caption_metrics(torch.tensor(sim), [0, 1, 2, 3, 4])


def test_bad_shapes():
    for bad in (np.zeros(3), np.zeros((2, 2, 2)), np.zeros((0, 3))):
        with pytest.raises(ValueError):
            retrieval_metrics(bad)


def test_chunking_does_not_change_results(monkeypatch):
    rng = np.random.default_rng(2)
    sim = rng.integers(0, 6, (203, 113)).astype(np.float64)
    caption_to_video = rng.integers(0, 113, 203)
    full_t2v = ranks(sim[:113])
    full_multi = {
        v2t: multi_caption_metrics(sim, caption_to_video, v2t) for v2t in ("clip4clip", "all_captions")
    }
    monkeypatch.setattr(metrics, "_CHUNK_ELEMENTS", 500)  # a few rows or columns a chunk
    np.testing.assert_array_equal(ranks(sim[:113]), full_t2v)
    for v2t, expected in full_multi.items():
        assert multi_caption_metrics(sim, caption_to_video, v2t) == expected


@pytest.mark.parametrize("v2t", ["clip4clip", "all_captions"])
@pytest.mark.parametrize("integer_scores", [False, True])
def test_multi_caption_matches_loop(v2t, integer_scores):
    rng = np.random.default_rng(3)
    num_videos, num_captions = 23, 80
    # Every video gets a caption, then the rest at random: 1 to ~8 captions a video.
    caption_to_video = np.concatenate(
        [np.arange(num_videos), rng.integers(0, num_videos, num_captions - num_videos)]
    )
    rng.shuffle(caption_to_video)
    sim = (
        rng.integers(0, 5, (num_captions, num_videos))
        if integer_scores
        else rng.standard_normal((num_captions, num_videos))
    )
    got = multi_caption_metrics(sim, caption_to_video, v2t=v2t)
    assert_metrics_close(got["t2v"], loop_metrics(loop_ranks(sim, caption_to_video)))
    assert_metrics_close(got["v2t"], loop_metrics(loop_v2t_ranks(sim, caption_to_video, v2t == "clip4clip")))


def test_multi_caption_hand_made():
    # Captions 0, 1 describe video 0; caption 2 describes video 1; caption 3 describes video 2.
    caption_to_video = [0, 0, 1, 2]
    sim = np.array(
        [
            [0.2, 0.9, 0.1],
            [0.6, 0.1, 0.1],
            [0.7, 0.8, 0.1],
            [0.9, 0.1, 0.3],
        ]
    )
    got = multi_caption_metrics(sim, caption_to_video)
    # t2v: caption 0 -> video 0 has 0.9 above it: rank 2; caption 1: 1; caption 2: 1; caption 3: 2.
    assert got["t2v"]["MnR"] == pytest.approx(6 / 4)
    # v2t video 0: best own 0.6; groups 1 (0.7) and 2 (0.9) beat it -> 3 under both conventions.
    # video 1: best own 0.8; group 0's best is 0.9 -> 2 (clip4clip); all captions: only caption 0 -> 2.
    # video 2: own 0.3; group 0 (0.1), group 1 (0.1) -> 1.
    assert got["v2t"]["MnR"] == pytest.approx(6 / 3)
    assert got["v2t"]["MdR"] == 2.0
    # A video whose many captions all beat the true one counts once per group, once per caption otherwise.
    sim2 = np.array([[0.5, 0.0], [0.9, 0.0], [0.8, 0.0], [0.7, 1.0]])
    c2v2 = [0, 1, 1, 1]
    assert multi_caption_metrics(sim2, c2v2)["v2t"]["MnR"] == pytest.approx((2 + 1) / 2)
    assert multi_caption_metrics(sim2, c2v2, "all_captions")["v2t"]["MnR"] == pytest.approx((4 + 1) / 2)


def test_multi_caption_skips_uncaptioned_videos_for_v2t():
    sim = np.array([[0.9, 0.1, 0.95], [0.2, 0.8, 0.0]])  # video 2 is a distractor without captions
    got = multi_caption_metrics(sim, [0, 1])
    assert got["t2v"]["MnR"] == pytest.approx(1.5)
    assert got["v2t"]["R@1"] == 100.0
    with pytest.raises(ValueError, match="v2t must be one of"):
        multi_caption_metrics(sim, [0, 1], v2t="dsl")
