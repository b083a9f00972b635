"""One table from error type to HTTP status, and the renderers each audience answers with.

`ERRORS` is the only place that says which exception means which status: the JSON API, the
admin UI's HTML pages and the OAuth endpoints all read it through `problem_of`, so the same
failure gets the same status whatever page or client sees it. An audience (an aiohttp
sub-application, see server/app.py) picks a renderer; the renderer decides only the format:
`{"error", "message", "details"}` JSON for the API and the device-facing root, an HTML page for
the UI, RFC 6749 §5.2 `{"error", "error_description"}` for OAuth.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web
from pydantic import ValidationError

from server.store.base import Conflict, Invalid, NotFound, StoreError
from server.web.keys import SERVICES, NotReady
from server.web.routes import BodyError, MediaTypeError

log = logging.getLogger("imprint.http")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class ApiError(Exception):
    """An error a handler raises on purpose, with its status and stable code."""

    def __init__(
        self,
        status: int,
        error: str,
        message: str,
        details: list[Any] | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.error = error
        self.message = message
        self.details = details or []
        self.headers = headers or {}


@dataclass(frozen=True)
class Problem:
    """What went wrong, in a form every renderer can show."""

    status: int
    code: str  # stable machine-readable code
    title: str  # a short heading for people (the UI's page title)
    message: str  # what went wrong and what to fix
    details: list[Any] = field(default_factory=list)
    headers: dict[str, str] = field(default_factory=dict)


def validation_details(err: ValidationError) -> list[dict[str, Any]]:
    out = []
    for e in err.errors():
        item: dict[str, Any] = {"field": ".".join(str(p) for p in e["loc"]), "message": e["msg"]}
        if "input" in e and not isinstance(e["input"], dict | list):
            item["value"] = e["input"]
        out.append(item)
    return out


def _too_large(request: web.Request) -> str:
    limit = request.app[SERVICES].settings.http.max_upload_bytes
    return (
        f"the body is larger than the limit of {limit} bytes; split the file or raise "
        "[http] max_upload_bytes"
    )


# The table: exception type -> (status, code or None for the exception's own, title, message).
# A message of None means the exception's own text. First match wins, so subclasses come first.
# HTTPException (aiohttp's own 4xx) and ApiError carry their status and are handled in problem_of.
Message = Callable[[Exception, web.Request], str] | None
ERRORS: tuple[tuple[type[Exception], int, str | None, str, Message], ...] = (
    (NotFound, 404, "not_found", "Not found", None),
    (Conflict, 409, "conflict", "Not possible", None),
    (Invalid, 422, "invalid", "Not possible", None),
    (
        NotReady,
        503,
        "not_ready",
        "Starting or stopping",
        lambda e, r: "the server is starting or stopping; try again shortly",
    ),
    (StoreError, 400, None, "Not possible", None),
    (MediaTypeError, 415, "unsupported_media_type", "Unsupported media type", None),
    (BodyError, 400, "bad_request", "Bad request", None),
    (
        ValidationError,
        400,
        "bad_request",
        "Bad request",
        lambda e, r: "the request body does not match the schema; see details",
    ),
    (
        json.JSONDecodeError,
        400,
        "bad_request",
        "Bad request",
        lambda e, r: f"the body is not valid JSON: {e}",
    ),
    (web.HTTPRequestEntityTooLarge, 413, "too_large", "File too large", lambda e, r: _too_large(r)),
)


def problem_of(exc: Exception, request: web.Request) -> Problem | None:
    """The Problem for `exc` from the table; None for an exception nobody declared (a bug)."""
    if isinstance(exc, ApiError):
        return Problem(exc.status, exc.error, exc.error, exc.message, exc.details, exc.headers)
    for kind, status, code, title, message in ERRORS:
        if isinstance(exc, kind):
            details: list[Any] = []
            if isinstance(exc, Invalid):
                details = list(exc.details)
            elif isinstance(exc, ValidationError):
                details = validation_details(exc)
            text = message(exc, request) if message else str(exc)
            own = getattr(exc, "code", None) if code is None else code
            return Problem(status, own or "error", title, text, details)
    if isinstance(exc, web.HTTPException) and exc.status >= 400:
        code = exc.reason.lower().replace(" ", "_")
        return Problem(exc.status, code, exc.reason, exc.text or exc.reason)
    return None


CLIENT_CLOSED = 499  # nginx's status for a request whose client closed the connection first
INTERNAL = Problem(500, "internal", "Something went wrong", "internal error; see the server log")

Renderer = Callable[[web.Request, Problem], Awaitable[web.StreamResponse]]


def _client_gone(request: web.Request) -> bool:
    transport = request.transport
    return transport is None or transport.is_closing()


def error_middleware(render: Renderer) -> Any:
    """A middleware that answers every failure of its sub-application through `render`."""

    @web.middleware
    async def errors(request: web.Request, handler: Handler) -> web.StreamResponse:
        try:
            return await handler(request)
        except web.HTTPException as e:
            if e.status < 400:
                raise  # redirects are answers, not errors
            problem = problem_of(e, request)
        except Exception as e:
            if isinstance(e, ConnectionResetError) and _client_gone(request):
                # aiohttp fails the body read with this when the client goes mid-request:
                # nobody to answer and nothing wrong here, so no traceback (a slowloris that
                # hangs up would write one per connection); 499, as nginx counts it.
                log.debug("client left during %s %s", request.method, request.path)
                return web.Response(status=CLIENT_CLOSED, reason="Client Closed Request")
            problem = problem_of(e, request)
            if problem is None:
                log.exception("unhandled error on %s %s", request.method, request.path)
        response = await render(request, problem or INTERNAL)
        response.headers.update((problem or INTERNAL).headers)
        return response

    return errors


def error_response(
    status: int, error: str, message: str, details: list[Any] | None = None
) -> web.Response:
    return web.json_response(
        {"error": error, "message": message, "details": details or []}, status=status
    )


async def render_json(request: web.Request, problem: Problem) -> web.StreamResponse:
    """The house JSON error format: `{"error", "message", "details"}`."""
    return error_response(problem.status, problem.code, problem.message, problem.details)


json_errors = error_middleware(render_json)
