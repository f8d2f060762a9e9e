"""An imported reference checkpoint goes where a trained one goes.

A DRL file (OpenAI-layout CLIP from open_clip, fp16 as the references save) and a pickled
PitVQA file are imported by ``jobs/import_checkpoint.py``; the retriever is then evaluated,
indexed and served by the project's own entry points on real decoded videos, and the
PitVQANet answers ``/vqa`` from the same app.
"""

import json
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow  # a whole job (or cluster) per test: the full suite only

sys.path.insert(
    0, str(Path(__file__).parents[1] / "models")
)  # open_clip_ref, the reference layouts


@pytest.fixture(scope="module")
def imported_drl(tmp_path_factory):
    from helpers import tiny_openai_clip
    from open_clip_ref import open_clip
    from test_reference_import import ReferenceRetriever, run_import, save_reference

    open_clip()
    from open_clip.tokenizer import default_bpe

    folder = tmp_path_factory.mktemp("drl")
    save_reference(
        ReferenceRetriever(tiny_openai_clip(), "seqTransf", "wti"), folder / "pytorch_model.bin.4"
    )
    result = run_import(
        "drl",
        folder / "pytorch_model.bin.4",
        "--output_dir",
        folder / "checkpoint",
        "--tokenizer_path",
        default_bpe(),
        "--max_frames",
        "4",
    )
    assert result.returncode == 0, result.stderr
    return folder / "checkpoint"


@pytest.fixture(scope="module")
def imported_pitvqa(tmp_path_factory, gpt2_tokenizer):
    import torch
    from test_reference_import import reference_pitvqa_module, run_import

    folder = tmp_path_factory.mktemp("pitvqa")
    module = reference_pitvqa_module(gpt2_tokenizer)
    sys.modules["model"] = module
    try:
        torch.manual_seed(0)
        torch.save(
            {"epoch": 1, "model": module.PitVQANet(num_class=18).eval()},
            folder / "pitvqa_endo18_weights.pth.tar",
        )
    finally:
        del sys.modules["model"]
    result = run_import(
        "pitvqa",
        folder / "pitvqa_endo18_weights.pth.tar",
        "--output_dir",
        folder / "checkpoint",
        "--dataset",
        "endo18",
    )
    assert result.returncode == 0, result.stderr
    return folder / "checkpoint"


def test_imported_checkpoints_evaluate_index_and_serve(
    ray_local, imported_drl, imported_pitvqa, synthetic_msrvtt, serve_port, tmp_path
):
    from serve_helpers import call, run_app

    from jobs import evaluate, index

    files = [
        "--train_csv",
        str(synthetic_msrvtt / "MSRVTT_train.9k.csv"),
        "--val_csv",
        str(synthetic_msrvtt / "MSRVTT_JSFUSION_test.csv"),
        "--data_path",
        str(synthetic_msrvtt / "MSRVTT_data.json"),
        "--features_path",
        str(synthetic_msrvtt / "videos"),
    ]
    assert (
        evaluate.main(
            ["--checkpoint", str(imported_drl), "--output_dir", str(tmp_path / "eval"), *files]
        )
        == 0
    )
    metrics = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert metrics["num_videos"] == 6 and 0 <= metrics["t2v"]["R@1"] <= 100

    assert (
        index.main(
            [
                "--checkpoint",
                str(imported_drl),
                "--features_path",
                str(synthetic_msrvtt / "videos"),
                "--output_dir",
                str(tmp_path / "index"),
            ]
        )
        == 0
    )
    base = run_app(
        serve_port,
        "imported",
        checkpoint=str(imported_drl),
        index=str(tmp_path / "index"),
        vqa_checkpoint=str(imported_pitvqa),
        num_shards=1,
    )
    status, body = call(f"{base}/search", {"text": "a red circle moves to the left", "top_k": 3})
    assert status == 200 and len(body["results"]) == 3
    assert {r["video_id"] for r in body["results"]} <= {f"video{i}" for i in range(18)}
    import base64
    import io

    import numpy as np
    from PIL import Image

    from ingest.qa import load_labels

    png = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), np.uint8)).save(
        png, format="PNG"
    )
    status, body = call(
        f"{base}/vqa",
        {
            "image": base64.b64encode(png.getvalue()).decode(),
            "question": "what is the state of prograsp forceps",
        },
    )
    assert status == 200 and body["answer"] in load_labels("endo18")
    from ray import serve

    serve.delete("imported")
