"""The rollout view's JSON over a real socket: tenant isolation, and the figures after each kind
of change (import, code entry right and wrong, a lock and its end, sign-in approved and denied,
reset, delete), checked against the store read by an independent connection."""

from __future__ import annotations

import sqlite3
from collections import Counter
from collections.abc import AsyncIterator
from typing import Any

import pytest

from server.registry.service import ImportRow, Principal
from server.web.keys import SERVICES
from tests.helpers.app import Api
from tests.helpers.oauth import Browser, DeviceClient, make_user, poll, start
from tests.helpers.ui import UiClient

OP = Principal("test", "operator")
PASSWORD = "correct horse battery staple"
MACS = [f"02:00:5e:20:00:{i:02x}" for i in range(6)]
LOCATIONS = ["Floor 1", "Floor 1", "Floor 2", "Floor 2", "Floor 2", ""]


@pytest.fixture
async def alice(api: Api) -> AsyncIterator[UiClient]:
    svc = api.client.app[SERVICES]
    await api.registry.create_tenant(OP, "contoso", "Contoso Ltd")
    await api.registry.create_tenant(OP, "fabrikam", "Fabrikam Inc")
    assert svc.admin is not None
    await svc.admin.create_admin("test", "alice", PASSWORD, "admin", "contoso")
    await svc.admin.create_admin("test", "bob", PASSWORD, "admin", "fabrikam")
    await api.registry.import_devices(
        OP,
        "contoso",
        [
            ImportRow(i + 2, mac, loc)
            for i, (mac, loc) in enumerate(zip(MACS, LOCATIONS, strict=True))
        ],
    )
    await api.registry.add_device(OP, "fabrikam", "02:00:5e:2f:00:01", "Fabrikam lobby")
    client = UiClient(str(api.client.make_url("/")))
    assert (await client.login("alice", PASSWORD)).status == 303
    try:
        yield client
    finally:
        await client.close()


async def figures(ui: UiClient, tenant: str = "contoso") -> Any:
    async with ui.http.get(f"/ui/tenants/{tenant}/rollout.json", allow_redirects=False) as r:
        assert r.status == 200, await r.text()
        assert r.headers["Cache-Control"] == "no-store"
        return await r.json()


def stored(api: Api, tenant: str) -> tuple[dict[str, int], dict[tuple[str, str], int]]:
    """State counts and (location, state) counts as the store has them."""
    con = sqlite3.connect(f"file:{api.settings.store.path}?mode=ro", uri=True)
    try:
        rows = con.execute(
            "SELECT location, state FROM devices WHERE tenant_id = ?", (tenant,)
        ).fetchall()
    finally:
        con.close()
    return dict(Counter(s for _, s in rows)), dict(Counter((loc, s) for loc, s in rows))


def assert_matches_store(api: Api, data: Any, tenant: str = "contoso") -> None:
    states, by_location = stored(api, tenant)
    assert {s: n for s, n in data["counts"].items() if n} == states
    assert data["total"] == sum(states.values())
    shown = {
        (row["location"], s): n for row in data["locations"] for s, n in row["counts"].items() if n
    }
    assert shown == by_location


async def test_another_tenants_admin_gets_404_for_the_view_and_its_json(
    api: Api, alice: UiClient
) -> None:
    for path in ("/ui/tenants/fabrikam/rollout.json", "/ui/tenants/fabrikam/rollout"):
        async with alice.http.get(path, allow_redirects=False) as r:
            assert r.status == 404, path
            assert "Fabrikam lobby" not in await r.text()
    async with alice.http.get("/ui/tenants/nowhere/rollout.json", allow_redirects=False) as r:
        assert r.status == 404  # the same answer as for a tenant that exists elsewhere
    data = await figures(alice)
    assert data["tenant"] == "contoso" and data["total"] == 6
    assert "discovered" not in data  # unregistered MACs are no tenant's: operators only
    page = await alice.get("/ui/tenants/contoso/rollout")
    assert page.status == 200
    assert "Awaiting activation: 6" in page.text and "Signed in: 0" in page.text
    assert 'href="/ui/tenants/contoso/rollout" aria-current="page"' in page.text
    # An operator sees every tenant's view, and the MACs seen on the LAN that nobody registered.
    svc = api.client.app[SERVICES]
    assert svc.admin is not None
    await svc.admin.create_admin("test", "ops", PASSWORD, "operator", None)
    svc.discovered.record("02:00:5e:2e:00:01", source="dhcp", interface="lo", now=1.0)
    svc.discovered.record(MACS[0], source="dhcp", interface="lo", now=1.0)  # registered
    ops = UiClient(str(api.client.make_url("/")))
    try:
        assert (await ops.login("ops", PASSWORD)).status == 303
        data = await figures(ops, "fabrikam")
        assert data["discovered"] == 1 and data["total"] == 1
        assert (
            "Discovered, not registered (all tenants): 1"
            in (await ops.get("/ui/tenants/fabrikam/rollout")).text
        )
    finally:
        await ops.close()
    # Without a session: the sign-in page, not the figures.
    anonymous = UiClient(str(api.client.make_url("/")))
    try:
        async with anonymous.http.get(
            "/ui/tenants/contoso/rollout.json", allow_redirects=False
        ) as r:
            assert r.status == 303 and r.headers["Location"].startswith("/ui/login?")
    finally:
        await anonymous.close()


async def test_the_figures_follow_code_entry_locks_sign_in_reset_and_delete(
    api: Api, alice: UiClient
) -> None:
    data = await figures(alice)
    assert_matches_store(api, data)
    assert data["counts"] == {"awaiting_activation": 6, "awaiting_sign_in": 0, "signed_in": 0}
    assert [r["location"] for r in data["locations"]] == ["Floor 1", "Floor 2", ""]
    assert data["errors"] == [] and data["locked"] == 0
    first = data["history"][-1]["at"]

    codes = {c.mac: c.code for c in await api.registry.generate_codes(OP, "contoso", MACS)}
    secrets: dict[str, DeviceClient] = {}
    for mac in MACS[:3]:
        async with api.client.post("/provision", json={"mac": mac, "code": codes[mac]}) as r:
            body = await r.json()
            assert r.status == 200, body
            secrets[mac] = DeviceClient(mac, "contoso", body["client_id"], body["client_secret"])
    # A wrong code for MACS[3], then enough to lock MACS[4] (max_attempts = 5).
    async with api.client.post("/provision", json={"mac": MACS[3], "code": "BBBB-BBBB"}) as r:
        assert r.status == 401
    for _ in range(api.registry.max_attempts):
        async with api.client.post("/provision", json={"mac": MACS[4], "code": "BBBB-BBBB"}) as r:
            assert r.status in (401, 423)
    data = await figures(alice)
    assert_matches_store(api, data)
    assert data["counts"] == {"awaiting_activation": 3, "awaiting_sign_in": 3, "signed_in": 0}
    assert data["locked"] == 1
    newest = data["errors"][0]
    assert (newest["mac"], newest["reason"], newest["location"]) == (MACS[4], "locked", "Floor 2")
    assert "locked" in newest["message"] and newest["stage"] == "code_entry"
    # MACS[3]'s miss and MACS[4]'s first four; its fifth answers "locked".
    reasons = Counter((e["mac"], e["reason"]) for e in data["errors"])
    assert reasons == {
        (MACS[3], "wrong_code"): 1,
        (MACS[4], "wrong_code"): api.registry.max_attempts - 1,
        (MACS[4], "locked"): 1,
    }
    assert data["errors_total"] == len(data["errors"]) == api.registry.max_attempts + 1
    # The page asks only for the history after the last point it has.
    async with alice.http.get(
        "/ui/tenants/contoso/rollout.json", params={"since": str(first)}
    ) as r:
        later = (await r.json())["history"]
    assert all(p["at"] > first for p in later)
    async with alice.http.get("/ui/tenants/contoso/rollout.json", params={"since": "nan"}) as r:
        assert r.status == 200 and (await r.json())["history"]  # a bad `since`: all of it

    # A new code ends the lock.
    await api.registry.generate_codes(OP, "contoso", [MACS[4]])
    assert (await figures(alice))["locked"] == 0

    # Sign-in: one approved, one denied (an error with its reason).
    await make_user(api, "contoso", "room-1@contoso.com")
    grants = {mac: await start(api, secrets[mac]) for mac in MACS[:2]}
    _, result = await Browser(api).sign_in(grants[MACS[0]]["user_code"], "room-1@contoso.com")
    assert result.status == 200, result.html
    _, result = await Browser(api).sign_in(
        grants[MACS[1]]["user_code"], "room-1@contoso.com", "deny"
    )
    assert result.status == 200, result.html
    assert (await poll(api, secrets[MACS[0]], grants[MACS[0]]["device_code"]))[0] == 200
    status, body = await poll(api, secrets[MACS[1]], grants[MACS[1]]["device_code"])
    assert (status, body["error"]) == (400, "access_denied")
    data = await figures(alice)
    assert_matches_store(api, data)
    assert data["counts"] == {"awaiting_activation": 3, "awaiting_sign_in": 2, "signed_in": 1}
    assert (data["errors"][0]["mac"], data["errors"][0]["stage"]) == (MACS[1], "sign_in")
    assert data["errors"][0]["reason"] == "access_denied"

    # Reset and delete: the counts and the per-location table move with them.
    await api.registry.reset_device(OP, "contoso", MACS[0])
    await api.registry.delete_device(OP, "contoso", MACS[5])
    data = await figures(alice)
    assert_matches_store(api, data)
    assert data["counts"] == {"awaiting_activation": 3, "awaiting_sign_in": 2, "signed_in": 0}
    assert [r["location"] for r in data["locations"]] == ["Floor 1", "Floor 2"]

    # The other tenant's figures did not move, and its errors are its own.
    fabrikam = api.client.app[SERVICES].registry.rollout.summary(
        api.registry.index, "fabrikam", 0.0
    )
    assert fabrikam["counts"]["awaiting_activation"] == 1 and fabrikam["errors"] == []

    # The same figures on /metrics, by tenant.
    async with api.client.get("/metrics") as r:
        text = await r.text()
    assert 'imprint_tenant_devices{state="awaiting_sign_in",tenant="contoso"} 2.0' in text
    assert 'imprint_tenant_devices{state="awaiting_activation",tenant="fabrikam"} 1.0' in text
    assert 'imprint_rollout_errors_total{reason="locked",tenant="contoso"} 1.0' in text
    assert 'imprint_rollout_errors_total{reason="access_denied",tenant="contoso"} 1.0' in text
