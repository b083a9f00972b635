"""The whole chain on loopback sockets, TLS on: register a MAC and issue its code over the API,
the real `imprint-device run --stay` discovers the real `imprint serve` by DHCP, provisions,
shows its RFC 8628 user code; the admin's "Sign in a user" returns that code, a person approves
it on the verification page (forms parsed from the HTML, cookie kept), the device shows
"Signed in as <user>"; a remote sign-out sends it back to its sign-in page with a new code, and
a denial shows "Sign-in was declined" and yet another code.

The device is followed through its JSON event lines while it runs. No root needed.
"""

from __future__ import annotations

import json
import queue
import subprocess
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from http.cookies import SimpleCookie
from pathlib import Path
from typing import IO, Any

import pytest

from tests.e2e.test_provision_loopback import TENANT, TENANT_NAME, Lab, script, start_lab
from tests.helpers.oauth import PASSWORD, PageParser, fill, parse

USER = "room-42@lab.example"
WAIT = 30.0  # seconds for each step; the poll interval is the server's default 5 s


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    with start_lab(tmp_path_factory.mktemp("signin-lab")) as started:
        yield started


class DeviceProcess:
    """`imprint-device run ... --json` in the background; its stdout lines read by a thread."""

    def __init__(self, args: list[str], stderr: IO[bytes]) -> None:
        self.proc = subprocess.Popen(
            [*script("imprint-device"), *args],
            stdout=subprocess.PIPE,
            stderr=stderr,
            stdin=subprocess.DEVNULL,
            text=True,
            bufsize=1,
            start_new_session=True,
        )
        self.lines: queue.Queue[str | None] = queue.Queue()
        self.seen: list[dict[str, Any]] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.put(line)
        self.lines.put(None)

    def wait_for(self, state: str, limit: float = WAIT, **match: str) -> dict[str, Any]:
        """The next event into `state` whose fields contain `match` (bounded)."""
        deadline = time.monotonic() + limit
        while True:
            remaining = deadline - time.monotonic()
            assert remaining > 0, f"no {state} {match} within {limit} s; saw {self.states()}"
            try:
                line = self.lines.get(timeout=remaining)
            except queue.Empty:
                continue
            assert line is not None, f"the device exited ({self.proc.poll()}): {self.states()}"
            event = json.loads(line)
            self.seen.append(event)
            if event.get("state") == state and all(
                text in str(event.get(key)) for key, text in match.items()
            ):
                return dict(event)

    def states(self) -> list[str]:
        return [f"{e.get('state')}: {e.get('detail')}" for e in self.seen]

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self.proc.stdout is not None:
            self.proc.stdout.close()


class PageBrowser:
    """The verification page over HTTPS with urllib, keeping the page's cookie like a browser."""

    def __init__(self, lab: Lab) -> None:
        self.lab = lab
        self.cookies: dict[str, str] = {}

    def request(self, path: str, form: dict[str, str] | None = None) -> tuple[int, PageParser]:
        data = None if form is None else urllib.parse.urlencode(form).encode()
        req = urllib.request.Request(
            f"https://127.0.0.1:{self.lab.http_port}{path}",
            data=data,
            method="GET" if form is None else "POST",
        )
        if data is not None:
            req.add_header("Content-Type", "application/x-www-form-urlencoded")
        if self.cookies:
            req.add_header("Cookie", "; ".join(f"{k}={v}" for k, v in self.cookies.items()))
        try:
            with urllib.request.urlopen(req, context=self.lab.ctx, timeout=30) as r:
                status, html, headers = r.status, r.read().decode(), r.headers
        except urllib.error.HTTPError as e:
            status, html, headers = e.code, e.read().decode(), e.headers
            e.close()
        for header in headers.get_all("Set-Cookie") or []:
            jar: SimpleCookie = SimpleCookie()
            jar.load(header)
            self.cookies.update({k: m.value for k, m in jar.items()})
        assert status == 200, html
        return status, parse(html)

    def decide(self, verification_uri_complete: str, user_code: str, decision: str) -> str:
        """Open the link the admin got, sign in as USER, check the device, approve or deny."""
        url = urllib.parse.urlsplit(verification_uri_complete)
        _, page = self.request(f"{url.path}?{url.query}")
        login = fill(page.forms[0], {"username": USER, "password": PASSWORD})
        assert login["user_code"] == user_code  # prefilled from the link
        _, confirm = self.request(url.path, login)
        # RFC 8628 §5.4: the person sees which device and tenant they are signing in.
        assert confirm.text_by_id["user_code"] == user_code
        assert TENANT_NAME in confirm.text_by_id["tenant"]
        _, result = self.request(url.path, fill(confirm.forms[0], {}, decision))
        return " ".join(result.text_by_id.values())


def test_register_provision_sign_in_sign_out_and_decline(lab: Lab, tmp_path: Path) -> None:
    mac = "02:00:5e:00:06:01"
    code = lab.register([mac])[mac]
    stderr = (tmp_path / "device.stderr").open("wb")
    device = DeviceProcess(
        [
            "run",
            "--mac",
            mac,
            "--discover",
            "dhcp",
            *lab.dhcp_args(),
            "--code",
            code,
            "--stay",
            "--refresh-every",
            "1",
            "--time-limit",
            "150",
            "--json",
        ],
        stderr,
    )
    try:
        provisioned = device.wait_for("SIGN_IN_SCREEN")
        assert f"Sign in to {TENANT_NAME}" in provisioned["screen"]
        first = device.wait_for("SIGNING_IN")
        user_code = first["sign_in"]["user_code"]
        assert user_code and user_code in first["screen"]
        assert first["sign_in"]["verification_uri"] in first["screen"].replace("\n", "")
        assert lab.state(mac) == "awaiting_sign_in"

        status, user = lab.api(
            "POST",
            f"/api/v1/tenants/{TENANT}/users",
            {"username": USER, "display_name": "Room 42", "password": PASSWORD},
        )
        assert status == 201, user
        # "Sign in a user": the admin is given exactly the code the device shows.
        status, pending = lab.api("POST", f"/api/v1/tenants/{TENANT}/devices/{mac}/sign-in")
        assert status == 200, pending
        assert pending["user_code"] == user_code
        assert pending["verification_uri"] == first["sign_in"]["verification_uri"]

        browser = PageBrowser(lab)
        browser.decide(pending["verification_uri_complete"], user_code, "approve")
        signed = device.wait_for("SIGNED_IN")
        assert f"Signed in as {USER}" in signed["screen"]
        assert signed["sign_in"]["user"] == USER
        assert lab.state(mac) == "signed_in"

        status, out = lab.api("POST", f"/api/v1/tenants/{TENANT}/devices/{mac}/sign-out")
        assert status == 200, out
        back = device.wait_for("SIGN_IN_SCREEN", detail="invalid_grant")
        assert "Signed out." in back["screen"] and f"Sign in to {TENANT_NAME}" in back["screen"]
        second = device.wait_for("SIGNING_IN")
        second_code = second["sign_in"]["user_code"]
        assert second_code and second_code != user_code
        assert lab.state(mac) == "awaiting_sign_in"

        # This time the person denies: the device says so and asks with a new code.
        status, pending = lab.api("POST", f"/api/v1/tenants/{TENANT}/devices/{mac}/sign-in")
        assert status == 200 and pending["user_code"] == second_code, pending
        browser.decide(pending["verification_uri_complete"], second_code, "deny")
        declined = device.wait_for("SIGN_IN_SCREEN", detail="access_denied")
        assert "Sign-in was declined." in declined["screen"]
        third = device.wait_for("SIGNING_IN")
        assert third["sign_in"]["user_code"] not in (user_code, second_code)
        assert device.proc.poll() is None  # --stay: still running until told otherwise
    finally:
        device.stop()
        stderr.close()
