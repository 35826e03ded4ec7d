"""Every error answer is JSON that says why, in the OpenAI shape (so the `openai` client shows the message):

    {"error": {"message": "...", "type": "rate_limited", "code": 429, "param": null}}

No traceback or internal detail ever reaches the client: unexpected exceptions become a plain 500 (logged on the
server with the request id), validation errors list the field and the problem but not the value sent.
"""

from __future__ import annotations

import logging
from typing import Any

log = logging.getLogger("tunewise.serve")


class ServeError(Exception):
    """An answer other than 200: status, a short type, a message for the client, and optional headers."""

    def __init__(self, status: int, type_: str, message: str, *, headers: dict[str, str] | None = None,
                 param: str | None = None):
        super().__init__(message)
        self.status, self.type, self.message, self.headers, self.param = status, type_, message, headers or {}, param


def error_body(status: int, type_: str, message: str, param: str | None = None) -> dict[str, Any]:
    return {"error": {"message": message, "type": type_, "code": status, "param": param}}


def json_error(status: int, type_: str, message: str, headers: dict[str, str] | None = None,
               param: str | None = None):
    from fastapi.responses import JSONResponse

    return JSONResponse(error_body(status, type_, message, param), status_code=status, headers=headers)


HTTP_TYPES = {400: "bad_request", 401: "unauthorized", 403: "forbidden", 404: "not_found",
              405: "method_not_allowed", 413: "body_too_large", 415: "unsupported_media_type", 422: "invalid_request",
              429: "rate_limited", 501: "not_configured", 503: "overloaded", 504: "timeout"}


def install_error_handlers(app) -> None:  # noqa: ANN001  # a FastAPI app
    from fastapi.exceptions import RequestValidationError
    from starlette.exceptions import HTTPException

    @app.exception_handler(ServeError)
    async def serve_error(request, exc: ServeError):  # noqa: ANN001
        return json_error(exc.status, exc.type, exc.message, exc.headers, exc.param)

    @app.exception_handler(HTTPException)
    async def http_error(request, exc: HTTPException):  # noqa: ANN001
        message = {404: f"no such endpoint: {request.method} {request.url.path}",
                   405: f"{request.method} is not allowed on {request.url.path}"}.get(exc.status_code)
        if message is None:
            message = exc.detail if isinstance(exc.detail, str) else "the request could not be processed"
        return json_error(exc.status_code, HTTP_TYPES.get(exc.status_code, "error"), message,
                          dict(exc.headers or {}))

    @app.exception_handler(RequestValidationError)
    async def validation_error(request, exc: RequestValidationError):  # noqa: ANN001
        problems = []
        for err in exc.errors()[:10]:
            loc = ".".join(str(p) for p in err.get("loc", ()) if p != "body") or "body"
            problems.append(f"{loc}: {err.get('msg', 'invalid')}")  # never err['input']: no echo of the request
        more = f" (and {len(exc.errors()) - 10} more)" if len(exc.errors()) > 10 else ""
        if "json" not in request.headers.get("content-type", "json"):
            more += "; send the body as JSON with `Content-Type: application/json`"
        first = problems[0].split(":")[0] if problems else None
        return json_error(422, "invalid_request", "invalid request: " + "; ".join(problems) + more, param=first)

    @app.exception_handler(Exception)
    async def unexpected(request, exc: Exception):  # noqa: ANN001
        rid = getattr(request.state, "request_id", None)
        log.exception("unexpected error in %s %s (request %s)", request.method, request.url.path, rid)
        return json_error(500, "internal_error", "internal server error" + (f" (request {rid})" if rid else ""))
