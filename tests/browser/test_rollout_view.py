"""The rollout view watched in a real browser while 1,000 devices go through code entry and
sign-in against the real `imprint serve` (TLS, DHCP inform on loopback lab ports).

Code entry is the device emulator's fleet mode (`imprint-device fleet --csv export.csv`: DHCP
INFORM, then HTTPS). The fleet keeps no credentials, and on this branch it does not go on to
sign-in, so the test then plays each device's next steps with real HTTPS calls: the same code
from the same address within `[provision] retry_window_s` (the path for a response lost on the
way) gives it fresh credentials, then RFC 8628 device authorization, a user approving on the
verification page (each "phone" from its own loopback address, as people's phones are), and
the device's token poll. The page must count every step without a reload; its screenshot at
"Signed in: 1,000" is kept in test-artifacts/ui/.

Each approval is a password check (argon2id, tens of ms of CPU on purpose), so the sign-in part
costs about a minute of CPU for 1,000 devices; IMPRINT_ROLLOUT_DEVICES sets a smaller fleet.
"""

from __future__ import annotations

import csv
import http.client
import json
import os
import socket
import ssl
import subprocess
import sys
import threading
import time
from base64 import b64encode
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any
from urllib.parse import quote_plus, urlencode, urlsplit

import pytest

from server.provisioning.redeem import RETRY_MIN_GAP_S
from tests.browser.conftest import PASSWORD, Browser, Server, login, shot, sync_api
from tests.helpers.oauth import fill, parse
from tests.helpers.proc import free_port

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
    http_port = free_port(socket.SOCK_STREAM)
    dhcp_port = free_port(socket.SOCK_DGRAM)
    client_port = free_port(socket.SOCK_DGRAM)
    config = root / "imprint.toml"
    # A whole site's code entry comes from one test process: the per-source limits are a lab's.
    config.write_text(
        f"""
[store]
path = "state/imprint.db"
poll_interval_s = 0.5
[http]
host = "127.0.0.1"
port = {http_port}
public_url = "https://127.0.0.1:{http_port}"
[tls]
enabled = true
[dhcp]
enabled = true
mode = "inform"
host = "127.0.0.1"
port = {dhcp_port}
client_port = {client_port}
server_ip = "127.0.0.1"
[mdns]
enabled = false
[provision]
rate_per_source = 100000
burst_per_source = 100000
retry_window_s = 3600
[oauth]
interval_s = 1
[log]
level = "WARNING"
"""
    )
    srv = Server(
        root, config, f"https://127.0.0.1:{http_port}", dhcp_port, client_port, root / "serve.log"
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
    srv.start()
    try:
        yield srv
    finally:
        srv.stop()


class Https:
    """One keep-alive HTTPS connection from `source` (a loopback address), per thread."""

    def __init__(self, server: Server, source: str = "127.0.0.1") -> None:
        url = urlsplit(server.url)
        self.host, self.port, self.source = url.hostname or "127.0.0.1", url.port, source
        self.conn = self._connect()

    def _connect(self) -> http.client.HTTPSConnection:
        return http.client.HTTPSConnection(
            self.host, self.port, context=_TLS, timeout=120, source_address=(self.source, 0)
        )

    def call(
        self,
        method: str,
        path: str,
        body: bytes | None = None,
        headers: dict[str, str] | None = None,
    ) -> tuple[int, str, http.client.HTTPResponse]:
        for attempt in range(2):
            try:
                self.conn.request(method, path, body=body, headers=headers or {})
                r = self.conn.getresponse()
                return r.status, r.read().decode(), r
            except (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError):
                # The server closed the idle keep-alive connection before our request: again,
                # on a new one (a browser does the same).
                self.conn.close()
                self.conn = self._connect()
                if attempt:
                    raise
        raise AssertionError("unreachable")

    def close(self) -> None:
        self.conn.close()


def basic(client_id: str, secret: str) -> str:
    return "Basic " + b64encode(f"{quote_plus(client_id)}:{quote_plus(secret)}".encode()).decode()


FORM = {"Content-Type": "application/x-www-form-urlencoded"}


def sign_in(server: Server, i: int, code: str, local: threading.local, opened: list[Https]) -> None:
    """Device `i`, already provisioned by the fleet: new credentials for its lost response,
    device authorization, a user's approval on the verification page, the token poll."""
    if not hasattr(local, "device"):
        local.device = Https(server)
        opened.append(local.device)  # list.append is atomic: no lock needed
    dev: Https = local.device
    for _ in range(20):
        status, text, _ = dev.call(
            "POST",
            "/provision",
            json.dumps({"mac": mac(i), "code": code}).encode(),
            {"Content-Type": "application/json"},
        )
        # Within RETRY_MIN_GAP_S of the fleet's success the same code is a concurrent entry
        # (already_provisioned); a device whose response was lost waits and tries again.
        if status != 409:
            break
        time.sleep(1)
    assert status == 200, (mac(i), text)
    prov = json.loads(text)
    auth = {"Authorization": basic(prov["client_id"], prov["client_secret"]), **FORM}
    status, text, _ = dev.call(
        "POST",
        "/oauth2/device_authorization",
        urlencode({"client_id": prov["client_id"]}).encode(),
        auth,
    )
    assert status == 200, text
    grant = json.loads(text)

    phone = Https(server, f"127.77.{i // 250}.{i % 250 + 1}")
    try:
        status, html, r = phone.call(
            "GET", "/device?" + urlencode({"user_code": grant["user_code"]})
        )
        assert status == 200, html
        cookie = (r.getheader("Set-Cookie") or "").split(";", 1)[0]
        headers = {"Cookie": cookie, **FORM}
        page = parse(html)
        data = fill(page.forms[0], {"username": USER, "password": PASSWORD})
        status, html, _ = phone.call("POST", "/device", urlencode(data).encode(), headers)
        assert status == 200, html
        data = fill(parse(html).forms[0], {}, "approve")
        status, html, _ = phone.call("POST", "/device", urlencode(data).encode(), headers)
        assert status == 200 and "Approved" in html, html
    finally:
        phone.close()

    body = {"grant_type": DEVICE_GRANT, "device_code": grant["device_code"]}
    status, text, _ = dev.call("POST", "/oauth2/token", urlencode(body).encode(), auth)
    assert status == 200, text
    assert json.loads(text)["access_token"]


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
            "--address", "127.0.0.1", "--retry-initial", "1", "--json",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )  # fmt: skip
    try:
        # The page moves while the fleet runs: some provisioned, not yet all.
        expect(page.locator('[data-count="awaiting_sign_in"]')).not_to_have_text(
            "Awaiting sign in: 0", timeout=WAIT_MS
        )
        out, err = fleet.communicate(timeout=WAIT_MS / 1000)
    finally:
        if fleet.poll() is None:
            fleet.kill()
            fleet.wait()
    report = json.loads(out)
    assert fleet.returncode == 0 and report["provisioned"] == DEVICES, (report, err[-2000:])
    expect(page.locator('[data-count="awaiting_sign_in"]')).to_have_text(
        f"Awaiting sign in: {fmt(DEVICES)}", timeout=WAIT_MS
    )
    expect(page.locator('[data-count="awaiting_activation"]')).to_have_text(
        "Awaiting activation: 0"
    )
    shot(page, "rollout-01-provisioned")
    # The same code is taken as a lost response's retry only RETRY_MIN_GAP_S after its success
    # (sooner it is a concurrent entry): the devices' next attempt waits that out.
    time.sleep(RETRY_MIN_GAP_S + 1)

    # Sign-in of every device while the page watches.
    local = threading.local()
    opened: list[Https] = []  # each worker thread's device connection, closed at the end
    try:
        with ThreadPoolExecutor(max_workers=6) as pool:
            list(
                pool.map(lambda i: sign_in(server, i, codes[mac(i)], local, opened), range(DEVICES))
            )
    finally:
        for conn in opened:
            conn.close()

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
