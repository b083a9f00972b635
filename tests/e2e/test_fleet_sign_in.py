"""The fleet all the way through remote sign-in, on loopback sockets with TLS on: the real
`imprint-device fleet --sign-in` discovers the real `imprint serve` by DHCP, enters each code,
starts each device authorization and polls (RFC 8628 interval) while the admin approves every
pending sign-in in bulk over the REST API; every device ends holding its tokens."""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.test_provision_loopback import TENANT, Lab, script, start_lab

USER = "fleet@lab.example"
MACS = [f"02:00:5e:00:0f:{i:02x}" for i in range(1, 6)]


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    with start_lab(tmp_path_factory.mktemp("fleet-signin-lab")) as started:
        yield started


def test_fleet_signs_every_device_in_while_the_admin_approves_in_bulk(
    lab: Lab, tmp_path: Path
) -> None:
    lab.register(MACS)
    status, body = lab.api(
        "POST",
        f"/api/v1/tenants/{TENANT}/users",
        {"username": USER, "password": "fleet-password-1"},
    )
    assert status == 201, body
    export = tmp_path / "export.csv"
    export.write_text(lab.export_csv())
    fleet = subprocess.Popen(
        [
            *script("imprint-device"),
            "fleet",
            "--csv",
            str(export),
            *lab.dhcp_args(),
            # One device boots at a time: each next one resumes the TLS session of the one
            # before (shared), and the worker is free again once a device shows its user code.
            "--concurrency",
            "1",
            "--share-tls-sessions",
            "--sign-in",
            "--sign-in-time-limit",
            "120",
            "--json",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
        text=True,
    )
    approved: list[str] = []
    try:
        # Approve only once a device has been told authorization_pending: the devices are seen
        # to keep polling at the interval until the admin approves.
        deadline = time.monotonic() + 90
        while token_requests(lab).get("authorization_pending", 0) < 1:
            assert fleet.poll() is None, fleet.communicate()
            assert time.monotonic() < deadline, "no device polled"
            time.sleep(0.2)
        while fleet.poll() is None:
            status, body = lab.api(
                "POST",
                f"/api/v1/tenants/{TENANT}/sign-ins/approve",
                {"user": USER, "all_pending": True},
            )
            assert status == 200, body
            approved += body["macs"]
            time.sleep(0.3)
        out, err = fleet.communicate(timeout=60)
    finally:
        if fleet.poll() is None:
            fleet.kill()
            fleet.communicate()
    assert fleet.returncode == 0, err
    report = json.loads(out)
    assert report["signed_in"] == len(MACS), report
    assert report["failures_by_step"] == {}, report
    assert sorted(approved) == MACS  # each device approved exactly once
    # Every step was seen by every device, and later devices resumed the shared TLS session.
    assert set(report["steps_s"]) == {
        "discover",
        "provision",
        "authorize",
        "approve_wait",
        "token",
        "total",
    }
    assert report["tls_sessions"]["resumed"] >= 1, report["tls_sessions"]
    for mac in MACS:
        status, device = lab.api("GET", f"/api/v1/tenants/{TENANT}/devices/{mac}")
        assert device["state"] == "signed_in" and device["signed_in_user"] == USER, device
    # The devices kept to the server's interval: no poll was answered slow_down.
    results = token_requests(lab)
    assert results.get("success") == len(MACS) and "slow_down" not in results, results


def token_requests(lab: Lab) -> dict[str, float]:
    """The server's device_code token requests by result, from /metrics."""
    status, metrics = lab.api("GET", "/metrics")
    assert status == 200
    out: dict[str, float] = {}
    for line in str(metrics).splitlines():
        if line.startswith('imprint_oauth_token_requests_total{grant_type="device_code"'):
            result = line.split('result="', 1)[1].split('"', 1)[0]
            out[result] = float(line.rsplit(" ", 1)[1])
    return out
