"""The operator's command line (issue 18): the real `imprint` as a subprocess on real SQLite files.

What a read command may not do (create a store or a key), where --config may stand, --json on
every list and show command, the documented exit codes, the files' modes, errors as sentences,
and the commands for what the API can do (audit, device show/reset/sign-in/sign-out, tenant
delete), progress bars on a terminal only, shell completion.
"""

from __future__ import annotations

import asyncio
import json
import os
import pty
import select
import stat
import subprocess
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

import pytest

from tests.helpers.app import Api
from tests.helpers.oauth import make_tenant, provisioned_device, start
from tests.helpers.proc import clean_env, run_imprint
from tests.helpers.server import imprint_argv

MAC1 = "02:00:5e:00:18:01"
MAC2 = "02:00:5e:00:18:02"
DEFAULT_CONFIG = Path("/etc/imprint/imprint.toml")


def imprint(cfg: Path, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    """`imprint ARGS --config CFG` (the config after the command)."""
    return run_imprint(cfg, *args, stdin=stdin, check=False, timeout=60)


def raw(
    args: Sequence[str], cwd: Path, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """`imprint ARGS` exactly as given (no --config added), in `cwd`."""
    return subprocess.run(
        [*imprint_argv(), *args],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=cwd,
        env=env if env is not None else clean_env(),
    )


def mode(p: Path) -> int:
    return stat.S_IMODE(p.stat().st_mode)


def seed(cfg: Path) -> None:
    for args in (
        ("tenants", "create", "--id", "acme", "--name", "Acme"),
        ("devices", "add", "--tenant", "acme", "--mac", MAC1, "--location", "Lobby"),
        ("users", "create", "--tenant", "acme", "--username", "room-1", "--password", "pw pw pw 1"),
        ("admins", "create", "--username", "ops", "--password", "pw pw pw 1", "--role", "operator"),
    ):
        r = imprint(cfg, *args)
        assert r.returncode == 0, (args, r.stdout, r.stderr)
    assert imprint(cfg, "tokens", "create", "--role", "operator").returncode == 0


# ---- no store is made by anything but `db init` (and `serve`) ------------------------------------


@pytest.mark.parametrize(
    "args",
    [
        ("tenants", "list"),
        ("tenants", "create", "--id", "acme", "--name", "Acme"),
        ("devices", "list", "--tenant", "acme"),
        ("tokens", "list", "--json"),
        ("admins", "list"),
        ("audit",),
        ("discovered",),
    ],
    ids=lambda a: " ".join(a[:2]),
)
def test_a_command_without_a_store_creates_none_and_says_how_to_make_one(
    bare_cfg: Path, args: tuple[str, ...]
) -> None:
    r = imprint(bare_cfg, *args)
    assert r.returncode == 2, r.stdout + r.stderr
    db = bare_cfg.parent / "state" / "imprint.db"
    assert r.stderr.strip() == (
        f"error: no store at {db}: run 'imprint db init --config {bare_cfg}' "
        "(or start 'imprint serve')"
    )
    assert r.stdout == ""
    assert not (bare_cfg.parent / "state").exists()  # no database, no code key, no folder


def test_no_config_anywhere_is_a_usage_error_naming_the_paths_tried(tmp_path: Path) -> None:
    if DEFAULT_CONFIG.exists():
        pytest.skip(f"{DEFAULT_CONFIG} exists on this machine: it would be used")
    r = raw(["tenants", "list"], tmp_path)
    assert r.returncode == 2
    assert "--config" in r.stderr and "$IMPRINT_CONFIG" in r.stderr
    assert str(DEFAULT_CONFIG) in r.stderr
    assert list(tmp_path.iterdir()) == []  # the empty folder stays empty: no imprint.db, no key


def test_db_init_makes_a_private_store_and_key_and_is_safe_to_repeat(bare_cfg: Path) -> None:
    state = bare_cfg.parent / "state"
    r = imprint(bare_cfg, "db", "init")
    assert r.returncode == 0, r.stderr
    assert "created the store" in r.stdout and "created the code key" in r.stdout
    assert mode(state) == 0o750
    assert mode(state / "imprint.db") == 0o640
    assert mode(state / "imprint-codes.key") == 0o600
    key = (state / "imprint-codes.key").read_bytes()
    assert imprint(bare_cfg, "tenants", "create", "--id", "acme", "--name", "Acme").returncode == 0

    again = imprint(bare_cfg, "db", "init")
    assert again.returncode == 0 and "exists" in again.stdout
    assert (state / "imprint-codes.key").read_bytes() == key  # the key is never replaced
    assert "acme" in imprint(bare_cfg, "tenants", "list").stdout  # nothing stored is lost


def test_a_missing_code_key_is_named_only_by_commands_that_need_it(cfg: Path) -> None:
    key = cfg.parent / "state" / "imprint-codes.key"
    seed(cfg)
    key.unlink()
    assert imprint(cfg, "tenants", "list").returncode == 0  # touches no code
    r = imprint(cfg, "codes", "generate", "--tenant", "acme", "--all")
    assert r.returncode == 2
    assert f"the code key file {key} is missing" in r.stderr and "db init" in r.stderr
    assert not key.exists()  # not silently remade: codes issued before would stop matching


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root (to chown)")
def test_db_init_as_root_gives_the_files_to_the_state_folders_owner(bare_cfg: Path) -> None:
    state = bare_cfg.parent / "state"
    state.mkdir(mode=0o750)
    os.chown(state, 65534, 65534)  # a service user's folder, e.g. /var/lib/imprint
    assert imprint(bare_cfg, "db", "init").returncode == 0
    for name in ("imprint.db", "imprint-codes.key"):
        st = (state / name).stat()
        assert (st.st_uid, st.st_gid) == (65534, 65534), name


# ---- global options before or after the command --------------------------------------------------


def test_config_and_json_go_before_or_after_the_command_or_come_from_the_environment(
    cfg: Path, tmp_path: Path
) -> None:
    seed(cfg)
    c = str(cfg)
    env = {**clean_env(), "IMPRINT_CONFIG": c}
    runs = {
        "after": raw(["tenants", "list", "--config", c, "--json"], tmp_path),
        "before": raw(["--config", c, "--json", "tenants", "list"], tmp_path),
        "mixed": raw(["--json", "tenants", "list", "--config", c], tmp_path),
        "group": raw(["tenants", "--config", c, "list", "--json"], tmp_path),
        "env": raw(["tenants", "list", "--json"], tmp_path, env),
    }
    for how, r in runs.items():
        assert r.returncode == 0, (how, r.stderr)
        assert [t["id"] for t in json.loads(r.stdout)] == ["acme"], how
    # Given both before and after the command, the one after wins.
    other = tmp_path / "other.toml"
    other.write_text("[store]\npath = 'nowhere/imprint.db'\n[tls]\nenabled = false\n")
    r = raw(["--config", str(other), "tenants", "list", "--json", "--config", c], tmp_path)
    assert r.returncode == 0 and json.loads(r.stdout)[0]["id"] == "acme"
    r = raw(["-q", "--config", c, "tokens", "create", "--role", "operator"], tmp_path)
    assert r.returncode == 0 and r.stdout.startswith("imp_") and r.stderr == ""  # -q: no note


# ---- --json on every list and show command ---------------------------------------------------------

JSON_COMMANDS: list[tuple[str, ...]] = [
    ("tenants", "list"),
    ("tenants", "show", "acme"),
    ("devices", "list", "--tenant", "acme"),
    ("devices", "show", MAC1),
    ("devices", "show", MAC1, "--tenant", "acme"),
    ("users", "list", "--tenant", "acme"),
    ("tokens", "list"),
    ("admins", "list"),
    ("audit",),
    ("audit", "--tenant", "acme", "--limit", "2"),
    ("discovered",),
    ("codes", "generate", "--tenant", "acme", "--all"),
]


def test_every_list_and_show_command_prints_json_that_parses(cfg: Path) -> None:
    seed(cfg)
    for args in JSON_COMMANDS:
        for argv in ((*args, "--json"), ("--json", *args)):
            r = imprint(cfg, *argv)
            assert r.returncode == 0, (argv, r.stderr)
            doc = json.loads(r.stdout)
            assert isinstance(doc, list | dict), (argv, doc)
            assert doc != [] or args == ("discovered",), argv  # nothing was seen on a network
    r = imprint(cfg, "devices", "show", MAC1, "--json")
    d = json.loads(r.stdout)
    assert d["mac"] == MAC1 and d["tenant"] == "acme" and d["location"] == "Lobby"
    r = imprint(cfg, "tokens", "list", "--json")
    assert json.loads(r.stdout)[0]["role"] == "operator"
    assert "digest" not in r.stdout and "imp_" not in r.stdout
    r = imprint(cfg, "admins", "list", "--json")
    assert json.loads(r.stdout) == [
        {
            "username": "ops",
            "role": "operator",
            "tenant": None,
            "disabled": False,
            "created_at": json.loads(r.stdout)[0]["created_at"],
        }
    ]


def test_json_on_a_command_with_no_json_output_is_a_usage_error(cfg: Path) -> None:
    r = imprint(cfg, "--json", "tenants", "create", "--id", "acme", "--name", "Acme")
    assert r.returncode == 2 and "has no JSON output" in r.stderr
    assert imprint(cfg, "tenants", "list", "--json").stdout.strip() == "[]"  # nothing was made


# ---- exit codes and error sentences ----------------------------------------------------------------


def test_exit_codes_are_0_success_1_refused_2_usage(cfg: Path) -> None:
    seed(cfg)
    cases: list[tuple[tuple[str, ...], int]] = [
        (("devices", "list", "--tenant", "acme"), 0),
        (("devices", "show", MAC2), 1),  # not registered
        (("devices", "add", "--tenant", "acme", "--mac", MAC1), 1),  # already registered
        (("tenants", "delete", "acme"), 1),  # has devices
        (("tenants", "show", "ghost"), 1),
        (("devices", "list", "--tenant", "acme", "--limit", "-5"), 2),
        (("devices", "list", "--tenant", "acme", "--limit", "1001"), 2),
        (("devices", "list", "--tenant", "acme", "--offset", "x"), 2),
        (("audit", "--limit", "0"), 2),
        (("devices", "frobnicate"), 2),
        (("devices", "list"), 2),  # --tenant missing
        (("codes", "generate", "--tenant", "acme"), 2),  # neither --mac nor --all
    ]
    for args, code in cases:
        r = imprint(cfg, *args)
        assert r.returncode == code, (args, r.returncode, r.stderr)
        if code:
            assert r.stderr.strip(), args  # every refusal says why
    r = imprint(cfg, "devices", "list", "--tenant", "acme", "--limit", "-5")
    assert "between 1 and 1000" in r.stderr


def test_error_details_are_sentences_not_python_reprs(cfg: Path, tmp_path: Path) -> None:
    seed(cfg)
    r = imprint(cfg, "devices", "add", "--tenant", "acme", "--mac", "zz")
    assert r.returncode == 1
    assert r.stderr.startswith("error: 'zz' is not a MAC address")
    r = imprint(cfg, "codes", "generate", "--tenant", "acme", "--mac", "zz", "--mac", MAC2)
    assert r.returncode == 1
    assert "  item 1: value 'zz': 'zz' is not a MAC address" in r.stderr
    csv = tmp_path / "dup.csv"
    csv.write_text(f"MAC ID,Location\n{MAC1},Again\n")
    r = imprint(cfg, "devices", "import", "--tenant", "acme", str(csv))
    assert r.returncode == 1
    assert f"  row 2, field MAC ID: value '{MAC1}': this MAC is already registered" in r.stderr
    for out in (r.stderr,):
        assert "{" not in out and "'field'" not in out and "'message'" not in out


def test_help_documents_the_exit_codes_and_the_config_lookup(tmp_path: Path) -> None:
    r = raw(["--help"], tmp_path)
    assert r.returncode == 0
    text = " ".join(r.stdout.split())
    assert "Exit codes: 0 success; 1 refused" in text and "2 usage or configuration error" in text
    assert "$IMPRINT_CONFIG" in text and str(DEFAULT_CONFIG) in text
    for command in ("audit", "db", "completion", "tenants", "devices"):
        assert command in text


# ---- the commands for what the API can do ------------------------------------------------------------


def test_audit_lists_cli_changes_newest_first(cfg: Path) -> None:
    seed(cfg)
    entries = json.loads(imprint(cfg, "audit", "--json").stdout)
    actions = [e["action"] for e in entries]
    assert actions[0] == "token.create" and "tenant.create" in actions  # site-wide ones too
    assert all(e["actor"].startswith("cli:") for e in entries)
    ids = [e["id"] for e in entries]
    assert ids == sorted(ids, reverse=True)
    mine = json.loads(imprint(cfg, "audit", "--tenant", "acme", "--json").stdout)
    assert {e["tenant"] for e in mine} == {"acme"} and "token.create" not in str(mine)
    page = imprint(cfg, "audit", "--limit", "1")
    assert "older entries: --before-id" in page.stdout
    before = page.stdout.rsplit("--before-id ", 1)[1].strip()
    older = json.loads(imprint(cfg, "audit", "--before-id", before, "--json").stdout)
    assert older and all(e["id"] < int(before) for e in older)


def test_devices_list_all_walks_every_page(cfg: Path, tmp_path: Path) -> None:
    assert imprint(cfg, "tenants", "create", "--id", "acme", "--name", "Acme").returncode == 0
    macs = [f"02:00:5e:02:{i // 256:02x}:{i % 256:02x}" for i in range(1205)]
    csv = tmp_path / "d.csv"
    csv.write_text("MAC ID,Location\n" + "".join(f"{m},R\n" for m in macs))
    assert imprint(cfg, "devices", "import", "--tenant", "acme", str(csv)).returncode == 0
    doc = json.loads(imprint(cfg, "devices", "list", "--tenant", "acme", "--all", "--json").stdout)
    assert doc["count"] == 1205 and [d["mac"] for d in doc["results"]] == macs
    r = imprint(cfg, "devices", "list", "--tenant", "acme", "--all")
    assert r.stdout.rstrip().endswith("1205 of 1205 device(s)") and "next page" not in r.stdout
    r = imprint(cfg, "devices", "list", "--tenant", "acme", "--all", "--offset", "5")
    assert r.returncode == 2 and "drop --cursor and --offset" in r.stderr


def test_device_reset_revokes_its_code_and_is_audited(cfg: Path) -> None:
    seed(cfg)
    assert imprint(cfg, "codes", "generate", "--tenant", "acme", "--mac", MAC1).returncode == 0
    assert json.loads(imprint(cfg, "devices", "show", MAC1, "--json").stdout)["code_expires_at"]
    r = imprint(cfg, "devices", "reset", MAC1.upper())
    assert r.returncode == 0 and f"reset {MAC1} in acme: awaiting_activation" in r.stdout
    d = json.loads(imprint(cfg, "devices", "show", MAC1, "--json").stdout)
    assert d["state"] == "awaiting_activation" and d["code_expires_at"] is None
    assert json.loads(imprint(cfg, "audit", "--limit", "1", "--json").stdout)[0]["action"] == (
        "device.reset"
    )
    r = imprint(cfg, "devices", "reset", MAC1, "--tenant", "ghost")
    assert r.returncode == 1 and "not found" in r.stderr


def test_tenant_delete_is_refused_while_it_has_devices_unless_forced(cfg: Path) -> None:
    seed(cfg)
    assert imprint(cfg, "tenants", "create", "--id", "empty", "--name", "Empty").returncode == 0
    r = imprint(cfg, "tenants", "delete", "acme")
    assert r.returncode == 1
    assert "has 1 device(s) and 1 user account(s)" in r.stderr and "--force" in r.stderr
    assert "acme" in imprint(cfg, "tenants", "list").stdout  # nothing was deleted
    assert imprint(cfg, "tenants", "delete", "empty").returncode == 0
    r = imprint(cfg, "tenants", "delete", "acme", "--force")
    assert r.returncode == 0 and "with 1 device(s) and 1 user account(s)" in r.stdout
    assert json.loads(imprint(cfg, "tenants", "list", "--json").stdout) == []
    assert imprint(cfg, "devices", "show", MAC1).returncode == 1
    # The audit log keeps the tenant's history, ending with its deletion.
    history = json.loads(imprint(cfg, "audit", "--tenant", "acme", "--json").stdout)
    assert history[0]["action"] == "tenant.delete" and history[-1]["action"] == "tenant.create"
    r = imprint(cfg, "audit", "--tenant", "ghost")
    assert r.returncode == 1 and "tenant 'ghost' not found" in r.stderr
    everything = json.loads(imprint(cfg, "audit", "--json").stdout)
    assert everything[0]["action"] == "tenant.delete" and everything[0]["target"] == "acme"
    assert imprint(cfg, "tenants", "delete", "acme").returncode == 1  # gone: not found


async def test_sign_in_shows_the_pending_user_code_and_sign_out_ends_it(api: Api) -> None:
    api.clock.now = datetime.now(UTC)  # the CLI runs on the real clock
    await make_tenant(api, "contoso", "Contoso Ltd")
    cfg = api.settings.config_file
    assert cfg is not None
    mac = "02:00:5e:00:18:55"
    dev = await provisioned_device(api, "contoso", mac, "Lobby")
    auth = await start(api, dev)
    r = await asyncio.to_thread(imprint, cfg, "devices", "sign-in", mac, "--json")
    assert r.returncode == 0, r.stderr
    got = json.loads(r.stdout)
    assert got["user_code"] == auth["user_code"] and got["mac"] == mac
    assert got["verification_uri_complete"].endswith(auth["user_code"])
    r = await asyncio.to_thread(imprint, cfg, "devices", "sign-in", mac)
    assert r.returncode == 0 and f"enter the code {auth['user_code']}" in r.stdout
    r = await asyncio.to_thread(imprint, cfg, "devices", "sign-out", mac)
    assert r.returncode == 0 and "awaiting_sign_in" in r.stdout
    r = await asyncio.to_thread(imprint, cfg, "devices", "sign-in", mac)
    assert r.returncode == 1 and "has not started sign-in" in r.stderr  # its request is revoked


def test_sign_in_and_out_of_a_device_not_provisioned_are_refused(cfg: Path) -> None:
    seed(cfg)
    r = imprint(cfg, "devices", "sign-in", MAC1)
    assert r.returncode == 1 and "not provisioned" in r.stderr
    r = imprint(cfg, "devices", "sign-out", MAC1)
    assert r.returncode == 1 and "not provisioned" in r.stderr
    assert not (cfg.parent / "state" / "imprint-oauth-signing.pem").exists()  # not made here


# ---- progress bars on a terminal, quiet when piped; completion ----------------------------------------


def _run_on_a_terminal(argv: list[str]) -> tuple[int, str, str]:
    """Run with stdout on a pseudo-terminal and stderr on a pipe: (exit code, stdout, stderr)."""
    leader, follower = pty.openpty()
    proc = subprocess.Popen(
        argv, stdout=follower, stderr=subprocess.PIPE, env=clean_env(), text=False
    )
    os.close(follower)
    out = b""
    while True:
        ready, _, _ = select.select([leader], [], [], 60)
        if not ready:
            break
        try:
            chunk = os.read(leader, 4096)
        except OSError:  # EIO: the child closed the terminal
            break
        if not chunk:
            break
        out += chunk
    os.close(leader)
    assert proc.stderr is not None
    with proc.stderr:
        err = proc.stderr.read()
    return proc.wait(60), out.decode(errors="replace"), err.decode(errors="replace")


def test_import_shows_a_progress_bar_on_a_terminal_and_nothing_when_piped(
    cfg: Path, tmp_path: Path
) -> None:
    assert imprint(cfg, "tenants", "create", "--id", "acme", "--name", "Acme").returncode == 0
    csv = tmp_path / "d.csv"
    csv.write_text("MAC ID,Location\n" + "".join(f"02:00:5e:01:00:{i:02x},R\n" for i in range(50)))
    base = [*imprint_argv(), "devices", "import", "--tenant", "acme", "--config", str(cfg)]
    code, out, err = _run_on_a_terminal([*base, str(csv)])
    assert code == 0 and "imported 50 device(s)" in out
    assert "storing devices" in err and "50/50" in err
    piped = imprint(cfg, "codes", "generate", "--tenant", "acme", "--all")
    assert piped.returncode == 0 and piped.stderr == ""  # no bar, no control characters
    code, out, err = _run_on_a_terminal(
        [
            *imprint_argv(),
            "-q",
            "codes",
            "generate",
            "--tenant",
            "acme",
            "--all",
            "--config",
            str(cfg),
        ]
    )
    assert code == 0 and "50 code(s) issued" in out and err == ""  # -q: no bar either


def test_completion_scripts_name_the_commands(tmp_path: Path) -> None:
    for shell in ("bash", "zsh"):
        r = raw(["completion", shell], tmp_path)
        assert r.returncode == 0, r.stderr
        assert "imprint" in r.stdout and "tenants" in r.stdout and "sign-out" in r.stdout
    assert list(tmp_path.iterdir()) == []  # needs no config and makes nothing
    r = raw(["completion", "cmd.exe"], tmp_path)
    assert r.returncode == 2
