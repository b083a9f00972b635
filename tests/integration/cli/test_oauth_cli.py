"""`imprint users ...` as a real subprocess against a temporary SQLite file, and a running server
that signs a device in as a user the CLI made."""

from __future__ import annotations

import asyncio
import json
import sqlite3
import subprocess
from pathlib import Path

from argon2 import PasswordHasher

from tests.helpers.app import Api
from tests.helpers.oauth import Browser, make_tenant, poll, provisioned_device, start
from tests.helpers.proc import run_imprint


def imprint(cfg: Path, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return run_imprint(cfg, *args, stdin=stdin, check=False, timeout=60)


def stored_hash(cfg: Path, username: str) -> str:
    db = sqlite3.connect(cfg.parent / "state" / "imprint.db")
    try:
        row = db.execute(
            "SELECT password_hash FROM tenant_users WHERE username = ?", (username,)
        ).fetchone()
    finally:
        db.close()
    return str(row[0])


def test_users_create_list_disable_reset_password(cfg: Path, tmp_path: Path) -> None:
    assert imprint(cfg, "tenants", "create", "--id", "contoso", "--name", "Contoso").returncode == 0
    r = imprint(
        cfg,
        "users",
        "create",
        "--tenant",
        "contoso",
        "--username",
        "Room-1@Contoso.com",
        "--display-name",
        "Room 1",
        "--password",
        "first password here",
    )
    assert r.returncode == 0, r.stderr
    assert "room-1@contoso.com" in r.stdout
    assert PasswordHasher().verify(stored_hash(cfg, "room-1@contoso.com"), "first password here")

    pw = tmp_path / "pw.txt"
    pw.write_text("second password here\n")
    r = imprint(
        cfg,
        "users",
        "create",
        "--tenant",
        "contoso",
        "--username",
        "room-2",
        "--password-file",
        str(pw),
    )
    assert r.returncode == 0, r.stderr
    assert PasswordHasher().verify(stored_hash(cfg, "room-2"), "second password here")

    r = imprint(cfg, "users", "create", "--tenant", "contoso", "--username", "room-3")
    assert r.returncode == 2 and "--password" in r.stderr  # no terminal to prompt on
    r = imprint(
        cfg, "users", "create", "--tenant", "contoso", "--username", "room-2", "--password", "x" * 9
    )
    assert r.returncode == 1 and "already taken" in r.stderr
    r = imprint(
        cfg, "users", "create", "--tenant", "contoso", "--username", "room-4", "--password", "short"
    )
    assert r.returncode == 1 and "password must be" in r.stderr
    r = imprint(
        cfg, "users", "create", "--tenant", "ghost", "--username", "room-5", "--password", "x" * 9
    )
    assert r.returncode == 1 and "not found" in r.stderr

    r = imprint(cfg, "users", "list", "--tenant", "contoso")
    assert r.returncode == 0
    lines = r.stdout.splitlines()
    assert lines[0].split() == ["USERNAME", "DISPLAY", "NAME", "STATUS", "CREATED", "(UTC)"]
    assert "room-1@contoso.com  Room 1" in r.stdout and "active" in r.stdout

    r = imprint(cfg, "users", "disable", "--tenant", "contoso", "--username", "room-2")
    assert r.returncode == 0 and "disabled room-2" in r.stdout
    r = imprint(cfg, "users", "list", "--tenant", "contoso", "--json")
    state = {u["username"]: u["disabled"] for u in json.loads(r.stdout)}
    assert state == {"room-1@contoso.com": False, "room-2": True}
    r = imprint(cfg, "users", "disable", "--tenant", "contoso", "--username", "room-2", "--enable")
    assert r.returncode == 0 and "enabled room-2" in r.stdout

    r = imprint(
        cfg,
        "users",
        "reset-password",
        "--tenant",
        "contoso",
        "--username",
        "room-2",
        "--password-file",
        "-",
        stdin="third password here\n",
    )
    assert r.returncode == 0, r.stderr
    assert PasswordHasher().verify(stored_hash(cfg, "room-2"), "third password here")
    r = imprint(
        cfg,
        "users",
        "reset-password",
        "--tenant",
        "contoso",
        "--username",
        "nobody",
        "--password",
        "x" * 9,
    )
    assert r.returncode == 1 and "not found" in r.stderr

    db = sqlite3.connect(cfg.parent / "state" / "imprint.db")
    try:
        actions = [r[0] for r in db.execute("SELECT action FROM audit WHERE actor LIKE 'cli:%'")]
    finally:
        db.close()
    assert actions.count("user.create") == 2 and "user.password_reset" in actions


async def test_a_user_made_with_the_cli_signs_a_device_in(api: Api) -> None:
    await make_tenant(api, "contoso", "Contoso Ltd")
    cfg = api.settings.config_file
    assert cfg is not None
    r = await asyncio.to_thread(
        imprint,
        cfg,
        "users",
        "create",
        "--tenant",
        "contoso",
        "--username",
        "lobby@contoso.com",
        "--password",
        "lobby password 1",
    )
    assert r.returncode == 0, r.stderr
    dev = await provisioned_device(api, "contoso", "02:00:5e:00:55:01", "Lobby")
    auth = await start(api, dev)
    _, result = await Browser(api).sign_in(
        auth["user_code"], "lobby@contoso.com", password="lobby password 1"
    )
    assert result.status == 200, result.html
    status, tokens = await poll(api, dev, auth["device_code"])
    assert status == 200 and tokens["token_type"] == "Bearer"


def test_a_password_command_without_a_password_says_how_to_give_one(cfg: Path) -> None:
    assert imprint(cfg, "tenants", "create", "--id", "contoso", "--name", "Contoso").returncode == 0
    for args in (
        ("users", "create", "--tenant", "contoso", "--username", "room-9"),
        ("admins", "create", "--username", "ops", "--role", "operator"),
    ):
        r = imprint(cfg, *args, stdin="")
        assert r.returncode == 2, (args, r.stdout, r.stderr)
        assert r.stderr.strip() == "error: give --password P or --password-file F ('-' for stdin)"
    assert "room-9" not in imprint(cfg, "users", "list", "--tenant", "contoso").stdout
