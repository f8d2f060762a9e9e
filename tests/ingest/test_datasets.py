"""Normalisation and tokenization run inside Ray Data (map_batches), on a real local Ray."""

from functools import partial

import numpy as np

from ingest.datasets import CLIP_MEAN, CLIP_STD, caption_dataset, normalize_clips, qa_dataset
from ingest.msrvtt import read_test
from models import tokenize


def test_qa_rows_become_model_inputs(ray_local, tmp_path, gpt2_tokenizer):
    from PIL import Image

    rows = []
    for i in range(5):
        path = tmp_path / f"{i}.png"
        Image.fromarray(np.full((224, 224, 3), 50 * i, np.uint8)).save(path)
        rows.append(
            {
                "image": str(path),
                "question": "what instrument is being used",
                "answer": "x",
                "label": i,
            }
        )
    batch = qa_dataset(
        rows, partial(tokenize, gpt2_tokenizer, max_length=30), image_size=64
    ).take_batch(5)
    assert (
        batch["pixel_values"].shape == (5, 3, 64, 64) and batch["pixel_values"].dtype == np.float32
    )
    assert np.allclose(
        batch["pixel_values"].reshape(5, -1).mean(1), [50 * i / 255 for i in range(5)], atol=1e-3
    )
    want = tokenize(gpt2_tokenizer, ["what instrument is being used"], 30)
    assert (batch["input_ids"][0] == want["input_ids"][0].numpy()).all()
    assert batch["label"].tolist() == [0, 1, 2, 3, 4]


def test_captions_are_tokenized_in_the_pipeline(ray_local, synthetic_msrvtt, clip_tokenizer):
    pairs = read_test(synthetic_msrvtt / "MSRVTT_JSFUSION_test.csv").pairs
    rows = caption_dataset(pairs, partial(tokenize, clip_tokenizer, max_length=32)).take_all()
    assert [r["video_id"] for r in rows] == [v for v, _ in pairs]
    assert (
        rows[0]["input_ids"].shape == (32,)
        and rows[0]["input_ids"][0] == clip_tokenizer.bos_token_id
    )


def test_normalize_clips():
    frames = np.random.default_rng(0).integers(0, 256, (2, 3, 4, 4, 3), dtype=np.uint8)
    out = normalize_clips({"frames": frames, "frame_mask": np.ones((2, 3))})
    assert out["pixel_values"].shape == (2, 3, 3, 4, 4) and "frames" not in out
    want = (frames[1, 2, 0, 3] / 255.0 - CLIP_MEAN) / CLIP_STD
    assert np.allclose(out["pixel_values"][1, 2, :, 0, 3], want, atol=1e-6)


def test_captions_join_their_decoded_clips(ray_local, synthetic_msrvtt, clip_tokenizer, tmp_path):
    from ingest.clips import read_clips, write_clips
    from ingest.datasets import caption_clip_dataset
    from ingest.msrvtt import read_train
    from ingest.report import Report
    from ingest.video import ClipSpec, find_videos

    videos = find_videos(synthetic_msrvtt / "videos")
    videos["video0"] = tmp_path / "gone.mp4"  # this video's captions lose their clip
    write_clips(videos, tmp_path / "out", ClipSpec(image_size=16, max_frames=4))
    pairs = read_train(
        synthetic_msrvtt / "MSRVTT_train.9k.csv", synthetic_msrvtt / "MSRVTT_data.json"
    ).pairs
    report = Report()
    rows = caption_clip_dataset(
        pairs,
        read_clips(tmp_path / "out"),
        partial(tokenize, clip_tokenizer, max_length=16),
        report=report,
    ).take_all()
    lost = sum(v == "video0" for v, _ in pairs)
    assert len(rows) == len(pairs) - lost and lost == 5
    assert report.counts() == {"caption_without_video": lost}
    row = rows[0]
    assert row["pixel_values"].shape == (4, 3, 16, 16) and row["input_ids"].shape == (16,)
    assert row["frame_mask"].tolist() == [1, 1, 1, 1]
    by_video = {}
    for v, c in pairs:
        by_video.setdefault(v, []).append(c)
    assert all(r["caption"] in by_video[r["video_id"]] for r in rows)


def test_one_row_per_video_holds_all_its_captions(clip_tokenizer):
    """CLIP4Clip's MSR-VTT without --expand_msrvtt_sentences: a clip's row carries every
    caption of its video (zero rows after ``caption_count``), for the step to draw one."""
    from functools import partial

    from ingest.datasets import CaptionExpander
    from models import tokenize

    captions = {"v1": ["a red circle", "a circle moves"], "v2": ["a blue square"]}
    expand = CaptionExpander(captions, partial(tokenize, clip_tokenizer, max_length=8), True)
    batch = {
        "video_id": np.array(["v2", "vX", "v1"], dtype=object),
        "frames": np.arange(3).reshape(3, 1, 1, 1, 1).astype(np.uint8),
        "frame_mask": np.ones((3, 1), np.uint8),
    }
    (rows,) = list(expand(batch))
    assert rows["video_id"].tolist() == ["v2", "v1"]  # vX has no caption: no row
    assert rows["caption_count"].tolist() == [1, 2]
    assert rows["input_ids"].shape == (2, 2, 8) and rows["frames"][:, 0, 0, 0, 0].tolist() == [0, 2]
    one = tokenize(clip_tokenizer, ["a circle moves"], max_length=8)["input_ids"]
    assert rows["input_ids"][1, 1].tolist() == np.asarray(one)[0].tolist()
    assert not rows["input_ids"][0, 1].any() and not rows["attention_mask"][0, 1].any()


def test_eval_frame_order_is_per_video_and_the_same_every_run():
    from ingest.datasets import order_frames

    frames = np.arange(2 * 4, dtype=np.uint8).reshape(2, 4, 1, 1, 1)
    batch = {
        "video_id": np.array(["a", "b"], dtype=object),
        "frames": frames,
        "frame_mask": np.array([[1, 1, 1, 0], [1, 1, 1, 1]], np.uint8),
    }
    reversed_ = order_frames(batch, order=1, seed=0)["frames"][:, :, 0, 0, 0]
    assert reversed_.tolist() == [[2, 1, 0, 3], [7, 6, 5, 4]]
    shuffled = order_frames(batch, order=2, seed=0)["frames"][:, :, 0, 0, 0]
    assert (
        shuffled.tolist() == order_frames(batch, order=2, seed=0)["frames"][:, :, 0, 0, 0].tolist()
    )
    assert sorted(shuffled[0, :3]) == [0, 1, 2] and shuffled[0, 3] == 3  # padding stays
    assert sorted(shuffled[1]) == [4, 5, 6, 7]
    others = [
        order_frames(batch, order=2, seed=s)["frames"][1, :, 0, 0, 0].tolist() for s in range(6)
    ]
    assert len({tuple(o) for o in others}) > 1
