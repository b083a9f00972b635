"""/metrics of the real `imprint serve` (full-mode DHCP and mDNS on loopback) read by
prometheus_client's own parsers: the process and GC families every dashboard expects, and every
imprint_* family the README's metrics table lists, each with the type the table gives.

The same scrape is asked for in OpenMetrics too (what Prometheus asks for first) and read by the
strict OpenMetrics parser, which refuses a malformed histogram or counter."""

from __future__ import annotations

import http.client
import json
import re
import socket
from pathlib import Path

import dnslib
from prometheus_client.openmetrics.parser import (
    text_string_to_metric_families as openmetrics_families,
)
from prometheus_client.parser import text_string_to_metric_families
from scapy.layers.dhcp import BOOTP, DHCP

from tests.helpers.fixtures import REPO_ROOT
from tests.helpers.proc import free_port, run_imprint, serve, wait_ready
from tests.helpers.server import wait_until

MAC = "02:00:5e:00:12:01"
OPENMETRICS = "application/openmetrics-text; version=1.0.0; charset=utf-8"
# A README table row: | `imprint_name{labels}` | type | ...
ROW = re.compile(
    r"^\|\s*`(imprint_[a-z0-9_]+)(?:\{([a-z_,]*)\})?`\s*\|\s*(counter|gauge|histogram)\s*\|"
)


def readme_families() -> dict[str, tuple[str, frozenset[str]]]:
    """name -> (type, label names) of every imprint_* family in the README's metrics table."""
    rows = {}
    for line in (REPO_ROOT / "README.md").read_text().splitlines():
        m = ROW.match(line)
        if m:
            labels = frozenset(m.group(2).split(",")) if m.group(2) else frozenset()
            rows[m.group(1)] = (m.group(3), labels)
    assert len(rows) > 20, f"the README's metrics table has only {sorted(rows)}"
    return rows


def family_name(exposed: str, kind: str) -> str:
    """The name the parsers give a family: a counter's without its _total."""
    return exposed.removesuffix("_total") if kind == "counter" else exposed


def discover(mac: str, xid: int) -> bytes:
    return bytes(
        BOOTP(op=1, xid=xid, flags=0x8000, chaddr=bytes.fromhex(mac.replace(":", "")))
        / DHCP(options=[("message-type", "discover"), ("param_req_list", [1, 3, 43]), "end"])
    )


def scrape(port: int, accept: str | None = None) -> tuple[str, str]:
    """GET /metrics over a real socket: (content type, body)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request("GET", "/metrics", headers={"Accept": accept} if accept else {})
        resp = conn.getresponse()
        body = resp.read().decode("utf-8")
        assert resp.status == 200, body
        assert resp.getheader("X-Content-Type-Options") == "nosniff"
        return resp.getheader("Content-Type", ""), body
    finally:
        conn.close()


def test_metrics_of_the_real_server_parse_with_process_gc_and_every_readme_family(
    tmp_path: Path,
) -> None:
    http_port = free_port(socket.SOCK_STREAM)
    dhcp_port, mdns_port = free_port(socket.SOCK_DGRAM), free_port(socket.SOCK_DGRAM)
    device = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    querier = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    device.bind(("127.0.0.1", 0))
    querier.bind(("127.0.0.1", 0))
    config = tmp_path / "imprint.toml"
    config.write_text(
        f'[store]\npath = "state/imprint.db"\n'
        f'[http]\nhost = "127.0.0.1"\nport = {http_port}\n'
        f'public_url = "http://127.0.0.1:{http_port}"\n'
        "[tls]\nenabled = false\n"
        f'[dhcp]\nenabled = true\nmode = "full"\nhost = "127.0.0.1"\nport = {dhcp_port}\n'
        f'client_port = {device.getsockname()[1]}\nserver_ip = "127.0.0.1"\n'
        '[[dhcp.subnets]]\nsubnet = "127.0.0.0/8"\npool = "127.0.0.100-127.0.0.200"\n'
        f'[mdns]\nenabled = true\nhost = "127.0.0.1"\nport = {mdns_port}\n'
        f'static_neighbours = {{ "127.0.0.1" = "{MAC}" }}\n'
    )
    run_imprint(config, "db", "init")
    run_imprint(config, "tenants", "create", "--id", "acme", "--name", "Acme")
    run_imprint(config, "devices", "add", "--tenant", "acme", "--mac", MAC)
    log = tmp_path / "serve.log"
    proc = serve(config, log)
    try:
        wait_ready(proc, http_port, log)
        # Traffic on every path: a DHCP DISCOVER (offered), an mDNS query (answered), and a
        # wrong verification code.
        device.sendto(discover(MAC, 0x1201), ("127.0.0.1", dhcp_port))
        query = dnslib.DNSRecord(dnslib.DNSHeader(id=7, bitmap=0))
        query.add_question(dnslib.DNSQuestion("_imprint._tcp.local.", 12))
        querier.sendto(query.pack(), ("127.0.0.1", mdns_port))
        conn = http.client.HTTPConnection("127.0.0.1", http_port, timeout=10)
        conn.request(
            "POST",
            "/provision",
            json.dumps({"mac": MAC, "code": "BBBB-BBBB"}),
            {"Content-Type": "application/json"},
        )
        assert conn.getresponse().status in (401, 403, 409)
        conn.close()

        def seen() -> bool:
            fams = {f.name: f for f in text_string_to_metric_families(scrape(http_port)[1])}
            return all(
                any(s.value > 0 for s in fams[name].samples) if name in fams else False
                for name in (
                    "imprint_dhcp_packets_received",
                    "imprint_mdns_packets_received",
                    "imprint_code_attempts",
                )
            )

        wait_until(seen, 10, "the DHCP, mDNS and code counters to move")

        content_type, text = scrape(http_port)
        assert content_type.startswith("text/plain; version=0.0.4")
        families = {f.name: f for f in text_string_to_metric_families(text)}
        assert families["process_cpu_seconds"].type == "counter"
        assert families["process_cpu_seconds"].samples[0].value > 0
        assert families["python_gc_objects_collected"].type == "counter"
        assert {
            s.labels["generation"] for s in families["python_gc_objects_collected"].samples
        } == {
            "0",
            "1",
            "2",
        }
        for name in ("process_resident_memory_bytes", "process_open_fds", "python_info"):
            assert families[name].type == "gauge", name
        assert "_created" not in text  # no OpenMetrics-only noise in the text format

        want = readme_families()
        got = {f.name: f.type for f in families.values() if f.name.startswith("imprint_")}
        expected = {family_name(name, kind): kind for name, (kind, _) in want.items()}
        assert got == expected, (
            f"on /metrics, not in the README: {sorted(set(got) - set(expected))}; "
            f"in the README, not on /metrics: {sorted(set(expected) - set(got))}; "
            f"types differ: {sorted(n for n in got.keys() & expected.keys() if got[n] != expected[n])}"
        )
        for name, (kind, labels) in want.items():
            # Counters are exposed as NAME_total, as the README spells them.
            assert f"# TYPE {name} {kind}" in text, name
            for sample in families[family_name(name, kind)].samples:
                assert set(sample.labels) - {"le"} == labels, (name, sample)

        om_type, om_text = scrape(http_port, OPENMETRICS)
        assert om_type.startswith("application/openmetrics-text")
        om = {f.name: f.type for f in openmetrics_families(om_text)}
        assert om["process_cpu_seconds"] == "counter"
        assert {n: t for n, t in om.items() if n.startswith("imprint_")} == expected
    finally:
        device.close()
        querier.close()
        proc.terminate()
        assert proc.wait(30) == 0, log.read_text()
