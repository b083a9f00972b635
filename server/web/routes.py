"""A route table that both registers aiohttp handlers and describes them in OpenAPI 3.1.

One declaration per route, so the document cannot drift from what the server serves.
"""

from __future__ import annotations

import functools
import inspect
import json
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError
from multidict import MultiDictProxy
from pydantic import BaseModel

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
# A handler may also take the route's path parameters and its JSON body by name, and return
# what the declared response carries (a dict or model, None for 204) instead of a Response.
Endpoint = Callable[..., Awaitable[Any]]
_PATH_PARAM = re.compile(r"\{(\w+)\}")


class BodyError(ValueError):
    """The request has no JSON body where the route declares one, or one that does not parse."""


class MediaTypeError(BodyError):
    """A JSON route was sent a body that does not say it is JSON (415)."""


def parse_json(request: web.Request, raw: bytes) -> Any:
    """A request body as JSON: only when its Content-Type says JSON (application/json or a
    +json type), UTF-8 (RFC 8259 section 8.1), and no deeper than the decoder can nest.
    Anything else raises an error that the table in server/web/errors.py answers with 415 or
    400 and what to fix, never 500; JSONDecodeError (400) comes through as it is."""
    ctype = request.content_type
    if ctype != "application/json" and not (
        ctype.startswith("application/") and ctype.endswith("+json")
    ):
        raise MediaTypeError(
            f"send the body as JSON with Content-Type: application/json (it said {ctype!r})"
        )
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise BodyError(
            f"the body is not UTF-8 (invalid byte at offset {e.start}): send JSON as UTF-8"
        ) from None
    try:
        return json.loads(text)
    except RecursionError:
        raise BodyError("the JSON body is nested too deeply") from None
    except json.JSONDecodeError:
        raise
    except ValueError as e:
        # int() refuses numbers of over 4300 digits (sys.get_int_max_str_digits) with a plain
        # ValueError, which the error table would answer with 500.
        raise BodyError(f"a number in the JSON body is too long: {e}") from None


async def read_form(
    request: web.Request,
) -> MultiDictProxy[str | bytes | bytearray | web.FileField]:
    """A form post's fields (`request.post()`), or BodyError (400 and what to fix) when the body
    cannot be read as the form its Content-Type names: multipart without a boundary or without
    its parts, text that is not in its charset, a charset Python does not know, a part whose
    header lines do not parse, a transfer encoding it does not know. aiohttp raises ValueError
    or LookupError for these, its own HttpProcessingError (InvalidHeader, BadHttpMessage) for a
    part's headers, and RuntimeError for a part's Content-Transfer-Encoding; each would
    otherwise be a 500."""
    try:
        return await request.post()
    # UnicodeDecodeError is a ValueError
    except (ValueError, LookupError, HttpProcessingError, RuntimeError) as e:
        raise BodyError(
            f"the form could not be read ({e}): send it as application/x-www-form-urlencoded "
            "in UTF-8, or as multipart/form-data with its boundary"
        ) from None


async def read_json(request: web.Request, model: type[BaseModel]) -> BaseModel:
    """The body parsed and validated by `model` (ValidationError and JSONDecodeError are in
    the error table of server/web/errors.py: 400 with the fields to fix)."""
    raw = await request.read()
    if not raw:
        raise BodyError(f"send a JSON body ({', '.join(model.model_fields)})")
    return model.model_validate(parse_json(request, raw))


def _adapt(
    fn: Endpoint,
    path: str,
    body: type[BaseModel] | str | None,
    ok: int,
    before_body: Callable[[web.Request], Awaitable[None]] | None,
) -> Handler:
    """Wrap `fn(request, **path_params, body=...)` as an aiohttp handler.

    Path parameters named in the path are passed by name; `body` (when the route declares a
    model) is read and validated first, after `before_body` (the table's check that the caller
    may touch the resource at all: a body is not even parsed for someone who may not); a
    returned dict or model becomes JSON with the route's
    success status, None becomes 204, a Response passes through."""
    wanted = list(inspect.signature(fn).parameters)[1:]
    path_names = [n for n in wanted if n in _PATH_PARAM.findall(path)]
    model = body if isinstance(body, type) and issubclass(body, BaseModel) else None
    takes_body = "body" in wanted
    unknown = set(wanted) - set(path_names) - {"body"}
    if unknown or (takes_body and model is None):
        raise TypeError(
            f"{fn.__name__}: parameters {sorted(unknown or {'body'})} are not in {path}"
        )

    @functools.wraps(fn)
    async def handler(request: web.Request) -> web.StreamResponse:
        kwargs: dict[str, Any] = {n: request.match_info[n] for n in path_names}
        if takes_body and model is not None:
            if before_body is not None:
                await before_body(request)
            kwargs["body"] = await read_json(request, model)
        result = await fn(request, **kwargs)
        if isinstance(result, web.StreamResponse):
            return result
        if result is None:
            return web.Response(status=204)
        if isinstance(result, BaseModel):
            result = result.model_dump(mode="json")
        return web.json_response(result, status=ok)

    return handler


# What a body or response carries: a model or a JSON schema (as application/json), a media type
# alone ("text/csv": a string), or (media type, model or JSON schema) for JSON under another
# media type such as application/jwk-set+json.
Spec = type[BaseModel] | str | dict[str, Any] | tuple[str, type[BaseModel] | dict[str, Any]]


@dataclass(frozen=True)
class Param:
    name: str
    where: str  # "path" | "query"
    schema: dict[str, Any]
    description: str = ""
    required: bool = False


@dataclass(frozen=True)
class Op:
    method: str
    path: str
    handler: Handler
    summary: str
    tag: str
    auth: str  # "bearer" | "none" | "client" (OAuth client auth) | "session"
    body: type[BaseModel] | str | None = None  # model, or a media type such as "text/csv"
    responses: dict[int, tuple[str, Spec | None]] = field(default_factory=dict)
    params: tuple[Param, ...] = ()
    in_schema: bool = True


class RouteTable:
    """Collects Ops; `add_to(app)` registers them, `ops` feeds the OpenAPI builder."""

    def __init__(
        self,
        *,
        before_body: Callable[[web.Request], Awaitable[None]] | None = None,
        errors: Spec | None = None,
    ) -> None:
        self.ops: list[Op] = []
        self.before_body = before_body
        # What the audience's error renderer answers with (the `default` response); None: the
        # house JSON format of server/web/errors.py.
        self.errors = errors

    def route(
        self,
        method: str,
        path: str,
        *,
        summary: str,
        tag: str,
        auth: str = "bearer",
        body: type[BaseModel] | str | None = None,
        responses: dict[int, tuple[str, Spec | None]] | None = None,
        params: tuple[Param, ...] = (),
        in_schema: bool = True,
    ) -> Callable[[Endpoint], Endpoint]:
        def deco(fn: Endpoint) -> Endpoint:
            ok = min((s for s in responses or {} if 200 <= s < 300), default=200)
            handler = _adapt(fn, path, body, ok, self.before_body)
            self.ops.append(
                Op(
                    method,
                    path,
                    handler,
                    summary,
                    tag,
                    auth,
                    body,
                    responses or {},
                    params,
                    in_schema,
                )
            )
            return fn

        return deco

    def add_to(self, app: web.Application, prefix: str = "") -> None:
        """Register every op; on a sub-application mounted at `prefix`, paths are given whole
        (as the OpenAPI document shows them) and the prefix is taken off here."""
        for op in self.ops:
            if not (op.path == prefix or op.path.startswith(prefix + "/")):
                raise ValueError(f"{op.method} {op.path} is outside the sub-application {prefix}")
            app.router.add_route(op.method, op.path[len(prefix) :], op.handler)

    def public_handlers(self) -> frozenset[Handler]:
        """Handlers declared `auth="none"`: the ones an audience's auth middleware lets by."""
        return frozenset(op.handler for op in self.ops if op.auth == "none")


ERROR_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["error", "message"],
    "properties": {
        "error": {"type": "string", "description": "stable machine-readable error code"},
        "message": {"type": "string", "description": "what went wrong and what to fix"},
        "details": {"type": "array", "items": {"type": "object"}},
    },
}


def build_openapi(tables: list[RouteTable], *, title: str, version: str) -> dict[str, Any]:
    """An OpenAPI 3.1 document for every op in `tables`."""
    schemas: dict[str, Any] = {"Error": ERROR_SCHEMA}
    paths: dict[str, dict[str, Any]] = {}

    def ref(model: type[BaseModel]) -> dict[str, Any]:
        js = model.model_json_schema(ref_template="#/components/schemas/{model}")
        for name, sub in js.pop("$defs", {}).items():
            schemas[name] = sub
        schemas[model.__name__] = js
        return {"$ref": f"#/components/schemas/{model.__name__}"}

    def content(spec: Spec) -> dict[str, Any]:
        if isinstance(spec, tuple):
            media, inner = spec
            return {media: {"schema": inner if isinstance(inner, dict) else ref(inner)}}
        if isinstance(spec, str):
            fmt = {"type": "string"}
            return {spec: {"schema": fmt}}
        if isinstance(spec, dict):
            return {"application/json": {"schema": spec}}
        return {"application/json": {"schema": ref(spec)}}

    house_error = {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}

    for table in tables:
        for op in table.ops:
            if not op.in_schema:
                continue
            entry: dict[str, Any] = {
                "summary": op.summary,
                "tags": [op.tag],
                "operationId": op.handler.__name__,
                "responses": {},
            }
            params = [
                {
                    "name": p.name,
                    "in": p.where,
                    "required": p.required or p.where == "path",
                    "schema": p.schema,
                    **({"description": p.description} if p.description else {}),
                }
                for p in op.params
            ]
            if params:
                entry["parameters"] = params
            if op.body is not None:
                entry["requestBody"] = {"required": True, "content": content(op.body)}
            for status, (desc, spec) in sorted(op.responses.items()):
                r: dict[str, Any] = {"description": desc}
                if spec is not None:
                    r["content"] = content(spec)
                entry["responses"][str(status)] = r
            entry["responses"].setdefault(
                "default",
                {
                    "description": "error",
                    "content": house_error if table.errors is None else content(table.errors),
                },
            )
            if op.auth == "bearer":
                entry["security"] = [{"bearerToken": []}]
            elif op.auth == "client":
                entry["security"] = [{"clientBasic": []}, {}]
            paths.setdefault(op.path, {})[op.method.lower()] = entry
    return {
        "openapi": "3.1.0",
        "info": {"title": title, "version": version},
        "paths": paths,
        "components": {
            "schemas": schemas,
            "securitySchemes": {
                "bearerToken": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "API token from `imprint tokens create`",
                },
                "clientBasic": {
                    "type": "http",
                    "scheme": "basic",
                    "description": "OAuth client: device_id and client_secret",
                },
            },
        },
    }
