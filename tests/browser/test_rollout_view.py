"""The rollout view watched in a real browser while 1,000 devices go through code entry and
sign-in against the real `imprint serve` (TLS, DHCP inform on loopback lab ports).

The devices are the emulator's fleet (`imprint-device fleet --csv export.csv --sign-in`): DHCP
INFORM, code entry over HTTPS, then RFC 8628 device authorization and token polling. Once the
page shows every device awaiting sign-in, the admin side approves the waiting sign-ins in bulk
(`POST /api/v1/tenants/{tenant}/sign-ins/approve`, as a rollout's admin would) until the fleet
holds its tokens. The page must count every step without a reload; its screenshots at
"Awaiting sign in: 1,000" and "Signed in: 1,000" are kept in test-artifacts/ui/.
IMPRINT_ROLLOUT_DEVICES sets another fleet size.
"""

from __future__ import annotations

import csv
import http.client
import json
import os
import ssl
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from tests.browser.conftest import PASSWORD, Browser, Server, login, loopback_server, shot, sync_api

expect = sync_api.expect
DEVICES = int(os.environ.get("IMPRINT_ROLLOUT_DEVICES", "1000"))
LOCATIONS = 20
USER = "rollout@contoso.com"
DEVICE_GRANT = "urn:ietf:params:oauth:grant-type:device_code"
WAIT_MS = 600_000  # a safety net for a loaded machine, not a performance bound
_TLS = ssl.create_default_context()
_TLS.check_hostname = False
_TLS.verify_mode = ssl.CERT_NONE  # the lab server's certificate is self-signed


def mac(i: int) -> str:
    return f"02:00:5e:7{i >> 16:x}:{(i >> 8) & 0xFF:02x}:{i & 0xFF:02x}"


def fmt(n: int) -> str:
    return f"{n:,}"


def emulator_argv() -> list[str]:
    script = Path(sys.executable).with_name("imprint-device")
    return [str(script)] if script.exists() else [sys.executable, "-m", "device_emulator"]


@pytest.fixture(scope="module")
def rollout_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    root = tmp_path_factory.mktemp("imprint-rollout")
    # A whole site's code entry comes from one test process: the per-source limits are a lab's,
    # and every device waiting for sign-in keeps its connection open.
    srv = loopback_server(
        root,
        {
            "store": {"poll_interval_s": 0.5},
            "http": {"max_connections": 4096, "max_connections_per_source": 4096},
            "provision": {
                "rate_per_source": 100000,
                "burst_per_source": 100000,
                "retry_window_s": 3600,
            },
            "oauth": {"interval_s": 1},
            "log": {"level": "WARNING"},
        },
    )
    srv.cli("db", "init")
    srv.cli("tenants", "create", "--id", "contoso", "--name", "Contoso Ltd")
    srv.cli(
        "admins", "create", "--username", "alice", "--password-file", "-", "--role", "admin",
        "--tenant", "contoso", stdin=PASSWORD,
    )  # fmt: skip
    srv.cli(
        "users", "create", "--tenant", "contoso", "--username", USER, "--password-file", "-",
        stdin=PASSWORD,
    )  # fmt: skip
    devices = root / "devices.csv"
    with devices.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["MAC ID", "Location"])
        for i in range(DEVICES):
            w.writerow([mac(i), f"Floor {i % LOCATIONS + 1:02d}"])
    srv.cli("devices", "import", "--tenant", "contoso", str(devices))
    srv.cli("codes", "generate", "--tenant", "contoso", "--all")
    srv.cli("devices", "export", "--tenant", "contoso", "-o", str(root / "export.csv"))
    token = srv.cli("tokens", "create", "--role", "operator", "--name", "rollout").stdout.strip()
    (root / "operator.token").write_text(token)
    srv.start()
    try:
        yield srv
    finally:
        srv.stop()


class Approver(threading.Thread):
    """The rollout's admin: approves every waiting sign-in of the tenant in bulk, twice a second,
    until stopped (POST .../sign-ins/approve {"all_pending": true} with an operator token)."""

    def __init__(self, server: Server, token: str) -> None:
        super().__init__(daemon=True, name="approver")
        url = urlsplit(server.url)
        self.host, self.port, self.token = url.hostname or "127.0.0.1", url.port, token
        self.halt = threading.Event()
        self.approved = 0
        self.errors: list[str] = []

    def run(self) -> None:
        conn = http.client.HTTPSConnection(self.host, self.port, context=_TLS, timeout=60)
        body = json.dumps({"user": USER, "all_pending": True}).encode()
        headers = {"Authorization": f"Bearer {self.token}", "Content-Type": "application/json"}
        try:
            while not self.halt.is_set():
                try:
                    conn.request("POST", "/api/v1/tenants/contoso/sign-ins/approve", body, headers)
                    r = conn.getresponse()
                    text = r.read().decode()
                except (http.client.HTTPException, OSError) as e:
                    conn.close()  # a closed keep-alive connection: again on a new one
                    self.errors.append(f"{type(e).__name__}: {e}")
                else:
                    if r.status == 200:
                        self.approved += int(json.loads(text)["approved"])
                    else:
                        self.errors.append(f"HTTP {r.status}: {text[:200]}")
                self.halt.wait(0.5)
        finally:
            conn.close()


def counts(page: Any) -> dict[str, str]:
    return {
        li.get_attribute("data-count"): li.inner_text() for li in page.locator("[data-count]").all()
    }


def test_the_rollout_view_follows_a_fleet_to_signed_in_without_a_reload(
    rollout_server: Server, browser: Browser
) -> None:
    server = rollout_server
    ctx = browser(1280, 1100)
    page = ctx.new_page()
    login(page, server, "alice")
    page.get_by_role("navigation", name="Main").get_by_role("link", name="Rollout").click()
    expect(page.get_by_role("heading", name="Rollout", exact=True)).to_be_visible()
    rollout = page.url
    navigations: list[str] = []
    page.on("framenavigated", lambda frame: navigations.append(frame.url))
    page.evaluate("window.rolloutMarker = 'same page'")  # gone if the page ever reloads

    expect(page.locator('[data-count="awaiting_activation"]')).to_have_text(
        f"Awaiting activation: {fmt(DEVICES)}"
    )
    expect(page.locator('[data-count="signed_in"]')).to_have_text("Signed in: 0")
    expect(page.locator("[data-rollout-updated]")).to_contain_text("Live: updated")
    expect(page.locator("[data-rollout-locations] tr")).to_have_count(min(LOCATIONS, DEVICES))

    # A technician's typo first: a wrong code, listed with its reason and location.
    status = server.request(
        "POST", "/provision", json_body={"mac": mac(0), "code": "BBBB-BBBB"}
    ).status
    assert status == 401
    errors = page.locator("[data-rollout-errors] tr")
    expect(errors.first).to_contain_text(mac(0))
    expect(errors.first).to_contain_text("wrong code")
    expect(errors.first).to_contain_text("Floor 01")

    # Code entry: the emulator's fleet from the export, over DHCP INFORM and HTTPS.
    export = server.root / "export.csv"
    with export.open(newline="") as f:
        codes = {r["MAC ID"]: r["Verification code"] for r in csv.DictReader(f)}
    assert len(codes) == DEVICES and all(codes.values())
    fleet = subprocess.Popen(
        [
            *emulator_argv(), "fleet", "--csv", str(export), "--concurrency", "100",
            "--server", f"127.0.0.1:{server.dhcp_port}", "--client-port", str(server.client_port),
            "--address", "127.0.0.1", "--retry-initial", "1", "--sign-in", "--json",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )  # fmt: skip
    approver = Approver(server, (server.root / "operator.token").read_text().strip())
    try:
        # The page moves while the fleet runs: some provisioned, then all waiting for sign-in.
        expect(page.locator('[data-count="awaiting_sign_in"]')).not_to_have_text(
            "Awaiting sign in: 0", timeout=WAIT_MS
        )
        expect(page.locator('[data-count="awaiting_sign_in"]')).to_have_text(
            f"Awaiting sign in: {fmt(DEVICES)}", timeout=WAIT_MS
        )
        expect(page.locator('[data-count="awaiting_activation"]')).to_have_text(
            "Awaiting activation: 0"
        )
        shot(page, "rollout-01-provisioned")
        approver.start()  # the devices poll for their tokens meanwhile
        out, err = fleet.communicate(timeout=WAIT_MS / 1000)
    finally:
        approver.halt.set()
        if approver.is_alive():
            approver.join(timeout=30)
        if fleet.poll() is None:
            fleet.kill()
            fleet.wait()
    report = json.loads(out)
    assert fleet.returncode == 0 and report["signed_in"] == DEVICES, (report, err[-2000:])
    assert approver.approved == DEVICES and not approver.errors, approver.errors[:5]

    expect(page.locator('[data-count="signed_in"]')).to_have_text(
        f"Signed in: {fmt(DEVICES)}", timeout=WAIT_MS
    )
    expect(page.locator('[data-count="awaiting_sign_in"]')).to_have_text("Awaiting sign in: 0")
    expect(page.locator('[data-count="total"]')).to_have_text(f"Registered: {fmt(DEVICES)}")
    # Every location's row reached its share, and the chart drew one line per state.
    first_row = page.locator("[data-rollout-locations] tr").first
    expect(first_row).to_contain_text("Floor 01")  # devices 0, 20, 40, ...
    expect(first_row.locator("td").nth(3)).to_have_text(fmt(-(-DEVICES // LOCATIONS)))
    expect(page.locator("[data-rollout-chart] svg path.series")).to_have_count(3)
    expect(page.locator("[data-rollout-chart]")).to_have_attribute(
        "aria-label", f"Chart of devices by state over time. Now: Awaiting activation 0, "
        f"Awaiting sign in 0, Signed in {fmt(DEVICES)}."
    )  # fmt: skip
    shot(page, "rollout-02-signed-in")

    # All of it without a reload: the same document, never navigated.
    assert page.evaluate("window.rolloutMarker") == "same page"
    assert navigations == [] and page.url == rollout, navigations
    c = counts(page)
    assert c["signed_in"] == f"Signed in: {fmt(DEVICES)}" and c["locked"] == "Locked: 0"
    assert c["errors_total"] == "Errors: 1"  # the typo: every device went through otherwise
