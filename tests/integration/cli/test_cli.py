"""The `imprint` command line, run as a real subprocess against a temporary SQLite file."""

from __future__ import annotations

import asyncio
import json
import subprocess
from pathlib import Path

from server.web.keys import SERVICES
from tests.helpers.app import Api
from tests.helpers.proc import run_imprint

MAC1 = "02:00:5e:00:01:01"


def imprint(cfg: Path, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return run_imprint(cfg, *args, stdin=stdin, check=False, timeout=60)


def test_check_config_ok_and_errors(cfg: Path, tmp_path: Path) -> None:
    r = imprint(cfg, "check-config")
    assert r.returncode == 0 and "configuration OK" in r.stdout
    bad = tmp_path / "bad.toml"
    bad.write_text("[dhcp]\nmode = 'relay'\n[http]\nport = 70000\n")
    r = imprint(bad, "check-config")
    assert r.returncode == 2
    assert "dhcp.mode" in r.stderr and "http.port" in r.stderr


def test_admin_workflow(cfg: Path, tmp_path: Path) -> None:
    assert imprint(cfg, "tenants", "create", "--id", "contoso", "--name", "Contoso").returncode == 0
    r = imprint(cfg, "tenants", "list")
    assert "contoso" in r.stdout and "Contoso" in r.stdout

    r = imprint(
        cfg,
        "devices",
        "add",
        "--tenant",
        "contoso",
        "--mac",
        "02-00-5E-00-01-01",
        "--location",
        "Room 1",
    )
    assert r.returncode == 0 and MAC1 in r.stdout
    r = imprint(cfg, "devices", "add", "--tenant", "contoso", "--mac", MAC1)
    assert r.returncode == 1 and "already registered" in r.stderr

    csv = tmp_path / "devices.csv"
    csv.write_text("MAC ID,Location\n02:00:5e:00:01:02,Lobby\nbad,Oops\n02:00:5e:00:01:02,Dup\n")
    r = imprint(cfg, "devices", "import", "--tenant", "contoso", str(csv))
    assert r.returncode == 1
    assert (
        "row 3, field MAC ID: value 'bad': 'bad' is not a MAC" in r.stderr
        and "row 4" in r.stderr
        and "duplicate of row 2" in r.stderr
    )
    csv.write_text("MAC ID,Location\n02:00:5e:00:01:02,Lobby\n02:00:5e:00:01:03,Hall\n")
    r = imprint(cfg, "devices", "import", "--tenant", "contoso", "--dry-run", str(csv))
    assert r.returncode == 0 and "dry run" in r.stdout
    r = imprint(cfg, "devices", "import", "--tenant", "contoso", str(csv))
    assert r.returncode == 0 and "imported 2" in r.stdout

    r = imprint(cfg, "devices", "list", "--tenant", "contoso", "--json")
    assert json.loads(r.stdout)["count"] == 3
    r = imprint(cfg, "devices", "list", "--tenant", "contoso", "--limit", "2")
    assert "1-2 of 3 device(s)" in r.stdout and "next page: --cursor " in r.stdout
    cursor = r.stdout.rsplit("--cursor ", 1)[1].strip()
    r = imprint(cfg, "devices", "list", "--tenant", "contoso", "--limit", "2", "--cursor", cursor)
    assert r.returncode == 0 and "1 of 3 device(s)" in r.stdout and "next page" not in r.stdout
    r = imprint(cfg, "devices", "list", "--tenant", "contoso", "--cursor", "zz")
    assert r.returncode != 0 and "not one this server gave" in r.stderr
    r = imprint(cfg, "devices", "list", "--tenant", "contoso", "--q", "Lobby")
    assert "02:00:5e:00:01:02" in r.stdout and "1-1 of 1 device(s)" in r.stdout

    r = imprint(cfg, "codes", "generate", "--tenant", "contoso", "--all", "--json")
    codes = json.loads(r.stdout)
    assert r.returncode == 0 and len(codes) == 3
    out = tmp_path / "export.csv"
    r = imprint(cfg, "devices", "export", "--tenant", "contoso", "-o", str(out))
    text = out.read_text()
    assert text.startswith("MAC ID,Location,Verification code,Code expires (UTC),State")
    assert all(c["code"] in text for c in codes)

    r = imprint(cfg, "codes", "generate", "--tenant", "contoso")
    assert r.returncode == 2 and "--mac" in r.stderr
    r = imprint(cfg, "devices", "delete", "--tenant", "contoso", "--mac", MAC1)
    assert r.returncode == 0
    r = imprint(cfg, "devices", "delete", "--tenant", "nope", "--mac", MAC1)
    assert r.returncode == 1 and "not found" in r.stderr


def test_token_is_printed_alone_on_stdout(cfg: Path) -> None:
    r = imprint(cfg, "tokens", "create", "--role", "operator")
    assert r.returncode == 0
    lines = r.stdout.splitlines()
    assert len(lines) == 1 and lines[0].startswith("imp_") and len(lines[0]) > 40
    assert "shown once" in r.stderr
    r = imprint(cfg, "tokens", "create", "--role", "admin")
    assert r.returncode == 1 and "--tenant" in r.stderr
    r = imprint(cfg, "tokens", "create", "--role", "admin", "--tenant", "ghost")
    assert r.returncode == 1 and "not found" in r.stderr


async def test_running_server_picks_up_cli_changes(api: Api) -> None:
    await api.call("POST", "/api/v1/tenants", json={"id": "contoso", "name": "Contoso"})
    cfg = api.settings.config_file
    assert cfg is not None
    r = await asyncio.to_thread(
        imprint, cfg, "devices", "add", "--tenant", "contoso", "--mac", MAC1
    )
    assert r.returncode == 0, r.stderr
    for _ in range(100):  # poll_interval_s is 0.1 in the test config; bounded wait of 10 s
        if MAC1 in api.registry.index:
            break
        await asyncio.sleep(0.1)
    assert api.registry.index[MAC1].tenant_name == "Contoso"
    r = await asyncio.to_thread(
        imprint, cfg, "devices", "delete", "--tenant", "contoso", "--mac", MAC1
    )
    for _ in range(100):
        if MAC1 not in api.registry.index:
            break
        await asyncio.sleep(0.1)
    assert MAC1 not in api.registry.index


async def test_discovered_macs_are_saved_listed_and_dropped_when_registered(api: Api) -> None:
    svc = api.client.app[SERVICES]
    svc.discovered.record(
        "02:00:5e:00:0d:01",
        source="dhcp",
        interface="eth0",
        now=1_800_000_000.0,
        vendor_class=b"yealink",
    )
    await api.call("POST", "/api/v1/tenants", json={"id": "contoso", "name": "Contoso"})
    cfg = api.settings.config_file
    assert cfg is not None
    rows: list[dict[str, object]] = []
    for _ in range(100):  # the server saves the list within DISCOVERED_SAVE_S of a change
        r = await asyncio.to_thread(imprint, cfg, "discovered", "--json")
        rows = json.loads(r.stdout)
        if rows:
            break
        await asyncio.sleep(0.1)
    assert rows[0]["mac"] == "02:00:5e:00:0d:01" and rows[0]["vendor_class"] == "yealink"
    r = await asyncio.to_thread(imprint, cfg, "discovered")
    assert "02:00:5e:00:0d:01" in r.stdout and "yealink" in r.stdout

    # Registering it (here through the API) drops it from the list, in memory and then on disk.
    await api.call("POST", "/api/v1/tenants/contoso/devices", json={"mac": "02:00:5e:00:0d:01"})
    status, body = await api.call("GET", "/api/v1/discovered")
    assert body["count"] == 0
    for _ in range(100):
        r = await asyncio.to_thread(imprint, cfg, "discovered", "--json")
        if json.loads(r.stdout) == []:
            break
        await asyncio.sleep(0.1)
    assert json.loads(r.stdout) == []
