"""The lab's first run, as a newcomer meets it: scripts/lab-first-run.py (what scripts/lab runs
before `imprint serve`) makes the admin account and prints where to sign in; a real browser signs
in with exactly what it printed and opens the API documentation page, which renders the API's
operations from this server alone (every request the browser makes is to the server).

The lab's own ports and ./lab-state are left alone: the same script runs on a config of this
test's (free loopback ports, a temporary state folder), as scripts/lab runs it on
configs/lab.toml.
"""

from __future__ import annotations

import re
import socket
import stat
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from tests.browser.conftest import Browser, Server, shot, sync_api
from tests.helpers.proc import clean_env, free_port

expect = sync_api.expect
FIRST_RUN = Path(__file__).resolve().parents[2] / "scripts" / "lab-first-run.py"


@dataclass
class Lab:
    server: Server
    state: Path
    banner: str  # what the first run printed

    def first_run(self) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [
                sys.executable,
                str(FIRST_RUN),
                "--config",
                str(self.server.config),
                "--state",
                str(self.state),
            ],
            capture_output=True,
            text=True,
            timeout=120,
            env=clean_env(),
            cwd=self.server.root,
        )

    def printed(self, label: str) -> str:
        """The word after `label` at the start of a banner line."""
        m = re.search(rf"^\s*{re.escape(label)}\s+(\S+)", self.banner, re.M)
        assert m, (label, self.banner)
        return m.group(1)


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    root = tmp_path_factory.mktemp("imprint-lab")
    http_port = free_port(socket.SOCK_STREAM)
    dhcp_port, client_port = free_port(socket.SOCK_DGRAM), free_port(socket.SOCK_DGRAM)
    config = root / "lab.toml"
    config.write_text(
        f"""
[store]
path = "lab-state/imprint.db"
[http]
host = "127.0.0.1"
port = {http_port}
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
"""
    )
    url = f"https://127.0.0.1:{http_port}"
    srv = Server(root, config, url, dhcp_port, client_port, root / "serve.log")
    lab = Lab(srv, root / "lab-state", "")
    r = lab.first_run()
    assert r.returncode == 0, (r.stdout, r.stderr)
    lab.banner = r.stdout
    srv.start()
    try:
        yield lab
    finally:
        srv.stop()


def test_first_run_makes_the_account_once_and_says_where_to_sign_in(lab: Lab) -> None:
    assert lab.printed("Admin UI:") == lab.server.url + "/ui"
    assert lab.printed("API docs:") == lab.server.url + "/api/docs"
    assert re.search(r"user: lab-admin \(made now\)", lab.banner), lab.banner
    password_file = lab.server.root / lab.printed("password: in")
    assert password_file == lab.state / "admin.password"
    for secret in (password_file, lab.state / "operator.token"):
        assert stat.S_IMODE(secret.stat().st_mode) == 0o600, secret
    password = password_file.read_text()

    again = lab.first_run()  # a later start of scripts/lab
    assert again.returncode == 0, again.stderr
    assert "made now" not in again.stdout
    assert password_file.read_text() == password
    assert not list(lab.state.glob("*.new"))
    admins = lab.server.cli("admins", "list").stdout
    assert [line.split()[0] for line in admins.splitlines()[2:]] == ["lab-admin"]


def test_signs_in_with_the_printed_account_and_opens_the_leases_and_api_docs_pages(
    lab: Lab, browser: Browser
) -> None:
    ctx = browser()
    requested: list[str] = []
    elsewhere: list[str] = []
    here = urlsplit(lab.server.url).netloc

    def gate(route: Any) -> None:
        url = route.request.url
        requested.append(url)
        if urlsplit(url).netloc == here:
            route.continue_()
        else:  # the page must need nothing from another host: refuse and remember it
            elsewhere.append(url)
            route.abort()

    ctx.route("**/*", gate)
    page = ctx.new_page()
    console: list[str] = []
    page.on("console", lambda m: console.append(f"{m.type}: {m.text}"))

    # -- sign in to the admin UI exactly as the banner says
    page.goto(lab.printed("Admin UI:"))
    expect(page).to_have_url(re.compile(r"/ui/login"))
    password = (lab.server.root / lab.printed("password: in")).read_text().strip()
    page.get_by_label("Username").fill(lab.printed("user:"))
    page.get_by_label("Password").fill(password)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url(lambda url: "/ui/login" not in url)
    expect(page.locator(".who")).to_contain_text("lab-admin")
    expect(page.locator(".who")).to_contain_text("operator")
    shot(page, "lab-01-signed-in")

    # -- a tenant made in the UI, and its Leases page from the nav (the lab runs inform mode,
    # so the page says which setting shows leases instead of an empty table)
    page.goto(lab.server.url + "/ui/tenants")
    page.get_by_label("ID").fill("contoso")
    page.get_by_label("Name").fill("Contoso Ltd")
    page.get_by_role("button", name="Create tenant").click()
    page.goto(lab.server.url + "/ui/tenants/contoso/devices")
    page.get_by_role("link", name="Leases").click()
    expect(page).to_have_url(re.compile(r"/ui/tenants/contoso/leases"))
    expect(page.get_by_role("heading", name="Leases")).to_be_visible()
    expect(page.get_by_role("status")).to_contain_text("full")
    shot(page, "lab-01b-leases")

    # -- the API documentation page renders the API's operations from the OpenAPI document
    page.goto(lab.printed("API docs:"))
    expect(page).to_have_title("Imprint API documentation")
    expect(page.get_by_role("heading", name=re.compile(r"^Imprint"))).to_be_visible()
    tenants = page.locator("#operations-tenants-list_tenants")
    expect(tenants).to_be_visible()
    expect(tenants.locator(".opblock-summary-path")).to_have_text("/api/v1/tenants")
    expect(page.locator("#operations-tenants-create_tenant")).to_be_visible()
    assert page.locator(".opblock").count() >= 20  # every operation, not a stub
    tenants.locator(".opblock-summary-control").click()  # expands: its responses and schema
    expect(tenants.locator(".responses-wrapper")).to_contain_text("created_at")
    shot(page, "lab-02-api-docs")

    assert not elsewhere, f"requests to other hosts: {elsewhere}"
    assert any(u.endswith("/api/v1/openapi.json") for u in requested), requested
    assert any("/api/docs/assets/swagger-ui-bundle.js" in u for u in requested), requested
    blocked = [m for m in console if "Content Security Policy" in m or "Refused to" in m]
    assert not blocked, blocked
