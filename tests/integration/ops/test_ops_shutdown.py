"""SIGTERM on a real `imprint serve`: a request in flight finishes and is stored, only then do the
mDNS goodbyes go out and the store close, and the process exits 0.

The in-flight request is a CSV import that waits for the store's write lock, which the test
holds (SQLite's busy timeout keeps the server waiting): SIGTERM arrives while the handler is
blocked, so the request is in flight by construction, and finishes once the lock is released.
(aiohttp reads no more request bytes once it is stopping, so a request whose body is still
arriving is not one it can finish.)
"""

from __future__ import annotations

import http.client
import select
import signal
import socket
import sqlite3
import time
from pathlib import Path

import dnslib
import pytest

from tests.helpers.proc import free_port, run_imprint, serve, wait_ready
from tests.helpers.server import wait_until

MAC = "02:00:5e:00:0d:01"
QUERIER = "127.0.0.3"  # a non-legacy mDNS querier (source port 5353) on loopback


def recv(sock: socket.socket, timeout: float) -> bytes | None:
    ready, _, _ = select.select([sock], [], [], timeout)
    return sock.recv(9000) if ready else None


def test_sigterm_finishes_the_request_in_flight_then_says_goodbye_and_closes(
    tmp_path: Path,
) -> None:
    querier = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        querier.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        querier.bind((QUERIER, 5353))
    except OSError as e:
        querier.close()
        pytest.skip(f"cannot bind {QUERIER}:5353 for a non-legacy mDNS querier: {e}")
    http_port, mdns_port = free_port(socket.SOCK_STREAM), free_port(socket.SOCK_DGRAM)
    db_path = tmp_path / "state" / "imprint.db"
    config = tmp_path / "imprint.toml"
    config.write_text(
        f'[store]\npath = "state/imprint.db"\nbusy_timeout_ms = 60000\n'
        f'[http]\nhost = "127.0.0.1"\nport = {http_port}\n'
        f'public_url = "http://127.0.0.1:{http_port}"\n'
        "[tls]\nenabled = false\n"
        f'[mdns]\nenabled = true\nhost = "127.0.0.1"\nport = {mdns_port}\n'
        f'static_neighbours = {{ "{QUERIER}" = "{MAC}" }}\n'
    )
    run_imprint(config, "db", "init")
    run_imprint(config, "tenants", "create", "--id", "acme", "--name", "Acme")
    run_imprint(config, "devices", "add", "--tenant", "acme", "--mac", MAC)
    token = run_imprint(config, "tokens", "create", "--role", "operator").stdout.strip()
    log = tmp_path / "serve.log"
    proc = serve(config, log)
    conn: http.client.HTTPConnection | None = None
    lock: sqlite3.Connection | None = None
    try:
        wait_ready(proc, http_port, log)

        # The registered device asks by mDNS (QU) and is answered: it may now cache our records.
        query = dnslib.DNSRecord(dnslib.DNSHeader(id=0, bitmap=0))
        query.add_question(dnslib.DNSQuestion("_imprint._tcp.local.", 12, 0x8001))
        querier.sendto(query.pack(), ("127.0.0.1", mdns_port))
        answer = recv(querier, 5)
        assert answer is not None, log.read_text()
        assert dnslib.DNSRecord.parse(answer).rr[0].ttl > 0

        # The test takes the store's write lock; the import then waits for it inside its handler.
        lock = sqlite3.connect(db_path, timeout=10, isolation_level=None)
        lock.execute("BEGIN IMMEDIATE")
        rows = "".join(f"02:00:5e:0d:01:{i:02x},rack {i}\r\n" for i in range(40))
        conn = http.client.HTTPConnection("127.0.0.1", http_port, timeout=60)
        conn.request(
            "POST",
            "/api/v1/tenants/acme/devices/import",
            "MAC ID,Location\r\n" + rows,
            {"Authorization": f"Bearer {token}", "Content-Type": "text/csv"},
        )

        # Let the server parse the headers and enter the handler (loopback: well under this);
        # a connection with no request yet would be closed as idle, not waited for.
        time.sleep(0.3)
        proc.send_signal(signal.SIGTERM)
        wait_until(lambda: "shutting down" in log.read_text(), 15, "shutdown to begin")
        # The server is stopping, yet waits for the request: no goodbye, store still open.
        assert recv(querier, 0.5) is None, "goodbye sent before the request in flight finished"
        assert "store closed" not in log.read_text()
        assert proc.poll() is None

        lock.execute("ROLLBACK")
        resp = conn.getresponse()
        assert resp.status == 201, resp.read()

        bye = recv(querier, 10)
        assert bye is not None, "no mDNS goodbye on shutdown"
        goodbye = dnslib.DNSRecord.parse(bye)
        assert goodbye.rr and all(rr.ttl == 0 for rr in goodbye.rr)  # RFC 6762 §10.1
        assert proc.wait(30) == 0, log.read_text()
        text = log.read_text()
        assert text.index("shutting down") < text.index("store closed")
    finally:
        if conn is not None:
            conn.close()
        if lock is not None:
            lock.close()
        querier.close()
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)

    db = sqlite3.connect(f"file:{db_path}?mode=ro", uri=True)
    try:
        count = db.execute("SELECT count(*) FROM devices WHERE location LIKE 'rack %'").fetchone()
    finally:
        db.close()
    assert count == (40,)
