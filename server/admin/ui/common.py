"""What every page shares: the route tables, request keys, the renderer and small helpers."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode

import aiohttp_jinja2
import jinja2
import segno
from aiohttp import web
from markupsafe import escape
from multidict import MultiDictProxy

from server.admin.auth import AdminAuth, AdminSession
from server.admin.store import AdminStore
from server.admin.ui.state import UI, Flash
from server.oauth.service import OAuthService
from server.registry.model import Device, DeviceState, Tenant
from server.registry.service import Principal, Registry
from server.store.base import Conflict, Invalid
from server.web.keys import SERVICES, NotReady
from server.web.routes import Endpoint, RouteTable

log = logging.getLogger("imprint.admin")
PREFIX = "/ui"
routes = RouteTable()  # mounted at PREFIX (sub_app)
root_routes = RouteTable()  # on the root application: "/" redirects to the UI


def page(
    method: str, path: str, summary: str, *, auth: str = "session"
) -> Callable[[Endpoint], Endpoint]:
    """Declare a UI route: tagged ui, behind the admin session unless `auth="none"`, and kept
    out of the OpenAPI document (pages are for people, not API clients)."""
    return routes.route(method, path, summary=summary, tag="ui", auth=auth, in_schema=False)


JINJA = web.AppKey("imprint_admin_jinja", jinja2.Environment)
SESSION = web.RequestKey("imprint_admin_session", AdminSession)
SESSION_TOKEN = web.RequestKey("imprint_admin_session_token", str)
FORM = web.RequestKey("imprint_admin_form", MultiDictProxy[Any])


SESSION_COOKIE = "imprint_session"
LOGIN_COOKIE = "imprint_login_csrf"
CSRF_FIELD = "csrf_token"
PAGE_SIZE = 50
SHEET_SIZE = 50  # cards per sheet page: each QR code costs ~7 ms of CPU (segno)
PREVIEW_ROWS = 200
STATIC_DIR = Path(__file__).parent.parent / "static"
TEMPLATE_DIR = Path(__file__).parent.parent / "templates"


STATE_LABELS = {
    DeviceState.AWAITING_ACTIVATION.value: "Awaiting activation",
    DeviceState.AWAITING_SIGN_IN.value: "Awaiting sign in",
    DeviceState.SIGNED_IN.value: "Signed in",
}
DISCOVERED = "discovered"
TABS: tuple[tuple[str, str], ...] = (*STATE_LABELS.items(), (DISCOVERED, "Discovered"))


LOGIN_REASONS = {
    "idle": "You were signed out after a period without activity. Sign in again.",
    "expired": "Your session has ended. Sign in again.",
    "unknown": "Sign in to continue.",
    "missing": "Sign in to continue.",
    "logged_out": "You are signed out.",
}


def auth_service(request: web.Request) -> AdminAuth:
    auth = request.app[SERVICES].admin
    if auth is None:
        raise NotReady("admin sessions are not available yet")
    return auth


def registry_of(request: web.Request) -> Registry:
    return request.app[SERVICES].registry


def current_session(request: web.Request) -> AdminSession:
    return request[SESSION]


def principal_of(request: web.Request) -> Principal:
    return request[SESSION].principal


def oauth_of(request: web.Request) -> OAuthService:
    return request.app[SERVICES].oauth


def admin_store(request: web.Request) -> AdminStore:
    return auth_service(request).store


def posted_form(request: web.Request) -> MultiDictProxy[Any]:
    return request[FORM]


def form_text(form: MultiDictProxy[Any], name: str, limit: int = 500) -> str:
    value = form.get(name, "")
    return value[:limit] if isinstance(value, str) else ""


def form_values(request: web.Request, **limits: int) -> dict[str, str]:
    """The posted text fields named by `limits`, each cut to its length (what the form shows
    again when the action is refused)."""
    form = posted_form(request)
    return {name: form_text(form, name, limit) for name, limit in limits.items()}


def refusal_status(e: Invalid | Conflict) -> int:
    """A refused form: 409 when it clashes with what is stored, 422 when it breaks a rule."""
    return 409 if isinstance(e, Conflict) else 422


def tenant_url(tenant_id: str, *parts: str, **query: Any) -> str:
    path = "/ui/tenants/" + quote(tenant_id) + "".join("/" + quote(p, safe=":@") for p in parts)
    clean = {
        k: v
        for k, v in query.items()
        if v not in (None, "") and not (k == "page" and str(v) == "1")
    }
    return path + ("?" + urlencode(clean, doseq=True) if clean else "")


def add_flash(request: web.Request, level: str, text: str, href: str = "", link: str = "") -> None:
    request.app[UI].flash.add(current_session(request).csrf_token, Flash(level, text, href, link))


def see_other(location: str) -> web.Response:
    return web.Response(status=303, headers={"Location": location})


async def render(
    request: web.Request, template: str, ctx: dict[str, Any], status: int = 200
) -> web.Response:
    """Render an admin page with the layout's context (who, CSRF token, tenants, flashes)."""
    session = request.get(SESSION)
    base: dict[str, Any] = {
        "me": session,
        "csrf": session.csrf_token if session else "",
        "tenant": None,
        "tenants": [],
        "nav": "",
        "flashes": request.app[UI].flash.pop(session.csrf_token) if session else [],
    }
    if session is not None and session.role == "operator":
        base["tenants"] = await registry_of(request).list_tenants(session.principal)
    response = aiohttp_jinja2.render_template(
        template, request, {**base, **ctx}, app_key=JINJA, status=status
    )
    response.headers["Cache-Control"] = "no-store"
    return response


def static_url(app: web.Application) -> Callable[[str], str]:
    def url(filename: str) -> str:
        return str(app.router["ui-static"].url_for(filename=filename))

    return url


async def current_tenant(request: web.Request) -> Tenant:
    return await registry_of(request).get_tenant(
        principal_of(request), request.match_info["tenant"]
    )


PAGE_MAX = 10**9  # far past any real page; page * SHEET_SIZE stays inside the store's 64 bits


def int_query(
    request: web.Request, name: str, default: int, lo: int = 1, hi: int = PAGE_MAX
) -> int:
    """Lenient, as links people edit by hand are: a value that is not a whole number gives
    `default`, one outside lo..hi the nearer end (never a number the store cannot bind)."""
    try:
        return min(hi, max(lo, int(request.query.get(name, default))))
    except ValueError:
        return default


async def current_codes(
    request: web.Request, tenant_id: str, devices: Sequence[Device]
) -> dict[str, tuple[str, str]]:
    """mac -> (code XXXX-XXXX, expires) for the devices that have a usable code now."""
    waiting = [d.mac for d in devices if d.state == DeviceState.AWAITING_ACTIVATION]
    if not waiting:
        return {}
    codes = await registry_of(request).provisioning.current_codes(tenant_id, waiting)
    return {mac: (c.code, c.expires_at) for mac, c in codes.items()}


async def provision_form(
    request: web.Request,
    tenant: Tenant,
    *,
    status: int = 200,
    add_error: str = "",
    upload_error: str = "",
    values: dict[str, str] | None = None,
) -> web.Response:
    return await render(
        request,
        "provision.html",
        {
            "title": "Provision new devices",
            "nav": "provision",
            "tenant": tenant,
            "add_error": add_error,
            "upload_error": upload_error,
            "values": values or {"mac": "", "location": ""},
            "max_upload": request.app[SERVICES].settings.http.max_upload_bytes,
        },
        status=status,
    )


def qr_svg(text: str, label: str) -> str:
    """An inline SVG QR code (segno; error correction M), labelled for screen readers."""
    # viewBox without a fixed size, so CSS scales the symbol (screen and print) instead of
    # cropping it; a 4-module quiet zone as ISO/IEC 18004 asks, for reliable scans off paper.
    svg = segno.make(text, error="m").svg_inline(scale=3, border=4, omitsize=True)
    return svg.replace("<svg ", f'<svg role="img" aria-label="{escape(label)}" ', 1)
