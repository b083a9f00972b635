"""`imprint check-config` and `imprint serve` build the DHCP subnets and vendor profiles with one
set of rules, so one accepts exactly what the other accepts.

Both commands run for real (the `imprint` console script, as subprocesses): every example config
under configs/ passes check-config, which reports the subnets and profiles it built; a set of bad
configs (this host's missing interfaces and addresses among them) is refused by check-config and
by serve with the same message, naming the key to fix.
"""

from __future__ import annotations

import os
import socket
import subprocess
import time
import tomllib
from pathlib import Path
from typing import Any

import pytest

from server.config import load_settings
from server.dhcp.pool import Subnet
from server.dhcp.profiles import BUILTIN_PROFILE_DATA, VendorProfile
from server.hostcheck import configured_interfaces, interface_names
from tests.helpers.server import imprint_argv

ROOT = Path(__file__).resolve().parents[3]
EXAMPLES = sorted((ROOT / "configs").glob("*.toml"))
SERVE_TIMEOUT = 60  # a bad config is refused within seconds; this long means serve accepted it


def env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("IMPRINT_")}


def imprint(config: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*imprint_argv(), *args, "--config", str(config)],
        capture_output=True,
        text=True,
        timeout=60,
        env=env(),
        check=False,
    )


def free_port(kind: int) -> int:
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def error_block(stderr: str) -> str:
    """The error the command printed: from the first `error: ` line to the end."""
    lines = stderr.splitlines()
    for i, line in enumerate(lines):
        if line.startswith("error: "):
            return "\n".join(lines[i:])
    raise AssertionError(f"no 'error:' line in:\n{stderr}")


# -- every example config -----------------------------------------------------------------------


@pytest.mark.parametrize("path", EXAMPLES, ids=[p.name for p in EXAMPLES])
def test_every_example_config_passes_and_reports_what_it_built(path: Path) -> None:
    raw = tomllib.loads(path.read_text())
    dhcp: dict[str, Any] = raw.get("dhcp", {})
    settings = load_settings(path)
    # The settings hold the built domain objects, one per table of the file, in file order.
    assert len(settings.dhcp.subnets) == len(dhcp.get("subnets", []))
    for table, subnet in zip(dhcp.get("subnets", []), settings.dhcp.subnets, strict=True):
        assert isinstance(subnet, Subnet)
        assert str(subnet.network) == table["subnet"]
        assert f"{subnet.pool_first}-{subnet.pool_last}" == table["pool"]
    assert all(isinstance(p, VendorProfile) for p in settings.dhcp.profiles)

    # The examples are written for a site's host (eth1, eth0.100, ...): the file alone is checked
    # here, and on this host only where it has those interfaces.
    done = imprint(path, "check-config", "--no-host-checks")
    assert done.returncode == 0, done.stderr
    assert "configuration OK" in done.stdout
    here = imprint(path, "check-config")
    missing = [(k, n) for k, n in configured_interfaces(settings) if n not in interface_names()]
    if missing:
        assert here.returncode == 2, here.stdout
        for key, name in missing:
            assert f"{key}: there is no interface {name!r} on this host" in here.stderr
    else:
        assert here.returncode == 0, here.stderr
    if not settings.dhcp.enabled:
        return
    for table in dhcp.get("subnets", []):
        assert f"DHCP subnet {table['subnet']}: pool {table['pool']}" in done.stdout
    names = [p["name"] for p in dhcp.get("profiles", [])]
    if dhcp.get("builtin_profiles", True):
        names += [str(p["name"]) for p in BUILTIN_PROFILE_DATA]
    assert f"DHCP profiles (tried in order): {', '.join(names)}" in done.stdout


# -- bad configs ----------------------------------------------------------------------------------

SUBNET = """
[[dhcp.subnets]]
subnet = "198.18.77.0/24"
pool = "198.18.77.100-198.18.77.200"
router = "198.18.77.1"
dns = ["198.18.77.1"]
"""

PROFILE = """
[[dhcp.profiles]]
name = "acme"
match = "Acme-Phone"
options = [{ code = 242, encoding = "text", value = "{url}" }]
"""


def subnet(**changes: str) -> str:
    text = SUBNET
    for key, value in changes.items():
        lines = [ln for ln in text.splitlines() if not ln.startswith(f"{key} =")]
        text = "\n".join(lines) + (f"\n{key} = {value}\n" if value else "\n")
    return text


def profile(options: str, name: str = "acme") -> str:
    return (
        SUBNET
        + f"""
[[dhcp.profiles]]
name = "{name}"
match = "Acme-Phone"
options = [{options}]
"""
    )


NO_SERVER_IP = "# (no server_ip)\n"  # config_text leaves [dhcp] server_ip out

# (case id, extra TOML after the [dhcp] table, text the message must contain)
BAD: list[tuple[str, str, str]] = [
    ("pool-outside-subnet", subnet(pool='"198.18.78.10-198.18.78.20"'), "dhcp.subnets.0.pool"),
    ("pool-reversed", subnet(pool='"198.18.77.200-198.18.77.100"'), "ascending"),
    ("pool-holds-network", subnet(pool='"198.18.77.0-198.18.77.10"'), "network or broadcast"),
    ("pool-holds-broadcast", subnet(pool='"198.18.77.250-198.18.77.255"'), "network or broadcast"),
    ("pool-not-a-range", subnet(pool='"198.18.77.100"'), "'first-last'"),
    ("pool-missing", subnet(pool=""), "dhcp.subnets.0.pool"),
    ("pool-bad-address", subnet(pool='"198.18.77.100-198.18.77.300"'), "dhcp.subnets.0.pool"),
    ("router-in-pool", subnet(router='"198.18.77.150"'), "dhcp.subnets.0.router"),
    ("router-outside-subnet", subnet(router='"10.0.0.1"'), "dhcp.subnets.0.router"),
    ("router-not-an-address", subnet(router='"198.18.77.300"'), "dhcp.subnets.0.router"),
    ("dns-in-pool", subnet(dns='["198.18.77.120"]'), "dhcp.subnets.0.dns"),
    ("dns-not-a-list", subnet(dns='"198.18.77.1"'), "dhcp.subnets.0.dns"),
    ("dns-not-an-address", subnet(dns='["dns.example"]'), "dhcp.subnets.0.dns"),
    ("lease-too-short", subnet(lease_time="30"), "dhcp.subnets.0.lease_time"),
    ("subnet-not-a-network", subnet(subnet='"198.18.77.1/24"'), "dhcp.subnets.0.subnet"),
    ("subnet-unknown-key", subnet(colour='"red"'), "dhcp.subnets.0: unknown key 'colour'"),
    ("duplicate-subnets", SUBNET + SUBNET, "dhcp.subnets.1.subnet"),
    (
        "overlapping-subnets",
        SUBNET + subnet(subnet='"198.18.0.0/16"', pool='"198.18.1.10-198.18.1.20"'),
        "dhcp.subnets.1.subnet",
    ),
    (
        "server-ip-in-pool",
        subnet(pool='"198.18.77.1-198.18.77.200"', router="", dns='["198.18.77.250"]'),
        "dhcp.subnets.0.pool",
    ),
    ("profile-reserved-code", profile('{ code = 53, value = "{url}" }'), "options[0].code"),
    ("profile-bad-placeholder", profile('{ code = 242, value = "{secret}" }'), "{secret}"),
    ("profile-bad-encoding", profile('{ code = 242, encoding = "txt", value = "x" }'), "encoding"),
    (
        "profile-duplicate-option",
        profile('{ code = 242, value = "a" }, { code = 242, value = "b" }'),
        "given twice",
    ),
    ("profile-duplicate-name", SUBNET + PROFILE + PROFILE, "dhcp.profiles[acme]"),
    # Neither [dhcp] server_ip nor an interface to take it from: refused on any host.
    ("no-server-address", NO_SERVER_IP + SUBNET, "dhcp.server_ip: not set"),
    # This host's state: an interface it does not have, an address that is not its own.
    (
        "no-such-interface",
        'interface = "imprint-none0"\n' + SUBNET,
        "dhcp.interface: there is no interface 'imprint-none0' on this host",
    ),
    (
        "listen-address-not-here",
        SUBNET + '\n[mdns]\nenabled = true\nhost = "203.0.113.77"\n',
        "mdns.host: 203.0.113.77 is not an address of this host",
    ),
    # Render-time: the public URL's host is a name, which an ipv4-list option cannot carry.
    (
        "profile-cannot-render",
        profile('{ code = 150, encoding = "ipv4-list", value = "{host}" }'),
        "dhcp.profiles[acme].option 150",
    ),
]


def config_text(tmp_path: Path, extra: str) -> str:
    http_port = free_port(socket.SOCK_STREAM)
    server_ip = "" if NO_SERVER_IP in extra else 'server_ip = "198.18.77.1"'
    return f"""
[store]
path = "{tmp_path / "state" / "imprint.db"}"

[http]
host = "127.0.0.1"
port = {http_port}
public_url = "http://imprint.test:{http_port}"

[tls]
enabled = false

[dhcp]
enabled = true
mode = "full"
host = "127.0.0.1"
port = {free_port(socket.SOCK_DGRAM)}
{server_ip}
probe_other_servers = false
{extra}
"""


def test_the_good_base_config_is_accepted_by_both(tmp_path: Path) -> None:
    """The bad configs below differ from this one only in what they break."""
    path = tmp_path / "imprint.toml"
    path.write_text(config_text(tmp_path, SUBNET + PROFILE))
    done = imprint(path, "check-config")
    assert done.returncode == 0, done.stderr
    assert "DHCP subnet 198.18.77.0/24: pool 198.18.77.100-198.18.77.200" in done.stdout
    proc = subprocess.Popen(
        [*imprint_argv(), "serve", "--config", str(path)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env(),
    )
    try:
        port = load_settings(path).http.port
        deadline = time.monotonic() + SERVE_TIMEOUT
        while time.monotonic() < deadline and proc.poll() is None:
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", port)) == 0:
                    break
            time.sleep(0.1)
        assert proc.poll() is None, proc.communicate()[0]
    finally:
        proc.terminate()
        out, _ = proc.communicate(30)
    assert proc.returncode == 0, out
    assert "DHCP responder (full mode)" in out


@pytest.mark.parametrize(("extra", "fragment"), [b[1:] for b in BAD], ids=[b[0] for b in BAD])
def test_a_bad_config_is_refused_by_check_config_and_serve_alike(
    tmp_path: Path, extra: str, fragment: str
) -> None:
    path = tmp_path / "imprint.toml"
    path.write_text(config_text(tmp_path, extra))
    argv = [*imprint_argv(), "--config", str(path)]
    check = subprocess.Popen(
        [*argv[:-2], "check-config", *argv[-2:]],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env(),
    )
    serve = subprocess.Popen(
        [*argv[:-2], "serve", *argv[-2:]],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env(),
    )
    try:
        check_out, check_err = check.communicate(timeout=60)
        try:
            _, serve_err = serve.communicate(timeout=SERVE_TIMEOUT)
        except subprocess.TimeoutExpired:
            raise AssertionError(
                f"imprint serve accepted the config check-config "
                f"{'refused' if check.returncode else 'accepted'}:\n{extra}"
            ) from None
    finally:
        for p in (check, serve):
            if p.poll() is None:
                p.kill()
                p.communicate()
    assert check.returncode == 2, f"check-config accepted it:\n{check_out}"
    assert serve.returncode == 2, serve_err
    message = error_block(check_err)
    assert fragment in message
    assert error_block(serve_err) == message
