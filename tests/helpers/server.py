"""The real `imprint serve` inside a network namespace, for end-to-end tests.

`ImprintServer` writes a TOML config (defaults below, deep-merged with the test's overrides),
registers tenants and devices with the real `imprint` CLI, starts `imprint serve` in a topology
node and talks to it over HTTP(S) from inside that namespace (operator token made by the CLI).
`PacketCapture` records the frames a namespace's interface sees, so a test can check a reply's
bytes with scapy (an independent dissector) when a third-party client does not show them.

    with Topology(hosts=2) as tp, ImprintServer(tp, tp.server, tmp_path, {"dhcp": {...}}) as srv:
        srv.create_tenant("acme")
        srv.add_device("acme", tp.hosts[0].mac)
        srv.start()
        status, body = srv.api("GET", "/api/v1/discovered")
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import http.client
import json
import os
import re
import select
import socket
import sqlite3
import ssl
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, TypeVar

from tests.helpers.netns import Node, Topology, netns_socket

HTTP_PORT = 8443
_T = TypeVar("_T")


def imprint_argv() -> list[str]:
    """How to run the `imprint` console script of this interpreter's environment."""
    script = Path(sys.executable).with_name("imprint")
    return [str(script)] if script.exists() else [sys.executable, "-m", "server"]


def emulator_argv() -> list[str]:
    """How to run the device emulator (`imprint-device`) of this interpreter's environment."""
    script = Path(sys.executable).with_name("imprint-device")
    return [str(script)] if script.exists() else [sys.executable, "-m", "device_emulator"]


def deep_merge(base: Mapping[str, Any], overrides: Mapping[str, Any]) -> dict[str, Any]:
    """`base` with `overrides` applied: tables merge key by key, anything else is replaced."""
    out: dict[str, Any] = dict(base)
    for key, value in overrides.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = value
    return out


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str | Path):
        # A JSON string is a valid TOML basic string (same escapes, \uXXXX included).
        return json.dumps(str(value))
    if isinstance(value, Sequence):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    if isinstance(value, Mapping):
        items = ", ".join(f"{json.dumps(str(k))} = {_toml_value(v)}" for k, v in value.items())
        return "{ " + items + " }" if items else "{}"
    raise TypeError(f"cannot write {type(value).__name__} to TOML: {value!r}")


def to_toml(config: Mapping[str, Mapping[str, Any]]) -> str:
    """Sections of key = value; nested tables and arrays of tables are written inline."""
    lines: list[str] = []
    for section, table in config.items():
        lines.append(f"[{section}]")
        lines += [f"{json.dumps(str(k))} = {_toml_value(v)}" for k, v in table.items()]
        lines.append("")
    return "\n".join(lines)


def wait_until(
    probe: Callable[[], _T | None], timeout: float, what: str, interval: float = 0.1
) -> _T:
    """Call `probe` until it returns something other than None/False; AssertionError at timeout."""
    deadline = time.monotonic() + timeout
    while True:
        got = probe()
        if got is not None and got is not False:
            return got
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(interval)


_SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})?\s+(\S+)$")
_LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')

MetricKey = tuple[str, frozenset[tuple[str, str]]]


def parse_prometheus(text: str) -> dict[MetricKey, float]:
    """Samples of a Prometheus text exposition: (name, {(label, value)}) -> value."""
    out: dict[MetricKey, float] = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        match = _SAMPLE.match(line.strip())
        if match is None:
            continue
        name, labels, value = match.groups()
        pairs = frozenset(
            (k, v.replace('\\"', '"').replace("\\\\", "\\"))
            for k, v in _LABEL.findall(labels or "")
        )
        out[(name, pairs)] = float(value)
    return out


class Metrics:
    """One scrape of /metrics."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.samples = parse_prometheus(text)

    def value(self, name: str, **labels: str) -> float:
        """The sample with exactly these labels; 0 when the series does not exist yet."""
        return self.samples.get((name, frozenset(labels.items())), 0.0)


@dataclass(frozen=True)
class ApiResponse:
    status: int
    body: Any  # parsed JSON when the server sent JSON, else text
    headers: dict[str, str]


class _NamespaceConnection(http.client.HTTPSConnection):
    """HTTP(S) whose TCP socket is created inside a network namespace.

    TLS is not verified against a CA (the server's certificate is self-signed); the caller pins
    it instead, by comparing `peer_der` with what the server advertises.
    """

    def __init__(self, netns: str, host: str, port: int, tls: bool, timeout: float) -> None:
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        super().__init__(host, port, timeout=timeout, context=context)
        self._netns = netns
        self._tls = tls
        self._ctx = context
        self.peer_der: bytes | None = None

    def connect(self) -> None:
        sock = netns_socket(self._netns, socket.AF_INET, socket.SOCK_STREAM)
        try:
            sock.settimeout(self.timeout)
            sock.connect((self.host, self.port))
            if self._tls:
                sock = self._ctx.wrap_socket(sock, server_hostname=self.host)
                self.peer_der = sock.getpeercert(binary_form=True)
        except BaseException:
            sock.close()
            raise
        self.sock = sock


class ImprintServer:
    """`imprint serve` in one topology node, with its config, store and logs under `workdir`."""

    def __init__(
        self,
        topology: Topology,
        node: Node,
        workdir: Path,
        config_overrides: Mapping[str, Any] | None = None,
    ) -> None:
        self.topology = topology
        self.node = node
        self.workdir = workdir
        self.workdir.mkdir(parents=True, exist_ok=True)
        defaults: dict[str, Any] = {
            "store": {"path": str(workdir / "state" / "imprint.db"), "poll_interval_s": 0.2},
            "http": {"host": "0.0.0.0", "port": HTTP_PORT},
            "tls": {"enabled": True},
            "log": {"level": "INFO", "format": "human"},
        }
        config = deep_merge(defaults, copy.deepcopy(dict(config_overrides or {})))
        self.tls: bool = bool(config["tls"].get("enabled", True))
        self.port: int = int(config["http"]["port"])
        scheme = "https" if self.tls else "http"
        config["http"].setdefault("public_url", f"{scheme}://{node.ip}:{self.port}")
        self.config: dict[str, Any] = config
        self.url: str = str(config["http"]["public_url"])
        self.config_path = workdir / "imprint.toml"
        self.log_path = workdir / "imprint-serve.log"
        self.db_path = Path(config["store"]["path"])
        self.proc: subprocess.Popen[str] | None = None
        self.last_exit: int | None = None
        self._token: str | None = None
        self.write_config()
        self.cli("db", "init")  # only `db init` and `serve` create the store

    # -- config and CLI -------------------------------------------------------------------

    def write_config(self) -> Path:
        """Write the TOML config (call again after changing `self.config`; restart to apply)."""
        self.config_path.write_text(to_toml(self.config))
        return self.config_path

    @staticmethod
    def _env() -> dict[str, str]:
        # The test process's own IMPRINT_* variables must not override the written config.
        return {k: v for k, v in os.environ.items() if not k.startswith("IMPRINT_")}

    def cli(
        self, *args: str, check: bool = True, timeout: float = 60.0, input: str | None = None
    ) -> subprocess.CompletedProcess[str]:
        """Run `imprint ARGS --config FILE` (the store is a file: no namespace needed)."""
        done = subprocess.run(
            [*imprint_argv(), *args, "--config", str(self.config_path)],
            capture_output=True,
            text=True,
            timeout=timeout,
            env=self._env(),
            input=input,
        )
        if check and done.returncode != 0:
            raise AssertionError(
                f"imprint {' '.join(args)} exited {done.returncode}: {done.stdout}{done.stderr}"
            )
        return done

    def create_tenant(self, tenant: str, name: str | None = None) -> None:
        """`imprint tenants create`."""
        self.cli("tenants", "create", "--id", tenant, "--name", name or tenant.title())

    def add_device(self, tenant: str, mac: str, location: str = "") -> None:
        """`imprint devices add` for one MAC."""
        self.cli("devices", "add", "--tenant", tenant, "--mac", mac, "--location", location)

    def import_devices(self, tenant: str, macs: Sequence[str], location: str = "bench") -> None:
        """`imprint devices import` of a CSV made from the template (all rows or none)."""
        csv = "MAC ID,Location\r\n" + "".join(f"{mac},{location}\r\n" for mac in macs)
        path = self.workdir / f"import-{tenant}-{len(macs)}.csv"
        path.write_text(csv)
        self.cli("devices", "import", "--tenant", tenant, str(path))

    @property
    def operator_token(self) -> str:
        """An operator API token, made once with `imprint tokens create --role operator`."""
        if self._token is None:
            done = self.cli("tokens", "create", "--role", "operator", "--name", "e2e")
            self._token = done.stdout.strip()
            if not self._token or "\n" in self._token:
                raise AssertionError(f"tokens create printed {done.stdout!r}")
        return self._token

    # -- lifecycle --------------------------------------------------------------------------

    def start(self, timeout: float = 30.0) -> ImprintServer:
        """Start `imprint serve` in the node; return once /readyz answers 200 (or raise)."""
        if self.proc is not None and self.proc.poll() is None:
            raise RuntimeError("imprint serve is already running")
        _ = self.operator_token  # before serving: the CLI and the server share the store file
        with open(self.log_path, "a") as log:
            log.write(f"--- imprint serve --config {self.config_path}\n")
            log.flush()
            self.proc = self.topology.popen(
                self.node,
                [*imprint_argv(), "serve", "--config", str(self.config_path)],
                env=self._env(),
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        proc = self.proc
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                self.proc, self.last_exit = None, proc.returncode
                raise RuntimeError(f"imprint serve exited {proc.returncode}:\n{self.log()[-3000:]}")
            with contextlib.suppress(OSError, http.client.HTTPException):
                if self.api("GET", "/readyz", token=None, timeout=2.0).status == 200:
                    return self
            time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"imprint serve not ready after {timeout} s:\n{self.log()[-3000:]}")

    def stop(self) -> int | None:
        """SIGTERM (SIGKILL after 10 s) and wait; returns the exit status; idempotent."""
        proc, self.proc = self.proc, None
        if proc is None:
            return self.last_exit
        self.last_exit = self.topology.stop(proc, timeout=10.0)
        return self.last_exit

    def restart(self, timeout: float = 30.0) -> ImprintServer:
        """Stop, then start again on the same config and store."""
        self.stop()
        return self.start(timeout)

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def log(self) -> str:
        """Everything `imprint serve` printed so far (all runs)."""
        return self.log_path.read_text() if self.log_path.exists() else ""

    def __enter__(self) -> ImprintServer:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # -- HTTP -------------------------------------------------------------------------------

    def _connection(self, timeout: float) -> _NamespaceConnection:
        return _NamespaceConnection(self.node.netns, self.node.ip, self.port, self.tls, timeout)

    def api(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        token: str | None | bool = True,
        timeout: float = 10.0,
    ) -> ApiResponse:
        """One HTTP request from inside the server's namespace; `token=True` = operator token."""
        headers = {"Accept": "application/json"}
        if token is True:
            headers["Authorization"] = f"Bearer {self.operator_token}"
        elif isinstance(token, str):
            headers["Authorization"] = f"Bearer {token}"
        body: bytes | None = None
        if json is not None:
            body = _json_dumps(json).encode()
            headers["Content-Type"] = "application/json"
        conn = self._connection(timeout)
        try:
            conn.request(method, path, body=body, headers=headers)
            resp = conn.getresponse()
            raw = resp.read()
            got_headers = {k.lower(): v for k, v in resp.getheaders()}
        finally:
            conn.close()
        parsed: Any = raw.decode("utf-8", "replace")
        if got_headers.get("content-type", "").startswith("application/json"):
            parsed = _json_loads(raw)
        return ApiResponse(resp.status, parsed, got_headers)

    def metrics(self) -> Metrics:
        """Scrape GET /metrics."""
        resp = self.api("GET", "/metrics", token=None)
        if resp.status != 200:
            raise AssertionError(f"/metrics answered {resp.status}: {resp.body!r}")
        return Metrics(str(resp.body))

    def served_fingerprint(self) -> str:
        """SHA-256 (hex) of the certificate the HTTPS listener actually presents."""
        if not self.tls:
            raise RuntimeError("TLS is disabled in this server's config")
        conn = self._connection(10.0)
        try:
            conn.connect()
            der = conn.peer_der
        finally:
            conn.close()
        assert der is not None
        return hashlib.sha256(der).hexdigest()

    # -- store ------------------------------------------------------------------------------

    def query(self, sql: str, *params: Any) -> list[sqlite3.Row]:
        """Read the SQLite store directly (read-only), e.g. the `dhcp_leases` table."""
        conn = sqlite3.connect(f"file:{self.db_path}?mode=ro", uri=True, timeout=10)
        try:
            conn.row_factory = sqlite3.Row
            return list(conn.execute(sql, params))
        finally:
            conn.close()


def _json_dumps(value: Any) -> str:
    return json.dumps(value)


def _json_loads(raw: bytes) -> Any:
    return json.loads(raw)


# -- packet capture ---------------------------------------------------------------------------

_ETH_P_ALL = 0x0003
_PACKET_OUTGOING = 4


@dataclass(frozen=True)
class Frame:
    """One captured Ethernet frame and whether this namespace sent it."""

    outgoing: bool
    data: bytes

    def scapy(self) -> Any:
        """The frame dissected by scapy (an Ether packet)."""
        from scapy.layers.l2 import Ether

        return Ether(self.data)


class PacketCapture:
    """Every frame on one node's interface from creation on (AF_PACKET socket in its namespace).

    For low-traffic checks: frames wait in a 4 MiB socket buffer until `frames()` drains it.
    """

    def __init__(self, topology: Topology, node: Node) -> None:
        self._sock = netns_socket(
            node.netns, socket.AF_PACKET, socket.SOCK_RAW, socket.htons(_ETH_P_ALL)
        )
        try:
            self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
            self._sock.bind((node.ifname, _ETH_P_ALL))
            self._sock.setblocking(False)
        except BaseException:
            self._sock.close()
            raise
        self._frames: list[Frame] = []

    def frames(self, settle: float = 0.0) -> list[Frame]:
        """All frames captured so far, after waiting up to `settle` s for late ones."""
        deadline = time.monotonic() + settle
        while True:
            remaining = deadline - time.monotonic()
            ready, _, _ = select.select([self._sock], [], [], max(0.0, remaining))
            if not ready:
                return list(self._frames)
            while True:
                try:
                    data, address = self._sock.recvfrom(65535)
                except BlockingIOError:
                    break
                self._frames.append(Frame(address[2] == _PACKET_OUTGOING, data))
            if remaining <= 0:
                return list(self._frames)

    def close(self) -> None:
        self._sock.close()

    def __enter__(self) -> PacketCapture:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


@contextlib.contextmanager
def capture(topology: Topology, node: Node) -> Iterator[PacketCapture]:
    """`with capture(tp, node) as cap:` ... `cap.frames()`."""
    cap = PacketCapture(topology, node)
    try:
        yield cap
    finally:
        cap.close()
