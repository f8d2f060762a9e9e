"""The model replicas behind the ingress, one class per kind of work:

- ``QueryEncoder``: text encoding (``models.encode``), held by the ingress itself: a query
  costs one replica call fewer (the hop cost 10 ms of a 23 ms answer here; encoding 1 ms);
- ``IndexShard`` x N: part of every segment of the index each (on its own GPU when
  there are GPUs, else on a CPU of its own), answering its top-k, two-stage
  (``retrieval.lists``) unless asked ``exact``, and following the index's new versions;
- ``VQAModel``: batched PitVQANet with image decoding, preprocessing and tokenization.

What a replica cannot do *by design* (its checkpoint or index is missing) it answers as
``{"problem": ...}`` and the ingress turns into a 503 that names the command to run. Anything
it raises is a bug: the ingress answers 500 with the request id and logs the traceback.
"""

from __future__ import annotations

import base64
import binascii
import io
import logging
import threading
import time
from pathlib import Path

import numpy as np
import ray
import torch
from PIL import Image
from ray import serve

from ingest.datasets import image_pixels
from ingest.qa import SPLITS, load_labels
from models.device import pick_device
from models.precision import autocast, is_large, resolve_precision
from models.wti import explain_pair
from retrieval.lists import InvertedLists, lists_for, search_lists
from retrieval.store import IndexReader, read_manifest

from . import metrics
from .schemas import MAX_IMAGE_BYTES, MAX_IMAGE_PIXELS

TRAIN_RETRIEVER = "python jobs/train.py"
TRAIN_PITVQA = "python jobs/train.py --model pitvqa"


def _missing(what: str, path: Path, command: str) -> str:
    return f"no {what} at {path}: build it with `{command}`"


def _setup_torch() -> str:
    """Device for a replica; on a CPU one thread per replica, as replicas share the cores."""
    device = pick_device()
    if device == "cpu":
        torch.set_num_threads(1)
    return device


def _node() -> str:
    """The Ray node this replica runs on (its id), for /healthz."""
    return ray.get_runtime_context().get_node_id()


class _CheckpointReplica:
    """Loads a checkpoint folder on the replica's device, or records what is missing
    (``problem``) so that the app still starts and the route can answer 503. The model
    code (transformers) is imported here, not with this module: an index shard, which only
    scores, starts without it (3-4 s of CPU less per shard replica)."""

    def __init__(self, checkpoint: str, what: str, command: str, precision: str = "auto"):
        from models.checkpoint import load_checkpoint

        self.device, self.checkpoint = _setup_torch(), Path(checkpoint)
        self.model = self.tokenizer = self.problem = self.compute_dtype = None
        try:
            self.compute_dtype = resolve_precision(
                precision, self.device, is_large(self.checkpoint)
            )
        except ValueError as err:  # fp16 on a CPU replica
            self.problem = f"precision={precision}: {err}"
            return
        if (self.checkpoint / "config.json").is_file():
            self.model, self.tokenizer = load_checkpoint(self.checkpoint, device=self.device)
        else:
            self.problem = _missing(what, self.checkpoint, command)

    def autocast(self):
        return autocast(self.compute_dtype, self.device)

    def info(self) -> dict:
        return {
            "loaded": self.model is not None,
            "checkpoint": str(self.checkpoint),
            "node": _node(),
            "compute_dtype": self.compute_dtype,
            "problem": self.problem,
        }


class QueryEncoder(_CheckpointReplica):
    """Text -> the query's encoding: tokens ``[L, D]``, weights ``[L]``, pooled ``[D]``. Not a
    deployment of its own: the ingress holds one and encodes each query as it comes (1 ms for
    the tiny text tower here; ``@serve.batch`` measured 2 ms slower per query at concurrency 1)."""

    def __init__(self, checkpoint: str, precision: str = "auto"):
        super().__init__(checkpoint, "retriever checkpoint", TRAIN_RETRIEVER, precision)

    def encode(self, texts: list[str]) -> list[dict]:
        from models.encode import encode_texts

        if self.model is None:
            return [{"problem": self.problem}] * len(texts)
        with self.autocast():
            encoded = encode_texts(self.model, self.tokenizer, texts).numpy()
        return [{name: values[i] for name, values in encoded.items()} for i in range(len(texts))]

    def words(self, text: str) -> list[str]:
        """The query's tokens as the model reads them (its feature rows, padding left out)."""
        from models.tokenizer import token_words

        return token_words(self.tokenizer, text, self.model.config.max_words)


class ShardView:
    """One version of a shard's rows on its device, as inverted lists (``retrieval.lists``)."""

    def __init__(self, version: int, rows, centroids, device: str, candidates: int | None):
        self.version, self.candidates = version, candidates
        self.rows = len(rows) if rows is not None else 0
        if not self.rows:
            return
        if (
            centroids is None or rows.lists is None
        ):  # an index written before the lists: make them here
            centroids, rows.lists = lists_for(rows.pooled)
        # The second stage scores exactly, in fp32, on a GPU too (the index stores fp16).
        order, self.lists = InvertedLists.build(
            rows.lists,
            centroids,
            torch.from_numpy(rows.frames).to(device, torch.float32),
            torch.from_numpy(rows.weights).to(device),
        )
        self.ids = [rows.video_ids[i] for i in order]
        first = int(np.flatnonzero(np.diff(self.lists.offsets))[0])
        self.probe_query = (
            self.lists.slab(first)[:, :1].transpose(0, 1).float(),  # a video's frames as the query
            self.lists.weights[:1],
            torch.from_numpy(np.asarray(centroids[first], np.float32))[None],
        )
        self.probe = self.run_probe()  # what the health check must get again

    def search(
        self,
        tokens,
        weights,
        pooled,
        top_k: int,
        exact: bool,
        stats: dict | None = None,
        explained: dict | None = None,
    ) -> list[tuple[str, float]]:
        """This view's best ``top_k``; ``stats["scored"]``: how many videos were scored;
        ``explained`` (when given) gets each hit's ``explain_pair`` parts by video id."""
        if not self.rows:
            return []
        scores, rows = search_lists(
            tokens, weights, pooled, self.lists, top_k, exact, self.candidates, stats
        )
        hits = [(self.ids[r], s) for r, s in zip(rows[0].tolist(), scores[0].float().tolist())]
        if explained is not None:
            for (video_id, _), row in zip(hits, rows[0].tolist()):
                parts = explain_pair(tokens[0], weights[0], *self.lists.video(row))
                explained[video_id] = {k: v.cpu().tolist() for k, v in parts.items()}
        return hits

    def run_probe(self) -> list[tuple[str, float]]:
        """A real query on these rows: a video's frames as the query tokens."""
        return self.search(*self.probe_query, 5, False)


@serve.deployment(
    ray_actor_options={"num_cpus": 0}, health_check_period_s=10, health_check_timeout_s=30
)
class IndexShard:
    """Part of every segment of the index (``retrieval.store.serving_parts``); answers its
    own top-k. It follows the index as it changes: every ``poll_s`` seconds it looks for a new
    version, loads it beside the one it serves (reading only new segments) and keeps the
    last two, so that while the shards move to a new version the ingress can ask those that
    hold it for the one the others still serve (``serve.ingress.Ingress.search``)."""

    def __init__(
        self,
        index: str,
        shard: int,
        num_shards: int,
        candidates: int | None = None,
        poll_s: float = 2.0,
    ):
        self.device, self.index, self.shard = _setup_torch(), Path(index), shard
        self.candidates, self.poll_s = candidates, poll_s
        self.reader = IndexReader(self.index, shard, num_shards)
        self.views: dict[int, ShardView] = {}
        self.problem = None
        self.refresh()
        self._report()
        threading.Thread(target=self._follow, name="follow-index", daemon=True).start()

    def refresh(self) -> None:
        """Load the index's current version if this shard does not hold it yet."""
        try:
            manifest = read_manifest(self.index)
        except FileNotFoundError:
            if not self.views:
                self.problem = _missing(
                    "retrieval index", self.index, f"{TRAIN_RETRIEVER} (or python jobs/index.py)"
                )
            return
        if manifest["version"] in self.views:
            return
        centroids = (
            np.load(self.index / manifest["centroids"]) if manifest.get("centroids") else None
        )
        view = ShardView(
            manifest["version"], self.reader.rows(manifest), centroids, self.device, self.candidates
        )
        kept = sorted(self.views)[-1:]
        self.views = {
            **{v: self.views[v] for v in kept},
            view.version: view,
        }  # one assignment: readers see old or new
        self.problem = None

    def _report(self) -> None:
        """The newest view's gauges. Sent again on every poll: Ray drops a gauge series that
        its process has not set for about 30 s, even while that process lives."""
        view = self._view()
        if view is not None:
            metrics.index(self.shard, view.version, view.rows)

    def _follow(self) -> None:
        while True:
            time.sleep(self.poll_s)
            try:
                self.refresh()
                self._report()
            except (
                Exception
            ):  # a version half-deleted under us, a bad file: keep serving, try again
                logging.getLogger("ray.serve").exception(
                    "index shard %d: loading the new index version failed", self.shard
                )

    def _view(self, version: int | None = None) -> ShardView | None:
        """The view of ``version`` (None: the newest); one this shard has already let go of
        (it moved on twice while another shard lagged): the oldest it holds, never older."""
        views = self.views
        if not views:
            return None
        if version is None:
            return views[max(views)]
        held = [v for v in views if v >= version]
        return views[min(held)] if held else views[max(views)]

    def check_health(self) -> None:
        """Serve calls this periodically; raising marks the replica unhealthy and replaces it."""
        view = self._view()
        if view is not None and view.rows:
            got = view.run_probe()
            if [v for v, _ in got] != [v for v, _ in view.probe] or not torch.allclose(
                torch.tensor([s for _, s in got]),
                torch.tensor([s for _, s in view.probe]),
                atol=1e-4,
            ):
                raise RuntimeError(
                    f"index shard {self.shard}: the probe query answers {got}, not {view.probe}"
                )

    def info(self) -> dict:
        view, views = self._view(), self.views
        return {
            "shard": self.shard,
            "rows": view.rows if view else 0,
            "version": view.version if view else None,
            "versions": sorted(views),
            "rows_by_version": {v: views[v].rows for v in views},
            "device": self.device,
            "node": _node(),
            "problem": self.problem,
        }

    def search(
        self,
        query: dict,
        top_k: int,
        exact: bool,
        version: int | None = None,
        explain: bool = False,
    ) -> dict:
        """The best ``top_k`` of this shard in ``version`` (None: its newest), which version
        answered, how many videos it scored, and with ``explain`` what each hit's score is
        made of (``models.wti.explain_pair``). A plain method: Serve runs it off the replica's event loop, so
        health checks and ``info`` answer during a search (``async`` measured the same /search
        p50 at concurrency 1: 21.1 against 20.3 ms, BENCHMARKS.md)."""
        if self.problem:  # no index here
            return {"problem": self.problem}
        view, stats = self._view(version), {"scored": 0}
        explained = {} if explain else None
        as_tensor = lambda name: torch.as_tensor(query[name], device=self.device).unsqueeze(0)  # noqa: E731
        hits = view.search(
            as_tensor("features"),
            as_tensor("weights"),
            as_tensor("pooled"),
            top_k,
            exact,
            stats,
            explained,
        )
        out = {"hits": hits, "version": view.version, "scored": stats["scored"]}
        return {**out, "explained": explained} if explain else out


class BadImage(ValueError):
    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


def decode_image(data: str):
    """base64 PNG/JPEG -> PIL image, or ``BadImage`` (400, or 413 when too large)."""
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
            raise BadImage(
                413, f"image: {image.width}x{image.height} is more than {MAX_IMAGE_PIXELS} pixels"
            )
        image.load()
    except BadImage:
        raise
    except Exception:  # PIL raises many kinds for bytes that are not an image: a client error
        raise BadImage(400, "image: does not decode as PNG or JPEG") from None
    return image


@serve.deployment(ray_actor_options={"num_cpus": 0}, health_check_period_s=5)
class VQAModel(_CheckpointReplica):
    """(base64 image, question) -> answer class, its probability and the top five."""

    def __init__(self, checkpoint: str, precision: str = "auto"):
        from models.checkpoint import read_config

        super().__init__(checkpoint, "PitVQANet checkpoint", TRAIN_PITVQA, precision)
        if self.model is not None:
            self.labels = read_config(self.checkpoint).get("labels") or _labels_for(
                self.model.config.num_classes
            )

    @serve.batch(max_batch_size=16, batch_wait_timeout_s=0.002)
    async def answer(self, items: list[tuple[str, str]]) -> list[dict]:
        from models.tokenizer import tokenize

        if self.model is None:
            return [{"problem": self.problem}] * len(items)
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
        with torch.no_grad(), self.autocast():
            logits = self.model(
                pixels,
                tokens["input_ids"].to(self.device),
                tokens["attention_mask"].to(self.device),
            )
        probs = logits.float().softmax(-1).cpu()
        top = probs.topk(min(5, probs.shape[1]), dim=1)
        for row, i in enumerate(good):
            ranked = [
                {"answer": self.labels[c], "score": s}
                for c, s in zip(top.indices[row].tolist(), top.values[row].tolist())
            ]
            out[i] = {
                "answer": ranked[0]["answer"],
                "confidence": ranked[0]["score"],
                "top": ranked,
            }
        return out


def _labels_for(num_classes: int) -> list[str]:
    for dataset in SPLITS:
        labels = load_labels(dataset)
        if len(labels) == num_classes:
            return labels
    return [f"class_{i}" for i in range(num_classes)]
