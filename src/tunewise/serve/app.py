"""The FastAPI app: `create_app(settings) -> FastAPI`.

Endpoints (all JSON; every error is `{"error": {"message", "type", "code", "param"}}`):

    POST /v1/classify     {"inputs": ["text", ...]} -> {"request_id", "model", "run_id", "results": [{"label",
                          "probabilities", "model", "run_id"}, ...]} in input order; micro-batched
    POST /v1/guard        {"inputs": [...]} -> {"request_id", "results": [{"injection", "score", "rules", "pii"}]}
    POST /v1/feedback     {"request_id", "label"?, "index"?, "rating"?} attaches a true label or a rating
    GET  /v1/models       the served model (OpenAI's list shape)
    POST /v1/chat/completions, /v1/completions   causal-LM runs (serve/openai_routes.py) or --upstream
                          (serve/gateway.py)
    GET  /healthz /readyz /metrics   no key needed

Every /v1 route needs `Authorization: Bearer KEY`. Nothing from a request is ever used as a file path.
"""

from __future__ import annotations

import contextlib
import logging
import time
from typing import Annotated, Any

from fastapi import Depends, FastAPI, Request
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, ConfigDict, Field

from tunewise.serve.context import ServeContext, verdict_json
from tunewise.serve.errors import ServeError, install_error_handlers
from tunewise.serve.settings import ServeSettings

log = logging.getLogger("tunewise.serve")

ROUTES = {"/v1/classify": "classify", "/v1/guard": "guard", "/v1/feedback": "feedback", "/v1/models": "models",
          "/v1/chat/completions": "chat", "/v1/completions": "completions", "/healthz": "healthz",
          "/readyz": "readyz", "/metrics": "metrics"}


def route_name(path: str) -> str:
    """The metrics label of a path: a known route's name, else "other" (the label set stays bounded)."""
    return ROUTES.get(path.rstrip("/") or path, "other")


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class TextsRequest(_Body):
    inputs: list[Annotated[str, Field(max_length=100_000)]] = Field(min_length=1, description="Texts, one result each.")
    model: str | None = Field(None, description="The model id (optional; must be the served one when given).")


class FeedbackRequest(_Body):
    request_id: str = Field(pattern=r"^[0-9a-f]{32}$", description="The request_id a response carried.")
    index: int | None = Field(None, ge=0, description="Which input of a classify request the label is for "
                                                      "(default 0).")
    label: str | None = Field(None, min_length=1, max_length=256, description="The true label.")
    rating: float | None = Field(None, ge=-1e6, le=1e6, description="A rating of the answer (any scale you use).")


def create_app(settings: ServeSettings) -> FastAPI:
    """The server for one run (or, with settings.upstream, a gateway). Loads the model now; the batchers and the
    engine start with the app and stop with it."""
    from tunewise.serve.keys import KeyRing
    from tunewise.serve.limits import FrontDoor, RateLimiter
    from tunewise.serve.log import PredictionLog
    from tunewise.serve.metrics import ServeMetrics
    from tunewise.serve.redaction import Redactor

    config = settings.config
    metrics = ServeMetrics()
    keys = KeyRing(settings.keys_file, settings.api_keys)
    if len(keys) == 0:
        from tunewise.errors import TunewiseError
        from tunewise.serve.keys import API_KEYS_ENV, keys_file

        raise TunewiseError(f"no API keys: make one with `tunewise keys add NAME` (stored in "
                            f"{settings.keys_file or keys_file()}) or set {API_KEYS_ENV}")
    plog = PredictionLog(settings.log_url)
    plog.on_commit = metrics.log_commit_rows.observe
    run_id, model_name, task, rd = "gateway", "upstream", None, None
    if settings.run_dir is not None:
        from tunewise.rundir import RunDir
        from tunewise.tasks import task_for

        rd = RunDir.open(settings.run_dir)
        run_id = rd.root.name
        model_name = config.model_name or rd.recipe.card.model_name or rd.recipe.name
        task = task_for(rd.recipe)
    ctx = ServeContext(config=config, keys=keys, limiter=RateLimiter(config.rate_per_minute, config.rate_burst),
                       metrics=metrics, redactor=Redactor(config.redaction, metrics), log=plog, run_id=run_id,
                       model_name=model_name, run_dir=rd.root if rd else None)
    batchers = []
    if config.guard.run is not None:
        from tunewise.safety.guard import InjectionGuard
        from tunewise.serve.batching import MicroBatcher

        ctx.guard = InjectionGuard.load(config.guard.run, backend=config.guard.backend)
        ctx.guard_batcher = MicroBatcher("guard", ctx.guard.screen, max_requests=config.max_batch_requests,
                                         max_wait_ms=config.max_batch_wait_ms, queue_size=config.queue_size,
                                         metrics=metrics)
        batchers.append(ctx.guard_batcher)

    app = FastAPI(title="tunewise", version=_version(), docs_url=None, redoc_url=None, openapi_url=None)
    app.state.ctx = ctx
    install_error_handlers(app)
    closers: list = [plog.close]

    if task is not None and task.family == "classifier":
        from tunewise.serve.batching import MicroBatcher
        from tunewise.serve.classifier import load_classifier, resolve_backend

        choice = resolve_backend(rd, config)
        log.warning("classifier backend: %s (%s)", choice.backend, choice.why)
        classifier = load_classifier(rd, choice.backend)
        ctx.extra["classifier"] = classifier
        batcher = MicroBatcher("classify", classifier.classify, max_requests=config.max_batch_requests,
                               max_wait_ms=config.max_batch_wait_ms, queue_size=config.queue_size, metrics=metrics,
                               workers=config.batch_workers or classifier.parallel_batches)
        ctx.extra["classify_batcher"] = batcher
        batchers.append(batcher)
        _classify_routes(app, ctx, classifier, batcher)
    elif settings.upstream is not None:
        from tunewise.serve.gateway import gateway_router

        app.include_router(gateway_router(ctx, settings.upstream))
    elif task is not None:
        from tunewise.serve.generation import engine_for_run
        from tunewise.serve.openai_routes import openai_router

        engine = engine_for_run(rd.root, model_name=model_name)
        ctx.extra["engine"] = engine
        closers.insert(0, engine.close)
        app.include_router(openai_router(ctx, engine))
    _common_routes(app, ctx)

    @contextlib.asynccontextmanager
    async def lifespan(_app: FastAPI):
        for b in batchers:
            await b.start()
        ctx.extra["ready"] = True
        try:
            yield
        finally:
            ctx.extra["ready"] = False
            for b in batchers:
                await b.stop()
            for close in closers:
                close()

    app.router.lifespan_context = lifespan
    app.add_middleware(FrontDoor, max_body_bytes=config.max_body_bytes, metrics=metrics, route_name=route_name)
    return app


def app_from_env() -> FastAPI:
    """uvicorn's factory for `--workers N`: each worker builds its app from TUNEWISE_SERVE_SETTINGS."""
    return create_app(ServeSettings.from_env())


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("tunewise")
    except PackageNotFoundError:
        return "0"


def _check_model(ctx: ServeContext, model: str | None) -> None:
    if model is not None and model != ctx.model_name:
        raise ServeError(404, "model_not_found", f"model {model!r} is not served here; this server serves "
                                                 f"{ctx.model_name!r}", param="model")


def _check_count(ctx: ServeContext, inputs: list[str]) -> None:
    if len(inputs) > ctx.config.max_inputs_per_request:
        raise ServeError(422, "invalid_request", f"{len(inputs)} inputs in one request; the limit is "
                                                 f"{ctx.config.max_inputs_per_request} "
                                                 f"(serve.max_inputs_per_request)", param="inputs")


# ---------------------------------------------------------------- classify


def _classify_routes(app: FastAPI, ctx: ServeContext, classifier, batcher) -> None:  # noqa: ANN001
    from tunewise.serve.log import LogRow, Prediction

    key = Depends(ctx.require_key)

    @app.post("/v1/classify")
    async def classify(body: TextsRequest, request: Request, key_name: str = key) -> JSONResponse:
        _check_model(ctx, body.model)
        _check_count(ctx, body.inputs)
        rid = ctx.request_id(request)
        found = [ctx.redactor.scan("classify", t) for t in body.inputs]
        model_texts = [ctx.redactor.model_input("classify", t, f) for t, f in zip(body.inputs, found)]
        logged = [ctx.redactor.for_log("classify", t, "input", f) for t, f in zip(body.inputs, found)]
        verdicts = await ctx.within_deadline(request, ctx.screen("classify", model_texts))
        row = LogRow(request_id=rid, endpoint="classify", key_name=key_name, model=ctx.model_name,
                     run_id=ctx.run_id, n_inputs=len(body.inputs), input=logged,
                     guard=[verdict_json(v) for v in verdicts] if verdicts is not None else None,
                     pii=[f.kinds for f in found])
        if verdicts is not None and ctx.config.guard.block and any(v.injection for v in verdicts):
            row.status, row.latency_ms = 400, ctx.latency_ms(request)
            await ctx.within_deadline(request, ctx.log.record(row))
            ctx.guard_block("classify", verdicts)
        results = await ctx.within_deadline(request, batcher.submit(model_texts))
        row.output = [label for label, _, _ in results]
        row.predictions = [Prediction(text, label, p, probs) for text, (label, p, probs) in zip(logged, results)]
        row.latency_ms = ctx.latency_ms(request)
        await ctx.within_deadline(request, ctx.log.record(row))
        out = []
        for i, (label, p, probs) in enumerate(results):
            item: dict[str, Any] = {"label": label, "probabilities": probs, "model": ctx.model_name,
                                    "run_id": ctx.run_id}
            if verdicts is not None:
                item["guard"] = verdict_json(verdicts[i])
            if found[i].kinds:
                item["pii"] = found[i].kinds
            out.append(item)
        return JSONResponse({"request_id": rid, "model": ctx.model_name, "run_id": ctx.run_id, "results": out})


# ---------------------------------------------------------------- guard, feedback, models, health, metrics


def _common_routes(app: FastAPI, ctx: ServeContext) -> None:
    from tunewise.serve.log import LogRow

    key = Depends(ctx.require_key)

    @app.post("/v1/guard")
    async def guard(body: TextsRequest, request: Request, key_name: str = key) -> JSONResponse:
        if ctx.guard_batcher is None:
            raise ServeError(501, "not_configured", "no injection guard is configured on this server; set "
                                                    "serve.guard.run to a guard run directory "
                                                    "(examples/injection-guard.yaml)")
        _check_count(ctx, body.inputs)
        rid = ctx.request_id(request)
        found = [ctx.redactor.scan("guard", t) for t in body.inputs]
        verdicts = await ctx.within_deadline(request, ctx.screen("guard", body.inputs, force=True))
        results = [{**verdict_json(v), "pii": f.spans} for v, f in zip(verdicts, found)]
        row = LogRow(request_id=rid, endpoint="guard", key_name=key_name, model=ctx.guard.model_name or "guard",
                     run_id=ctx.guard.run_id or "guard", n_inputs=len(body.inputs),
                     input=[ctx.redactor.for_log("guard", t, "input", f) for t, f in zip(body.inputs, found)],
                     output=[verdict_json(v) for v in verdicts], guard=[verdict_json(v) for v in verdicts],
                     pii=[f.kinds for f in found], latency_ms=ctx.latency_ms(request))
        await ctx.within_deadline(request, ctx.log.record(row))
        return JSONResponse({"request_id": rid, "model": ctx.guard.model_name, "run_id": ctx.guard.run_id,
                             "results": results})

    @app.post("/v1/feedback")
    async def feedback(body: FeedbackRequest, request: Request, key_name: str = key) -> JSONResponse:
        if body.label is None and body.rating is None:
            raise ServeError(422, "invalid_request", "feedback needs a `label` (the true label of a classified "
                                                     "input) or a `rating`", param="label")
        classifier = ctx.extra.get("classifier")
        if body.label is not None and classifier is not None and body.label not in classifier.labels:
            raise ServeError(422, "invalid_request", f"label {body.label!r} is not one of the model's labels: "
                                                     f"{', '.join(classifier.labels)}", param="label")
        if body.label is not None and classifier is None:
            raise ServeError(422, "invalid_request", "a true `label` applies to classify requests; this server "
                                                     "has no classifier (send a `rating`)", param="label")
        info = await ctx.within_deadline(request, ctx.log.feedback(body.request_id, index=body.index,
                                                                   label=body.label, rating=body.rating))
        return JSONResponse({"request_id": body.request_id, "recorded": True, "endpoint": info["endpoint"]})

    @app.get("/v1/models")
    async def models(key_name: str = key) -> JSONResponse:
        classifier = ctx.extra.get("classifier")
        entry = {"id": ctx.model_name, "object": "model", "created": int(ctx.extra.setdefault("created", time.time())),
                 "owned_by": "tunewise", "run_id": ctx.run_id}
        if classifier is not None:
            entry.update(task="classification", labels=classifier.labels, backend=classifier.backend)
        return JSONResponse({"object": "list", "data": [entry]})

    @app.get("/healthz")
    async def healthz() -> JSONResponse:
        return JSONResponse({"status": "ok"})

    @app.get("/readyz")
    async def readyz() -> JSONResponse:
        problems = []
        if not ctx.extra.get("ready"):
            problems.append("starting")
        if not ctx.log.alive:
            problems.append("prediction log writer stopped")
        engine = ctx.extra.get("engine")
        if engine is not None and not engine.alive:
            problems.append("generation engine stopped")
        if problems:
            return JSONResponse({"status": "not ready", "problems": problems}, status_code=503)
        return JSONResponse({"status": "ready", "model": ctx.model_name, "run_id": ctx.run_id})

    @app.get("/metrics")
    async def prometheus() -> Response:
        body, content_type = ctx.metrics.render()
        return Response(body, media_type=content_type)

