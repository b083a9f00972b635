"""Every error leaves as JSON `{"error", "message", "details"}` with a status that says whose fault."""

from __future__ import annotations

import json
import logging
from typing import Any

from aiohttp import web
from pydantic import ValidationError

from server.store.base import Conflict, Invalid, NotFound, StoreError
from server.web.keys import SERVICES, NotReady

log = logging.getLogger("imprint.http")


def error_response(
    status: int, error: str, message: str, details: list[Any] | None = None
) -> web.Response:
    return web.json_response(
        {"error": error, "message": message, "details": details or []}, status=status
    )


class ApiError(Exception):
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


def validation_details(err: ValidationError) -> list[dict[str, Any]]:
    out = []
    for e in err.errors():
        item: dict[str, Any] = {"field": ".".join(str(p) for p in e["loc"]), "message": e["msg"]}
        if "input" in e and not isinstance(e["input"], dict | list):
            item["value"] = e["input"]
        out.append(item)
    return out


@web.middleware
async def error_middleware(request: web.Request, handler: Any) -> web.StreamResponse:
    try:
        resp: web.StreamResponse = await handler(request)
        return resp
    except ApiError as e:
        resp = error_response(e.status, e.error, e.message, e.details)
        resp.headers.update(e.headers)
        return resp
    except NotFound as e:
        return error_response(404, "not_found", str(e))
    except Conflict as e:
        return error_response(409, "conflict", str(e))
    except Invalid as e:
        return error_response(422, "invalid", str(e), e.details)
    except NotReady:
        return error_response(
            503, "not_ready", "the server is starting or stopping; try again shortly"
        )
    except StoreError as e:
        return error_response(400, e.code, str(e))
    except ValidationError as e:
        return error_response(
            400,
            "bad_request",
            "the request body does not match the schema; see details",
            validation_details(e),
        )
    except json.JSONDecodeError as e:
        return error_response(400, "bad_request", f"the body is not valid JSON: {e}")
    except web.HTTPRequestEntityTooLarge:
        return error_response(
            413,
            "too_large",
            f"the body is larger than the limit of {request.app[SERVICES].settings.http.max_upload_bytes} bytes; split the file or raise [http] max_upload_bytes",
        )
    except web.HTTPException as e:
        if e.status >= 400:
            return error_response(e.status, e.reason.lower().replace(" ", "_"), e.text or e.reason)
        raise
    except Exception:
        log.exception("unhandled error on %s %s", request.method, request.path)
        return error_response(500, "internal", "internal error; see the server log")
