"""Issue 2: a SIGKILL while a 100,000-row CSV import is in flight stores all rows or none.

The real server (`imprint serve`) runs as a subprocess over a temporary SQLite file; the import
goes over a real loopback socket. Each round kills the server at a different point: after the
201 (committed data must survive), while the body is being parsed (no write transaction yet),
and twice inside the import's single write transaction (early, and near COMMIT). The kill point
is observed, not assumed: a second SQLite connection probes the write lock (`BEGIN IMMEDIATE`
fails while the import transaction holds it) and the `-wal` file's growth shows how far the
transaction got. After each kill the server is restarted on the same file: the tenant must hold
exactly 0 or exactly 100,000 devices, in the API, the in-memory index (/metrics), the change
feed and the audit log alike, and `PRAGMA integrity_check` must say 'ok'.
"""

from __future__ import annotations

import http.client
import json
import os
import re
import select
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.helpers.proc import free_port

ROWS = 100_000
TENANT = "crash"
DEADLINE_S = 60.0


def imprint_cli() -> Path:
    exe = Path(sys.executable).with_name("imprint")
    assert exe.exists(), f"{exe} missing: the package must be installed in this venv"
    return exe


def build_csv(n: int) -> bytes:
    lines = ["MAC ID,Location"]
    for i in range(n):
        b = i.to_bytes(4, "big")
        lines.append(f"02:00:{b[0]:02x}:{b[1]:02x}:{b[2]:02x}:{b[3]:02x},Room {i}")
    return ("\r\n".join(lines) + "\r\n").encode()


def http_call(
    port: int, method: str, path: str, token: str | None = None, body: bytes | None = None
) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    headers = {"Content-Type": "application/json"} if body is not None else {}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    try:
        conn.request(method, path, body=body, headers=headers)
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


@dataclass
class Instance:
    """One state dir and config; the server process is started and killed around it."""

    root: Path
    port: int
    cfg: Path
    db: Path
    token: str = ""
    proc: subprocess.Popen[bytes] | None = None
    starts: int = 0

    @classmethod
    def create(cls, root: Path) -> Instance:
        root.mkdir(parents=True)
        port = free_port()
        cfg = root / "imprint.toml"
        cfg.write_text(
            '[store]\npath = "state/imprint.db"\npoll_interval_s = 0.2\n'
            f'[http]\nhost = "127.0.0.1"\nport = {port}\n'
            # Plain HTTP on loopback: the test is about the store, not TLS.
            '[tls]\nenabled = false\n[log]\nlevel = "WARNING"\n',
            encoding="utf-8",
        )
        inst = cls(root, port, cfg, root / "state" / "imprint.db")
        subprocess.run(
            [str(imprint_cli()), "db", "init", "--config", str(cfg)],
            check=True,
            capture_output=True,
            timeout=60,
        )
        inst.token = subprocess.run(
            [str(imprint_cli()), "tokens", "create", "--role", "operator", "--config", str(cfg)],
            check=True,
            capture_output=True,
            text=True,
            timeout=60,
        ).stdout.strip()
        assert inst.token.startswith("imp_"), inst.token
        return inst

    @property
    def wal(self) -> Path:
        return self.db.with_name(self.db.name + "-wal")

    def wal_size(self) -> int:
        try:
            return self.wal.stat().st_size
        except FileNotFoundError:
            return 0

    def start(self) -> None:
        self.starts += 1
        log = (self.root / f"server-{self.starts}.log").open("wb")
        try:
            self.proc = subprocess.Popen(
                [str(imprint_cli()), "serve", "--config", str(self.cfg)],
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        finally:
            log.close()  # the child holds its own descriptor
        end = time.monotonic() + DEADLINE_S
        while time.monotonic() < end:
            if self.proc.poll() is not None:
                pytest.fail(f"server exited with {self.proc.returncode}: {self.log_tail()}")
            try:
                if http_call(self.port, "GET", "/readyz")[0] == 200:
                    return
            except OSError:
                pass
            time.sleep(0.05)
        pytest.fail(f"server not ready within {DEADLINE_S} s: {self.log_tail()}")

    def log_tail(self) -> str:
        return (self.root / f"server-{self.starts}.log").read_text(errors="replace")[-2000:]

    def sigkill(self) -> None:
        assert self.proc is not None
        os.kill(self.proc.pid, signal.SIGKILL)
        assert self.proc.wait(timeout=30) == -signal.SIGKILL
        self.proc = None

    def stop(self) -> None:
        """Graceful stop (SIGTERM) so the database is closed before we open it ourselves."""
        if self.proc is None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            pytest.fail("server did not stop within 30 s of SIGTERM")
        finally:
            self.proc = None

    def ensure_dead(self) -> None:
        if self.proc is not None:
            if self.proc.poll() is None:
                self.proc.kill()
            self.proc.wait()
            self.proc = None


def write_lock_held(db: Path) -> bool:
    """True if another connection holds the write lock (i.e. a write transaction is open).

    Closed again before the caller kills the server, so the server stays the process that
    recovers the WAL on restart (a last-connection close would checkpoint it for us).
    """
    probe = sqlite3.connect(db, timeout=0, isolation_level=None)
    try:
        probe.execute("BEGIN IMMEDIATE")
    except sqlite3.OperationalError as e:
        if "locked" in str(e) or "busy" in str(e):
            return True
        raise
    else:
        probe.execute("ROLLBACK")
        return False
    finally:
        probe.close()


@dataclass
class Kill:
    """What was observed at the moment of the kill."""

    phase: str
    wal_growth: int
    status: int | None  # the HTTP status if the response had arrived


def post_import_then_kill(
    inst: Instance, body: bytes, mode: str, wal_full: int, fraction: float
) -> Kill:
    """Send the import over a raw socket and SIGKILL the server at the point `mode` asks for.

    mode "after_201": wait for the response; "parse": right after the body is sent, before any
    write transaction; "tx": once the -wal has grown by `fraction` of `wal_full` (the growth a
    whole import produces) while the write lock is held.
    """
    base = inst.wal_size()
    head = (
        f"POST /api/v1/tenants/{TENANT}/devices/import HTTP/1.1\r\n"
        f"Host: 127.0.0.1:{inst.port}\r\nAuthorization: Bearer {inst.token}\r\n"
        f"Content-Type: text/csv\r\nContent-Length: {len(body)}\r\nConnection: close\r\n\r\n"
    ).encode()
    with socket.create_connection(("127.0.0.1", inst.port), timeout=DEADLINE_S) as sock:
        sock.sendall(head + body)
        if mode == "parse":
            # Parsing 100,000 rows takes far longer than this; the probe below confirms that
            # no write transaction had begun.
            time.sleep(0.05)
            held = write_lock_held(inst.db)
            growth = inst.wal_size() - base
            inst.sigkill()
            return Kill("in transaction" if held else "before transaction", growth, None)
        end = time.monotonic() + DEADLINE_S
        while time.monotonic() < end:
            readable, _, _ = select.select([sock], [], [], 0.002)
            if readable:
                status = _read_status(sock)
                growth = inst.wal_size() - base
                inst.sigkill()
                return Kill("after response", growth, status)
            growth = inst.wal_size() - base
            if mode == "tx" and growth >= fraction * wal_full and write_lock_held(inst.db):
                inst.sigkill()
                return Kill("in transaction", growth, None)
        pytest.fail(f"no response and no kill point within {DEADLINE_S} s")


def _read_status(sock: socket.socket) -> int:
    data = b""
    end = time.monotonic() + DEADLINE_S
    while b"\r\n" not in data and time.monotonic() < end:
        chunk = sock.recv(4096)
        if not chunk:
            break
        data += chunk
    m = re.match(rb"HTTP/1\.1 (\d{3}) ", data)
    assert m, f"not an HTTP response: {data[:200]!r}"
    return int(m.group(1))


@dataclass
class Outcome:
    api_count: int
    index_count: int
    db_devices: int
    db_changes: int
    db_audit: int
    integrity: str
    fk_violations: int


def inspect(inst: Instance) -> Outcome:
    """Restart on the crashed file, read what the server sees, stop it, then check the file."""
    inst.start()
    status, body = http_call(
        inst.port, "GET", f"/api/v1/tenants/{TENANT}/devices?limit=1", inst.token
    )
    assert status == 200, body
    api_count = json.loads(body)["count"]
    status, body = http_call(inst.port, "GET", "/metrics")
    assert status == 200
    # prometheus_client writes every value as a float ("100000.0").
    m = re.search(rb'^imprint_devices\{state="awaiting_activation"\} (\S+)$', body, re.M)
    index_count = int(float(m.group(1))) if m else 0
    inst.stop()
    db = sqlite3.connect(inst.db, isolation_level=None)

    def one(sql: str, *params: str) -> int | str:
        value: int | str = db.execute(sql, params).fetchone()[0]
        return value

    try:
        return Outcome(
            api_count=api_count,
            index_count=index_count,
            db_devices=int(one("SELECT count(*) FROM devices WHERE tenant_id = ?", TENANT)),
            db_changes=int(one("SELECT count(*) FROM registry_changes")),
            db_audit=int(one("SELECT count(*) FROM audit WHERE action = 'device.import'")),
            integrity=str(one("PRAGMA integrity_check")),
            fk_violations=len(db.execute("PRAGMA foreign_key_check").fetchall()),
        )
    finally:
        db.close()


def crash_round(
    root: Path, body: bytes, mode: str, wal_full: int = 0, fraction: float = 0.0
) -> tuple[Kill, Outcome, int]:
    inst = Instance.create(root)
    try:
        inst.start()
        status, resp = http_call(
            inst.port,
            "POST",
            "/api/v1/tenants",
            inst.token,
            json.dumps({"id": TENANT, "name": "Crash Test Ltd"}).encode(),
        )
        assert status == 201, resp
        base = inst.wal_size()
        kill = post_import_then_kill(inst, body, mode, wal_full, fraction)
        wal_at_kill = inst.wal_size() - base
        outcome = inspect(inst)
    finally:
        inst.ensure_dead()
    return kill, outcome, wal_at_kill


@pytest.mark.timeout(240)
def test_sigkill_during_import_stores_all_rows_or_none(tmp_path: Path) -> None:
    body = build_csv(ROWS)
    plan = [
        ("after 201", "after_201", 0.0),
        ("during parse", "parse", 0.0),
        ("early in tx", "tx", 0.25),
        ("near commit", "tx", 0.9),
    ]
    wal_full = 0
    landed_in_tx = 0
    print()
    for i, (label, mode, fraction) in enumerate(plan):
        kill, out, wal_at_kill = crash_round(tmp_path / f"round{i}", body, mode, wal_full, fraction)
        stored = out.db_devices
        print(
            f"round {i} ({label}): killed {kill.phase}"
            f"{f' (HTTP {kill.status})' if kill.status else ''}, WAL +{kill.wal_growth / 1e6:.1f} MB"
            f"{f' of ~{wal_full / 1e6:.1f} MB' if wal_full else ''} -> after restart "
            f"{stored} devices ({'ALL' if stored == ROWS else 'NONE' if stored == 0 else 'PARTIAL'}), "
            f"integrity_check {out.integrity!r}"
        )
        assert out.integrity == "ok"
        assert out.fk_violations == 0
        assert stored in (0, ROWS), f"partial import survived a crash: {stored} of {ROWS}"
        # Every view of the registry agrees: rows, change feed, audit, the server's own answer
        # and the in-memory index the DHCP/mDNS hot path reads.
        assert (out.api_count, out.index_count, out.db_changes, out.db_audit) == (stored,) * 4
        if mode == "after_201":
            # A 201 promised the rows are stored: they must survive the crash.
            assert kill.status == 201
            assert stored == ROWS
            wal_full = wal_at_kill
            assert wal_full > 0
        if kill.phase == "before transaction":
            assert stored == 0
        if kill.phase == "in transaction":
            landed_in_tx += 1
    # Without this the test could pass while never killing inside the transaction.
    assert landed_in_tx >= 2, "no kill landed while the import transaction was open"
