"""The Serve app over HTTP on 127.0.0.1: search, VQA, bad input, bursts, a failing model call.
(A killed shard: tests/serve/test_service_metrics.py, on a `serve run` of its own.)"""

import base64
import io
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from PIL import Image
from serve_helpers import INDEX_VIDEOS, call, run_app

from ingest.qa import load_labels

QUERIES = [
    "a red circle moves to the left",
    "a big blue square is moving up",
    "the green triangle slides down",
    "small yellow circle going to the right",
    "a triangle in red travels up",
    "a blue circle moves down",
    "a small green square is moving to the left",
    "the yellow triangle slides to the right",
]


def png_b64(width=80, height=60, seed=0) -> str:
    pixels = np.random.default_rng(seed).integers(0, 255, (height, width, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode()


def test_healthz_says_what_is_loaded(app_url):
    status, health = call(f"{app_url}/healthz")
    assert status == 200 and health["status"] == "ok"
    assert health["search"]["index_size"] == INDEX_VIDEOS
    assert health["search"]["shards"] == health["search"]["shards_up"] == 2
    assert sum(health["search"]["shard_rows"]) == INDEX_VIDEOS
    assert health["vqa"]["loaded"] is True
    # precision=auto: the tiny models compute in fp32 on any CPU (models.precision).
    assert health["search"]["compute_dtype"] == health["vqa"]["compute_dtype"] == "fp32"


@pytest.mark.parametrize("exact", [False, True])
def test_explain_parts_sum_to_each_hit_score(app_url, exact):
    """``explain``: each hit's parts (token weights x each token's best-frame similarity, frame
    weights x each frame's best-token similarity) give back its returned score within 1e-5,
    on both search paths, and the same hits come back as without it."""
    query = {"text": "a red circle moves to the left", "top_k": 5, "exact": exact}
    _, plain = call(f"{app_url}/search", query)
    status, out = call(f"{app_url}/search", {**query, "explain": True})
    assert status == 200
    assert [h["video_id"] for h in out["results"]] == [h["video_id"] for h in plain["results"]]
    assert all(set(h) == {"video_id", "score"} for h in plain["results"])  # not asked, not sent
    for hit in out["results"]:
        e = hit["explain"]
        assert e["tokens"][1:4] == ["a", "red", "circle"]  # after the start token
        n, frames = len(e["tokens"]), len(e["frame_weights"])
        assert len(e["token_weights"]) == len(e["token_best_frame"]) == n
        assert len(e["similarity"]) == n and all(len(row) == frames for row in e["similarity"])
        assert abs(sum(e["token_weights"]) - 1) < 1e-5 and abs(sum(e["frame_weights"]) - 1) < 1e-5
        t2v = sum(w * s for w, s in zip(e["token_weights"], e["token_best_similarity"]))
        v2t = sum(w * s for w, s in zip(e["frame_weights"], e["frame_best_similarity"]))
        assert abs(t2v - e["text_to_video"]) < 1e-5 and abs(v2t - e["video_to_text"]) < 1e-5
        assert abs((t2v + v2t) / 2 - hit["score"]) < 1e-5
        for i, (frame, best) in enumerate(zip(e["token_best_frame"], e["token_best_similarity"])):
            assert e["similarity"][i][frame] == best == max(e["similarity"][i])


def test_search_is_best_first_and_finds_the_attributes(app_url):
    from ingest.synthetic import render_clips

    status, out = call(f"{app_url}/search", {"text": "a red circle moves to the left", "top_k": 10})
    assert status == 200 and not out["partial"] and out["missing_shards"] == 0
    scores = [hit["score"] for hit in out["results"]]
    assert len(scores) == 10 and scores == sorted(scores, reverse=True)
    assert len({hit["video_id"] for hit in out["results"]}) == 10
    # The index's clips, rendered again from the same seed: video{i} is clips[i].
    clips, _ = render_clips(INDEX_VIDEOS, max_frames=4, image_size=64, seed=11)
    found = [clips[int(hit["video_id"].removeprefix("video"))] for hit in out["results"]]
    red = sum(clip.color == "red" for clip in found)
    # Chance is 1 in 4. (The colour is what the tiny model, trained for seconds, learns
    # every time; the direction, which only the frame order shows, it learns on some seeds
    # and not others, so it is not asserted here: the main job's R@1 measures it.)
    assert red >= 8, [(c.color, c.shape, c.direction) for c in found]


def test_two_stage_equals_exact(app_url):
    for text in QUERIES:
        _, fast = call(f"{app_url}/search", {"text": text, "top_k": 10})
        _, exact = call(f"{app_url}/search", {"text": text, "top_k": 10, "exact": True})
        assert exact["exact"] and not fast["exact"]
        assert [h["video_id"] for h in fast["results"]] == [
            h["video_id"] for h in exact["results"]
        ], text
        np.testing.assert_allclose(
            [h["score"] for h in fast["results"]], [h["score"] for h in exact["results"]], atol=1e-5
        )


def test_two_shards_answer_what_one_exhaustive_search_of_the_whole_index_answers(
    app_url, trained_retriever, rendered_index
):
    """The merge of the shards' top-k (ties by video id) against exact scoring of every
    video in this process, from the same checkpoint and index files."""
    import torch

    from models import load_checkpoint, token_wise_scores
    from models.encode import encode_texts
    from retrieval.store import load_index

    model, tokenizer = load_checkpoint(trained_retriever)
    rows = load_index(rendered_index)
    frames, weights = torch.from_numpy(rows.frames).float(), torch.from_numpy(rows.weights)
    column = {video_id: i for i, video_id in enumerate(rows.video_ids)}
    for text in QUERIES[:4]:
        _, merged = call(f"{app_url}/search", {"text": text, "top_k": 20, "exact": True})
        query = encode_texts(model, tokenizer, [text])
        every = token_wise_scores(query.features, query.weights, frames, weights)[0]  # (V,)
        # The 20 best scores, and each returned video scored as this process scores it:
        # the same videos up to float rounding among near-ties.
        np.testing.assert_allclose(
            [h["score"] for h in merged["results"]], every.topk(20).values.numpy(), atol=1e-5
        )
        np.testing.assert_allclose(
            [h["score"] for h in merged["results"]],
            [every[column[h["video_id"]]].item() for h in merged["results"]],
            atol=1e-5,
        )
        assert len({h["video_id"] for h in merged["results"]}) == 20, text


def test_vqa_answers_with_a_known_label(app_url):
    status, out = call(
        f"{app_url}/vqa", {"image": png_b64(), "question": "what is the surgical phase"}
    )
    assert status == 200, out
    labels = load_labels("pit24")
    assert out["answer"] in labels and out["answer"] == out["top"][0]["answer"]
    assert 0 < out["confidence"] <= 1 and out["confidence"] == out["top"][0]["score"]
    assert [t["score"] for t in out["top"]] == sorted(
        (t["score"] for t in out["top"]), reverse=True
    )
    status, again = call(
        f"{app_url}/vqa",
        {"image": "data:image/png;base64," + png_b64(), "question": "what is the surgical phase"},
    )
    assert status == 200 and again["answer"] == out["answer"]


BAD_SEARCH = [
    (b"{not json", "malformed JSON"),
    (b'{"top_k": 5}', "text: Field required"),
    (b'{"text": 5}', "text: Input should be a valid string"),
    (b'{"text": ""}', "text: String should have at least 1 character"),
    (b'{"text": "   "}', "text is blank"),
    (
        ('{"text": "%s"}' % ("x" * 1001)).encode(),
        "text: String should have at most 1000 characters",
    ),
    (b'{"text": "a red circle", "top_k": 0}', "top_k: Input should be greater than or equal to 1"),
    (b'{"text": "a red circle", "top_k": 101}', "top_k: Input should be less than or equal to 100"),
    (b'{"text": "a red circle", "top_k": "5"}', "top_k: Input should be a valid integer"),
    (b'{"text": "a red circle", "exact": "yes"}', "exact: Input should be a valid boolean"),
    (b"[]", "Input should be a valid dictionary"),
]


@pytest.mark.parametrize("body,message", BAD_SEARCH, ids=[m for _, m in BAD_SEARCH])
def test_bad_search_input_is_a_4xx_with_a_message(app_url, body, message):
    status, out = call(f"{app_url}/search", raw=body)
    assert 400 <= status < 500 and message in out["error"], out


def test_bad_vqa_input_is_a_4xx_with_a_message(app_url):
    big = np.random.default_rng(0).integers(0, 255, (5200, 5200, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(big).save(buffer, format="JPEG", quality=10)
    gif = io.BytesIO()
    Image.fromarray(big[:20, :20]).save(gif, format="GIF")
    cases = [
        ({"image": "%%%not base64%%%", "question": "q"}, 422, "image: not valid base64"),
        (
            {"image": base64.b64encode(b"just some bytes").decode(), "question": "q"},
            400,
            "does not decode",
        ),
        (
            {"image": base64.b64encode(gif.getvalue()).decode(), "question": "q"},
            400,
            "not PNG or JPEG",
        ),
        ({"image": base64.b64encode(buffer.getvalue()).decode(), "question": "q"}, 413, "pixels"),
        ({"image": "A" * (15 << 20), "question": "q"}, 413, "larger than"),
        ({"image": png_b64(), "question": ""}, 422, "question"),
        ({"image": png_b64(), "question": "   "}, 422, "question is blank"),
        ({"image": png_b64()}, 422, "question: Field required"),
        ({"question": "what"}, 422, "image: Field required"),
        ({"image": 7, "question": "what"}, 422, "image: Input should be a valid string"),
    ]
    for body, expected, message in cases:
        status, out = call(f"{app_url}/vqa", body)
        assert status == expected and message in out["error"], (body.keys(), status, out)


def test_thumbnails_come_from_the_index_by_id_only(app_url):
    status, data = call(f"{app_url}/thumbnail/video3")
    assert status == 200 and Image.open(io.BytesIO(data)).size == (64, 64)
    for bad in ("unknown", "..%2F..%2Fetc%2Fpasswd", "%2Fetc%2Fpasswd"):
        status, _ = call(f"{app_url}/thumbnail/{bad}")
        assert status == 404


def test_openapi_docs_list_the_routes(app_url):
    status, spec = call(f"{app_url}/openapi.json")
    assert status == 200 and {"/search", "/vqa", "/healthz"} <= set(spec["paths"])


def test_a_burst_of_concurrent_requests_has_no_errors(app_url):
    def one(i):
        if i % 4 == 3:
            return call(
                f"{app_url}/vqa", {"image": png_b64(seed=i), "question": "what instrument is used"}
            )[0]
        return call(f"{app_url}/search", {"text": QUERIES[i % len(QUERIES)], "top_k": 5})[0]

    with ThreadPoolExecutor(8) as pool:
        statuses = list(pool.map(one, range(64)))
    assert statuses == [200] * 64


def test_a_model_call_that_raises_is_a_500_with_a_request_id(
    serve_port, trained_retriever, rendered_index, tmp_path
):
    """A bug, not an outage: a checkpoint whose text length exceeds its position table
    loads, and then every query raises inside CLIP's text model."""
    import json
    import shutil

    broken = tmp_path / "checkpoint"
    shutil.copytree(trained_retriever, broken)
    config = json.loads((broken / "config.json").read_text())
    config["config"]["max_words"] = (
        10 * config["config"]["clip_config"]["text_config"]["max_position_embeddings"]
    )
    (broken / "config.json").write_text(json.dumps(config))
    base = run_app(
        serve_port,
        "broken",
        checkpoint=str(broken),
        index=str(rendered_index),
        vqa_checkpoint=str(tmp_path / "no-vqa"),  # not what this test is about: not loaded
        num_shards=1,
        shard_cpus=0,
    )
    try:
        status, out = call(f"{base}/search", {"text": "a red circle", "top_k": 5})
        assert status == 500, out
        assert out["request_id"] and out["request_id"] in out["error"]
        status, health = call(f"{base}/healthz")  # the replicas are up: it is the call that fails
        assert status == 200 and health["search"]["loaded"] and health["search"]["shards_up"] == 1
    finally:
        from ray import serve

        serve.delete("broken")


KEY = "k3y-for-this-test"


@pytest.fixture(scope="module")
def keyed_app_without_models(serve_port, tmp_path_factory):
    """An app with an API key whose checkpoints and index are missing (it starts fast; its
    model routes answer 503): the two tests below share it."""
    from ray import serve

    missing = tmp_path_factory.mktemp("missing")
    yield run_app(
        serve_port,
        "keyed",
        checkpoint=str(missing / "nope"),
        index=str(missing / "noindex"),
        vqa_checkpoint=str(missing / "nothing"),
        num_shards=1,
        api_key=KEY,
    )
    serve.delete("keyed")


def test_with_an_api_key_search_vqa_and_thumbnails_need_it_and_healthz_does_not(
    keyed_app_without_models,
):
    base = keyed_app_without_models
    status, health = call(f"{base}/healthz")
    assert status == 200 and health["api_key_required"] is True
    requests = [
        ("/search", {"text": "a red circle"}),
        ("/search", {"top_k": "not even valid"}),  # the key is checked before the body
        ("/vqa", {"image": png_b64(), "question": "what"}),
        ("/thumbnail/video1", None),
    ]
    wrong = [{}, {"Authorization": "Bearer wrong"}, {"Authorization": f"Basic {KEY}"}]
    wrong += [{"Authorization": KEY}, {"Authorization": f"Bearer {KEY}x"}]
    for path, body in requests:
        for headers in wrong:
            status, out = call(f"{base}{path}", body, headers=headers)
            assert status == 401 and "API key" in out["error"], (path, headers, out)
    right = {"Authorization": f"Bearer {KEY}"}
    # No models: a request the key lets through gets their 503.
    assert call(f"{base}/search", {"text": "a red circle"}, headers=right)[0] == 503
    assert call(f"{base}/search", {"top_k": 5}, headers=right)[0] == 422
    status, _ = call(f"{base}/vqa", {"image": png_b64(), "question": "what"}, headers=right)
    assert status == 503
    assert call(f"{base}/thumbnail/video1", headers=right)[0] == 404
    # The document says which routes need the key.
    status, spec = call(f"{base}/openapi.json")
    assert spec["components"]["securitySchemes"]["bearer"]["scheme"] == "bearer"
    assert spec["paths"]["/search"]["post"]["security"] == [{"bearer": []}]
    assert "security" not in spec["paths"]["/healthz"]["get"]


def test_missing_models_start_and_answer_503_with_the_command(keyed_app_without_models):
    base, right = keyed_app_without_models, {"Authorization": f"Bearer {KEY}"}
    status, health = call(f"{base}/healthz")
    assert status == 200 and health["status"] == "degraded"
    assert not health["search"]["loaded"] and not health["vqa"]["loaded"]
    status, out = call(f"{base}/search", {"text": "a red circle"}, headers=right)
    assert status == 503 and "python jobs/train.py" in out["error"]
    status, out = call(f"{base}/vqa", {"image": png_b64(), "question": "what"}, headers=right)
    assert status == 503 and "python jobs/train.py --model pitvqa" in out["error"]
