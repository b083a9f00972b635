"""`imprint db backup FILE` while `imprint serve` keeps writing, then restore by the documented
steps (stop, copy over [store] path, drop stale -wal/-shm, start): the data is there and the
database passes `PRAGMA integrity_check`. Imports are all-or-nothing transactions of BATCH rows,
so a consistent snapshot holds a whole number of batches."""

from __future__ import annotations

import http.client
import json
import shutil
import signal
import sqlite3
import stat
import subprocess
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests.helpers.proc import free_port, run_imprint, serve, wait_ready

BATCH = 25


def request(port: int, method: str, path: str, token: str, body: str | None = None) -> Any:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        headers = {"Authorization": f"Bearer {token}", "Content-Type": "text/csv"}
        conn.request(method, path, body, headers)
        resp = conn.getresponse()
        data = resp.read()
        assert resp.status in (200, 201), (resp.status, data[:500])
        return json.loads(data)
    finally:
        conn.close()


@dataclass
class Server:
    config: Path
    db: Path
    port: int
    log: Path
    proc: subprocess.Popen[str] | None = None
    token: str = ""

    def start(self) -> None:
        self.proc = serve(self.config, self.log)
        wait_ready(self.proc, self.port, self.log)

    def stop(self) -> int:
        proc, self.proc = self.proc, None
        if proc is None:
            return 0
        proc.send_signal(signal.SIGTERM)
        return proc.wait(30)

    def device_count(self) -> int:
        body = request(self.port, "GET", "/api/v1/tenants/acme/devices?limit=1", self.token)
        return int(body["count"])


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Server]:
    port = free_port()
    config = tmp_path / "imprint.toml"
    config.write_text(
        f'[store]\npath = "state/imprint.db"\npoll_interval_s = 0.2\n'
        f'[http]\nhost = "127.0.0.1"\nport = {port}\npublic_url = "http://127.0.0.1:{port}"\n'
        "[tls]\nenabled = false\n"
    )
    srv = Server(config, tmp_path / "state" / "imprint.db", port, tmp_path / "serve.log")
    run_imprint(config, "db", "init")
    run_imprint(config, "tenants", "create", "--id", "acme", "--name", "Acme")
    srv.token = run_imprint(config, "tokens", "create", "--role", "operator").stdout.strip()
    try:
        yield srv
    finally:
        if srv.proc is not None and srv.proc.poll() is None:
            srv.proc.kill()
            srv.proc.wait(10)


@dataclass
class Writer:
    """Imports BATCH new devices per request until stopped (the server keeps writing)."""

    srv: Server
    done: int = 0
    error: BaseException | None = None
    stop: threading.Event = field(default_factory=threading.Event)
    progress: threading.Condition = field(default_factory=threading.Condition)

    def run(self) -> None:
        try:
            while not self.stop.is_set() and self.done < 2000:
                n = self.done
                rows = "".join(
                    f"02:00:5e:0b:{(n * BATCH + i) >> 8:02x}:{(n * BATCH + i) & 0xFF:02x},b{n}\r\n"
                    for i in range(BATCH)
                )
                body = request(
                    self.srv.port,
                    "POST",
                    "/api/v1/tenants/acme/devices/import",
                    self.srv.token,
                    "MAC ID,Location\r\n" + rows,
                )
                assert body["created"] == BATCH
                with self.progress:
                    self.done += 1
                    self.progress.notify_all()
        except BaseException as e:  # reported by the test thread
            self.error = e
            with self.progress:
                self.progress.notify_all()

    def wait_for(self, batches: int) -> None:
        with self.progress:
            ok = self.progress.wait_for(
                lambda: self.done >= batches or self.error is not None, timeout=60
            )
        assert ok and self.error is None, self.error


def test_backup_while_writing_then_restore_keeps_every_whole_batch(
    server: Server, tmp_path: Path
) -> None:
    server.start()
    writer = Writer(server)
    thread = threading.Thread(target=writer.run, name="importer")
    thread.start()
    try:
        writer.wait_for(3)
        before = writer.done
        backup = tmp_path / "backups" / "imprint-backup.db"
        backup.parent.mkdir()
        done = run_imprint(server.config, "db", "backup", str(backup))
        after = writer.done
        writer.wait_for(after + 2)  # and the server still takes writes afterwards
    finally:
        writer.stop.set()
        thread.join(60)
    assert writer.error is None, writer.error
    assert "integrity check ok" in done.stdout and "key file" in done.stderr

    # The backup: one self-contained file, owner-only, sound, and a whole number of batches.
    assert not Path(str(backup) + "-wal").exists()
    assert stat.S_IMODE(backup.stat().st_mode) == 0o600
    conn = sqlite3.connect(f"file:{backup}?mode=ro", uri=True)
    try:
        assert conn.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "delete"
        saved = conn.execute("SELECT count(*) FROM devices").fetchone()[0]
        batches = {r[0] for r in conn.execute("SELECT location FROM devices")}
    finally:
        conn.close()
    assert saved % BATCH == 0, f"{saved} devices: a half-applied import in the backup"
    assert before * BATCH <= saved <= (after + 1) * BATCH
    assert batches == {f"b{i}" for i in range(saved // BATCH)}
    assert f"{saved} device(s)" in done.stdout
    total = server.device_count()
    assert total == writer.done * BATCH and total > saved

    # Restore as the README says: stop, copy over the store, drop stale -wal/-shm, start.
    assert server.stop() == 0, server.log.read_text()
    shutil.copyfile(backup, server.db)
    for suffix in ("-wal", "-shm"):
        Path(str(server.db) + suffix).unlink(missing_ok=True)
    server.start()
    assert server.device_count() == saved
    conn = sqlite3.connect(f"file:{server.db}?mode=ro", uri=True)
    try:
        assert conn.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
    finally:
        conn.close()
    # The restored store takes writes again.
    request(
        server.port,
        "POST",
        "/api/v1/tenants/acme/devices/import",
        server.token,
        "MAC ID,Location\r\n02:00:5e:0c:00:01,after restore\r\n",
    )
    assert server.device_count() == saved + 1
    assert server.stop() == 0


def test_backup_refuses_the_live_file_and_a_missing_folder(server: Server, tmp_path: Path) -> None:
    run_imprint(server.config, "devices", "add", "--tenant", "acme", "--mac", "02:00:5e:0c:00:02")
    done = run_imprint(server.config, "db", "backup", str(server.db), check=False)
    assert done.returncode == 1 and "live database" in done.stderr
    done = run_imprint(server.config, "db", "backup", str(tmp_path / "nope" / "b.db"), check=False)
    assert done.returncode == 1 and "does not exist" in done.stderr
    other = tmp_path / "other.toml"
    other.write_text('[store]\npath = "elsewhere/imprint.db"\n')
    done = run_imprint(other, "db", "backup", str(tmp_path / "b.db"), check=False)
    assert done.returncode == 1 and "no database" in done.stderr
    assert not (tmp_path / "elsewhere" / "imprint.db").exists()
