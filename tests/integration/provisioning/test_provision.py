"""POST /provision: the technician's code binds the device to its tenant, exactly once."""

from __future__ import annotations

import asyncio
import sqlite3
from datetime import timedelta
from typing import Any

from server.core.ratelimit import TokenBuckets
from server.registry.model import token_digest
from server.web.keys import SERVICES
from tests.helpers.app import Api

MAC1, MAC2 = "02:00:5e:00:01:01", "02:00:5e:00:01:02"


async def setup_devices(api: Api, *macs: str) -> dict[str, str]:
    await api.call("POST", "/api/v1/tenants", json={"id": "contoso", "name": "Contoso Ltd"})
    for m in macs:
        status, _ = await api.call(
            "POST", "/api/v1/tenants/contoso/devices", json={"mac": m, "location": "Room"}
        )
        assert status == 201
    return await issue(api, *macs)


async def issue(api: Api, *macs: str) -> dict[str, str]:
    status, body = await api.call(
        "POST", "/api/v1/tenants/contoso/verification-codes", json={"macs": list(macs)}
    )
    assert status == 201, body
    return {c["mac"]: c["code"] for c in body}


async def provision(api: Api, mac: str, code: str) -> tuple[int, Any]:
    async with api.client.post("/provision", json={"mac": mac, "code": code}) as r:
        return r.status, await r.json()


def unlimited(api: Api) -> None:
    api.client.app[SERVICES].provision_limiter = TokenBuckets(1e9, 1e9)


async def test_code_binds_device_to_tenant(api: Api) -> None:
    codes = await setup_devices(api, MAC1)
    typed = codes[MAC1].lower().replace("-", " ")  # case, spaces and dashes are ignored
    status, body = await provision(api, "02-00-5E-00-01-01", typed)
    assert status == 200, body
    assert body["status"] == "provisioned"
    assert body["tenant"] == {"id": "contoso", "name": "Contoso Ltd"}
    assert body["client_id"] == body["device_id"] and body["device_id"].startswith("dev_")
    assert len(body["client_secret"]) >= 40
    assert body["authorization_server"].endswith("/.well-known/oauth-authorization-server")

    status, dev = await api.call("GET", f"/api/v1/tenants/contoso/devices/{MAC1}")
    assert dev["state"] == "awaiting_sign_in"
    assert api.registry.index[MAC1].state == "awaiting_sign_in"
    status, audit = await api.call("GET", "/api/v1/tenants/contoso/audit")
    entry = audit["results"][0]
    assert entry["action"] == "provision.success" and entry["actor"] == f"device:{MAC1}@127.0.0.1"
    assert entry["after"]["source"] == "127.0.0.1"

    db = sqlite3.connect(api.settings.store.path)
    try:
        stored = db.execute(
            "SELECT client_secret_hash FROM devices WHERE mac = ?", (MAC1,)
        ).fetchone()[0]
    finally:
        db.close()
    assert stored and body["client_secret"].encode() not in bytes(stored)

    # The code is spent: a second entry is refused, and the export no longer shows it.
    status, body = await provision(api, MAC1, codes[MAC1])
    assert status == 409 and body["error"] == "already_provisioned" and "reset" in body["message"]
    status, text = await api.call("GET", "/api/v1/tenants/contoso/devices/export.csv")
    assert codes[MAC1] not in text


async def test_wrong_codes_count_down_then_lock(api: Api) -> None:
    codes = await setup_devices(api, MAC1)
    wrong = "BBBB-BBBB" if codes[MAC1] != "BBBB-BBBB" else "CCCC-CCCC"
    for left in (4, 3, 2, 1):
        status, body = await provision(api, MAC1, wrong)
        assert status == 401 and body["error"] == "wrong_code" and body["attempts_left"] == left
        assert f"{left} attempt" in body["message"]
    status, body = await provision(api, MAC1, wrong)
    assert status == 423 and body["error"] == "locked" and "new code" in body["message"]
    # Even the right code is refused now: the admin must issue a new one.
    status, body = await provision(api, MAC1, codes[MAC1])
    assert status == 423 and body["error"] == "locked"
    fresh = await issue(api, MAC1)
    status, body = await provision(api, MAC1, fresh[MAC1])
    assert status == 200, body


async def test_expired_code_says_ask_for_a_new_one(api: Api) -> None:
    codes = await setup_devices(api, MAC1)
    api.clock.now += timedelta(hours=24, seconds=1)
    status, body = await provision(api, MAC1, codes[MAC1])
    assert status == 410 and body["error"] == "expired_code" and "new code" in body["message"]


async def test_not_registered_no_code_and_malformed(api: Api) -> None:
    await setup_devices(api, MAC1)
    status, body = await provision(api, "02:00:5e:00:09:99", "BCDF-GHJK")
    assert (
        status == 404
        and body["error"] == "not_registered"
        and "02:00:5e:00:09:99" in body["message"]
    )
    await api.call("POST", "/api/v1/tenants/contoso/devices", json={"mac": MAC2})
    status, body = await provision(api, MAC2, "BCDF-GHJK")
    assert status == 409 and body["error"] == "no_code" and "generate" in body["message"]
    status, body = await provision(api, MAC1, "BCDF-GHJ")
    assert status == 400 and "8 letters" in body["message"]
    status, body = await provision(api, "not-a-mac", "BCDF-GHJK")
    assert status == 400 and "not a MAC address" in body["message"]
    async with api.client.post(
        "/provision", data=b"{", headers={"Content-Type": "application/json"}
    ) as r:
        assert r.status == 400


async def test_code_of_another_device_is_a_wrong_code(api: Api) -> None:
    codes = await setup_devices(api, MAC1, MAC2)
    status, body = await provision(api, MAC1, codes[MAC2])
    assert status == 401 and body["error"] == "wrong_code"
    status, body = await provision(api, MAC2, codes[MAC2])
    assert status == 200


async def test_reset_revokes_and_allows_provisioning_again(api: Api) -> None:
    codes = await setup_devices(api, MAC1)
    assert (await provision(api, MAC1, codes[MAC1]))[0] == 200
    status, dev = await api.call("POST", f"/api/v1/tenants/contoso/devices/{MAC1}/reset")
    assert (
        status == 200 and dev["state"] == "awaiting_activation" and dev["code_expires_at"] is None
    )
    status, body = await provision(api, MAC1, codes[MAC1])
    assert status == 409 and body["error"] == "no_code"
    fresh = await issue(api, MAC1)
    assert (await provision(api, MAC1, fresh[MAC1]))[0] == 200
    status, audit = await api.call("GET", "/api/v1/tenants/contoso/audit")
    assert "device.reset" in [e["action"] for e in audit["results"]]


async def test_per_source_rate_limit_answers_429_with_retry_after(api: Api) -> None:
    await setup_devices(api, MAC1)
    api.client.app[SERVICES].provision_limiter = TokenBuckets(0.01, 5)
    statuses = []
    for _ in range(8):
        async with api.client.post("/provision", json={"mac": MAC1, "code": "BCDF-GHJK"}) as r:
            statuses.append(r.status)
            if r.status == 429:
                assert int(r.headers["Retry-After"]) >= 1
                assert (await r.json())["error"] == "rate_limited"
    assert statuses[:5].count(429) == 0 and statuses[5:] == [429, 429, 429]


async def test_repeated_wrong_codes_from_one_source_are_slowed(api: Api) -> None:
    macs = [f"02:00:5e:00:07:{i:02x}" for i in range(12)]
    await setup_devices(api, *macs)
    unlimited(api)
    results = [await provision(api, m, "BBBB-BBBB") for m in macs]
    errors = [b["error"] for _, b in results]
    assert errors[:10] == ["wrong_code"] * 10 and errors[10:] == ["rate_limited"] * 2


async def test_dhcp_address_mismatch_is_audited_or_refused(api: Api) -> None:
    codes = await setup_devices(api, MAC1, MAC2)
    api.client.app[SERVICES].sightings.saw(MAC1, "198.18.77.11", 0.0)
    status, body = await provision(api, MAC1, codes[MAC1])
    assert status == 200
    status, audit = await api.call("GET", "/api/v1/tenants/contoso/audit")
    assert "DHCP saw this MAC at 198.18.77.11" in audit["results"][0]["after"]["warning"]

    result = await api.registry.provisioning.redeem(
        MAC2, codes[MAC2], "127.0.0.1", dhcp_address="198.18.77.12", require_dhcp_match=True
    )
    assert result.error == "address_mismatch"
    result = await api.registry.provisioning.redeem(
        MAC2, codes[MAC2], "198.18.77.12", dhcp_address="198.18.77.12", require_dhcp_match=True
    )
    assert result.error is None


async def test_concurrent_redemptions_of_one_code_succeed_exactly_once(api: Api) -> None:
    await api.call("POST", "/api/v1/tenants", json={"id": "contoso", "name": "Contoso"})
    unlimited(api)
    for round_ in range(200):
        mac = f"02:00:5e:01:{round_ >> 8:02x}:{round_ & 255:02x}"
        await api.call("POST", "/api/v1/tenants/contoso/devices", json={"mac": mac})
        code = (await issue(api, mac))[mac]
        results = await asyncio.gather(*(provision(api, mac, code) for _ in range(16)))
        ok = [b for s, b in results if s == 200]
        assert len(ok) == 1, (round_, [s for s, _ in results])
        assert all(s == 409 for s, _ in results if s != 200)
    status, body = await api.call(
        "GET", "/api/v1/tenants/contoso/devices?state=awaiting_sign_in&limit=1"
    )
    assert body["count"] == 200


async def test_code_entry_runs_inline_without_a_round_trip_to_the_writer_thread(
    api: Api,
) -> None:
    """The whole redemption (read, consume, state change, change log, audit) is one transaction
    on the inline connection: the writer connection's thread sees no statement of it."""
    codes = await setup_devices(api, MAC1)
    writer = api.registry.store._w
    seen: list[str] = []
    real = writer.execute

    def spy(sql: str, *args: Any, **kw: Any) -> Any:
        seen.append(sql)
        return real(sql, *args, **kw)

    writer.execute = spy  # type: ignore[method-assign]
    try:
        status, body = await provision(api, MAC1, codes[MAC1])
    finally:
        writer.execute = real  # type: ignore[method-assign]
    assert status == 200, body
    assert seen == []
    assert api.registry.index[MAC1].state == "awaiting_sign_in"
    status, audit = await api.call("GET", "/api/v1/tenants/contoso/audit")
    assert audit["results"][0]["action"] == "provision.success"


async def test_code_entry_waits_for_another_process_holding_the_lock_then_succeeds_once(
    api: Api,
) -> None:
    """Another process (the CLI, an import) holds the write lock: the inline connection never
    waits on the loop; the entry goes through the writer's thread, which does, and it still
    succeeds exactly once."""
    codes = await setup_devices(api, MAC1)
    unlimited(api)
    other = sqlite3.connect(api.registry.store.path, isolation_level=None)
    other.execute("BEGIN IMMEDIATE")
    entries = [asyncio.create_task(provision(api, MAC1, codes[MAC1])) for _ in range(4)]
    await asyncio.sleep(0.3)
    assert not any(t.done() for t in entries)  # waiting for the lock, not failing
    other.execute("COMMIT")
    other.close()
    results = await asyncio.wait_for(asyncio.gather(*entries), 10)
    assert sorted(s for s, _ in results) == [200, 409, 409, 409]
    assert api.registry.index[MAC1].state == "awaiting_sign_in"


async def test_a_failed_inline_transaction_leaves_nothing_behind(api: Api) -> None:
    codes = await setup_devices(api, MAC1)
    store = api.registry.store
    try:
        async with store.quick_transaction("2026-11-27T12:00:00Z") as tx:
            await tx.execute("UPDATE codes SET failed_attempts = 3 WHERE mac = ?", (MAC1,))
            await tx.audit("test", "contoso", "test.action", MAC1)
            raise RuntimeError("boom")
    except RuntimeError:
        pass
    row = await store._one("SELECT failed_attempts FROM codes WHERE mac = ?", (MAC1,))
    assert row[0] == 0
    status, body = await provision(api, MAC1, codes[MAC1])  # the inline connection still works
    assert status == 200, body


async def test_a_retry_after_a_lost_response_gets_new_credentials(api: Api) -> None:
    """Issue 17: a crash between commit and response left a provisioned device whose client
    never got its secret, and its retry got 409. Now the same code from the same address,
    3 s to 5 min later, gets new credentials, and the unseen ones stop working."""
    codes = await setup_devices(api, MAC1)
    status, first = await provision(api, MAC1, codes[MAC1])
    assert status == 200
    # A concurrent entry of the same code (no gap) is still the loser: exactly one success.
    status, body = await provision(api, MAC1, codes[MAC1])
    assert status == 409 and body["error"] == "already_provisioned"
    api.clock.now += timedelta(seconds=30)
    status, again = await provision(api, MAC1, codes[MAC1])
    assert status == 200, again
    assert again["device_id"] == first["device_id"]
    assert again["client_secret"] != first["client_secret"]
    db = sqlite3.connect(api.settings.store.path)
    try:
        (stored,) = db.execute(
            "SELECT client_secret_hash FROM devices WHERE mac = ?", (MAC1,)
        ).fetchone()
    finally:
        db.close()
    assert bytes(stored) == token_digest(again["client_secret"])
    status, audit = await api.call("GET", "/api/v1/tenants/contoso/audit")
    assert audit["results"][0]["action"] == "provision.retry"
    # A wrong code, or past the window, is refused as before.
    status, body = await provision(api, MAC1, "0000-0000")
    assert status in (400, 409)
    api.clock.now += timedelta(minutes=10)
    status, body = await provision(api, MAC1, codes[MAC1])
    assert status == 409 and body["error"] == "already_provisioned"
