"""Browser tests: the real `imprint serve` (TLS on, DHCP inform on loopback lab ports) driven by
Debian's Chromium through Playwright.

`playwright install` cannot download browsers here, so Playwright launches /usr/bin/chromium
with a fresh profile per browser. Screenshots go to test-artifacts/ui/ (gitignored).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from base64 import b64encode
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import pytest

from tests.helpers.proc import free_port
from tests.helpers.server import deep_merge, to_toml

sync_api = pytest.importorskip(
    "playwright.sync_api", reason="pip install playwright (the test extras) for browser tests"
)

CHROMIUM = Path(os.environ.get("IMPRINT_CHROMIUM", "/usr/bin/chromium"))
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts" / "ui"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
PASSWORD = "correct horse battery staple"

if not CHROMIUM.exists():
    pytest.skip(
        f"{CHROMIUM} not found: apt-get install chromium (scripts/install-debian-deps.sh)",
        allow_module_level=True,
    )


def imprint_argv() -> list[str]:
    script = Path(sys.executable).with_name("imprint")
    return [str(script)] if script.exists() else [sys.executable, "-m", "server"]


_INSECURE = ssl.create_default_context()
_INSECURE.check_hostname = False
_INSECURE.verify_mode = ssl.CERT_NONE  # the server's certificate is self-signed (lab)


@dataclass
class HttpResult:
    status: int
    body: Any


@dataclass
class Server:
    """A running `imprint serve` with its config, ports and log."""

    root: Path
    config: Path
    url: str
    dhcp_port: int
    client_port: int
    log: Path
    proc: subprocess.Popen[bytes] | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def cli(self, *args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
        r = subprocess.run(
            [*imprint_argv(), *args, "--config", str(self.config)],
            input=stdin,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert r.returncode == 0, (args, r.stdout, r.stderr)
        return r

    def request(
        self,
        method: str,
        path: str,
        *,
        form: dict[str, str] | None = None,
        json_body: Any = None,
        basic: tuple[str, str] | None = None,
    ) -> HttpResult:
        """One HTTPS request as a device would send it (no cookies, no browser)."""
        headers = {"Accept": "application/json"}
        data = None
        if form is not None:
            data = urlencode(form).encode()
            headers["Content-Type"] = "application/x-www-form-urlencoded"
        elif json_body is not None:
            data = json.dumps(json_body).encode()
            headers["Content-Type"] = "application/json"
        if basic:
            headers["Authorization"] = (
                "Basic " + b64encode(f"{basic[0]}:{basic[1]}".encode()).decode()
            )
        req = urllib.request.Request(self.url + path, data=data, method=method, headers=headers)
        try:
            with urllib.request.urlopen(req, timeout=10, context=_INSECURE) as r:  # noqa: S310
                raw, status = r.read(), r.status
        except urllib.error.HTTPError as e:
            raw, status = e.read(), e.code
        try:
            return HttpResult(status, json.loads(raw))
        except ValueError:
            return HttpResult(status, raw.decode(errors="replace"))

    def start(self) -> None:
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(
                [*imprint_argv(), "serve", "--config", str(self.config)],
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"imprint serve exited: {self.log.read_text()[-3000:]}")
            try:
                if self.request("GET", "/readyz").status == 200:
                    return
            except OSError:
                pass
            time.sleep(0.2)
        raise AssertionError(f"imprint serve not ready in 30 s: {self.log.read_text()[-3000:]}")

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=10)


def loopback_server(root: Path, overrides: Mapping[str, Any] | None = None) -> Server:
    """A `Server` on free loopback ports: TLS on, DHCP inform on lab ports, mDNS off, with
    `overrides` deep-merged into that config (written to root/imprint.toml). Not started."""
    http_port = free_port(socket.SOCK_STREAM)
    dhcp_port = free_port(socket.SOCK_DGRAM)
    client_port = free_port(socket.SOCK_DGRAM)
    base: dict[str, Any] = {
        "store": {"path": "state/imprint.db", "poll_interval_s": 0.2},
        "http": {
            "host": "127.0.0.1",
            "port": http_port,
            "public_url": f"https://127.0.0.1:{http_port}",
        },
        "tls": {"enabled": True},
        "dhcp": {
            "enabled": True,
            "mode": "inform",
            "host": "127.0.0.1",
            "port": dhcp_port,
            "client_port": client_port,
            "server_ip": "127.0.0.1",
        },
        "mdns": {"enabled": False},
        "log": {"level": "INFO"},
    }
    config = root / "imprint.toml"
    config.write_text(to_toml(deep_merge(base, overrides or {})))
    url = f"https://127.0.0.1:{http_port}"
    return Server(root, config, url, dhcp_port, client_port, root / "serve.log")


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    srv = loopback_server(tmp_path_factory.mktemp("imprint-ui"))
    srv.cli("db", "init")  # only `db init` and `serve` create the store
    srv.cli("tenants", "create", "--id", "contoso", "--name", "Contoso Ltd")
    srv.cli("tenants", "create", "--id", "fabrikam", "--name", "Fabrikam Inc")
    srv.cli(
        "devices",
        "add",
        "--tenant",
        "fabrikam",
        "--mac",
        "02:00:5e:f0:00:01",
        "--location",
        "Fabrikam lobby",
    )
    srv.cli(
        "admins",
        "create",
        "--username",
        "ops",
        "--password-file",
        "-",
        "--role",
        "operator",
        stdin=PASSWORD,
    )
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
        yield srv
    finally:
        srv.stop()


Browser = Callable[..., Any]  # (width, height) -> playwright BrowserContext


@pytest.fixture
def browser() -> Iterator[Browser]:
    """A factory of fresh Chromium profiles (each one a separate person's browser)."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    profiles: list[str] = []
    contexts: list[Any] = []
    with sync_api.sync_playwright() as pw:

        def new(width: int = 1280, height: int = 800) -> Any:
            profile = tempfile.mkdtemp(prefix="imprint-chromium-")
            profiles.append(profile)
            ctx = pw.chromium.launch_persistent_context(
                profile,
                executable_path=str(CHROMIUM),
                headless=True,
                args=CHROMIUM_ARGS,
                ignore_https_errors=True,  # the lab server's certificate is self-signed
                viewport={"width": width, "height": height},
                accept_downloads=True,
            )
            ctx.set_default_timeout(15_000)
            contexts.append(ctx)
            return ctx

        try:
            yield new
        finally:
            for ctx in contexts:
                ctx.close()
    for profile in profiles:
        shutil.rmtree(profile, ignore_errors=True)


def shot(page: Any, name: str) -> Path:
    """A full-page screenshot as a test artifact."""
    path = ARTIFACTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    return path


def login(page: Any, server: Server, username: str, password: str = PASSWORD) -> None:
    page.goto(server.url + "/ui/login")
    page.get_by_label("Username").fill(username)
    page.get_by_label("Password").fill(password)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url(lambda url: "/ui/login" not in url)
