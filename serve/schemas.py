"""The HTTP contract: request and response bodies (pydantic; FastAPI publishes them at
``/docs``), the input limits, and the application's arguments."""

# No `from __future__ import annotations`: FastAPI reads the request models from the annotations.
from typing import Annotated

from fastapi.responses import JSONResponse
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationInfo

MAX_TEXT_CHARS = 1000  # a query; the model reads its first max_words tokens
MAX_TOP_K = 100
MAX_QUESTION_CHARS = 500
MAX_IMAGE_BYTES = 10 << 20  # decoded; larger uploads get 413
MAX_IMAGE_PIXELS = 25_000_000  # width x height; larger images get 413 before they are decoded


def not_blank(value: str, info: ValidationInfo) -> str:
    if not value.strip():
        raise ValueError(f"{info.field_name} is blank")
    return value


class SearchRequest(BaseModel):
    model_config = ConfigDict(strict=True)
    text: Annotated[str, AfterValidator(not_blank)] = Field(
        min_length=1, max_length=MAX_TEXT_CHARS, description="the query, in words"
    )
    top_k: int = Field(10, ge=1, le=MAX_TOP_K, description="how many videos to return")
    exact: bool = Field(
        False, description="score every video exactly instead of the two-stage search"
    )


class Hit(BaseModel):
    video_id: str
    score: float


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
        min_length=1, description="base64 PNG or JPEG (a data: URL prefix is accepted)"
    )
    question: Annotated[str, AfterValidator(not_blank)] = Field(
        min_length=1, max_length=MAX_QUESTION_CHARS
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
        description="re-scored candidates per shard (default: retrieval.lists.candidate_count)",
    )
    timeout_s: float = Field(
        15.0,
        gt=0,
        description="how long a query waits for one shard (encoding included) or "
        'one VQA answer; a shard that takes longer is left out ("partial": true), a VQA '
        "answer that takes longer is a 503",
    )
    shard_cpus: float | None = Field(
        None,
        ge=0,
        description="CPUs reserved per shard (default: 1 without GPUs, so "
        "that the shards spread over the nodes as their matmuls need; 0 with a GPU each)",
    )
