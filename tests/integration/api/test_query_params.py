"""Integer query parameters of the REST API: a value that is not a whole number the parameter's
type can hold (64-bit: what SQLite stores) answers 400, one outside the documented range 422,
each in the house JSON with what to fix; never 500. The OpenAPI document states every range."""

from __future__ import annotations

from typing import Any

import pytest

from tests.helpers.app import Api

HUGE = "3805009035495248756736"  # past 64 bits: SQLite raises OverflowError on binding it
INT64_MAX = 2**63 - 1
AUDIT = "/api/v1/tenants/contoso/audit"
DEVICES = "/api/v1/tenants/contoso/devices"


@pytest.fixture
async def contoso(api: Api) -> Api:
    status, body = await api.call("POST", "/api/v1/tenants", json={"id": "contoso", "name": "C"})
    assert status == 201, body
    for i in range(3):
        status, body = await api.call("POST", DEVICES, json={"mac": f"02:00:5e:00:07:0{i}"})
        assert status == 201, body
    return api


def house_error(body: Any, status: int, expected: int, *words: str) -> None:
    assert status == expected, body
    assert isinstance(body, dict) and set(body) == {"error", "message", "details"}, body
    assert body["error"] == ("bad_request" if expected == 400 else "invalid"), body
    for word in words:
        assert word in body["message"], body


@pytest.mark.parametrize(
    "query",
    [
        f"{AUDIT}?before_id={HUGE}",
        f"{AUDIT}?before_id=-{HUGE}",
        f"{AUDIT}?before_id={INT64_MAX + 1}",
        f"{AUDIT}?limit={HUGE}",
        f"{DEVICES}?offset={HUGE}",
        f"{DEVICES}?offset={INT64_MAX + 1}",
        f"{DEVICES}?limit={HUGE}",
        f"/api/v1/discovered?limit={HUGE}",
    ],
)
async def test_a_number_past_64_bits_is_a_bad_request(contoso: Api, query: str) -> None:
    status, body = await contoso.call("GET", query)
    name = query.rsplit("?", 1)[1].split("=")[0]
    house_error(body, status, 400, repr(name), "whole number", str(INT64_MAX))


@pytest.mark.parametrize(
    ("query", "words"),
    [
        (f"{AUDIT}?before_id=0", ("before_id", "1 or more")),
        (f"{AUDIT}?before_id=-5", ("before_id", "1 or more")),
        (f"{DEVICES}?offset=-1", ("offset", "0 or more")),
        (f"{AUDIT}?limit=0", ("limit", "between 1 and 1000")),
        (f"{DEVICES}?limit=1001", ("limit", "between 1 and 1000")),
        ("/api/v1/discovered?limit=0", ("limit", "between 1 and 10000")),
        ("/api/v1/discovered?limit=10001", ("limit", "between 1 and 10000")),
        ("/api/v1/discovered?limit=-3", ("limit", "between 1 and 10000")),
    ],
)
async def test_a_number_outside_the_documented_range_is_refused(
    contoso: Api, query: str, words: tuple[str, ...]
) -> None:
    status, body = await contoso.call("GET", query)
    house_error(body, status, 422, *words)


@pytest.mark.parametrize("raw", ["abc", "1.5", "1e3", "²", "0x10"])
async def test_a_value_that_is_not_a_whole_number_is_a_bad_request(contoso: Api, raw: str) -> None:
    for path, name in ((AUDIT, "before_id"), (DEVICES, "offset"), ("/api/v1/discovered", "limit")):
        status, body = await contoso.call("GET", path, params={name: raw})
        house_error(body, status, 400, repr(name), "whole number")


async def test_the_ends_of_each_range_are_accepted(contoso: Api) -> None:
    status, body = await contoso.call("GET", f"{AUDIT}?before_id={INT64_MAX}&limit=1000")
    assert status == 200 and body["count"] == 4, body  # the tenant and three devices
    newest = body["results"][0]["id"]
    status, body = await contoso.call("GET", f"{AUDIT}?before_id={newest}&limit=1")
    assert status == 200 and [e["id"] for e in body["results"]] == [newest - 1], body
    status, body = await contoso.call("GET", f"{AUDIT}?before_id=1")
    assert status == 200 and body["results"] == [], body
    status, body = await contoso.call("GET", f"{DEVICES}?offset={INT64_MAX}&limit=1")
    assert status == 200 and body["results"] == [] and body["count"] == 3, body
    for limit in (1, 10000):
        status, body = await contoso.call("GET", f"/api/v1/discovered?limit={limit}")
        assert status == 200, body


async def test_the_openapi_document_states_every_integer_range(api: Api) -> None:
    async with api.client.get("/api/v1/openapi.json") as r:
        doc = await r.json()
    ranges = {}
    for path, ops in doc["paths"].items():
        for method, op in ops.items():
            for p in op.get("parameters", []):
                if p["schema"].get("type") == "integer":
                    key = (method.upper(), path, p["name"])
                    ranges[key] = (p["schema"].get("minimum"), p["schema"].get("maximum"))
    assert ranges == {
        ("GET", "/api/v1/tenants/{tenant}/devices", "limit"): (1, 1000),
        ("GET", "/api/v1/tenants/{tenant}/devices", "offset"): (0, INT64_MAX),
        ("GET", "/api/v1/tenants/{tenant}/audit", "limit"): (1, 1000),
        ("GET", "/api/v1/tenants/{tenant}/audit", "before_id"): (1, INT64_MAX),
        ("GET", "/api/v1/discovered", "limit"): (1, 10000),
        ("GET", "/api/v1/leases", "limit"): (1, 1000),
    }
