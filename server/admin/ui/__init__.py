"""Admin web UI: server-rendered pages under /ui (jinja2), sessions and CSRF, for people.

Handlers call the Registry (and the OAuth service for users and sign-in) directly with the
session's `Principal`, so the UI has exactly the tenant scoping the REST API has. Every
state-changing request is a POST carrying the session's CSRF token; pages work without
JavaScript, and the small vendored script (static/admin.js) only adds conveniences: select all,
live sign-in status, print.

Routes are not in openapi.json (they are pages, not API); `/` is, as a redirect to /ui.

One module per page family: session, tenants, devices, uploads, codes, device, users, audit;
the sub-application and its middlewares in app.py, shared plumbing in common.py, pure state
in state.py.
"""

from __future__ import annotations

from server.admin.ui.app import sub_app
from server.admin.ui.common import CSRF_FIELD, PREFIX, SESSION_COOKIE, root_routes, routes

__all__ = ["routes", "root_routes", "sub_app", "PREFIX", "SESSION_COOKIE", "CSRF_FIELD"]
