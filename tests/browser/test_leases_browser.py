"""Leases and last sightings in a real browser: the real `imprint serve` in DHCP full mode on
loopback (a relay socket of this test stands in for the LAN), one real DORA exchange, then a
tenant admin opens the Leases page and the device's page in Chromium."""

from __future__ import annotations

import re
import socket
from collections.abc import Iterator

import pytest

from tests.browser.conftest import PASSWORD, Browser, Server, login, loopback_server, shot, sync_api
from tests.helpers.dhcp import relayed_dora

expect = sync_api.expect
MAC = "02:00:5e:20:00:01"
OTHER = "02:00:5e:20:00:02"  # fabrikam's: never on contoso's pages


@pytest.fixture(scope="module")
def full_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Server, socket.socket]]:
    root = tmp_path_factory.mktemp("imprint-leases-ui")
    relay = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    relay.bind(("127.0.0.1", 0))
    # Full mode, its replies going to this test's relay socket.
    srv = loopback_server(
        root,
        {
            "dhcp": {
                "mode": "full",
                "server_port": relay.getsockname()[1],
                "probe_other_servers": False,
                "subnets": [
                    {
                        "subnet": "127.0.0.0/24",
                        "pool": "127.0.0.100-127.0.0.150",
                        "lease_time": 3600,
                    }
                ],
            }
        },
    )
    srv.cli("db", "init")
    srv.cli("tenants", "create", "--id", "contoso", "--name", "Contoso Ltd")
    srv.cli("tenants", "create", "--id", "fabrikam", "--name", "Fabrikam Inc")
    srv.cli("devices", "add", "--tenant", "contoso", "--mac", MAC, "--location", "Room 7")
    srv.cli("devices", "add", "--tenant", "fabrikam", "--mac", OTHER, "--location", "Lobby")
    srv.cli(
        "admins",
        "create",
        "--username",
        "alice",
        "--password-file",
        "-",
        "--role",
        "admin",
        "--tenant",
        "contoso",
        stdin=PASSWORD,
    )
    srv.start()
    try:
        yield srv, relay
    finally:
        srv.stop()
        relay.close()


def test_a_tenant_admin_sees_the_lease_and_the_devices_last_sighting(
    full_server: tuple[Server, socket.socket], browser: Browser
) -> None:
    server, relay = full_server
    dhcp = ("127.0.0.1", server.dhcp_port)
    ip = relayed_dora(relay, dhcp, MAC, vendor_class=b"MS-UC-Client")
    other_ip = relayed_dora(relay, dhcp, OTHER, vendor_class=b"yealink")

    page = browser().new_page()
    login(page, server, "alice")
    page.get_by_role("navigation", name="Main").get_by_role("link", name="Leases").click()
    expect(page).to_have_url(re.compile(r"/ui/tenants/contoso/leases$"))
    row = page.locator("table.leases tbody tr")
    expect(row).to_have_count(1)
    expect(row.locator("td").nth(0)).to_have_text(ip)
    expect(row.locator("td").nth(1)).to_have_text(MAC)
    expect(row.locator("td").nth(2)).to_have_text("Bound")
    expect(row.locator("td").nth(5)).to_have_text("Room 7")
    assert other_ip not in page.content() and OTHER not in page.content()
    shot(page, "leases")

    page.get_by_label("State").select_option("released")
    page.get_by_role("button", name="Show").click()
    expect(page.get_by_text("No leases in state released")).to_be_visible()

    page.goto(server.url + "/ui/tenants/contoso/leases")
    page.get_by_role("link", name=MAC).click()
    expect(page).to_have_url(re.compile(rf"/ui/tenants/contoso/devices/{MAC}$"))
    seen = page.locator("dl.last-seen")
    expect(seen).to_contain_text("over DHCP")
    expect(seen).to_contain_text(ip)
    expect(seen).to_contain_text("MS-UC-Client")
    expect(seen).to_contain_text("its DHCP request")
    shot(page, "device-last-seen")

    response = page.goto(server.url + "/ui/tenants/fabrikam/leases")
    assert response is not None and response.status == 404
