"""muse_infer.evaluation and `muse-infer eval`: metrics from embeddings against a loop written out here,
a model on a JSONL dataset, and an encoded index with a captions file giving the same numbers."""

from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner

from muse_infer.cli import main
from muse_infer.data.synthetic import demo_samples, render_sample
from muse_infer.data.writer import write_video
from muse_infer.datasets import DataSpec
from muse_infer.evaluation import evaluate, format_report, similarity_report


def loop_ranks(sim, targets):
    """Optimistic ranks, one row at a time: 1 + the number of strictly better columns."""
    return np.array([1 + sum(s > row[t] for s in row) for row, t in zip(sim, targets, strict=True)])


def loop_metrics(ranks):
    return {
        "R@1": 100 * np.mean(ranks <= 1),
        "R@5": 100 * np.mean(ranks <= 5),
        "R@10": 100 * np.mean(ranks <= 10),
        "MdR": float(np.median(ranks)),
        "MnR": float(np.mean(ranks)),
    }


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_similarity_report_one_caption_a_video_with_ties(seed):
    rng = np.random.default_rng(seed)
    text = rng.integers(-2, 3, (30, 4)).astype(np.float32)  # small integers: many tied scores
    video = rng.integers(-2, 3, (30, 4)).astype(np.float32)
    report = similarity_report(text, video, np.arange(30))
    sim = text.astype(np.float64) @ video.T.astype(np.float64)
    for direction, matrix in (("t2v", sim), ("v2t", sim.T)):
        expected = loop_metrics(loop_ranks(matrix, np.arange(30)))
        assert report[direction] == pytest.approx(expected), direction
    assert report["captions"] == report["videos"] == 30


def test_similarity_report_several_captions_a_video():
    rng = np.random.default_rng(5)
    owners = np.array([0, 0, 1, 2, 2, 2, 4])  # video 3 has no caption: a distractor only
    text, video = rng.normal(size=(7, 8)), rng.normal(size=(5, 8))
    report = similarity_report(text, video, owners)
    sim = text @ video.T
    assert report["t2v"] == pytest.approx(loop_metrics(loop_ranks(sim, owners)))
    captioned = sorted(set(owners))  # v2t (CLIP4Clip): each captioned video vs caption groups (best)
    best = np.array([[sim[owners == g, v].max() for g in captioned] for v in captioned])  # (G, G)
    assert report["v2t"] == pytest.approx(loop_metrics(loop_ranks(best, np.arange(len(captioned)))))
    assert "t2v" in format_report(report) and "MdR" in format_report(report)


@pytest.fixture(scope="module")
def small_dataset(tmp_path_factory):
    root = tmp_path_factory.mktemp("videos")
    (root / "clips").mkdir()
    lines = []
    for number, (spec, caption) in enumerate(demo_samples(seed=3, n=4)):
        write_video(root / "clips" / f"v{number}.mp4", render_sample(spec, 64), 2.0)
        lines.append({"video": f"clips/v{number}.mp4", "caption": caption})
    lines.append({"video": "clips/v0.mp4", "caption": "a second caption for the first video"})
    (root / "captions.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines))
    return root


def test_eval_of_a_model_equals_eval_of_its_index(small_dataset, tmp_path):
    runner = CliRunner()
    common = ["--model", "tiny", "--clip-weights", "random"]
    direct = runner.invoke(
        main,
        [
            "eval",
            *common,
            "--dataset",
            "jsonl",
            "--annotations",
            str(small_dataset / "captions.jsonl"),
            "--workers",
            "0",
            "--json",
        ],
    )
    assert direct.exit_code == 0, direct.output
    encoded = runner.invoke(
        main,
        [
            "encode-videos",
            str(small_dataset / "clips"),
            "--out",
            str(tmp_path / "emb.npy"),
            *common,
            "--workers",
            "0",
        ],
    )
    assert encoded.exit_code == 0, encoded.output
    captions = tmp_path / "captions.jsonl"  # paths relative to the index root (the clips folder)
    captions.write_text((small_dataset / "captions.jsonl").read_text().replace("clips/", ""))
    indexed = runner.invoke(
        main, ["eval", "--index", str(tmp_path / "emb.npy"), "--captions", str(captions), "--json"]
    )
    assert indexed.exit_code == 0, indexed.output
    a, b = json.loads(direct.output), json.loads(indexed.output)
    assert a["captions"] == b["captions"] == 5 and a["videos"] == b["videos"] == 4
    for direction in ("t2v", "v2t"):
        assert a[direction] == pytest.approx(b[direction])
    sdk = evaluate(
        "tiny", DataSpec("jsonl", str(small_dataset / "captions.jsonl")), clip_weights="random", workers=0
    )
    assert sdk["t2v"] == pytest.approx(a["t2v"])


def test_eval_errors_are_clear(small_dataset, tmp_path):
    runner = CliRunner()
    result = runner.invoke(main, ["eval", "--model", "tiny"])
    assert result.exit_code == 2 and "--dataset" in result.output
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"video": "x.mp4"}\n')
    result = runner.invoke(main, ["eval", "--model", "tiny", "--dataset", "jsonl", "--annotations", str(bad)])
    assert result.exit_code == 2 and "line 1: missing field 'caption'" in result.output
    result = runner.invoke(main, ["eval", "--index", str(tmp_path / "none.npy"), "--captions", str(bad)])
    assert result.exit_code == 2
