"""The HTTP front: FastAPI routes, the fan-out to every index shard, and what each failure
answers.

- bad input: 4xx with one line (``error``), from pydantic or the image decoder; every error
  body, FastAPI's and Starlette's own included (a body that does not parse, an unknown
  route, a wrong method), has that shape, and ``/openapi.json`` lists every status a route
  answers (``ERRORS``);
- with an API key set (``AppArgs.api_key``): ``/search``, ``/vqa`` and ``/thumbnail`` without
  ``Authorization: Bearer KEY`` (or with another key) get 401 before anything else is read;
  ``/healthz``, the page and the OpenAPI document stay open;
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

from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, Response
from ray import serve
from starlette.exceptions import HTTPException as StarletteHTTPException

from cluster.ray_private import serve_request_id
from retrieval.store import MANIFEST, read_manifest
from retrieval.thumbnails import Thumbnails

from . import auth, metrics
from .schemas import (
    PATTERN_MEANS,
    ErrorResponse,
    Explanation,
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


def _explanation(words: list[str], parts: dict) -> Explanation:
    """A shard's ``explain_pair`` parts over the query's real tokens (the padding rows have
    weight 0 and similarity 0; a frame whose best is one says -1)."""
    n = len(words)
    return Explanation(
        tokens=words,
        token_weights=parts["token_weights"][:n],
        frame_weights=parts["frame_weights"],
        similarity=parts["similarity"][:n],
        token_best_frame=parts["token_best_frame"][:n],
        token_best_similarity=parts["token_best_similarity"][:n],
        frame_best_token=[t if t < n else -1 for t in parts["frame_best_token"]],
        frame_best_similarity=parts["frame_best_similarity"],
        text_to_video=parts["text_to_video"],
        video_to_text=parts["video_to_text"],
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

# Every error status a route can answer, and when; each with the body ``ErrorResponse``.
ERRORS = {
    400: "the body is not readable as JSON text, or the image does not decode",
    401: "an API key is set and the request does not carry it",
    404: "no such video id",
    413: "the image is too large",
    422: "bad input: a missing, wrongly typed or out-of-range field, or malformed JSON",
    500: "a bug; the body has the request id",
    503: "a model or the index is missing (the body names the command that builds it), or "
    "not answering",
}


def _errors(*statuses: int) -> dict:
    return {s: {"description": ERRORS[s], "model": ErrorResponse} for s in statuses}


def _openapi() -> dict:
    """FastAPI's document, with the bearer scheme when this replica has an API key."""
    if api.openapi_schema is None:
        api.openapi_schema = auth.declare(FastAPI.openapi(api))
    return api.openapi_schema


api.openapi = _openapi


@api.middleware("http")
async def _measure(request: Request, call_next):
    """Every answer counted by route (its template: ``/thumbnail/{video_id}``) and status,
    and timed end to end (``serve.metrics``)."""
    started = time.perf_counter()
    response = await call_next(request)
    route = request.scope.get("route")
    metrics.request(
        getattr(route, "path", "unmatched"),
        response.status_code,
        1000 * (time.perf_counter() - started),
    )
    return response


@api.exception_handler(StarletteHTTPException)
async def _http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
    """Starlette's and FastAPI's own errors (404, 405, a body that does not parse, our 401)
    in the project's shape, with their headers (``Allow``, ``WWW-Authenticate``)."""
    return JSONResponse(
        status_code=exc.status_code, content={"error": str(exc.detail)}, headers=exc.headers
    )


@api.exception_handler(RequestValidationError)
async def _bad_request(request: Request, exc: RequestValidationError) -> JSONResponse:
    """Malformed JSON, missing fields, wrong types, out-of-range values: 422 with one line
    that says what is wrong, and FastAPI's list of problems under ``detail``."""
    problems = []
    for e in exc.errors():
        where = ".".join(str(p) for p in e.get("loc", ()) if p != "body") or "body"
        if e.get("type") == "json_invalid":
            problems.append(
                f"body: malformed JSON ({e.get('ctx', {}).get('error', 'cannot parse')})"
            )
        elif e.get("type") == "string_pattern_mismatch":  # the patterns say what they check
            problems.append(f"{where}: {PATTERN_MEANS.get(where, e.get('msg', 'invalid'))}")
        else:
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
    def __init__(
        self,
        checkpoint: str,
        shards: list,
        vqa,
        index: str,
        timeout_s: float = 15.0,
        api_key: str | None = None,
        precision: str = "auto",
    ):
        from .replicas import QueryEncoder

        auth.set_key(api_key)

        # The query encoder lives here: a query costs one replica call fewer (BENCHMARKS.md).
        self.encoder, self.shards, self.vqa, self.index = (
            QueryEncoder(checkpoint, precision),
            shards,
            vqa,
            Path(index),
        )
        self.timeout_s = timeout_s  # AppArgs.timeout_s
        self.html = Path(__file__).with_name("page.html").read_text()
        self.thumbnails = None

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
        manifest = read_manifest(self.index) if (self.index / MANIFEST).is_file() else {}
        ready = encoder.get("loaded") and vqa.get("loaded") and len(up) == len(shards)
        # The live version: the one a search answers from now (the oldest newest version of
        # the shards, which every shard holds; ``search``), and the videos in it. Shards only
        # move forward, so once this is reported no later search answers from an older one.
        live = min((s["version"] for s in up if s.get("version") is not None), default=None)
        return {
            "status": "ok" if ready else "degraded",
            "api_key_required": auth.key_required(),
            "search": {
                **encoder,
                "index": str(self.index),
                "index_version": live if len(up) == len(shards) else None,
                "index_size": sum(s["rows_by_version"].get(live, 0) for s in up),
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
        response_model_exclude_none=True,  # a hit's `explain` only when asked for
        responses=_errors(400, 401, 422, 500, 503),
        dependencies=[Depends(auth.require_key)],
    )
    async def search(self, request: SearchRequest):
        started = time.perf_counter()
        try:
            query = self.encoder.encode([request.text])[0]
        except Exception as exc:  # the text model raised: a bug
            return _bug("/search", exc)
        if "problem" in query:  # no retriever checkpoint
            return error(503, query["problem"])
        encoded = time.perf_counter()
        metrics.stage("/search", "encode", 1000 * (encoded - started))
        answers = await self._ask_shards(query, request, [None] * len(self.shards))
        # One version per answer: while the shards move to a new version, the ones that
        # answered from it are asked again for the version the others still serve (they hold
        # their last two). Shards only move forward: once every shard holds a version, no
        # answer comes from an older one, whichever ingress replica asks.
        versions = [a.get("version") if isinstance(a, dict) else None for a in answers]
        oldest = min((v for v in versions if v is not None), default=None)
        if any(v is not None and v != oldest for v in versions):
            again = [oldest if v is not None and v != oldest else False for v in versions]
            for i, answer in zip(
                [i for i, v in enumerate(again) if v is not False],
                await self._ask_shards(query, request, again),
            ):
                answers[i] = answer
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
        asked = time.perf_counter()
        metrics.stage("/search", "shards", 1000 * (asked - encoded))
        hits = merge([a["hits"] for a in live], request.top_k)
        metrics.stage("/search", "merge", 1000 * (time.perf_counter() - asked))
        metrics.search(sum(a.get("scored", 0) for a in live), len(answers) - len(live))
        parts = {}
        if request.explain:
            words = self.encoder.words(request.text)
            for answer in live:
                for video_id, explained in answer["explained"].items():
                    parts[video_id] = _explanation(words, explained)
        return SearchResponse(
            results=[Hit(video_id=v, score=s, explain=parts.get(v)) for v, s in hits],
            partial=len(live) < len(answers),
            missing_shards=len(answers) - len(live),
            exact=request.exact,
            index_version=min(a["version"] for a in live),
            took_ms=round(1000 * (time.perf_counter() - started), 2),
        )

    async def _ask_shards(self, query: dict, request, versions: list) -> list:
        """Each shard's answer (or what it raised) for ``versions[i]``; False: not asked."""
        return await asyncio.gather(
            *(
                asyncio.wait_for(
                    shard.search.remote(
                        query, request.top_k, request.exact, version, request.explain
                    ),
                    self.timeout_s,
                )
                for shard, version in zip(self.shards, versions)
                if version is not False
            ),
            return_exceptions=True,
        )

    @api.post(
        "/vqa",
        response_model=VQAResponse,
        responses=_errors(400, 401, 413, 422, 500, 503),
        dependencies=[Depends(auth.require_key)],
    )
    async def vqa(self, request: VQARequest):
        started = time.perf_counter()
        try:
            out = await asyncio.wait_for(
                self.vqa.answer.remote((request.image, request.question)), self.timeout_s
            )
            metrics.stage("/vqa", "model", 1000 * (time.perf_counter() - started))
        except Exception as err:
            if not _unavailable(err):
                return _bug("/vqa", err)
            return error(503, f"the VQA model is not answering ({type(err).__name__}); try again")
        if "problem" in out:
            return error(503, out["problem"])
        if "error" in out:
            return error(out["status"], out["error"])
        metrics.vqa(out["confidence"])
        return VQAResponse(**out)

    @api.get(
        "/thumbnail/{video_id}",
        response_class=Response,
        responses={
            200: {"content": {"image/jpeg": {"schema": {"type": "string", "format": "binary"}}}},
            **_errors(401, 404),
        },
        dependencies=[Depends(auth.require_key)],
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
