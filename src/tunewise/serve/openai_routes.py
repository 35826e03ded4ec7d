"""`POST /v1/chat/completions` and `POST /v1/completions`, OpenAI-compatible, in front of a backend.

The backend is the run's own model (`EngineBackend`, the continuous-batching engine in serve/generation.py) or, in
gateway mode, any OpenAI-compatible server (`serve/gateway.py`'s `UpstreamBackend`). Whatever the backend, every
request goes through the same steps here:

    key (401/429) -> validate -> injection guard on the prompt texts (400 `prompt_injection`, logged) ->
    PII redaction of what the model sees (per policy) -> generate (504 past the deadline, 503 when the queue
    is full) -> PII redaction of the reply -> the prediction-log row, committed BEFORE the answer (or, for
    `stream: true`, before the final chunk and `data: [DONE]`) -> metrics (tokens generated, prompt tokens)

Responses follow OpenAI's shapes (ids, `created`, `model`, choices with `finish_reason`, `usage`); streams are
server-sent events (`data: {chunk}` ... `data: [DONE]`), as the official `openai` client expects. The response id
carries the request id the log row has (`chatcmpl-<request_id>`), which `/v1/feedback` takes.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, Literal, Protocol

from fastapi import Request  # at module level: FastAPI resolves the routes' annotations in this module
from pydantic import BaseModel, ConfigDict, Field, field_validator

from tunewise.serve.errors import ServeError, error_body

if TYPE_CHECKING:
    from fastapi import APIRouter

    from tunewise.serve.context import ServeContext
    from tunewise.serve.generation import GenerationEngine

log = logging.getLogger("tunewise.serve.openai")

Kind = Literal["chat", "completions"]   # also the endpoint names of the metrics, redaction policy and log


# ---------------------------------------------------------------- request models (OpenAI's, as clients send them)


class _Request(BaseModel):
    # unknown fields OpenAI clients may send (user, metadata, ...) are accepted and ignored; the ones that would
    # change the answer and are not supported are refused below, never silently dropped
    model_config = ConfigDict(extra="allow")

    model: str = Field(description="The served model's name (GET /v1/models), or the run id.")
    max_tokens: int | None = Field(None, ge=1, description="Most tokens to generate.")
    temperature: float = Field(1.0, ge=0, le=2, description="0: greedy decoding.")
    top_p: float = Field(1.0, gt=0, le=1, description="Nucleus sampling mass.")
    n: int = Field(1, ge=1, le=8, description="Choices per prompt.")
    stop: str | list[str] | None = Field(None, description="Up to 4 strings that end generation (not returned).")
    stream: bool = False
    stream_options: dict[str, Any] | None = None
    seed: int | None = Field(None, description="Seed of the sampler (same seed, same output).")
    user: str | None = None

    @field_validator("stop")
    @classmethod
    def _stops(cls, v: str | list[str] | None) -> list[str] | None:
        stops = [v] if isinstance(v, str) else v
        if stops is not None and (len(stops) > 4 or any(not s for s in stops)):
            raise ValueError("stop takes up to 4 non-empty strings")
        return stops

    UNSUPPORTED: ClassVar[tuple[str, ...]] = ()

    def refuse_unsupported(self) -> None:
        extra = self.model_extra or {}
        for name in self.UNSUPPORTED:
            if extra.get(name) not in (None, False, [], {}):
                raise ServeError(400, "unsupported_parameter", f"`{name}` is not supported by this server",
                                 param=name)

    @property
    def include_usage(self) -> bool:
        return bool((self.stream_options or {}).get("include_usage"))


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="ignore")

    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str | list[dict[str, Any]] | None = None
    name: str | None = None

    def text(self) -> str:
        """The message's text; content parts must all be text (no images on a text model)."""
        if self.content is None:
            return ""
        if isinstance(self.content, str):
            return self.content
        parts = []
        for p in self.content:
            if p.get("type") != "text" or not isinstance(p.get("text"), str):
                raise ServeError(400, "unsupported_content", "only text content parts are supported",
                                 param="messages")
            parts.append(p["text"])
        return "".join(parts)


class ChatCompletionRequest(_Request):
    messages: list[ChatMessage] = Field(min_length=1)
    max_completion_tokens: int | None = Field(None, ge=1)
    UNSUPPORTED: ClassVar[tuple[str, ...]] = ("tools", "functions", "tool_choice", "logprobs", "top_logprobs", "response_format",
                   "logit_bias", "audio", "modalities", "prediction")


class CompletionRequest(_Request):
    prompt: str | list[str] = Field(description="A prompt, or a list of prompts (one set of choices each).")
    echo: bool = False
    suffix: str | None = None
    UNSUPPORTED: ClassVar[tuple[str, ...]] = ("logprobs", "best_of", "logit_bias", "suffix")

    @field_validator("prompt")
    @classmethod
    def _prompts(cls, v: str | list[str]) -> str | list[str]:
        if isinstance(v, list) and not 1 <= len(v) <= 64:
            raise ValueError("prompt takes 1 to 64 strings")
        return v


# ---------------------------------------------------------------- what a backend gives back


@dataclass
class Choice:
    index: int
    text: str
    finish_reason: str | None


@dataclass
class Generated:
    choices: list[Choice]
    prompt_tokens: int
    completion_tokens: int


@dataclass
class StreamPiece:
    """A piece of a streamed answer: text for choice `index`, and/or its finish reason; or (index -1) the usage."""

    index: int
    text: str = ""
    finish_reason: str | None = None
    prompt_tokens: int | None = None
    completion_tokens: int | None = None


class ChatBackend(Protocol):
    """What generates: the run's own model, or an upstream server. `payload` is the OpenAI request as a dict, with
    the prompt texts as the model should see them (redacted when the policy says so)."""

    def model_names(self) -> list[str]: ...
    async def generate(self, kind: Kind, payload: dict[str, Any]) -> Generated: ...
    def stream(self, kind: Kind, payload: dict[str, Any]) -> AsyncIterator[StreamPiece]: ...


# ---------------------------------------------------------------- the run's own model


class EngineBackend:
    """The continuous-batching engine as a backend: every choice is one engine request."""

    def __init__(self, engine: "GenerationEngine", *, default_max_tokens: int | None = None):
        self.engine = engine
        self.default_max_tokens = default_max_tokens or engine.config.default_max_tokens

    def model_names(self) -> list[str]:
        return [self.engine.model_name]

    def _requests(self, kind: Kind, payload: dict[str, Any]):
        from tunewise.serve.generation import GenerationError, SamplingParams

        try:
            max_tokens = payload.get("max_completion_tokens") or payload.get("max_tokens") or self.default_max_tokens
            params = SamplingParams(max_tokens=max_tokens, temperature=payload.get("temperature", 1.0),
                                    top_p=payload.get("top_p", 1.0), stop=tuple(payload.get("stop") or ()),
                                    seed=payload.get("seed"))
            if kind == "chat":
                prompts = [self.engine.chat_prompt(payload["messages"])]
            else:
                texts = payload["prompt"] if isinstance(payload["prompt"], list) else [payload["prompt"]]
                prompts = [self.engine.completion_prompt(t) for t in texts]
        except GenerationError as exc:
            raise ServeError(400, "invalid_request", str(exc)) from None
        n = payload.get("n", 1)
        # OpenAI's order: the choices of prompt 0, then those of prompt 1, ...
        return [(p, params, k) for k, p in enumerate(prompts) for _ in range(n)]

    def _submit(self, kind: Kind, payload: dict[str, Any]):
        from tunewise.serve.generation import EngineBusy, EngineStopped, GenerationError, PromptTooLong

        handles = []
        try:
            for prompt, params, _ in self._requests(kind, payload):
                handles.append(self.engine.submit(prompt, params))
        except (EngineBusy, EngineStopped, PromptTooLong, GenerationError) as exc:
            for h in handles:
                h.cancel()
            if isinstance(exc, EngineBusy):
                raise ServeError(503, "overloaded", f"the server is at capacity ({exc}); retry later",
                                 headers={"Retry-After": "1"}) from None
            if isinstance(exc, EngineStopped):
                raise ServeError(503, "overloaded", "the model is not running") from None
            raise ServeError(400, "context_length_exceeded" if isinstance(exc, PromptTooLong) else
                             "invalid_request", str(exc), param="messages" if kind == "chat" else "prompt") from None
        n = payload.get("n", 1)
        prompt_tokens = sum(handles[i].prompt_tokens for i in range(0, len(handles), n))  # each prompt once
        return handles, prompt_tokens

    async def generate(self, kind: Kind, payload: dict[str, Any]) -> Generated:
        handles, prompt_tokens = self._submit(kind, payload)
        try:
            results = await asyncio.gather(*(h.result() for h in handles))
        except BaseException:
            for h in handles:
                h.cancel()
            raise
        _raise_if_failed([r.finish_reason for r in results])
        echo = payload.get("echo") and kind == "completions"
        prompts = payload["prompt"] if isinstance(payload.get("prompt"), list) else [payload.get("prompt")]
        n = payload.get("n", 1)
        choices = [Choice(i, (prompts[i // n] if echo else "") + r.text, r.finish_reason)
                   for i, r in enumerate(results)]
        return Generated(choices, prompt_tokens, sum(r.completion_tokens for r in results))

    async def stream(self, kind: Kind, payload: dict[str, Any]) -> AsyncIterator[StreamPiece]:
        handles, prompt_tokens = self._submit(kind, payload)
        queue: asyncio.Queue[tuple[int, Any]] = asyncio.Queue()

        async def pump(i: int, handle) -> None:  # noqa: ANN001
            async for delta in handle:
                await queue.put((i, delta))

        tasks = [asyncio.create_task(pump(i, h)) for i, h in enumerate(handles)]
        completion_tokens, open_choices = 0, len(handles)
        echo = payload.get("echo") and kind == "completions"
        prompts = payload["prompt"] if isinstance(payload.get("prompt"), list) else [payload.get("prompt")]
        n = payload.get("n", 1)
        try:
            if echo:
                for i in range(len(handles)):
                    yield StreamPiece(i, prompts[i // n])
            while open_choices:
                i, delta = await queue.get()
                if delta.finish_reason is not None:
                    _raise_if_failed([delta.finish_reason])
                    open_choices -= 1
                    completion_tokens += delta.completion_tokens
                yield StreamPiece(i, delta.text, delta.finish_reason)
            yield StreamPiece(-1, prompt_tokens=prompt_tokens, completion_tokens=completion_tokens)
        finally:
            for h in handles:
                h.cancel()
            for t in tasks:
                t.cancel()


def _raise_if_failed(reasons: Sequence[str]) -> None:
    if "error" in reasons:
        raise ServeError(500, "internal_error", "generation failed")
    if "cancelled" in reasons:
        raise ServeError(503, "overloaded", "the model stopped before the answer was complete")


# ---------------------------------------------------------------- streaming PII redaction


class StreamRedactor:
    """Redacts a streamed reply without leaking a half-sent e-mail or number: text is released only up to a
    whitespace that lies at least `hold` characters before the end of what arrived, outside any PII match found so
    far, and not between digits (phone numbers, IBANs and card numbers are written in groups with spaces); each
    released piece is redacted whole. `flush()` releases the rest at the end."""

    def __init__(self, redact, hold: int = 16):  # noqa: ANN001  # redact(text) -> text
        self.redact, self.hold = redact, hold
        self.raw, self.done = "", 0

    def feed(self, text: str) -> str:
        from tunewise.safety.pii import find_pii

        self.raw += text
        limit = len(self.raw) - self.hold
        if limit <= self.done:
            return ""
        spans = [(self.done + m.start, self.done + m.end) for m in find_pii(self.raw[self.done:])]
        for cut in range(limit, self.done, -1):
            if self.raw[cut].isspace() and self._safe(cut) and not any(a < cut < b for a, b in spans):
                return self._release(cut)
        return ""

    def _safe(self, cut: int) -> bool:
        before, after = self.raw[cut - 1], self.raw[cut + 1] if cut + 1 < len(self.raw) else ""
        return not (before.isdigit() or after.isdigit() or after == "+")

    def flush(self) -> str:
        return self._release(len(self.raw))

    def _release(self, cut: int) -> str:
        piece, self.done = self.raw[self.done:cut], cut
        return self.redact(piece) if piece else ""


# ---------------------------------------------------------------- the routes


@dataclass
class _Call:
    """One request's facts, gathered for the log row."""

    kind: Kind
    key_name: str
    request_id: str
    model: str
    n_inputs: int
    inputs_for_log: Any
    pii: list[list[str]]
    guard: list[dict[str, Any]] | None
    outputs: list[str] = field(default_factory=list)
    prompt_tokens: int | None = None
    completion_tokens: int | None = None


def build_router(ctx: "ServeContext", backend: ChatBackend, *, check_model: bool = True) -> "APIRouter":
    """The two OpenAI routes over `backend`, behind the context's keys, guard, redaction, log and metrics.
    `check_model=False` (gateway mode) passes the client's model name through to the upstream."""
    from fastapi import APIRouter, Depends

    router = APIRouter()

    @router.post("/v1/chat/completions", summary="OpenAI-compatible chat completion (stream: true for SSE)")
    async def chat_completions(body: ChatCompletionRequest, request: Request,
                               key_name: str = Depends(ctx.require_key)):
        return await _serve(ctx, backend, "chat", body, request, key_name, check_model)

    @router.post("/v1/completions", summary="OpenAI-compatible text completion (stream: true for SSE)")
    async def completions(body: CompletionRequest, request: Request, key_name: str = Depends(ctx.require_key)):
        return await _serve(ctx, backend, "completions", body, request, key_name, check_model)

    return router


def openai_router(ctx: "ServeContext", engine: "GenerationEngine") -> "APIRouter":
    """The routes over the run's own causal LM (serve/app.py includes it for generation and chat runs): the
    engine's queue bound follows serve.queue_size and its decoding-step batch sizes go to the metrics."""
    engine.config.max_waiting = ctx.config.queue_size
    batch_size = ctx.metrics.batch_size.labels(endpoint="chat")
    engine.on_step = batch_size.observe
    return build_router(ctx, EngineBackend(engine))


async def _serve(ctx: "ServeContext", backend: ChatBackend, kind: Kind, body: _Request, request: "Request",
                 key_name: str, check_model: bool):
    from fastapi.concurrency import run_in_threadpool

    body.refuse_unsupported()
    names = backend.model_names() + [ctx.model_name, ctx.run_id]
    if check_model and body.model not in names:
        raise ServeError(404, "model_not_found", f"model {body.model!r} is not served here; this server serves "
                                                 f"{backend.model_names()[0]!r}", param="model")
    payload = body.model_dump(exclude_unset=True, exclude={"stream", "stream_options"})
    payload.setdefault("model", body.model)
    if body.stop is not None:
        payload["stop"] = body.stop

    # the prompt texts: screened by the guard, redacted for the model per policy, stored in the log per policy
    if kind == "chat":
        assert isinstance(body, ChatCompletionRequest)
        texts = [m.text() for m in body.messages]
        screened = [i for i, m in enumerate(body.messages) if m.role != "assistant"]
    else:
        assert isinstance(body, CompletionRequest)
        texts = body.prompt if isinstance(body.prompt, list) else [body.prompt]
        screened = list(range(len(texts)))
    found = await run_in_threadpool(lambda: [ctx.redactor.scan(kind, t) for t in texts])
    model_texts = [ctx.redactor.model_input(kind, t, f) for t, f in zip(texts, found)]
    if kind == "chat":
        payload["messages"] = [{"role": m.role, "content": t} for m, t in zip(body.messages, model_texts)]
        log_inputs: Any = [{"role": m.role, "content": ctx.redactor.for_log(kind, t, "input", f)}
                           for m, t, f in zip(body.messages, texts, found)]
    else:
        payload["prompt"] = model_texts if isinstance(body.prompt, list) else model_texts[0]
        log_inputs = [ctx.redactor.for_log(kind, t, "input", f) for t, f in zip(texts, found)]

    verdicts = await ctx.screen(kind, [texts[i] for i in screened]) if screened else None
    from tunewise.serve.context import verdict_json

    call = _Call(kind, key_name, ctx.request_id(request), body.model, len(texts), log_inputs,
                 [f.kinds for f in found], None if verdicts is None else [verdict_json(v) for v in verdicts])
    try:
        ctx.guard_block(kind, verdicts)
    except ServeError as exc:
        await _record(ctx, request, call, status=exc.status)
        raise

    if body.stream:
        return await _stream_response(ctx, backend, kind, body, payload, request, call)
    try:
        result = await ctx.within_deadline(request, backend.generate(kind, payload))
    except ServeError as exc:
        await _record(ctx, request, call, status=exc.status)
        raise
    for c in result.choices:
        c.text = ctx.redactor.response(kind, c.text)
    call.outputs = [c.text for c in result.choices]
    call.prompt_tokens, call.completion_tokens = result.prompt_tokens, result.completion_tokens
    _count_tokens(ctx, kind, result.prompt_tokens, result.completion_tokens)
    await _record(ctx, request, call, status=200)
    return _response_json(kind, call, result)


def _count_tokens(ctx: "ServeContext", kind: Kind, prompt: int | None, completion: int | None) -> None:
    if prompt:
        ctx.metrics.prompt_tokens.labels(endpoint=kind).inc(prompt)
    if completion:
        ctx.metrics.tokens_generated.labels(endpoint=kind).inc(completion)


async def _record(ctx: "ServeContext", request: "Request", call: _Call, *, status: int) -> str:
    from tunewise.serve.log import LogRow

    row = LogRow(request_id=call.request_id, endpoint=call.kind, key_name=call.key_name, model=call.model,
                 run_id=ctx.run_id, status=status, latency_ms=ctx.latency_ms(request), n_inputs=call.n_inputs,
                 input=call.inputs_for_log,
                 output=[ctx.redactor.for_log(call.kind, t, "output") for t in call.outputs] if call.outputs
                 else None,
                 guard=call.guard, pii=call.pii, prompt_tokens=call.prompt_tokens,
                 completion_tokens=call.completion_tokens)
    return await ctx.log.record(row)


def _ids(kind: Kind, call: _Call) -> tuple[str, str]:
    return (f"chatcmpl-{call.request_id}", "chat.completion") if kind == "chat" else \
        (f"cmpl-{call.request_id}", "text_completion")


def _usage(prompt: int, completion: int) -> dict[str, int]:
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}


def _response_json(kind: Kind, call: _Call, result: Generated) -> dict[str, Any]:
    rid, obj = _ids(kind, call)
    if kind == "chat":
        choices = [{"index": c.index, "message": {"role": "assistant", "content": c.text}, "logprobs": None,
                    "finish_reason": c.finish_reason} for c in result.choices]
    else:
        choices = [{"index": c.index, "text": c.text, "logprobs": None, "finish_reason": c.finish_reason}
                   for c in result.choices]
    return {"id": rid, "object": obj, "created": int(time.time()), "model": call.model, "choices": choices,
            "usage": _usage(result.prompt_tokens, result.completion_tokens)}


def _sse(obj: Any) -> bytes:
    return b"data: " + json.dumps(obj, ensure_ascii=False).encode("utf-8") + b"\n\n"


async def _stream_response(ctx: "ServeContext", backend: ChatBackend, kind: Kind, body: _Request,
                           payload: dict[str, Any], request: "Request", call: _Call):
    """Server-sent events. The stream is opened (and the first piece awaited) within the deadline, so a request
    that cannot start in time still gets a plain 504 JSON answer; the log row is committed before the last
    chunk and `data: [DONE]`."""
    from fastapi.responses import StreamingResponse

    pieces = backend.stream(kind, payload)
    try:
        first = await ctx.within_deadline(request, anext(pieces))
    except (ServeError, StopAsyncIteration) as exc:
        await pieces.aclose()
        status = exc.status if isinstance(exc, ServeError) else 502
        await _record(ctx, request, call, status=status)
        if isinstance(exc, ServeError):
            raise
        raise ServeError(502, "upstream_error", "the model returned an empty stream") from None

    rid, _ = _ids(kind, call)
    obj = "chat.completion.chunk" if kind == "chat" else "text_completion"
    created = int(time.time())
    redact = ctx.redactor.policy(kind).response == "redact"
    n_choices = (len(body.prompt) if isinstance(getattr(body, "prompt", None), list) else 1) * body.n
    redactors = [StreamRedactor(lambda t: ctx.redactor.response(kind, t)) for _ in range(n_choices)]
    raw = [""] * n_choices

    def chunk(index: int, text: str | None, finish: str | None, *, role: bool = False) -> bytes:
        if kind == "chat":
            delta: dict[str, Any] = {}
            if role:
                delta["role"] = "assistant"
            if text is not None:
                delta["content"] = text
            choice = {"index": index, "delta": delta, "logprobs": None, "finish_reason": finish}
        else:
            choice = {"index": index, "text": text or "", "logprobs": None, "finish_reason": finish}
        return _sse({"id": rid, "object": obj, "created": created, "model": call.model, "choices": [choice]})

    async def events() -> AsyncIterator[bytes]:
        status, finishes = 200, {}
        try:
            if kind == "chat":
                for i in range(n_choices):
                    yield chunk(i, "", None, role=True)
            piece: StreamPiece | None = first
            while piece is not None:
                if piece.index < 0:
                    call.prompt_tokens, call.completion_tokens = piece.prompt_tokens, piece.completion_tokens
                else:
                    raw[piece.index] += piece.text
                    text = redactors[piece.index].feed(piece.text) if redact else piece.text
                    if piece.finish_reason is not None:
                        text += redactors[piece.index].flush() if redact else ""
                        finishes[piece.index] = piece.finish_reason
                        if text:
                            yield chunk(piece.index, text, None)
                    elif text:
                        yield chunk(piece.index, text, None)
                piece = await anext(pieces, None)
        except ServeError as exc:
            status = exc.status
            yield _sse(error_body(exc.status, exc.type, exc.message))
        except asyncio.CancelledError:  # the client went away: log it (as 499) without blocking the cancellation
            call.outputs = raw
            asyncio.get_running_loop().create_task(_record(ctx, request, call, status=499))
            raise
        except Exception:  # noqa: BLE001 - never a traceback to the client; the server log has it
            log.exception("stream %s failed", call.request_id)
            status = 500
            yield _sse(error_body(500, "internal_error", f"internal server error (request {call.request_id})"))
        finally:
            await pieces.aclose()
        call.outputs = [ctx.redactor.response(kind, t) if redact else t for t in raw]
        _count_tokens(ctx, kind, call.prompt_tokens, call.completion_tokens)
        await _record(ctx, request, call, status=status)   # acknowledged only once committed
        if status == 200:
            for i in range(n_choices):
                yield chunk(i, None if kind == "chat" else "", finishes.get(i, "stop"))
            if body.include_usage and call.prompt_tokens is not None:
                yield _sse({"id": rid, "object": obj, "created": created, "model": call.model, "choices": [],
                            "usage": _usage(call.prompt_tokens, call.completion_tokens or 0)})
        yield b"data: [DONE]\n\n"

    return StreamingResponse(events(), media_type="text/event-stream",
                             headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
