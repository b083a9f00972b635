"""Admin UI over HTTP: every state-changing form needs the session's CSRF token, and a tenant
admin sees nothing of another tenant anywhere in the UI."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote

import pytest
from aiohttp import FormData

from server.registry.service import Principal
from server.web.keys import SERVICES
from tests.helpers.app import Api
from tests.helpers.ui import HREF_RE, UiClient, csv_form, db_snapshot

OP = Principal("test", "operator")
MAC_A, MAC_A2 = "02:00:5e:0a:00:01", "02:00:5e:0a:00:02"
MAC_B, MAC_B2 = "02:00:5e:0b:00:01", "02:00:5e:0b:00:02"
SEEN = "02:00:5e:5e:00:99"  # discovered on the network, not registered
PASSWORD = "correct horse battery staple"


@dataclass
class Site:
    api: Api
    base: str
    clients: list[UiClient] = field(default_factory=list)

    @property
    def db(self) -> Any:
        return self.api.settings.store.path

    def routes(self, method: str, prefix: str = "/ui") -> list[str]:
        out = []
        for r in self.api.client.app.router.routes():
            canon = r.resource.canonical if r.resource else ""
            if r.method == method and canon.startswith(prefix):
                out.append(canon)
        return sorted(set(out))

    async def client(self, username: str | None = None) -> UiClient:
        c = UiClient(self.base)
        self.clients.append(c)
        if username:
            page = await c.login(username, PASSWORD)
            assert page.status == 303, page.text
        return c


@pytest.fixture
async def site(api: Api) -> AsyncIterator[Site]:
    svc = api.client.app[SERVICES]
    reg = api.registry
    await reg.create_tenant(OP, "a", "Alpha Corp")
    await reg.create_tenant(OP, "b", "Bravo Corp")
    await reg.add_device(OP, "a", MAC_A, "Alpha lobby")
    await reg.add_device(OP, "a", MAC_A2, "Alpha hall")
    await reg.add_device(OP, "b", MAC_B, "Bravo lobby")
    await reg.add_device(OP, "b", MAC_B2, "Bravo hall")
    await reg.generate_codes(OP, "b", [MAC_B])
    await reg.generate_codes(OP, "a", [MAC_A])
    await svc.oauth.users.create(OP, "a", "alpha-user", "Alpha User", PASSWORD)
    await svc.oauth.users.create(OP, "b", "bravo-user", "Bravo User", PASSWORD)
    assert svc.admin is not None
    await svc.admin.create_admin("test", "ops", PASSWORD, "operator", None)
    await svc.admin.create_admin("test", "alice", PASSWORD, "admin", "a")
    svc.discovered.record(SEEN, source="dhcp", interface="lo", now=time.time(), vendor_class="acme")
    site = Site(api, str(api.client.make_url("/")))
    try:
        yield site
    finally:
        for c in site.clients:
            await c.close()


def fill(path: str, tenant: str, mac: str, user: str) -> str:
    return path.replace("{tenant}", tenant).replace("{mac}", mac).replace("{username}", user)


# A valid body for every state-changing form: with the right token each would change something.
def sample(path: str, mac: str) -> FormData:
    bodies: dict[str, dict[str, str]] = {
        "/ui/logout": {},
        "/ui/tenants": {"id": "c", "name": "Charlie"},
        "/ui/tenants/{tenant}/devices/add": {"mac": "02:00:5e:0c:00:01", "location": "x"},
        "/ui/tenants/{tenant}/provision/confirm": {"upload_id": "none"},
        "/ui/tenants/{tenant}/codes": {"mac": mac},
        "/ui/tenants/{tenant}/devices/{mac}/reset": {},
        "/ui/tenants/{tenant}/devices/{mac}/delete": {},
        "/ui/tenants/{tenant}/devices/{mac}/sign-out": {},
        "/ui/tenants/{tenant}/devices/{mac}/sign-in": {},
        "/ui/tenants/{tenant}/discovered/register": {"mac": SEEN, "location": "x"},
        "/ui/tenants/{tenant}/users": {
            "username": "new-user",
            "display_name": "New",
            "password": PASSWORD,
        },
        "/ui/tenants/{tenant}/users/{username}/disable": {},
        "/ui/tenants/{tenant}/users/{username}/enable": {},
    }
    if path == "/ui/tenants/{tenant}/provision/preview":
        return csv_form(b"MAC ID,Location\n02:00:5e:0c:00:02,x\n")
    assert path in bodies, f"add a sample body for the new form {path}"
    return FormData(list(bodies[path].items()))


async def test_every_state_changing_form_rejects_a_missing_or_wrong_csrf_token(
    site: Site,
) -> None:
    posts = site.routes("POST")
    assert len(posts) >= 14 and "/ui/login" in posts
    ops = await site.client("ops")
    before = db_snapshot(site.db)
    for path in posts:
        if path == "/ui/login":
            continue
        url = fill(path, "a", MAC_A, "alpha-user")
        for token in (None, "", "x" * 43, ops.csrf[:-1] + ("A" if ops.csrf[-1] != "A" else "B")):
            page = await ops.post(url, sample(path, MAC_A), csrf=token)
            assert page.status == 403, (path, token, page.status)
            assert "Form expired" in page.text and "nothing was changed" in page.text
        # A token in a header is accepted only when it is right, too.
        async with ops.http.post(
            url, data=sample(path, MAC_A), headers={"X-CSRF-Token": "wrong"}, allow_redirects=False
        ) as r:
            assert r.status == 403, path
    assert db_snapshot(site.db) == before, "a rejected form changed the store"

    # Still signed in (the rejected logout did not sign out), and the right token works.
    assert (await ops.get("/ui/tenants")).status == 200
    page = await ops.post(
        "/ui/tenants/a/devices/add", {"mac": "02:00:5e:0a:00:09", "location": "x"}
    )
    assert page.status == 303
    page = await ops.post("/ui/tenants/a/codes", {"mac": MAC_A2})
    assert page.status == 303
    assert db_snapshot(site.db)["codes"] != before["codes"]
    page = await ops.post(
        "/ui/tenants/a/provision/preview", csv_form(b"MAC ID\n02:00:5e:0c:00:03\n")
    )
    assert page.status == 200 and "Confirm import of 1 device" in page.text
    page = await ops.post("/ui/logout", {})
    assert page.status == 303 and (await ops.get("/ui/tenants")).status == 303


async def test_login_form_needs_its_double_submit_token(site: Site) -> None:
    c = await site.client()
    form = await c.get("/ui/login")
    good = form.csrf
    for token in (None, "", good[:-2]):
        page = await c.post(
            "/ui/login", {"username": "ops", "password": PASSWORD, "next": "/ui"}, csrf=token
        )
        assert page.status == 403 and "form expired" in page.text
        assert "imprint_session" not in page.headers.get("Set-Cookie", "")
    before = db_snapshot(site.db)["admin_sessions"]
    assert before == []
    # A token that does not match this browser's cookie (another browser's form) is refused too.
    other = await site.client()
    other_token = (await other.get("/ui/login")).csrf
    page = await c.post("/ui/login", {"username": "ops", "password": PASSWORD}, csrf=other_token)
    assert page.status == 403
    page = await c.post("/ui/login", {"username": "ops", "password": PASSWORD}, csrf=good)
    assert page.status == 303 and len(db_snapshot(site.db)["admin_sessions"]) == 1


async def test_a_tenant_admin_sees_no_other_tenant_anywhere_in_the_ui(site: Site) -> None:
    alice = await site.client("alice")
    before = db_snapshot(site.db)

    # Every page and every form of tenant b answers "not found", as a tenant that does not exist.
    for path in site.routes("GET", "/ui/tenants/{tenant}"):
        page = await alice.get(fill(path, "b", MAC_B, "bravo-user"))
        assert page.status == 404, (path, page.status)
        assert "Bravo" not in page.text and MAC_B not in page.text
    for path in site.routes("POST", "/ui/tenants/{tenant}"):
        page = await alice.post(fill(path, "b", MAC_B, "bravo-user"), sample(path, MAC_B))
        assert page.status == 404, (path, page.status, page.text[:300])
    # ... and tenant b's device through tenant a's URLs is not found either.
    for path in site.routes("GET", "/ui/tenants/{tenant}/devices/{mac}"):
        assert (await alice.get(fill(path, "a", MAC_B, "bravo-user"))).status == 404, path
    for path in site.routes("POST", "/ui/tenants/{tenant}/devices/{mac}"):
        page = await alice.post(fill(path, "a", MAC_B, "x"), sample(path, MAC_B))
        assert page.status == 404, path
    for suffix in ("disable", "enable"):
        page = await alice.post(f"/ui/tenants/a/users/bravo-user/{suffix}", {})
        assert page.status == 404
    assert (await alice.post("/ui/tenants/a/codes", {"mac": MAC_B})).status == 303
    assert (await alice.get("/ui/switch?tenant=b")).status == 404
    assert db_snapshot(site.db)["devices"] == before["devices"]
    assert db_snapshot(site.db)["codes"] == before["codes"]
    assert db_snapshot(site.db)["tenant_users"] == before["tenant_users"]

    # Crawl every page the admin can reach from the start page, plus searches, exports, the
    # technician sheet and the status endpoint: none mentions tenant b or site-wide data.
    forbidden = [MAC_B, MAC_B2, "Bravo", "bravo-user", "/ui/tenants/b", SEEN, "acme"]
    extra = [
        f"/ui/tenants/a/devices?q={MAC_B}",
        "/ui/tenants/a/devices?q=Bravo",
        "/ui/tenants/a/devices?tab=discovered",
        f"/ui/tenants/a/sheet?mac={MAC_B}&mac={MAC_A}",
        f"/ui/tenants/a/devices/{MAC_A}/status.json",
        "/ui/tenants/a/export.csv",
        "/ui/tenants/a/devices?tab=signed_in",
        "/ui/tenants/a/devices?tab=awaiting_sign_in",
    ]
    seen: set[str] = set()
    queue = ["/ui", *extra]
    while queue and len(seen) < 300:
        path = queue.pop(0)
        if path in seen or path.startswith("/ui/static"):
            continue
        seen.add(path)
        page = await alice.get(path)
        if page.status in (301, 302, 303):
            queue.append(page.location)
            continue
        assert page.status == 200, (path, page.status)
        text = page.text
        if "?q=" in path:  # the search box shows what was searched for, and nothing found
            assert "No devices matching" in text, path
            text = text.replace(unquote(path.split("?q=")[1]), "")
        for word in forbidden:
            assert word not in text, (path, word)
        queue += _links(page.text)
    assert len(seen) >= 15, sorted(seen)
    assert "/ui/tenants/a/audit" in seen and "/ui/tenants/a/users" in seen
    # The tenants page is the operators' view: a tenant admin is sent to their own devices.
    page = await alice.get("/ui/tenants")
    assert page.status == 303 and page.location == "/ui/tenants/a/devices"
    sheet = await alice.get(f"/ui/tenants/a/sheet?mac={MAC_B}&mac={MAC_A}")
    assert sheet.text.count("<svg") == 1 and MAC_A in sheet.text

    # The operator, by contrast, sees both tenants and the discovered MAC.
    ops = await site.client("ops")
    assert "Bravo Corp" in (await ops.get("/ui/tenants")).text
    assert SEEN in (await ops.get("/ui/tenants/a/devices?tab=discovered")).text


def _links(html: str) -> list[str]:
    return [m.replace("&amp;", "&") for m in HREF_RE.findall(html)]
