"""Admin UI over HTTP: sign-in and sessions, CSV upload with preview, codes, export, the
technician sheet, paging and search, device actions, and `imprint admins`."""

from __future__ import annotations

import csv
import io
import re
import subprocess
import sys
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path

import pytest
from aiohttp import FormData
from aiohttp.test_utils import TestServer

from server.app import build_app
from server.registry.service import ImportRow, Principal
from server.web.keys import SERVICES
from tests.helpers.app import Api, lab_settings
from tests.helpers.ui import UiClient, csv_form, db_snapshot

OP = Principal("test", "operator")
PASSWORD = "correct horse battery staple"
CODE = re.compile(r"\b[BCDFGHJKLMNPQRSTVWXZ]{4}-[BCDFGHJKLMNPQRSTVWXZ]{4}\b")


@pytest.fixture
async def ui(api: Api) -> AsyncIterator[UiClient]:
    svc = api.client.app[SERVICES]
    await api.registry.create_tenant(OP, "contoso", "Contoso Ltd")
    assert svc.admin is not None
    await svc.admin.create_admin("test", "ops", PASSWORD, "operator", None)
    client = UiClient(str(api.client.make_url("/")))
    try:
        yield client
    finally:
        await client.close()


def pager_link(html: str, rel: str) -> str:
    found = re.search(rf'<a href="([^"]+)" rel="{rel}">', html)
    assert found, f"no {rel} link on the page"
    return found.group(1).replace("&amp;", "&")


def rows_of(html: str) -> list[str]:
    """The MAC of each table row of a devices page, in order."""
    return re.findall(r'<td class="mono">([0-9a-f:]{17})</td>', html)


# ---- sign-in and sessions --------------------------------------------------------------------


async def test_sign_in_sets_a_strict_http_only_cookie_and_sign_out_ends_the_session(
    api: Api, ui: UiClient
) -> None:
    page = await ui.get("/ui/tenants/contoso/devices?tab=signed_in")
    assert page.status == 303
    assert page.location.startswith("/ui/login?")
    assert "next=%2Fui%2Ftenants%2Fcontoso%2Fdevices%3Ftab%3Dsigned_in" in page.location
    form = await ui.get(page.location)
    page = await ui.post(
        "/ui/login",
        {
            "username": "OPS",
            "password": PASSWORD,
            "next": "/ui/tenants/contoso/devices?tab=signed_in",
        },
        csrf=form.csrf,
    )
    assert page.status == 303 and page.location == "/ui/tenants/contoso/devices?tab=signed_in"
    cookie = next(c for c in page.headers.getall("Set-Cookie") if c.startswith("imprint_session="))
    assert "HttpOnly" in cookie and "SameSite=Strict" in cookie and "Path=/ui" in cookie
    assert "Secure" not in cookie  # plain-HTTP lab server; see the TLS browser test for Secure
    assert page.headers.get("Cache-Control") is None or "no-store" in page.headers["Cache-Control"]
    home = await ui.get("/ui/tenants/contoso/devices")
    assert home.status == 200 and "Awaiting activation" in home.text
    assert "default-src 'none'" in home.headers["Content-Security-Policy"]
    assert home.headers["X-Frame-Options"] == "DENY"
    actions = [r[4] for r in db_snapshot(api.settings.store.path)["audit"]]
    assert "admin.login" in actions

    stolen = next(c for c in ui.http.cookie_jar if c.key == "imprint_session").value
    page = await ui.post("/ui/logout", {})
    assert page.status == 303 and page.location == "/ui/login?reason=logged_out"
    assert "You are signed out." in (await ui.get(page.location)).text
    # The old cookie value is dead server-side, not just deleted in this browser.
    replay = UiClient(str(api.client.make_url("/")))
    try:
        page = await replay.get("/ui/tenants", headers={"Cookie": f"imprint_session={stolen}"})
        assert page.status == 303 and "reason=unknown" in page.location
    finally:
        await replay.close()
    assert "admin.logout" in [r[4] for r in db_snapshot(api.settings.store.path)["audit"]]


async def test_wrong_passwords_are_refused_then_rate_limited(ui: UiClient) -> None:
    page = await ui.login("ops", "not the password")
    assert page.status == 401 and "Wrong username or password." in page.text
    page = await ui.login("nobody", PASSWORD)
    assert page.status == 401 and "Wrong username or password." in page.text
    statuses = [(await ui.login("ops", f"wrong {i}")).status for i in range(10)]
    assert statuses[-1] == 429, statuses
    page = await ui.login("ops", PASSWORD)
    assert page.status == 429 and "Too many failed sign-ins" in page.text


async def test_a_session_ends_after_the_idle_timeout_but_activity_keeps_it(
    api: Api, ui: UiClient
) -> None:
    assert (await ui.login("ops", PASSWORD)).status == 303
    for _ in range(3):  # 3 x 20 minutes of activity: 60 minutes, beyond the 30-minute idle limit
        api.clock.now += timedelta(minutes=20)
        assert (await ui.get("/ui/tenants")).status == 200
    api.clock.now += timedelta(minutes=30)
    page = await ui.get("/ui/tenants")
    assert page.status == 303 and "reason=idle" in page.location
    assert "without activity" in (await ui.get(page.location)).text
    assert db_snapshot(api.settings.store.path)["admin_sessions"] == []


async def test_a_session_ends_after_twelve_hours_however_active(api: Api, ui: UiClient) -> None:
    assert (await ui.login("ops", PASSWORD)).status == 303
    for _ in range(35):  # 35 x 20 minutes = 11 h 40 min
        api.clock.now += timedelta(minutes=20)
        assert (await ui.get("/ui/tenants")).status == 200
    api.clock.now += timedelta(minutes=20)
    page = await ui.get("/ui/tenants")
    assert page.status == 303 and "reason=expired" in page.location


async def test_disabling_an_admin_ends_their_sessions(api: Api, ui: UiClient) -> None:
    assert (await ui.login("ops", PASSWORD)).status == 303
    auth = api.client.app[SERVICES].admin
    assert auth is not None
    await auth.set_disabled("test", "ops", True)
    assert (await ui.get("/ui/tenants")).status == 303
    assert (await ui.login("ops", PASSWORD)).status == 401


async def test_sign_in_never_redirects_off_site(api: Api, ui: UiClient) -> None:
    for target in (
        "https://evil.example/ui",
        "//evil.example/ui",
        "/\\evil.example",
        "/api/v1/tenants",
    ):
        browser = UiClient(str(api.client.make_url("/")))
        try:
            form = await browser.get("/ui/login")
            page = await browser.post(
                "/ui/login",
                {"username": "ops", "password": PASSWORD, "next": target},
                csrf=form.csrf,
            )
        finally:
            await browser.close()
        assert page.status == 303 and page.location == "/ui", target


# ---- provisioning: one MAC, CSV upload with preview ----------------------------------------------


async def test_add_one_device_reports_what_to_fix(ui: UiClient) -> None:
    await ui.login("ops", PASSWORD)
    page = await ui.post(
        "/ui/tenants/contoso/devices/add", {"mac": "0200.5E00.0101", "location": "Lobby"}
    )
    assert page.status == 303
    listing = await ui.get(page.location)
    assert (
        rows_of(listing.text) == ["02:00:5e:00:01:01"]
        and "Registered 02:00:5e:00:01:01 at Lobby" in listing.text
    )
    page = await ui.post(
        "/ui/tenants/contoso/devices/add", {"mac": "02:00:5e:00:01:01", "location": ""}
    )
    assert page.status == 409 and "already registered" in page.text
    page = await ui.post(
        "/ui/tenants/contoso/devices/add", {"mac": "ff:ff:ff:ff:ff:ff", "location": "x"}
    )
    assert page.status == 422 and "broadcast" in page.text
    assert 'value="ff:ff:ff:ff:ff:ff"' in page.text  # the form keeps what was typed


async def test_csv_upload_shows_every_bad_row_before_storing_anything(
    api: Api, ui: UiClient
) -> None:
    await ui.login("ops", PASSWORD)
    await api.registry.add_device(OP, "contoso", "02:00:5e:00:02:09", "Already here")
    bad = (
        b"MAC ID,Location\r\n"
        b"02:00:5e:00:02:01,Room 1\r\n"
        b"not-a-mac,Room 2\r\n"
        b"02:00:5e:00:02:01,Room 3\r\n"
        b"01:00:5e:00:00:01,Room 4\r\n"
        b"02:00:5e:00:02:05,Room 5\r\n"
    )
    before = db_snapshot(api.settings.store.path)["devices"]
    page = await ui.post("/ui/tenants/contoso/provision/preview", csv_form(bad, "fleet.csv"))
    assert page.status == 422 and "Nothing was stored." in page.text
    problem_rows = re.findall(r"<tr><td>(\d+)</td><td>MAC ID</td>", page.text)
    assert problem_rows == ["3", "4", "5"], problem_rows
    assert (
        "duplicate of row 2" in page.text and "multicast" in page.text and "fleet.csv" in page.text
    )
    assert db_snapshot(api.settings.store.path)["devices"] == before

    # Rows that are fine as text but name a registered MAC are reported the same way.
    taken = b"MAC ID,Location\n02:00:5e:00:02:01,Room 1\n02:00:5e:00:02:09,Again\n"
    page = await ui.post("/ui/tenants/contoso/provision/preview", csv_form(taken))
    assert page.status == 422 and re.findall(r"<tr><td>(\d+)</td>", page.text) == ["3"]

    good = b"MAC ID;Location\n02:00:5e:00:02:01;Room 1\n02:00:5e:00:02:02;=Room 2\n02:00:5e:00:02:05;Room 5\n"
    page = await ui.post("/ui/tenants/contoso/provision/preview", csv_form(good))
    assert page.status == 200 and "Confirm import of 3 device(s)" in page.text
    assert rows_of(page.text) == ["02:00:5e:00:02:01", "02:00:5e:00:02:02", "02:00:5e:00:02:05"]
    assert db_snapshot(api.settings.store.path)["devices"] == before  # preview stores nothing
    upload_id = re.search(r'name="upload_id" value="([^"]+)"', page.text)
    assert upload_id
    page = await ui.post("/ui/tenants/contoso/provision/confirm", {"upload_id": upload_id.group(1)})
    assert page.status == 303
    listing = await ui.get(page.location)
    assert "Imported 3 device(s)" in listing.text and len(rows_of(listing.text)) == 4
    assert "=Room 2" in listing.text
    # A preview is confirmed once; another admin's (or a made-up) id is not accepted.
    page = await ui.post("/ui/tenants/contoso/provision/confirm", {"upload_id": upload_id.group(1)})
    assert page.status == 409 and "Upload the file again" in page.text
    page = await ui.post("/ui/tenants/contoso/provision/preview", csv_form(b"", "empty.csv"))
    assert page.status == 422 and "empty" in page.text


async def test_an_upload_over_the_size_limit_is_refused_with_the_limit(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("IMPRINT_HTTP__MAX_UPLOAD_BYTES", str(64 * 1024))
    app = build_app(lab_settings(tmp_path))
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    browser = UiClient(str(server.make_url("/")))
    try:
        svc = app[SERVICES]
        await svc.registry.create_tenant(OP, "contoso", "Contoso Ltd")
        assert svc.admin is not None
        await svc.admin.create_admin("test", "ops", PASSWORD, "operator", None)
        await browser.login("ops", PASSWORD)
        big = b"MAC ID,Location\n" + b"02:00:5e:00:00:01," + b"x" * 70_000 + b"\n"
        page = await browser.post("/ui/tenants/contoso/provision/preview", csv_form(big))
        assert page.status == 413 and "larger than the limit of 64 KiB" in page.text
        assert "File too large" in page.text and "max_upload_bytes" in page.text
    finally:
        await browser.close()
        await server.close()


# ---- codes, export, technician sheet -------------------------------------------------------------


async def test_codes_for_selected_devices_show_in_the_table_the_export_and_the_sheet(
    api: Api, ui: UiClient
) -> None:
    macs = [f"02:00:5e:00:03:{i:02x}" for i in range(1, 6)]
    await api.registry.import_devices(
        OP, "contoso", [ImportRow(i + 2, m, f"Room {i}") for i, m in enumerate(macs)]
    )
    await ui.login("ops", PASSWORD)
    page = await ui.post("/ui/tenants/contoso/codes", {})
    assert page.status == 303
    assert "Select at least one device" in (await ui.get(page.location)).text

    page = await ui.post(
        "/ui/tenants/contoso/codes", FormData([("mac", macs[0]), ("mac", macs[2])])
    )
    assert page.status == 303
    listing = await ui.get(page.location)
    assert "Issued 2 verification code(s), valid until 2026-11-28 12:00 UTC" in listing.text
    table = {
        m: c
        for m, c in re.findall(
            r'<td class="mono">([0-9a-f:]{17})</td>\s*<td>[^<]*</td>\s*<td class="mono code">([^<]*)</td>',
            listing.text,
        )
    }
    assert set(table) == set(macs)
    assert CODE.fullmatch(table[macs[0]]) and CODE.fullmatch(table[macs[2]])
    assert table[macs[1]] == "—"

    export = await ui.get("/ui/tenants/contoso/export.csv?state=awaiting_activation")
    assert export.status == 200 and "attachment" in export.headers["Content-Disposition"]
    exported = {r["MAC ID"]: r for r in csv.DictReader(io.StringIO(export.text))}
    assert {m: exported[m]["Verification code"] for m in (macs[0], macs[2])} == {
        macs[0]: table[macs[0]],
        macs[2]: table[macs[2]],
    }
    assert exported[macs[1]]["Verification code"] == ""

    sheet_link = re.search(
        r'<a href="(/ui/tenants/contoso/sheet[^"]+)">Print the technician sheet', listing.text
    )
    assert sheet_link
    sheet = await ui.get(sheet_link.group(1).replace("&amp;", "&"))
    assert sheet.status == 200 and sheet.text.count("<svg") == 2
    assert table[macs[0]] in sheet.text and table[macs[2]] in sheet.text and "Room 2" in sheet.text
    assert 'aria-label="QR code for 02:00:5e:00:03:01"' in sheet.text
    full = await ui.get("/ui/tenants/contoso/sheet")
    assert (
        full.text.count("<svg") == 2 and "3 device(s) on this page have no valid code" in full.text
    )

    # "All awaiting activation" issues a code to every one and revokes the earlier ones.
    page = await ui.post("/ui/tenants/contoso/codes", {"all": "1"})
    listing = await ui.get(page.location)
    assert "Issued 5 verification code(s)" in listing.text
    assert table[macs[0]] not in listing.text and len(CODE.findall(listing.text)) == 5


# ---- the devices list: paging, search, tabs ------------------------------------------------------


async def test_devices_are_paged_and_searchable_by_mac_or_location(api: Api, ui: UiClient) -> None:
    rows = [
        ImportRow(i + 2, f"02:00:5e:01:{i // 256:02x}:{i % 256:02x}", f"Floor {i % 3} room {i}")
        for i in range(120)
    ]
    await api.registry.import_devices(OP, "contoso", rows)
    await ui.login("ops", PASSWORD)
    first = await ui.get("/ui/tenants/contoso/devices")
    assert rows_of(first.text) == [r.mac for r in rows[:50]]
    assert "Showing 1–50 of 120" in first.text and "Page 1 of 3" in first.text
    assert '<span class="count">120</span>' in first.text
    # Next and Previous are cursor links (an index seek at any depth); the page number follows.
    second = await ui.get(pager_link(first.text, "next"))
    assert rows_of(second.text) == [r.mac for r in rows[50:100]]
    assert "Showing 51–100 of 120" in second.text and "Page 2 of 3" in second.text
    last = await ui.get(pager_link(second.text, "next"))
    assert rows_of(last.text) == [r.mac for r in rows[100:]] and 'rel="next"' not in last.text
    assert "Showing 101–120 of 120" in last.text and "Page 3 of 3" in last.text
    back = await ui.get(pager_link(last.text, "prev"))
    assert rows_of(back.text) == [r.mac for r in rows[50:100]] and "Page 2 of 3" in back.text
    again = await ui.get(pager_link(back.text, "prev"))
    assert rows_of(again.text) == [r.mac for r in rows[:50]] and 'rel="prev"' not in again.text
    # A link from before a change of format (or hand-edited) starts again at the first page.
    stale = await ui.get("/ui/tenants/contoso/devices?tab=awaiting_activation&page=3&cursor=zz")
    assert stale.status == 200 and rows_of(stale.text) == [r.mac for r in rows[:50]]
    assert "Page 1 of 3" in stale.text
    hit = await ui.get("/ui/tenants/contoso/devices?q=0200.5e01.0063")  # the 100th, Cisco style
    assert rows_of(hit.text) == ["02:00:5e:01:00:63"]
    part = await ui.get("/ui/tenants/contoso/devices?q=01:00:6")
    assert rows_of(part.text) == [f"02:00:5e:01:00:6{c}" for c in "0123456789abcdef"]
    loc = await ui.get("/ui/tenants/contoso/devices?q=Floor 2 room 11")
    # rooms 11, 110, 113, 116 and 119 are on floor 2 (i % 3 == 2)
    assert rows_of(loc.text) == [f"02:00:5e:01:00:{i:02x}" for i in (11, 110, 113, 116, 119)]
    other = await ui.get("/ui/tenants/contoso/devices?tab=signed_in")
    assert rows_of(other.text) == [] and "No devices." in other.text


async def test_page_numbers_and_ids_people_edit_in_the_address_bar_never_fail(
    api: Api, ui: UiClient
) -> None:
    # Past 64 bits (SQLite cannot bind it), a digit int() refuses, zero, negative: each page
    # answers as for the nearest sensible value, never 500.
    await api.registry.add_device(OP, "contoso", "02:00:5e:00:06:01", "Room 1")
    await ui.login("ops", PASSWORD)
    huge = "3805009035495248756736"
    for path in (
        f"/ui/tenants/contoso/audit?before_id={huge}",
        "/ui/tenants/contoso/audit?before_id=\u00b2",
        "/ui/tenants/contoso/audit?before_id=0",
        "/ui/tenants/contoso/audit?before_id=-4",
        f"/ui/tenants/contoso/sheet?page={huge}",
        f"/ui/tenants/contoso/devices?page={huge}",
        f"/ui/tenants/contoso/devices?tab=discovered&page={huge}",
    ):
        page = await ui.get(path)
        assert page.status == 200, (path, page.status, page.text[-500:])
    newest = await ui.get("/ui/tenants/contoso/audit?before_id=0")
    assert "02:00:5e:00:06:01" in newest.text  # 0 is the newest page, not an empty one


async def test_reset_and_delete_need_a_confirmation_step(api: Api, ui: UiClient) -> None:
    mac = "02:00:5e:00:04:01"
    await api.registry.add_device(OP, "contoso", mac, "Desk")
    await api.registry.generate_codes(OP, "contoso", [mac])
    await ui.login("ops", PASSWORD)
    page = await ui.get(f"/ui/tenants/contoso/devices/{mac}?confirm=delete")
    assert 'role="alertdialog"' in page.text and "This cannot be undone." in page.text
    assert f'action="/ui/tenants/contoso/devices/{mac}/delete"' in page.text
    page = await ui.post(f"/ui/tenants/contoso/devices/{mac}/reset", {})
    assert page.status == 303
    detail = await ui.get(page.location)
    assert "awaiting activation again" in detail.text and CODE.search(detail.text) is None
    page = await ui.post(f"/ui/tenants/contoso/devices/{mac}/delete", {})
    assert page.status == 303 and mac not in api.registry.index
    assert (await ui.get(f"/ui/tenants/contoso/devices/{mac}")).status == 404
    # Sign-in is refused with a reason for a device that is not provisioned.
    await api.registry.add_device(OP, "contoso", mac, "Desk")
    page = await ui.post(f"/ui/tenants/contoso/devices/{mac}/sign-in", {})
    assert page.status == 409 and "not provisioned yet" in page.text


async def test_operators_create_tenants_and_register_discovered_devices(
    api: Api, ui: UiClient
) -> None:
    svc = api.client.app[SERVICES]
    svc.discovered.record("02:00:5e:00:05:01", source="mdns", interface="eth0", now=1.8e9)
    await ui.login("ops", PASSWORD)
    page = await ui.post("/ui/tenants", {"id": "Bad Id", "name": "x"})
    assert page.status == 422 and "a-z, 0-9" in page.text
    page = await ui.post("/ui/tenants", {"id": "fabrikam", "name": "Fabrikam"})
    assert page.status == 303 and "Created tenant Fabrikam" in (await ui.get("/ui/tenants")).text
    tab = await ui.get("/ui/tenants/fabrikam/devices?tab=discovered")
    assert "02:00:5e:00:05:01" in tab.text and "MDNS on eth0" in tab.text
    page = await ui.post(
        "/ui/tenants/fabrikam/discovered/register", {"mac": "02:00:5e:00:05:01", "location": "Lab"}
    )
    assert page.status == 303
    tab = await ui.get(page.location)
    assert "Registered 02:00:5e:00:05:01 in Fabrikam" in tab.text
    assert "02:00:5e:00:05:01" not in svc.discovered
    assert api.registry.index["02:00:5e:00:05:01"].tenant_id == "fabrikam"


async def test_users_page_creates_and_disables_tenant_users(ui: UiClient) -> None:
    await ui.login("ops", PASSWORD)
    page = await ui.post(
        "/ui/tenants/contoso/users",
        {"username": "Room-101@contoso.com", "display_name": "Room 101", "password": PASSWORD},
    )
    assert page.status == 303
    users = await ui.get(page.location)
    assert "Created user room-101@contoso.com" in users.text and "Room 101" in users.text
    page = await ui.post("/ui/tenants/contoso/users/room-101@contoso.com/disable", {})
    assert page.status == 303 and "disabled" in (await ui.get(page.location)).text
    page = await ui.post(
        "/ui/tenants/contoso/users",
        {"username": "room-101@contoso.com", "display_name": "", "password": PASSWORD},
    )
    assert page.status == 409 and "already taken" in page.text


# ---- `imprint admins` ----------------------------------------------------------------------------


def test_admins_cli_creates_lists_and_disables(tmp_path: Path) -> None:
    settings = lab_settings(tmp_path)
    assert settings.config_file is not None
    cfg = str(settings.config_file)

    def imprint(*args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "server", *args, "--config", cfg],
            input=stdin,
            capture_output=True,
            text=True,
            timeout=60,
        )

    assert imprint("db", "init").returncode == 0  # only `db init` and `serve` create the store
    assert imprint("tenants", "create", "--id", "contoso", "--name", "Contoso").returncode == 0
    pw = tmp_path / "pw"
    pw.write_text(PASSWORD + "\n")
    r = imprint(
        "admins", "create", "--username", "Ops", "--password-file", str(pw), "--role", "operator"
    )
    assert r.returncode == 0 and "created operator ops" in r.stdout, r.stderr
    r = imprint(
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
    assert r.returncode == 0, r.stderr
    r = imprint(
        "admins",
        "create",
        "--username",
        "bob",
        "--password",
        "short",
        "--role",
        "admin",
        "--tenant",
        "contoso",
    )
    assert r.returncode == 1 and "10 to 1024 characters" in r.stderr
    r = imprint(
        "admins", "create", "--username", "carol", "--password", PASSWORD, "--role", "admin"
    )
    assert r.returncode == 1 and "give --tenant" in r.stderr
    r = imprint(
        "admins",
        "create",
        "--username",
        "dave",
        "--password",
        PASSWORD,
        "--role",
        "admin",
        "--tenant",
        "nope",
    )
    assert r.returncode == 1 and "not found" in r.stderr
    r = imprint(
        "admins", "create", "--username", "ops", "--password", PASSWORD, "--role", "operator"
    )
    assert r.returncode == 1 and "already exists" in r.stderr
    assert imprint("admins", "disable", "--username", "alice").returncode == 0
    r = imprint("admins", "list")
    lines = {ln.split()[0]: ln.split() for ln in r.stdout.splitlines()[2:]}
    assert lines["alice"][1:4] == ["admin", "contoso", "disabled"]
    assert lines["ops"][1:3] == ["operator", "active"]  # no tenant: an empty column
    hashes = db_snapshot(settings.store.path)["admins"]
    assert all(h[1].startswith("$argon2id$") and PASSWORD not in h[1] for h in hashes)


async def test_csv_upload_in_update_mode_previews_the_moves_and_applies_only_them(
    api: Api, ui: UiClient
) -> None:
    await ui.login("ops", PASSWORD)
    await api.registry.add_device(OP, "contoso", "02:00:5e:00:03:01", "Room 1")
    await api.registry.add_device(OP, "contoso", "02:00:5e:00:03:02", "Room 2")
    edited = b"MAC ID,Location\n02:00:5e:00:03:01,Room 1\n02:00:5e:00:03:02,Lobby\n"
    before = db_snapshot(api.settings.store.path)["devices"]
    page = await ui.post(
        "/ui/tenants/contoso/provision/preview", csv_form(edited, "edited.csv", mode="update")
    )
    assert page.status == 200, page.text
    assert re.search(r"<strong>0</strong> device\(s\) will be registered, <strong>1</strong> "
                     r"moved to a new location and <strong>1</strong> left", page.text)  # fmt: skip
    assert rows_of(page.text) == ["02:00:5e:00:03:02"] and "move from Room 2" in page.text
    assert db_snapshot(api.settings.store.path)["devices"] == before  # preview stores nothing
    upload_id = re.search(r'name="upload_id" value="([^"]+)"', page.text)
    assert upload_id
    page = await ui.post("/ui/tenants/contoso/provision/confirm", {"upload_id": upload_id.group(1)})
    assert page.status == 303
    listing = await ui.get(page.location)
    assert "Imported 1 device(s) from edited.csv (0 registered, 1 moved, 1 unchanged)" in (
        listing.text
    )
    device = await api.registry.get_device(OP, "contoso", "02:00:5e:00:03:02")
    assert device.location == "Lobby"
    # The same file in the default mode names both rows as registered already.
    page = await ui.post("/ui/tenants/contoso/provision/preview", csv_form(edited))
    assert page.status == 422 and re.findall(r"<tr><td>(\d+)</td>", page.text) == ["2", "3"]
