"""Tenant user accounts over the REST API: create, list, disable, reset password, isolation."""

from __future__ import annotations

import sqlite3

from argon2 import PasswordHasher

from server.api import users as api_users
from tests.helpers.app import Api
from tests.helpers.oauth import PASSWORD, Browser, make_tenant, make_user, provisioned_device, start

MAC_A, MAC_B = "02:00:5e:00:53:01", "02:00:5e:00:53:02"
USERS = "/api/v1/tenants/contoso/users"


async def test_create_list_get_and_validation(api: Api) -> None:
    await make_tenant(api, "contoso", "Contoso Ltd")
    await make_tenant(api, "fabrikam", "Fabrikam")
    status, body = await api.call(
        "POST",
        USERS,
        json={"username": " Room-1@Contoso.com ", "display_name": "Room 1", "password": PASSWORD},
    )
    assert status == 201, body
    assert body["username"] == "room-1@contoso.com" and body["tenant"] == "contoso"
    assert body["display_name"] == "Room 1" and body["disabled"] is False
    assert "password" not in str(body) and "argon2" not in str(body)
    await make_user(api, "contoso", "room-2@contoso.com")

    status, body = await api.call("GET", USERS)
    assert [u["username"] for u in body["results"]] == ["room-1@contoso.com", "room-2@contoso.com"]
    status, body = await api.call("GET", "/api/v1/tenants/fabrikam/users")
    assert status == 200 and body == {"count": 0, "results": []}
    status, body = await api.call("GET", f"{USERS}/ROOM-1@contoso.com")
    assert status == 200 and body["display_name"] == "Room 1"
    status, body = await api.call("GET", f"{USERS}/ghost")
    assert status == 404

    # Usernames are unique across tenants, and the answer does not say where it is taken.
    await make_user(api, "contoso", "lobby")
    status, body = await api.call(
        "POST", "/api/v1/tenants/fabrikam/users", json={"username": "lobby", "password": PASSWORD}
    )
    assert status == 409 and "already taken" in body["message"] and "contoso" not in body["message"]
    for bad, field in (
        ({"username": "-bad", "password": PASSWORD}, "username"),
        ({"username": "has space", "password": PASSWORD}, "username"),
        ({"username": "short-pw", "password": "1234567"}, "password"),
    ):
        status, body = await api.call("POST", USERS, json=bad)
        assert status == 422 and field in body["message"], body
    status, body = await api.call(
        "POST", USERS, json={"username": "x", "password": PASSWORD, "role": "admin"}
    )
    assert status == 400  # unknown field

    # Stored as argon2id; the audit log never carries a password.
    db = sqlite3.connect(api.settings.store.path)
    try:
        stored = db.execute(
            "SELECT password_hash FROM tenant_users WHERE username = 'room-1@contoso.com'"
        ).fetchone()[0]
    finally:
        db.close()
    assert stored.startswith("$argon2id$") and PasswordHasher().verify(stored, PASSWORD)
    status, body = await api.call("GET", "/api/v1/tenants/contoso/audit")
    created = [e for e in body["results"] if e["action"] == "user.create"]
    assert len(created) == 3 and PASSWORD not in str(body)


async def test_disable_enable_and_reset_password(api: Api) -> None:
    await make_tenant(api, "contoso", "Contoso Ltd")
    await make_user(api, "contoso", "room-1@contoso.com")
    dev = await provisioned_device(api, "contoso", MAC_A)
    status, body = await api.call(
        "PATCH", f"{USERS}/room-1@contoso.com", json={"disabled": True, "display_name": "Old"}
    )
    assert status == 200 and body["disabled"] is True and body["display_name"] == "Old"
    auth = await start(api, dev)
    page = await Browser(api).login(auth["user_code"], "room-1@contoso.com")
    assert page.status == 400
    status, body = await api.call("PATCH", f"{USERS}/room-1@contoso.com", json={"disabled": False})
    assert status == 200 and body["disabled"] is False

    new = "a brand new passphrase"
    status, _ = await api.call(
        "POST", f"{USERS}/room-1@contoso.com/password", json={"password": new}
    )
    assert status == 204
    status, body = await api.call(
        "POST", f"{USERS}/room-1@contoso.com/password", json={"password": "short"}
    )
    assert status == 422
    page = await Browser(api).login(auth["user_code"], "room-1@contoso.com", password=PASSWORD)
    assert page.status == 400
    _, result = await Browser(api).sign_in(auth["user_code"], "room-1@contoso.com", password=new)
    assert result.status == 200, result.html
    status, body = await api.call("GET", "/api/v1/tenants/contoso/audit")
    actions = [e["action"] for e in body["results"]]
    assert actions.count("user.update") == 2 and "user.password_reset" in actions
    assert new not in str(body)


async def test_every_sign_in_route_answers_404_to_another_tenants_admin(api: Api) -> None:
    await make_tenant(api, "a", "A")
    await make_tenant(api, "b", "B")
    await make_user(api, "b", "user@b.example")
    dev_b = await provisioned_device(api, "b", MAC_B)
    await start(api, dev_b)
    token_a, _ = await api.registry.create_token("test", "admin", "a")
    bodies = {
        "/api/v1/tenants/{tenant}/users": {"username": "evil@a.example", "password": PASSWORD},
        "/api/v1/tenants/{tenant}/users/{username}": {"disabled": True},
        "/api/v1/tenants/{tenant}/users/{username}/password": {"password": "hijacked-pass"},
    }
    ops = [op for op in api_users.routes.ops if "{tenant}" in op.path]
    assert len(ops) >= 7
    for op in ops:
        path = (
            op.path.replace("{tenant}", "b")
            .replace("{mac}", MAC_B)
            .replace("{username}", "user@b.example")
        )
        body = bodies.get(op.path)
        status, resp = await api.call(
            op.method, path, token=token_a, **({"json": body} if body else {})
        )
        assert status == 404, (op.method, path, status, resp)
        # Not even a malformed body gets past the tenant check.
        status, resp = await api.call(op.method, path, token=token_a, data=b"not json")
        assert status == 404, (op.method, path, status, resp)
    status, body = await api.call("GET", "/api/v1/tenants/b/users")
    assert body["results"][0]["disabled"] is False and len(body["results"]) == 1
    status, device = await api.call("GET", f"/api/v1/tenants/b/devices/{MAC_B}")
    assert device["state"] == "awaiting_sign_in"
    status, body = await api.call("GET", "/api/v1/tenants/b/audit")
    assert [e["action"] for e in body["results"]].count("device.sign_in") == 0
    # The tenant's own admin can do all of it.
    token_b, _ = await api.registry.create_token("test", "admin", "b")
    status, body = await api.call(
        "POST", f"/api/v1/tenants/b/devices/{MAC_B}/sign-in", token=token_b
    )
    assert status == 200 and body["mac"] == MAC_B
