"""End to end on loopback: the real `imprint serve` (TLS on, self-signed; DHCP inform and mDNS on
lab ports) and the real `imprint-device run` / `fleet`, as separate processes.

Devices are registered, codes issued and the CSV exported over the REST API; the device finds
the server by DHCP or mDNS, pins the advertised certificate, and enters the code taken from
the export. No root needed; nothing leaves 127.0.0.0/8.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import os
import pty
import re
import select
import signal
import socket
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.helpers.proc import free_port

TENANT = "lab"
TENANT_NAME = "Lab Tenant Ltd"
MDNS_MAC = "02:00:5e:00:02:01"  # the static neighbour of 127.0.0.1
FLEET_MDNS = [(f"127.9.0.{i}", f"02:00:5e:00:09:{i:02x}") for i in range(1, 6)]
ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


def script(name: str) -> list[str]:
    exe = Path(sys.executable).with_name(name)
    module = "server" if name == "imprint" else "device_emulator"
    return [str(exe)] if exe.exists() else [sys.executable, "-m", module]


def flat(text: str) -> str:
    """Screen text with box borders removed and wrapped lines joined, for substring checks."""
    rows = [ANSI.sub("", r).strip() for r in text.splitlines()]
    rows = [r[1:-1].strip() if r.startswith("|") and r.endswith("|") else r for r in rows]
    return " ".join(r for r in rows if r and not set(r) <= {"+", "-"})


@dataclass
class Lab:
    config: Path
    http_port: int
    dhcp_port: int
    client_port: int
    mdns_port: int
    fingerprint: str
    token: str
    ctx: ssl.SSLContext

    def api(self, method: str, path: str, body: Any = None, ctype: str = "") -> tuple[int, Any]:
        data = body if isinstance(body, bytes) or body is None else json.dumps(body).encode()
        req = urllib.request.Request(
            f"https://127.0.0.1:{self.http_port}{path}", data=data, method=method
        )
        req.add_header("Authorization", f"Bearer {self.token}")
        if data is not None:
            req.add_header("Content-Type", ctype or "application/json")
        try:
            with urllib.request.urlopen(req, context=self.ctx, timeout=30) as r:
                status, raw, kind = r.status, r.read(), r.headers.get_content_type()
        except urllib.error.HTTPError as e:
            status, raw, kind = e.code, e.read(), e.headers.get_content_type()
            e.close()
        return status, json.loads(raw) if kind == "application/json" else raw.decode()

    def register(self, macs: list[str], codes: bool = True) -> dict[str, str]:
        """Import `macs`, issue their codes, and return MAC -> code read from the export CSV."""
        body = "MAC ID,Location\r\n" + "".join(f"{m},e2e\r\n" for m in macs)
        status, out = self.api(
            "POST", f"/api/v1/tenants/{TENANT}/devices/import", body.encode(), "text/csv"
        )
        assert status == 201, out
        if codes:
            status, out = self.api(
                "POST", f"/api/v1/tenants/{TENANT}/verification-codes", {"macs": macs}
            )
            assert status == 201, out
        return {m: c for m, c in self.export().items() if m in macs and c}

    def export(self) -> dict[str, str]:
        status, text = self.api("GET", f"/api/v1/tenants/{TENANT}/devices/export.csv")
        assert status == 200
        rows = csv.DictReader(io.StringIO(text.removeprefix("\ufeff")))
        return {r["MAC ID"].lower(): r["Verification code"] for r in rows}

    def export_csv(self) -> str:
        status, text = self.api("GET", f"/api/v1/tenants/{TENANT}/devices/export.csv")
        assert status == 200
        return str(text)

    def state(self, mac: str) -> str:
        status, body = self.api("GET", f"/api/v1/tenants/{TENANT}/devices/{mac}")
        assert status == 200, body
        return str(body["state"])

    def code_attempts(self) -> float:
        """Sum of imprint_code_attempts_total over all results (every code the server saw)."""
        status, text = self.api("GET", "/metrics")
        assert status == 200
        return sum(
            float(line.rsplit(" ", 1)[1])
            for line in str(text).splitlines()
            if line.startswith("imprint_code_attempts_total")
        )

    def dhcp_args(self) -> list[str]:
        return [
            "--server",
            f"127.0.0.1:{self.dhcp_port}",
            "--client-port",
            str(self.client_port),
            "--retry-initial",
            "1",
        ]

    def device(self, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*script("imprint-device"), *args],
            capture_output=True,
            text=True,
            timeout=timeout,
            stdin=subprocess.DEVNULL,
        )


@contextmanager
def start_lab(state: Path, rate: float = 1000, burst: float = 1000) -> Iterator[Lab]:
    """`imprint serve` on free loopback ports with the tenant created; stopped on exit."""
    ports = {
        "http": free_port(socket.SOCK_STREAM),
        "dhcp": free_port(socket.SOCK_DGRAM),
        "client": free_port(socket.SOCK_DGRAM),
        "mdns": free_port(socket.SOCK_DGRAM),
    }
    neighbours = {"127.0.0.1": MDNS_MAC, **dict(FLEET_MDNS)}
    config = state / "imprint.toml"
    config.write_text(
        "[store]\npath = 'state/imprint.db'\npoll_interval_s = 0.2\n"
        f"[http]\nhost = '127.0.0.1'\nport = {ports['http']}\n"
        "[tls]\nenabled = true\n"
        "[dhcp]\nenabled = true\nmode = 'inform'\nhost = '127.0.0.1'\n"
        f"port = {ports['dhcp']}\nclient_port = {ports['client']}\nserver_ip = '127.0.0.1'\n"
        f"[mdns]\nenabled = true\nhost = '127.0.0.1'\nport = {ports['mdns']}\n"
        "static_neighbours = { "
        + ", ".join(f"'{ip}' = '{mac}'" for ip, mac in neighbours.items())
        + " }\n"
        # Every test device shares 127.0.0.1: the per-source limit is set per lab.
        f"[provision]\nrate_per_source = {rate}\nburst_per_source = {burst}\n"
        "[log]\nlevel = 'INFO'\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("IMPRINT_")}
    log = (state / "serve.log").open("wb")
    proc = subprocess.Popen(
        [*script("imprint"), "serve", "--config", str(config)],
        stdout=log,
        stderr=subprocess.STDOUT,
        env=env,
        start_new_session=True,
    )
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    try:
        deadline = time.monotonic() + 60
        while True:
            assert proc.poll() is None, (state / "serve.log").read_text()
            try:
                with urllib.request.urlopen(
                    f"https://127.0.0.1:{ports['http']}/readyz", context=ctx, timeout=2
                ) as r:
                    if json.loads(r.read()).get("ready"):
                        break
            except (OSError, urllib.error.URLError):
                pass
            assert time.monotonic() < deadline, "imprint serve did not become ready"
            time.sleep(0.1)
        token = subprocess.run(
            [*script("imprint"), "tokens", "create", "--role", "operator", "--config", str(config)],
            capture_output=True,
            text=True,
            check=True,
            env=env,
            timeout=60,
        ).stdout.strip()
        # The pin devices must see: SHA-256 of the certificate the server really serves.
        with (
            socket.create_connection(("127.0.0.1", ports["http"]), timeout=5) as raw,
            ctx.wrap_socket(raw) as tls,
        ):
            der = tls.getpeercert(binary_form=True)
        assert der is not None
        lab = Lab(
            config,
            ports["http"],
            ports["dhcp"],
            ports["client"],
            ports["mdns"],
            hashlib.sha256(der).hexdigest(),
            token,
            ctx,
        )
        status, body = lab.api("POST", "/api/v1/tenants", {"id": TENANT, "name": TENANT_NAME})
        assert status == 201, body
        yield lab
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    with start_lab(tmp_path_factory.mktemp("provision-lab")) as started:
        yield started


@pytest.mark.parametrize("parallel", [False, True], ids=["dhcp", "dhcp-and-mdns-at-once"])
def test_device_found_by_dhcp_provisions_and_shows_sign_in(lab: Lab, parallel: bool) -> None:
    mac = "02:00:5e:00:01:02" if parallel else "02:00:5e:00:01:01"
    code = lab.register([mac])[mac]
    # With both at once, mDNS asks from 127.0.0.1, whose static neighbour is another MAC that
    # is not registered yet: the responder stays silent and DHCP's answer is the one taken.
    discovery = (
        ["--discover", "both", "--parallel", "--mdns-server", f"127.0.0.1:{lab.mdns_port}"]
        if parallel
        else ["--discover", "dhcp"]
    )
    done = lab.device("run", "--mac", mac, *discovery, *lab.dhcp_args(), "--code", code)
    out = flat(done.stdout)
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"Sign in to {TENANT_NAME}" in out
    # The pin shown is the certificate the server really serves, learnt from DHCP option 43.
    assert f"sha256 {lab.fingerprint[:16]}" in out and "(found by DHCP)" in out
    assert lab.state(mac) == "awaiting_sign_in"


def test_device_found_by_mdns_provisions_and_shows_sign_in(lab: Lab) -> None:
    code = lab.register([MDNS_MAC])[MDNS_MAC]
    done = lab.device(
        "run",
        "--mac",
        MDNS_MAC,
        "--discover",
        "mdns",
        "--mdns-server",
        f"127.0.0.1:{lab.mdns_port}",
        "--code",
        code.lower().replace("-", " "),  # the server ignores case, spaces and dashes
    )
    out = flat(done.stdout)
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"Sign in to {TENANT_NAME}" in out
    assert f"sha256 {lab.fingerprint[:16]}" in out and "(found by MDNS)" in out
    assert lab.state(MDNS_MAC) == "awaiting_sign_in"


def test_wrong_code_fails_with_attempts_left(lab: Lab) -> None:
    mac = "02:00:5e:00:01:03"
    code = lab.register([mac])[mac]
    wrong = "BCDF-GHJK" if code.upper() != "BCDF-GHJK" else "BCDF-GHJL"
    done = lab.device("run", "--mac", mac, *lab.dhcp_args(), "--code", wrong, "--json")
    assert done.returncode == 2, done.stdout + done.stderr
    story = json.loads(done.stdout)
    assert story["state"] == "FAILED"
    assert story["failure"]["error"] == "wrong_code"
    assert story["failure"]["status"] == 401
    left = story["failure"]["attempts_left"]
    assert isinstance(left, int) and left >= 1
    assert f"{left} attempts left" in done.stderr  # the server's message, shown to the technician
    assert lab.state(mac) == "awaiting_activation"


def test_malformed_code_shows_the_servers_explanation(lab: Lab) -> None:
    mac = "02:00:5e:00:01:06"
    lab.register([mac])
    done = lab.device("run", "--mac", mac, *lab.dhcp_args(), "--code", "BCD", "--json")
    assert done.returncode == 2, done.stdout + done.stderr
    failure = json.loads(done.stdout)["failure"]
    assert (failure["error"], failure["status"]) == ("bad_request", 400)
    # The server's own explanation reaches the technician, not a generic one.
    assert failure["message"] and failure["message"] in done.stderr
    assert any(d.get("field") == "code" for d in failure["details"])
    assert lab.state(mac) == "awaiting_activation"


def test_unregistered_mac_gets_no_answer_and_says_so(lab: Lab) -> None:
    done = lab.device(
        "run",
        "--mac",
        "02:00:5e:00:0f:0f",
        *lab.dhcp_args(),
        "--dhcp-timeout",
        "2.5",
        "--code",
        "BCDF-GHJK",
    )
    assert done.returncode == 2, done.stdout + done.stderr
    out = flat(done.stdout)
    assert "No provisioning server answered for MAC 02:00:5e:00:0f:0f" in out
    assert "Is this MAC registered with Imprint?" in out
    assert "(no_answer)" in out


def test_pin_mismatch_never_sends_the_code(lab: Lab) -> None:
    mac = "02:00:5e:00:01:04"
    code = lab.register([mac])[mac]
    before = lab.code_attempts()
    wrong_pin = "00" * 32
    done = lab.device("run", "--mac", mac, *lab.dhcp_args(), "--code", code, "--pin", wrong_pin)
    assert done.returncode == 2, done.stdout + done.stderr
    out = flat(done.stdout)
    assert "does not match the advertised fingerprint" in out
    assert f"server presented sha256 {lab.fingerprint}" in out
    assert "(pin_mismatch)" in out
    assert lab.code_attempts() == before  # the server never saw a code
    assert lab.state(mac) == "awaiting_activation"
    # The same device with the advertised pin goes through: the code was not spent.
    ok = lab.device("run", "--mac", mac, *lab.dhcp_args(), "--code", code)
    assert ok.returncode == 0 and f"Sign in to {TENANT_NAME}" in flat(ok.stdout)


def read_until(fd: int, wanted: str, seen: list[str], limit: float = 30.0) -> None:
    """Read the pty into `seen` until `wanted` appears (bounded)."""
    deadline = time.monotonic() + limit
    while wanted not in flat("".join(seen)):
        remaining = deadline - time.monotonic()
        assert remaining > 0, f"{wanted!r} never appeared in:\n{''.join(seen)}"
        ready, _, _ = select.select([fd], [], [], remaining)
        if ready:
            try:
                chunk = os.read(fd, 65536)
            except OSError:  # EIO: the child closed the terminal
                chunk = b""
            assert chunk, f"{wanted!r} never appeared before the end:\n{''.join(seen)}"
            seen.append(chunk.decode(errors="replace"))


def test_interactive_wrong_code_then_right_code_on_a_terminal(lab: Lab) -> None:
    mac = "02:00:5e:00:01:05"
    code = lab.register([mac])[mac]
    master, slave = pty.openpty()
    proc = subprocess.Popen(
        [*script("imprint-device"), "run", "--mac", mac, *lab.dhcp_args()],
        stdin=slave,
        stdout=slave,
        stderr=slave,
        start_new_session=True,
    )
    os.close(slave)
    seen: list[str] = []
    try:
        read_until(master, "Code:", seen)
        os.write(master, b"bcdf ghjk\n" if code.upper() != "BCDF-GHJK" else b"bcdf ghjl\n")
        read_until(master, "attempts left", seen)
        mark = len("".join(seen))
        read_until(master, "Code:", seen)
        assert "Enter the verification code" in flat("".join(seen)[mark - 200 :])
        os.write(master, code.encode() + b"\n")
        read_until(master, f"Sign in to {TENANT_NAME}", seen)
        assert proc.wait(30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        os.close(master)
    assert lab.state(mac) == "awaiting_sign_in"


def test_fleet_from_the_export_over_shared_dhcp(lab: Lab, tmp_path: Path) -> None:
    macs = [f"02:00:5e:00:08:{i:02x}" for i in range(12)]
    lab.register(macs)
    lab.register(["02:00:5e:00:08:ff"], codes=False)  # in the export without a code
    export = tmp_path / "export.csv"
    export.write_text(lab.export_csv())
    done = lab.device(
        "fleet",
        "--csv",
        str(export),
        "--concurrency",
        "5",
        *lab.dhcp_args(),
        "--json",
        timeout=120,
    )
    report = json.loads(done.stdout)
    # Devices provisioned by earlier tests are in the export too, with their used codes gone.
    assert report["failed"] == {}, report
    assert done.returncode == 0
    assert report["provisioned"] == report["devices"] >= len(macs)
    assert report["skipped_no_code"] >= 1
    assert report["time_to_provision_s"]["p50"] > 0
    assert all(lab.state(m) == "awaiting_sign_in" for m in macs)


def test_fleet_over_mdns_from_per_device_addresses(lab: Lab, tmp_path: Path) -> None:
    macs = [mac for _, mac in FLEET_MDNS]
    codes = lab.register(macs)
    export = tmp_path / "mdns.csv"
    export.write_text(
        "MAC ID,Location,Verification code,Code expires (UTC),State\r\n"
        + "".join(f"{m},e2e,{codes[m]},,awaiting_activation\r\n" for m in macs)
    )
    done = lab.device(
        "fleet",
        "--csv",
        str(export),
        "--discover",
        "mdns",
        "--mdns-server",
        f"127.0.0.1:{lab.mdns_port}",
        "--address-base",
        "127.9.0.1",  # device i at 127.9.0.(1+i): the responder's static neighbours
        timeout=120,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"provisioned: {len(macs)}" in done.stdout and "failed: 0" in done.stdout
    assert all(lab.state(m) == "awaiting_sign_in" for m in macs)


def test_rate_limited_device_waits_retry_after_and_retries(tmp_path: Path) -> None:
    # One code entry per 2 s per source, burst 1: the second device is told 429 + Retry-After
    # and must wait and send the same code again by itself.
    with start_lab(tmp_path, rate=0.5, burst=1) as slow:
        first, second = "02:00:5e:00:07:01", "02:00:5e:00:07:02"
        codes = slow.register([first, second])
        ok = slow.device("run", "--mac", first, *slow.dhcp_args(), "--code", codes[first])
        assert ok.returncode == 0, ok.stdout + ok.stderr
        done = slow.device(
            "run", "--mac", second, *slow.dhcp_args(), "--code", codes[second], "--json"
        )
        assert done.returncode == 0, done.stdout + done.stderr
        story = json.loads(done.stdout)
        retries = [e for e in story["events"] if e["detail"].startswith("rate limited")]
        assert retries, story["events"]
        assert "retry 1 of 3 in 2 s" in retries[0]["detail"]  # Retry-After: ceil(1 / 0.5)
        assert story["state"] == "SIGN_IN_SCREEN"
