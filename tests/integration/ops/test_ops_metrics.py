"""/metrics after real traffic: exact counter values, Prometheus naming, and no MACs or codes in
labels. The whole server runs in-process (build_app) with its DHCP responder on a loopback UDP
port; DHCPINFORMs are built with scapy and sent over a real socket."""

from __future__ import annotations

import asyncio
import platform
import re
import socket
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer
from scapy.layers.dhcp import BOOTP

from server import __version__
from server.app import build_app
from server.web.keys import SERVICES
from tests.helpers.app import lab_settings
from tests.helpers.dhcp import inform
from tests.helpers.proc import free_port
from tests.helpers.server import Metrics

MAC1, MAC2 = "02:00:5e:00:07:01", "02:00:5e:00:07:02"
STRANGER = "02:00:5e:00:07:99"
WAIT = 5.0
# Ours start with imprint_; prometheus_client adds its process_*, python_gc_* and python_info.
NAME = re.compile(r"^(imprint_[a-z0-9_]+|process_[a-z_]+|python_gc_[a-z_]+|python_info)$")
MAC_LIKE = re.compile(r"([0-9a-f]{2}[:-]){5}[0-9a-f]{2}|[0-9a-f]{12}", re.IGNORECASE)
CODE_LIKE = re.compile(r"[BCDFGHJKLMNPQRSTVWXZ]{4}-?[BCDFGHJKLMNPQRSTVWXZ]{4}", re.IGNORECASE)


@dataclass
class Lab:
    client: TestClient[Any, Any]
    token: str
    dhcp: socket.socket  # the "device": bound to the port the server answers to
    dhcp_port: int

    async def call(self, method: str, path: str, **kw: Any) -> tuple[int, Any]:
        headers = {"Authorization": f"Bearer {self.token}", **kw.pop("headers", {})}
        async with self.client.request(method, path, headers=headers, **kw) as r:
            body = await r.json() if r.content_type == "application/json" else await r.text()
            return r.status, body

    async def scrape(self) -> Metrics:
        async with self.client.get("/metrics") as r:
            assert r.status == 200
            assert r.content_type == "text/plain"
            return Metrics(await r.text())

    async def send_dhcp(self, data: bytes) -> None:
        await asyncio.get_running_loop().sock_sendto(self.dhcp, data, ("127.0.0.1", self.dhcp_port))

    async def recv_dhcp(self) -> bytes:
        loop = asyncio.get_running_loop()
        return await asyncio.wait_for(loop.sock_recv(self.dhcp, 4096), WAIT)


@pytest.fixture
async def lab(tmp_path: Path) -> AsyncIterator[Lab]:
    device = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    device.bind(("127.0.0.1", 0))
    device.setblocking(False)
    port = free_port(socket.SOCK_DGRAM)
    settings = lab_settings(
        tmp_path,
        "[dhcp]\nenabled = true\nmode = 'inform'\nhost = '127.0.0.1'\n"
        f"port = {port}\nclient_port = {device.getsockname()[1]}\nserver_ip = '127.0.0.1'\n",
    )
    client: TestClient[Any, Any] = TestClient(TestServer(build_app(settings), host="127.0.0.1"))
    await client.start_server()
    token, _ = await client.app[SERVICES].registry.create_token("test", "operator", None, "t")
    try:
        yield Lab(client, token, device, port)
    finally:
        await client.close()
        device.close()


async def wait_for_value(lab: Lab, name: str, want: float, **labels: str) -> Metrics:
    """Scrape until `name{labels}` reaches `want` (bounded: WAIT seconds)."""
    for _ in range(int(WAIT / 0.02)):
        m = await lab.scrape()
        if m.value(name, **labels) >= want:
            return m
        await asyncio.sleep(0.02)
    raise AssertionError(f"{name}{labels} never reached {want}:\n{m.text}")


async def test_metrics_after_real_traffic_have_exact_values_and_bounded_labels(lab: Lab) -> None:
    assert (await lab.call("POST", "/api/v1/tenants", json={"id": "acme", "name": "Acme"}))[
        0
    ] == 201
    csv = f"MAC ID,Location\r\n{MAC1},Room 1\r\n{MAC2},Room 2\r\n"
    imp = "/api/v1/tenants/acme/devices/import"
    hdr = {"Content-Type": "text/csv"}
    assert (await lab.call("POST", imp + "?dry_run=true", data=csv, headers=hdr))[0] == 200
    assert (await lab.call("POST", imp, data=csv, headers=hdr))[0] == 201
    # Two rows already registered (refused by the registry), then a file with two bad MACs.
    assert (await lab.call("POST", imp, data=csv, headers=hdr))[0] == 422
    bad = "MAC ID,Location\r\nnot-a-mac,x\r\nff:ff:ff:ff:ff:ff,y\r\n"
    assert (await lab.call("POST", imp, data=bad, headers=hdr))[0] == 422

    status, codes = await lab.call(
        "POST", "/api/v1/tenants/acme/verification-codes", json={"macs": [MAC1]}
    )
    assert status == 201
    code = codes[0]["code"]
    wrong = "BBBB-BBBB" if code != "BBBB-BBBB" else "CCCC-CCCC"
    async with lab.client.post("/provision", json={"mac": MAC1, "code": wrong}) as r:
        assert r.status == 401, await r.text()
    async with lab.client.post("/provision", json={"mac": MAC1, "code": code}) as r:
        assert r.status == 200, await r.text()

    assert (await lab.call("GET", f"/api/v1/tenants/acme/devices/{MAC2}"))[0] == 200
    assert (await lab.call("GET", f"/api/v1/tenants/acme/devices/{STRANGER}"))[0] == 404
    for _ in range(3):
        async with lab.client.get("/healthz") as r:
            assert r.status == 200
    async with lab.client.get("/no/such/page") as r:
        assert r.status == 404

    # DHCP: three INFORMs from a registered MAC (each answered), two from a stranger (dropped).
    for i in range(3):
        await lab.send_dhcp(inform(MAC1, 0x100 + i))
        reply = BOOTP(await lab.recv_dhcp())
        assert reply.xid == 0x100 + i
    for i in range(2):
        await lab.send_dhcp(inform(STRANGER, 0x200 + i))
    m = await wait_for_value(
        lab, "imprint_dhcp_packets_dropped_total", 2, reason="IMP_UNREGISTERED"
    )

    assert m.value("imprint_dhcp_packets_received_total", type="inform") == 5
    assert m.value("imprint_dhcp_packets_sent_total", type="ack") == 3
    decisions = {
        dict(labels)["reason"]: v
        for (name, labels), v in m.samples.items()
        if name == "imprint_dhcp_decisions_total" and dict(labels)["decision"] == "reply"
    }
    assert sum(decisions.values()) == 3
    assert (
        m.value("imprint_dhcp_decisions_total", decision="ignore", reason="IMP_UNREGISTERED") == 2
    )
    assert m.value("imprint_devices", state="awaiting_sign_in") == 1
    assert m.value("imprint_devices", state="awaiting_activation") == 1
    assert m.value("imprint_code_attempts_total", result="wrong_code") == 1
    assert m.value("imprint_code_attempts_total", result="success") == 1
    assert m.value("imprint_import_rows_total", result="dry_run") == 2
    assert m.value("imprint_import_rows_total", result="imported") == 2
    assert m.value("imprint_import_rows_total", result="invalid") == 4
    assert m.value("imprint_build_info", version=__version__, python=platform.python_version()) == 1

    # HTTP latency by route template: the MAC in the path never becomes a label.
    h = "imprint_http_request_duration_seconds_count"
    route = "/api/v1/tenants/{tenant}/devices/{mac}"
    assert m.value(h, method="GET", route=route, status="200") == 1
    assert m.value(h, method="GET", route=route, status="404") == 1
    assert m.value(h, method="GET", route="/healthz", status="200") == 3
    assert m.value(h, method="GET", route="unmatched", status="404") == 1
    assert m.value(h, method="POST", route="/provision", status="401") == 1
    assert (
        m.value(h, method="POST", route="/api/v1/tenants/{tenant}/devices/import", status="422")
        == 2
    )
    inf = m.value(
        "imprint_http_request_duration_seconds_bucket",
        method="GET",
        route="/healthz",
        status="200",
        le="+Inf",
    )
    assert inf == 3
    assert (
        m.value(
            "imprint_http_request_duration_seconds_sum",
            method="GET",
            route="/healthz",
            status="200",
        )
        > 0
    )

    # Names and labels: conventional, bounded, and free of MACs and codes.
    typed = {
        line.split()[2]: line.split()[3]
        for line in m.text.splitlines()
        if line.startswith("# TYPE")
    }
    for name, labels in m.samples:
        base = re.sub(r"_(bucket|sum|count)$", "", name) if name not in typed else name
        assert NAME.match(name), name
        assert base in typed, f"{name} has no # TYPE line"
        if typed[base] == "counter":
            assert name.endswith("_total"), name
        for label, value in labels:
            assert not MAC_LIKE.search(value), f"{name}{{{label}={value!r}}} looks like a MAC"
            assert not CODE_LIKE.search(value), f"{name}{{{label}={value!r}}} looks like a code"
    assert "imprint_http_request_duration_seconds" in typed
    assert typed["imprint_http_request_duration_seconds"] == "histogram"
    for secret in (MAC1, MAC2, STRANGER, code, code.replace("-", ""), wrong):
        assert secret.lower() not in m.text.lower()
