"""ServeContext: what every route uses — keys and limits, the prediction log, metrics, the guard, redaction.

The routes of all endpoints (serve/app.py, and serve-chat's openai_routes.py and gateway.py) are built from one
ServeContext:

    ctx.require_key                 FastAPI dependency -> the key's NAME; 401 without a valid key, 429 over the
                                    per-key rate (with Retry-After)
    ctx.request_id(request)         the id the log and the X-Request-Id header carry
    ctx.remaining(request)          seconds left before the request's deadline (504 after it)
    await ctx.within_deadline(request, awaitable)   the awaitable's result, or 504 past the deadline
    ctx.latency_ms(request)         milliseconds since the request arrived
    await ctx.log.record(LogRow(...)) -> request_id   returns once the row is committed (serve/log.py)
    ctx.metrics                     ServeMetrics (serve/metrics.py), e.g. ctx.metrics.tokens_generated
    ctx.redactor                    Redactor (serve/redaction.py): scan, model_input, response, for_log
    ctx.guard                       the InjectionGuard (tunewise.safety.guard), or None when none is configured
    await ctx.screen(endpoint, texts) -> list[GuardVerdict] | None   micro-batched guard verdicts; None when the
                                    endpoint is not screened (serve.guard.endpoints) or there is no guard
    ctx.guard_block(endpoint, verdicts)   raises the 400 `prompt_injection` answer when a verdict flags a text
                                    and serve.guard.block is on (call it after logging the blocked request)
    ctx.run_id, ctx.model_name, ctx.config (the resolved ServeConfig), ctx.run_dir
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tunewise.recipe import ServeConfig
from tunewise.serve.errors import ServeError
from tunewise.serve.keys import KeyRing
from tunewise.serve.limits import RateLimiter, retry_after_header

from fastapi import Request  # at module level: FastAPI reads require_key's annotation at run time

_timeout = getattr(asyncio, "timeout", None)  # Python 3.11+

if TYPE_CHECKING:
    from tunewise.safety.guard import GuardVerdict, InjectionGuard
    from tunewise.serve.batching import MicroBatcher
    from tunewise.serve.log import PredictionLog
    from tunewise.serve.metrics import ServeMetrics
    from tunewise.serve.redaction import Redactor


@dataclass
class ServeContext:
    config: ServeConfig
    keys: KeyRing
    limiter: RateLimiter
    metrics: "ServeMetrics"
    redactor: "Redactor"
    log: "PredictionLog"
    run_id: str
    model_name: str
    run_dir: Path | None = None
    guard: "InjectionGuard | None" = None
    guard_batcher: "MicroBatcher | None" = None
    extra: dict[str, Any] = field(default_factory=dict)   # per-app objects (the classifier, the engine)

    # ---------------------------------------------------------------- keys and rate
    async def require_key(self, request: Request) -> str:
        """The API key's name (FastAPI dependency). 401 without a valid `Authorization: Bearer KEY`; 429 with
        Retry-After when the key is over its rate."""
        header = request.headers.get("authorization", "")
        scheme, _, key = header.partition(" ")
        if not header:
            raise ServeError(401, "unauthorized", "missing API key: send `Authorization: Bearer KEY` (make a key "
                                                  "with `tunewise keys add NAME`)",
                             headers={"WWW-Authenticate": "Bearer"})
        if scheme.lower() != "bearer" or not key.strip():
            raise ServeError(401, "unauthorized", "malformed Authorization header: expected `Bearer KEY`",
                             headers={"WWW-Authenticate": "Bearer"})
        name = self.keys.name_for(key.strip())
        if name is None:
            raise ServeError(401, "unauthorized", "invalid API key", headers={"WWW-Authenticate": "Bearer"})
        wait = self.limiter.acquire(name)
        if wait > 0:
            raise ServeError(429, "rate_limited", f"rate limit of {self.config.rate_per_minute:g} requests per "
                                                  f"minute for key {name!r} exceeded; retry in {wait:.1f} s",
                             headers=retry_after_header(wait))
        request.state.key_name = name
        return name

    # ---------------------------------------------------------------- request facts and the deadline
    @staticmethod
    def request_id(request: Request) -> str:
        return request.state.request_id

    @staticmethod
    def latency_ms(request: Request) -> float:
        return (time.monotonic() - request.state.arrival) * 1000.0

    def remaining(self, request: Request) -> float:
        return self.config.request_timeout_s - (time.monotonic() - request.state.arrival)

    def deadline_error(self) -> ServeError:
        return ServeError(504, "timeout", f"the request took longer than its time limit of "
                                          f"{self.config.request_timeout_s:g} s (serve.request_timeout_s)")

    async def within_deadline(self, request: Request, awaitable) -> Any:  # noqa: ANN001
        remaining = self.remaining(request)
        if remaining <= 0:
            if asyncio.iscoroutine(awaitable):
                awaitable.close()
            raise self.deadline_error()
        try:
            if _timeout is not None:  # Python 3.11+: a deadline on this task, not a new task per await
                async with _timeout(remaining):
                    return await awaitable
            return await asyncio.wait_for(awaitable, remaining)
        except asyncio.TimeoutError:
            raise self.deadline_error() from None

    # ---------------------------------------------------------------- the guard
    def screens(self, endpoint: str) -> bool:
        return self.guard_batcher is not None and endpoint in self.config.guard.endpoints

    async def screen(self, endpoint: str, texts: list[str], *, force: bool = False) -> "list[GuardVerdict] | None":
        """Guard verdicts for `texts` (micro-batched), counted in the metrics; None when not screened."""
        if self.guard_batcher is None or not (force or endpoint in self.config.guard.endpoints):
            return None
        verdicts = await self.guard_batcher.submit(texts)
        for v in verdicts:
            self.metrics.guard_verdicts.labels(endpoint=endpoint, verdict="injection" if v.injection else "clean").inc()
        return verdicts

    def guard_block(self, endpoint: str, verdicts: "list[GuardVerdict] | None") -> None:
        """Raise the 400 answer when the guard flagged a text and blocking is on."""
        if not verdicts or not self.config.guard.block:
            return
        flagged = [(i, v) for i, v in enumerate(verdicts) if v.injection]
        if flagged:
            i, v = flagged[0]
            where = f"input {i}" if len(verdicts) > 1 else "the input"
            more = f" ({len(flagged)} of {len(verdicts)} inputs flagged)" if len(flagged) > 1 else ""
            raise ServeError(400, "prompt_injection", f"request blocked by the injection guard: {where}: "
                                                      f"{v.reason}{more}", param="inputs" if endpoint == "classify"
                             else "messages")


def verdict_json(v: "GuardVerdict") -> dict[str, Any]:
    return {"injection": bool(v.injection), "score": round(float(v.score), 6), "rules": list(v.rules)}
