"""CLIP4Clip's other four layouts, read from small hand-written folders: the pairs, their
order, the windows, the multi-sentence and paragraph protocols, and the faults of real
downloads (a pickle that would run code, a short LSMDC line, ids without annotations)."""

import json
import pickle

import pytest

from ingest.benchmarks import EVAL_SPLIT, read_benchmark, read_plain_pickle
from ingest.msrvtt import DatasetError
from ingest.report import Report
from ingest.video import find_videos


def test_msvd_every_caption_is_a_pair_in_list_order(tmp_path):
    (tmp_path / "train_list.txt").write_text("vidB_1_5\n")
    (tmp_path / "test_list.txt").write_text("vidA_0_4\nvidC_2_9\n")
    captions = {
        "vidA_0_4": [["a", "man", "runs"], ["someone", "is", "running"]],
        "vidB_1_5": [["a", "cat"]],
        "vidC_2_9": [["a", "dog", "barks"]],
    }
    (tmp_path / "raw-captions.pkl").write_bytes(pickle.dumps(captions))
    test = read_benchmark("msvd", tmp_path, EVAL_SPLIT["msvd"])
    # Multi-sentence: both captions of vidA are queries for the one video.
    assert test.pairs == [
        ("vidA_0_4", "a man runs"),
        ("vidA_0_4", "someone is running"),
        ("vidC_2_9", "a dog barks"),
    ]
    assert test.video_ids == ["vidA_0_4", "vidC_2_9"] and test.ends == {}
    assert read_benchmark("msvd", tmp_path, "train").pairs == [("vidB_1_5", "a cat")]


class Boom:
    def __reduce__(self):
        return (print, ("this ran",))


def test_a_pickle_that_names_a_function_is_refused_without_running_it(tmp_path, capsys):
    path = tmp_path / "raw-captions.pkl"
    path.write_bytes(pickle.dumps({"vidA": [["a"]], "evil": Boom()}))
    with pytest.raises(DatasetError, match="builtins.print"):
        read_plain_pickle(path)
    assert "this ran" not in capsys.readouterr().out
    path.write_bytes(b"not a pickle at all")
    with pytest.raises(DatasetError, match="refused"):
        read_plain_pickle(path)


def test_msvd_listed_video_without_captions_is_one_clear_error(tmp_path):
    (tmp_path / "test_list.txt").write_text("vidA\nvidZ\n")
    (tmp_path / "raw-captions.pkl").write_bytes(pickle.dumps({"vidA": [["x"]]}))
    with pytest.raises(DatasetError, match="no captions for 1 video.*vidZ"):
        read_benchmark("msvd", tmp_path, "test")


def test_lsmdc_each_line_is_a_pair_and_a_short_line_is_reported(tmp_path):
    lines = [
        "1001_Movie_00.01.00-00.01.04\t0\t4\t0\t4\tSomeone opens the door.",
        "1001_Movie_00.01.05-00.01.09\t5\t9\t5\t9\tHe looks at SOMEONE.",
        "broken line without tabs",
        "1002_Film_00.00.01-00.00.03\t1\t3\t1\t3\tThey leave.",
    ]
    (tmp_path / "LSMDC16_challenge_1000_publictect.csv").write_text("\n".join(lines) + "\n")
    report = Report()
    test = read_benchmark("lsmdc", tmp_path, "test", report)
    assert test.pairs == [
        ("1001_Movie_00.01.00-00.01.04", "Someone opens the door."),
        ("1001_Movie_00.01.05-00.01.09", "He looks at SOMEONE."),
        ("1002_Film_00.00.01-00.00.03", "They leave."),
    ]
    assert report.counts() == {"bad_annotation": 1} and report.records[0].line == 3


def test_activity_paragraphs_follow_the_ids_file_with_ceil_duration_windows(tmp_path):
    (tmp_path / "val_ids.json").write_text(json.dumps(["v_bbb", "v_aaa", "v_nocap"]))
    annotations = {
        "v_aaa": {"duration": 12.0, "timestamps": [[0, 5], [5, 12]], "sentences": ["A.", " B."]},
        "v_bbb": {"duration": 30.2, "timestamps": [[0, 30]], "sentences": ["One sentence."]},
    }
    (tmp_path / "val_1.json").write_text(json.dumps(annotations))
    test = read_benchmark("activity", tmp_path, EVAL_SPLIT["activity"])
    assert EVAL_SPLIT["activity"] == "val"
    # Video ids lose the v_ (the file stem); the sentences are joined with a space.
    assert test.pairs == [("bbb", "One sentence."), ("aaa", "A.  B.")]
    assert test.ends == {"bbb": 31, "aaa": 12}


def test_didemo_paragraphs_in_first_appearance_order_with_the_31_second_window(tmp_path):
    (tmp_path / "test_list.txt").write_text("b.mov\na.mp4\nnodata.avi\n")
    items = [
        {"video": "a.mp4", "times": [[0, 0]], "description": "first of a"},
        {"video": "b.mov", "times": [[1, 2]], "description": "only b"},
        {"video": "unlisted.mp4", "times": [[0, 0]], "description": "not in the list"},
        {"video": "a.mp4", "times": [[3, 3]], "description": "second of a"},
    ]
    (tmp_path / "test_data.json").write_text(json.dumps(items))
    test = read_benchmark("didemo", tmp_path, "test")
    assert test.pairs == [("a.mp4", "first of a second of a"), ("b.mov", "only b")]
    assert test.ends == {"a.mp4": 31, "b.mov": 31}


def test_videos_are_found_below_the_folder_by_stem_or_by_name(tmp_path):
    (tmp_path / "sub" / "deeper").mkdir(parents=True)
    for name in ("sub/x.avi", "sub/deeper/y.mp4", "top.mov", "notes.txt"):
        (tmp_path / name).write_bytes(b"0")
    assert set(find_videos(tmp_path)) == {"top"}
    assert set(find_videos(tmp_path, recursive=True)) == {"x", "y", "top"}
    assert set(find_videos(tmp_path, recursive=True, with_extension=True)) == {
        "x.avi",
        "y.mp4",
        "top.mov",
    }


def test_a_missing_annotation_file_is_named(tmp_path):
    with pytest.raises(DatasetError, match="val_ids.json: no such file"):
        read_benchmark("activity", tmp_path, "val")
