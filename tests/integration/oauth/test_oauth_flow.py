"""RFC 8628 over real sockets: device authorization, polling and its errors, tokens, refresh
rotation, sign-out, and the admin's "Sign in a user"."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import re
import sqlite3
from datetime import timedelta
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature
from joserfc import jwt
from joserfc.jwk import KeySet

from tests.helpers.app import Api
from tests.helpers.oauth import (
    DEVICE_GRANT,
    PASSWORD,
    Browser,
    DeviceClient,
    make_tenant,
    make_user,
    oauth_post,
    poll,
    provisioned_device,
    refresh,
    start,
)

MAC1, MAC2 = "02:00:5e:00:51:01", "02:00:5e:00:51:02"
USER_CODE = re.compile(r"^[BCDFGHJKLMNPQRSTVWXZ]{4}-[BCDFGHJKLMNPQRSTVWXZ]{4}$")
PUBLIC = "http://127.0.0.1:8080"  # [http] public_url in the test settings


async def ready(api: Api, location: str = "Boardroom 4") -> DeviceClient:
    await make_tenant(api, "contoso", "Contoso Ltd")
    await make_user(api, "contoso", "room-4@contoso.com", display_name="Boardroom 4")
    return await provisioned_device(api, "contoso", MAC1, location)


async def signed_in(api: Api) -> tuple[DeviceClient, dict[str, Any]]:
    dev = await ready(api)
    auth = await start(api, dev)
    _, result = await Browser(api).sign_in(auth["user_code"], "room-4@contoso.com")
    assert result.status == 200, result.html
    status, tokens = await poll(api, dev, auth["device_code"])
    assert status == 200, tokens
    return dev, tokens


async def device(api: Api, mac: str = MAC1) -> dict[str, Any]:
    status, body = await api.call("GET", f"/api/v1/tenants/contoso/devices/{mac}")
    assert status == 200
    return dict(body)


async def audit_actions(api: Api, tenant: str = "contoso") -> list[str]:
    status, body = await api.call("GET", f"/api/v1/tenants/{tenant}/audit")
    assert status == 200
    return [e["action"] for e in body["results"]]


def b64d(s: str) -> bytes:
    return base64.urlsafe_b64decode(s + "=" * (-len(s) % 4))


async def test_metadata_advertises_the_device_grant_and_jwks(api: Api) -> None:
    async with api.client.get("/.well-known/oauth-authorization-server") as r:
        assert r.status == 200
        meta = await r.json()
    assert meta["issuer"] == PUBLIC
    assert meta["device_authorization_endpoint"] == f"{PUBLIC}/oauth2/device_authorization"
    assert meta["token_endpoint"] == f"{PUBLIC}/oauth2/token"
    assert meta["jwks_uri"] == f"{PUBLIC}/oauth2/jwks"
    assert meta["grant_types_supported"] == [DEVICE_GRANT, "refresh_token"]
    assert meta["token_endpoint_auth_methods_supported"] == [
        "client_secret_basic",
        "client_secret_post",
    ]
    assert meta["response_types_supported"] == []
    async with api.client.get("/oauth2/jwks") as r:
        jwks = json.loads(await r.text())
    (key,) = jwks["keys"]
    assert key["kty"] == "EC" and key["crv"] == "P-256" and key["alg"] == "ES256"
    assert "d" not in key  # never the private half
    # RFC 7638 §3: SHA-256 over the required members in lexicographic order, no whitespace.
    canonical = '{"crv":"P-256","kty":"EC","x":"' + key["x"] + '","y":"' + key["y"] + '"}'
    thumb = base64.urlsafe_b64encode(hashlib.sha256(canonical.encode()).digest()).rstrip(b"=")
    assert key["kid"] == thumb.decode()
    key_file = api.settings.state_dir / "imprint-oauth-signing.pem"
    assert key_file.stat().st_mode & 0o777 == 0o600


async def test_device_flow_pending_then_approved_gives_verifiable_jwt(api: Api) -> None:
    dev = await ready(api)
    auth = await start(api, dev, scope="teams calendar teams")
    assert USER_CODE.match(auth["user_code"]), auth["user_code"]
    assert len(auth["device_code"]) >= 43  # 32 random bytes, base64url: >= 128 bits
    assert auth["verification_uri"] == f"{PUBLIC}/device"
    assert auth["verification_uri_complete"] == f"{PUBLIC}/device?user_code={auth['user_code']}"
    assert auth["expires_in"] == 900 and auth["interval"] == 5

    status, body = await poll(api, dev, auth["device_code"])
    assert status == 400 and body["error"] == "authorization_pending"
    assert (await device(api))["state"] == "awaiting_sign_in"

    api.clock.now += timedelta(seconds=5)
    confirm, result = await Browser(api).sign_in(auth["user_code"], "Room-4@Contoso.com")
    assert result.status == 200 and "signs in as room-4@contoso.com" in result.html
    dev_row = await device(api)
    assert dev_row["state"] == "signed_in" and dev_row["signed_in_user"] == "room-4@contoso.com"
    assert api.registry.index[MAC1].state == "signed_in"

    status, tokens = await poll(api, dev, auth["device_code"])
    assert status == 200, tokens
    assert tokens["token_type"] == "Bearer" and tokens["expires_in"] == 3600
    assert tokens["scope"] == "teams calendar" and len(tokens["refresh_token"]) >= 43

    # Verified with an independent JOSE library against the published JWKS.
    async with api.client.get("/oauth2/jwks") as r:
        keys = KeySet.import_key_set(json.loads(await r.text()))
    tok = jwt.decode(tokens["access_token"], keys, algorithms=["ES256"])
    assert tok.header["alg"] == "ES256" and tok.header["typ"] == "at+jwt"
    c = tok.claims
    now = int(api.clock.now.timestamp())
    assert c["iss"] == PUBLIC and c["aud"] == PUBLIC and c["sub"] == "room-4@contoso.com"
    assert c["client_id"] == dev.client_id and c["tenant"] == "contoso"
    assert c["iat"] == now and c["exp"] == now + 3600 and len(c["jti"]) >= 16
    assert c["scope"] == "teams calendar"

    # And once more with cryptography alone: R || S (RFC 7518 §3.4) over header.payload.
    jwk = keys.get_by_kid(tok.header["kid"]).as_dict()
    pub = ec.EllipticCurvePublicNumbers(
        int.from_bytes(b64d(jwk["x"]), "big"),
        int.from_bytes(b64d(jwk["y"]), "big"),
        ec.SECP256R1(),
    ).public_key()
    h, p, s = tokens["access_token"].split(".")
    sig = b64d(s)
    der = encode_dss_signature(int.from_bytes(sig[:32], "big"), int.from_bytes(sig[32:], "big"))
    pub.verify(der, f"{h}.{p}".encode(), ec.ECDSA(hashes.SHA256()))
    tampered = json.loads(b64d(p))
    tampered["tenant"] = "fabrikam"
    forged = base64.urlsafe_b64encode(json.dumps(tampered).encode()).rstrip(b"=").decode()
    try:
        pub.verify(der, f"{h}.{forged}".encode(), ec.ECDSA(hashes.SHA256()))
        raise AssertionError("a tampered payload verified")
    except InvalidSignature:
        pass

    # The device code is spent.
    status, body = await poll(api, dev, auth["device_code"])
    assert status == 400 and body["error"] == "invalid_grant"
    assert "oauth.approve" in await audit_actions(api)
    # §5.4: the page named the device, its location and the tenant before approval.
    assert confirm.page.text_by_id["mac"].strip() == MAC1
    assert confirm.page.text_by_id["location"].strip() == "Boardroom 4"
    assert "Contoso Ltd" in confirm.page.text_by_id["tenant"]


async def test_polling_faster_than_the_interval_gets_slow_down_and_a_longer_interval(
    api: Api,
) -> None:
    dev = await ready(api)
    auth = await start(api, dev)
    assert (await poll(api, dev, auth["device_code"]))[1]["error"] == "authorization_pending"
    status, body = await poll(api, dev, auth["device_code"])  # at once: too fast
    assert status == 400 and body["error"] == "slow_down"
    # The interval is now 10 s for good: 5 s later is still too fast...
    api.clock.now += timedelta(seconds=5)
    assert (await poll(api, dev, auth["device_code"]))[1]["error"] == "slow_down"
    # ... and now 15 s; waiting 14 is not enough, waiting 15 is.
    api.clock.now += timedelta(seconds=14)
    assert (await poll(api, dev, auth["device_code"]))[1]["error"] == "slow_down"
    api.clock.now += timedelta(seconds=20)
    assert (await poll(api, dev, auth["device_code"]))[1]["error"] == "authorization_pending"
    api.clock.now += timedelta(seconds=20)
    assert (await poll(api, dev, auth["device_code"]))[1]["error"] == "authorization_pending"
    async with api.client.get("/metrics") as r:
        text = await r.text()
    assert (
        'imprint_oauth_token_requests_total{grant_type="device_code",result="slow_down"} 3' in text
    )
    assert (
        'imprint_oauth_token_requests_total{grant_type="device_code",'
        'result="authorization_pending"} 3' in text
    )


async def test_deny_on_the_page_gives_access_denied(api: Api) -> None:
    dev = await ready(api)
    auth = await start(api, dev)
    _, result = await Browser(api).sign_in(auth["user_code"], "room-4@contoso.com", "deny")
    assert result.status == 200 and "denied" in result.html
    status, body = await poll(api, dev, auth["device_code"])
    assert status == 400 and body["error"] == "access_denied"
    assert (await device(api))["state"] == "awaiting_sign_in"
    assert "oauth.deny" in await audit_actions(api)
    # The code is used up: it cannot be approved afterwards.
    page = await Browser(api).login(auth["user_code"], "room-4@contoso.com")
    assert page.status == 400 and "not valid or has expired" in page.html


async def test_expired_device_code_gives_expired_token(api: Api) -> None:
    dev = await ready(api)
    auth = await start(api, dev)
    api.clock.now += timedelta(seconds=901)
    status, body = await poll(api, dev, auth["device_code"])
    assert status == 400 and body["error"] == "expired_token"
    page = await Browser(api).login(auth["user_code"], "room-4@contoso.com")
    assert page.status == 400 and "not valid or has expired" in page.html
    status, body = await api.call("POST", f"/api/v1/tenants/contoso/devices/{MAC1}/sign-in")
    assert status == 409 and "has not started sign-in" in body["message"]


async def test_client_authentication_failures_are_invalid_client(api: Api) -> None:
    dev = await ready(api)
    wrong = DeviceClient(dev.mac, dev.tenant, dev.client_id, dev.secret[:-2] + "xx")
    for path in ("/oauth2/device_authorization", "/oauth2/token"):
        status, body, headers = await oauth_post(
            api, path, {"grant_type": DEVICE_GRANT, "device_code": "x"}, wrong
        )
        assert status == 401 and body["error"] == "invalid_client", (path, body)
        assert headers["WWW-Authenticate"].startswith("Basic")
    # No authentication at all, an unknown client, the secret in the body but a wrong one.
    status, body, _ = await oauth_post(
        api, "/oauth2/device_authorization", {"client_id": dev.client_id}
    )
    assert status == 401 and body["error"] == "invalid_client"
    status, body, _ = await oauth_post(
        api,
        "/oauth2/device_authorization",
        {"client_id": "dev_000000000000000000000000", "client_secret": dev.secret},
    )
    assert status == 401 and body["error"] == "invalid_client"
    # client_secret_post with the right secret works; two methods at once do not.
    status, body, _ = await oauth_post(
        api,
        "/oauth2/device_authorization",
        {"client_id": dev.client_id, "client_secret": dev.secret},
    )
    assert status == 200 and USER_CODE.match(body["user_code"])
    status, body, _ = await oauth_post(
        api, "/oauth2/device_authorization", {"client_secret": dev.secret}, dev
    )
    assert status == 400 and body["error"] == "invalid_request"

    # A registered device that was never provisioned has no secret to present.
    await api.call("POST", "/api/v1/tenants/contoso/devices", json={"mac": MAC2})
    unprovisioned = (await device(api, MAC2))["device_id"]
    status, body, _ = await oauth_post(
        api,
        "/oauth2/device_authorization",
        {"client_id": unprovisioned, "client_secret": "anything-at-all"},
    )
    assert status == 401 and body["error"] == "invalid_client"

    # A reset device's old secret is refused on both endpoints.
    auth = await start(api, dev)
    status, _ = await api.call("POST", f"/api/v1/tenants/contoso/devices/{MAC1}/reset")
    assert status == 200
    status, body, _ = await oauth_post(
        api, "/oauth2/device_authorization", {"client_id": dev.client_id}, dev
    )
    assert status == 401 and body["error"] == "invalid_client"
    status, body = await poll(api, dev, auth["device_code"])
    assert status == 401 and body["error"] == "invalid_client"
    async with api.client.get("/metrics") as r:
        assert 'grant_type="device_code",result="invalid_client"' in await r.text()


async def test_a_form_body_that_arrives_in_pieces_is_read_whole(api: Api) -> None:
    # A device's TLS stack may send the body in more than one record or segment; the form is
    # what all of them carry, not the first piece (which lost the client_secret here).
    dev = await ready(api)
    body = f"client_id={dev.client_id}&client_secret={dev.secret}".encode()
    reader, writer = await asyncio.open_connection("127.0.0.1", api.client.port)
    writer.write(
        b"POST /oauth2/device_authorization HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        b"Content-Type: application/x-www-form-urlencoded\r\n"
        b"Content-Length: %d\r\nConnection: close\r\n\r\n" % len(body) + body[:12]
    )
    await writer.drain()
    await asyncio.sleep(0.2)
    writer.write(body[12:])
    await writer.drain()
    answer = await asyncio.wait_for(reader.read(), 10)
    writer.close()
    head, _, payload = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200"), answer
    assert USER_CODE.match(json.loads(payload)["user_code"]), payload


async def test_bad_token_requests(api: Api) -> None:
    dev = await ready(api)
    status, body, _ = await oauth_post(api, "/oauth2/token", {"grant_type": "password"}, dev)
    assert status == 400 and body["error"] == "unsupported_grant_type"
    status, body, _ = await oauth_post(api, "/oauth2/token", {"grant_type": DEVICE_GRANT}, dev)
    assert (
        status == 400
        and body["error"] == "invalid_request"
        and "device_code" in (body["error_description"])
    )
    status, body, _ = await oauth_post(api, "/oauth2/token", {}, dev)
    assert status == 400 and body["error"] == "invalid_request"
    status, body = await poll(api, dev, "not-a-device-code")
    assert status == 400 and body["error"] == "invalid_grant"
    async with api.client.post(
        "/oauth2/token",
        json={"grant_type": DEVICE_GRANT},
        headers={"Authorization": f"Basic {base64.b64encode(b'a:b').decode()}"},
    ) as r:
        assert r.status == 400 and (await r.json())["error"] == "invalid_request"
    async with api.client.post(
        "/oauth2/token",
        data=b"grant_type=refresh_token&grant_type=refresh_token&refresh_token=x",
        headers={
            "Content-Type": "application/x-www-form-urlencoded",
            "Authorization": f"Basic {base64.b64encode(f'{dev.client_id}:{dev.secret}'.encode()).decode()}",
        },
    ) as r:
        body = await r.json()
        assert r.status == 400 and body["error"] == "invalid_request", body
        assert "more than once" in body["error_description"]
    status, body, _ = await oauth_post(
        api, "/oauth2/device_authorization", {"scope": 'bad"scope'}, dev
    )
    assert status == 400 and body["error"] == "invalid_scope"


async def test_another_clients_device_code_is_invalid_grant(api: Api) -> None:
    dev = await ready(api)
    other = await provisioned_device(api, "contoso", MAC2)
    auth = await start(api, dev)
    status, body = await poll(api, other, auth["device_code"])
    assert status == 400 and body["error"] == "invalid_grant"


async def test_refresh_tokens_rotate_and_a_replay_revokes_the_sign_in(api: Api) -> None:
    dev, tokens = await signed_in(api)
    api.clock.now += timedelta(minutes=50)
    status, second = await refresh(api, dev, tokens["refresh_token"])
    assert status == 200, second
    assert second["refresh_token"] != tokens["refresh_token"]
    assert second["access_token"] != tokens["access_token"]
    status, third = await refresh(api, dev, second["refresh_token"])
    assert status == 200, third
    # Each refresh token is single use; using a spent one again ends the whole sign-in.
    status, body = await refresh(api, dev, second["refresh_token"])
    assert status == 400 and body["error"] == "invalid_grant"
    status, body = await refresh(api, dev, third["refresh_token"])
    assert status == 400 and body["error"] == "invalid_grant"
    dev_row = await device(api)
    assert dev_row["state"] == "awaiting_sign_in" and dev_row["signed_in_user"] is None
    assert "oauth.refresh_replay" in await audit_actions(api)
    # Another device cannot use a device's refresh token.
    other = await provisioned_device(api, "contoso", MAC2)
    status, body = await refresh(api, other, third["refresh_token"])
    assert status == 400 and body["error"] == "invalid_grant"


async def test_refresh_token_expires_and_cannot_widen_scope(api: Api) -> None:
    dev = await ready(api)
    auth = await start(api, dev, scope="teams")
    await Browser(api).sign_in(auth["user_code"], "room-4@contoso.com")
    status, tokens = await poll(api, dev, auth["device_code"])
    assert status == 200
    status, body, _ = await oauth_post(
        api,
        "/oauth2/token",
        {"grant_type": "refresh_token", "refresh_token": tokens["refresh_token"], "scope": "admin"},
        dev,
    )
    assert status == 400 and body["error"] == "invalid_scope"
    api.clock.now += timedelta(days=30, seconds=1)
    status, body = await refresh(api, dev, tokens["refresh_token"])
    assert (
        status == 400
        and body["error"] == "invalid_grant"
        and "expired" in (body["error_description"])
    )


async def test_sign_out_revokes_tokens_and_the_device_notices(api: Api) -> None:
    dev, tokens = await signed_in(api)
    status, body, _ = await oauth_post(
        api,
        "/oauth2/introspect",
        {"token": tokens["access_token"]},
        headers={"Authorization": f"Bearer {api.operator}"},
    )
    assert status == 200 and body["active"] is True and body["sub"] == "room-4@contoso.com"

    status, out = await api.call("POST", f"/api/v1/tenants/contoso/devices/{MAC1}/sign-out")
    assert status == 200 and out["state"] == "awaiting_sign_in" and out["signed_in_user"] is None
    assert api.registry.index[MAC1].state == "awaiting_sign_in"
    status, body = await refresh(api, dev, tokens["refresh_token"])
    assert status == 400 and body["error"] == "invalid_grant"
    status, body, _ = await oauth_post(
        api,
        "/oauth2/introspect",
        {"token": tokens["access_token"]},
        headers={"Authorization": f"Bearer {api.operator}"},
    )
    assert status == 200 and body == {"active": False}
    assert "device.sign_out" in await audit_actions(api)
    # It can sign in again from the start.
    auth = await start(api, dev)
    await Browser(api).sign_in(auth["user_code"], "room-4@contoso.com")
    assert (await poll(api, dev, auth["device_code"]))[0] == 200


async def test_introspection_needs_an_api_token_and_respects_tenants(api: Api) -> None:
    dev, tokens = await signed_in(api)
    status, body, _ = await oauth_post(api, "/oauth2/introspect", {"token": tokens["access_token"]})
    assert status == 401
    await make_tenant(api, "fabrikam", "Fabrikam")
    other, _ = await api.registry.create_token("test", "admin", "fabrikam")
    own, _ = await api.registry.create_token("test", "admin", "contoso")
    for token, active in ((other, False), (own, True)):
        for t in (tokens["access_token"], tokens["refresh_token"]):
            status, body, _ = await oauth_post(
                api,
                "/oauth2/introspect",
                {"token": t},
                headers={"Authorization": f"Bearer {token}"},
            )
            assert status == 200 and body["active"] is active, (t[:10], body)
    api.clock.now += timedelta(hours=1)
    status, body, _ = await oauth_post(
        api,
        "/oauth2/introspect",
        {"token": tokens["access_token"]},
        headers={"Authorization": f"Bearer {own}"},
    )
    assert body == {"active": False}  # expired


async def test_admin_sign_in_returns_the_pending_code_to_complete(api: Api) -> None:
    dev = await ready(api)
    status, body = await api.call("POST", f"/api/v1/tenants/contoso/devices/{MAC1}/sign-in")
    assert status == 409
    assert body["message"] == "the device has not started sign-in; check it shows its sign-in page"
    first = await start(api, dev)
    auth = await start(api, dev)  # a new request replaces the one before it
    status, body = await poll(api, dev, first["device_code"])
    assert status == 400 and body["error"] == "invalid_grant"
    status, body = await api.call("POST", f"/api/v1/tenants/contoso/devices/{MAC1}/sign-in")
    assert status == 200, body
    assert body["user_code"] == auth["user_code"] and body["mac"] == MAC1
    assert body["verification_uri"] == f"{PUBLIC}/device"
    assert body["verification_uri_complete"] == auth["verification_uri_complete"]
    assert body["expires_at"] == "2026-11-27T12:15:00Z"
    # The admin opens verification_uri_complete: the code is filled in already.
    browser = Browser(api)
    page = await browser.open(body["verification_uri_complete"])
    prefilled = [i for i in page.page.forms[0].inputs if i.get("name") == "user_code"]
    assert prefilled[0]["value"] == auth["user_code"]
    confirm = await browser.submit(page, {"username": "room-4@contoso.com", "password": PASSWORD})
    assert confirm.status == 200, confirm.html
    result = await browser.submit(confirm, {}, "approve")
    assert result.status == 200
    assert (await poll(api, dev, auth["device_code"]))[0] == 200
    assert "device.sign_in" in await audit_actions(api)
    # Once redeemed there is nothing pending any more.
    status, body = await api.call("POST", f"/api/v1/tenants/contoso/devices/{MAC1}/sign-in")
    assert status == 409


async def test_unprovisioned_device_has_no_sign_in(api: Api) -> None:
    await make_tenant(api, "contoso", "Contoso Ltd")
    await api.call("POST", "/api/v1/tenants/contoso/devices", json={"mac": MAC2})
    status, body = await api.call("POST", f"/api/v1/tenants/contoso/devices/{MAC2}/sign-in")
    assert status == 409 and "not provisioned" in body["message"]
    status, body = await api.call("POST", f"/api/v1/tenants/contoso/devices/{MAC2}/sign-out")
    assert status == 409


async def test_reset_and_delete_revoke_the_devices_grants(api: Api) -> None:
    dev, tokens = await signed_in(api)
    status, _ = await api.call("POST", f"/api/v1/tenants/contoso/devices/{MAC1}/reset")
    assert status == 200
    db = sqlite3.connect(api.settings.store.path)
    try:
        statuses = db.execute(
            "SELECT status FROM oauth_device_grants WHERE mac = ?", (MAC1,)
        ).fetchall()
        refresh_rows = db.execute("SELECT count(*) FROM oauth_refresh_tokens").fetchone()[0]
    finally:
        db.close()
    assert statuses == [("revoked",)] and refresh_rows == 0
    status, body, _ = await oauth_post(
        api,
        "/oauth2/introspect",
        {"token": tokens["access_token"]},
        headers={"Authorization": f"Bearer {api.operator}"},
    )
    assert body == {"active": False}
    status, _ = await api.call("DELETE", f"/api/v1/tenants/contoso/devices/{MAC1}")
    assert status == 204
    db = sqlite3.connect(api.settings.store.path)
    try:
        assert db.execute("SELECT count(*) FROM oauth_device_grants").fetchone()[0] == 0
    finally:
        db.close()


async def test_concurrent_polls_after_approval_redeem_the_code_once(api: Api) -> None:
    dev = await ready(api)
    for _ in range(10):
        auth = await start(api, dev)
        await Browser(api).sign_in(auth["user_code"], "room-4@contoso.com")
        results = await asyncio.gather(*(poll(api, dev, auth["device_code"]) for _ in range(8)))
        assert sorted(s for s, _ in results) == [200] + [400] * 7
        assert all(b["error"] == "invalid_grant" for s, b in results if s == 400)
        api.clock.now += timedelta(minutes=1)


async def test_disabling_the_user_signs_its_devices_out(api: Api) -> None:
    dev, tokens = await signed_in(api)
    status, body = await api.call(
        "PATCH", "/api/v1/tenants/contoso/users/room-4@contoso.com", json={"disabled": True}
    )
    assert status == 200 and body["disabled"] is True
    status, body = await refresh(api, dev, tokens["refresh_token"])
    assert status == 400 and body["error"] == "invalid_grant"
    assert (await device(api))["state"] == "awaiting_sign_in"
    auth = await start(api, dev)
    page = await Browser(api).login(auth["user_code"], "room-4@contoso.com")
    assert page.status == 400 and "disabled" in page.html


async def test_codes_and_tokens_are_not_stored_in_clear(api: Api) -> None:
    dev = await ready(api)
    auth = await start(api, dev)
    secrets_seen = [auth["device_code"], auth["user_code"], auth["user_code"].replace("-", "")]
    await Browser(api).sign_in(auth["user_code"], "room-4@contoso.com")
    _, tokens = await poll(api, dev, auth["device_code"])
    secrets_seen += [tokens["refresh_token"], tokens["access_token"], PASSWORD]
    db = sqlite3.connect(api.settings.store.path)
    try:
        dump = "\n".join(db.iterdump()).encode()
    finally:
        db.close()
    for secret in secrets_seen:
        assert secret.encode() not in dump
        hexed = secret.encode().hex()  # BLOB literals are hex in a dump
        assert hexed.encode() not in dump.lower()
    assert b"$argon2id$" in dump
