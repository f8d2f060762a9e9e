import json

import pytest

from ingest.msrvtt import DatasetError, read_captions, read_test, read_train


def write(path, obj):
    path.write_text(json.dumps(obj))
    return path


def test_clip4clip_layout(tmp_path):
    path = write(
        tmp_path / "a.json",
        {
            "sentences": [
                {"video_id": "video0", "caption": "a"},
                {"video_id": "video0", "caption": "b"},
                {"video_id": "video1", "caption": "c"},
            ],
            "videos": [],
        },
    )
    assert read_captions(path) == {"video0": ["a", "b"], "video1": ["c"]}


def test_frozen_in_time_layout_that_breaks_drl(tmp_path):
    path = write(
        tmp_path / "b.json",
        {
            "annotations": [
                {"image_id": "video0", "caption": "a"},
                {"image_id": "video1", "caption": "c"},
            ],
            "images": [],
        },
    )
    assert read_captions(path) == {"video0": ["a"], "video1": ["c"]}


def test_unknown_layout_names_file_keys_and_layouts(tmp_path):
    path = write(tmp_path / "c.json", {"clips": [], "meta": {}})
    with pytest.raises(DatasetError) as err:
        read_captions(path)
    message = str(err.value)
    assert str(path) in message and "['clips', 'meta']" in message
    assert "sentences" in message and "annotations" in message


def test_not_json_is_one_clear_error(tmp_path):
    path = tmp_path / "d.json"
    path.write_text("{not json")
    with pytest.raises(DatasetError, match="not valid JSON"):
        read_captions(path)


def test_synthetic_corpus_reads_in_both_splits(synthetic_msrvtt):
    train = read_train(
        synthetic_msrvtt / "MSRVTT_train.9k.csv", synthetic_msrvtt / "MSRVTT_data.json"
    )
    test = read_test(synthetic_msrvtt / "MSRVTT_JSFUSION_test.csv")
    assert len(train.video_ids) == 12 and len(train.pairs) == 12 * 5  # every caption a sample
    assert len(test.pairs) == 6 and len(set(test.video_ids)) == 6
    assert not set(train.video_ids) & set(test.video_ids)
