"""The store's contract: the same test functions against SQLite and against a real PostgreSQL
server (tests/helpers/postgres.py starts it), each through the real services: the HTTP API, the
registry and provisioning services, and a second store on the same database standing in for
another process (the CLI, or a second server)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from server.dhcp.pool import Lease, LeaseState
from server.registry.discovered import SeenDevice
from server.registry.service import Principal, Registry
from server.store.base import SchemaTooNew, Store
from server.store.open import make_store
from server.web.keys import SERVICES
from tests.helpers.app import Api

MAC1, MAC2, MAC3 = "02:00:5e:00:01:01", "02:00:5e:00:01:02", "02:00:5e:00:01:03"
TENANTS = "/api/v1/tenants"
DEVICES = "/api/v1/tenants/contoso/devices"


async def _tenant(api: Api, tid: str = "contoso") -> None:
    status, body = await api.call("POST", TENANTS, json={"id": tid, "name": f"{tid} Ltd"})
    assert status == 201, body


async def _codes(api: Api, *macs: str) -> dict[str, str]:
    status, body = await api.call(
        "POST", "/api/v1/tenants/contoso/verification-codes", json={"macs": list(macs)}
    )
    assert status == 201, body
    return {c["mac"]: c["code"] for c in body}


async def _provision(api: Api, mac: str, code: str) -> tuple[int, Any]:
    async with api.client.post("/provision", json={"mac": mac, "code": code}) as r:
        return r.status, await r.json()


def _other_store(api: Api) -> Store:
    """A second store on the same database, as another process would open it."""
    return make_store(api.settings.store)


async def test_tenants_are_created_listed_refused_twice_and_deleted(api: Api) -> None:
    await _tenant(api)
    await _tenant(api, "fabrikam")
    status, body = await api.call("POST", TENANTS, json={"id": "contoso", "name": "Again"})
    assert status == 409 and "already exists" in body["message"], body
    status, body = await api.call("GET", TENANTS)
    assert [t["id"] for t in body["results"]] == ["contoso", "fabrikam"]
    await api.registry.delete_tenant(Principal(actor="test", role="operator"), "fabrikam")
    status, body = await api.call("GET", TENANTS)
    assert [t["id"] for t in body["results"]] == ["contoso"]


async def test_devices_added_updated_searched_paged_and_deleted(api: Api) -> None:
    await _tenant(api)
    for i, mac in enumerate((MAC3, MAC1, MAC2)):
        status, body = await api.call("POST", DEVICES, json={"mac": mac, "location": f"Room {i}"})
        assert status == 201, body
        assert api.registry.index[mac].location == f"Room {i}"
    status, body = await api.call("POST", DEVICES, json={"mac": MAC1})
    assert status == 409 and "already registered" in body["message"]

    status, body = await api.call("PATCH", f"{DEVICES}/{MAC2}", json={"location": "Lobby_1"})
    assert status == 200 and body["location"] == "Lobby_1", body
    assert api.registry.index[MAC2].location == "Lobby_1"

    # Search: case-insensitive, and '_' is a literal, not a wildcard.
    status, body = await api.call("GET", DEVICES, params={"q": "LOBBY_"})
    assert [d["mac"] for d in body["results"]] == [MAC2]
    status, body = await api.call("GET", DEVICES, params={"q": "y_1"})
    assert [d["mac"] for d in body["results"]] == [MAC2]
    status, body = await api.call("GET", DEVICES, params={"q": "m_"})
    assert body["results"] == []

    # MAC order, cursor pages both ways.
    status, page1 = await api.call("GET", DEVICES, params={"limit": "2"})
    assert page1["count"] == 3 and [d["mac"] for d in page1["results"]] == [MAC1, MAC2]
    status, page2 = await api.call(
        "GET", DEVICES, params={"limit": "2", "cursor": page1["next_cursor"]}
    )
    assert [d["mac"] for d in page2["results"]] == [MAC3]
    status, back = await api.call(
        "GET", DEVICES, params={"limit": "2", "cursor": page2["prev_cursor"]}
    )
    assert [d["mac"] for d in back["results"]] == [MAC1, MAC2]

    status, _ = await api.call("DELETE", f"{DEVICES}/{MAC1}")
    assert status == 204
    assert MAC1 not in api.registry.index
    status, _ = await api.call("GET", f"{DEVICES}/{MAC1}")
    assert status == 404


async def test_import_is_all_rows_or_none(api: Api) -> None:
    await _tenant(api)
    await _tenant(api, "fabrikam")
    csv = f"MAC ID,Location\n{MAC1},Room 1\n{MAC2},Room 2\n".encode()
    status, body = await api.call("POST", f"{DEVICES}/import", data=csv)
    assert status == 201 and body["created"] == 2, body
    # A MAC of another tenant in the file: nothing of it is stored.
    status, body = await api.call("POST", "/api/v1/tenants/fabrikam/devices", json={"mac": MAC3})
    assert status == 201
    bad = f"MAC ID,Location\n02:00:5e:00:02:01,A\n{MAC3},B\n".encode()
    status, body = await api.call("POST", f"{DEVICES}/import", data=bad)
    assert status in (409, 422), body
    assert "02:00:5e:00:02:01" not in api.registry.index
    # Upsert: moves one, adds one.
    up = f"MAC ID,Location\n{MAC1},Hall\n02:00:5e:00:02:02,New\n".encode()
    status, body = await api.call("POST", f"{DEVICES}/import?mode=upsert", data=up)
    assert status == 201 and (body["created"], body["updated"]) == (1, 1), body
    assert api.registry.index[MAC1].location == "Hall"
    status, text = await api.call("GET", f"{DEVICES}/export.csv")
    assert status == 200 and "02:00:5e:00:02:02" in text and "Hall" in text


async def test_a_code_is_redeemed_once_and_regenerating_revokes_it(api: Api) -> None:
    await _tenant(api)
    await api.call("POST", DEVICES, json={"mac": MAC1, "location": "Room"})
    await api.call("POST", DEVICES, json={"mac": MAC2, "location": "Room"})
    old = (await _codes(api, MAC1))[MAC1]
    code = (await _codes(api, MAC1))[MAC1]  # regenerated: the first is revoked
    # The current codes, as the export and the admin pages read them (all, or by MAC).
    current = api.registry.provisioning.current_codes
    assert {m: c.code for m, c in (await current("contoso")).items()} == {MAC1: code}
    assert {m: c.code for m, c in (await current("contoso", [MAC1, MAC2])).items()} == {MAC1: code}
    assert await current("fabrikam", [MAC1]) == {}
    if old != code:
        status, body = await _provision(api, MAC1, old)
        assert status != 200, body
    status, body = await _provision(api, MAC1, code)
    assert status == 200 and body["status"] == "provisioned", body
    assert body["tenant"] == {"id": "contoso", "name": "contoso Ltd"}
    assert api.registry.index[MAC1].state == "awaiting_sign_in"
    status, dev = await api.call("GET", f"{DEVICES}/{MAC1}")
    assert dev["state"] == "awaiting_sign_in"

    # Concurrent entries of one code: exactly one success.
    from server.core.ratelimit import TokenBuckets

    api.client.app[SERVICES].provision_limiter = TokenBuckets(1e9, 1e9)
    code2 = (await _codes(api, MAC2))[MAC2]
    results = await asyncio.gather(*(_provision(api, MAC2, code2) for _ in range(12)))
    firsts = [b for s, b in results if s == 200 and b.get("status") == "provisioned"]
    assert len({b["client_secret"] for b in firsts}) == 1, results

    # The audit log, newest first, and its before_id pages.
    status, audit = await api.call("GET", "/api/v1/tenants/contoso/audit", params={"limit": "3"})
    ids = [e["id"] for e in audit["results"]]
    assert ids == sorted(ids, reverse=True) and len(ids) == 3
    status, older = await api.call(
        "GET", "/api/v1/tenants/contoso/audit", params={"before_id": str(ids[-1])}
    )
    assert all(e["id"] < ids[-1] for e in older["results"]) and older["results"]
    actions = {e["action"] for e in audit["results"] + older["results"]}
    assert {"device.create", "provision.success"} <= actions, actions


async def test_wrong_codes_count_attempts_until_the_code_is_locked(api: Api) -> None:
    await _tenant(api)
    await api.call("POST", DEVICES, json={"mac": MAC1})
    code = (await _codes(api, MAC1))[MAC1]
    wrong = "BCDF-GHJK" if code != "BCDF-GHJK" else "BCDF-GHJM"
    for _ in range(api.registry.max_attempts):
        r = await api.registry.provisioning.redeem(MAC1, wrong, "127.0.0.1")
        assert r.error is not None
    r = await api.registry.provisioning.redeem(MAC1, code, "127.0.0.1")
    assert r.error is not None, "the right code after max_attempts wrong ones must be refused"


async def test_tokens_authenticate_until_revoked(api: Api) -> None:
    await _tenant(api)
    secret, row = await api.registry.create_token("test", "admin", "contoso", "site A")
    who = await api.registry.authenticate(secret)
    assert who is not None and who.tenant_id == "contoso" and who.role == "admin"
    status, body = await api.call("GET", TENANTS, token=secret)
    assert status == 200 and [t["id"] for t in body["results"]] == ["contoso"]
    assert any(t.id == row.id for t in await api.registry.store.list_tokens())
    await api.registry.revoke_token("test", row.id)
    assert await api.registry.authenticate(secret) is None
    status, _ = await api.call("GET", TENANTS, token=secret)
    assert status == 401


async def test_leases_and_the_discovered_list_are_saved_and_loaded(api: Api) -> None:
    store = api.registry.store
    await _tenant(api)
    await api.call("POST", DEVICES, json={"mac": MAC1, "location": "Room 1"})
    leases = [
        Lease("192.0.2.10", MAC1, b"\x01\x02", LeaseState.BOUND, 1_800_000_000.5, "lab", 1.0),
        Lease("192.0.2.11", MAC2, None, LeaseState.OFFERED, 1_800_000_001.0, "lab", 2.0),
    ]
    await store.save_leases(leases)
    again = Lease("192.0.2.11", MAC2, None, LeaseState.BOUND, 1_800_000_009.0, "lab", 3.0)
    await store.save_leases([again])
    got = sorted(await store.load_leases(), key=lambda x: x.ip)
    assert got == [leases[0], again]
    rows = await store.list_leases(tenant_id="contoso")
    assert [(r.lease.ip, r.tenant_id, r.location) for r in rows] == [
        ("192.0.2.10", "contoso", "Room 1")
    ]

    seen = [
        SeenDevice(MAC2, "PXEClient", "eth0", "dhcp", 10.0, 20.0, 3),
        SeenDevice(MAC3, "", "eth1", "mdns", 11.0, 30.0, 1),
    ]
    await store.replace_discovered(seen)
    assert await store.list_discovered() == [seen[1], seen[0]]  # most recently seen first
    assert await store.list_discovered(limit=1) == [seen[1]]
    await store.replace_discovered(seen[:1])
    assert await store.list_discovered() == seen[:1]


async def test_another_process_changes_reach_the_index_through_the_change_feed(
    api: Api,
) -> None:
    await _tenant(api)
    await api.call("POST", DEVICES, json={"mac": MAC1, "location": "Room 1"})
    other = _other_store(api)
    await other.open()
    try:
        cli = Registry(other, api.registry.provisioning.vault)
        op = Principal(actor="cli:test", role="operator")
        await cli.add_device(op, "contoso", MAC2, "Room 2")
        await cli.update_device(op, "contoso", MAC1, "Moved")
        await cli.delete_device(op, "contoso", MAC1)
    finally:
        await other.close()

    async def caught_up() -> None:
        # The server's own poller task applies the feed; it offers no event to wait on.
        while MAC2 not in api.registry.index or MAC1 in api.registry.index:  # noqa: ASYNC110
            await asyncio.sleep(0.05)

    await asyncio.wait_for(caught_up(), 20)  # the server's poller, at [store] poll_interval_s
    assert api.registry.index[MAC2].location == "Room 2"
    assert await api.registry.poll_changes() == 0  # nothing left to read


async def test_a_newer_schema_is_refused_with_the_version_it_needs(
    api: Api, tmp_path: Path
) -> None:
    async with api.registry.store.transaction("") as tx:
        await tx.execute(
            "INSERT INTO schema_migrations (version, name, applied_at) VALUES (?, ?, ?)",
            (9999, "9999_future.sql", "2030-01-01 00:00:00"),
        )
    other = _other_store(api)
    with pytest.raises(SchemaTooNew) as e:
        await other.open()
    assert "the database schema is version 9999, this Imprint knows up to" in str(e.value)
    assert "upgrade Imprint" in str(e.value)
    assert not other.is_open
