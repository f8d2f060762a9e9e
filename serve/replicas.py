"""The model replicas behind the ingress, one class per kind of work:

- ``QueryEncoder``: batched text encoding (``@serve.batch``, ``models.encode``);
- ``IndexShard`` x N: one contiguous slice of the index each (on its own GPU when there are
  GPUs, else on a CPU of its own), answering its top-k, two-stage (``models.search``) unless
  asked ``exact``;
- ``VQAModel``: batched PitVQANet with image decoding, preprocessing and tokenization.

What a replica cannot do *by design* (its checkpoint or index is missing) it answers as
``{"problem": ...}`` and the ingress turns into a 503 that names the command to run. Anything
it raises is a bug: the ingress answers 500 with the request id and logs the traceback.
"""
from __future__ import annotations

import base64
import binascii
import io
from pathlib import Path

import ray
import torch
from ray import serve

from .schemas import MAX_IMAGE_BYTES, MAX_IMAGE_PIXELS

TRAIN_RETRIEVER = "python jobs/train.py"
TRAIN_PITVQA = "python jobs/train.py --model pitvqa"


def _missing(what: str, path: Path, command: str) -> str:
    return f"no {what} at {path}: build it with `{command}`"


def _setup_torch() -> str:
    """Device for a replica; on a CPU one thread per replica, as replicas share the cores."""
    if torch.cuda.is_available():
        return "cuda"
    torch.set_num_threads(1)
    return "cpu"


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
    """Text -> the query's encoding: tokens ``[L, D]``, weights ``[L]``, pooled ``[D]``."""

    def __init__(self, checkpoint: str):
        super().__init__(checkpoint, "retriever checkpoint", TRAIN_RETRIEVER)

    @serve.batch(max_batch_size=16, batch_wait_timeout_s=0.002)
    async def encode(self, texts: list[str]) -> list[dict]:
        if self.model is None:
            return [{"problem": self.problem}] * len(texts)
        from models.encode import encode_texts

        encoded = encode_texts(self.model, self.tokenizer, texts).numpy()
        return [{name: values[i] for name, values in encoded.items()} for i in range(len(texts))]


@serve.deployment(ray_actor_options={"num_cpus": 0}, health_check_period_s=10, health_check_timeout_s=30)
class IndexShard:
    """One contiguous slice of the index; answers its own top-k."""

    def __init__(self, index: str, shard: int, num_shards: int, candidates: int | None = None):
        from models.index import load_rows, read_manifest, slice_bounds

        self.device, self.index, self.shard, self.candidates = _setup_torch(), Path(index), shard, candidates
        self.rows = self.problem = None
        try:
            manifest = read_manifest(self.index)
        except FileNotFoundError:
            self.problem = _missing("retrieval index", self.index, f"{TRAIN_RETRIEVER} (or python jobs/index.py)")
            return
        first, last = slice_bounds(manifest["count"], num_shards)[shard]
        if last <= first:
            return  # more shards than videos: this one holds nothing
        rows = load_rows(self.index, first, last)
        dtype = torch.float16 if self.device == "cuda" else torch.float32  # the CPU has no fast fp16 matmul
        self.ids = rows.video_ids
        self.frames = torch.from_numpy(rows.frames).to(self.device, dtype)
        self.weights = torch.from_numpy(rows.weights).to(self.device)
        self.pooled = torch.from_numpy(rows.pooled).to(self.device, dtype)
        self.rows = len(rows)
        self.probe = self._probe()  # what the health check must get again

    def _probe(self) -> tuple[list[int], torch.Tensor]:
        """A real query on this slice: its first video's frames as the query tokens."""
        from models.search import search

        scores, rows = search(self.frames[:1].float(), self.weights[:1], self.pooled[:1].float(), self.frames,
                              self.weights, self.pooled, top_k=5, candidates=self.candidates)
        return rows[0].tolist(), scores[0].float().cpu()

    def check_health(self) -> None:
        """Serve calls this periodically; raising marks the replica unhealthy and replaces it."""
        if self.rows:
            rows, scores = self._probe()
            if rows != self.probe[0] or not torch.allclose(scores, self.probe[1], atol=1e-4):
                raise RuntimeError(f"index shard {self.shard}: the probe query answers {rows} {scores.tolist()}, "
                                   f"not {self.probe[0]} {self.probe[1].tolist()}")

    def info(self) -> dict:
        return {"shard": self.shard, "rows": self.rows or 0, "device": self.device, "node": _node(),
                "problem": self.problem}

    def search(self, query: dict, top_k: int, exact: bool) -> dict:
        if self.problem or "problem" in query:  # no index here, or no model at the encoder
            return {"problem": self.problem or query["problem"]}
        if not self.rows:
            return {"hits": []}
        from models.search import search

        as_tensor = lambda name: torch.as_tensor(query[name], device=self.device).unsqueeze(0)  # noqa: E731
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
    except Exception:  # PIL raises many kinds for bytes that are not an image: a client error
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
