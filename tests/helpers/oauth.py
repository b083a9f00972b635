"""Helpers for the remote sign-in tests: a provisioned device as an OAuth client, and a browser
that fills in the verification page's forms the way a person would (parsing the HTML)."""

from __future__ import annotations

import base64
from dataclasses import dataclass, field
from html.parser import HTMLParser
from typing import Any
from urllib.parse import quote_plus, urlsplit

import aiohttp

from tests.helpers.app import Api

DEVICE_GRANT = "urn:ietf:params:oauth:grant-type:device_code"
PASSWORD = "correct horse battery staple"


@dataclass(frozen=True)
class DeviceClient:
    mac: str
    tenant: str
    client_id: str
    secret: str


async def make_tenant(api: Api, tenant: str, name: str) -> None:
    status, body = await api.call("POST", "/api/v1/tenants", json={"id": tenant, "name": name})
    assert status == 201, body


async def make_user(
    api: Api, tenant: str, username: str, password: str = PASSWORD, display_name: str = ""
) -> dict[str, Any]:
    status, body = await api.call(
        "POST",
        f"/api/v1/tenants/{tenant}/users",
        json={"username": username, "display_name": display_name, "password": password},
    )
    assert status == 201, body
    return dict(body)


async def provisioned_device(
    api: Api, tenant: str, mac: str, location: str = "Room 1"
) -> DeviceClient:
    """Register `mac`, issue a code and redeem it over /provision: the device's credential."""
    status, body = await api.call(
        "POST", f"/api/v1/tenants/{tenant}/devices", json={"mac": mac, "location": location}
    )
    assert status == 201, body
    status, codes = await api.call(
        "POST", f"/api/v1/tenants/{tenant}/verification-codes", json={"macs": [mac]}
    )
    assert status == 201, codes
    async with api.client.post("/provision", json={"mac": mac, "code": codes[0]["code"]}) as r:
        prov = await r.json()
        assert r.status == 200, prov
    return DeviceClient(mac, tenant, prov["client_id"], prov["client_secret"])


def basic(client_id: str, secret: str) -> str:
    """HTTP Basic as RFC 6749 §2.3.1 says: each half form-urlencoded first."""
    raw = f"{quote_plus(client_id)}:{quote_plus(secret)}".encode()
    return "Basic " + base64.b64encode(raw).decode()


async def oauth_post(
    api: Api,
    path: str,
    data: dict[str, str],
    dev: DeviceClient | None = None,
    headers: dict[str, str] | None = None,
) -> tuple[int, Any, dict[str, str]]:
    h = dict(headers or {})
    if dev is not None:
        h["Authorization"] = basic(dev.client_id, dev.secret)
    async with api.client.post(path, data=data, headers=h) as r:
        body = await r.json() if r.content_type == "application/json" else await r.text()
        return r.status, body, dict(r.headers)


async def start(api: Api, dev: DeviceClient, scope: str | None = None) -> dict[str, Any]:
    data = {"client_id": dev.client_id, **({"scope": scope} if scope else {})}
    status, body, headers = await oauth_post(api, "/oauth2/device_authorization", data, dev)
    assert status == 200, body
    assert headers["Cache-Control"] == "no-store"
    return dict(body)


async def poll(api: Api, dev: DeviceClient, device_code: str) -> tuple[int, Any]:
    status, body, _ = await oauth_post(
        api,
        "/oauth2/token",
        {"grant_type": DEVICE_GRANT, "device_code": device_code, "client_id": dev.client_id},
        dev,
    )
    return status, body


async def refresh(api: Api, dev: DeviceClient, token: str) -> tuple[int, Any]:
    status, body, _ = await oauth_post(
        api, "/oauth2/token", {"grant_type": "refresh_token", "refresh_token": token}, dev
    )
    return status, body


# ---- a browser for the verification page ------------------------------------------------------------


@dataclass
class Form:
    inputs: list[dict[str, str]] = field(default_factory=list)
    buttons: list[dict[str, str]] = field(default_factory=list)


class PageParser(HTMLParser):
    """Forms (inputs, submit buttons), labels, and the text of elements with an id."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.forms: list[Form] = []
        self.labels: set[str] = set()
        self.tags: list[tuple[str, dict[str, str]]] = []
        self.text_by_id: dict[str, str] = {}
        self._open_ids: list[tuple[str, str]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {k: v or "" for k, v in attrs}
        self.tags.append((tag, a))
        if tag == "form":
            self.forms.append(Form())
        elif tag == "input" and self.forms:
            self.forms[-1].inputs.append(a)
        elif tag == "button" and self.forms:
            self.forms[-1].buttons.append(a)
        elif tag == "label" and "for" in a:
            self.labels.add(a["for"])
        if "id" in a and tag not in ("input",):
            self._open_ids.append((tag, a["id"]))
            self.text_by_id.setdefault(a["id"], "")

    def handle_endtag(self, tag: str) -> None:
        if self._open_ids and self._open_ids[-1][0] == tag:
            self._open_ids.pop()

    def handle_data(self, data: str) -> None:
        for _, ident in self._open_ids:
            self.text_by_id[ident] += data


def parse(html: str) -> PageParser:
    p = PageParser()
    p.feed(html)
    p.close()
    return p


def fill(form: Form, values: dict[str, str], button: str | None = None) -> dict[str, str]:
    """What a browser submits: every named input (hidden ones as served) and the clicked button."""
    data: dict[str, str] = {}
    for i in form.inputs:
        if "name" in i:
            data[i["name"]] = values.get(i["name"], i.get("value", ""))
    assert set(values) <= set(data), f"the form has no field(s) {set(values) - set(data)}"
    if button is not None:
        chosen = [b for b in form.buttons if b.get("value") == button]
        assert chosen, f"no {button!r} button in the form"
        data[chosen[0]["name"]] = chosen[0]["value"]
    return data


@dataclass
class PageResult:
    status: int
    html: str
    page: PageParser


class Browser:
    """One browser (its own cookie jar) talking to the test server."""

    def __init__(self, api: Api, session: aiohttp.ClientSession | None = None) -> None:
        self.api = api
        self.session = session

    async def _req(self, method: str, url: str, **kw: Any) -> PageResult:
        if self.session is None:
            ctx = self.api.client.request(method, url, **kw)
        else:
            ctx = self.session.request(method, self.api.client.make_url(url), **kw)
        async with ctx as r:
            html = await r.text()
            return PageResult(r.status, html, parse(html))

    async def open(self, url: str = "/device") -> PageResult:
        parts = urlsplit(url)
        path = parts.path + (f"?{parts.query}" if parts.query else "")
        res = await self._req("GET", path)
        assert res.status == 200, res.html
        assert res.page.forms, res.html
        return res

    async def submit(
        self, res: PageResult, values: dict[str, str], button: str | None = None
    ) -> PageResult:
        return await self._req("POST", "/device", data=fill(res.page.forms[0], values, button))

    async def login(
        self, user_code: str, username: str, password: str = PASSWORD, url: str = "/device"
    ) -> PageResult:
        page = await self.open(url)
        values = {"username": username, "password": password}
        if user_code:
            values["user_code"] = user_code
        return await self.submit(page, values)

    async def sign_in(
        self, user_code: str, username: str, decision: str = "approve", password: str = PASSWORD
    ) -> tuple[PageResult, PageResult]:
        """The whole flow: code and credentials, then Approve or Deny; (confirm, result)."""
        confirm = await self.login(user_code, username, password)
        assert confirm.status == 200, confirm.html
        result = await self.submit(confirm, {}, decision)
        return confirm, result
