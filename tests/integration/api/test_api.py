"""The REST API end to end over a real loopback socket and a temporary SQLite file."""

from __future__ import annotations

import io
import sqlite3
from datetime import timedelta
from typing import Any

from tests.helpers.app import Api

MAC1, MAC2, MAC3 = "02:00:5e:00:01:01", "02:00:5e:00:01:02", "02:00:5e:00:01:03"


async def tenant(api: Api, tid: str = "contoso", name: str = "Contoso Ltd") -> None:
    status, body = await api.call("POST", "/api/v1/tenants", json={"id": tid, "name": name})
    assert status == 201, body


async def test_create_and_list_tenants(api: Api) -> None:
    await tenant(api)
    status, body = await api.call("GET", "/api/v1/tenants")
    assert status == 200
    assert [t["id"] for t in body["results"]] == ["contoso"] and body["count"] == 1
    status, body = await api.call(
        "POST", "/api/v1/tenants", json={"id": "contoso", "name": "Again"}
    )
    assert status == 409 and body["error"] == "conflict" and "already exists" in body["message"]


async def test_bad_tenant_input_says_what_to_fix(api: Api) -> None:
    status, body = await api.call("POST", "/api/v1/tenants", json={"id": "Bad Id", "name": "x"})
    assert status == 422 and "a-z, 0-9" in body["message"]
    status, body = await api.call("POST", "/api/v1/tenants", json={"id": "ok"})
    assert (
        status == 400 and body["error"] == "bad_request" and body["details"][0]["field"] == "name"
    )
    status, body = await api.call(
        "POST", "/api/v1/tenants", data=b"{not json", headers={"Content-Type": "application/json"}
    )
    assert status == 400 and "not valid JSON" in body["message"]


async def test_device_lifecycle_and_mac_rules(api: Api) -> None:
    await tenant(api)
    status, body = await api.call(
        "POST",
        "/api/v1/tenants/contoso/devices",
        json={"mac": "02-00-5E-00-01-01", "location": "Room 1"},
    )
    assert status == 201
    assert (
        body["mac"] == MAC1
        and body["state"] == "awaiting_activation"
        and body["device_id"].startswith("dev_")
    )
    assert api.registry.index[MAC1].tenant_name == "Contoso Ltd"  # the hot-path index is in step

    status, body = await api.call(
        "POST", "/api/v1/tenants/contoso/devices", json={"mac": "0200.5e00.0101"}
    )
    assert status == 409 and MAC1 in body["message"]
    status, body = await api.call(
        "POST", "/api/v1/tenants/contoso/devices", json={"mac": "ff:ff:ff:ff:ff:ff"}
    )
    assert (
        status == 422
        and "broadcast" in body["message"]
        and body["details"][0]["value"] == "ff:ff:ff:ff:ff:ff"
    )

    status, body = await api.call(
        "GET", "/api/v1/tenants/contoso/devices/020058000101".replace("58", "5e")
    )
    assert status == 200 and body["location"] == "Room 1"
    status, body = await api.call(
        "PATCH", f"/api/v1/tenants/contoso/devices/{MAC1}", json={"location": "Room 2"}
    )
    assert status == 200 and body["location"] == "Room 2"
    assert api.registry.index[MAC1].location == "Room 2"
    status, _ = await api.call("DELETE", f"/api/v1/tenants/contoso/devices/{MAC1}")
    assert status == 204 and MAC1 not in api.registry.index
    status, body = await api.call("GET", f"/api/v1/tenants/contoso/devices/{MAC1}")
    assert status == 404 and body["error"] == "not_found"


async def test_a_mac_belongs_to_one_tenant(api: Api) -> None:
    await tenant(api, "a", "A")
    await tenant(api, "b", "B")
    assert (await api.call("POST", "/api/v1/tenants/a/devices", json={"mac": MAC1}))[0] == 201
    status, body = await api.call("POST", "/api/v1/tenants/b/devices", json={"mac": MAC1})
    assert status == 409 and "'a'" not in body["message"]  # does not reveal the other tenant


async def test_list_filters_search_and_paging(api: Api) -> None:
    await tenant(api)
    csv = "MAC ID,Location\n" + "\n".join(
        f"02:00:5e:00:02:{i:02x},Floor {i % 3}" for i in range(30)
    )
    status, body = await api.call(
        "POST",
        "/api/v1/tenants/contoso/devices/import",
        data=csv.encode(),
        headers={"Content-Type": "text/csv"},
    )
    assert status == 201, body
    status, body = await api.call("GET", "/api/v1/tenants/contoso/devices?limit=10&offset=25")
    assert body["count"] == 30 and len(body["results"]) == 5
    status, body = await api.call("GET", "/api/v1/tenants/contoso/devices?q=Floor 1")
    assert body["count"] == 10
    status, body = await api.call("GET", "/api/v1/tenants/contoso/devices?q=02-00-5E-00-02-1D")
    assert body["count"] == 1 and body["results"][0]["mac"] == "02:00:5e:00:02:1d"
    status, body = await api.call("GET", "/api/v1/tenants/contoso/devices?state=signed_in")
    assert body["count"] == 0
    status, body = await api.call("GET", "/api/v1/tenants/contoso/devices?state=bogus")
    assert status == 422 and "awaiting_activation" in body["message"]
    status, body = await api.call("GET", "/api/v1/tenants/contoso/devices?limit=abc")
    assert status == 400 and "'limit'" in body["message"]
    status, body = await api.call("GET", "/api/v1/tenants/contoso/devices?limit=5000")
    assert status == 422


async def test_import_reports_every_bad_row_and_stores_nothing(api: Api) -> None:
    await tenant(api)
    await api.call("POST", "/api/v1/tenants/contoso/devices", json={"mac": MAC3})
    data = f"MAC ID,Location\n{MAC1},ok\nnot-a-mac,x\n{MAC1},dup\n{MAC2},ok\n".encode()
    status, body = await api.call("POST", "/api/v1/tenants/contoso/devices/import", data=data)
    assert status == 422 and body["error"] == "invalid_csv"
    assert [(d["row"], d["column"]) for d in body["details"]] == [(3, "MAC ID"), (4, "MAC ID")]
    assert set(api.registry.index) == {MAC3}

    # A row that clashes with the registry is an error too, and still nothing is stored.
    data = f"MAC ID,Location\n{MAC1},ok\n{MAC3},already\n".encode()
    status, body = await api.call("POST", "/api/v1/tenants/contoso/devices/import", data=data)
    assert status == 422 and body["details"] == [
        {
            "row": 3,
            "column": "MAC ID",
            "value": MAC3,
            "message": "this MAC is already registered; remove the row, delete the device first, or use mode update or upsert",
        }
    ]
    status, body = await api.call("GET", "/api/v1/tenants/contoso/devices")
    assert body["count"] == 1


async def test_import_dry_run_stores_nothing(api: Api) -> None:
    await tenant(api)
    data = f"MAC ID,Location\n{MAC1},a\n{MAC2},b\n".encode()
    status, body = await api.call(
        "POST", "/api/v1/tenants/contoso/devices/import?dry_run=true", data=data
    )
    assert status == 200 and body == {
        "dry_run": True,
        "mode": "create",
        "rows": 2,
        "created": 2,
        "updated": 0,
        "unchanged": 0,
        "changes": [
            {"row": 2, "mac": MAC1, "action": "create", "location": "a"},
            {"row": 3, "mac": MAC2, "action": "create", "location": "b"},
        ],
    }
    assert (await api.call("GET", "/api/v1/tenants/contoso/devices"))[1]["count"] == 0
    status, body = await api.call("POST", "/api/v1/tenants/contoso/devices/import", data=data)
    assert status == 201 and body["created"] == 2


async def test_upload_over_the_size_limit_is_413(api: Api) -> None:
    await tenant(api)
    big = (
        b"MAC ID,Location\n"
        + b"02:00:5e:00:01:01,"
        + b"x" * (api.settings.http.max_upload_bytes + 10)
    )
    status, body = await api.call(
        "POST", "/api/v1/tenants/contoso/devices/import", data=io.BytesIO(big)
    )
    assert status == 413 and body["error"] == "too_large" and "max_upload_bytes" in body["message"]


async def test_template_download(api: Api) -> None:
    async with api.client.get("/api/v1/devices/template.csv") as r:
        assert r.status == 200 and r.content_type == "text/csv"
        assert (await r.text()).splitlines() == ["MAC ID,Location"]


async def codes_for(api: Api, payload: dict[str, Any]) -> list[dict[str, str]]:
    status, body = await api.call(
        "POST", "/api/v1/tenants/contoso/verification-codes", json=payload
    )
    assert status == 201, body
    return list(body)


async def test_codes_export_and_revocation(api: Api) -> None:
    await tenant(api)
    for mac, loc in ((MAC1, "=cmd|' /C calc'!A0"), (MAC2, "Lobby")):
        await api.call(
            "POST", "/api/v1/tenants/contoso/devices", json={"mac": mac, "location": loc}
        )
    issued = await codes_for(api, {"all_awaiting_activation": True})
    assert [c["mac"] for c in issued] == [MAC1, MAC2]
    code1 = issued[0]["code"]
    assert len(code1) == 9 and code1[4] == "-"
    assert issued[0]["expires_at"] == "2026-11-28T12:00:00Z"  # 24 h after the injected clock

    status, text = await api.call("GET", "/api/v1/tenants/contoso/devices/export.csv")
    lines = text.strip().split("\r\n")
    assert lines[0] == "MAC ID,Location,Verification code,Code expires (UTC),State"
    assert (
        lines[1] == f"{MAC1},'=cmd|' /C calc'!A0,{code1},2026-11-28T12:00:00Z,awaiting_activation"
    )

    # Regenerating revokes the previous code.
    again = await codes_for(api, {"macs": ["02005e000101"]})
    assert again[0]["code"] != code1
    status, text = await api.call("GET", "/api/v1/tenants/contoso/devices/export.csv")
    assert code1 not in text and again[0]["code"] in text

    # Expired codes are no longer shown.
    api.clock.now += timedelta(hours=25)
    status, text = await api.call("GET", "/api/v1/tenants/contoso/devices/export.csv")
    assert again[0]["code"] not in text and issued[1]["code"] not in text

    # The export can be uploaded again into another tenant (extra columns ignored).
    await tenant(api, "other", "Other")
    await api.call("DELETE", f"/api/v1/tenants/contoso/devices/{MAC1}")
    await api.call("DELETE", f"/api/v1/tenants/contoso/devices/{MAC2}")
    status, body = await api.call(
        "POST", "/api/v1/tenants/other/devices/import", data=text.encode()
    )
    assert status == 201 and body["created"] == 2
    status, body = await api.call("GET", f"/api/v1/tenants/other/devices/{MAC1}")
    assert body["location"] == "=cmd|' /C calc'!A0"


async def test_code_requests_that_cannot_be_met_say_why(api: Api) -> None:
    await tenant(api)
    await api.call("POST", "/api/v1/tenants/contoso/devices", json={"mac": MAC1})
    status, body = await api.call(
        "POST", "/api/v1/tenants/contoso/verification-codes", json={"macs": [MAC1, "nope", MAC2]}
    )
    assert status == 422 and body["details"][0]["value"] == "nope"
    status, body = await api.call(
        "POST", "/api/v1/tenants/contoso/verification-codes", json={"macs": [MAC1, MAC2]}
    )
    assert status == 422 and body["details"] == [
        {"index": 1, "value": MAC2, "message": "not registered in this tenant"}
    ]
    status, body = await api.call("POST", "/api/v1/tenants/contoso/verification-codes", json={})
    assert status == 422 and "either" in body["message"]


async def test_no_plaintext_code_in_the_database_or_wal(api: Api) -> None:
    await tenant(api)
    data = "MAC ID,Location\n" + "\n".join(f"02:00:5e:00:03:{i:02x},r" for i in range(50))
    await api.call("POST", "/api/v1/tenants/contoso/devices/import", data=data.encode())
    issued = await codes_for(api, {"all_awaiting_activation": True})
    raw = b""
    for suffix in ("", "-wal", "-shm"):
        p = api.settings.store.path.with_name(api.settings.store.path.name + suffix)
        if p.exists():
            raw += p.read_bytes()
    assert raw, "expected database bytes to scan"
    for c in issued:
        plain = c["code"].replace("-", "")
        assert plain.encode() not in raw and c["code"].encode() not in raw
    status, body = await api.call("GET", "/api/v1/tenants/contoso/audit?limit=1000")
    assert all(
        c["code"] not in str(body) and c["code"].replace("-", "") not in str(body) for c in issued
    )


async def test_audit_records_who_what_and_before_after(api: Api) -> None:
    await tenant(api)
    await api.call("POST", "/api/v1/tenants/contoso/devices", json={"mac": MAC1, "location": "A"})
    await api.call("PATCH", f"/api/v1/tenants/contoso/devices/{MAC1}", json={"location": "B"})
    status, body = await api.call("GET", "/api/v1/tenants/contoso/audit")
    actions = [(e["action"], e["target"], e["before"], e["after"]) for e in body["results"]]
    assert actions[0] == ("device.update", MAC1, {"location": "A"}, {"location": "B"})
    assert actions[1][0] == "device.create"
    assert body["results"][0]["actor"].startswith("token:")


async def test_authentication_is_required_and_checked(api: Api) -> None:
    async with api.client.get("/api/v1/tenants") as r:
        assert r.status == 401 and (await r.json())["error"] == "unauthorized"
    status, body = await api.call("GET", "/api/v1/tenants", token="imp_wrong")
    assert status == 401 and "unknown or revoked" in body["message"]
    token, row = await api.registry.create_token("test", "operator", None)
    assert (await api.call("GET", "/api/v1/tenants", token=token))[0] == 200
    await api.registry.revoke_token("test", row.id)
    assert (await api.call("GET", "/api/v1/tenants", token=token))[0] == 401


async def test_tokens_are_stored_hashed(api: Api) -> None:
    token, _ = await api.registry.create_token("test", "operator", None)
    db = sqlite3.connect(api.settings.store.path)
    try:
        rows = db.execute("SELECT digest FROM api_tokens").fetchall()
    finally:
        db.close()
    assert all(token.encode() not in bytes(r[0]) for r in rows)


async def test_health_readiness_and_metrics(api: Api) -> None:
    async with api.client.get("/healthz") as r:
        assert r.status == 200
    async with api.client.get("/readyz") as r:
        assert r.status == 200 and (await r.json())["ready"] is True
    await tenant(api)
    await api.call("POST", "/api/v1/tenants/contoso/devices", json={"mac": MAC1})
    async with api.client.get("/metrics") as r:
        text = await r.text()
    assert 'imprint_devices{state="awaiting_activation"} 1' in text
