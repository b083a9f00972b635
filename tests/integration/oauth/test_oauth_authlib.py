"""A generic OAuth client library (authlib over httpx) completes the device flow against Imprint
while the test approves on the verification page: the server is not tied to our emulator."""

from __future__ import annotations

import asyncio
import json
import warnings
from datetime import timedelta
from urllib.parse import urlsplit

import httpx
import pytest
from joserfc import jwt
from joserfc.jwk import KeySet

from tests.helpers.app import Api
from tests.helpers.oauth import Browser, make_tenant, make_user, provisioned_device

with warnings.catch_warnings():
    # authlib warns at import that it falls back from httpx2 to httpx: its own migration
    # notice, not a fault of the code under test. Its module installs an "always" filter
    # for that warning when imported, so ours goes in front of it afterwards.
    import authlib.deprecate

    warnings.simplefilter("ignore", authlib.deprecate.AuthlibDeprecationWarning)
    from authlib.integrations.httpx_client import AsyncOAuth2Client, OAuthError

DEVICE_GRANT = "urn:ietf:params:oauth:grant-type:device_code"
MAC = "02:00:5e:00:54:01"


@pytest.mark.parametrize("method", ["client_secret_basic", "client_secret_post"])
async def test_authlib_completes_the_device_flow(api: Api, method: str) -> None:
    await make_tenant(api, "contoso", "Contoso Ltd")
    await make_user(api, "contoso", "room-9@contoso.com")
    dev = await provisioned_device(api, "contoso", MAC, "Room 9")
    base = str(api.client.make_url("")).rstrip("/")

    async with httpx.AsyncClient() as plain:
        meta = (await plain.get(f"{base}/.well-known/oauth-authorization-server")).json()
        jwks = KeySet.import_key_set(json.loads((await plain.get(f"{base}/oauth2/jwks")).text))

    def here(url: str) -> str:  # the metadata names the public URL; the test server is local
        return base + urlsplit(url).path

    device_endpoint = here(meta["device_authorization_endpoint"])
    token_endpoint = here(meta["token_endpoint"])
    assert method in meta["token_endpoint_auth_methods_supported"]

    async with AsyncOAuth2Client(
        client_id=dev.client_id,
        client_secret=dev.secret,
        token_endpoint_auth_method=method,
        scope="rooms",
    ) as client:
        r = await client.request(
            "POST",
            device_endpoint,
            data={"scope": "rooms"},  # client_id travels with the client authentication
            auth=client.client_auth(method),
            withhold_token=True,
        )
        assert r.status_code == 200, r.text
        grant = r.json()
        interval = grant["interval"]

        async def approve_when_asked() -> None:
            _, result = await Browser(api).sign_in(grant["user_code"], "room-9@contoso.com")
            assert result.status == 200, result.html

        approval: asyncio.Task[None] | None = None
        errors: list[str] = []
        token = None
        for _ in range(50):  # bounded: the fake clock, not real time, paces the polls
            try:
                token = await client.fetch_token(
                    token_endpoint, grant_type=DEVICE_GRANT, device_code=grant["device_code"]
                )
                break
            except OAuthError as e:
                errors.append(e.error)
                assert e.error == "authorization_pending", e.description
                if approval is None:
                    approval = asyncio.create_task(approve_when_asked())
                else:
                    await approval
            api.clock.now += timedelta(seconds=interval)
        assert token is not None, errors
        assert errors and set(errors) == {"authorization_pending"}
        assert token["token_type"] == "Bearer" and token["scope"] == "rooms"

        claims = jwt.decode(token["access_token"], jwks, algorithms=["ES256"]).claims
        assert claims["sub"] == "room-9@contoso.com" and claims["client_id"] == dev.client_id
        assert claims["tenant"] == "contoso" and claims["iss"] == meta["issuer"]

        # The library's refresh works too, and rotates the refresh token.
        old_refresh = token["refresh_token"]
        api.clock.now += timedelta(minutes=59)
        renewed = await client.refresh_token(token_endpoint, refresh_token=old_refresh)
        assert renewed["refresh_token"] != old_refresh
        assert jwt.decode(renewed["access_token"], jwks, algorithms=["ES256"]).claims["sub"] == (
            "room-9@contoso.com"
        )

        # After the admin signs the device out, the library's next refresh is refused.
        status, _ = await api.call("POST", f"/api/v1/tenants/contoso/devices/{MAC}/sign-out")
        assert status == 200
        with pytest.raises(OAuthError) as refused:
            await client.refresh_token(token_endpoint, refresh_token=renewed["refresh_token"])
        assert refused.value.error == "invalid_grant"
