"""`imprint leases`, run as a real subprocess over a real SQLite store in full mode."""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

from server.dhcp.pool import Lease, LeaseState
from server.store.sqlite import SqliteStore
from tests.helpers.proc import run_imprint

MAC_A, MAC_B, STRAY = "02:00:5e:00:0a:01", "02:00:5e:00:0b:01", "02:00:5e:00:0c:01"
FULL = """[store]
path = 'state/imprint.db'
[tls]
enabled = false
[dhcp]
enabled = true
mode = "full"
server_ip = "198.18.77.1"
[[dhcp.subnets]]
subnet = "198.18.77.0/24"
pool = "198.18.77.100-198.18.77.199"
"""


def imprint(cfg: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return run_imprint(cfg, *args, check=False, timeout=60)


async def test_leases_lists_what_the_store_holds_scoped_and_filtered(tmp_path: Path) -> None:
    cfg = tmp_path / "imprint.toml"
    cfg.write_text(FULL)
    assert imprint(cfg, "db", "init").returncode == 0
    for tid, mac, where in (("a", MAC_A, "Room 1"), ("b", MAC_B, "Lobby")):
        assert imprint(cfg, "tenants", "create", "--id", tid, "--name", tid).returncode == 0
        r = imprint(cfg, "devices", "add", "--tenant", tid, "--mac", mac, "--location", where)
        assert r.returncode == 0, r.stderr
    now = time.time()
    store = SqliteStore(tmp_path / "state" / "imprint.db")
    await store.open()
    try:
        await store.save_leases(
            [
                Lease(
                    "198.18.77.110", MAC_A, None, LeaseState.BOUND, now + 600, "198.18.77.0/24", now
                ),
                Lease(
                    "198.18.77.101", MAC_B, None, LeaseState.RELEASED, now, "198.18.77.0/24", now
                ),
                Lease(
                    "198.18.77.99", STRAY, None, LeaseState.BOUND, now + 600, "198.18.77.0/24", now
                ),
            ]
        )
    finally:
        await store.close()

    r = imprint(cfg, "leases")
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert lines[0].split()[:4] == ["IP", "MAC", "ID", "STATE"]
    ips = [ln.split()[0] for ln in lines[2:5]]
    assert ips == ["198.18.77.99", "198.18.77.101", "198.18.77.110"]  # address order
    assert "(not registered)" in lines[2] and "Room 1" in lines[4]
    assert "3 of 3 lease(s)" in r.stdout

    r = imprint(cfg, "leases", "--json", "--tenant", "a")
    body = json.loads(r.stdout)
    assert body["count"] == 1 and body["next_cursor"] is None
    (lease,) = body["results"]
    assert (lease["ip"], lease["mac"], lease["state"]) == ("198.18.77.110", MAC_A, "bound")
    assert (lease["tenant"], lease["location"], lease["subnet"]) == (
        "a",
        "Room 1",
        "198.18.77.0/24",
    )

    r = imprint(cfg, "leases", "--json", "--state", "released", "--limit", "1")
    assert [x["mac"] for x in json.loads(r.stdout)["results"]] == [MAC_B]
    r = imprint(cfg, "leases", "--json", "--limit", "2")
    first = json.loads(r.stdout)
    assert len(first["results"]) == 2 and first["next_cursor"]
    r = imprint(cfg, "leases", "--json", "--limit", "2", "--cursor", first["next_cursor"])
    assert [x["ip"] for x in json.loads(r.stdout)["results"]] == ["198.18.77.110"]

    r = imprint(cfg, "leases", "--tenant", "nobody")
    assert r.returncode == 1 and "tenant 'nobody' not found" in r.stderr
    r = imprint(cfg, "leases", "--mac", "zz")
    assert r.returncode == 1 and "zz" in r.stderr
    r = imprint(cfg, "leases", "--limit", "0")
    assert r.returncode == 2 and "between 1 and 1000" in r.stderr  # a usage error
    r = imprint(cfg, "leases", "--state", "gone")
    assert r.returncode == 2 and "invalid choice" in r.stderr


def test_without_full_mode_it_says_which_setting_to_change(cfg: Path) -> None:
    r = imprint(cfg, "leases")
    assert r.returncode == 1 and r.stdout == ""
    assert "[dhcp] enabled = false" in r.stderr and 'mode = "full"' in r.stderr
