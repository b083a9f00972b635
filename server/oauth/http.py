"""Remote sign-in over HTTP: the RFC 8628 endpoints (/oauth2, /.well-known) and the
verification page (/device). The admin's side of sign-in (tenant user accounts, "Sign in a user",
sign-out) is part of the REST API: server/api/users.py.

OAuth endpoints answer errors in the RFC 6749 §5.2 form (`error`, `error_description`).
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import re
import secrets
import time
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl

import jinja2
from aiohttp import web
from pydantic import BaseModel, Field

from server.oauth.rules import OAuthError, client_credentials, normalize_username, single_params
from server.oauth.service import OAuthService
from server.oauth.store import ClientRow, UserRow
from server.provisioning.codes import CodeFormatError, format_code, normalize_code
from server.store.base import Invalid
from server.web.errors import ApiError, Handler, Problem, error_middleware
from server.web.keys import SERVICES, Services, cookies_secure
from server.web.routes import Param, RouteTable, read_form


class OAuthErrorOut(BaseModel):
    error: str = Field(description="RFC 6749 §5.2 / RFC 8628 §3.5 error code")
    error_description: str


well_known = RouteTable()  # on the root application (RFC 8414 puts it there)
endpoints = RouteTable(errors=OAuthErrorOut)  # mounted at /oauth2: RFC 6749 §5.2 errors
page = RouteTable(errors="text/html")  # mounted at /device: the verification page, HTML errors
OAUTH_PREFIX = "/oauth2"
PAGE_PREFIX = "/device"
log = logging.getLogger("imprint.oauth")

FORM = "application/x-www-form-urlencoded"
MAX_FORM_BYTES = 16 * 1024
CSRF_COOKIE = "imprint_device_csrf"
_CSRF_SHAPE = re.compile(r"^[A-Za-z0-9_-]{20,64}$")  # what secrets.token_urlsafe(24) makes
_TEMPLATES = jinja2.Environment(
    loader=jinja2.FileSystemLoader(Path(__file__).parent / "templates"),
    autoescape=True,  # every value is escaped; nothing on these pages is trusted markup
    undefined=jinja2.StrictUndefined,
)
_PAGE_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; "
        "frame-ancestors 'none'; base-uri 'none'"
    ),
    "X-Frame-Options": "DENY",  # the Approve button must not be clickjacked
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",  # the user code may be in the URL
    "Cache-Control": "no-store",
}


def _oauth(request: web.Request) -> OAuthService:
    return request.app[SERVICES].oauth


# ---- OAuth endpoint plumbing ---------------------------------------------------------------------


def _json(
    body: dict[str, Any], status: int = 200, headers: dict[str, str] | None = None
) -> web.Response:
    # RFC 6749 §5.1: token responses must not be cached.
    return web.json_response(
        body,
        status=status,
        headers={"Cache-Control": "no-store", "Pragma": "no-cache", **(headers or {})},
    )


def _error(e: OAuthError) -> web.Response:
    return _json(e.body(), e.status, e.headers)


async def _params(request: web.Request) -> dict[str, str]:
    if request.content_type != FORM:
        raise OAuthError("invalid_request", f"send the parameters as {FORM} (RFC 6749 §3.2)")
    if request.content_length is not None and request.content_length > MAX_FORM_BYTES:
        raise OAuthError("invalid_request", f"the body is larger than {MAX_FORM_BYTES} bytes")
    # content.read(n) answers with what has arrived so far: read on to the end of the body (a
    # device's TLS stack may send it in several records), at most one byte past the limit.
    raw = b""
    while len(raw) <= MAX_FORM_BYTES:
        piece = await request.content.read(MAX_FORM_BYTES + 1 - len(raw))
        if not piece:
            break
        raw += piece
    if len(raw) > MAX_FORM_BYTES:
        raise OAuthError("invalid_request", f"the body is larger than {MAX_FORM_BYTES} bytes")
    try:
        text = raw.decode("utf-8")
        pairs = parse_qsl(text, keep_blank_values=True, strict_parsing=False, max_num_fields=50)
    except (UnicodeDecodeError, ValueError):
        raise OAuthError("invalid_request", "the body is not a valid UTF-8 form") from None
    return single_params(pairs)


class DeviceAuthorizationOut(BaseModel):
    device_code: str
    user_code: str = Field(description="XXXX-XXXX, letters BCDFGHJKLMNPQRSTVWXZ")
    verification_uri: str
    verification_uri_complete: str
    expires_in: int
    interval: int


class TokenOut(BaseModel):
    access_token: str = Field(description="ES256 JWT (typ at+jwt); verify with jwks_uri")
    token_type: str = Field(examples=["Bearer"])
    expires_in: int
    refresh_token: str = Field(description="single use: each refresh returns a new one")
    scope: str | None = None


@well_known.route(
    "GET",
    "/.well-known/oauth-authorization-server",
    summary="OAuth authorization server metadata (RFC 8414)",
    tag="oauth",
    auth="none",
    responses={200: ("metadata", {"type": "object"})},
)
async def oauth_metadata(request: web.Request) -> web.Response:
    return web.json_response(
        _oauth(request).metadata(), headers={"Cache-Control": "public, max-age=300"}
    )


@endpoints.route(
    "GET",
    "/oauth2/jwks",
    summary="Public keys that sign access tokens (JWK Set, RFC 7517)",
    tag="oauth",
    auth="none",
    responses={200: ("JWK Set", ("application/jwk-set+json", {"type": "object"}))},
)
async def oauth_jwks(request: web.Request) -> web.Response:
    return web.json_response(
        _oauth(request).jwks(),
        content_type="application/jwk-set+json",
        headers={"Cache-Control": "public, max-age=300"},
    )


@endpoints.route(
    "POST",
    "/oauth2/device_authorization",
    summary="Start a device sign-in (RFC 8628 §3.1): form client_id, optional scope",
    tag="oauth",
    auth="client",
    body=FORM,
    responses={
        200: ("device code and user code", DeviceAuthorizationOut),
        400: ("invalid_request or invalid_scope", OAuthErrorOut),
        401: ("invalid_client: unknown, wrong secret, not provisioned or reset", OAuthErrorOut),
    },
)
async def device_authorization(request: web.Request) -> web.Response:
    oauth = _oauth(request)
    try:
        params = await _params(request)
        client_id, secret = client_credentials(request.headers.get("Authorization"), params)
        client = await oauth.authenticate_client(client_id, secret)
        result = await oauth.device_authorization(client, params.get("scope"))
    except OAuthError as e:
        log.info("device authorization refused: %s (%s)", e.error, e.description)
        return _error(e)
    log.info(
        "device %s started sign-in",
        client.mac,
        extra={"mac": client.mac, "tenant": client.tenant_id},
    )
    return _json(result.as_dict())


# Token answers that end a device's sign-in attempt: the rollout view lists them as errors.
SIGN_IN_FAILURES = frozenset({"access_denied", "expired_token"})


def _note_sign_in_failure(request: web.Request, client: ClientRow, e: OAuthError) -> None:
    registry = request.app[SERVICES].registry
    view = registry.index.get(client.mac)
    if view is not None:
        registry.rollout.record(
            view.tenant_id, view.mac, view.location, "sign_in", e.error, e.description, time.time()
        )


@endpoints.route(
    "POST",
    "/oauth2/token",
    summary="Token endpoint: device_code (RFC 8628 §3.4) and refresh_token grants",
    tag="oauth",
    auth="client",
    body=FORM,
    responses={
        200: ("tokens", TokenOut),
        400: (
            "authorization_pending, slow_down, access_denied, expired_token, invalid_grant, "
            "invalid_request, invalid_scope or unsupported_grant_type",
            OAuthErrorOut,
        ),
        401: ("invalid_client", OAuthErrorOut),
    },
)
async def token(request: web.Request) -> web.Response:
    oauth = _oauth(request)
    grant_type = ""
    client: ClientRow | None = None
    try:
        params = await _params(request)
        grant_type = params.get("grant_type", "")
        client_id, secret = client_credentials(request.headers.get("Authorization"), params)
        client = await oauth.authenticate_client(client_id, secret)
        body = await oauth.token(client, params)
    except OAuthError as e:
        oauth.count(grant_type, e.error)
        if client is not None and e.error in SIGN_IN_FAILURES:
            _note_sign_in_failure(request, client, e)
        return _error(e)
    oauth.count(grant_type, "success")
    return _json(body)


@endpoints.route(
    "POST",
    "/oauth2/introspect",
    summary="Is this access or refresh token active now? (RFC 7662; API token as Bearer)",
    tag="oauth",
    auth="bearer",
    body=FORM,
    responses={
        200: ("introspection result", {"type": "object"}),
        400: ("invalid_request: not a form, or no token parameter", OAuthErrorOut),
        401: ("no API token, or one that is unknown or revoked", OAuthErrorOut),
    },
)
async def introspect(request: web.Request) -> web.Response:
    header = request.headers.get("Authorization", "")
    scheme, _, credential = header.partition(" ")
    principal = (
        await request.app[SERVICES].registry.authenticate(credential.strip())
        if scheme.lower() == "bearer" and credential.strip()
        else None
    )
    if principal is None:
        raise ApiError(
            401,
            "unauthorized",
            "send 'Authorization: Bearer <API token>' (see `imprint tokens create`)",
            headers={"WWW-Authenticate": 'Bearer realm="imprint"'},
        )
    try:
        params = await _params(request)
        if "token" not in params:
            raise OAuthError("invalid_request", "token is required")
    except OAuthError as e:
        return _error(e)
    return _json(await _oauth(request).introspect(principal, params["token"]))


# ---- the verification page (RFC 8628 §3.3) --------------------------------------------------------


def _render(
    template: str,
    status: int = 200,
    csrf: str | None = None,
    secure: bool = False,
    headers: dict[str, str] | None = None,
    **ctx: Any,
) -> web.Response:
    html = _TEMPLATES.get_template(template).render(csrf=csrf, **ctx)
    resp = web.Response(
        text=html,
        status=status,
        content_type="text/html",
        charset="utf-8",
        headers={**_PAGE_HEADERS, **(headers or {})},
    )
    if csrf is not None:
        resp.set_cookie(
            CSRF_COOKIE,
            csrf,
            httponly=True,
            samesite="Strict",
            secure=secure,
            path="/device",
            max_age=3600,
        )
    return resp


def _csrf_cookie(request: web.Request) -> str | None:
    value = request.cookies.get(CSRF_COOKIE, "")
    return value if _CSRF_SHAPE.match(value) else None


def _result(title: str, message: str, kind: str, status: int, **kw: Any) -> web.Response:
    return _render(
        "verify_result.html", status, title=title, message=message, kind=kind, again="device", **kw
    )


def _form_page(
    request: web.Request,
    csrf: str,
    *,
    status: int = 200,
    error: str | None = None,
    user_code: str = "",
    username: str = "",
) -> web.Response:
    return _render(
        "verify.html",
        status,
        csrf=csrf,
        secure=cookies_secure(request),
        title="Sign in a device",
        error=error,
        user_code=user_code,
        username=username,
    )


@page.route(
    "GET",
    "/device",
    summary="Verification page: enter the device's user code and sign in (RFC 8628 §3.3)",
    tag="oauth",
    auth="none",
    params=(Param("user_code", "query", {"type": "string"}, "prefills the code (XXXX-XXXX)"),),
    responses={200: ("HTML form", "text/html")},
)
async def device_page(request: web.Request) -> web.Response:
    csrf = _csrf_cookie(request) or secrets.token_urlsafe(24)
    raw = request.query.get("user_code", "")[:20]
    try:
        shown = format_code(normalize_code(raw)) if raw else ""
    except CodeFormatError:
        shown = raw
    return _form_page(request, csrf, user_code=shown)


@page.route(
    "POST",
    "/device",
    summary="Verification page form posts: step=login (code, username, password), then "
    "step=decide (approve or deny)",
    tag="oauth",
    auth="none",
    body=FORM,
    responses={
        200: ("confirmation or result page", "text/html"),
        400: ("wrong code or credentials, or an expired form", "text/html"),
        403: ("the account belongs to another tenant than the device", "text/html"),
        409: ("the request is no longer pending", "text/html"),
        429: ("too many attempts from this address or for this account", "text/html"),
    },
)
async def device_page_post(request: web.Request) -> web.Response:
    oauth = _oauth(request)
    source = request.remote or "unknown"
    now = asyncio.get_running_loop().time()
    if not oauth.page_limiter.allow(source, now) or oauth.page_failures.blocked(source, now):
        return _result(
            "Too many attempts",
            "Too many attempts from this address. Wait a minute, then try again.",
            "error",
            429,
            headers={"Retry-After": "60"},
        )
    if request.content_length is not None and request.content_length > MAX_FORM_BYTES:
        return _result("Form too large", "The form is too large.", "error", 413)
    form = await read_form(request)
    field = {k: v for k, v in form.items() if isinstance(v, str)}
    cookie = _csrf_cookie(request)
    sent = field.get("csrf", "")
    if cookie is None or not hmac.compare_digest(sent.encode(), cookie.encode()):
        # Double-submit check: the hidden field must match this browser's cookie.
        csrf = cookie or secrets.token_urlsafe(24)
        return _form_page(
            request,
            csrf,
            status=400,
            error="This form expired or your browser did not send its cookie. Enter the code "
            "again (cookies must be allowed for this page).",
            user_code=field.get("user_code", "")[:20],
        )
    if field.get("step") == "decide":
        return await _decide(request, oauth, field, cookie, source)
    return await _login(request, oauth, field, cookie, source, now)


async def _login(
    request: web.Request,
    oauth: OAuthService,
    field: dict[str, str],
    csrf: str,
    source: str,
    now: float,
) -> web.Response:
    typed = field.get("user_code", "")[:20]
    username = field.get("username", "")[:128]
    password = field.get("password", "")[:256]

    def again(status: int, error: str) -> web.Response:
        return _form_page(
            request, csrf, status=status, error=error, user_code=typed, username=username
        )

    try:
        pending = await oauth.find_pending(typed)
    except CodeFormatError as e:  # a typo, not a guess: not counted
        return again(400, f"{e}.")
    if pending is None:
        # RFC 8628 §5.1: user codes are short, so wrong ones are counted per source.
        oauth.page_failures.record(source, now)
        log.info("verification page: wrong or expired user code from %s", source)
        return again(
            400,
            "That code is not valid or has expired. Check the code the device shows now "
            "(it changes every few minutes).",
        )
    try:
        account = normalize_username(username)
    except Invalid:
        account = ""
    if account and oauth.account_failures.blocked(account, now):
        return _result(
            "Too many attempts",
            "Too many wrong passwords for this account. Wait a few minutes, then try again.",
            "error",
            429,
            headers={"Retry-After": "60"},
        )
    user = await oauth.users.check_login(username, password)
    if user is None:
        oauth.page_failures.record(source, now)
        if account:
            oauth.account_failures.record(account, now)
            await oauth.audit_login_failure(account, source)
        return again(400, "The username or password is not right, or the account is disabled.")
    if user.tenant_id != pending.tenant_id:
        await oauth.audit_tenant_mismatch(user, pending, source)
        log.warning(
            "verification page: user %s tried to sign in %s of another tenant",
            user.username,
            pending.mac,
        )
        return _result(
            "Wrong organisation",
            f"This device belongs to a different organisation than the account "
            f"{user.username}. Sign in with an account of the device's organisation. "
            "Nothing was changed.",
            "error",
            403,
        )
    return _render(
        "verify_confirm.html",
        csrf=csrf,
        secure=cookies_secure(request),
        title="Confirm the device",
        user_label=_user_label(user),
        tenant_name=pending.tenant_name,
        tenant_id=pending.tenant_id,
        mac=pending.mac,
        location=pending.location,
        user_code=format_code(normalize_code(typed)),
        approval=oauth.approval_token(pending.grant_id, user.username, csrf),
    )


def _user_label(user: UserRow) -> str:
    return f"{user.display_name} ({user.username})" if user.display_name else user.username


async def _decide(
    request: web.Request,
    oauth: OAuthService,
    field: dict[str, str],
    csrf: str,
    source: str,
) -> web.Response:
    checked = oauth.check_approval_token(field.get("approval", ""), csrf)
    decision = field.get("decision")
    if checked is None or decision not in ("approve", "deny"):
        return _form_page(
            request,
            csrf,
            status=400,
            error="This confirmation expired (it is valid for 5 minutes). Enter the code again.",
        )
    grant_id, username = checked
    outcome = await oauth.decide(grant_id, username, decision == "approve", source)
    if outcome.error is not None:
        status = 403 if outcome.error == "tenant_mismatch" else 409
        return _result("Not signed in", outcome.message, "error", status)
    log.info(
        "sign-in %s for %s by %s from %s",
        "approved" if decision == "approve" else "denied",
        outcome.mac,
        username,
        source,
        extra={"mac": outcome.mac, "source": source},
    )
    if decision == "approve":
        return _result("Device signed in", outcome.message, "ok", 200)
    return _result("Sign-in denied", outcome.message, "ok", 200)


routes = (well_known, endpoints, page)  # for the OpenAPI document


async def render_oauth(request: web.Request, problem: Problem) -> web.StreamResponse:
    """Failures the endpoints did not answer themselves, in the RFC 6749 §5.2 form."""
    code = problem.code
    if problem.status >= 500:
        code = "temporarily_unavailable" if problem.status == 503 else "server_error"
    return _json({"error": code, "error_description": problem.message}, problem.status)


@web.middleware
async def oauth_errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except OAuthError as e:
        return _error(e)


async def render_page(request: web.Request, problem: Problem) -> web.StreamResponse:
    """The verification page's failures, on the page (its own headers, no JSON for people)."""
    return _result(problem.title, problem.message, "error", problem.status)


def sub_apps(services: Services) -> list[tuple[str, web.Application]]:
    """The OAuth endpoints and the verification page, each its own audience."""
    oauth = web.Application(middlewares=[error_middleware(render_oauth), oauth_errors])
    oauth[SERVICES] = services
    endpoints.add_to(oauth, OAUTH_PREFIX)
    device = web.Application(middlewares=[error_middleware(render_page)])
    device[SERVICES] = services
    page.add_to(device, PAGE_PREFIX)
    return [(OAUTH_PREFIX, oauth), (PAGE_PREFIX, device)]


__all__ = ["well_known", "routes", "sub_apps"]
