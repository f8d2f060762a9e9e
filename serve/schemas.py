"""The HTTP contract: request and response bodies (pydantic; FastAPI publishes them at
``/docs``), the input limits, and the application's arguments."""

# No `from __future__ import annotations`: FastAPI reads the request models from the annotations.
from typing import Annotated, Literal

from fastapi.responses import JSONResponse
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field

MAX_TEXT_CHARS = 1000  # a query; the model reads its first max_words tokens
MAX_TOP_K = 100
MAX_QUESTION_CHARS = 500
MAX_IMAGE_BYTES = 10 << 20  # decoded; larger uploads get 413
MAX_IMAGE_PIXELS = 25_000_000  # width x height; larger images get 413 before they are decoded


# What the document says and the service checks are one thing: a pattern, written so that
# every regex dialect reads it alike (pydantic's Rust, Python's, ECMA's differ on \s and $).
NOT_BLANK = r"[^ \t\n\r\f\v]"  # some character that is not (ASCII) white space
# base64 (standard alphabet, padded), optionally as a data: URL; that it is a PNG or JPEG of
# at most MAX_IMAGE_PIXELS is checked when it is decoded (400, 413).
BASE64 = r"^(data:[^,]*,)?([A-Za-z0-9+/]{4})*([A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?$"
PATTERN_MEANS = {  # what the 422 says when a field does not match its pattern
    "text": "text is blank",
    "question": "question is blank",
    "image": "image: not valid base64",
}
API_KEY_VARIABLE = "VQA_WTI_API_KEY"


def whole_number(value):
    """JSON Schema's integer: 45.0 is one (strict pydantic refuses it); "45", true are not."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value  # the API key, when AppArgs.api_key is not given


class SearchRequest(BaseModel):
    model_config = ConfigDict(strict=True)
    text: str = Field(
        min_length=1,
        max_length=MAX_TEXT_CHARS,
        pattern=NOT_BLANK,
        description="the query, in words (not blank)",
    )
    top_k: Annotated[int, BeforeValidator(whole_number)] = Field(
        10, ge=1, le=MAX_TOP_K, description="how many videos to return"
    )
    exact: bool = Field(
        False, description="score every video exactly instead of the two-stage search"
    )
    explain: bool = Field(
        False,
        description="also return, for each hit, what its WTI score is made of (`explain`)",
    )


class Explanation(BaseModel):
    """One hit's WTI score, part by part (DRL's weighted token-wise interaction):
    ``score = (text_to_video + video_to_text) / 2``, where ``text_to_video`` is
    ``sum(token_weights[i] * token_best_similarity[i])`` and ``video_to_text`` is
    ``sum(frame_weights[j] * frame_best_similarity[j])``."""

    tokens: list[str] = Field(description="the query's tokens as the model reads them")
    token_weights: list[float] = Field(description="each token's WTI weight (they sum to 1)")
    frame_weights: list[float] = Field(
        description="each frame's WTI weight (they sum to 1; a padded frame has 0)"
    )
    similarity: list[list[float]] = Field(description="token x frame cosine similarities")
    token_best_frame: list[int] = Field(description="each token's most similar frame")
    token_best_similarity: list[float]
    frame_best_token: list[int] = Field(
        description="each frame's most similar token; -1: a padding position (similarity 0), "
        "which the reference's max can pick when every real token is negative"
    )
    frame_best_similarity: list[float]
    text_to_video: float
    video_to_text: float


class Hit(BaseModel):
    video_id: str
    score: float
    explain: Explanation | None = Field(
        None, description="what the score is made of; present with `explain: true` only"
    )


class SearchResponse(BaseModel):
    results: list[Hit] = Field(description="best first")
    partial: bool = Field(description="true when some index shards did not answer")
    missing_shards: int
    exact: bool
    index_version: int | None = Field(
        None,
        description="the index version that answered (the oldest, in the "
        "moment a shard has moved on to the next)",
    )
    took_ms: float


class VQARequest(BaseModel):
    model_config = ConfigDict(strict=True)
    image: str = Field(
        min_length=1,
        pattern=BASE64,
        description="a PNG or JPEG image, base64 (a data: URL is accepted); at most "
        f"{MAX_IMAGE_BYTES >> 20} MB and {MAX_IMAGE_PIXELS} pixels, else 413",
        json_schema_extra={"contentEncoding": "base64"},
    )
    question: str = Field(
        min_length=1, max_length=MAX_QUESTION_CHARS, pattern=NOT_BLANK, description="not blank"
    )


class Answer(BaseModel):
    answer: str
    score: float


class VQAResponse(BaseModel):
    answer: str
    confidence: float
    top: list[Answer]


class ErrorResponse(BaseModel):
    error: str = Field(description="what is wrong, in one line")
    request_id: str | None = Field(
        None, description="on a 500: the id under which the replica logged the traceback"
    )


def error(status: int, message: str, request_id: str | None = None) -> JSONResponse:
    body = {"error": message, **({"request_id": request_id} if request_id else {})}
    return JSONResponse(status_code=status, content=body)


class AppArgs(BaseModel):
    """What ``serve run serve:build_app key=value ...`` and the config file's ``args`` take.
    Relative paths are resolved where the app is built (run ``serve run`` from the repository
    root; on a cluster give absolute paths on shared storage)."""

    model_config = ConfigDict(extra="forbid")
    checkpoint: str = Field("runs/wti/checkpoint", description="retriever checkpoint folder")
    index: str = Field(
        "runs/wti/index", description="index folder written by jobs/index.py (or jobs/train.py)"
    )
    vqa_checkpoint: str = Field("runs/pitvqa/checkpoint", description="PitVQANet checkpoint folder")
    num_shards: int | None = Field(
        None,
        ge=1,
        le=256,
        description="index shards, one replica each (default: one per GPU, else 2)",
    )
    use_gpu: bool | None = Field(
        None, description="one GPU per shard; default: when the cluster has GPUs"
    )
    candidates: int | None = Field(
        None,
        ge=1,
        description="re-scored videos per shard by the fixed centroid rule (approximate); "
        "default: the lists' bounds, the exact top-k (retrieval/lists.py)",
    )
    index_poll_s: float = Field(
        2.0,
        gt=0,
        le=3600,
        description="how often each index shard looks for a new version of the index",
    )
    timeout_s: float = Field(
        15.0,
        gt=0,
        description="how long a query waits for one shard (encoding included) or "
        'one VQA answer; a shard that takes longer is left out ("partial": true), a VQA '
        "answer that takes longer is a 503",
    )
    api_key: str | None = Field(
        None,
        min_length=1,
        description="when set, /search, /vqa and /thumbnail need `Authorization: Bearer KEY` "
        f"(else 401); default: the {API_KEY_VARIABLE} environment variable, else none",
    )
    precision: Literal["auto", "fp32", "bf16", "fp16"] = Field(
        "auto",
        description="what the query encoder and PitVQANet compute in (autocast; the index's "
        "exact scores stay fp32): auto = bf16 where the replica's hardware runs it fast, else "
        "fp32; fp16 needs a GPU (models/precision.py)",
    )
    run: str | None = Field(
        None,
        min_length=1,
        description="an MLflow run id, or best (the finished training run of `experiment` with "
        "the highest validation score): serve that run's checkpoint and index (checkpoint= and "
        "index=; vqa_checkpoint= for a PitVQANet run), from its output folder or its artifacts",
    )
    experiment: str = Field("wti", min_length=1, description="the MLflow experiment of run=best")
    mlflow_tracking_uri: str | None = Field(
        None,
        min_length=1,
        description="the MLflow store of run= (default: the MLFLOW_TRACKING_URI environment "
        "variable, else the jobs' local store sqlite:///runs/mlflow.db)",
    )
    shard_cpus: float | None = Field(
        None,
        ge=0,
        description="CPUs reserved per shard (default: 1 without GPUs, so "
        "that the shards spread over the nodes as their matmuls need; 0 with a GPU each)",
    )
