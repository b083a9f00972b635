"""JSON bodies on the real server: only JSON is parsed as JSON, and a body that does not parse
is a 400 in the house error format with what to fix, never a 500 (issue 17, defects 3 and 6).

Each case is sent to the unauthenticated device route (/provision) and to an API route."""

from __future__ import annotations

from typing import Any

import pytest

from tests.helpers.app import Api

ROUTES = [
    ("/provision", False),
    ("/api/v1/tenants", True),
]


async def send(api: Api, path: str, auth: bool, data: bytes, ctype: str | None) -> tuple[int, Any]:
    headers = {**(api.h() if auth else {})}
    if ctype is not None:
        headers["Content-Type"] = ctype
    async with api.client.post(path, data=data, headers=headers) as r:
        assert r.content_type == "application/json", (r.status, await r.text())
        return r.status, await r.json()


@pytest.mark.parametrize(("path", "auth"), ROUTES)
@pytest.mark.parametrize(
    ("data", "fragment"),
    [
        (b"[" * 100_000 + b"]" * 100_000, "nested too deeply"),  # RecursionError before
        (b'{"mac": "\xff\xfe", "code": "x"}', "not UTF-8"),  # UnicodeDecodeError before
        (b'{"mac": ', "not valid JSON"),
        (b"\x00\x01\x02", "not valid JSON"),
        # Found by bench/reliability/fuzz.py: int() refuses over 4300 digits with a ValueError
        # that is not a JSONDecodeError, so it was a 500 before.
        (b'{"mac": ' + b"1" * 4301 + b"}", "4300 digits"),
    ],
    ids=["deep-nesting", "invalid-utf8", "truncated", "binary", "4301-digit-number"],
)
async def test_a_body_that_does_not_parse_is_400_with_what_to_fix(
    api: Api, path: str, auth: bool, data: bytes, fragment: str
) -> None:
    status, body = await send(api, path, auth, data, "application/json")
    assert status == 400, body
    assert body["error"] == "bad_request" and fragment in body["message"]
    assert (await api.call("GET", "/healthz"))[0] == 200


@pytest.mark.parametrize(("path", "auth"), ROUTES)
@pytest.mark.parametrize(
    "ctype", ["text/plain", "application/x-www-form-urlencoded", "multipart/form-data", None]
)
async def test_a_json_body_not_sent_as_json_is_415(
    api: Api, path: str, auth: bool, ctype: str | None
) -> None:
    data = b'{"id": "contoso", "name": "Contoso"}'
    status, body = await send(api, path, auth, data, ctype)
    assert status == 415, body
    assert body["error"] == "unsupported_media_type"
    assert "Content-Type: application/json" in body["message"]
    status, tenants = await api.call("GET", "/api/v1/tenants")
    assert status == 200 and tenants["results"] == []  # nothing was stored


async def test_json_with_a_charset_or_a_json_suffix_type_is_accepted(api: Api) -> None:
    for ctype, tid in (
        ("application/json; charset=utf-8", "contoso"),
        ("application/merge-patch+json", "fabrikam"),
    ):
        data = f'{{"id": "{tid}", "name": "Café {tid}"}}'.encode()
        status, body = await send(api, "/api/v1/tenants", True, data, ctype)
        assert status == 201, body
