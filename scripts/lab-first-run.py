"""The lab's first run (scripts/lab runs it before every `imprint serve`): an operator API token
and an admin UI account, each made once, then what to open and how to sign in.

    python scripts/lab-first-run.py --config configs/lab.toml --state lab-state

Made with the real CLI (`imprint tokens create`, `imprint admins create`) of this interpreter:
- STATE/operator.token: an operator API token;
- the admin UI account `lab-admin` (operator), its random password in STATE/admin.password.
Both files are 0600 and are written only once what they hold exists: a failed step leaves
nothing behind, and the next run tries again. Later runs keep both and make nothing.
"""

from __future__ import annotations

import argparse
import os
import secrets
import subprocess
import sys
from pathlib import Path

USERNAME = "lab-admin"


def cli(config: Path, *args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
    """One `imprint` command (`python -m server`: the server package this interpreter imports)."""
    return subprocess.run(
        [sys.executable, "-m", "server", *args, "--config", str(config)],
        input=stdin,
        capture_output=True,
        text=True,
        check=False,
    )


def fail(what: str, r: subprocess.CompletedProcess[str], hint: str = "") -> None:
    out = (r.stderr or r.stdout).strip()
    sys.exit(
        f"lab: {what} failed (exit {r.returncode}): {out}" + (f"\n     {hint}" if hint else "")
    )


def secret_file(path: Path, text: str) -> Path:
    """`text` in a new file beside `path` (`path`.new), mode 0600 whatever the umask; the caller
    renames it onto `path` once what it holds exists (os.replace: all or nothing)."""
    tmp = path.with_name(path.name + ".new")
    tmp.unlink(missing_ok=True)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        os.fchmod(fd, 0o600)
        os.write(fd, text.encode())
        os.fsync(fd)
    finally:
        os.close(fd)
    return tmp


def has_content(path: Path) -> bool:
    return path.is_file() and path.stat().st_size > 0


def ensure_token(config: Path, path: Path) -> bool:
    if has_content(path):
        return False
    r = cli(config, "tokens", "create", "--role", "operator", "--name", "lab")
    if r.returncode != 0 or not r.stdout.strip():
        fail("imprint tokens create", r)
    os.replace(secret_file(path, r.stdout), path)
    return True


def ensure_admin(config: Path, path: Path, shown: str) -> bool:
    if has_content(path):
        return False
    listed = cli(config, "admins", "list")
    if listed.returncode != 0:
        fail("imprint admins list", listed)
    if any(line.split()[:1] == [USERNAME] for line in listed.stdout.splitlines()):
        sys.exit(
            f"lab: the admin account {USERNAME} exists but its password file {shown} is gone.\n"
            f"     Delete the lab's state folder to start afresh, or make another account:\n"
            f"     .venv/bin/imprint admins create --username NAME --role operator "
            f"--config {config}"
        )
    password = secrets.token_urlsafe(18)  # 24 characters, 144 bits
    tmp = secret_file(path, password + "\n")
    r = cli(
        config,
        "admins",
        "create",
        "--username",
        USERNAME,
        "--role",
        "operator",
        "--password-file",
        str(tmp),
    )
    if r.returncode != 0:
        tmp.unlink(missing_ok=True)
        fail(f"imprint admins create --username {USERNAME}", r)
    os.replace(tmp, path)
    return True


def public_url(config: Path) -> str:
    """The URL the server says it is reached at (the config and IMPRINT_* overrides)."""
    from server.app import public_url as url_of
    from server.config import load_settings

    return url_of(load_settings(config)).rstrip("/")


def show(path: Path) -> str:
    """`path` as the person typing in the current folder would write it."""
    try:
        return os.path.relpath(path)
    except ValueError:
        return str(path)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--config", type=Path, required=True)
    ap.add_argument("--state", type=Path, required=True, help="folder for the token and password")
    a = ap.parse_args(argv)
    if not a.state.is_dir():
        # As the store makes its folder: the service's group may read it, nobody else.
        a.state.mkdir(parents=True, exist_ok=True)
        a.state.chmod(0o750)
    token_file, password_file = a.state / "operator.token", a.state / "admin.password"
    # The store and the code key, made once (later runs only apply pending migrations).
    r = cli(a.config, "db", "init")
    if r.returncode != 0:
        fail("imprint db init", r)
    made_token = ensure_token(a.config, token_file)
    made_admin = ensure_admin(a.config, password_file, show(password_file))
    url = public_url(a.config)
    new = " (made now)"
    print(
        f"""Imprint lab: state in {show(a.state)}, config {show(a.config)}
  Admin UI:   {url}/ui
              user: {USERNAME}{new if made_admin else ""}
              password: in {show(password_file)}  (cat {show(password_file)})
              The certificate is self-signed: accept it in the browser (its SHA-256
              fingerprint is in the log below).
  API docs:   {url}/api/docs
  API token:  {show(token_file)} (operator{"; made now" if made_token else ""})
  Try:  TOKEN=$(cat {show(token_file)})
        curl -sk -H "Authorization: Bearer $TOKEN" -H 'Content-Type: application/json' \\
             -d '{{"id":"contoso","name":"Contoso"}}' {url}/api/v1/tenants
  CLI:  .venv/bin/imprint --help   (add --config {show(a.config)})""",
        flush=True,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
