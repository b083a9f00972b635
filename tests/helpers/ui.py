"""A browser-like HTTP client for the admin UI: its own cookie jar, sign-in, CSRF token scraping.

Used by the integration tests over a real loopback socket; the Playwright tests drive a real
browser instead.
"""

from __future__ import annotations

import re
import sqlite3
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aiohttp import ClientSession, CookieJar, FormData

CSRF_RE = re.compile(r'name="csrf_token" value="([^"]*)"')
HREF_RE = re.compile(r'href="(/ui[^"#]*)"')


@dataclass
class Page:
    status: int
    text: str
    headers: Any

    @property
    def location(self) -> str:
        return str(self.headers.get("Location", ""))

    @property
    def csrf(self) -> str:
        m = CSRF_RE.search(self.text)
        assert m, f"no CSRF token on the page (status {self.status})"
        return m.group(1)


class UiClient:
    """One browser: cookies persist between requests; redirects are not followed."""

    def __init__(self, base_url: str) -> None:
        self.http = ClientSession(base_url=base_url, cookie_jar=CookieJar(unsafe=True))
        self.csrf = ""

    async def close(self) -> None:
        await self.http.close()

    async def get(self, path: str, **kw: Any) -> Page:
        async with self.http.get(path, allow_redirects=False, **kw) as r:
            page = Page(r.status, await r.text(errors="replace"), r.headers)
        m = CSRF_RE.search(page.text)
        if m and "/ui/login" not in path:
            self.csrf = m.group(1)
        return page

    async def post(self, path: str, data: Any = None, *, csrf: str | None = "session") -> Page:
        """POST a form; `csrf` = "session" sends the session's token, None sends none."""
        form = data if isinstance(data, FormData) else FormData(list((data or {}).items()))
        if csrf == "session":
            form.add_field("csrf_token", self.csrf)
        elif csrf is not None:
            form.add_field("csrf_token", csrf)
        async with self.http.post(path, data=form, allow_redirects=False) as r:
            return Page(r.status, await r.text(errors="replace"), r.headers)

    async def login(self, username: str, password: str, next_path: str = "/ui") -> Page:
        form = await self.get("/ui/login")
        assert form.status == 200, form.status
        page = await self.post(
            "/ui/login",
            {"username": username, "password": password, "next": next_path},
            csrf=form.csrf,
        )
        if page.status == 303:
            await self.get("/ui/tenants")  # any page: picks up the session's CSRF token
        return page


def csv_form(content: bytes, filename: str = "devices.csv", mode: str | None = None) -> FormData:
    form = FormData()
    form.add_field("file", content, filename=filename, content_type="text/csv")
    if mode is not None:
        form.add_field("mode", mode)
    return form


def db_snapshot(db: Path) -> dict[str, list[tuple[Any, ...]]]:
    """Every row of the tables a UI form can change, read by an independent connection."""
    tables = {
        "tenants": "SELECT * FROM tenants ORDER BY id",
        "devices": "SELECT * FROM devices ORDER BY mac",
        "codes": "SELECT * FROM codes ORDER BY mac",
        "tenant_users": "SELECT * FROM tenant_users ORDER BY username",
        "admins": "SELECT * FROM admins ORDER BY username",
        "admin_sessions": "SELECT id_hash, username, csrf_token, created_at FROM admin_sessions ORDER BY id_hash",
        "grants": "SELECT * FROM oauth_device_grants ORDER BY id",
        "audit": "SELECT * FROM audit ORDER BY id",
    }
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        return {name: con.execute(sql).fetchall() for name, sql in tables.items()}
    finally:
        con.close()
