"""Gateway mode: `tunewise serve --upstream URL` puts keys, the injection guard, PII redaction, the prediction log
and metrics in front of any OpenAI-compatible server (vLLM, TGI, another tunewise). This is how serving scales
past one machine: many model servers, guarded by gateways.

The routes are serve/openai_routes.py's, with `UpstreamBackend` as the backend: the (redacted) request is sent on
with httpx, streams are passed through piece by piece as they arrive, and upstream failures become JSON errors:

    upstream unreachable / connection dropped      502 upstream_unreachable
    upstream too slow                              504 timeout
    upstream 400/404/413/422/429/503               the same status, with the upstream's message
    upstream 401/403 (the gateway's own key)       502 upstream_auth (the client's key was fine)
    upstream other 5xx or a malformed answer       502 upstream_error

The gateway authenticates to the upstream with TUNEWISE_UPSTREAM_API_KEY (if set); the client's key never
leaves the gateway. For streams the gateway asks the upstream for usage (`stream_options.include_usage`), so the
log and metrics get token counts; the client gets the usage chunk only when it asked for it.
"""

from __future__ import annotations

import json
import os
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

from tunewise.serve.errors import ServeError
from tunewise.serve.openai_routes import Choice, Generated, Kind, StreamPiece, build_router

if TYPE_CHECKING:
    from fastapi import APIRouter

    from tunewise.serve.context import ServeContext

UPSTREAM_KEY_ENV = "TUNEWISE_UPSTREAM_API_KEY"
PATHS = {"chat": "/v1/chat/completions", "completions": "/v1/completions"}
PASSED_THROUGH = {400, 404, 413, 422, 429, 503}


def base_url(url: str) -> str:
    """The upstream's root: `http://host:8000`, `http://host:8000/` and `http://host:8000/v1` are the same server."""
    from urllib.parse import urlsplit

    url = url.strip().rstrip("/")
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        from tunewise.errors import TunewiseError

        raise TunewiseError(f"--upstream {url!r} is not an http(s) URL (e.g. http://10.0.0.5:8000)")
    return url.removesuffix("/v1")


class UpstreamBackend:
    """An OpenAI-compatible server as the backend of the chat routes."""

    def __init__(self, url: str, *, api_key: str | None = None, timeout_s: float = 30.0):
        import httpx

        self.url = base_url(url)
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        # the read timeout bounds the wait for each piece of a stream, not the whole stream
        self.client = httpx.AsyncClient(base_url=self.url, headers=headers,
                                        timeout=httpx.Timeout(timeout_s, connect=min(10.0, timeout_s)),
                                        limits=httpx.Limits(max_connections=512, max_keepalive_connections=64))

    def model_names(self) -> list[str]:
        return []  # whatever the upstream serves: the client's model name is passed through

    async def aclose(self) -> None:
        await self.client.aclose()

    async def generate(self, kind: Kind, payload: dict[str, Any]) -> Generated:
        import httpx

        try:
            r = await self.client.post(PATHS[kind], json={**payload, "stream": False})
        except httpx.TimeoutException:
            raise _timeout() from None
        except httpx.HTTPError as exc:
            raise _unreachable(self.url, exc) from None
        if r.status_code != 200:
            raise _upstream_error(r.status_code, r.content, r.headers)
        try:
            doc = r.json()
            choices = [Choice(c["index"], _text(kind, c, "message"), c.get("finish_reason"))
                       for c in doc["choices"]]
            usage = doc.get("usage") or {}
        except (ValueError, KeyError, TypeError):
            raise ServeError(502, "upstream_error", "the upstream's answer is not an OpenAI completion") from None
        return Generated(choices, int(usage.get("prompt_tokens") or 0), int(usage.get("completion_tokens") or 0))

    async def stream(self, kind: Kind, payload: dict[str, Any]) -> AsyncIterator[StreamPiece]:
        import httpx

        body = {**payload, "stream": True, "stream_options": {"include_usage": True}}
        try:
            async with self.client.stream("POST", PATHS[kind], json=body) as r:
                if r.status_code != 200:
                    raise _upstream_error(r.status_code, await r.aread(), r.headers)
                async for line in r.aiter_lines():
                    if not line.startswith("data:"):
                        continue  # SSE comments, event names, blank separators
                    data = line[5:].strip()
                    if data == "[DONE]":
                        return
                    for piece in _pieces(kind, data):
                        yield piece
        except httpx.TimeoutException:
            raise _timeout() from None
        except httpx.HTTPError as exc:
            raise _unreachable(self.url, exc) from None


def _text(kind: Kind, choice: dict[str, Any], field: str) -> str:
    if kind == "chat":
        return (choice.get(field) or {}).get("content") or ""
    return choice.get("text") or ""


def _pieces(kind: Kind, data: str) -> list[StreamPiece]:
    try:
        obj = json.loads(data)
    except ValueError:
        raise ServeError(502, "upstream_error", "the upstream sent a malformed stream event") from None
    if "error" in obj:
        err = obj["error"] if isinstance(obj["error"], dict) else {"message": str(obj["error"])}
        raise ServeError(502, "upstream_error", f"the upstream failed mid-stream: {err.get('message', 'error')}")
    pieces = [StreamPiece(int(c.get("index", 0)), _text(kind, c, "delta"), c.get("finish_reason"))
              for c in obj.get("choices") or []]
    usage = obj.get("usage")
    if usage:
        pieces.append(StreamPiece(-1, prompt_tokens=int(usage.get("prompt_tokens") or 0),
                                  completion_tokens=int(usage.get("completion_tokens") or 0)))
    return pieces


def _timeout() -> ServeError:
    return ServeError(504, "timeout", "the upstream model server did not answer in time")


def _unreachable(url: str, exc: Exception) -> ServeError:
    return ServeError(502, "upstream_unreachable", f"the upstream model server at {url} could not be reached "
                                                   f"({type(exc).__name__})")


def _upstream_error(status: int, content: bytes, headers) -> ServeError:  # noqa: ANN001
    try:
        err = json.loads(content)["error"]
        message = err["message"] if isinstance(err, dict) else str(err)
    except (ValueError, KeyError, TypeError):
        message = f"HTTP {status}"
    message = message[:500]
    if status in PASSED_THROUGH:
        kept = {k: headers[k] for k in ("retry-after",) if k in headers}
        return ServeError(status, "upstream_" + {429: "rate_limited", 503: "overloaded"}.get(status, "rejected"),
                          f"the upstream refused the request: {message}", headers=kept)
    if status in (401, 403):
        return ServeError(502, "upstream_auth", f"the upstream refused the gateway's credentials (HTTP {status}); "
                                                f"set {UPSTREAM_KEY_ENV} to a key the upstream accepts")
    return ServeError(502, "upstream_error", f"the upstream failed (HTTP {status}): {message}")


def gateway_router(ctx: "ServeContext", upstream: str) -> "APIRouter":
    """The chat routes forwarding to `upstream` (serve/app.py includes it for `--upstream URL`)."""
    backend = UpstreamBackend(upstream, api_key=os.environ.get(UPSTREAM_KEY_ENV),
                              timeout_s=ctx.config.request_timeout_s)
    ctx.extra["upstream"] = backend
    return build_router(ctx, backend, check_model=False)
