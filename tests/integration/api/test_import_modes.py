"""Issue 18: CSV import modes. `create` (the default) registers new MACs only; `update` changes
the location of registered MACs (an export uploaded again changes nothing); `upsert` does either.
Every mode is all rows or none, and a dry run lists what would change."""

from __future__ import annotations

import sqlite3
from datetime import UTC, datetime
from pathlib import Path

import pytest

from server.registry import store as db
from server.store.base import Conflict
from server.store.sqlite import SqliteStore
from tests.helpers.app import Api

MAC1, MAC2, MAC3 = "02:00:5e:00:01:01", "02:00:5e:00:01:02", "02:00:5e:00:01:03"
IMPORT = "/api/v1/tenants/contoso/devices/import"


async def _setup(api: Api) -> None:
    for tid in ("contoso", "fabrikam"):
        status, body = await api.call("POST", "/api/v1/tenants", json={"id": tid, "name": tid})
        assert status == 201, body
    status, body = await api.call(
        "POST", IMPORT, data=f"MAC ID,Location\n{MAC1},Room 1\n{MAC2},Room 2\n".encode()
    )
    assert status == 201 and body["created"] == 2, body


def _audit_count(api: Api, action: str) -> int:
    with sqlite3.connect(api.settings.store.path) as con:
        (n,) = con.execute("SELECT count(*) FROM audit WHERE action = ?", (action,)).fetchone()
    return int(n)


async def test_an_export_uploaded_again_in_update_mode_changes_nothing(api: Api) -> None:
    await _setup(api)
    status, exported = await api.call("GET", "/api/v1/tenants/contoso/devices/export.csv")
    assert status == 200 and MAC1 in exported
    status, body = await api.call("POST", f"{IMPORT}?mode=update", data=exported.encode())
    assert status == 201, body
    assert (body["created"], body["updated"], body["unchanged"]) == (0, 0, 2)
    assert _audit_count(api, "device.update") == 0


async def test_update_mode_moves_changed_rows_and_dry_run_lists_them_first(api: Api) -> None:
    await _setup(api)
    data = f"MAC ID,Location\n{MAC1},Room 1\n{MAC2},Lobby\n".encode()
    status, body = await api.call("POST", f"{IMPORT}?mode=update&dry_run=true", data=data)
    assert status == 200 and body["changes"] == [
        {"row": 3, "mac": MAC2, "action": "update", "before": "Room 2", "location": "Lobby"}
    ]
    assert (await api.call("GET", f"/api/v1/tenants/contoso/devices/{MAC2}"))[1]["location"] == (
        "Room 2"
    )
    status, body = await api.call("POST", f"{IMPORT}?mode=update", data=data)
    assert status == 201 and (body["updated"], body["unchanged"]) == (1, 1), body
    assert (await api.call("GET", f"/api/v1/tenants/contoso/devices/{MAC2}"))[1]["location"] == (
        "Lobby"
    )
    assert api.registry.index[MAC2].location == "Lobby"  # the hot-path index is in step
    status, audit = await api.call("GET", "/api/v1/tenants/contoso/audit")
    moved = [a for a in audit["results"] if a["action"] == "device.update"]
    assert len(moved) == 1 and moved[0]["target"] == MAC2
    assert moved[0]["before"] == {"location": "Room 2"}
    assert moved[0]["after"] == {"location": "Lobby", "row": 3}


async def test_update_mode_refuses_unregistered_macs_and_stores_nothing(api: Api) -> None:
    await _setup(api)
    data = f"MAC ID,Location\n{MAC1},Moved\n{MAC3},New\n".encode()
    status, body = await api.call("POST", f"{IMPORT}?mode=update", data=data)
    assert status == 422, body
    assert [(d["row"], d["value"]) for d in body["details"]] == [(3, MAC3)]
    assert "not registered in contoso" in body["details"][0]["message"]
    assert "upsert" in body["details"][0]["message"]
    assert (await api.call("GET", f"/api/v1/tenants/contoso/devices/{MAC1}"))[1]["location"] == (
        "Room 1"
    )


async def test_upsert_registers_new_and_moves_known_but_not_another_tenants(api: Api) -> None:
    await _setup(api)
    status, body = await api.call(
        "POST", "/api/v1/tenants/fabrikam/devices", json={"mac": MAC3, "location": "Theirs"}
    )
    assert status == 201
    mac4 = "02:00:5e:00:01:04"
    bad = f"MAC ID,Location\n{MAC1},Moved\n{MAC3},Mine\n{mac4},New\n".encode()
    status, body = await api.call("POST", f"{IMPORT}?mode=upsert", data=bad)
    assert status == 422 and [d["row"] for d in body["details"]] == [3], body
    assert "another tenant" in body["details"][0]["message"]
    assert (await api.call("GET", f"/api/v1/tenants/contoso/devices/{mac4}"))[0] == 404
    good = f"MAC ID,Location\n{MAC1},Moved\n{MAC2},Room 2\n{mac4},New\n".encode()
    status, body = await api.call("POST", f"{IMPORT}?mode=upsert", data=good)
    assert status == 201, body
    assert (body["created"], body["updated"], body["unchanged"]) == (1, 1, 1)
    assert (await api.call("GET", f"/api/v1/tenants/contoso/devices/{mac4}"))[1]["state"] == (
        "awaiting_activation"
    )


async def test_an_unknown_mode_is_a_400_naming_the_modes(api: Api) -> None:
    await _setup(api)
    status, body = await api.call("POST", f"{IMPORT}?mode=merge", data=b"MAC ID,Location\n")
    assert status == 400 and "create, update, upsert" in body["message"], body


async def test_set_locations_refuses_when_a_device_moved_meanwhile(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "imprint.db")
    await store.open()
    now = datetime.now(UTC).isoformat()
    try:
        async with store.transaction(now) as tx:
            await tx.execute(
                "INSERT INTO tenants (id, name, created_at) VALUES ('t', 'T', ?)", (now,)
            )
            await db.insert_devices(tx, "t", [db.NewDevice(MAC1, "dev_1", "Room 1")])
        with pytest.raises(Conflict, match="upload the file again"):
            async with store.transaction(now) as tx:
                await db.set_locations(tx, "t", [(MAC1, "Room 9", "Lobby")])
        device = await store.get_device(MAC1, "t")
        assert device is not None and device.location == "Room 1"
    finally:
        await store.close()
