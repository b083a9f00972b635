"""Signing in and out, the home page, switching tenant, the CSV template."""

from __future__ import annotations

import asyncio
import secrets

from aiohttp import web

from server.admin.auth import tokens_match
from server.admin.ui import common
from server.admin.ui.state import UI, safe_next
from server.web.downloads import template_download
from server.web.keys import cookies_secure
from server.web.routes import read_form


@common.root_routes.route(
    "GET",
    "/",
    summary="The admin web UI (redirects to /ui)",
    tag="ui",
    auth="none",
    responses={302: ("redirect to /ui", None)},
)
async def root(request: web.Request) -> web.Response:
    raise web.HTTPFound("/ui")


def _cookie(
    response: web.StreamResponse, request: web.Request, name: str, value: str, path: str
) -> None:
    response.set_cookie(
        name,
        value,
        path=path,
        httponly=True,
        secure=cookies_secure(request),
        samesite="Strict",
    )


@common.page("GET", "/ui/login", "Admin sign-in page", auth="none")
async def login_page(request: web.Request) -> web.Response:
    lookup = await common.auth_service(request).lookup(request.cookies.get(common.SESSION_COOKIE))
    if lookup.session is not None:
        return common.see_other(safe_next(request.query.get("next")))
    return await _login_form(request, status=200)


async def _login_form(
    request: web.Request, *, status: int, error: str = "", username: str = ""
) -> web.Response:
    # Login CSRF (a forged sign-in into the attacker's account): a double-submit token, since
    # there is no session yet. Reuse the cookie so that two open tabs both keep working.
    nonce = request.cookies.get(common.LOGIN_COOKIE, "")
    if len(nonce) < 32:
        nonce = secrets.token_urlsafe(32)
    reason = request.query.get("reason", "")
    response = await common.render(
        request,
        "login.html",
        {
            "title": "Sign in",
            "login_csrf": nonce,
            "next": safe_next(request.query.get("next")),
            "notice": "" if error else common.LOGIN_REASONS.get(reason, ""),
            "error": error,
            "username": username,
        },
        status=status,
    )
    _cookie(response, request, common.LOGIN_COOKIE, nonce, "/ui/login")
    return response


@common.page("POST", "/ui/login", "Admin sign-in", auth="none")
async def login(request: web.Request) -> web.Response:
    form = await read_form(request)
    username = common.form_text(form, "username", 200)
    password = common.form_text(form, "password", 2000)
    if not tokens_match(
        request.cookies.get(common.LOGIN_COOKIE, ""), common.form_text(form, common.CSRF_FIELD)
    ):
        return await _login_form(
            request,
            status=403,
            error="The sign-in form expired. It has been reloaded: sign in again.",
            username=username,
        )
    ui = request.app[UI]
    source = request.remote or "unknown"
    now = asyncio.get_running_loop().time()
    user_key = username.strip().lower()
    if ui.failures_by_source.blocked(source, now) or ui.failures_by_user.blocked(user_key, now):
        response = await _login_form(
            request,
            status=429,
            error="Too many failed sign-ins. Wait a minute and try again.",
            username=username,
        )
        response.headers["Retry-After"] = "60"
        return response
    result = await common.auth_service(request).login(username, password, source)
    if result is None:
        ui.failures_by_source.record(source, now)
        ui.failures_by_user.record(user_key, now)
        common.log.info("admin sign-in failed for %r from %s", user_key, source)
        return await _login_form(
            request, status=401, error="Wrong username or password.", username=username
        )
    token, session = result
    common.log.info("admin %s signed in from %s", session.username, source)
    response = common.see_other(safe_next(common.form_text(form, "next", 2000)))
    _cookie(response, request, common.SESSION_COOKIE, token, "/ui")
    response.del_cookie(common.LOGIN_COOKIE, path="/ui/login")
    return response


@common.page("POST", "/ui/logout", "Admin sign-out")
async def logout(request: web.Request) -> web.Response:
    await common.auth_service(request).logout(
        request[common.SESSION_TOKEN], common.current_session(request)
    )
    response = common.see_other("/ui/login?reason=logged_out")
    response.del_cookie(common.SESSION_COOKIE, path="/ui")
    return response


@common.page("GET", "/ui", "Admin home")
async def home(request: web.Request) -> web.Response:
    session = common.current_session(request)
    if session.role == "operator" or session.tenant_id is None:
        return common.see_other("/ui/tenants")
    return common.see_other(common.tenant_url(session.tenant_id, "devices"))


@common.page("GET", "/ui/switch", "Go to a tenant")
async def switch(request: web.Request) -> web.Response:
    tenant = await common.registry_of(request).get_tenant(
        common.principal_of(request), request.query.get("tenant", "")
    )
    return common.see_other(common.tenant_url(tenant.id, "devices"))


@common.page("GET", "/ui/template.csv", "CSV template")
async def template_csv(request: web.Request) -> web.Response:
    return template_download()
