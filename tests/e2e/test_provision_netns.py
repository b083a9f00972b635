"""Issue 5 end to end in network namespaces: admin API -> export CSV -> device -> sign-in screen.

The real `imprint serve` runs in the server namespace (TLS on, DHCP in inform mode and mDNS on
eth0). The admin registers each MAC over the REST API, issues its code and exports the CSV; the
code a device types is always read from that export. The device is the project's emulator
(`imprint-device run`) in a host namespace whose eth0 carries the registered MAC: it finds
Imprint by raw-L2 DHCPINFORM or by mDNS, pins the advertised certificate and enters the code.

One topology and one server serve the module; each test uses its own host (its own MAC and
source address, so the per-source rate limits of one test never touch another). The expired-code
test runs a second, short-lived server whose `[codes] ttl_hours` is a few seconds.
"""

from __future__ import annotations

import csv
import io
import json
import socket
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from server.provisioning.codes import ALPHABET
from tests.helpers.netns import SERVER_IP, Node, Topology, host_mac, require_root_netns
from tests.helpers.server import ImprintServer, emulator_argv

pytestmark = pytest.mark.netns

TENANT = "acme"
TENANT_NAME = "Acme Networks Ltd"
HTTP_PORT = 8443
PROVISION_URL = f"https://{SERVER_IP}:{HTTP_PORT}/provision"
MAX_ATTEMPTS = 5  # [codes] max_attempts, the server's default
# A code lives 0.001 h = 3.6 s on the expired-code server: long enough to export it, short
# enough to wait out.
SHORT_TTL_HOURS = 0.001
SIGN_IN_PATH = ["BOOT", "DISCOVER", "PROVISION_SCREEN", "CODE_ENTRY", "PROVISIONING"]


# -- the admin's side: REST API and the export ------------------------------------------------


@dataclass(frozen=True)
class ExportRow:
    location: str
    code: str
    expires: str
    state: str


class Admin:
    """The operator's REST calls (from inside the server's namespace)."""

    def __init__(self, srv: ImprintServer) -> None:
        self.srv = srv

    def create_tenant(self) -> None:
        resp = self.srv.api("POST", "/api/v1/tenants", json={"id": TENANT, "name": TENANT_NAME})
        assert resp.status == 201, resp.body

    def register(self, mac: str, location: str) -> None:
        resp = self.srv.api(
            "POST", f"/api/v1/tenants/{TENANT}/devices", json={"mac": mac, "location": location}
        )
        assert resp.status == 201, resp.body
        assert (resp.body["mac"], resp.body["state"]) == (mac, "awaiting_activation")

    def issue_codes(self, *macs: str) -> dict[str, str]:
        """POST verification-codes; MAC -> expires_at (the codes are read from the export)."""
        resp = self.srv.api(
            "POST", f"/api/v1/tenants/{TENANT}/verification-codes", json={"macs": list(macs)}
        )
        assert resp.status == 201, resp.body
        assert sorted(item["mac"] for item in resp.body) == sorted(macs)
        return {item["mac"]: item["expires_at"] for item in resp.body}

    def export(self) -> dict[str, ExportRow]:
        """GET export.csv parsed as a spreadsheet would: MAC -> row."""
        resp = self.srv.api("GET", f"/api/v1/tenants/{TENANT}/devices/export.csv")
        assert resp.status == 200, resp.body
        assert resp.headers["content-type"].startswith("text/csv")
        text = str(resp.body).removeprefix("\ufeff")
        reader = csv.DictReader(io.StringIO(text))
        assert reader.fieldnames == [
            "MAC ID",
            "Location",
            "Verification code",
            "Code expires (UTC)",
            "State",
        ], text[:200]
        return {
            row["MAC ID"].lower(): ExportRow(
                row["Location"], row["Verification code"], row["Code expires (UTC)"], row["State"]
            )
            for row in reader
        }

    def code_from_export(self, mac: str) -> str:
        code = self.export()[mac].code
        assert code, f"the export has no current code for {mac}"
        return code

    def device(self, mac: str) -> dict[str, Any]:
        resp = self.srv.api("GET", f"/api/v1/tenants/{TENANT}/devices/{mac}")
        assert resp.status == 200, resp.body
        body: dict[str, Any] = resp.body
        return body

    def onboard(self, host: Node, location: str) -> str:
        """Register the host's MAC, issue its code, return the code as the export lists it."""
        self.register(host.mac, location)
        expires = self.issue_codes(host.mac)[host.mac]
        row = self.export()[host.mac]
        assert (row.location, row.state, row.expires) == (
            location,
            "awaiting_activation",
            expires,
        )
        assert row.code
        return row.code


# -- the device's side ------------------------------------------------------------------------


@dataclass(frozen=True)
class DeviceRun:
    status: int
    story: dict[str, Any]  # `--json` output: state, provisioning, pin, failure, credentials
    stderr: str

    @property
    def failure(self) -> dict[str, Any]:
        failure = self.story["failure"]
        assert failure is not None, self.story
        return dict(failure)

    @property
    def states(self) -> list[str]:
        return [event["state"] for event in self.story["events"]]


def discovery_args(host: Node, by: str) -> list[str]:
    if by == "dhcp":
        # DHCPINFORM with ciaddr = eth0's address, sent as a raw Ethernet frame from eth0.
        return ["--discover", "dhcp", "--iface", host.ifname, "--retry-initial", "1"]
    # A QU query from port 5353 on eth0, as a device asks at boot (RFC 6762 §5.4).
    return ["--discover", "mdns", "--iface", host.ifname, "--mdns-qu"]


def run_device(
    tp: Topology, host: Node, code: str, *, by: str = "dhcp", mac: str | None = None
) -> DeviceRun:
    """`imprint-device run --json` inside the host's namespace, typing `code`."""
    argv = [
        *emulator_argv(),
        "run",
        "--mac",
        mac or host.mac,
        *discovery_args(host, by),
        "--dhcp-timeout",
        "5",
        "--mdns-timeout",
        "5",
        "--code",
        code,
        "--json",
    ]
    done = tp.run(host, argv, timeout=60)
    assert done.stdout.strip(), f"exit {done.returncode}, no JSON: {done.stderr}"
    return DeviceRun(done.returncode, json.loads(done.stdout), done.stderr)


def refused(run: DeviceRun, error: str, status: int) -> dict[str, Any]:
    """Check a run that the server refused: exit 2, FAILED after the POST, the server's message
    shown to the technician; returns the failure."""
    assert run.status == 2, (run.story, run.stderr)
    assert run.story["state"] == "FAILED"
    assert run.states == [*SIGN_IN_PATH, "FAILED"]  # it got as far as the POST
    failure = run.failure
    assert (failure["error"], failure["status"]) == (error, status), failure
    assert failure["message"] and failure["message"] in run.stderr
    assert run.story["credentials"] is None
    return failure


def wrong_code_for(code: str) -> str:
    """A well-formed code that differs from `code` in its last character."""
    last = code[-1].upper()
    return code[:-1] + ALPHABET[(ALPHABET.index(last) + 1) % len(ALPHABET)]


def hello(tp: Topology, host: Node) -> None:
    """One UDP datagram from `host` to a closed port on the server; the ICMP port unreachable
    that comes back proves the server's kernel resolved `host`'s MAC (how the mDNS responder
    learns who asks)."""
    with tp.socket(host, socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(3)
        sock.connect((SERVER_IP, 9))
        sock.send(b"hello")
        with pytest.raises(ConnectionRefusedError):
            sock.recv(16)


# -- labs -------------------------------------------------------------------------------------


@dataclass
class Lab:
    tp: Topology
    srv: ImprintServer
    admin: Admin
    fingerprint: str  # SHA-256 of the certificate the HTTPS listener really presents


def overrides(**codes: Any) -> dict[str, Any]:
    return {
        "http": {"port": HTTP_PORT},  # public URL https://198.18.77.1:8443
        "dhcp": {"enabled": True, "mode": "inform", "interface": "eth0"},
        "mdns": {"enabled": True, "interface": "eth0", "hostname": "imprint-e2e"},
        **({"codes": codes} if codes else {}),
    }


def start_lab(tp: Topology, workdir: Path, **codes: Any) -> Iterator[Lab]:
    """`imprint serve` in tp's server namespace with the tenant made over the API."""
    with ImprintServer(tp, tp.server, workdir, overrides(**codes)) as srv:
        srv.start()
        admin = Admin(srv)
        admin.create_tenant()
        yield Lab(tp, srv, admin, srv.served_fingerprint())
        assert srv.stop() == 0, srv.log()[-3000:]  # SIGTERM: a clean shutdown


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    """The shared server; host i is used by one test only (see each test)."""
    require_root_netns()
    with Topology(hosts=10) as tp:
        yield from start_lab(tp, tmp_path_factory.mktemp("provision-netns"))


@pytest.fixture
def short_ttl_lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    """A server of its own whose codes expire after SHORT_TTL_HOURS."""
    require_root_netns()
    with Topology(hosts=1) as tp:
        yield from start_lab(tp, tmp_path_factory.mktemp("short-ttl"), ttl_hours=SHORT_TTL_HOURS)


# -- the happy paths --------------------------------------------------------------------------


def assert_signed_in(lab: Lab, host: Node, run: DeviceRun, by: str) -> None:
    """The device shows its tenant's sign-in screen, pinned to the certificate really served,
    and the server agrees that it awaits sign-in."""
    story = run.story
    assert run.status == 0, (story, run.stderr)
    assert story["state"] == "SIGN_IN_SCREEN"
    assert run.states == [*SIGN_IN_PATH, "SIGN_IN_SCREEN"]
    assert story["failure"] is None and story["code_attempts"] == 1
    found = story["provisioning"]
    assert (found["source"], found["url"]) == (by, PROVISION_URL)
    assert found["fingerprint"] == lab.fingerprint  # what discovery advertised ...
    assert story["pin"] == lab.fingerprint  # ... is what the HTTPS connection was held to
    creds = story["credentials"]
    assert creds["tenant"] == {"id": TENANT, "name": TENANT_NAME}  # "Sign in to <name>"
    device = lab.admin.device(host.mac)
    assert device["state"] == "awaiting_sign_in"
    assert creds["device_id"] == creds["client_id"] == device["device_id"]
    row = lab.admin.export()[host.mac]
    assert (row.state, row.code, row.expires) == ("awaiting_sign_in", "", "")  # code spent


def test_found_by_dhcp_enters_the_exported_code_and_shows_sign_in(lab: Lab) -> None:
    host = lab.tp.hosts[0]
    code = lab.admin.onboard(host, "lobby")
    run = run_device(lab.tp, host, code, by="dhcp")
    assert_signed_in(lab, host, run, "dhcp")


def test_found_by_mdns_enters_the_exported_code_and_shows_sign_in(lab: Lab) -> None:
    tp, host = lab.tp, lab.tp.hosts[1]
    code = lab.admin.onboard(host, "room 2")
    hello(tp, host)  # the responder answers only a querier whose MAC it can see
    run = run_device(tp, host, code, by="mdns")
    assert_signed_in(lab, host, run, "mdns")
    # Found by mDNS alone: the DHCP service never heard from this MAC.
    seen = lab.srv.api("GET", "/api/v1/discovered")
    assert seen.status == 200, seen.body
    assert [e for e in seen.body["results"] if e["mac"] == host.mac and e["source"] == "dhcp"] == []


def test_sign_in_screen_shows_the_tenant_name(lab: Lab) -> None:
    """The same flow without --json: the display itself reads "Sign in to <tenant name>"."""
    tp, host = lab.tp, lab.tp.hosts[4]
    code = lab.admin.onboard(host, "screen")
    argv = [*emulator_argv(), "run", "--mac", host.mac, *discovery_args(host, "dhcp")]
    done = tp.run(host, [*argv, "--code", code], timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr
    last_screen = done.stdout.rsplit("SIGN_IN_SCREEN:", 1)[-1]
    assert f"| Sign in to {TENANT_NAME}" in last_screen, done.stdout
    assert "(found by DHCP)" in done.stdout
    assert f"Certificate: sha256 {lab.fingerprint[:16]}..." in done.stdout
    assert lab.admin.device(host.mac)["state"] == "awaiting_sign_in"


# -- refusals ---------------------------------------------------------------------------------


def test_wrong_code_shows_attempts_left_and_leaves_the_device_waiting(lab: Lab) -> None:
    tp, host = lab.tp, lab.tp.hosts[2]
    code = lab.admin.onboard(host, "desk 3")
    wrong = wrong_code_for(code)
    for left in (MAX_ATTEMPTS - 1, MAX_ATTEMPTS - 2):
        failure = refused(run_device(tp, host, wrong), "wrong_code", 401)
        assert failure["attempts_left"] == left
        assert f"{left} attempts left" in failure["message"]
        assert host.mac in failure["message"]  # "check the code listed for <MAC>"
    assert lab.admin.device(host.mac)["state"] == "awaiting_activation"
    assert lab.admin.export()[host.mac].code == code  # still current: not locked yet


def test_locked_after_max_wrong_codes_even_the_right_code_is_refused(lab: Lab) -> None:
    tp, host, admin = lab.tp, lab.tp.hosts[3], lab.admin
    code = admin.onboard(host, "desk 4")
    wrong = wrong_code_for(code)
    for left in range(MAX_ATTEMPTS - 1, 0, -1):
        assert refused(run_device(tp, host, wrong), "wrong_code", 401)["attempts_left"] == left
    last = refused(run_device(tp, host, wrong), "locked", 423)  # the 5th wrong code locks it
    assert last["attempts_left"] == 0
    assert "Ask your admin to issue a new code" in last["message"]
    locked = refused(run_device(tp, host, code), "locked", 423)
    assert "locked after too many wrong codes" in locked["message"]
    assert "Ask your admin to issue a new code" in locked["message"]
    assert admin.device(host.mac)["state"] == "awaiting_activation"
    assert admin.export()[host.mac].code == ""  # the admin sees there is no usable code
    # What the message tells the technician to do works: a new code from the admin.
    admin.issue_codes(host.mac)
    fresh = admin.code_from_export(host.mac)
    assert fresh != code
    assert_signed_in(lab, host, run_device(tp, host, fresh), "dhcp")


def test_reused_code_is_refused_as_already_provisioned(lab: Lab) -> None:
    tp, host = lab.tp, lab.tp.hosts[5]
    code = lab.admin.onboard(host, "desk 6")
    assert_signed_in(lab, host, run_device(tp, host, code), "dhcp")
    again = refused(run_device(tp, host, code), "already_provisioned", 409)
    assert "already provisioned" in again["message"]
    assert "ask your admin to reset it" in again["message"]
    assert lab.admin.device(host.mac)["state"] == "awaiting_sign_in"  # unchanged


def test_code_of_another_device_is_a_wrong_code_and_stays_valid_for_its_owner(lab: Lab) -> None:
    tp, admin = lab.tp, lab.admin
    host, other = tp.hosts[6], tp.hosts[7]
    admin.onboard(host, "desk 7")
    others_code = admin.onboard(other, "desk 8")
    failure = refused(run_device(tp, host, others_code), "wrong_code", 401)
    assert failure["attempts_left"] == MAX_ATTEMPTS - 1
    assert admin.device(host.mac)["state"] == "awaiting_activation"
    # Codes are bound to their MAC: the owner's code was neither used nor counted against.
    assert admin.export()[other.mac].code == others_code
    assert admin.device(other.mac)["state"] == "awaiting_activation"
    assert_signed_in(lab, other, run_device(tp, other, others_code), "dhcp")


def test_unregistered_mac_gets_no_discovery_answer_and_says_so(lab: Lab) -> None:
    tp, srv, host = lab.tp, lab.srv, lab.tp.hosts[8]
    assert host.mac not in lab.admin.export()
    hello(tp, host)  # so mDNS silence is the policy's, not an unknown MAC
    dropped = "imprint_dhcp_packets_dropped_total"
    ignored = "imprint_mdns_decisions_total"
    before = srv.metrics()
    argv = [
        *emulator_argv(),
        "run",
        "--mac",
        host.mac,
        "--discover",
        "both",
        "--parallel",
        "--iface",
        host.ifname,
        "--mdns-qu",
        "--retry-initial",
        "1",
        "--dhcp-timeout",
        "3",
        "--mdns-timeout",
        "3",
        "--code",
        "BCDF-GHJK",
        "--json",
    ]
    done = tp.run(host, argv, timeout=60)
    assert done.returncode == 2, done.stdout + done.stderr
    story = json.loads(done.stdout)
    assert story["state"] == "FAILED"
    assert [e["state"] for e in story["events"]] == ["BOOT", "DISCOVER", "FAILED"]
    failure = story["failure"]
    assert failure["error"] == "no_answer"
    assert failure["message"] == (
        f"No provisioning server answered for MAC {host.mac}. Is this MAC registered with "
        "Imprint? Ask your admin."
    )
    assert failure["message"] in done.stderr
    assert story["code_attempts"] == 0  # the code never left the device
    # Both questions reached the server, which stayed silent on purpose.
    after = srv.metrics()
    assert after.value(dropped, reason="IMP_UNREGISTERED") > before.value(
        dropped, reason="IMP_UNREGISTERED"
    )
    assert after.value(ignored, decision="ignore", reason="IMP_UNREGISTERED") > before.value(
        ignored, decision="ignore", reason="IMP_UNREGISTERED"
    )
    # The admin sees the unknown device asking, so it can be registered.
    seen = srv.api("GET", "/api/v1/discovered")
    assert seen.status == 200, seen.body
    assert host.mac in {e["mac"] for e in seen.body["results"]}


def test_unregistered_mac_that_reaches_code_entry_is_told_to_get_registered(lab: Lab) -> None:
    """A device whose own MAC is not registered but that found Imprint anyway: the mDNS answer
    goes by the querier's address, here one whose MAC is registered (as behind a bridge that
    rewrites MACs). The server's code check is keyed on the MAC the device sends and refuses it.
    """
    tp, admin, registered = lab.tp, lab.admin, lab.tp.hosts[9]
    stranger = host_mac(0xEE)
    assert stranger not in {h.mac for h in tp.hosts}
    admin.register(registered.mac, "desk 10")
    hello(tp, registered)
    run = run_device(tp, registered, "BCDF-GHJK", by="mdns", mac=stranger)
    failure = refused(run, "not_registered", 404)
    assert failure["message"] == (
        f"This device ({stranger}) is not registered with Imprint. Ask your admin to register "
        "its MAC address, then enter the code again."
    )
    assert stranger not in admin.export()
    assert admin.srv.api("GET", f"/api/v1/tenants/{TENANT}/devices/{stranger}").status == 404


# -- expiry -----------------------------------------------------------------------------------


def test_expired_code_is_refused_with_ask_for_a_new_one(short_ttl_lab: Lab) -> None:
    lab = short_ttl_lab
    tp, admin, host = lab.tp, lab.admin, lab.tp.hosts[0]
    code = admin.onboard(host, "desk 1")
    expires = datetime.fromisoformat(admin.export()[host.mac].expires)
    assert expires.tzinfo is not None
    wait = (expires - datetime.now(UTC)).total_seconds()
    # The configured TTL is what the code got (bounded, so a TTL ignored fails fast).
    assert 0 < wait <= SHORT_TTL_HOURS * 3600 + 1, expires
    time.sleep(wait + 0.3)
    failure = refused(run_device(tp, host, code), "expired_code", 410)
    assert "This code expired at" in failure["message"]
    assert "Ask your admin for a new code" in failure["message"]
    assert admin.device(host.mac)["state"] == "awaiting_activation"
    assert admin.export()[host.mac].code == ""  # an expired code is not exported
