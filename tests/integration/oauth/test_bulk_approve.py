"""The admin's bulk approval of pending sign-ins (a rollout): real server, real SQLite file."""

from __future__ import annotations

from tests.helpers.app import Api
from tests.helpers.oauth import make_tenant, make_user, poll, provisioned_device, start

MACS = ["02:00:5e:00:52:01", "02:00:5e:00:52:02", "02:00:5e:00:52:03"]
URL = "/api/v1/tenants/contoso/sign-ins/approve"
USER = "rollout@contoso.com"


async def test_bulk_approval_signs_in_every_pending_device_and_is_audited(api: Api) -> None:
    await make_tenant(api, "contoso", "Contoso Ltd")
    await make_user(api, "contoso", USER)
    devices = [
        await provisioned_device(api, "contoso", mac, f"Room {i}") for i, mac in enumerate(MACS)
    ]
    auths = [await start(api, dev) for dev in devices[:2]]  # the third has not asked yet

    status, body = await api.call("POST", URL, json={"user": USER, "macs": MACS})
    assert status == 200, body
    assert body["user"] == USER and body["approved"] == 2
    assert sorted(body["macs"]) == MACS[:2] and body["not_pending"] == [MACS[2]]

    for dev, auth in zip(devices, auths, strict=False):
        status, tokens = await poll(api, dev, auth["device_code"])
        assert status == 200, tokens
        assert tokens["token_type"] == "Bearer" and tokens["refresh_token"]
        status, d = await api.call("GET", f"/api/v1/tenants/contoso/devices/{dev.mac}")
        assert d["state"] == "signed_in" and d["signed_in_user"] == USER, d

    # Again, for all pending: only the third (now asking) is approved; the others are done.
    third = await start(api, devices[2])
    status, body = await api.call("POST", URL, json={"user": USER, "all_pending": True})
    assert status == 200 and body["macs"] == [MACS[2]] and body["not_pending"] == [], body
    status, tokens = await poll(api, devices[2], third["device_code"])
    assert status == 200, tokens

    status, audit = await api.call("GET", "/api/v1/tenants/contoso/audit?action=oauth.approve")
    assert status == 200
    entries = [e for e in audit["results"] if e["action"] == "oauth.approve"]
    assert sorted(e["target"] for e in entries) == MACS
    assert all(e["actor"].startswith("token:") and e["after"]["user"] == USER for e in entries)


async def test_bulk_approval_refuses_bad_input_and_changes_nothing(api: Api) -> None:
    await make_tenant(api, "contoso", "Contoso Ltd")
    await make_tenant(api, "fabrikam", "Fabrikam")
    await make_user(api, "contoso", USER)
    await make_user(api, "fabrikam", "someone@fabrikam.com")
    dev = await provisioned_device(api, "contoso", MACS[0])
    auth = await start(api, dev)

    cases = [
        ({"user": USER}, 422, "either"),
        ({"user": USER, "macs": [MACS[0]], "all_pending": True}, 422, "either"),
        ({"user": USER, "macs": ["not-a-mac"]}, 422, "not valid"),
        ({"user": USER, "macs": [MACS[0], "02:00:5e:00:52:99"]}, 422, "not devices of"),
        ({"user": "nobody@contoso.com", "all_pending": True}, 422, "no user account"),
        # An account of another tenant cannot be used to sign this tenant's devices in.
        ({"user": "someone@fabrikam.com", "all_pending": True}, 422, "no user account"),
        ({"user": "Bad User!", "all_pending": True}, 422, "not a valid username"),
        ({"user": USER, "all_pending": True, "extra": 1}, 400, "schema"),
    ]
    for payload, want, says in cases:
        status, body = await api.call("POST", URL, json=payload)
        assert status == want, (payload, status, body)
        assert says in body["message"], (payload, body)

    status, _ = await api.call(
        "PATCH", f"/api/v1/tenants/contoso/users/{USER}", json={"disabled": True}
    )
    assert status == 200
    status, body = await api.call("POST", URL, json={"user": USER, "all_pending": True})
    assert status == 409 and "disabled" in body["message"], body

    # Nothing was approved: the device is still waiting.
    status, body = await poll(api, dev, auth["device_code"])
    assert status == 400 and body["error"] == "authorization_pending", body
