"""Network-namespace test harness: topologies, processes inside them, real DHCP peers.

Everything here is plumbing for end-to-end tests and benches that need a real L2 segment:
a `Topology` builds namespaces joined by a bridge (and optionally a routed second subnet behind a
relay), runs processes inside them, and removes every namespace and process on exit. The third-
party clients (busybox udhcpc, dhcpcd, Kea perfdhcp) and the Kea server are wrapped here with
their output parsed, so the Imprint tests and `bench/dhcp` drive them the same way.

Addresses come from 198.18.0.0/15, the RFC 2544 benchmarking range, so no test can reach a real
network by mistake. Namespace names are `imp-<pid>-<random>-<role>`: the creator's pid lets a later
run remove the leftovers of a killed run without touching another live run's namespaces.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import ctypes.util
import json
import math
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any, TypeVar

PREFIX = "imp-"
LAN_PREFIX = "198.18.77"
LAN_PREFIXLEN = 24
LAN_CIDR = f"{LAN_PREFIX}.0/{LAN_PREFIXLEN}"
SERVER_IP = f"{LAN_PREFIX}.1"
RELAY_IP = f"{LAN_PREFIX}.2"
REMOTE_PREFIX = "198.18.78"
REMOTE_CIDR = f"{REMOTE_PREFIX}.0/24"
RELAY_REMOTE_IP = f"{REMOTE_PREFIX}.1"
SERVER_MAC = "02:00:5e:00:00:01"
RELAY_MAC = "02:00:5e:00:00:02"
RELAY_REMOTE_MAC = "02:00:5e:00:00:03"

# The tools the e2e tests and benches drive, each from the Debian package that ships it
# (scripts/install-debian-deps.sh installs them all).
TOOL_PACKAGES: dict[str, str] = {
    "ip": "iproute2",
    "ss": "iproute2",
    "kea-dhcp4": "kea-dhcp4-server",
    "perfdhcp": "kea-admin",
    "dhcpcd": "dhcpcd-base",
    "udhcpc": "udhcpc",
    "busybox": "busybox",
    "dig": "dnsutils",
    "curl": "curl",
}
# perfdhcp, kea-dhcp4, dhcpcd and udhcpc live in sbin, which a non-login PATH may lack.
_SEARCH_PATH = os.pathsep.join(
    [os.environ.get("PATH", ""), "/usr/local/sbin", "/usr/sbin", "/sbin", "/usr/bin", "/bin"]
)
_CLEAN_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
_NAME_RE = re.compile(r"^imp-(\d+)-[0-9a-f]{4}-[a-z0-9]+$")


def host_mac(index: int, segment: int = 1) -> str:
    """MAC of the index-th (1-based) client on a segment: 02:00:5e:00:<segment>:<index>."""
    if not 1 <= index <= 0xFF or not 0 <= segment <= 0xFF:
        raise ValueError(f"host index {index} / segment {segment} out of range")
    return f"02:00:5e:00:{segment:02x}:{index:02x}"


def find_tool(name: str) -> str | None:
    """Absolute path of an executable, also looking in sbin directories; None if absent."""
    return shutil.which(name, path=_SEARCH_PATH)


def _tool(name: str) -> str:
    path = find_tool(name)
    if path is None:
        package = TOOL_PACKAGES.get(name, "?")
        raise FileNotFoundError(f"`{name}` not found (Debian package {package})")
    return path


_netns_reason: str | None = None
_netns_checked = False


def netns_unavailable_reason() -> str | None:
    """Why this process cannot create network namespaces, or None when it can (checked once)."""
    global _netns_reason, _netns_checked
    if _netns_checked:
        return _netns_reason
    reason: str | None = None
    if os.geteuid() != 0 or find_tool("ip") is None:
        reason = "needs root and `ip netns` to create network namespaces"
    else:
        # Root is not enough inside some containers: prove it with a throwaway namespace.
        probe = f"{PREFIX}{os.getpid()}-{secrets.token_hex(2)}-probe"
        made = subprocess.run(
            [_tool("ip"), "netns", "add", probe], capture_output=True, text=True, timeout=10
        )
        if made.returncode != 0:
            reason = (
                "needs root and `ip netns` to create network namespaces "
                f"(`ip netns add` failed: {made.stderr.strip()})"
            )
        else:
            subprocess.run([_tool("ip"), "netns", "del", probe], capture_output=True, timeout=10)
    _netns_reason, _netns_checked = reason, True
    return reason


def require_root_netns(*tools: str) -> None:
    """Skip the calling test unless namespaces can be made and every named tool is installed."""
    import pytest

    reason = netns_unavailable_reason()
    if reason is not None:
        pytest.skip(reason)
    for name in tools:
        if find_tool(name) is None:
            package = TOOL_PACKAGES.get(name, "?")
            pytest.skip(
                f"`{name}` not installed (Debian package {package}; "
                "run scripts/install-debian-deps.sh as root)"
            )


def list_namespaces() -> list[str]:
    """Names of all named network namespaces (`ip netns list`)."""
    out = subprocess.run(
        [_tool("ip"), "netns", "list"], capture_output=True, text=True, timeout=10, check=True
    )
    return [line.split()[0] for line in out.stdout.splitlines() if line.strip()]


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _kill_namespace_processes(netns: str) -> None:
    out = subprocess.run(
        [_tool("ip"), "netns", "pids", netns], capture_output=True, text=True, timeout=10
    )
    for token in out.stdout.split():
        with contextlib.suppress(ProcessLookupError, ValueError):
            os.kill(int(token), signal.SIGKILL)


def _delete_namespace(netns: str) -> str | None:
    _kill_namespace_processes(netns)
    done = subprocess.run(
        [_tool("ip"), "netns", "del", netns], capture_output=True, text=True, timeout=10
    )
    if done.returncode != 0 and netns in list_namespaces():
        return f"{netns}: {done.stderr.strip()}"
    return None


def sweep_stale_namespaces() -> list[str]:
    """Remove `imp-<pid>-...` namespaces whose creating process is gone; return their names.

    Namespaces of a live process (another test run going on now) and names that do not follow
    our pattern are left alone.
    """
    removed: list[str] = []
    for name in list_namespaces():
        match = _NAME_RE.match(name)
        if match is None or _pid_alive(int(match.group(1))):
            continue
        if _delete_namespace(name) is None:
            removed.append(name)
    return removed


def netns_argv(netns: str, argv: Sequence[str]) -> list[str]:
    """argv that runs `argv` inside `netns` (`ip netns exec` execs it: same pid as the child)."""
    return [_tool("ip"), "netns", "exec", netns, *argv]


def netns_run(
    netns: str,
    argv: Sequence[str],
    *,
    timeout: float = 30.0,
    check: bool = False,
    env: Mapping[str, str] | None = None,
    input: str | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run argv inside netns to completion (text output, stderr kept apart), bounded by timeout."""
    return subprocess.run(
        netns_argv(netns, argv),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=check,
        env=dict(env) if env is not None else None,
        input=input,
    )


_CLONE_NEWNET = 0x40000000
T = TypeVar("T")
_libc: ctypes.CDLL | None = None


def netns_socket(netns: str, family: int, type: int, proto: int = 0) -> socket.socket:
    """A socket created inside netns; it stays there, so the test process can use it directly.

    Python 3.11 has no os.setns, so a short-lived thread enters the namespace with setns(2)
    (allowed per thread for CLONE_NEWNET) and creates the socket.
    """
    return netns_call(netns, lambda: socket.socket(family, type, proto))


def netns_call(netns: str, make: Callable[[], T]) -> T:
    """Run `make` in a short-lived thread inside netns (sockets it opens stay in netns)."""
    global _libc
    if _libc is None:
        _libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
    libc = _libc
    result: list[T] = []
    errors: list[BaseException] = []

    def enter_and_create() -> None:
        try:
            with open(f"/run/netns/{netns}", "rb") as target:
                if libc.setns(target.fileno(), _CLONE_NEWNET) != 0:
                    err = ctypes.get_errno()
                    raise OSError(err, f"setns({netns}): {os.strerror(err)}")
            result.append(make())
        except BaseException as exc:  # handed to the caller's thread below
            errors.append(exc)

    worker = threading.Thread(target=enter_and_create, name=f"setns-{netns}")
    worker.start()
    worker.join(timeout=10)
    if errors:
        raise errors[0]
    if not result:
        raise TimeoutError(f"could not run {make!r} in {netns}")
    return result[0]


@dataclass(frozen=True)
class Node:
    """One namespace on a segment: its interface, address and MAC."""

    role: str
    netns: str
    ifname: str
    ip: str
    prefixlen: int
    mac: str

    @property
    def cidr(self) -> str:
        """Address with prefix length, as `ip addr` and dhcpcd -s take it."""
        return f"{self.ip}/{self.prefixlen}"


@dataclass(frozen=True)
class RelayNode(Node):
    """The router between the LAN and the remote subnet: upstream fields plus the remote side."""

    remote_ifname: str = "eth1"
    remote_ip: str = RELAY_REMOTE_IP
    remote_mac: str = RELAY_REMOTE_MAC


NodeRef = Node | str


class Topology:
    """Namespaces on one bridge: a server and N hosts, optionally remote hosts behind a relay.

    ```
      switch ns: br0 (LAN 198.18.77.0/24)      br1 (remote 198.18.78.0/24)
        |-- server  eth0 .77.1                    |-- relay   eth1 .78.1 (forwarding)
        |-- h1..hN  eth0 .77.11..                 |-- r1..rM  eth0 .78.11.. (default via .78.1)
        '-- relay   eth0 .77.2
    ```
    The server routes 198.18.78.0/24 via the relay, so a relayed request (giaddr in the remote
    subnet) is answered back through it. Use as `with` or `async with`; on exit every process
    started through it is stopped and every namespace deleted, also when the body raised.
    """

    def __init__(self, hosts: int = 2, *, remote_hosts: int = 0, ipv6: bool = False) -> None:
        if not 0 <= hosts <= 200 or not 0 <= remote_hosts <= 200:
            raise ValueError("hosts and remote_hosts must be between 0 and 200")
        self.tag = f"{PREFIX}{os.getpid()}-{secrets.token_hex(2)}"
        self.switch_ns = f"{self.tag}-sw"
        self.ipv6 = ipv6
        self.server = Node("srv", f"{self.tag}-srv", "eth0", SERVER_IP, 24, SERVER_MAC)
        self.hosts = [
            Node(f"h{i}", f"{self.tag}-h{i}", "eth0", f"{LAN_PREFIX}.{10 + i}", 24, host_mac(i))
            for i in range(1, hosts + 1)
        ]
        self.relay: RelayNode | None = None
        self.remote_hosts: list[Node] = []
        if remote_hosts:
            self.relay = RelayNode("relay", f"{self.tag}-relay", "eth0", RELAY_IP, 24, RELAY_MAC)
            self.remote_hosts = [
                Node(
                    f"r{i}",
                    f"{self.tag}-r{i}",
                    "eth0",
                    f"{REMOTE_PREFIX}.{10 + i}",
                    24,
                    host_mac(i, segment=2),
                )
                for i in range(1, remote_hosts + 1)
            ]
        self._created: list[str] = []
        self._procs: list[subprocess.Popen[str]] = []
        self._lock = threading.Lock()
        self._closed = False

    # -- lifecycle -------------------------------------------------------------------------

    @property
    def nodes(self) -> list[Node]:
        """Every end node: server, LAN hosts, relay (if any), remote hosts."""
        relay: list[Node] = [self.relay] if self.relay is not None else []
        return [self.server, *self.hosts, *relay, *self.remote_hosts]

    @property
    def namespaces(self) -> list[str]:
        """Names of the namespaces this topology created so far."""
        return list(self._created)

    def up(self) -> Topology:
        """Create everything; on any failure remove what was made and re-raise."""
        try:
            self._build()
        except BaseException:
            self.down()
            raise
        return self

    def _ip(self, *args: str) -> None:
        done = subprocess.run([_tool("ip"), *args], capture_output=True, text=True, timeout=10)
        if done.returncode != 0:
            raise RuntimeError(f"ip {' '.join(args)}: {done.stderr.strip()}")

    def _add_namespace(self, netns: str) -> None:
        self._ip("netns", "add", netns)
        self._created.append(netns)
        self._ip("-n", netns, "link", "set", "lo", "up")
        settings = ["net.ipv4.conf.all.rp_filter=0", "net.ipv4.conf.default.rp_filter=0"]
        if self.ipv6:
            # Keep IPv6 (mDNS over ff02::fb) but skip duplicate address detection delays.
            settings += ["net.ipv6.conf.all.accept_dad=0", "net.ipv6.conf.default.accept_dad=0"]
        else:
            # No router solicitations, MLD reports or DAD probes in captures and timings.
            settings += [
                "net.ipv6.conf.all.disable_ipv6=1",
                "net.ipv6.conf.default.disable_ipv6=1",
            ]
        done = netns_run(netns, [_tool("sysctl"), "-q", "-w", *settings], timeout=10)
        if done.returncode != 0:
            raise RuntimeError(f"sysctl in {netns}: {done.stderr.strip()}")

    def _attach(self, bridge: str, port: str, netns: str, ifname: str, mac: str) -> None:
        # The veth pair is born in the switch namespace with its peer placed straight into the
        # target, so the root namespace never sees either end (no name clashes between runs).
        sw = self.switch_ns
        self._ip(
            "-n", sw, "link", "add", port, "type", "veth", "peer", "name", ifname, "netns", netns
        )
        self._ip("-n", sw, "link", "set", port, "master", bridge, "up")
        self._ip("-n", netns, "link", "set", ifname, "address", mac)

    def _address(self, netns: str, ifname: str, cidr: str) -> None:
        self._ip("-n", netns, "addr", "add", cidr, "dev", ifname)
        self._ip("-n", netns, "link", "set", ifname, "up")

    def _build(self) -> None:
        sw = self.switch_ns
        self._add_namespace(sw)
        bridges = ["br0"] + (["br1"] if self.relay is not None else [])
        for bridge in bridges:
            # No IGMP snooping: mDNS and other multicast are flooded like on a dumb switch.
            bridge_opts = ["type", "bridge", "mcast_snooping", "0", "forward_delay", "0"]
            self._ip("-n", sw, "link", "add", bridge, *bridge_opts)
            self._ip("-n", sw, "link", "set", bridge, "up")
        lan: list[Node] = [self.server, *self.hosts]
        if self.relay is not None:
            lan.append(self.relay)
        for port_no, node in enumerate(lan, start=1):
            self._add_namespace(node.netns)
            self._attach("br0", f"p{port_no}", node.netns, node.ifname, node.mac)
            self._address(node.netns, node.ifname, node.cidr)
            # Multicast (mDNS 224.0.0.251) needs a route when there is no default route.
            self._ip("-n", node.netns, "route", "add", "224.0.0.0/4", "dev", node.ifname)
        if self.relay is not None:
            relay = self.relay
            self._attach("br1", "q0", relay.netns, relay.remote_ifname, relay.remote_mac)
            self._address(relay.netns, relay.remote_ifname, f"{relay.remote_ip}/24")
            done = netns_run(
                relay.netns, [_tool("sysctl"), "-q", "-w", "net.ipv4.ip_forward=1"], timeout=10
            )
            if done.returncode != 0:
                raise RuntimeError(f"ip_forward in {relay.netns}: {done.stderr.strip()}")
            self._ip("-n", self.server.netns, "route", "add", REMOTE_CIDR, "via", relay.ip)
            for port_no, node in enumerate(self.remote_hosts, start=1):
                self._add_namespace(node.netns)
                self._attach("br1", f"q{port_no}", node.netns, node.ifname, node.mac)
                self._address(node.netns, node.ifname, node.cidr)
                self._ip("-n", node.netns, "route", "add", "default", "via", relay.remote_ip)

    def down(self) -> None:
        """Stop every process started here, kill strays in our namespaces, delete them all."""
        with self._lock:
            procs, self._procs = self._procs, []
        for proc in procs:
            self.stop(proc, timeout=3.0)
        problems: list[str] = []
        # Hosts first, the switch last: deleting a namespace deletes its veth ends.
        for netns in reversed(self._created):
            problem = _delete_namespace(netns)
            if problem is not None:
                problems.append(problem)
        self._created = []
        self._closed = True
        if problems:
            raise RuntimeError("could not delete namespaces: " + "; ".join(problems))

    def __enter__(self) -> Topology:
        return self.up()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        try:
            self.down()
        except RuntimeError:
            if exc is None:
                raise

    async def __aenter__(self) -> Topology:
        return await asyncio.to_thread(self.up)

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await asyncio.to_thread(self.__exit__, exc_type, exc, tb)

    # -- processes -------------------------------------------------------------------------

    @staticmethod
    def _ns(where: NodeRef) -> str:
        return where.netns if isinstance(where, Node) else where

    def run(
        self,
        where: NodeRef,
        argv: Sequence[str],
        *,
        timeout: float = 30.0,
        check: bool = False,
        env: Mapping[str, str] | None = None,
        input: str | None = None,
    ) -> subprocess.CompletedProcess[str]:
        """Run argv to completion inside a node's namespace; raises TimeoutExpired past timeout."""
        return netns_run(self._ns(where), argv, timeout=timeout, check=check, env=env, input=input)

    async def arun(
        self,
        where: NodeRef,
        argv: Sequence[str],
        *,
        timeout: float = 30.0,  # noqa: ASYNC109 - kills the subprocess, not just the wait
        env: Mapping[str, str] | None = None,
    ) -> subprocess.CompletedProcess[str]:
        """`run` without blocking the event loop (runs in a worker thread)."""
        return await asyncio.to_thread(self.run, where, argv, timeout=timeout, env=env)

    def popen(
        self,
        where: NodeRef,
        argv: Sequence[str],
        *,
        env: Mapping[str, str] | None = None,
        cwd: str | Path | None = None,
        stdout: int | Any = subprocess.PIPE,
        stderr: int | Any = subprocess.STDOUT,
        stdin: int | Any = subprocess.DEVNULL,
    ) -> subprocess.Popen[str]:
        """Start argv inside a node's namespace; it is stopped at the latest when the topology
        goes down. Runs in its own session so its children are stopped with it."""
        if self._closed:
            raise RuntimeError("topology is down")
        proc = subprocess.Popen(
            netns_argv(self._ns(where), argv),
            env=dict(env) if env is not None else None,
            cwd=cwd,
            stdin=stdin,
            stdout=stdout,
            stderr=stderr,
            text=True,
            start_new_session=True,
        )
        with self._lock:
            self._procs.append(proc)
        return proc

    def stop(self, proc: subprocess.Popen[str], timeout: float = 5.0) -> int:
        """SIGTERM the process group, SIGKILL it after timeout; return the exit status.

        Idempotent; a process that already exited is only reaped."""
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=timeout)
        # A leader that already exited is not signalled again: its pid may have been reused.
        # Children it left behind are killed when the namespace goes down (`ip netns pids`).
        for stream in (proc.stdout, proc.stderr, proc.stdin):
            if stream is not None:
                stream.close()
        with self._lock:
            if proc in self._procs:
                self._procs.remove(proc)
        return proc.returncode

    def ns_exec_python(
        self, where: NodeRef, code: str, *args: str, timeout: float = 30.0
    ) -> subprocess.CompletedProcess[str]:
        """Run a Python snippet (this interpreter, so scapy is importable) inside a namespace."""
        return self.run(where, [sys.executable, "-c", code, *args], timeout=timeout)

    def popen_python(self, where: NodeRef, code: str, *args: str) -> subprocess.Popen[str]:
        """Start a Python snippet inside a namespace (stdout piped, stopped on exit)."""
        return self.popen(where, [sys.executable, "-u", "-c", code, *args], stderr=subprocess.PIPE)

    def socket(self, where: NodeRef, family: int, type: int, proto: int = 0) -> socket.socket:
        """A socket that lives in a node's namespace, for use from the test process itself."""
        return netns_socket(self._ns(where), family, type, proto)

    def udp_port_bound(self, where: NodeRef, port: int) -> bool:
        """True when something in the namespace listens on UDP `port` (any address)."""
        done = self.run(where, [_tool("ss"), "-Hnlu", f"sport = :{port}"], timeout=10)
        return bool(done.stdout.strip())

    def wait_udp_port(
        self,
        where: NodeRef,
        port: int,
        timeout: float = 10.0,
        proc: subprocess.Popen[str] | None = None,
    ) -> bool:
        """Poll until UDP `port` is bound in the namespace, `proc` died, or timeout; bounded."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.udp_port_bound(where, port):
                return True
            if proc is not None and proc.poll() is not None:
                return False
            time.sleep(0.05)
        return False


# -- busybox udhcpc ------------------------------------------------------------------------

_UDHCPC_SCRIPT = """#!/bin/sh
# Print the event and udhcpc's variables; configure nothing (the harness only observes).
echo "IMPRINT-UDHCPC-EVENT $1"
env | while IFS= read -r line; do echo "IMPRINT-UDHCPC-VAR $line"; done
exit 0
"""


@dataclass(frozen=True)
class UdhcpcResult:
    """What udhcpc told its script: one (event, variables) pair per call."""

    returncode: int
    events: list[tuple[str, dict[str, str]]]
    output: str

    @property
    def lease(self) -> dict[str, str] | None:
        """Variables of the last `bound`/`renew` event (ip, serverid, optNN=hex, ...), or None."""
        for event, variables in reversed(self.events):
            if event in ("bound", "renew"):
                return variables
        return None


def parse_udhcpc_output(text: str) -> list[tuple[str, dict[str, str]]]:
    """Split the harness script's output into (event, variables) pairs."""
    events: list[tuple[str, dict[str, str]]] = []
    for line in text.splitlines():
        if line.startswith("IMPRINT-UDHCPC-EVENT "):
            events.append((line.split(" ", 1)[1].strip(), {}))
        elif line.startswith("IMPRINT-UDHCPC-VAR ") and events:
            key, _, value = line.split(" ", 1)[1].partition("=")
            if key not in ("PATH", "PWD", "SHLVL", "_"):
                events[-1][1][key] = value
    return events


def run_udhcpc(
    topology: Topology,
    where: Node,
    *,
    vendor_class: str | None = None,
    request: Sequence[int] = (),
    tries: int = 3,
    wait_per_try: int = 1,
    extra_args: Sequence[str] = (),
    timeout: float = 30.0,
) -> UdhcpcResult:
    """Run `udhcpc -i IF [-V vc] [-O n]... -n -q -t tries -T wait -s script` once in a namespace.

    Full DORA from 0.0.0.0; the script only prints, so the interface keeps its address. Requested
    options unknown to busybox come back as `optNN` = hex; known ones under busybox's names
    (66 -> `tftp`, which busybox replaces by `bad` unless it is a valid host name).
    """
    workdir = Path(tempfile.mkdtemp(prefix="imp-udhcpc-"))
    try:
        script = workdir / "script.sh"
        script.write_text(_UDHCPC_SCRIPT)
        script.chmod(0o755)
        argv = [_tool("udhcpc"), "-i", where.ifname]
        if vendor_class is not None:
            argv += ["-V", vendor_class]
        for code in request:
            argv += ["-O", str(code)]
        argv += ["-n", "-q", "-t", str(tries), "-T", str(wait_per_try), "-s", str(script)]
        argv += list(extra_args)
        done = topology.run(where, argv, timeout=timeout, env={"PATH": _CLEAN_PATH})
        output = done.stdout + done.stderr
        return UdhcpcResult(done.returncode, parse_udhcpc_output(done.stdout), output)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


# -- dhcpcd --------------------------------------------------------------------------------


@dataclass(frozen=True)
class DhcpcdResult:
    """dhcpcd -T output: `reason` plus the `new_*` variables (prefix dropped) of the reply."""

    returncode: int
    reason: str | None
    options: dict[str, str]
    output: str

    @property
    def answered(self) -> bool:
        """True when a server answered (dhcpcd printed a DHCP message type)."""
        return "dhcp_message_type" in self.options


def parse_dhcpcd_test_output(text: str) -> tuple[str | None, dict[str, str]]:
    """Parse dhcpcd -T's `key='value'` lines into (reason, new_* options without the prefix)."""
    reason: str | None = None
    options: dict[str, str] = {}
    for line in text.splitlines():
        key, sep, value = line.partition("=")
        if not sep or not re.fullmatch(r"[A-Za-z0-9_]+", key):
            continue
        if len(value) >= 2 and value[0] == value[-1] == "'":
            value = value[1:-1]
        if key == "reason":
            reason = value
        elif key.startswith("new_"):
            options[key[4:]] = value
    return reason, options


def run_dhcpcd_inform(
    topology: Topology,
    where: Node,
    *,
    vendor_class: str = "MS-UC-Client",
    request: Sequence[str] = ("vendor_encapsulated_options",),
    address: str | None = None,
    wait: int = 5,
    config: str = "clientid\n",
    timeout: float = 30.0,
) -> DhcpcdResult:
    """Run `dhcpcd -T -4 -i VC -o OPT... -s ADDR IF`: one DHCPINFORM (ciaddr = ADDR), print reply.

    `config` replaces /etc/dhcpcd.conf: the default `clientid` sends option 61 as 01+MAC and,
    unlike Debian's `duid`, writes no DUID file under /var/lib/dhcpcd.
    """
    workdir = Path(tempfile.mkdtemp(prefix="imp-dhcpcd-"))
    try:
        conf = workdir / "dhcpcd.conf"
        conf.write_text(config)
        argv = [_tool("dhcpcd"), "-f", str(conf), "-T", "-4", "-t", str(wait), "-i", vendor_class]
        for name in request:
            argv += ["-o", name]
        argv += ["-s", address or where.cidr, where.ifname]
        done = topology.run(where, argv, timeout=timeout, env={"PATH": _CLEAN_PATH})
        reason, options = parse_dhcpcd_test_output(done.stdout)
        return DhcpcdResult(done.returncode, reason, options, done.stdout + done.stderr)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


# -- Kea perfdhcp --------------------------------------------------------------------------


def percentile(values: Sequence[float], pct: float) -> float:
    """Nearest-rank percentile (the smallest value with at least pct% of values at or below it)."""
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = max(1, math.ceil(pct / 100.0 * len(ordered)))
    return ordered[min(rank, len(ordered)) - 1]


@dataclass(frozen=True)
class ExchangeStats:
    """perfdhcp's figures for one exchange type (e.g. DISCOVER-OFFER), delays in ms."""

    sent: int
    received: int
    drops: int
    drops_ratio_pct: float
    orphans: int
    rejected_leases: int
    min_ms: float
    avg_ms: float
    max_ms: float
    std_ms: float
    latencies_ms: tuple[float, ...] = ()

    def latency_pct(self, pct: float) -> float:
        """Latency percentile from perfdhcp's per-exchange timestamps (needs `-x t`)."""
        return percentile(self.latencies_ms, pct)


@dataclass(frozen=True)
class PerfdhcpResult:
    """Parsed perfdhcp run: rate achieved, stats per exchange type, raw output."""

    returncode: int
    rate: float | None
    expected_rate: float | None
    exchanges: dict[str, ExchangeStats]
    output: str = field(repr=False)

    @property
    def first(self) -> ExchangeStats:
        """The first exchange type (DISCOVER-OFFER for DHCPv4)."""
        return next(iter(self.exchanges.values()))

    @property
    def last(self) -> ExchangeStats:
        """The last exchange type (REQUEST-ACK for a 4-way run, DISCOVER-OFFER with -i)."""
        return list(self.exchanges.values())[-1]

    @property
    def sent(self) -> int:
        """Exchanges started (DISCOVERs sent)."""
        return self.first.sent

    @property
    def completed(self) -> int:
        """Exchanges that ran to the end (ACKs received, or OFFERs with -i)."""
        return self.last.received

    @property
    def drop_pct(self) -> float:
        """Percentage of started exchanges that did not complete."""
        if self.sent == 0:
            return 100.0
        return 100.0 * (1.0 - self.completed / self.sent)


_STATS_FIELDS = {
    "sent packets": "sent",
    "received packets": "received",
    "drops": "drops",
    "drops ratio": "drops_ratio_pct",
    "orphans": "orphans",
    "rejected leases": "rejected_leases",
    "min delay": "min_ms",
    "avg delay": "avg_ms",
    "max delay": "max_ms",
    "std deviation": "std_ms",
}


def _number(text: str) -> float:
    match = re.search(r"-?\d+(?:\.\d+)?(?:e[-+]?\d+)?", text)
    return float(match.group(0)) if match else math.nan


def parse_perfdhcp_output(text: str, returncode: int = 0) -> PerfdhcpResult:
    """Parse perfdhcp 2.2's final report, and the `-x t` timestamps when present."""
    rate: float | None = None
    expected: float | None = None
    raw: dict[str, dict[str, float]] = {}
    stamps: dict[str, list[float]] = {}
    section: str | None = None
    stamp_section: str | None = None
    for line in text.splitlines():
        line = line.strip()
        head = re.match(r"\*\*\*Statistics for: (\S+)\*\*\*", line)
        if head:
            section, stamp_section = head.group(1), None
            raw[section] = {}
            continue
        head = re.match(r"\*\*\*Timestamps for packets: (\S+)\*\*\*", line)
        if head:
            section, stamp_section = None, head.group(1)
            stamps[stamp_section] = []
            continue
        if line.startswith("***"):
            section = stamp_section = None
            continue
        if line.startswith("Rate:"):
            got = re.match(r"Rate:\s*([\d.]+).*?expected rate:\s*([\d.]+)", line)
            if got:
                rate, expected = float(got.group(1)), float(got.group(2))
            else:
                rate = _number(line[5:])
            continue
        if stamp_section is not None and line.startswith("sent / received:"):
            sent_s, _, recv_s = line.split(":", 1)[1].partition("/")
            stamps[stamp_section].append(round((float(recv_s) - float(sent_s)) * 1000.0, 3))
            continue
        if section is not None:
            key, sep, value = line.partition(":")
            name = _STATS_FIELDS.get(key.strip())
            if sep and name is not None:
                raw[section][name] = _number(value)
    exchanges: dict[str, ExchangeStats] = {}
    for name, values in raw.items():
        exchanges[name] = ExchangeStats(
            sent=int(values.get("sent", 0)),
            received=int(values.get("received", 0)),
            drops=int(values.get("drops", 0)),
            drops_ratio_pct=values.get("drops_ratio_pct", math.nan),
            orphans=int(values.get("orphans", 0)),
            rejected_leases=int(values.get("rejected_leases", 0)),
            min_ms=values.get("min_ms", math.nan),
            avg_ms=values.get("avg_ms", math.nan),
            max_ms=values.get("max_ms", math.nan),
            std_ms=values.get("std_ms", math.nan),
            latencies_ms=tuple(stamps.get(name, ())),
        )
    if not exchanges:
        raise ValueError(f"no statistics in perfdhcp output: {text[-500:]!r}")
    return PerfdhcpResult(returncode, rate, expected, exchanges, text)


def run_perfdhcp(
    topology: Topology,
    where: Node,
    server: str,
    *,
    rate: int | None = None,
    seconds: int | None = None,
    num_requests: int | None = None,
    mac_list: Path | None = None,
    base_mac: str | None = None,
    clients: int = 1,
    local: str | None = None,
    initial_only: bool = False,
    timestamps: bool = True,
    drop_time: float = 1.0,
    exit_wait_us: int = 200_000,
    extra_args: Sequence[str] = (),
    timeout: float = 120.0,
) -> PerfdhcpResult:
    """Run perfdhcp -4 in a namespace against `server` and parse its report.

    Bound it with whole `seconds` (-p takes an integer) and/or `num_requests` (-n). With a unicast `server`, perfdhcp
    acts as a relay: it sets giaddr to its local address (`local`, -l) and sends from port 67, so
    the server answers to giaddr:67. `mac_list` (-M) picks each exchange's MAC at random from the
    file, which gives an exact client set to reserve; -b mac=/-R derive MACs internally instead.
    `timestamps` adds `-x t`, whose per-exchange timers give latency percentiles.
    """
    if seconds is None and num_requests is None:
        raise ValueError("bound perfdhcp with seconds and/or num_requests")
    argv = [_tool("perfdhcp"), "-4", "-d", str(drop_time), "-W", str(exit_wait_us)]
    if rate is not None:
        argv += ["-r", str(rate)]
    if seconds is not None:
        argv += ["-p", str(seconds)]
    if num_requests is not None:
        argv += ["-n", str(num_requests)]
    if mac_list is not None:
        argv += ["-M", str(mac_list)]
    elif base_mac is not None:
        argv += ["-b", f"mac={base_mac}", "-R", str(clients)]
    if local is not None:
        argv += ["-l", local]
    if initial_only:
        argv.append("-i")
    if timestamps:
        argv += ["-x", "t"]
    argv += [*extra_args, server]
    done = topology.run(where, argv, timeout=timeout, env={"PATH": _CLEAN_PATH})
    text = done.stdout + ("\n" + done.stderr if done.stderr else "")
    if done.returncode not in (0, 3):
        raise RuntimeError(f"perfdhcp failed ({done.returncode}): {text[-2000:]}")
    return parse_perfdhcp_output(text, done.returncode)


# -- Kea DHCPv4 server ---------------------------------------------------------------------


def kea_reservation(
    mac: str, ip: str | None = None, options: Sequence[Mapping[str, Any]] = ()
) -> dict[str, Any]:
    """A Kea host reservation by hardware address, with optional address and option-data."""
    entry: dict[str, Any] = {"hw-address": mac}
    if ip is not None:
        entry["ip-address"] = ip
    if options:
        entry["option-data"] = [dict(option) for option in options]
    return entry


def kea_subnet(
    subnet_id: int,
    cidr: str,
    *,
    pool: str | None = None,
    reservations: Sequence[Mapping[str, Any]] = (),
    options: Sequence[Mapping[str, Any]] = (),
) -> dict[str, Any]:
    """One `subnet4` entry. Kea picks it by giaddr for relayed packets, else by interface."""
    entry: dict[str, Any] = {"id": subnet_id, "subnet": cidr}
    if pool is not None:
        entry["pools"] = [{"pool": pool}]
    if reservations:
        entry["reservations"] = [dict(r) for r in reservations]
    if options:
        entry["option-data"] = [dict(o) for o in options]
    return entry


def kea_dhcp4_config(
    workdir: Path,
    interface: str,
    subnets: Sequence[Mapping[str, Any]],
    *,
    threads: int = 0,
    valid_lifetime: int = 3600,
    severity: str = "INFO",
) -> dict[str, Any]:
    """A complete kea-dhcp4 configuration whose lease file, socket and log live in workdir.

    `threads` > 0 enables Kea's multi-threaded packet processing with that many threads;
    0 keeps Kea 2.2's default (single-threaded).
    """
    config: dict[str, Any] = {
        "interfaces-config": {"interfaces": [interface], "dhcp-socket-type": "raw"},
        "control-socket": {"socket-type": "unix", "socket-name": str(workdir / "kea4.sock")},
        "lease-database": {
            "type": "memfile",
            "persist": True,
            "name": str(workdir / "leases4.csv"),
            # 0 = no lease-file cleanup: kea-lfc would be a second process to track.
            "lfc-interval": 0,
        },
        "valid-lifetime": valid_lifetime,
        "subnet4": [dict(s) for s in subnets],
        "loggers": [
            {
                "name": "kea-dhcp4",
                "output_options": [{"output": str(workdir / "kea-dhcp4.log")}],
                "severity": severity,
            }
        ],
    }
    if threads > 0:
        config["multi-threading"] = {
            "enable-multi-threading": True,
            "thread-pool-size": threads,
            "packet-queue-size": 64 * threads,
        }
    return {"Dhcp4": config}


class KeaDhcp4:
    """kea-dhcp4 running in a topology node with a generated config; stopped on exit."""

    def __init__(self, topology: Topology, where: Node, workdir: Path, config: Mapping[str, Any]):
        self.topology = topology
        self.where = where
        self.workdir = workdir
        self.config = dict(config)
        self.config_path = workdir / "kea-dhcp4.json"
        self.log_path = workdir / "kea-dhcp4.log"
        self.lease_path = workdir / "leases4.csv"
        self.stdout_path = workdir / "kea-dhcp4.stdout"
        self.proc: subprocess.Popen[str] | None = None

    def _env(self) -> dict[str, str]:
        # Pid and lock files go to workdir instead of /run/kea and /var/run/kea.
        return {
            "PATH": _CLEAN_PATH,
            "KEA_PIDFILE_DIR": str(self.workdir),
            "KEA_LOCKFILE_DIR": str(self.workdir),
        }

    def start(self, timeout: float = 15.0) -> KeaDhcp4:
        """Write the config, check it with `kea-dhcp4 -t`, start, wait until UDP 67 is bound."""
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.config_path.write_text(json.dumps(self.config, indent=2))
        kea = _tool("kea-dhcp4")
        check = self.topology.run(
            self.where, [kea, "-t", str(self.config_path)], timeout=30, env=self._env()
        )
        if check.returncode != 0:
            raise RuntimeError(f"kea-dhcp4 rejected its config: {check.stdout}{check.stderr}")
        with open(self.stdout_path, "w") as out:
            self.proc = self.topology.popen(
                self.where,
                [kea, "-c", str(self.config_path)],
                env=self._env(),
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        # Ready once the DHCP socket is bound (Kea binds UDP 67 next to its raw socket); the
        # log's DHCP4_STARTED is not a signal when severity is above INFO.
        if self.topology.wait_udp_port(self.where, 67, timeout=timeout, proc=self.proc):
            return self
        self.stop()
        out_text = self.stdout_path.read_text() if self.stdout_path.exists() else ""
        raise RuntimeError(f"kea-dhcp4 did not start: {out_text[-1500:]}{self.log()[-1500:]}")

    def stop(self) -> None:
        """Stop Kea (SIGTERM, then SIGKILL after 5 s); idempotent."""
        proc, self.proc = self.proc, None
        if proc is not None:
            self.topology.stop(proc)

    def log(self) -> str:
        """Kea's log so far."""
        return self.log_path.read_text() if self.log_path.exists() else ""

    def leases(self) -> list[dict[str, str]]:
        """Rows of the memfile lease CSV (address, hwaddr, ...), latest last."""
        if not self.lease_path.exists():
            return []
        lines = self.lease_path.read_text().splitlines()
        if not lines:
            return []
        header = lines[0].split(",")
        return [dict(zip(header, row.split(","), strict=False)) for row in lines[1:] if row]

    def __enter__(self) -> KeaDhcp4:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


def write_mac_list(path: Path, macs: Sequence[str]) -> Path:
    """Write one MAC per line, as perfdhcp -M reads it."""
    path.write_text("".join(f"{mac}\n" for mac in macs))
    return path


def bench_macs(count: int, segment: int = 0x10) -> list[str]:
    """`count` distinct client MACs 02:00:5e:<segment>:XX:YY, apart from the hosts' own MACs."""
    if not 1 <= count <= 0xFFFF:
        raise ValueError("count must be between 1 and 65535")
    return [f"02:00:5e:{segment:02x}:{i >> 8:02x}:{i & 0xFF:02x}" for i in range(1, count + 1)]


@contextlib.contextmanager
def temporary_directory(prefix: str = "imp-") -> Iterator[Path]:
    """A temporary directory removed on exit (Kea config, leases, logs)."""
    path = Path(tempfile.mkdtemp(prefix=prefix))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


# -- several links: 802.1Q VLANs on the trunk, or a second segment ---------------------------


def ip(tp: Topology, where: Node | str, *argv: str) -> None:
    """`ip ARGV` in a node or namespace; fails the test with ip's message if it fails."""
    done = tp.run(where, ["ip", *argv], timeout=10)
    assert done.returncode == 0, f"ip {' '.join(argv)}: {done.stderr}"


def vlan_supported(tp: Topology) -> bool:
    """True if this kernel makes 802.1Q VLAN interfaces (the 8021q module)."""
    probe = tp.run(
        tp.switch_ns, ["ip", "link", "add", "link", "br0", "name", "v9", "type", "vlan", "id", "9"]
    )
    if probe.returncode != 0:
        return False
    ip(tp, tp.switch_ns, "link", "del", "v9")
    return True


def add_vlan(tp: Topology, node: Node, vid: int, cidr: str) -> str:
    """VLAN `vid` on the node's eth0 (`eth0.VID`) with address `cidr`; its name."""
    name = f"eth0.{vid}"
    ip(tp, node, "link", "add", "link", "eth0", "name", name, "type", "vlan", "id", str(vid))
    ip(tp, node, "addr", "add", cidr, "dev", name)
    ip(tp, node, "link", "set", name, "up")
    return name


def add_link(tp: Topology, node: Node, port: str, cidr: str) -> str:
    """A second veth `eth1` from `node` to bridge br9 in the switch namespace."""
    sw = tp.switch_ns
    if tp.run(sw, ["ip", "link", "show", "br9"]).returncode != 0:
        ip(tp, sw, "link", "add", "br9", "type", "bridge", "mcast_snooping", "0")
        ip(tp, sw, "link", "set", "br9", "up")
    ip(tp, sw, "link", "add", port, "type", "veth", "peer", "name", "eth1", "netns", node.netns)
    ip(tp, sw, "link", "set", port, "master", "br9", "up")
    ip(tp, node, "link", "set", "eth1", "address", node.mac)  # one device, two links
    ip(tp, node, "addr", "add", cidr, "dev", "eth1")
    ip(tp, node, "link", "set", "eth1", "up")
    return "eth1"
