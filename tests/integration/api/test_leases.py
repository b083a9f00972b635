"""GET /api/v1/leases, the Leases page and a device's last sighting, after real DHCP exchanges:
the whole app in full mode over a real SQLite file, a relay socket on loopback for the LAN."""

from __future__ import annotations

import asyncio
import os
import socket
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer

from server.app import build_app
from server.dhcp.pool import Lease, LeaseState
from server.registry.service import Principal
from server.web.keys import SERVICES
from tests.helpers.app import Api, Clock, lab_settings
from tests.helpers.dhcp import relayed_dora
from tests.helpers.proc import free_port
from tests.helpers.ui import UiClient

MAC_A, MAC_B = "02:00:5e:00:0a:01", "02:00:5e:00:0b:01"
NOW = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)
PASSWORD = "correct horse battery staple"


@dataclass
class Full:
    api: Api
    relay: socket.socket
    dhcp: tuple[str, int]

    async def dora(self, mac: str, vendor_class: bytes = b"MS-UC-Client") -> str:
        return await asyncio.to_thread(
            relayed_dora, self.relay, self.dhcp, mac, vendor_class=vendor_class
        )


@pytest.fixture
async def full(tmp_path: Path) -> AsyncIterator[Full]:
    os.environ.pop("IMPRINT_HTTP__PORT", None)
    relay = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    relay.bind(("127.0.0.1", 0))
    dhcp_port = free_port(socket.SOCK_DGRAM)
    settings = lab_settings(
        tmp_path,
        f"""[dhcp]
enabled = true
mode = "full"
host = "127.0.0.1"
port = {dhcp_port}
server_port = {relay.getsockname()[1]}
server_ip = "127.0.0.1"
probe_other_servers = false
[[dhcp.subnets]]
subnet = "127.0.0.0/24"
pool = "127.0.0.100-127.0.0.150"
lease_time = 600
""",
    )
    clock = Clock(NOW)
    app = build_app(settings, clock=clock)
    client: TestClient[Any, Any] = TestClient(TestServer(app, host="127.0.0.1"))
    await client.start_server()
    registry = app[SERVICES].registry
    token, _ = await registry.create_token("test", "operator", None, "tests")
    try:
        yield Full(Api(client, registry, token, clock, settings), relay, ("127.0.0.1", dhcp_port))
    finally:
        await client.close()
        relay.close()


async def _tenants(api: Api) -> str:
    for tid, mac, where in (("a", MAC_A, "Room 1"), ("b", MAC_B, "Lobby")):
        assert (await api.call("POST", "/api/v1/tenants", json={"id": tid, "name": tid}))[0] == 201
        status, _ = await api.call(
            "POST", f"/api/v1/tenants/{tid}/devices", json={"mac": mac, "location": where}
        )
        assert status == 201
    token_a, _ = await api.registry.create_token("test", "admin", "a")
    return token_a


async def test_a_dhcp_exchange_is_listed_as_a_lease_and_shown_on_the_device(full: Full) -> None:
    api = full.api
    token_a = await _tenants(api)
    ip_a = await full.dora(MAC_A, b"MS-UC-Client")
    ip_b = await full.dora(MAC_B, b"yealink")
    assert ip_a != ip_b

    status, body = await api.call("GET", "/api/v1/leases")
    assert status == 200, body
    assert body["count"] == 2 and body["next_cursor"] is None
    by_mac = {x["mac"]: x for x in body["results"]}
    assert by_mac[MAC_A]["ip"] == ip_a and by_mac[MAC_A]["state"] == "bound"
    assert by_mac[MAC_A]["subnet"] == "127.0.0.0/24"
    assert (by_mac[MAC_A]["tenant"], by_mac[MAC_A]["location"]) == ("a", "Room 1")
    assert (by_mac[MAC_B]["tenant"], by_mac[MAC_B]["location"]) == ("b", "Lobby")
    assert by_mac[MAC_A]["expires_at"].endswith("Z")

    # Filters: tenant, MAC in another spelling, state.
    status, body = await api.call("GET", "/api/v1/leases?tenant=b")
    assert [x["mac"] for x in body["results"]] == [MAC_B]
    status, body = await api.call("GET", "/api/v1/leases?mac=02-00-5E-00-0A-01")
    assert [x["ip"] for x in body["results"]] == [ip_a]
    status, body = await api.call("GET", "/api/v1/leases?state=released")
    assert status == 200 and body["count"] == 0

    # The device shows where and how it was last seen.
    status, dev = await api.call("GET", f"/api/v1/tenants/a/devices/{MAC_A}")
    assert status == 200
    seen = dev["last_seen"]
    assert seen["ip"] == ip_a and seen["vendor_class"] == "MS-UC-Client"
    assert (seen["source"], seen["mac_from"], seen["interface"]) == ("dhcp", "chaddr", "127.0.0.1")
    assert seen["at"].endswith("Z")
    status, dev = await api.call("GET", f"/api/v1/tenants/b/devices/{MAC_B}")
    assert dev["last_seen"]["vendor_class"] == "yealink"

    # A tenant admin sees its own tenant's leases only, and another tenant's is not found.
    status, body = await api.call("GET", "/api/v1/leases", token=token_a)
    assert status == 200 and [x["mac"] for x in body["results"]] == [MAC_A]
    status, body = await api.call("GET", f"/api/v1/leases?mac={MAC_B}", token=token_a)
    assert status == 200 and body["count"] == 0
    status, body = await api.call("GET", "/api/v1/leases?tenant=b", token=token_a)
    assert status == 404 and body["error"] == "not_found"


async def test_a_device_never_seen_has_no_last_seen(full: Full) -> None:
    await _tenants(full.api)
    status, dev = await full.api.call("GET", f"/api/v1/tenants/a/devices/{MAC_A}")
    assert status == 200 and dev["last_seen"] is None


async def test_pages_in_address_order_and_leases_of_unregistered_macs(full: Full) -> None:
    api = full.api
    await _tenants(api)
    at = NOW.timestamp()
    rows = [
        Lease(
            f"127.0.0.{i}",
            MAC_A if i == 100 else f"02:00:5e:00:0c:{i:02x}",
            None,
            LeaseState.BOUND,
            at + 60,
            "127.0.0.0/24",
            at,
        )
        for i in (100, 101, 102, 110, 120)
    ]
    rows.append(Lease("127.0.0.130", MAC_B, None, LeaseState.BOUND, at - 1, "127.0.0.0/24", at))
    await api.registry.store.save_leases(rows)
    seen: list[str] = []
    status, body = await api.call("GET", "/api/v1/leases?limit=2")
    assert status == 200 and body["count"] == 6
    while True:
        seen += [x["ip"] for x in body["results"]]
        if body["next_cursor"] is None:
            break
        status, body = await api.call("GET", f"/api/v1/leases?limit=2&cursor={body['next_cursor']}")
        assert status == 200
    assert seen == [f"127.0.0.{i}" for i in (100, 101, 102, 110, 120, 130)]
    status, body = await api.call("GET", "/api/v1/leases?state=expired")
    assert [x["ip"] for x in body["results"]] == ["127.0.0.130"]  # lapsed: shown as expired
    status, body = await api.call("GET", "/api/v1/leases?mac=02:00:5e:00:0c:65")
    (stray,) = body["results"]
    assert stray["tenant"] is None and stray["location"] is None  # not registered


@pytest.mark.parametrize(
    ("query", "status", "needle"),
    [
        ("state=gone", 422, "state 'gone' is not one of"),
        ("limit=0", 422, "limit must be between 1 and 1000"),
        ("limit=ten", 400, "'limit' must be a whole number"),
        ("cursor=zzz", 422, "is not one this server gave"),
        ("mac=not-a-mac", 422, "not-a-mac"),
        ("tenant=nobody", 404, "tenant 'nobody' not found"),
    ],
)
async def test_bad_filters_say_what_to_fix(
    full: Full, query: str, status: int, needle: str
) -> None:
    got, body = await full.api.call("GET", f"/api/v1/leases?{query}")
    assert got == status and needle in body["message"], body


async def test_without_full_mode_the_answer_says_why(api: Api) -> None:
    status, body = await api.call("GET", "/api/v1/leases")
    assert status == 409 and body["error"] == "dhcp_not_full_mode"
    assert "[dhcp] enabled = false" in body["message"] and 'mode = "full"' in body["message"]
    status, body = await api.call("GET", "/api/v1/leases", headers={"Authorization": "Bearer x"})
    assert status == 401


async def test_the_document_describes_leases_and_last_seen(api: Api) -> None:
    status, doc = await api.call("GET", "/api/v1/openapi.json")
    op = doc["paths"]["/api/v1/leases"]["get"]
    assert {"200", "409"} <= set(op["responses"])
    assert {p["name"] for p in op["parameters"]} >= {"tenant", "mac", "state", "limit", "cursor"}
    schemas = doc["components"]["schemas"]
    assert set(schemas["LeaseOut"]["properties"]) >= {
        "ip",
        "mac",
        "state",
        "expires_at",
        "subnet",
        "tenant",
        "location",
    }
    device = doc["paths"]["/api/v1/tenants/{tenant}/devices/{mac}"]["get"]["responses"]["200"]
    ref = device["content"]["application/json"]["schema"]["$ref"].rsplit("/", 1)[1]
    assert "last_seen" in schemas[ref]["properties"]
    assert set(schemas["LastSeenOut"]["properties"]) == {
        "at",
        "ip",
        "vendor_class",
        "interface",
        "source",
        "mac_from",
    }


async def test_the_leases_page_and_device_page_show_them_to_the_tenant_only(full: Full) -> None:
    api = full.api
    await _tenants(api)
    svc = api.client.app[SERVICES]
    assert svc.admin is not None
    await svc.admin.create_admin("test", "alice", PASSWORD, "admin", "a")
    ip_a = await full.dora(MAC_A)
    await full.dora(MAC_B)
    alice = UiClient(str(api.client.make_url("/")))
    try:
        assert (await alice.login("alice", PASSWORD)).status == 303
        page = await alice.get("/ui/tenants/a/leases")
        assert page.status == 200
        assert ip_a in page.text and MAC_A in page.text and "Room 1" in page.text
        assert MAC_B not in page.text and "Lobby" not in page.text
        assert 'href="/ui/tenants/a/leases" aria-current="page"' in page.text
        page = await alice.get("/ui/tenants/a/leases?state=released")
        assert page.status == 200 and "No leases in state released" in page.text
        assert (await alice.get("/ui/tenants/b/leases")).status == 404
        page = await alice.get(f"/ui/tenants/a/devices/{MAC_A}")
        assert page.status == 200
        for text in ("Last seen", ip_a, "MS-UC-Client", "its DHCP request", "127.0.0.1"):
            assert text in page.text, text
    finally:
        await alice.close()


async def test_the_leases_page_says_why_there_are_none_without_full_mode(api: Api) -> None:
    svc = api.client.app[SERVICES]
    await api.registry.create_tenant(Principal("test", "operator"), "a", "A")
    assert svc.admin is not None
    await svc.admin.create_admin("test", "ops", PASSWORD, "operator", None)
    ops = UiClient(str(api.client.make_url("/")))
    try:
        await ops.login("ops", PASSWORD)
        page = await ops.get("/ui/tenants/a/leases")
        assert page.status == 200 and "[dhcp] enabled = false" in page.text
        page = await ops.get("/ui/tenants/a/devices")
        assert 'href="/ui/tenants/a/leases"' in page.text  # in the navigation
    finally:
        await ops.close()
