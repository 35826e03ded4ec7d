"""Per-key rate limits, the body-size limit and request accounting.

`FrontDoor` is a plain ASGI middleware around the whole app: it gives each request an id and an arrival time,
refuses a body over the limit with 413 before the app reads it (the body is read at most `limit + 1` bytes, then
replayed to the app), and counts every answer by endpoint and status, 401s and 413s included, with its latency.
"""

from __future__ import annotations

import json
import math
import threading
import time
import uuid
from dataclasses import dataclass

from tunewise.serve.errors import error_body


@dataclass
class _Bucket:
    tokens: float
    stamp: float


class RateLimiter:
    """A token bucket per key: `burst` requests at once, refilled at `per_minute` / 60 per second."""

    def __init__(self, per_minute: float, burst: int):
        self.rate = per_minute / 60.0
        self.burst = float(burst)
        self._buckets: dict[str, _Bucket] = {}
        self._lock = threading.Lock()

    def acquire(self, key_name: str, now: float | None = None) -> float:
        """0 when the request may go ahead (and one token is spent), else the seconds until a token is back."""
        now = time.monotonic() if now is None else now
        with self._lock:
            b = self._buckets.get(key_name)
            if b is None:
                b = self._buckets[key_name] = _Bucket(self.burst, now)
            b.tokens = min(self.burst, b.tokens + (now - b.stamp) * self.rate)
            b.stamp = now
            if b.tokens >= 1.0:
                b.tokens -= 1.0
                return 0.0
            return (1.0 - b.tokens) / self.rate


def retry_after_header(seconds: float) -> dict[str, str]:
    return {"Retry-After": str(max(1, math.ceil(seconds)))}


def new_request_id() -> str:
    return uuid.uuid4().hex


class FrontDoor:
    """ASGI middleware: request id and arrival time in `scope["state"]`, the body limit, and request metrics.
    `route_name(path)` maps a path to the metrics' endpoint label (unknown paths share one label)."""

    def __init__(self, app, *, max_body_bytes: int, metrics, route_name):  # noqa: ANN001
        self.app, self.max_body, self.metrics, self.route_name = app, max_body_bytes, metrics, route_name

    async def __call__(self, scope, receive, send):  # noqa: ANN001
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        state = scope.setdefault("state", {})
        state["request_id"] = new_request_id()
        state["arrival"] = time.monotonic()
        endpoint = self.route_name(scope.get("path", ""))
        status_seen: list[int] = []

        async def send_wrapper(message):  # noqa: ANN001
            if message["type"] == "http.response.start":
                status_seen.append(message["status"])
                headers = list(message.get("headers", []))
                headers.append((b"x-request-id", state["request_id"].encode()))
                message = {**message, "headers": headers}
            await send(message)

        try:
            if scope.get("method") in ("POST", "PUT", "PATCH"):
                replay = await self._read_body(scope, receive, send_wrapper)
                if replay is None:
                    return
                receive = replay
            await self.app(scope, receive, send_wrapper)
        except BaseException:
            if not status_seen:
                status_seen.append(500)
            raise
        finally:
            status = status_seen[0] if status_seen else 499  # 499: the client went away before an answer
            self.metrics.observe_request(endpoint, status, time.monotonic() - state["arrival"])

    async def _read_body(self, scope, receive, send):  # noqa: ANN001
        """The whole body (at most the limit), as a `receive` that replays it; None after answering 413."""
        declared = next((v for k, v in scope.get("headers", []) if k == b"content-length"), None)
        if declared is not None and declared.isdigit() and int(declared) > self.max_body:
            return await self._too_large(send)
        chunks, size = [], 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                chunks = None
                break
            body = message.get("body", b"")
            size += len(body)
            if size > self.max_body:
                return await self._too_large(send)
            chunks.append(body)
            if not message.get("more_body", False):
                break
        if chunks is None:
            async def disconnected():
                return {"type": "http.disconnect"}
            return disconnected
        data, sent = b"".join(chunks), False

        async def replay():
            nonlocal sent
            if not sent:
                sent = True
                return {"type": "http.request", "body": data, "more_body": False}
            return await receive()  # after the body: wait for the disconnect, as the server would
        return replay

    async def _too_large(self, send):  # noqa: ANN001
        body = json.dumps(error_body(413, "body_too_large", f"request body is larger than the limit of "
                                                            f"{self.max_body} bytes (serve.max_body_bytes)")).encode()
        await send({"type": "http.response.start", "status": 413,
                    "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                                (b"connection", b"close")]})
        await send({"type": "http.response.body", "body": body})
        return None
