"""The Ray Serve application: text-to-video search over a sharded index, and VQA.

    serve run serve.app                                   # runs/wti/{checkpoint,index}, runs/pitvqa/checkpoint
    serve run serve:build_app num_shards=4 index=/data/index checkpoint=/data/wti vqa_checkpoint=/data/pitvqa
    serve deploy serve/config.yaml                        # the same, on a running cluster

Deployments, composed with ``.bind()``:

- ``Ingress``: FastAPI (pydantic requests and responses, OpenAPI docs at ``/docs``), the
  web page at ``/``, thumbnails, and the fan-out to every shard with a timeout each;
- ``QueryEncoder``: batched text encoding (``@serve.batch``) into prepared WTI tokens;
- ``IndexShard`` x N: each holds one contiguous slice of the index (on its own GPU when
  there are GPUs) and returns its top-k, two-stage (``serve.search``) unless asked ``exact``;
- ``VQAModel``: batched PitVQANet with image decoding, preprocessing and tokenization.

A model or index that is missing does not stop the app: ``/healthz`` says what is loaded,
and a route that needs what is missing answers 503 with the command that builds it.
"""
# No `from __future__ import annotations`: FastAPI reads the request models from the annotations.

import asyncio
import base64
import binascii
import io
import logging
import time
from pathlib import Path
from typing import Annotated

import numpy as np
import ray
import torch
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, Response
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationInfo
from ray import serve
from ray.serve import Application

from .index import Thumbnails, load_rows, read_manifest, slice_bounds
from .search import merge, pooled, search

log = logging.getLogger("ray.serve")

MAX_TEXT_CHARS = 1000  # a query; the model reads its first max_words tokens
MAX_TOP_K = 100
MAX_QUESTION_CHARS = 500
MAX_IMAGE_BYTES = 10 << 20  # decoded; larger uploads get 413
MAX_IMAGE_PIXELS = 25_000_000  # width x height; larger images get 413 before they are decoded
SHARD_TIMEOUT_S = 5.0  # /healthz: a deployment that takes longer to say how it is, is reported down
MODEL_TIMEOUT_S = 15.0  # encoding + one shard's search, or one VQA answer; a shard that takes longer
# is reported missing ("partial": true), a VQA answer that takes longer is a 503

TRAIN_RETRIEVER = "python jobs/train.py"
TRAIN_PITVQA = "python jobs/train.py --model pitvqa"


class Unavailable(Exception):
    """What a deployment cannot do now; the ingress answers 503 with the message."""


def _missing(what: str, path: Path, command: str) -> str:
    return f"no {what} at {path}: build it with `{command}`"


def _setup_torch() -> str:
    """Device for a replica; on a CPU one thread per replica, as replicas share the cores."""
    if torch.cuda.is_available():
        return "cuda"
    torch.set_num_threads(1)
    return "cpu"


# --- HTTP contract ------------------------------------------------------------------------


def not_blank(value: str, info: ValidationInfo) -> str:
    if not value.strip():
        raise ValueError(f"{info.field_name} is blank")
    return value


class SearchRequest(BaseModel):
    model_config = ConfigDict(strict=True)
    text: Annotated[str, AfterValidator(not_blank)] = Field(min_length=1, max_length=MAX_TEXT_CHARS,
                                                            description="the query, in words")
    top_k: int = Field(10, ge=1, le=MAX_TOP_K, description="how many videos to return")
    exact: bool = Field(False, description="score every video exactly instead of the two-stage search")


class Hit(BaseModel):
    video_id: str
    score: float


class SearchResponse(BaseModel):
    results: list[Hit] = Field(description="best first")
    partial: bool = Field(description="true when some index shards did not answer")
    missing_shards: int
    exact: bool
    took_ms: float


class VQARequest(BaseModel):
    model_config = ConfigDict(strict=True)
    image: str = Field(min_length=1, description="base64 PNG or JPEG (a data: URL prefix is accepted)")
    question: Annotated[str, AfterValidator(not_blank)] = Field(min_length=1, max_length=MAX_QUESTION_CHARS)


class Answer(BaseModel):
    answer: str
    score: float


class VQAResponse(BaseModel):
    answer: str
    confidence: float
    top: list[Answer]


def error(status: int, message: str) -> JSONResponse:
    return JSONResponse(status_code=status, content={"error": message})


# --- model deployments ----------------------------------------------------------------------


def _node() -> str:
    """The Ray node this replica runs on (its id), for /healthz."""
    return ray.get_runtime_context().get_node_id()


class _CheckpointReplica:
    """Loads a checkpoint folder on the replica's device, or records what is missing
    (``problem``) so that the app still starts and the route can answer 503."""

    def __init__(self, checkpoint: str, what: str, command: str):
        from models import load_checkpoint

        self.device, self.checkpoint = _setup_torch(), Path(checkpoint)
        self.model = self.tokenizer = self.problem = None
        if (self.checkpoint / "config.json").is_file():
            self.model, self.tokenizer = load_checkpoint(self.checkpoint, device=self.device)
        else:
            self.problem = _missing(what, self.checkpoint, command)

    def info(self) -> dict:
        return {"loaded": self.model is not None, "checkpoint": str(self.checkpoint), "node": _node(),
                "problem": self.problem}


@serve.deployment(ray_actor_options={"num_cpus": 0}, health_check_period_s=5)
class QueryEncoder(_CheckpointReplica):
    """Text -> prepared WTI tokens ``[L, D]``, weights ``[L]`` and the pooled vector ``[D]``."""

    def __init__(self, checkpoint: str):
        super().__init__(checkpoint, "retriever checkpoint", TRAIN_RETRIEVER)

    @serve.batch(max_batch_size=16, batch_wait_timeout_s=0.002)
    async def encode(self, texts: list[str]) -> list[dict]:
        if self.model is None:
            return [{"problem": self.problem}] * len(texts)
        from models import tokenize

        with torch.no_grad():
            tokens = tokenize(self.tokenizer, texts, self.model.config.max_words)
            feat, mask = self.model.encode_text(tokens["input_ids"].to(self.device),
                                                tokens["attention_mask"].to(self.device))
            text, weight = self.model.prepare_text(feat, mask)
            vector = pooled(text, weight)
        text, weight, vector = (t.float().cpu().numpy() for t in (text, weight, vector))
        return [{"tokens": text[i], "weights": weight[i], "pooled": vector[i]} for i in range(len(texts))]


@serve.deployment(ray_actor_options={"num_cpus": 0}, health_check_period_s=2, health_check_timeout_s=10)
class IndexShard:
    """One contiguous slice of the index; answers its own top-k."""

    def __init__(self, index: str, shard: int, num_shards: int, candidates: int | None = None):
        self.device, self.index, self.shard, self.candidates = _setup_torch(), Path(index), shard, candidates
        self.rows = self.problem = None
        try:
            manifest = read_manifest(self.index)
        except FileNotFoundError:
            self.problem = _missing("retrieval index", self.index, f"{TRAIN_RETRIEVER} (or python jobs/index.py)")
            return
        self.first, self.last = slice_bounds(manifest["count"], num_shards)[shard]
        rows = load_rows(self.index, self.first, self.last) if self.last > self.first else None
        if rows is None:
            return  # more shards than videos: this one holds nothing
        dtype = torch.float16 if self.device == "cuda" else torch.float32  # the CPU has no fast fp16 matmul
        self.ids = rows.video_ids
        self.frames = torch.from_numpy(rows.frames).to(self.device, dtype)
        self.weights = torch.from_numpy(rows.weights).to(self.device)
        self.pooled = torch.from_numpy(rows.pooled).to(self.device, dtype)
        self.rows = len(rows)

    def info(self) -> dict:
        return {"shard": self.shard, "rows": self.rows or 0, "device": self.device, "node": _node(),
                "problem": self.problem}

    def check_health(self) -> None:
        if self.problem is None and self.rows is not None and self.frames.shape[0] != self.rows:
            raise RuntimeError("index slice lost")

    def search(self, query: dict, top_k: int, exact: bool) -> dict:
        if self.problem or "problem" in query:  # no index here, or no model at the encoder
            return {"problem": self.problem or query["problem"]}
        if not self.rows:
            return {"hits": []}
        as_tensor = lambda name: torch.tensor(query[name], device=self.device).unsqueeze(0)  # noqa: E731
        scores, rows = search(as_tensor("tokens"), as_tensor("weights"), as_tensor("pooled"), self.frames,
                              self.weights, self.pooled, top_k, exact, self.candidates)
        return {"hits": [(self.ids[r], s) for r, s in zip(rows[0].tolist(), scores[0].float().tolist())]}


class BadImage(ValueError):
    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


def decode_image(data: str):
    """base64 PNG/JPEG -> PIL image, or ``BadImage`` (400, or 413 when too large)."""
    from PIL import Image

    if data.startswith("data:"):
        data = data.partition(",")[2]
    if len(data) > MAX_IMAGE_BYTES * 4 // 3 + 4:
        raise BadImage(413, f"image: larger than {MAX_IMAGE_BYTES >> 20} MB")
    try:
        raw = base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError):
        raise BadImage(400, "image: not valid base64") from None
    try:
        image = Image.open(io.BytesIO(raw))
        if image.format not in ("PNG", "JPEG"):
            raise BadImage(400, f"image: {image.format} is not PNG or JPEG")
        if image.width * image.height > MAX_IMAGE_PIXELS:
            raise BadImage(413, f"image: {image.width}x{image.height} is more than {MAX_IMAGE_PIXELS} pixels")
        image.load()
    except BadImage:
        raise
    except Exception:  # PIL raises many kinds for bytes that are not an image
        raise BadImage(400, "image: does not decode as PNG or JPEG") from None
    return image


@serve.deployment(ray_actor_options={"num_cpus": 0}, health_check_period_s=5)
class VQAModel(_CheckpointReplica):
    """(base64 image, question) -> answer class, its probability and the top five."""

    def __init__(self, checkpoint: str):
        from models.checkpoint import read_config

        super().__init__(checkpoint, "PitVQANet checkpoint", TRAIN_PITVQA)
        if self.model is not None:
            self.labels = read_config(self.checkpoint).get("labels") or _labels_for(self.model.config.num_classes)

    @serve.batch(max_batch_size=16, batch_wait_timeout_s=0.002)
    async def answer(self, items: list[tuple[str, str]]) -> list[dict]:
        if self.model is None:
            return [{"problem": self.problem}] * len(items)
        from ingest.datasets import image_pixels
        from models import tokenize

        out: list[dict] = [{} for _ in items]
        images, good = [], []
        for i, (data, _) in enumerate(items):
            try:
                images.append(decode_image(data))
                good.append(i)
            except BadImage as bad:
                out[i] = {"status": bad.status, "error": str(bad)}
        if not good:
            return out
        config = self.model.config
        pixels = torch.from_numpy(image_pixels(images, config.image_size)).to(self.device)
        tokens = tokenize(self.tokenizer, [items[i][1] for i in good], config.max_length)
        with torch.no_grad():
            probs = self.model(pixels, tokens["input_ids"].to(self.device),
                               tokens["attention_mask"].to(self.device)).softmax(-1).cpu()
        top = probs.topk(min(5, probs.shape[1]), dim=1)
        for row, i in enumerate(good):
            ranked = [{"answer": self.labels[c], "score": s} for c, s in
                      zip(top.indices[row].tolist(), top.values[row].tolist())]
            out[i] = {"answer": ranked[0]["answer"], "confidence": ranked[0]["score"], "top": ranked}
        return out


def _labels_for(num_classes: int) -> list[str]:
    from ingest.qa import SPLITS, load_labels

    for dataset in SPLITS:
        labels = load_labels(dataset)
        if len(labels) == num_classes:
            return labels
    return [f"class_{i}" for i in range(num_classes)]


# --- ingress ---------------------------------------------------------------------------------

api = FastAPI(title="vqa-wti-ray", version="1.0",
              description="Text-to-video search (CLIP4Clip + DRL's WTI over a sharded index) and surgical VQA "
                          "(PitVQANet).")


@api.exception_handler(RequestValidationError)
async def _bad_request(request: Request, exc: RequestValidationError) -> JSONResponse:
    """Malformed JSON, missing fields, wrong types, out-of-range values: 422 with one line
    that says what is wrong, and FastAPI's list of problems under ``detail``."""
    problems = []
    for e in exc.errors():
        if e.get("type") == "json_invalid":
            problems.append(f"body: malformed JSON ({e.get('ctx', {}).get('error', 'cannot parse')})")
            continue
        where = ".".join(str(p) for p in e.get("loc", ()) if p != "body") or "body"
        problems.append(f"{where}: {e.get('msg', 'invalid')}")
    return JSONResponse(status_code=422, content={"error": "; ".join(problems),
                                                  "detail": [{k: e.get(k) for k in ("loc", "msg", "type")}
                                                             for e in exc.errors()]})


@serve.deployment(ray_actor_options={"num_cpus": 0}, health_check_period_s=5)
@serve.ingress(api)
class Ingress:
    def __init__(self, encoder, shards: list, vqa, index: str):
        self.encoder, self.shards, self.vqa, self.index = encoder, shards, vqa, Path(index)
        self.html = Path(__file__).with_name("page.html").read_text()
        self.thumbnails: Thumbnails | None = None

    def _thumbnails(self) -> Thumbnails | None:
        if self.thumbnails is None and (self.index / "manifest.json").is_file():
            self.thumbnails = Thumbnails(self.index)
        return self.thumbnails

    @api.get("/", response_class=HTMLResponse, include_in_schema=False)
    def page(self) -> str:
        return self.html

    @api.get("/healthz")
    async def healthz(self) -> dict:
        """What is loaded: the retriever, each index shard (rows, up or down) and PitVQANet."""
        async def ask(handle):
            try:
                return await asyncio.wait_for(handle.info.remote(), SHARD_TIMEOUT_S)
            except Exception as err:  # a dead or stuck replica: report it, do not fail the probe
                return {"problem": f"not answering ({type(err).__name__})"}

        encoder, vqa, *shards = await asyncio.gather(ask(self.encoder), ask(self.vqa),
                                                     *(ask(s) for s in self.shards))
        up = [s for s in shards if "rows" in s and not s.get("problem")]
        manifest = read_manifest(self.index) if (self.index / "manifest.json").is_file() else {}
        ready = encoder.get("loaded") and vqa.get("loaded") and len(up) == len(shards)
        return {
            "status": "ok" if ready else "degraded",
            "search": {**encoder, "index": str(self.index), "index_size": manifest.get("count", 0),
                       "shards": len(self.shards), "shards_up": len(up), "shard_rows": [s.get("rows", 0) for s in shards],
                       "shard_nodes": [s.get("node") for s in shards],
                       "problems": sorted({s["problem"] for s in shards if s.get("problem")})},
            "vqa": vqa,
        }

    @api.post("/search", response_model=SearchResponse,
              responses={422: {"description": "bad input"}, 503: {"description": "model or index missing, or every shard down"}})
    async def search(self, request: SearchRequest):
        started = time.perf_counter()
        # The encoder's response goes to the shards as it is: each shard's replica fetches
        # the query itself, which saves a round trip through this replica.
        query = self.encoder.encode.remote(request.text)
        answers = await asyncio.gather(
            *(asyncio.wait_for(shard.search.remote(query, request.top_k, request.exact), MODEL_TIMEOUT_S)
              for shard in self.shards), return_exceptions=True)
        live = [a for a in answers if isinstance(a, dict) and "hits" in a]
        problems = {a["problem"] for a in answers if isinstance(a, dict) and "problem" in a}
        if problems:
            return error(503, sorted(problems)[0])
        if not live:
            return error(503, f"the query encoder or all {len(self.shards)} index shards are not answering; try again")
        for answer in answers:
            if isinstance(answer, BaseException):
                log.warning("an index shard did not answer: %r", answer)
        hits = merge([a["hits"] for a in live], request.top_k)
        return SearchResponse(results=[Hit(video_id=v, score=s) for v, s in hits], partial=len(live) < len(answers),
                              missing_shards=len(answers) - len(live), exact=request.exact,
                              took_ms=round(1000 * (time.perf_counter() - started), 2))

    @api.post("/vqa", response_model=VQAResponse,
              responses={400: {"description": "the image does not decode"}, 413: {"description": "image too large"},
                         422: {"description": "bad input"}, 503: {"description": "model missing"}})
    async def vqa(self, request: VQARequest):
        try:
            out = await asyncio.wait_for(self.vqa.answer.remote((request.image, request.question)), MODEL_TIMEOUT_S)
        except Exception as err:
            return error(503, f"the VQA model is not answering ({type(err).__name__}); try again")
        if "problem" in out:
            return error(503, out["problem"])
        if "error" in out:
            return error(out["status"], out["error"])
        return VQAResponse(**out)

    @api.get("/thumbnail/{video_id}", responses={200: {"content": {"image/jpeg": {}}}, 404: {"description": "unknown id"}})
    def thumbnail(self, video_id: str):
        """One frame of an indexed video, looked up by id in the index (never a path)."""
        store = self._thumbnails()
        data = store.get(video_id) if store else None
        if data is None:
            return error(404, f"no thumbnail for video id {video_id!r}")
        return Response(content=data, media_type="image/jpeg", headers={"Cache-Control": "max-age=3600"})


# --- the application ------------------------------------------------------------------------


class AppArgs(BaseModel):
    """What ``serve run serve:build_app key=value ...`` and the config file's ``args`` take.
    Relative paths are resolved where the app is built (run ``serve run`` from the repository
    root; on a cluster give absolute paths on shared storage)."""

    model_config = ConfigDict(extra="forbid")
    checkpoint: str = Field("runs/wti/checkpoint", description="retriever checkpoint folder")
    index: str = Field("runs/wti/index", description="index folder written by jobs/index.py (or jobs/train.py)")
    vqa_checkpoint: str = Field("runs/pitvqa/checkpoint", description="PitVQANet checkpoint folder")
    num_shards: int | None = Field(None, ge=1, le=256,
                                   description="index shards, one replica each (default: one per GPU, else 2)")
    use_gpu: bool | None = Field(None, description="one GPU per shard; default: when the cluster has GPUs")
    candidates: int | None = Field(None, ge=1, description="re-scored candidates per shard (default: serve.search)")
    shard_cpus: float = Field(0, ge=0, description="CPUs reserved per shard (its matmuls run on them without a GPU)")


def build_app(args: AppArgs) -> Application:
    """The application graph; nothing starts until Serve runs it."""
    if isinstance(args, dict):
        args = AppArgs(**args)
    from cluster import cluster_gpus, index_shards

    use_gpu = cluster_gpus() > 0 if args.use_gpu is None else args.use_gpu
    num_shards = index_shards(args.num_shards)
    path = lambda p: str(Path(p).expanduser().resolve())  # noqa: E731
    shard_options = {"num_cpus": args.shard_cpus, **({"num_gpus": 1} if use_gpu else {})}
    shards = [IndexShard.options(name=f"IndexShard{i}", ray_actor_options=shard_options)
              .bind(path(args.index), i, num_shards, args.candidates) for i in range(num_shards)]
    return Ingress.bind(QueryEncoder.bind(path(args.checkpoint)), shards, VQAModel.bind(path(args.vqa_checkpoint)),
                        path(args.index))
