"""The HTTP front: FastAPI routes, the fan-out to every index shard, and what each failure
answers.

- bad input: 4xx with one line (``error``), from pydantic or the image decoder;
- a model or index that is not there: 503 naming the command that builds it;
- a replica that is dead, restarting or too slow: for ``/search`` the other shards' answer
  with ``"partial": true``, 503 when none answers; for ``/vqa`` 503;
- anything else raised is a bug: 500 with the request id, and the traceback in this
  replica's log under that id (``ray logs`` / the Serve log files).
"""

# No `from __future__ import annotations`: FastAPI reads the request models from the annotations.
import asyncio
import logging
import time
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, Response
from ray import serve

from cluster.ray_private import serve_request_id
from retrieval.store import MANIFEST, read_manifest
from retrieval.thumbnails import Thumbnails

from .schemas import (
    ErrorResponse,
    Hit,
    SearchRequest,
    SearchResponse,
    VQARequest,
    VQAResponse,
    error,
)

log = logging.getLogger("ray.serve")

HEALTH_TIMEOUT_S = (
    5.0  # /healthz: a deployment that takes longer to say how it is, is reported down
)


def _unavailable(exc: BaseException) -> bool:
    """A replica that is gone, restarting, overloaded or too slow (not a bug): 503/partial."""
    from ray.exceptions import ActorUnavailableError, RayActorError
    from ray.serve.exceptions import (
        BackPressureError,
        DeploymentUnavailableError,
        RequestCancelledError,
    )

    kinds = (
        asyncio.TimeoutError,
        TimeoutError,
        RayActorError,
        ActorUnavailableError,
        BackPressureError,
        DeploymentUnavailableError,
        RequestCancelledError,
    )
    while exc is not None:
        if isinstance(exc, kinds):
            return True
        exc = getattr(exc, "cause", None) or exc.__cause__
    return False


def _bug(route: str, exc: BaseException) -> JSONResponse:
    request_id = serve_request_id()
    log.error("%s failed (request id %s)", route, request_id, exc_info=exc)
    return error(
        500,
        f"internal error in {route}; the server log has the traceback under request id {request_id}",
        request_id,
    )


def merge(results: list[list[tuple[str, float]]], top_k: int) -> list[tuple[str, float]]:
    """Merge per-shard ``[(video_id, score), ...]`` lists into the global best ``top_k``.

    Ties are broken by video id, so that the answer does not depend on how the index is split.
    An id answered twice (a replaced video, while the shards move to a new version) counts once.
    """
    every = sorted((hit for hits in results for hit in hits), key=lambda hit: (-hit[1], hit[0]))
    seen, out = set(), []
    for hit in every:
        if hit[0] not in seen:
            seen.add(hit[0])
            out.append(hit)
    return out[:top_k]


api = FastAPI(
    title="vqa-wti-ray",
    version="1.0",
    description="Text-to-video search (CLIP4Clip + DRL's WTI over a sharded index) and surgical VQA "
    "(PitVQANet).",
)


@api.exception_handler(RequestValidationError)
async def _bad_request(request: Request, exc: RequestValidationError) -> JSONResponse:
    """Malformed JSON, missing fields, wrong types, out-of-range values: 422 with one line
    that says what is wrong, and FastAPI's list of problems under ``detail``."""
    problems = []
    for e in exc.errors():
        if e.get("type") == "json_invalid":
            problems.append(
                f"body: malformed JSON ({e.get('ctx', {}).get('error', 'cannot parse')})"
            )
            continue
        where = ".".join(str(p) for p in e.get("loc", ()) if p != "body") or "body"
        problems.append(f"{where}: {e.get('msg', 'invalid')}")
    return JSONResponse(
        status_code=422,
        content={
            "error": "; ".join(problems),
            "detail": [{k: e.get(k) for k in ("loc", "msg", "type")} for e in exc.errors()],
        },
    )


@serve.deployment(ray_actor_options={"num_cpus": 0}, health_check_period_s=5)
@serve.ingress(api)
class Ingress:
    def __init__(self, checkpoint: str, shards: list, vqa, index: str, timeout_s: float = 15.0):
        from .replicas import QueryEncoder

        # The query encoder lives here: a query costs one replica call fewer (BENCHMARKS.md).
        self.encoder, self.shards, self.vqa, self.index = (
            QueryEncoder(checkpoint),
            shards,
            vqa,
            Path(index),
        )
        self.timeout_s = timeout_s  # AppArgs.timeout_s
        self.html = Path(__file__).with_name("page.html").read_text()
        self.thumbnails = None
        # The newest index version each shard holds, as its answers say. A query asks every
        # shard for the oldest of these, which all of them still hold while they move to a
        # new version (each keeps its last two): one version per answer.
        self.newest: list[int | None] = [None] * len(shards)

    def _saw(self, shard: int, version: int) -> None:
        # Versions only grow (a rebuild is the next version too). An answer computed before a
        # shard loaded its new version can arrive after /healthz saw that version: it must not
        # send the next queries back to the old one.
        self.newest[shard] = max(version, self.newest[shard] or 0)

    def _version(self) -> int | None:
        known = [v for v in self.newest if v is not None]
        return min(known) if len(known) == len(self.newest) else None

    def _thumbnails(self):
        if self.thumbnails is None and (self.index / MANIFEST).is_file():
            self.thumbnails = Thumbnails(self.index)
        elif self.thumbnails is not None:
            self.thumbnails.refresh()
        return self.thumbnails

    @api.get("/", response_class=HTMLResponse, include_in_schema=False)
    def page(self) -> str:
        return self.html

    @api.get("/healthz")
    async def healthz(self) -> dict:
        """What is loaded: the retriever, each index shard (rows, up or down) and PitVQANet."""

        async def ask(handle):
            try:
                return await asyncio.wait_for(handle.info.remote(), HEALTH_TIMEOUT_S)
            except Exception as err:  # a dead or stuck replica: report it, do not fail the probe
                return {"problem": f"not answering ({type(err).__name__})"}

        encoder = self.encoder.info()
        vqa, *shards = await asyncio.gather(ask(self.vqa), *(ask(s) for s in self.shards))
        up = [s for s in shards if "rows" in s and not s.get("problem")]
        for i, shard in enumerate(shards):
            if shard.get("version") is not None:
                self._saw(i, shard["version"])
        manifest = read_manifest(self.index) if (self.index / MANIFEST).is_file() else {}
        ready = encoder.get("loaded") and vqa.get("loaded") and len(up) == len(shards)
        served = {s.get("version") for s in up}
        return {
            "status": "ok" if ready else "degraded",
            "search": {
                **encoder,
                "index": str(self.index),
                # What the shards serve: one version once every shard holds it (else null
                # while they load it), and the videos in it.
                "index_version": served.pop()
                if len(served) == 1 and len(up) == len(shards)
                else None,
                "index_size": sum(s["rows"] for s in up),
                "index_on_disk": {
                    "version": manifest.get("version"),
                    "count": manifest.get("count", 0),
                },
                "shards": len(self.shards),
                "shards_up": len(up),
                "shard_rows": [s.get("rows", 0) for s in shards],
                "shard_versions": [s.get("versions", []) for s in shards],
                "shard_nodes": [s.get("node") for s in shards],
                "problems": sorted({s["problem"] for s in shards if s.get("problem")}),
            },
            "vqa": vqa,
        }

    @api.post(
        "/search",
        response_model=SearchResponse,
        responses={
            422: {"description": "bad input", "model": ErrorResponse},
            500: {"description": "a bug; the body has the request id", "model": ErrorResponse},
            503: {
                "description": "model or index missing, or every shard down",
                "model": ErrorResponse,
            },
        },
    )
    async def search(self, request: SearchRequest):
        started = time.perf_counter()
        try:
            query = self.encoder.encode([request.text])[0]
        except Exception as exc:  # the text model raised: a bug
            return _bug("/search", exc)
        if "problem" in query:  # no retriever checkpoint
            return error(503, query["problem"])
        version = self._version()
        answers = await asyncio.gather(
            *(
                asyncio.wait_for(
                    shard.search.remote(query, request.top_k, request.exact, version),
                    self.timeout_s,
                )
                for shard in self.shards
            ),
            return_exceptions=True,
        )
        for i, answer in enumerate(answers):
            if isinstance(answer, dict) and "newest" in answer:
                self._saw(i, answer["newest"])
        bugs = [a for a in answers if isinstance(a, BaseException) and not _unavailable(a)]
        if bugs:
            return _bug("/search", bugs[0])
        problems = {a["problem"] for a in answers if isinstance(a, dict) and "problem" in a}
        if problems:
            return error(503, sorted(problems)[0])
        live = [a for a in answers if isinstance(a, dict) and "hits" in a]
        if not live:
            return error(503, f"all {len(self.shards)} index shards are not answering; try again")
        for answer in answers:
            if isinstance(answer, BaseException):
                log.warning("an index shard did not answer: %r", answer)
        hits = merge([a["hits"] for a in live], request.top_k)
        return SearchResponse(
            results=[Hit(video_id=v, score=s) for v, s in hits],
            partial=len(live) < len(answers),
            missing_shards=len(answers) - len(live),
            exact=request.exact,
            index_version=min(a["version"] for a in live),
            took_ms=round(1000 * (time.perf_counter() - started), 2),
        )

    @api.post(
        "/vqa",
        response_model=VQAResponse,
        responses={
            400: {"description": "the image does not decode", "model": ErrorResponse},
            413: {"description": "image too large", "model": ErrorResponse},
            422: {"description": "bad input", "model": ErrorResponse},
            500: {"description": "a bug; the body has the request id", "model": ErrorResponse},
            503: {"description": "model missing or not answering", "model": ErrorResponse},
        },
    )
    async def vqa(self, request: VQARequest):
        try:
            out = await asyncio.wait_for(
                self.vqa.answer.remote((request.image, request.question)), self.timeout_s
            )
        except Exception as err:
            if not _unavailable(err):
                return _bug("/vqa", err)
            return error(503, f"the VQA model is not answering ({type(err).__name__}); try again")
        if "problem" in out:
            return error(503, out["problem"])
        if "error" in out:
            return error(out["status"], out["error"])
        return VQAResponse(**out)

    @api.get(
        "/thumbnail/{video_id}",
        responses={200: {"content": {"image/jpeg": {}}}, 404: {"description": "unknown id"}},
    )
    def thumbnail(self, video_id: str):
        """One frame of an indexed video, looked up by id in the index (never a path)."""
        store = self._thumbnails()
        data = store.get(video_id) if store else None
        if data is None:
            return error(404, f"no thumbnail for video id {video_id!r}")
        return Response(
            content=data, media_type="image/jpeg", headers={"Cache-Control": "max-age=3600"}
        )
