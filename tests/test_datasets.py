"""Dataset-layout readers on small files written here in each benchmark's exact layout."""

from __future__ import annotations

import json

import pytest

from muse_infer.datasets import (
    DatasetError,
    DataSpec,
    Pair,
    group_by_video,
    read_pairs,
)


def touch_videos(folder, names):
    folder.mkdir(parents=True, exist_ok=True)
    for name in names:
        (folder / name).write_bytes(b"\0")


def test_msrvtt_test_split(tmp_path):
    (tmp_path / "MSRVTT_JSFUSION_test.csv").write_text(
        "key,vid_key,video_id,sentence\n"
        "ret0,msr7579,video7579,a girl wearing red top and black trouser is putting a sweater on a dog\n"
        'ret1,msr7725,video7725,"young people sit around the edges of a room, clapping"\n'
    )
    touch_videos(tmp_path / "videos", ["video7579.mp4", "video7725.mp4"])
    pairs = read_pairs(DataSpec("msrvtt", str(tmp_path), "test", str(tmp_path / "videos")))
    assert pairs == [
        Pair(
            str(tmp_path / "videos" / "video7579.mp4"),
            "a girl wearing red top and black trouser is putting a sweater on a dog",
        ),
        Pair(
            str(tmp_path / "videos" / "video7725.mp4"),
            "young people sit around the edges of a room, clapping",
        ),
    ]
    assert group_by_video(pairs).one_caption_per_video


def test_msrvtt_train_split_takes_every_caption(tmp_path):
    (tmp_path / "MSRVTT_train.9k.csv").write_text("video_id\nvideo0\nvideo2\n")
    sentences = [
        {"video_id": "video0", "caption": "a car drives"},
        {"video_id": "video1", "caption": "not in the 9k list"},
        {"video_id": "video0", "caption": "a red car"},
        {"video_id": "video2", "caption": "someone cooks"},
    ]
    (tmp_path / "MSRVTT_data.json").write_text(json.dumps({"videos": [], "sentences": sentences}))
    touch_videos(tmp_path / "v", ["video0.mp4", "video2.mp4"])
    pairs = read_pairs(DataSpec("msrvtt", str(tmp_path), "train", str(tmp_path / "v")))
    assert [p.caption for p in pairs] == ["a car drives", "a red car", "someone cooks"]
    grouped = group_by_video(pairs)
    assert grouped.caption_to_video == [0, 0, 1] and not grouped.one_caption_per_video


def test_msrvtt_errors_name_file_and_column(tmp_path):
    (tmp_path / "MSRVTT_JSFUSION_test.csv").write_text("key,vid_key,sentence\nret0,msr1,hello\n")
    with pytest.raises(
        DatasetError, match=r"MSRVTT_JSFUSION_test.csv, line 1: missing column\(s\) \['video_id'\]"
    ):
        read_pairs(DataSpec("msrvtt", str(tmp_path), "test", str(tmp_path)))
    (tmp_path / "MSRVTT_JSFUSION_test.csv").write_text("key,vid_key,video_id,sentence\nret0,msr1,video1,hi\n")
    with pytest.raises(DatasetError, match="video file not found: .*video1.mp4"):
        read_pairs(DataSpec("msrvtt", str(tmp_path), "test", str(tmp_path)))
    with pytest.raises(DatasetError, match="annotation file not found: .*MSRVTT_train.9k.csv"):
        read_pairs(DataSpec("msrvtt", str(tmp_path), "train", str(tmp_path)))


def test_didemo_joins_descriptions_into_a_paragraph(tmp_path):
    (tmp_path / "test_list.txt").write_text("12345@N00_678_abc.mov\n999@N01_1_x.avi\n")
    data = [
        {"video": "12345@N00_678_abc.mov", "description": "a man walks in.", "times": [[0, 0], [1, 1]]},
        {"video": "999@N01_1_x.avi", "description": "a dog barks", "times": [[2, 2]]},
        {"video": "12345@N00_678_abc.mov", "description": "he sits down", "times": [[3, 4]]},
        {"video": "not_listed.mov", "description": "ignored", "times": [[0, 0]]},
    ]
    (tmp_path / "test_data.json").write_text(json.dumps(data))
    # CLIP4Clip's re-encoded copies: the listed name plus a new extension, anywhere under the folder
    touch_videos(tmp_path / "videos" / "sub", ["12345@N00_678_abc.mov.mp4"])
    touch_videos(tmp_path / "videos", ["999@N01_1_x.avi.mp4", "unrelated.mp4"])
    pairs = read_pairs(DataSpec("didemo", str(tmp_path), "test", str(tmp_path / "videos")))
    assert pairs == [
        Pair(str(tmp_path / "videos" / "sub" / "12345@N00_678_abc.mov.mp4"), "a man walks in. he sits down"),
        Pair(str(tmp_path / "videos" / "999@N01_1_x.avi.mp4"), "a dog barks"),
    ]


def test_didemo_missing_video_is_named(tmp_path):
    (tmp_path / "val_list.txt").write_text("a.mov\n")
    (tmp_path / "val_data.json").write_text(json.dumps([{"video": "a.mov", "description": "x", "times": []}]))
    (tmp_path / "videos").mkdir()
    with pytest.raises(DatasetError, match="no video file for 'a.mov'"):
        read_pairs(DataSpec("didemo", str(tmp_path), "val", str(tmp_path / "videos")))


def test_activitynet_val_uses_val_1_paragraphs(tmp_path):
    (tmp_path / "val_ids.json").write_text(json.dumps(["v_AAA", "v_BBB"]))
    captions = {
        "v_AAA": {
            "duration": 10.0,
            "timestamps": [[0, 5], [5, 10]],
            "sentences": ["A man runs. ", " He jumps."],
        },
        "v_BBB": {"duration": 3.0, "timestamps": [[0, 3]], "sentences": ["A cat sleeps."]},
    }
    (tmp_path / "val_1.json").write_text(json.dumps(captions))
    touch_videos(tmp_path / "vids", ["v_AAA.mp4", "v_BBB.mkv"])
    pairs = read_pairs(DataSpec("activitynet", str(tmp_path), "val", str(tmp_path / "vids")))
    assert pairs == [
        Pair(str(tmp_path / "vids" / "v_AAA.mp4"), "A man runs. He jumps."),
        Pair(str(tmp_path / "vids" / "v_BBB.mkv"), "A cat sleeps."),
    ]
    with pytest.raises(DatasetError, match="splits"):
        read_pairs(DataSpec("activitynet", str(tmp_path), "test", str(tmp_path / "vids")))


def test_activitynet_id_without_sentences(tmp_path):
    (tmp_path / "train_ids.json").write_text(json.dumps(["v_A"]))
    (tmp_path / "train.json").write_text(json.dumps({"v_B": {"sentences": ["x"]}}))
    with pytest.raises(DatasetError, match=r"train.json: no text for video 'v_A'"):
        read_pairs(DataSpec("activitynet", str(tmp_path), "train", str(tmp_path)))


def test_jsonl_relative_paths_and_custom_keys(tmp_path):
    (tmp_path / "data.jsonl").write_text(
        '{"video": "a/x.mp4", "caption": "one"}\n\n{"video": "/abs/y.mp4", "caption": "two", "extra": 1}\n'
    )
    pairs = read_pairs(DataSpec("jsonl", str(tmp_path / "data.jsonl")))
    assert pairs == [Pair(str(tmp_path / "a" / "x.mp4"), "one"), Pair("/abs/y.mp4", "two")]
    (tmp_path / "other.jsonl").write_text('{"path": "x.mp4", "text": "hi"}\n')
    pairs = read_pairs(
        DataSpec("jsonl", str(tmp_path / "other.jsonl"), videos="/root", video_key="path", caption_key="text")
    )
    assert pairs == [Pair("/root/x.mp4", "hi")]


@pytest.mark.parametrize(
    "content, message",
    [
        ('{"video": "x.mp4", "caption": "ok"}\n{"video": "y.mp4"\n', r"line 2: not valid JSON"),
        ('{"video": "x.mp4", "caption": "ok"}\n{"video": "y.mp4"}\n', r"line 2: missing field 'caption'"),
        ('{"video": "x.mp4", "caption": ""}\n', r"line 1: field 'caption' must be a non-empty string"),
        ("[1, 2]\n", r"line 1: expected a JSON object"),
        ("\n\n", r"no examples"),
    ],
)
def test_jsonl_errors(tmp_path, content, message):
    (tmp_path / "bad.jsonl").write_text(content)
    with pytest.raises(DatasetError, match=message):
        read_pairs(DataSpec("jsonl", str(tmp_path / "bad.jsonl")))


def test_csv_reader(tmp_path):
    (tmp_path / "d.csv").write_text('video,caption\nx.mp4,"a, quoted caption"\ny.mp4,plain\n')
    pairs = read_pairs(DataSpec("csv", str(tmp_path / "d.csv"), videos="/v"))
    assert pairs == [Pair("/v/x.mp4", "a, quoted caption"), Pair("/v/y.mp4", "plain")]
    (tmp_path / "e.csv").write_text("path,caption\nx.mp4,hi\n")
    with pytest.raises(DatasetError, match=r"e.csv, line 1: missing column\(s\) \['video'\]"):
        read_pairs(DataSpec("csv", str(tmp_path / "e.csv")))
    (tmp_path / "f.csv").write_text("video,caption\nx.mp4,hi,extra\n")
    with pytest.raises(DatasetError, match=r"f.csv, line 2: wrong number of fields"):
        read_pairs(DataSpec("csv", str(tmp_path / "f.csv")))


def test_unknown_layout_and_spec_fields():
    with pytest.raises(DatasetError, match="unknown dataset layout"):
        read_pairs(DataSpec("webvid", "x"))
    with pytest.raises(DatasetError, match="unknown field"):
        DataSpec.from_dict({"layout": "jsonl", "annotations": "x", "split_name": "a"})


def test_group_by_video_keeps_first_appearance_order():
    grouped = group_by_video([Pair("b", "1"), Pair("a", "2"), Pair("b", "3")])
    assert grouped.videos == ["b", "a"] and grouped.caption_to_video == [0, 1, 0]
