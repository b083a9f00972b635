"""Admin web UI: server-rendered pages under /ui (jinja2), sessions and CSRF, for people.

Handlers call the Registry (and the OAuth service for users and sign-in) directly with the
session's `Principal`, so the UI has exactly the tenant scoping the REST API has. Every
state-changing request is a POST carrying the session's CSRF token; pages work without
JavaScript, and the small vendored script (static/admin.js) only adds conveniences: select all,
live sign-in status, print.

Routes are not in openapi.json (they are pages, not API); `/` is, as a redirect to /ui.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
from collections import OrderedDict
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode, urlsplit

import aiohttp_jinja2
import jinja2
import segno
from aiohttp import web
from markupsafe import escape
from multidict import MultiDictProxy

from server.admin.auth import AdminAuth, AdminSession, tokens_match
from server.admin.store import AdminStore
from server.core.mac import MacError, normalize_mac
from server.core.ratelimit import FailureLimiter
from server.oauth.service import OAuthService
from server.registry.csvio import TEMPLATE, CsvError, RowError, parse_upload, write_export
from server.registry.model import Device, DeviceState, Tenant
from server.registry.service import ImportRow, Principal, Registry, iso
from server.store.base import Conflict, Invalid, NotFound, StoreError
from server.web.keys import SERVICES, NotReady
from server.web.routes import RouteTable

log = logging.getLogger("imprint.admin")
routes = RouteTable()

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
STATIC_DIR = Path(__file__).parent / "static"
TEMPLATE_DIR = Path(__file__).parent / "templates"

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


# ---- process-local UI state (pure: callers pass `now`) -------------------------------------------


@dataclass(frozen=True, slots=True)
class Flash:
    level: str  # "ok" | "error"
    text: str
    href: str = ""
    link: str = ""


class FlashBox:
    """One-shot messages shown on the page after a POST-redirect; bounded by session count."""

    def __init__(self, max_sessions: int = 1024) -> None:
        self.max_sessions = max_sessions
        self._box: OrderedDict[str, list[Flash]] = OrderedDict()

    def add(self, key: str, flash: Flash) -> None:
        self._box.setdefault(key, []).append(flash)
        self._box.move_to_end(key)
        while len(self._box) > self.max_sessions:
            self._box.popitem(last=False)

    def pop(self, key: str) -> list[Flash]:
        return self._box.pop(key, [])


@dataclass(frozen=True, slots=True)
class PendingUpload:
    id: str
    username: str
    tenant_id: str
    filename: str
    rows: tuple[ImportRow, ...]
    created: float


class PendingUploads:
    """Checked CSV uploads waiting for "Confirm import": bounded in count and age.

    Kept in memory between the preview and the confirmation so the file is parsed and checked
    once and the confirmation stores exactly what the preview showed.
    """

    def __init__(self, max_entries: int = 8, ttl_s: float = 900.0) -> None:
        self.max_entries = max_entries
        self.ttl_s = ttl_s
        self._items: OrderedDict[str, PendingUpload] = OrderedDict()

    def _expire(self, now: float) -> None:
        for key in [k for k, v in self._items.items() if now - v.created >= self.ttl_s]:
            del self._items[key]

    def put(self, upload: PendingUpload, now: float) -> None:
        """Keep `upload`; an earlier pending upload of the same admin and tenant is replaced."""
        self._expire(now)
        for key in [
            k
            for k, v in self._items.items()
            if v.username == upload.username and v.tenant_id == upload.tenant_id
        ]:
            del self._items[key]
        self._items[upload.id] = upload
        while len(self._items) > self.max_entries:
            self._items.popitem(last=False)

    def take(
        self, upload_id: str, username: str, tenant_id: str, now: float
    ) -> PendingUpload | None:
        """Remove and return the upload if it is this admin's, for this tenant, and not expired."""
        self._expire(now)
        item = self._items.get(upload_id)
        if item is None or item.username != username or item.tenant_id != tenant_id:
            return None
        del self._items[upload_id]
        return item

    def __len__(self) -> int:
        return len(self._items)


@dataclass
class UiState:
    flash: FlashBox = field(default_factory=FlashBox)
    uploads: PendingUploads = field(default_factory=PendingUploads)
    # Failed sign-ins: 10 in a burst per address then one every 10 s; 20 per username then one
    # every 30 s (the latter slows a spread-out guesser without locking the admin out for good).
    failures_by_source: FailureLimiter = field(default_factory=lambda: FailureLimiter(0.1, 10))
    failures_by_user: FailureLimiter = field(default_factory=lambda: FailureLimiter(1 / 30, 20))


UI = web.AppKey("imprint_admin_ui", UiState)


def safe_next(target: str | None) -> str:
    """A post-login destination inside the UI; anything else (other hosts, schemes) -> /ui."""
    if not target or any(ord(c) < 33 or ord(c) == 127 for c in target):
        return "/ui"  # control characters and spaces would end up in the Location header
    parts = urlsplit(target)
    if (
        parts.scheme
        or parts.netloc
        or "\\" in target
        or target.startswith("//")
        or not (parts.path == "/ui" or parts.path.startswith("/ui/"))
        or parts.path.startswith("/ui/login")
    ):
        return "/ui"
    return target


def page_count(total: int, size: int) -> int:
    return max(1, -(-total // size))


def size_text(n: int) -> str:
    """A byte count as people read it: 512 bytes, 64 KiB, 32 MiB."""
    for unit, size in (("MiB", 1 << 20), ("KiB", 1 << 10)):
        if n >= size:
            return f"{n / size:.3g} {unit}"
    return f"{n} bytes"


def when(value: str | None) -> str:
    """ISO 8601 UTC as people read it: 2026-11-27 12:00 UTC."""
    if not value:
        return ""
    return value.replace("T", " ")[:16] + " UTC"


# ---- helpers ---------------------------------------------------------------------------------


def _svc_auth(request: web.Request) -> AdminAuth:
    auth = request.app[SERVICES].admin
    if auth is None:
        raise NotReady("admin sessions are not available yet")
    return auth


def _reg(request: web.Request) -> Registry:
    return request.app[SERVICES].registry


def _session(request: web.Request) -> AdminSession:
    return request[SESSION]


def _who(request: web.Request) -> Principal:
    return request[SESSION].principal


def _oauth(request: web.Request) -> OAuthService:
    return request.app[SERVICES].oauth


def _admin_store(request: web.Request) -> AdminStore:
    return _svc_auth(request).store


def _secure(request: web.Request) -> bool:
    return request.secure or request.app[SERVICES].public_url.startswith("https://")


def _form(request: web.Request) -> MultiDictProxy[Any]:
    return request[FORM]


def _text(form: MultiDictProxy[Any], name: str, limit: int = 500) -> str:
    value = form.get(name, "")
    return value[:limit] if isinstance(value, str) else ""


def tenant_url(tenant_id: str, *parts: str, **query: Any) -> str:
    path = "/ui/tenants/" + quote(tenant_id) + "".join("/" + quote(p, safe=":@") for p in parts)
    clean = {
        k: v
        for k, v in query.items()
        if v not in (None, "") and not (k == "page" and str(v) == "1")
    }
    return path + ("?" + urlencode(clean, doseq=True) if clean else "")


def _flash(request: web.Request, level: str, text: str, href: str = "", link: str = "") -> None:
    request.app[UI].flash.add(_session(request).csrf_token, Flash(level, text, href, link))


def _see_other(location: str) -> web.Response:
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
        base["tenants"] = await _reg(request).list_tenants(session.principal)
    response = aiohttp_jinja2.render_template(
        template, request, {**base, **ctx}, app_key=JINJA, status=status
    )
    response.headers["Cache-Control"] = "no-store"
    return response


def _static_url(app: web.Application) -> Callable[[str], str]:
    def url(filename: str) -> str:
        return str(app.router["ui-static"].url_for(filename=filename))

    return url


# ---- the middleware: sessions, CSRF, HTML errors, security headers ----------------------------

_PUBLIC = frozenset({"/ui/login"})
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


def _is_ui(path: str) -> bool:
    return path == "/ui" or path.startswith("/ui/")


@web.middleware
async def ui_middleware(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    """For /ui: find the session, check CSRF on POST, and answer errors as HTML pages."""
    if not _is_ui(request.path):
        return await handler(request)
    try:
        response = await _guarded(request, handler)
    except web.HTTPRequestEntityTooLarge:
        limit = request.app[SERVICES].settings.http.max_upload_bytes
        response = await _error_page(
            request,
            413,
            "File too large",
            f"The upload is larger than the limit of {size_text(limit)}. Split the file, "
            "or raise [http] max_upload_bytes.",
        )
    except web.HTTPException as e:
        if e.status < 400:
            raise
        response = await _error_page(request, e.status, e.reason, e.text or "")
    except NotFound as e:
        response = await _error_page(request, 404, "Not found", str(e))
    except Invalid as e:
        response = await _error_page(request, 422, "Not possible", str(e))
    except Conflict as e:
        response = await _error_page(request, 409, "Not possible", str(e))
    except StoreError as e:
        response = await _error_page(request, 400, "Not possible", str(e))
    except NotReady:
        response = await _error_page(
            request, 503, "Starting or stopping", "The server is not ready; try again shortly."
        )
    except Exception:
        log.exception("unhandled error on %s %s", request.method, request.path)
        response = await _error_page(
            request, 500, "Something went wrong", "An internal error occurred; see the server log."
        )
    for k, v in _SECURITY_HEADERS.items():
        response.headers.setdefault(k, v)
    return response


async def _guarded(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    if request.path.startswith("/ui/static/") or request.path in _PUBLIC:
        return await handler(request)
    token = request.cookies.get(SESSION_COOKIE)
    lookup = await _svc_auth(request).lookup(token)
    if lookup.session is None:
        query = {"reason": lookup.problem or "missing"}
        if request.method == "GET":
            query["next"] = request.path_qs
        response = _see_other("/ui/login?" + urlencode(query))
        if token:
            response.del_cookie(SESSION_COOKIE, path="/ui")
        return response
    request[SESSION] = lookup.session
    request[SESSION_TOKEN] = token or ""
    if request.method not in ("GET", "HEAD"):
        form = await request.post()
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


# ---- sign in and out -------------------------------------------------------------------------


@routes.route(
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
        secure=_secure(request),
        samesite="Strict",
    )


@routes.route(
    "GET", "/ui/login", summary="Admin sign-in page", tag="ui", auth="none", in_schema=False
)
async def login_page(request: web.Request) -> web.Response:
    lookup = await _svc_auth(request).lookup(request.cookies.get(SESSION_COOKIE))
    if lookup.session is not None:
        return _see_other(safe_next(request.query.get("next")))
    return await _login_form(request, status=200)


async def _login_form(
    request: web.Request, *, status: int, error: str = "", username: str = ""
) -> web.Response:
    # Login CSRF (a forged sign-in into the attacker's account): a double-submit token, since
    # there is no session yet. Reuse the cookie so that two open tabs both keep working.
    nonce = request.cookies.get(LOGIN_COOKIE, "")
    if len(nonce) < 32:
        nonce = secrets.token_urlsafe(32)
    reason = request.query.get("reason", "")
    response = await render(
        request,
        "login.html",
        {
            "title": "Sign in",
            "login_csrf": nonce,
            "next": safe_next(request.query.get("next")),
            "notice": "" if error else LOGIN_REASONS.get(reason, ""),
            "error": error,
            "username": username,
        },
        status=status,
    )
    _cookie(response, request, LOGIN_COOKIE, nonce, "/ui/login")
    return response


@routes.route("POST", "/ui/login", summary="Admin sign-in", tag="ui", auth="none", in_schema=False)
async def login(request: web.Request) -> web.Response:
    form = await request.post()
    username = _text(form, "username", 200)
    password = _text(form, "password", 2000)
    if not tokens_match(request.cookies.get(LOGIN_COOKIE, ""), _text(form, CSRF_FIELD)):
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
    result = await _svc_auth(request).login(username, password, source)
    if result is None:
        ui.failures_by_source.record(source, now)
        ui.failures_by_user.record(user_key, now)
        log.info("admin sign-in failed for %r from %s", user_key, source)
        return await _login_form(
            request, status=401, error="Wrong username or password.", username=username
        )
    token, session = result
    log.info("admin %s signed in from %s", session.username, source)
    response = _see_other(safe_next(_text(form, "next", 2000)))
    _cookie(response, request, SESSION_COOKIE, token, "/ui")
    response.del_cookie(LOGIN_COOKIE, path="/ui/login")
    return response


@routes.route(
    "POST", "/ui/logout", summary="Admin sign-out", tag="ui", auth="session", in_schema=False
)
async def logout(request: web.Request) -> web.Response:
    await _svc_auth(request).logout(request[SESSION_TOKEN], _session(request))
    response = _see_other("/ui/login?reason=logged_out")
    response.del_cookie(SESSION_COOKIE, path="/ui")
    return response


@routes.route("GET", "/ui", summary="Admin home", tag="ui", auth="session", in_schema=False)
async def home(request: web.Request) -> web.Response:
    session = _session(request)
    if session.role == "operator" or session.tenant_id is None:
        return _see_other("/ui/tenants")
    return _see_other(tenant_url(session.tenant_id, "devices"))


@routes.route(
    "GET", "/ui/switch", summary="Go to a tenant", tag="ui", auth="session", in_schema=False
)
async def switch(request: web.Request) -> web.Response:
    tenant = await _reg(request).get_tenant(_who(request), request.query.get("tenant", ""))
    return _see_other(tenant_url(tenant.id, "devices"))


@routes.route(
    "GET", "/ui/template.csv", summary="CSV template", tag="ui", auth="session", in_schema=False
)
async def template_csv(request: web.Request) -> web.Response:
    return web.Response(
        text=TEMPLATE,
        content_type="text/csv",
        charset="utf-8",
        headers={"Content-Disposition": 'attachment; filename="imprint-devices-template.csv"'},
    )


# ---- tenants (operators) ---------------------------------------------------------------------


@routes.route("GET", "/ui/tenants", summary="Tenants", tag="ui", auth="session", in_schema=False)
async def tenants_page(request: web.Request) -> web.Response:
    return await _tenants(request)


async def _tenants(
    request: web.Request,
    *,
    status: int = 200,
    error: str = "",
    values: dict[str, str] | None = None,
) -> web.Response:
    session = _session(request)
    if session.role != "operator":
        if session.tenant_id:
            return _see_other(tenant_url(session.tenant_id, "devices"))
        raise NotFound("only operators see the tenants page")
    tenants = await _reg(request).list_tenants(session.principal)
    counts = await _admin_store(request).tenant_device_counts()
    admins = await _admin_store(request).list_admins()
    return await render(
        request,
        "tenants.html",
        {
            "title": "Tenants",
            "nav": "tenants",
            "rows": [(t, counts.get(t.id, 0)) for t in tenants],
            "admins": admins,
            "error": error,
            "values": values or {"id": "", "name": ""},
        },
        status=status,
    )


@routes.route(
    "POST", "/ui/tenants", summary="Create a tenant", tag="ui", auth="session", in_schema=False
)
async def create_tenant(request: web.Request) -> web.Response:
    form = _form(request)
    values = {"id": _text(form, "id", 100).strip(), "name": _text(form, "name", 200)}
    try:
        tenant = await _reg(request).create_tenant(_who(request), values["id"], values["name"])
    except (Invalid, Conflict) as e:
        return await _tenants(
            request, status=409 if isinstance(e, Conflict) else 422, error=str(e), values=values
        )
    _flash(request, "ok", f"Created tenant {tenant.name} ({tenant.id}).")
    return _see_other("/ui/tenants")


# ---- devices ---------------------------------------------------------------------------------


async def _tenant(request: web.Request) -> Tenant:
    return await _reg(request).get_tenant(_who(request), request.match_info["tenant"])


def _int_query(request: web.Request, name: str, default: int, lo: int = 1) -> int:
    try:
        return max(lo, int(request.query.get(name, default)))
    except ValueError:
        return default


async def _current_codes(
    request: web.Request, tenant_id: str, devices: Sequence[Device]
) -> dict[str, tuple[str, str]]:
    """mac -> (code XXXX-XXXX, expires) for the devices that have a usable code now."""
    waiting = [d.mac for d in devices if d.state == DeviceState.AWAITING_ACTIVATION]
    if not waiting:
        return {}
    codes = await _reg(request).provisioning.current_codes(tenant_id, waiting)
    return {mac: (c.code, c.expires_at) for mac, c in codes.items()}


@routes.route(
    "GET",
    "/ui/tenants/{tenant}/devices",
    summary="Devices",
    tag="ui",
    auth="session",
    in_schema=False,
)
async def devices_page(request: web.Request) -> web.Response:
    tenant = await _tenant(request)
    session = _session(request)
    tabs = [t for t in TABS if t[0] != DISCOVERED or session.role == "operator"]
    tab = request.query.get("tab", DeviceState.AWAITING_ACTIVATION.value)
    if tab not in dict(tabs):
        tab = DeviceState.AWAITING_ACTIVATION.value
    q = request.query.get("q", "").strip()[:100]
    page = _int_query(request, "page", 1)
    counts = await _admin_store(request).state_counts(tenant.id)
    rows: list[dict[str, Any]] = []
    discovered: list[dict[str, Any]] = []
    if tab == DISCOVERED:
        svc = request.app[SERVICES]
        index = _reg(request).index
        needle = q.lower()
        seen = [
            e
            for e in svc.discovered.recent()
            if e.mac not in index
            and (not needle or needle in e.mac or needle in e.vendor_class.lower())
        ]
        total = len(seen)
        for e in seen[(page - 1) * PAGE_SIZE : page * PAGE_SIZE]:
            discovered.append(
                {
                    "mac": e.mac,
                    "vendor_class": e.vendor_class,
                    "source": e.source,
                    "interface": e.interface,
                    "last_seen": iso(datetime.fromtimestamp(e.last_seen, UTC)),
                    "count": e.count,
                }
            )
    else:
        total, devices = await _reg(request).list_devices(
            _who(request),
            tenant.id,
            state=tab,
            q=q or None,
            limit=PAGE_SIZE,
            offset=(page - 1) * PAGE_SIZE,
        )
        codes = await _current_codes(request, tenant.id, devices)
        for d in devices:
            code, expires = codes.get(d.mac, ("", ""))
            rows.append({"d": d, "code": code, "expires": expires})
    pages = page_count(total, PAGE_SIZE)
    return await render(
        request,
        "devices.html",
        {
            "title": f"Devices: {dict(tabs)[tab]}",
            "nav": "devices",
            "tenant": tenant,
            "tabs": [
                (k, label, counts.get(k, 0) if k != DISCOVERED else None) for k, label in tabs
            ],
            "tab": tab,
            "q": q,
            "page": page,
            "pages": pages,
            "total": total,
            "first": (page - 1) * PAGE_SIZE + 1,
            "rows": rows,
            "discovered": discovered,
            "prev_url": tenant_url(tenant.id, "devices", tab=tab, q=q, page=page - 1)
            if page > 1
            else "",
            "next_url": tenant_url(tenant.id, "devices", tab=tab, q=q, page=page + 1)
            if page < pages
            else "",
            "awaiting": counts.get(DeviceState.AWAITING_ACTIVATION.value, 0),
        },
    )


@routes.route(
    "GET",
    "/ui/tenants/{tenant}/provision",
    summary="Provision new devices",
    tag="ui",
    auth="session",
    in_schema=False,
)
async def provision_page(request: web.Request) -> web.Response:
    return await _provision(request, await _tenant(request))


async def _provision(
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


@routes.route(
    "POST",
    "/ui/tenants/{tenant}/devices/add",
    summary="Register one device",
    tag="ui",
    auth="session",
    in_schema=False,
)
async def add_device(request: web.Request) -> web.Response:
    tenant = await _tenant(request)
    form = _form(request)
    values = {"mac": _text(form, "mac", 100), "location": _text(form, "location", 1000)}
    try:
        device = await _reg(request).add_device(
            _who(request), tenant.id, values["mac"], values["location"]
        )
    except (Invalid, Conflict) as e:
        return await _provision(
            request,
            tenant,
            status=409 if isinstance(e, Conflict) else 422,
            add_error=str(e),
            values=values,
        )
    _flash(
        request,
        "ok",
        f"Registered {device.mac}" + (f" at {device.location}" if device.location else "") + ".",
        tenant_url(tenant.id, "devices", device.mac),
        "Open the device",
    )
    return _see_other(tenant_url(tenant.id, "devices", tab=DeviceState.AWAITING_ACTIVATION.value))


@routes.route(
    "POST",
    "/ui/tenants/{tenant}/provision/preview",
    summary="Check a CSV upload",
    tag="ui",
    auth="session",
    in_schema=False,
)
async def upload_preview(request: web.Request) -> web.Response:
    tenant = await _tenant(request)
    upload = _form(request).get("file")
    if not isinstance(upload, web.FileField):
        return await _provision(
            request, tenant, status=422, upload_error="Choose a CSV file to upload."
        )
    data = await asyncio.to_thread(upload.file.read)
    filename = (upload.filename or "upload.csv")[:200]
    errors: list[RowError] = []
    message = ""
    rows: list[ImportRow] = []
    try:
        rows = await asyncio.to_thread(parse_upload, data)
        await _reg(request).import_devices(_who(request), tenant.id, rows, dry_run=True)
    except CsvError as e:
        message, errors = str(e), e.errors
    except Invalid as e:  # MACs registered already
        message = str(e)
        errors = [
            RowError(
                int(str(d.get("row", 0))),
                str(d.get("column", "")),
                str(d.get("value", "")),
                str(d.get("message", "")),
            )
            for d in e.details
        ]
    if message:
        return await render(
            request,
            "preview.html",
            {
                "title": "Upload has errors",
                "nav": "provision",
                "tenant": tenant,
                "filename": filename,
                "message": message,
                "errors": errors,
                "rows": [],
                "count": 0,
                "upload_id": "",
            },
            status=422,
        )
    pending = PendingUpload(
        secrets.token_urlsafe(16),
        _session(request).username,
        tenant.id,
        filename,
        tuple(rows),
        asyncio.get_running_loop().time(),
    )
    request.app[UI].uploads.put(pending, pending.created)
    return await render(
        request,
        "preview.html",
        {
            "title": "Check and confirm the import",
            "nav": "provision",
            "tenant": tenant,
            "filename": filename,
            "message": "",
            "errors": [],
            "rows": rows[:PREVIEW_ROWS],
            "count": len(rows),
            "upload_id": pending.id,
        },
    )


@routes.route(
    "POST",
    "/ui/tenants/{tenant}/provision/confirm",
    summary="Import a checked CSV upload",
    tag="ui",
    auth="session",
    in_schema=False,
)
async def upload_confirm(request: web.Request) -> web.Response:
    tenant = await _tenant(request)
    pending = request.app[UI].uploads.take(
        _text(_form(request), "upload_id", 100),
        _session(request).username,
        tenant.id,
        asyncio.get_running_loop().time(),
    )
    if pending is None:
        return await _provision(
            request,
            tenant,
            status=409,
            upload_error="This preview has expired or was already imported. Upload the file again.",
        )
    try:
        n = await _reg(request).import_devices(_who(request), tenant.id, pending.rows)
    except (Invalid, Conflict) as e:
        return await _provision(
            request,
            tenant,
            status=409,
            upload_error=f"Nothing was imported: {e}. Upload the file again to see which rows.",
        )
    _flash(request, "ok", f"Imported {n:,} device(s) from {pending.filename}.")
    return _see_other(tenant_url(tenant.id, "devices", tab=DeviceState.AWAITING_ACTIVATION.value))


@routes.route(
    "POST",
    "/ui/tenants/{tenant}/codes",
    summary="Generate verification codes",
    tag="ui",
    auth="session",
    in_schema=False,
)
async def generate_codes(request: web.Request) -> web.Response:
    tenant = await _tenant(request)
    form = _form(request)
    back = tenant_url(
        tenant.id,
        "devices",
        tab=DeviceState.AWAITING_ACTIVATION.value,
        q=_text(form, "q", 100),
        page=_text(form, "page", 10),
    )
    all_waiting = form.get("all") == "1"
    macs = [m for m in form.getall("mac", []) if isinstance(m, str)]
    if not all_waiting and not macs:
        _flash(request, "error", "Select at least one device, or choose “all”.")
        return _see_other(back)
    try:
        issued = await _reg(request).generate_codes(
            _who(request), tenant.id, None if all_waiting else macs, all_waiting
        )
    except Invalid as e:
        problems = "; ".join(f"{d.get('value')}: {d.get('message')}" for d in e.details[:5])
        _flash(
            request, "error", f"No codes were issued: {e}" + (f" ({problems})" if problems else "")
        )
        return _see_other(back)
    if issued:
        sheet = (
            tenant_url(tenant.id, "sheet", mac=[c.mac for c in issued])
            if len(issued) <= SHEET_SIZE
            else tenant_url(tenant.id, "sheet")
        )
        _flash(
            request,
            "ok",
            f"Issued {len(issued):,} verification code(s), valid until {when(issued[0].expires_at)}. "
            "Earlier codes of these devices no longer work.",
            sheet,
            "Print the technician sheet",
        )
    else:
        _flash(request, "ok", "No device is awaiting activation: no codes were issued.")
    return _see_other(back)


@routes.route(
    "GET",
    "/ui/tenants/{tenant}/export.csv",
    summary="Export devices (CSV)",
    tag="ui",
    auth="session",
    in_schema=False,
)
async def export_csv(request: web.Request) -> web.Response:
    tenant = await _tenant(request)
    state = request.query.get("state") or None
    rows = await _reg(request).export(_who(request), tenant.id, state)
    text = await asyncio.to_thread(write_export, rows)
    return web.Response(
        text=text,
        content_type="text/csv",
        charset="utf-8",
        headers={
            "Content-Disposition": f'attachment; filename="imprint-{tenant.id}-devices.csv"',
            "Cache-Control": "no-store",
        },
    )


def qr_svg(text: str, label: str) -> str:
    """An inline SVG QR code (segno; error correction M), labelled for screen readers."""
    # viewBox without a fixed size, so CSS scales the symbol (screen and print) instead of
    # cropping it; a 4-module quiet zone as ISO/IEC 18004 asks, for reliable scans off paper.
    svg = segno.make(text, error="m").svg_inline(scale=3, border=4, omitsize=True)
    return svg.replace("<svg ", f'<svg role="img" aria-label="{escape(label)}" ', 1)


def provision_qr_text(mac: str, code: str) -> str:
    """What a sheet's QR code says: the device and its code, in one scannable line."""
    return "imprint:provision?" + urlencode({"mac": mac, "code": code}, safe=":")


@routes.route(
    "GET",
    "/ui/tenants/{tenant}/sheet",
    summary="Technician sheet",
    tag="ui",
    auth="session",
    in_schema=False,
)
async def sheet(request: web.Request) -> web.Response:
    tenant = await _tenant(request)
    registry = _reg(request)
    who = _who(request)
    wanted = request.query.getall("mac", [])
    page = _int_query(request, "page", 1)
    if wanted:
        macs: list[str] = []
        for raw in wanted[:SHEET_SIZE]:
            try:
                macs.append(normalize_mac(raw))
            except MacError:
                continue
        found = await registry.store.devices_in(tenant.id, macs)
        devices = [found[m] for m in macs if m in found]
        total = len(devices)
    else:
        total, devices = await registry.list_devices(
            who,
            tenant.id,
            state=DeviceState.AWAITING_ACTIVATION.value,
            limit=SHEET_SIZE,
            offset=(page - 1) * SHEET_SIZE,
        )
    codes = await _current_codes(request, tenant.id, devices)

    def cards() -> list[dict[str, str]]:
        out = []
        for d in devices:
            code, expires = codes.get(d.mac, ("", ""))
            if not code:
                continue
            out.append(
                {
                    "mac": d.mac,
                    "location": d.location,
                    "code": code,
                    "expires": expires,
                    "qr": qr_svg(provision_qr_text(d.mac, code), f"QR code for {d.mac}"),
                }
            )
        return out

    items = await asyncio.to_thread(cards)
    pages = 1 if wanted else page_count(total, SHEET_SIZE)
    return await render(
        request,
        "sheet.html",
        {
            "title": f"Technician sheet: {tenant.name}",
            "nav": "devices",
            "tenant": tenant,
            "cards": items,
            "without_code": len(devices) - len(items),
            "page": page,
            "pages": pages,
            "prev_url": tenant_url(tenant.id, "sheet", page=page - 1)
            if page > 1 and not wanted
            else "",
            "next_url": tenant_url(tenant.id, "sheet", page=page + 1)
            if page < pages and not wanted
            else "",
        },
    )


# ---- one device ------------------------------------------------------------------------------


async def _device(request: web.Request) -> tuple[Tenant, Device]:
    tenant = await _tenant(request)
    try:
        device = await _reg(request).get_device(_who(request), tenant.id, request.match_info["mac"])
    except Invalid as e:
        raise NotFound(str(e)) from e
    return tenant, device


@routes.route(
    "GET",
    "/ui/tenants/{tenant}/devices/{mac}",
    summary="One device",
    tag="ui",
    auth="session",
    in_schema=False,
)
async def device_page(request: web.Request) -> web.Response:
    tenant, device = await _device(request)
    confirm = request.query.get("confirm", "")
    if confirm not in ("reset", "delete", "sign-out"):
        confirm = ""
    codes = await _current_codes(request, tenant.id, [device])
    code, expires = codes.get(device.mac, ("", ""))
    return await render(
        request,
        "device.html",
        {
            "title": f"Device {device.mac}",
            "nav": "devices",
            "tenant": tenant,
            "d": device,
            "code": code,
            "expires": expires,
            "confirm": confirm,
        },
    )


@routes.route(
    "GET",
    "/ui/tenants/{tenant}/devices/{mac}/status.json",
    summary="A device's state, for the live sign-in status",
    tag="ui",
    auth="session",
    in_schema=False,
)
async def device_status(request: web.Request) -> web.Response:
    _, device = await _device(request)
    return web.json_response(
        {
            "mac": device.mac,
            "state": device.state.value,
            "label": STATE_LABELS[device.state.value],
            "signed_in_user": device.signed_in_user,
        },
        headers={"Cache-Control": "no-store"},
    )


@routes.route(
    "POST",
    "/ui/tenants/{tenant}/devices/{mac}/reset",
    summary="Reset a device",
    tag="ui",
    auth="session",
    in_schema=False,
)
async def reset_device(request: web.Request) -> web.Response:
    tenant, device = await _device(request)
    await _reg(request).reset_device(_who(request), tenant.id, device.mac)
    _flash(
        request,
        "ok",
        f"Reset {device.mac}: it is awaiting activation again and needs a new verification code.",
    )
    return _see_other(tenant_url(tenant.id, "devices", device.mac))


@routes.route(
    "POST",
    "/ui/tenants/{tenant}/devices/{mac}/delete",
    summary="Delete a device",
    tag="ui",
    auth="session",
    in_schema=False,
)
async def delete_device(request: web.Request) -> web.Response:
    tenant, device = await _device(request)
    await _reg(request).delete_device(_who(request), tenant.id, device.mac)
    _flash(request, "ok", f"Deleted {device.mac}.")
    return _see_other(tenant_url(tenant.id, "devices", tab=device.state.value))


@routes.route(
    "POST",
    "/ui/tenants/{tenant}/devices/{mac}/sign-out",
    summary="Sign a device out",
    tag="ui",
    auth="session",
    in_schema=False,
)
async def sign_out(request: web.Request) -> web.Response:
    tenant, device = await _device(request)
    await _oauth(request).sign_out(_who(request), tenant.id, device.mac)
    _flash(request, "ok", f"Signed {device.mac} out; it shows its sign-in page again.")
    return _see_other(tenant_url(tenant.id, "devices", device.mac))


@routes.route(
    "POST",
    "/ui/tenants/{tenant}/devices/{mac}/sign-in",
    summary="Sign in a user on a device",
    tag="ui",
    auth="session",
    in_schema=False,
)
async def sign_in(request: web.Request) -> web.Response:
    tenant, device = await _device(request)
    ctx: dict[str, Any] = {
        "title": f"Sign in a user on {device.mac}",
        "nav": "devices",
        "tenant": tenant,
        "d": device,
        "error": "",
        "code": None,
        "qr": "",
        "status_url": tenant_url(tenant.id, "devices", device.mac, "status.json"),
    }
    try:
        code = await _oauth(request).sign_in_code(_who(request), tenant.id, device.mac)
    except Conflict as e:
        ctx["error"] = str(e)
        return await render(request, "sign_in.html", ctx, status=409)
    ctx["code"] = code
    ctx["qr"] = await asyncio.to_thread(
        qr_svg, code.verification_uri_complete, "QR code of the sign-in link"
    )
    return await render(request, "sign_in.html", ctx)


@routes.route(
    "POST",
    "/ui/tenants/{tenant}/discovered/register",
    summary="Register a discovered device",
    tag="ui",
    auth="session",
    in_schema=False,
)
async def register_discovered(request: web.Request) -> web.Response:
    tenant = await _tenant(request)
    if _session(request).role != "operator":
        raise NotFound("only operators see discovered devices")
    form = _form(request)
    back = tenant_url(tenant.id, "devices", tab=DISCOVERED)
    try:
        device = await _reg(request).add_device(
            _who(request), tenant.id, _text(form, "mac", 100), _text(form, "location", 1000)
        )
    except (Invalid, Conflict) as e:
        _flash(request, "error", f"Not registered: {e}")
        return _see_other(back)
    request.app[SERVICES].discovered.remove(device.mac)
    _flash(
        request,
        "ok",
        f"Registered {device.mac} in {tenant.name}; it is awaiting activation.",
        tenant_url(tenant.id, "devices", device.mac),
        "Open the device",
    )
    return _see_other(back)


# ---- tenant users ----------------------------------------------------------------------------


@routes.route(
    "GET",
    "/ui/tenants/{tenant}/users",
    summary="Tenant users",
    tag="ui",
    auth="session",
    in_schema=False,
)
async def users_page(request: web.Request) -> web.Response:
    return await _users(request, await _tenant(request))


async def _users(
    request: web.Request,
    tenant: Tenant,
    *,
    status: int = 200,
    error: str = "",
    values: dict[str, str] | None = None,
) -> web.Response:
    users = await _oauth(request).users.list(_who(request), tenant.id)
    return await render(
        request,
        "users.html",
        {
            "title": "Users",
            "nav": "users",
            "tenant": tenant,
            "users": users,
            "error": error,
            "values": values or {"username": "", "display_name": ""},
        },
        status=status,
    )


@routes.route(
    "POST",
    "/ui/tenants/{tenant}/users",
    summary="Create a tenant user",
    tag="ui",
    auth="session",
    in_schema=False,
)
async def create_user(request: web.Request) -> web.Response:
    tenant = await _tenant(request)
    form = _form(request)
    values = {
        "username": _text(form, "username", 200),
        "display_name": _text(form, "display_name", 200),
    }
    try:
        user = await _oauth(request).users.create(
            _who(request),
            tenant.id,
            values["username"],
            values["display_name"],
            _text(form, "password", 2000),
        )
    except (Invalid, Conflict) as e:
        return await _users(
            request,
            tenant,
            status=409 if isinstance(e, Conflict) else 422,
            error=str(e),
            values=values,
        )
    _flash(request, "ok", f"Created user {user.username}.")
    return _see_other(tenant_url(tenant.id, "users"))


@routes.route(
    "POST",
    "/ui/tenants/{tenant}/users/{username}/disable",
    summary="Disable a tenant user",
    tag="ui",
    auth="session",
    in_schema=False,
)
async def disable_user(request: web.Request) -> web.Response:
    return await _set_user_disabled(request, True)


@routes.route(
    "POST",
    "/ui/tenants/{tenant}/users/{username}/enable",
    summary="Enable a tenant user",
    tag="ui",
    auth="session",
    in_schema=False,
)
async def enable_user(request: web.Request) -> web.Response:
    return await _set_user_disabled(request, False)


async def _set_user_disabled(request: web.Request, disabled: bool) -> web.Response:
    tenant = await _tenant(request)
    user = await _oauth(request).users.update(
        _who(request), tenant.id, request.match_info["username"], disabled=disabled
    )
    _flash(
        request,
        "ok",
        f"Disabled {user.username}; devices signed in as this user were signed out."
        if disabled
        else f"Enabled {user.username}.",
    )
    return _see_other(tenant_url(tenant.id, "users"))


# ---- audit -----------------------------------------------------------------------------------


@routes.route(
    "GET",
    "/ui/tenants/{tenant}/audit",
    summary="Audit log",
    tag="ui",
    auth="session",
    in_schema=False,
)
async def audit_page(request: web.Request) -> web.Response:
    tenant = await _tenant(request)
    before = request.query.get("before_id")
    before_id = int(before) if before and before.isdigit() else None
    entries = await _reg(request).audit(
        _who(request), tenant.id, limit=PAGE_SIZE, before_id=before_id
    )
    return await render(
        request,
        "audit.html",
        {
            "title": "Audit log",
            "nav": "audit",
            "tenant": tenant,
            "entries": entries,
            "older_url": tenant_url(tenant.id, "audit", before_id=entries[-1].id)
            if len(entries) == PAGE_SIZE
            else "",
            "newest_url": tenant_url(tenant.id, "audit") if before_id else "",
        },
    )


# ---- wiring ----------------------------------------------------------------------------------


async def _admin_ctx(app: web.Application) -> AsyncIterator[None]:
    """After the store opens: the admin session service over the same store and clock."""
    svc = app[SERVICES]
    registry = svc.registry
    svc.admin = AdminAuth(AdminStore(registry.store), clock=registry.clock)
    try:
        yield
    finally:
        svc.admin = None


def setup(app: web.Application) -> None:
    """Templates, static files, the UI middleware and the session service (after the store)."""
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
        static=_static_url(app),
        tenant_url=tenant_url,
        state_labels=STATE_LABELS,
        csrf_field=CSRF_FIELD,
    )
    app[UI] = UiState()
    app.router.add_static("/ui/static", STATIC_DIR, name="ui-static", append_version=True)
    app.middlewares.append(ui_middleware)
    app.cleanup_ctx.append(_admin_ctx)


__all__ = ["routes", "setup", "ui_middleware", "SESSION_COOKIE", "CSRF_FIELD"]
