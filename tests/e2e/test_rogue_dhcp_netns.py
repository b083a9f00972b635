"""Full mode refuses to start beside another DHCP server, and runs with least privilege.

In a network-namespace segment, Kea (a real DHCP server started by the test) answers on h1;
`imprint serve` in full mode on the server node must then exit with a configuration error that
names Kea's address, start anyway with `--no-dhcp-probe`, and start normally once Kea is gone.
A second test runs `imprint serve` with only the capabilities configs/imprint.service grants
(UDP 67, HTTPS 443, the probe) and leases an address to a real client (busybox udhcpc).
"""

from __future__ import annotations

import ipaddress
import re
import subprocess
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from tests.helpers.netns import (
    LAN_PREFIX,
    SERVER_IP,
    KeaDhcp4,
    Topology,
    find_tool,
    kea_dhcp4_config,
    kea_subnet,
    require_root_netns,
    run_udhcpc,
)
from tests.helpers.server import ImprintServer, imprint_argv, wait_until

pytestmark = pytest.mark.netns

ROOT = Path(__file__).resolve().parents[2]
KEA_POOL = f"{LAN_PREFIX}.200-{LAN_PREFIX}.250"
IMPRINT_POOL = f"{LAN_PREFIX}.100-{LAN_PREFIX}.150"


def in_range(ip: str, pool: str) -> bool:
    first, last = (ipaddress.IPv4Address(a) for a in pool.split("-"))
    return first <= ipaddress.IPv4Address(ip) <= last


def full_mode(**http: Any) -> dict[str, Any]:
    return {
        "http": http,
        "mdns": {"enabled": False},
        "dhcp": {
            "enabled": True,
            "mode": "full",
            "interface": "eth0",
            "server_ip": SERVER_IP,
            "subnets": [{"subnet": f"{LAN_PREFIX}.0/24", "pool": IMPRINT_POOL}],
        },
    }


def serve(
    tp: Topology, srv: ImprintServer, *args: str, prefix: Sequence[str] = ()
) -> subprocess.Popen[str]:
    """`[prefix] imprint serve --config FILE ARGS` in the server node, once /readyz is 200."""
    _ = srv.operator_token  # made before serving: the CLI and the server share the store
    with open(srv.log_path, "a") as log:
        log.write(f"--- {' '.join([*prefix, 'imprint serve', *args])}\n")
        log.flush()
        proc = tp.popen(
            srv.node,
            [*prefix, *imprint_argv(), "serve", "--config", str(srv.config_path), *args],
            env=srv._env(),
            stdout=log,
            stderr=subprocess.STDOUT,
        )

    def ready() -> bool:
        assert proc.poll() is None, srv.log()[-3000:]
        try:
            return srv.api("GET", "/readyz", token=None, timeout=2.0).status == 200
        except OSError:
            return False

    wait_until(ready, 30, "imprint serve to be ready")
    return proc


def serve_fails(
    tp: Topology, srv: ImprintServer, *args: str, prefix: Sequence[str] = ()
) -> subprocess.CompletedProcess[str]:
    return tp.run(
        srv.node,
        [*prefix, *imprint_argv(), "serve", "--config", str(srv.config_path), *args],
        env=srv._env(),
        timeout=60,
    )


def test_full_mode_refuses_beside_another_dhcp_server_unless_told(tmp_path: Path) -> None:
    require_root_netns("kea-dhcp4")
    with (
        Topology(hosts=1) as tp,
        ImprintServer(tp, tp.server, tmp_path / "imprint", full_mode()) as srv,
    ):
        kea_host = tp.hosts[0]
        config = kea_dhcp4_config(
            tmp_path / "kea", kea_host.ifname, [kea_subnet(1, f"{LAN_PREFIX}.0/24", pool=KEA_POOL)]
        )
        with KeaDhcp4(tp, kea_host, tmp_path / "kea", config):
            refused = serve_fails(tp, srv)
            assert refused.returncode == 2, refused.stdout + refused.stderr
            message = refused.stderr
            assert f"another DHCP server answers on eth0: {kea_host.ip}" in message
            offered = re.search(rf"MAC {kea_host.mac}, offered ([0-9.]+)\)", message)
            assert offered is not None, message
            assert in_range(offered.group(1), KEA_POOL)
            assert "--no-dhcp-probe" in message and "mode = 'inform'" in message
            # Nothing was left bound: the refusal came before the DHCP socket.
            assert not tp.udp_port_bound(tp.server, 67)
            # Kea saw the probe as a client (a throwaway, locally administered MAC).
            probe_mac = re.search(r"hwtype=1 (02:00:00:[0-9a-f:]{8})", kea_log(tmp_path))
            assert probe_mac is not None, kea_log(tmp_path)[-2000:]

            proc = serve(tp, srv, "--no-dhcp-probe")
            assert tp.udp_port_bound(tp.server, 67)
            assert "no other DHCP server answered" not in srv.log()
            assert tp.stop(proc, timeout=10) == 0, srv.log()[-3000:]

        # Kea gone: full mode probes, hears nothing, and starts.
        proc = serve(tp, srv)
        assert "no other DHCP server answered on eth0" in srv.log()
        assert tp.stop(proc, timeout=10) == 0, srv.log()[-3000:]


def kea_log(tmp_path: Path) -> str:
    path = tmp_path / "kea" / "kea-dhcp4.log"
    return path.read_text() if path.exists() else ""


def unit_capabilities() -> list[str]:
    """AmbientCapabilities= of configs/imprint.service, e.g. ["net_bind_service", "net_raw"]."""
    caps: list[str] = []
    for line in (ROOT / "configs" / "imprint.service").read_text().splitlines():
        key, _, value = line.partition("=")
        if key.strip() == "AmbientCapabilities":
            caps += [c.lower().removeprefix("cap_") for c in value.split()]
    return caps


def effective_caps(pid: int) -> int:
    status = Path(f"/proc/{pid}/status").read_text()
    found = re.search(r"^CapEff:\s*([0-9a-f]+)$", status, re.M)
    assert found is not None, status
    return int(found.group(1), 16)


def test_the_units_capabilities_are_enough_for_full_mode_on_67_and_443(tmp_path: Path) -> None:
    """Only the unit's capabilities (bounding set), no new privileges: binds, probes, leases."""
    require_root_netns("udhcpc")
    setpriv = find_tool("setpriv")
    if setpriv is None:
        pytest.skip("setpriv (util-linux) not installed")
    caps = unit_capabilities()
    assert sorted(caps) == ["net_bind_service", "net_raw"]

    def only(*keep: str) -> list[str]:
        allowed = ",".join(f"+{c}" for c in keep)
        return [setpriv, "--no-new-privs", "--inh-caps=-all", f"--bounding-set=-all,{allowed}"]

    overrides = full_mode(port=443, public_url=f"https://{SERVER_IP}")
    with Topology(hosts=1) as tp, ImprintServer(tp, tp.server, tmp_path, overrides) as srv:
        h1 = tp.hosts[0]
        srv.create_tenant("acme")
        srv.add_device("acme", h1.mac)

        # Without CAP_NET_RAW the probe cannot run, and full mode says so instead of guessing.
        refused = serve_fails(tp, srv, prefix=only("net_bind_service"))
        assert refused.returncode == 2, refused.stdout + refused.stderr
        assert "CAP_NET_RAW" in refused.stderr and "--no-dhcp-probe" in refused.stderr

        proc = serve(tp, srv, prefix=only(*caps))
        assert effective_caps(proc.pid) == (1 << 10) | (1 << 13)  # nothing else
        assert tp.udp_port_bound(tp.server, 67)
        assert "no other DHCP server answered on eth0" in srv.log()
        lease = run_udhcpc(tp, h1, request=(1, 3)).lease
        assert lease is not None and lease["serverid"] == SERVER_IP
        assert in_range(lease["ip"], IMPRINT_POOL)
        assert tp.stop(proc, timeout=10) == 0, srv.log()[-3000:]
