"""An imported reference checkpoint goes where a trained one goes.

A DRL file (OpenAI-layout CLIP from open_clip, fp16 as the references save) is imported by
``jobs/import_checkpoint.py``, then evaluated, indexed and served by the project's own
entry points on real decoded videos.
"""
import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parents[1] / "models"))  # open_clip_ref, the reference layouts


@pytest.fixture(scope="module")
def imported_drl(tmp_path_factory):
    from open_clip_ref import open_clip
    from test_reference_import import ReferenceRetriever, run_import, save_reference, tiny_openai_clip

    oc = open_clip()
    from open_clip.tokenizer import default_bpe

    folder = tmp_path_factory.mktemp("drl")
    save_reference(ReferenceRetriever(tiny_openai_clip(oc), "seqTransf", "wti"), folder / "pytorch_model.bin.4")
    result = run_import("drl", folder / "pytorch_model.bin.4", "--output_dir", folder / "checkpoint",
                        "--tokenizer_path", default_bpe(), "--max_frames", "4")
    assert result.returncode == 0, result.stderr
    return folder / "checkpoint"


@pytest.mark.slow
def test_an_imported_drl_checkpoint_evaluates_indexes_and_serves(ray_local, imported_drl, synthetic_msrvtt,
                                                                 serve_port, pitvqa_checkpoint, tmp_path):
    from jobs import evaluate, index
    from serve_helpers import call, run_app

    files = ["--train_csv", str(synthetic_msrvtt / "MSRVTT_train.9k.csv"),
             "--val_csv", str(synthetic_msrvtt / "MSRVTT_JSFUSION_test.csv"),
             "--data_path", str(synthetic_msrvtt / "MSRVTT_data.json"), "--features_path", str(synthetic_msrvtt / "videos")]
    assert evaluate.main(["--checkpoint", str(imported_drl), "--output_dir", str(tmp_path / "eval"), *files]) == 0
    metrics = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert metrics["num_videos"] == 6 and 0 <= metrics["t2v"]["R@1"] <= 100

    assert index.main(["--checkpoint", str(imported_drl), "--features_path", str(synthetic_msrvtt / "videos"),
                       "--output_dir", str(tmp_path / "index")]) == 0
    base = run_app(serve_port, "imported", checkpoint=str(imported_drl), index=str(tmp_path / "index"),
                   vqa_checkpoint=str(pitvqa_checkpoint), num_shards=1)
    status, body = call(f"{base}/search", {"text": "a red circle moves to the left", "top_k": 3})
    assert status == 200 and len(body["results"]) == 3
    assert {r["video_id"] for r in body["results"]} <= {f"video{i}" for i in range(18)}
    from ray import serve

    serve.delete("imported")
