"""The verification page driven as a browser drives it: forms parsed from the HTML, cookies kept,
RFC 8628 §5.4 details shown, tenants kept apart, guessing slowed down."""

from __future__ import annotations

from datetime import timedelta

import aiohttp

from server.core.ratelimit import FailureLimiter
from server.web.keys import SERVICES
from tests.helpers.app import Api
from tests.helpers.oauth import (
    Browser,
    DeviceClient,
    make_tenant,
    make_user,
    parse,
    poll,
    provisioned_device,
    start,
)

MAC_A, MAC_B = "02:00:5e:00:52:01", "02:00:5e:00:52:02"
ALICE, BOB = "alice@contoso.com", "bob@fabrikam.com"


async def two_tenants(api: Api, location: str = "Lobby") -> tuple[DeviceClient, DeviceClient]:
    await make_tenant(api, "contoso", "Contoso Ltd")
    await make_tenant(api, "fabrikam", "Fabrikam Inc")
    await make_user(api, "contoso", ALICE, display_name="Alice A.")
    await make_user(api, "fabrikam", BOB)
    return (
        await provisioned_device(api, "contoso", MAC_A, location),
        await provisioned_device(api, "fabrikam", MAC_B, "Reception"),
    )


async def audit(api: Api, tenant: str) -> list[dict[str, object]]:
    status, body = await api.call("GET", f"/api/v1/tenants/{tenant}/audit")
    assert status == 200
    return list(body["results"])


async def test_page_is_accessible_self_contained_and_escapes_everything(api: Api) -> None:
    hostile = '<script>alert("x")</script> & "Room"'
    dev, _ = await two_tenants(api, location=hostile)
    auth = await start(api, dev)
    browser = Browser(api)
    async with api.client.get("/device?user_code=%3Cb%3Eoops") as r:
        assert r.status == 200 and r.content_type == "text/html"
        html = await r.text()
        assert "default-src 'none'" in r.headers["Content-Security-Policy"]
        assert r.headers["X-Frame-Options"] == "DENY"
        assert r.headers["Cache-Control"] == "no-store"
        cookie = r.headers["Set-Cookie"]
        assert "HttpOnly" in cookie and "SameSite=Strict" in cookie and "Path=/device" in cookie
    assert "<b>oops" not in html and "&lt;b&gt;oops" in html
    page = parse(html)
    # Every visible control has a label; nothing is loaded from elsewhere.
    for i in page.forms[0].inputs:
        if i.get("type") != "hidden":
            assert i["id"] in page.labels, i
    assert not [t for t, a in page.tags if t in ("script", "img", "link", "iframe")]
    assert not [a for _, a in page.tags if "src" in a]

    confirm = await browser.login(auth["user_code"], ALICE)
    assert confirm.status == 200, confirm.html
    assert "<script>" not in confirm.html
    assert "&lt;script&gt;alert(&#34;x&#34;)&lt;/script&gt; &amp; &#34;Room&#34;" in confirm.html
    assert confirm.page.text_by_id["location"] == hostile
    assert confirm.page.text_by_id["mac"] == MAC_A
    assert "Contoso Ltd" in confirm.page.text_by_id["tenant"]
    assert confirm.page.text_by_id["user"] == f"Alice A. ({ALICE})"
    assert confirm.page.text_by_id["user_code"] == auth["user_code"]
    assert {b["value"] for b in confirm.page.forms[0].buttons} == {"approve", "deny"}


async def test_user_of_another_tenant_cannot_approve(api: Api) -> None:
    dev_a, _ = await two_tenants(api)
    auth = await start(api, dev_a)
    result = await Browser(api).login(auth["user_code"], BOB)
    assert result.status == 403
    assert "different organisation" in result.html and "Nothing was changed" in result.html
    assert "Contoso" not in result.html  # the other tenant is not named to Bob
    status, body = await poll(api, dev_a, auth["device_code"])
    assert body["error"] == "authorization_pending"
    status, dev = await api.call("GET", f"/api/v1/tenants/contoso/devices/{MAC_A}")
    assert dev["state"] == "awaiting_sign_in" and dev["signed_in_user"] is None
    a = [e for e in await audit(api, "contoso") if e["action"] == "oauth.tenant_mismatch"]
    b = [e for e in await audit(api, "fabrikam") if e["action"] == "oauth.tenant_mismatch"]
    assert len(a) == 1 and a[0]["target"] == MAC_A and "fabrikam" not in str(a[0])
    assert len(b) == 1 and b[0]["target"] == BOB and "contoso" not in str(b[0])
    # The code still works for the device's own tenant.
    _, result = await Browser(api).sign_in(auth["user_code"], ALICE)
    assert result.status == 200


async def test_tampered_or_stale_approval_is_refused(api: Api) -> None:
    dev, _ = await two_tenants(api)
    auth = await start(api, dev)
    browser = Browser(api)
    confirm = await browser.login(auth["user_code"], ALICE)
    approval = next(i for i in confirm.page.forms[0].inputs if i.get("name") == "approval")
    payload, _, mac = approval["value"].partition(".")
    forged = await browser.submit(confirm, {"approval": payload[:-2] + "AA." + mac}, "approve")
    assert forged.status == 400 and "expired" in forged.html
    api.clock.now += timedelta(seconds=301)
    stale = await browser.submit(confirm, {}, "approve")
    assert stale.status == 400 and "expired" in stale.html
    assert (await poll(api, dev, auth["device_code"]))[1]["error"] == "authorization_pending"


async def test_answering_a_replaced_request_says_it_is_no_longer_waiting(api: Api) -> None:
    dev, _ = await two_tenants(api)
    auth = await start(api, dev)
    browser = Browser(api)
    confirm = await browser.login(auth["user_code"], ALICE)
    await start(api, dev)  # the device restarted its sign-in meanwhile
    result = await browser.submit(confirm, {}, "approve")
    assert result.status == 409 and "no longer waiting" in result.html


async def test_form_without_its_cookie_is_refused(api: Api) -> None:
    dev, _ = await two_tenants(api)
    auth = await start(api, dev)
    page = await Browser(api).open("/device")
    form = {i["name"]: i.get("value", "") for i in page.page.forms[0].inputs if "name" in i}
    form.update(user_code=auth["user_code"], username=ALICE, password="x" * 12)
    async with (
        aiohttp.ClientSession() as fresh,  # another browser: no cookie
        fresh.post(api.client.make_url("/device"), data=form) as r,
    ):
        assert r.status == 400 and "cookie" in await r.text()
    form["csrf"] = "forged-forged-forged-forged"
    async with api.client.post("/device", data=form) as r:  # cookie, but a field that differs
        assert r.status == 400


async def test_many_wrong_user_codes_from_one_source_are_rate_limited(api: Api) -> None:
    dev, _ = await two_tenants(api)
    auth = await start(api, dev)
    right = auth["user_code"]
    wrong = "BBBB-BBBB" if right != "BBBB-BBBB" else "CCCC-CCCC"
    browser = Browser(api)
    # Typos are not guesses: malformed codes are answered but not counted.
    for _ in range(12):
        typo = await browser.login("BCD", ALICE)
        assert typo.status == 400 and "8 letters" in typo.html
    statuses = [(await browser.login(wrong, ALICE)).status for _ in range(12)]
    assert statuses == [400] * 10 + [429] * 2
    blocked = await browser.login(right, ALICE)
    assert blocked.status == 429 and "Too many attempts" in blocked.html
    # Refill time passes (the limiter runs on the event loop's clock): let one more through.
    api.client.app[SERVICES].oauth.page_failures = FailureLimiter(0.1, 10)
    _, result = await browser.sign_in(right, ALICE)
    assert result.status == 200


async def test_wrong_passwords_are_refused_audited_and_limited_per_account(api: Api) -> None:
    dev, _ = await two_tenants(api)
    auth = await start(api, dev)
    page = await Browser(api).login(auth["user_code"], ALICE, password="not the password")
    assert page.status == 400 and "username or password is not right" in page.html
    page = await Browser(api).login(auth["user_code"], "nobody@contoso.com")
    assert page.status == 400 and "username or password is not right" in page.html
    failed = [e for e in await audit(api, "contoso") if e["action"] == "user.login_failed"]
    assert len(failed) == 1 and failed[0]["target"] == ALICE
    # Per account: many sources guessing one password are slowed too.
    oauth = api.client.app[SERVICES].oauth
    oauth.page_failures = FailureLimiter(1e6, 1e6)
    oauth.account_failures = FailureLimiter(0.001, 3)
    for _ in range(3):
        page = await Browser(api).login(auth["user_code"], ALICE, password="wrong-wrong")
        assert page.status == 400
    page = await Browser(api).login(auth["user_code"], ALICE)  # the right password, but blocked
    assert page.status == 429 and "for this account" in page.html
    page = await Browser(api).login(auth["user_code"], BOB)  # other accounts are not affected
    assert page.status == 403
