"""SIGKILL the real server at an observed point and restart it on the same file (issue 17).

What the crash tests (tests/integration/registry/test_crash_import.py,
tests/integration/provisioning/test_crash_codes.py and test_crash_redeem.py) and the bench
(bench/reliability/crash.py) share: an `Instance` (a temporary state dir and config, `imprint
serve` started as a subprocess over it, plain HTTP on loopback), a request sent over a raw
socket with the server killed at the point a `mode` asks for, and the probes that observe that
point from outside: a second SQLite connection trying `BEGIN IMMEDIATE` (it fails while a write
transaction holds the lock) and the growth of the `-wal` file (how far the transaction got).

Nothing here asserts with pytest: a broken expectation raises `CrashProbeError` (an
AssertionError, so a test fails on it), and the checks that make a probe's verdict are returned
as data for the caller to assert (tests) or count (the bench).
"""

from __future__ import annotations

import csv
import http.client
import io
import json
import os
import re
import select
import signal
import socket
import sqlite3
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from tests.helpers.proc import clean_env, free_port
from tests.helpers.reliability import count_tracebacks, rss_kb
from tests.helpers.server import imprint_argv

DEADLINE_S = 60.0


class CrashProbeError(AssertionError):
    """The probe could not do what it set out to (the server would not start, no response...)."""


class RestartFailed(CrashProbeError):
    """The server exited on start or never got ready: a crash, in a probe's report."""


def build_csv(n: int, first: int = 0) -> bytes:
    """An import file of `n` devices with MACs 02:00:xx:xx:xx:xx numbered from `first`."""
    lines = ["MAC ID,Location"]
    for i in range(first, first + n):
        lines.append(f"{mac_of(i)},Room {i}")
    return ("\r\n".join(lines) + "\r\n").encode()


def mac_of(i: int) -> str:
    b = i.to_bytes(4, "big")
    return f"02:00:{b[0]:02x}:{b[1]:02x}:{b[2]:02x}:{b[3]:02x}"


def http_call(
    port: int,
    method: str,
    path: str,
    token: str | None = None,
    body: bytes | None = None,
    *,
    content_type: str = "application/json",
    source: str | None = None,
    timeout: float = 30,
) -> tuple[int, bytes]:
    """One request on a fresh loopback connection (from `source` when given: any 127/8 address)."""
    conn = http.client.HTTPConnection(
        "127.0.0.1", port, timeout=timeout, source_address=(source, 0) if source else None
    )
    headers = {"Content-Type": content_type} if body is not None else {}
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
    crashes: int = 0  # starts that failed (the server exited or never got ready)

    @classmethod
    def create(cls, root: Path, extra_toml: str = "") -> Instance:
        root.mkdir(parents=True)
        port = free_port()
        cfg = root / "imprint.toml"
        cfg.write_text(
            '[store]\npath = "state/imprint.db"\npoll_interval_s = 0.2\n'
            f'[http]\nhost = "127.0.0.1"\nport = {port}\n'
            # Plain HTTP on loopback: the probes are about the store, not TLS.
            '[tls]\nenabled = false\n[log]\nlevel = "WARNING"\n' + extra_toml,
            encoding="utf-8",
        )
        inst = cls(root, port, cfg, root / "state" / "imprint.db")
        subprocess.run(
            [*imprint_argv(), "db", "init", "--config", str(cfg)],
            check=True,
            capture_output=True,
            timeout=60,
            env=clean_env(),
        )
        inst.token = subprocess.run(
            [*imprint_argv(), "tokens", "create", "--role", "operator", "--config", str(cfg)],
            check=True,
            capture_output=True,
            text=True,
            timeout=60,
            env=clean_env(),
        ).stdout.strip()
        if not inst.token.startswith("imp_"):
            raise CrashProbeError(f"no operator token: {inst.token!r}")
        return inst

    @property
    def wal(self) -> Path:
        return self.db.with_name(self.db.name + "-wal")

    @property
    def key_file(self) -> Path:
        """The codes' key (server/config.py `codes_key_file`: next to the store by default)."""
        return self.db.parent / "imprint-codes.key"

    def wal_size(self) -> int:
        try:
            return self.wal.stat().st_size
        except FileNotFoundError:
            return 0

    @property
    def pid(self) -> int:
        if self.proc is None:
            raise CrashProbeError("the server is not running")
        return self.proc.pid

    def rss_kb(self) -> int | None:
        return rss_kb(self.pid) if self.proc is not None else None

    def start(self) -> None:
        self.starts += 1
        log = (self.root / f"server-{self.starts}.log").open("wb")
        try:
            self.proc = subprocess.Popen(
                [*imprint_argv(), "serve", "--config", str(self.cfg)],
                stdout=log,
                stderr=subprocess.STDOUT,
                env=clean_env(),
            )
        finally:
            log.close()  # the child holds its own descriptor
        end = time.monotonic() + DEADLINE_S
        while time.monotonic() < end:
            if self.proc.poll() is not None:
                self.crashes += 1
                self.proc = None
                raise RestartFailed(f"server exited on start: {self.log_tail()}")
            try:
                if http_call(self.port, "GET", "/readyz", timeout=5)[0] == 200:
                    return
            except OSError:
                pass
            time.sleep(0.05)
        self.crashes += 1
        self.ensure_dead()
        raise RestartFailed(f"server not ready within {DEADLINE_S} s: {self.log_tail()}")

    def log_tail(self) -> str:
        return (self.root / f"server-{self.starts}.log").read_text(errors="replace")[-2000:]

    def log_text(self) -> str:
        """Every start's log, in order."""
        return "".join(
            (self.root / f"server-{i}.log").read_text(errors="replace")
            for i in range(1, self.starts + 1)
        )

    def tracebacks(self) -> int:
        return count_tracebacks(self.log_text())

    def sigkill(self) -> float:
        """SIGKILL the server and reap it; returns the wall-clock time of the kill."""
        assert self.proc is not None
        at = time.time()
        os.kill(self.proc.pid, signal.SIGKILL)
        if self.proc.wait(timeout=30) != -signal.SIGKILL:
            raise CrashProbeError(f"server exited with {self.proc.returncode}, not by SIGKILL")
        self.proc = None
        return at

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
            raise CrashProbeError("server did not stop within 30 s of SIGTERM") from None
        finally:
            self.proc = None

    def ensure_dead(self) -> None:
        if self.proc is not None:
            if self.proc.poll() is None:
                self.proc.kill()
            self.proc.wait()
            self.proc = None

    # ---- the API, as the operator -------------------------------------------------------------

    def api(
        self, method: str, path: str, body: Any = None, *, content_type: str = "application/json"
    ) -> tuple[int, bytes]:
        data = body if isinstance(body, bytes) or body is None else json.dumps(body).encode()
        return http_call(
            self.port, method, path, self.token, data, content_type=content_type, timeout=120
        )

    def create_tenant(self, tenant: str) -> None:
        status, body = self.api("POST", "/api/v1/tenants", {"id": tenant, "name": f"{tenant} Ltd"})
        if status != 201:
            raise CrashProbeError(f"tenant: HTTP {status} {body[:200]!r}")

    def import_devices(self, tenant: str, csv: bytes) -> int:
        status, body = self.api(
            "POST", f"/api/v1/tenants/{tenant}/devices/import", csv, content_type="text/csv"
        )
        if status != 201:
            raise CrashProbeError(f"import: HTTP {status} {body[:200]!r}")
        return int(json.loads(body)["created"])

    def issue_all_codes(self, tenant: str) -> dict[str, str]:
        status, body = self.api(
            "POST",
            f"/api/v1/tenants/{tenant}/verification-codes",
            {"all_awaiting_activation": True},
        )
        if status != 201:
            raise CrashProbeError(f"codes: HTTP {status} {body[:200]!r}")
        return {c["mac"]: c["code"] for c in json.loads(body)}

    def device_count(self, tenant: str, state: str | None = None) -> int:
        query = f"&state={state}" if state else ""
        status, body = self.api("GET", f"/api/v1/tenants/{tenant}/devices?limit=1{query}")
        if status != 200:
            raise CrashProbeError(f"device list: HTTP {status} {body[:200]!r}")
        return int(json.loads(body)["count"])

    def index_count(self, state: str) -> int:
        """How many devices the in-memory index (what DHCP/mDNS read) holds in `state`."""
        status, body = http_call(self.port, "GET", "/metrics")
        if status != 200:
            raise CrashProbeError(f"/metrics: HTTP {status}")
        # prometheus_client writes every value as a float ("100000.0").
        m = re.search(rb'^imprint_devices\{state="%s"\} (\S+)$' % state.encode(), body, re.M)
        return int(float(m.group(1))) if m else 0

    def export_codes(self, tenant: str) -> dict[str, str]:
        """mac -> the code the export shows ('' for none) for every device of `tenant`."""
        status, body = self.api("GET", f"/api/v1/tenants/{tenant}/devices/export.csv")
        if status != 200:
            raise CrashProbeError(f"export: HTTP {status} {body[:200]!r}")
        rows = csv.reader(io.StringIO(body.decode("utf-8-sig")))
        head = next(rows)
        mac_col, code_col = head.index("MAC ID"), head.index("Verification code")
        return {r[mac_col]: r[code_col] for r in rows}

    @contextmanager
    def sqlite(self) -> Iterator[sqlite3.Connection]:
        """Our own connection to the file, for a stopped server (its close checkpoints the WAL)."""
        if self.proc is not None:
            raise CrashProbeError("stop the server before opening its database")
        db = sqlite3.connect(self.db, isolation_level=None)
        try:
            yield db
        finally:
            db.close()


def integrity(db: sqlite3.Connection) -> tuple[str, int]:
    """(`PRAGMA integrity_check`'s answer, foreign-key violations)."""
    return (
        str(db.execute("PRAGMA integrity_check").fetchone()[0]),
        len(db.execute("PRAGMA foreign_key_check").fetchall()),
    )


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

    phase: str  # "before transaction", "in transaction" or "after response"
    wal_growth: int
    status: int | None = None  # the HTTP status if the response had arrived
    body: bytes = field(default=b"", repr=False)  # its body
    at: float = 0.0  # wall-clock time of the kill
    lock_seen: bool = False  # the write lock was seen held at some point before the kill


BEFORE_TX, IN_TX, AFTER_RESPONSE = "before transaction", "in transaction", "after response"

# The kill points `send_then_kill` knows:
# "response": once the whole response has arrived;
# "early": `delay` seconds after the request is sent (parsing, reading, minting: the probe below
#   says whether a write transaction had begun);
# "tx": once the -wal has grown by `fraction` of `wal_full` (what the whole operation writes)
#   while the write lock is held.
MODES = ("response", "early", "tx")


def send_then_kill(
    inst: Instance,
    method: str,
    path: str,
    body: bytes,
    mode: str,
    *,
    content_type: str = "application/json",
    wal_full: int = 0,
    fraction: float = 0.0,
    delay: float = 0.05,
) -> Kill:
    """Send one request over a raw socket and SIGKILL the server at the point `mode` asks for.

    A response that arrives before the asked-for point still ends it: the kill then lands
    after the response, and `phase` says so.
    """
    if mode not in MODES:
        raise ValueError(f"mode {mode!r} is not one of {MODES}")
    base = inst.wal_size()
    head = (
        f"{method} {path} HTTP/1.1\r\n"
        f"Host: 127.0.0.1:{inst.port}\r\nAuthorization: Bearer {inst.token}\r\n"
        f"Content-Type: {content_type}\r\nContent-Length: {len(body)}\r\nConnection: close\r\n\r\n"
    ).encode()
    lock_seen = False
    with socket.create_connection(("127.0.0.1", inst.port), timeout=DEADLINE_S) as sock:
        sock.sendall(head + body)
        if mode == "early":
            time.sleep(delay)
            held = write_lock_held(inst.db)
            growth = inst.wal_size() - base
            if not held and select.select([sock], [], [], 0)[0]:
                status, data = read_response(sock)
                return Kill(AFTER_RESPONSE, growth, status, data, inst.sigkill())
            return Kill(IN_TX if held else BEFORE_TX, growth, None, b"", inst.sigkill(), held)
        end = time.monotonic() + DEADLINE_S
        while time.monotonic() < end:
            readable, _, _ = select.select([sock], [], [], 0.002)
            if readable:
                status, data = read_response(sock)
                growth = inst.wal_size() - base
                return Kill(AFTER_RESPONSE, growth, status, data, inst.sigkill(), lock_seen)
            growth = inst.wal_size() - base
            if mode == "tx" and growth >= fraction * wal_full:
                if write_lock_held(inst.db):
                    return Kill(IN_TX, growth, None, b"", inst.sigkill(), True)
            elif mode == "response" and not lock_seen:
                lock_seen = write_lock_held(inst.db)
        raise CrashProbeError(f"no response and no kill point within {DEADLINE_S} s")


def read_response(sock: socket.socket) -> tuple[int, bytes]:
    """The status and body of an HTTP/1.1 response with a Content-Length (or to EOF)."""
    data = b""
    end = time.monotonic() + DEADLINE_S
    while b"\r\n\r\n" not in data and time.monotonic() < end:
        chunk = sock.recv(65536)
        if not chunk:
            break
        data += chunk
    m = re.match(rb"HTTP/1\.1 (\d{3}) ", data)
    if not m:
        raise CrashProbeError(f"not an HTTP response: {data[:200]!r}")
    head, _, rest = data.partition(b"\r\n\r\n")
    length = re.search(rb"\r\ncontent-length: *(\d+)", head, re.I)
    want = int(length.group(1)) if length else None
    parts = [rest]
    got = len(rest)
    while (want is None or got < want) and time.monotonic() < end:
        chunk = sock.recv(1 << 20)
        if not chunk:
            break
        parts.append(chunk)
        got += len(chunk)
    return int(m.group(1)), b"".join(parts)


@dataclass
class Timer:
    """Wall time of a probe, for the reports (never asserted)."""

    started: float = field(default_factory=time.monotonic)

    @property
    def seconds(self) -> float:
        return round(time.monotonic() - self.started, 2)


# ---- probe 1: a bulk CSV import ---------------------------------------------------------------


@dataclass
class ImportCheck:
    """What a restart on the crashed file shows of one import into an empty tenant."""

    api_count: int
    index_count: int
    db_devices: int
    db_changes: int
    db_audit: int
    integrity: str
    fk_violations: int
    rss_kb: int | None = None  # the restarted server's


def inspect_import(inst: Instance, tenant: str) -> ImportCheck:
    """Restart on the crashed file, read what the server sees, stop it, then check the file."""
    inst.start()
    api_count = inst.device_count(tenant)
    index_count = inst.index_count("awaiting_activation")
    rss = inst.rss_kb()
    inst.stop()
    with inst.sqlite() as db:

        def one(sql: str, *params: str) -> int:
            return int(db.execute(sql, params).fetchone()[0])

        ok, fk = integrity(db)
        return ImportCheck(
            api_count=api_count,
            index_count=index_count,
            db_devices=one("SELECT count(*) FROM devices WHERE tenant_id = ?", tenant),
            db_changes=one("SELECT count(*) FROM registry_changes"),
            db_audit=one("SELECT count(*) FROM audit WHERE action = 'device.import'"),
            integrity=ok,
            fk_violations=fk,
            rss_kb=rss,
        )


@dataclass
class ImportRound:
    kill: Kill
    check: ImportCheck
    wal_at_kill: int  # -wal growth from the request to the kill
    crashes: int
    tracebacks: int
    rss_before_kb: int | None
    rss_after_kb: int | None


def import_round(
    root: Path,
    tenant: str,
    body: bytes,
    mode: str,
    wal_full: int = 0,
    fraction: float = 0.0,
) -> ImportRound:
    """A fresh server and tenant, one import of `body` killed at `mode`, and the restart."""
    inst = Instance.create(root)
    try:
        inst.start()
        inst.create_tenant(tenant)
        rss_before = inst.rss_kb()
        base = inst.wal_size()
        kill = send_then_kill(
            inst,
            "POST",
            f"/api/v1/tenants/{tenant}/devices/import",
            body,
            mode,
            content_type="text/csv",
            wal_full=wal_full,
            fraction=fraction,
        )
        wal_at_kill = inst.wal_size() - base
        check = inspect_import(inst, tenant)
    finally:
        inst.ensure_dead()
    return ImportRound(
        kill, check, wal_at_kill, inst.crashes, inst.tracebacks(), rss_before, check.rss_kb
    )


# ---- probe 2: bulk code generation, and the export --------------------------------------------

# (label, mode, fraction): kill points of one round, in order, on the same file.
CODES_PLAN: tuple[tuple[str, str, float], ...] = (
    ("after 201", "response", 0.0),
    ("before tx", "early", 0.0),
    ("early in tx", "tx", 0.25),
    ("near commit", "tx", 0.9),
    ("during export", "export", 0.0),
)


@dataclass
class CodesCheck:
    """What a restart on the crashed file shows of one generation for every device of a tenant."""

    label: str
    kill: Kill
    devices: int
    old: int  # devices the export shows the code they had before the request
    new: int  # devices the export shows another code
    none: int  # devices the export shows no code
    as_answered: int | None  # after a 201: devices whose exported code is the one it gave
    valid: int  # exported codes the store would accept: digest matches, unused, unexpired
    generations: int  # distinct codes.created_at of the tenant's codes (each batch has one)
    audit: int  # code.generate entries of the tenant
    audit_before: int
    api_awaiting: int  # devices awaiting activation, as the API counts them
    index_awaiting: int  # ... and the in-memory index (/metrics)
    integrity: str
    fk_violations: int
    rss_kb: int | None
    exported: dict[str, str] = field(repr=False, default_factory=dict)

    @property
    def landed(self) -> str:
        """ "all": every device has a new code; "none": every device kept its old one."""
        if self.new == self.devices:
            return "all"
        if self.old == self.devices:
            return "none"
        return "partial"

    @property
    def audit_consistent(self) -> bool:
        """One code.generate entry per device for a batch that landed, none for one that did not."""
        return self.audit == self.audit_before + (self.devices if self.landed == "all" else 0)


def inspect_codes(
    inst: Instance,
    tenant: str,
    label: str,
    kill: Kill,
    before: dict[str, str],
    answered: dict[str, str] | None,
    audit_before: int,
) -> CodesCheck:
    """Restart on the crashed file, export the codes, stop, then check them against the file."""
    from server.provisioning.codes import CodeVault, normalize_code
    from server.registry.model import iso

    inst.start()
    exported = inst.export_codes(tenant)
    api_awaiting = inst.device_count(tenant, "awaiting_activation")
    index_awaiting = inst.index_count("awaiting_activation")
    rss = inst.rss_kb()
    inst.stop()
    vault = CodeVault(inst.key_file.read_bytes())
    now = iso(datetime.now(UTC))
    with inst.sqlite() as db:
        stored = {
            mac: (bytes(digest), created, expires, used, failed)
            for mac, digest, created, expires, used, failed in db.execute(
                "SELECT c.mac, c.digest, c.created_at, c.expires_at, c.used_at, "
                "c.failed_attempts FROM codes c JOIN devices d ON d.mac = c.mac "
                "WHERE d.tenant_id = ?",
                (tenant,),
            )
        }
        audit = int(
            db.execute(
                "SELECT count(*) FROM audit WHERE action = 'code.generate' AND tenant_id = ?",
                (tenant,),
            ).fetchone()[0]
        )
        ok, fk = integrity(db)
    valid = 0
    for mac, code in exported.items():
        row = stored.get(mac)
        if code and row is not None:
            digest, _, expires, used, failed = row
            if vault.matches(mac, normalize_code(code), digest) and used is None and not failed:
                valid += expires > now
    return CodesCheck(
        label=label,
        kill=kill,
        devices=len(before),
        old=sum(exported.get(m) == c for m, c in before.items()),
        new=sum(exported.get(m) not in ("", None, c) for m, c in before.items()),
        none=sum(not exported.get(m) for m in before),
        as_answered=(
            None if answered is None else sum(exported.get(m) == c for m, c in answered.items())
        ),
        valid=valid,
        generations=len({row[1] for row in stored.values()}),
        audit=audit,
        audit_before=audit_before,
        api_awaiting=api_awaiting,
        index_awaiting=index_awaiting,
        integrity=ok,
        fk_violations=fk,
        rss_kb=rss,
        exported=exported,
    )


@dataclass
class CodesRound:
    checks: list[CodesCheck]
    wal_full: int  # what a whole generation wrote to the -wal (from the round's 201)
    redeemed: int | None  # HTTP status of a code entry with an exported code, at the end
    crashes: int
    tracebacks: int
    rss_before_kb: int | None
    rss_after_kb: int | None


def codes_round(
    root: Path, tenant: str, devices: int, plan: tuple[tuple[str, str, float], ...] = CODES_PLAN
) -> CodesRound:
    """`devices` devices with codes, then one generation for all of them per kill point of
    `plan` (or an export, for "export"), each killed there and restarted on the same file."""
    inst = Instance.create(root)
    checks: list[CodesCheck] = []
    wal_full = 0
    redeemed = None
    codes_path = f"/api/v1/tenants/{tenant}/verification-codes"
    body = json.dumps({"all_awaiting_activation": True}).encode()
    try:
        inst.start()
        inst.create_tenant(tenant)
        inst.import_devices(tenant, build_csv(devices))
        current = inst.issue_all_codes(tenant)
        rss_before = inst.rss_kb()
        inst.stop()
        with inst.sqlite() as db:
            audit = int(
                db.execute("SELECT count(*) FROM audit WHERE action = 'code.generate'").fetchone()[
                    0
                ]
            )
        for label, mode, fraction in plan:
            # The last close checkpointed and removed the -wal: its growth is this request's.
            inst.start()
            base = inst.wal_size()
            if mode == "export":
                kill = send_then_kill(
                    inst, "GET", f"/api/v1/tenants/{tenant}/devices/export.csv", b"", "early"
                )
            else:
                kill = send_then_kill(
                    inst, "POST", codes_path, body, mode, wal_full=wal_full, fraction=fraction
                )
            wal_at_kill = inst.wal_size() - base
            answered = None
            if mode != "export" and kill.status == 201:
                answered = {c["mac"]: c["code"] for c in json.loads(kill.body)}
                wal_full = wal_full or wal_at_kill
            check = inspect_codes(inst, tenant, label, kill, current, answered, audit)
            checks.append(check)
            current, audit = check.exported, check.audit
        # A code from the last export works at the door.
        inst.start()
        mac, code = next((m, c) for m, c in current.items() if c)
        redeemed = http_call(
            inst.port, "POST", "/provision", body=json.dumps({"mac": mac, "code": code}).encode()
        )[0]
        rss_after = inst.rss_kb()
        inst.stop()
    finally:
        inst.ensure_dead()
    return CodesRound(
        checks, wal_full, redeemed, inst.crashes, inst.tracebacks(), rss_before, rss_after
    )


# ---- probe 3: a redemption storm --------------------------------------------------------------

# Every entry of the storm comes from its own loopback address, so neither the per-source limit
# nor the failure limiter has a say; raised anyway, so a shared source would not be refused.
PROVISION_UNLIMITED = "[provision]\nrate_per_source = 1e9\nburst_per_source = 1e9\n"


def source_of(client: int, device: int) -> str:
    """The loopback address client `client` (1: the device's own, 2: a racer) enters from."""
    return f"127.{client}.{device // 250}.{device % 250 + 1}"


@dataclass
class Entry:
    """One client's entry of a device's code, and what it got back before the kill."""

    mac: str
    code: str
    source: str
    drop: bool = False  # the client never reads the answer (lost on the way back)
    sent: bool = False  # the request was written to a connected socket
    status: int | None = None
    secret: str | None = None


def enter_code(port: int, mac: str, code: str, source: str) -> tuple[int, dict[str, Any]]:
    status, raw = http_call(
        port,
        "POST",
        "/provision",
        body=json.dumps({"mac": mac, "code": code}).encode(),
        source=source,
    )
    return status, json.loads(raw) if raw else {}


def _storm(inst: Instance, entries: list[Entry], workers: int, kill_after: int) -> float:
    """Enter every entry's code from `workers` threads; SIGKILL the server once `kill_after`
    entries got a 200 (or all were answered). Returns the kill's wall-clock time."""
    import threading

    lock = threading.Condition()
    todo = iter(entries)
    killed = threading.Event()
    held: list[socket.socket] = []  # the connections of entries whose answer is never read
    acked = 0
    answered = 0

    def one(e: Entry) -> None:
        nonlocal acked, answered
        if e.drop:
            body = json.dumps({"mac": e.mac, "code": e.code}).encode()
            sock = socket.socket()
            try:
                sock.bind((e.source, 0))
                sock.connect(("127.0.0.1", inst.port))
                sock.sendall(
                    b"POST /provision HTTP/1.1\r\nHost: imprint\r\n"
                    b"Content-Type: application/json\r\n"
                    b"Content-Length: %d\r\n\r\n%s" % (len(body), body)
                )
            except OSError:
                sock.close()
                return
            e.sent = True
            with lock:
                held.append(sock)
                answered += 1
                lock.notify()
            return
        conn = http.client.HTTPConnection(
            "127.0.0.1", inst.port, timeout=30, source_address=(e.source, 0)
        )
        try:
            conn.connect()
            conn.request(
                "POST",
                "/provision",
                body=json.dumps({"mac": e.mac, "code": e.code}).encode(),
                headers={"Content-Type": "application/json"},
            )
            e.sent = True
            resp = conn.getresponse()
            raw = resp.read()
            e.status = resp.status
            if resp.status == 200:
                e.secret = json.loads(raw)["client_secret"]
        except (OSError, http.client.HTTPException):
            pass  # refused, reset or cut by the kill: no answer
        finally:
            conn.close()
        with lock:
            answered += 1
            acked += e.status == 200
            lock.notify()

    def worker() -> None:
        while not killed.is_set():
            with lock:
                e = next(todo, None)
            if e is None:
                return
            one(e)

    threads = [threading.Thread(target=worker, daemon=True) for _ in range(workers)]
    for t in threads:
        t.start()
    with lock:
        if not lock.wait_for(
            lambda: acked >= kill_after or answered == len(entries), timeout=DEADLINE_S
        ):
            raise CrashProbeError(f"only {acked} of {kill_after} entries answered in time")
    at = inst.sigkill()
    killed.set()
    for t in threads:
        t.join(timeout=DEADLINE_S)
    for sock in held:
        sock.close()
    return at


@dataclass
class StormRound:
    """A redemption storm cut by a SIGKILL, the restart, and every device completed after it."""

    devices: int
    entries: int  # code entries planned (some devices are entered by two clients at once)
    sent: int  # entries sent before the kill
    acked: int  # devices whose client got a 200 with credentials before the kill
    intact: int  # ... of them, provisioned after the restart with exactly those credentials
    lost: list[str]  # acked devices not provisioned, or not with the credentials they got
    double: list[str]  # devices two clients got a 200 for, or with more than one success audited
    unexpected: list[tuple[str, int]]  # answers before the kill other than 200 and a racer's 409
    response_lost: int  # provisioned after the restart though no client read its 200
    not_committed: int  # sent, unanswered, and still awaiting activation with a valid code
    unsent: int  # devices no entry reached before the kill
    inconsistent: list[str]  # where the API, index, codes, audit and change feed disagree
    other_source: int | None  # a lost-response device's code from another address: status
    completed: int  # devices provisioned once every unanswered one entered its code again
    retries: int  # of those entries, the ones answered as a retry (provision.retry audited)
    final_problems: list[str]  # what the store says after them, if not all right
    integrity: str  # after the kill
    final_integrity: str
    kill_at: float
    crashes: int = 0
    tracebacks: int = 0
    rss_before_kb: int | None = None
    rss_after_kb: int | None = None


@dataclass
class _Device:
    state: str
    secret_hash: bytes | None
    source: str | None
    used_at: str | None
    successes: int
    retries: int
    changes: int


def _read_devices(inst: Instance, tenant: str) -> tuple[dict[str, _Device], str]:
    with inst.sqlite() as db:
        rows = {
            mac: _Device(state, bytes(h) if h is not None else None, src, used, 0, 0, 0)
            for mac, state, h, src, used in db.execute(
                "SELECT d.mac, d.state, d.client_secret_hash, d.provisioned_from, c.used_at "
                "FROM devices d LEFT JOIN codes c ON c.mac = d.mac WHERE d.tenant_id = ?",
                (tenant,),
            )
        }
        for mac, action, n in db.execute(
            "SELECT target, action, count(*) FROM audit WHERE action IN "
            "('provision.success', 'provision.retry') AND tenant_id = ? GROUP BY target, action",
            (tenant,),
        ):
            if action == "provision.success":
                rows[mac].successes = n
            else:
                rows[mac].retries = n
        for mac, n in db.execute("SELECT mac, count(*) FROM registry_changes GROUP BY mac"):
            if mac in rows:
                rows[mac].changes = n
        ok, fk = integrity(db)
    return rows, ok if fk == 0 else f"{ok}; {fk} foreign-key violations"


def _consistency(rows: dict[str, _Device], api: int, index: int) -> list[str]:
    """Where the views of who is provisioned disagree (empty when they all agree)."""
    out = []
    provisioned = {m for m, d in rows.items() if d.state == "awaiting_sign_in"}
    if {m for m, d in rows.items() if d.used_at is not None} != provisioned:
        out.append("devices with a used code != provisioned devices")
    if {m for m, d in rows.items() if d.successes} != provisioned:
        out.append("devices with provision.success audited != provisioned devices")
    if any(d.secret_hash is None for m, d in rows.items() if m in provisioned):
        out.append("a provisioned device has no client secret")
    # One change from the import, one from the provisioning.
    if any(d.changes != 1 + (m in provisioned) for m, d in rows.items()):
        out.append("change feed entries != 1 + provisioned")
    if (api, index) != (len(provisioned), len(provisioned)):
        out.append(f"API {api} / index {index} provisioned, store {len(provisioned)}")
    return out


def storm_round(
    root: Path,
    tenant: str,
    devices: int,
    *,
    workers: int = 32,
    kill_after: float = 0.5,
    race_every: int = 10,
    drop_every: int = 40,
) -> StormRound:
    """`devices` devices with codes entered at once from `workers` threads, each device from its
    own address (every `race_every`th also from a second address at the same moment, every
    `drop_every`th never reading its answer); SIGKILL once `kill_after` of the devices got a
    200. Then: the restart's view, every device without an answer entering its code again from
    the address it used, and the store's view after that."""
    from server.provisioning.redeem import RETRY_MIN_GAP_S
    from server.registry.model import token_digest

    inst = Instance.create(root, PROVISION_UNLIMITED)
    try:
        inst.start()
        inst.create_tenant(tenant)
        inst.import_devices(tenant, build_csv(devices))
        codes = inst.issue_all_codes(tenant)
        entries: list[Entry] = []
        by_mac: dict[str, list[Entry]] = {}
        for i in range(devices):
            mac = mac_of(i)
            mine = [
                Entry(
                    mac, codes[mac], source_of(1, i), drop=bool(drop_every) and i % drop_every == 7
                )
            ]
            if race_every and i % race_every == 0:
                mine.append(Entry(mac, codes[mac], source_of(2, i)))  # right behind: at once
            by_mac[mac] = mine
            entries += mine
        rss_before = inst.rss_kb()
        kill_at = _storm(inst, entries, workers, int(devices * kill_after))

        wins = {m: [e for e in es if e.status == 200] for m, es in by_mac.items()}
        acked = {m: w[0] for m, w in wins.items() if w}
        double = [m for m, w in wins.items() if len(w) > 1]
        unexpected = [
            (e.mac, e.status)
            for e in entries
            if e.status is not None
            and e.status != 200
            and not (e.status == 409 and len(by_mac[e.mac]) > 1)
        ]
        # The restart on the crashed file: what the server sees, then what the file holds.
        inst.start()
        api = inst.device_count(tenant, "awaiting_sign_in")
        index = inst.index_count("awaiting_sign_in")
        inst.stop()
        rows, ok = _read_devices(inst, tenant)
        inconsistent = _consistency(rows, api, index)
        lost = [
            m
            for m, e in acked.items()
            if rows[m].state != "awaiting_sign_in"
            or rows[m].secret_hash != token_digest(e.secret or "")
        ]
        double += [m for m, d in rows.items() if d.successes > 1 and m not in double]
        provisioned = {m for m, d in rows.items() if d.state == "awaiting_sign_in"}
        unacked = [m for m in by_mac if m not in acked]
        sent = {m for m, es in by_mac.items() if any(e.sent for e in es)}
        response_lost = [m for m in unacked if m in provisioned]
        phantom = [m for m in response_lost if m not in sent]
        if phantom:
            inconsistent.append(f"{len(phantom)} devices provisioned that no entry reached")
        wrong_source = [
            m for m in provisioned if rows[m].source not in {e.source for e in by_mac[m]}
        ]
        if wrong_source:
            inconsistent.append(f"{len(wrong_source)} devices provisioned from an unused address")

        # Everyone without an answer enters the code again, from the address the store says
        # it was redeemed from (the client that won), or its own when it was not redeemed.
        inst.start()
        time.sleep(max(0.0, kill_at + RETRY_MIN_GAP_S + 0.5 - time.time()))
        other_source = None
        if response_lost:
            m = response_lost[0]
            other = (
                next(e.source for e in by_mac[m] if e.source != rows[m].source)
                if len(by_mac[m]) > 1
                else "127.3.0.1"
            )
            other_source = enter_code(inst.port, m, codes[m], other)[0]
        final_secret = {m: e.secret for m, e in acked.items()}
        retry_statuses: list[tuple[str, int]] = []
        for m in unacked:
            src = rows[m].source if m in provisioned else by_mac[m][0].source
            assert src is not None
            status, body = enter_code(inst.port, m, codes[m], src)
            retry_statuses.append((m, status))
            if status == 200:
                final_secret[m] = body["client_secret"]
        api = inst.device_count(tenant, "awaiting_sign_in")
        index = inst.index_count("awaiting_sign_in")
        rss_after = inst.rss_kb()
        inst.stop()
        after, final_ok = _read_devices(inst, tenant)
        final_problems = _consistency(after, api, index)
        if len(provisioned & set(after)) != len(provisioned):
            final_problems.append("devices disappeared")
        bad = [(m, s) for m, s in retry_statuses if s != 200]
        if bad:
            final_problems.append(f"{len(bad)} entries after the restart refused: {bad[:5]}")
        if any(d.successes != 1 for d in after.values()):
            final_problems.append("a device without exactly one provision.success")
        stale = [
            m
            for m, d in after.items()
            if m in final_secret and d.secret_hash != token_digest(final_secret[m] or "")
        ]
        if stale:
            final_problems.append(f"{len(stale)} devices' stored secret is not their last one")
        retried = sum(d.retries for d in after.values())
        if retried != len(response_lost):
            final_problems.append(f"{retried} retries audited, {len(response_lost)} expected")
    finally:
        inst.ensure_dead()
    return StormRound(
        devices=devices,
        entries=len(entries),
        sent=sum(e.sent for e in entries),
        acked=len(acked),
        intact=len(acked) - len(lost),
        lost=lost,
        double=double,
        unexpected=unexpected,
        response_lost=len(response_lost),
        not_committed=len([m for m in unacked if m in sent and m not in provisioned]),
        unsent=len([m for m in by_mac if m not in sent]),
        inconsistent=inconsistent,
        other_source=other_source,
        completed=sum(d.state == "awaiting_sign_in" for d in after.values()),
        retries=retried,
        final_problems=final_problems,
        integrity=ok,
        final_integrity=final_ok,
        kill_at=kill_at,
        crashes=inst.crashes,
        tracebacks=inst.tracebacks(),
        rss_before_kb=rss_before,
        rss_after_kb=rss_after,
    )
