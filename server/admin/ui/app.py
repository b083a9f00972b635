"""The /ui sub-application: security headers, the HTML error renderer (statuses from the one
table in server/web/errors.py), the session and CSRF guard, templates and static files."""

from __future__ import annotations

from collections.abc import AsyncIterator
from urllib.parse import urlencode

import aiohttp_jinja2
import jinja2
from aiohttp import web

from server.admin.auth import AdminAuth, tokens_match
from server.admin.store import AdminStore
from server.admin.ui import (
    audit,
    codes,
    device,
    devices,
    leases,
    rollout,
    session,
    tenants,
    uploads,
    users,
)
from server.admin.ui.common import (
    CSRF_FIELD,
    FORM,
    JINJA,
    PREFIX,
    SESSION,
    SESSION_COOKIE,
    SESSION_TOKEN,
    STATE_LABELS,
    STATIC_DIR,
    TEMPLATE_DIR,
    auth_service,
    log,
    render,
    routes,
    see_other,
    static_url,
    tenant_url,
)
from server.admin.ui.state import UI, UiState, size_text, when
from server.web.errors import Handler, Problem, error_middleware
from server.web.keys import SERVICES, Services
from server.web.routes import read_form

# The page modules register their routes on `routes` when imported.
PAGES = (session, tenants, devices, uploads, codes, device, users, audit, leases, rollout)

_SECURITY_HEADERS = {
    # No inline script or style anywhere in the templates, so the policy can be strict.
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
    ),
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
}


# What the UI says where the house table's message is written for API clients.
_UI_MESSAGES = {
    "not_ready": "The server is not ready; try again shortly.",
    "internal": "An internal error occurred; see the server log.",
}


async def render_html(request: web.Request, problem: Problem) -> web.StreamResponse:
    """The UI's error renderer: the house table's status and title, as an HTML page."""
    if problem.code == "too_large":
        limit = request.app[SERVICES].settings.http.max_upload_bytes
        message = (
            f"The upload is larger than the limit of {size_text(limit)}. Split the file, "
            "or raise [http] max_upload_bytes."
        )
    else:
        message = _UI_MESSAGES.get(problem.code, problem.message)
    return await _error_page(request, problem.status, problem.title, message)


@web.middleware
async def security_headers(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Every /ui answer, error pages included, carries the strict page policy."""
    response = await handler(request)
    for k, v in _SECURITY_HEADERS.items():
        response.headers.setdefault(k, v)
    return response


@web.middleware
async def session_guard(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Find the admin's session (or send to sign-in) and check CSRF on every form post; the
    sign-in pages and static files are declared public (`auth="none"`) and pass."""
    if request.match_info.route.handler in _PUBLIC or isinstance(
        request.match_info.route.resource, web.StaticResource
    ):
        return await handler(request)
    token = request.cookies.get(SESSION_COOKIE)
    lookup = await auth_service(request).lookup(token)
    if lookup.session is None:
        query = {"reason": lookup.problem or "missing"}
        if request.method == "GET":
            query["next"] = request.path_qs
        response = see_other("/ui/login?" + urlencode(query))
        if token:
            response.del_cookie(SESSION_COOKIE, path="/ui")
        return response
    request[SESSION] = lookup.session
    request[SESSION_TOKEN] = token or ""
    if request.method not in ("GET", "HEAD"):
        form = await read_form(request)
        request[FORM] = form
        given = form.get(CSRF_FIELD)
        if not tokens_match(
            lookup.session.csrf_token,
            given if isinstance(given, str) else request.headers.get("X-CSRF-Token"),
        ):
            log.warning(
                "CSRF check failed: %s %s by admin %s from %s",
                request.method,
                request.path,
                lookup.session.username,
                request.remote,
            )
            return await _error_page(
                request,
                403,
                "Form expired",
                "This form is out of date or did not come from this site, so nothing was "
                "changed. Go back, reload the page and try again.",
            )
    return await handler(request)


async def _error_page(request: web.Request, status: int, title: str, message: str) -> web.Response:
    try:
        return await render(
            request, "error.html", {"title": title, "message": message}, status=status
        )
    except Exception:  # the layout needs the store; never fail while reporting a failure
        log.exception("cannot render the error page for %s", request.path)
        return web.Response(status=status, text=f"{title}: {message}", content_type="text/plain")


async def _admin_ctx(app: web.Application) -> AsyncIterator[None]:
    """After the store opens: the admin session service over the same store and clock."""
    svc = app[SERVICES]
    registry = svc.registry
    svc.admin = AdminAuth(AdminStore(registry.store), clock=registry.clock)
    try:
        yield
    finally:
        svc.admin = None


_PUBLIC = routes.public_handlers()  # the sign-in pages


def sub_app(services: Services) -> web.Application:
    """The /ui audience: Jinja templates, static files, admin sessions and CSRF, HTML errors.

    Middlewares, outermost first: the page security headers (on error pages too), the HTML
    error renderer (statuses from the one table in server/web/errors.py), the session guard."""
    app = web.Application(
        middlewares=[security_headers, error_middleware(render_html), session_guard],
        client_max_size=services.settings.http.max_upload_bytes,
    )
    app[SERVICES] = services
    env = aiohttp_jinja2.setup(
        app,
        app_key=JINJA,
        loader=jinja2.FileSystemLoader(TEMPLATE_DIR),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        default_helpers=False,
        filters={"when": when, "num": lambda n: f"{n:,}", "size": size_text},
    )
    env.globals.update(
        static=static_url(app),
        tenant_url=tenant_url,
        state_labels=STATE_LABELS,
        csrf_field=CSRF_FIELD,
    )
    app[UI] = UiState()
    routes.add_to(app, PREFIX)
    app.router.add_static("/static", STATIC_DIR, name="ui-static", append_version=True)
    app.cleanup_ctx.append(_admin_ctx)
    return app
