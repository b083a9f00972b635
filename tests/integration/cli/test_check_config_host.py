"""`imprint check-config` checks this host too, says what it checked, and shows the profiles.

The real CLI as a subprocess, on real config files. Interfaces that exist on every Linux host
(`lo`) and names no host has (`imprint-none0`) keep the tests independent of the machine;
203.0.113.77 (TEST-NET-3, RFC 5737) is no host's address.
"""

from __future__ import annotations

import socket
import subprocess
from pathlib import Path

import pytest

from tests.helpers.proc import clean_env, free_port
from tests.helpers.server import imprint_argv

MISSING = "imprint-none0"  # 13 characters: a valid interface name no host has
NOT_HERE = "203.0.113.77"


def check(
    config: Path | None, *args: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    argv = [*imprint_argv(), "check-config", *args]
    if config is not None:
        argv += ["--config", str(config)]
    return subprocess.run(
        argv, capture_output=True, text=True, timeout=60, env=env or clean_env(), check=False
    )


def write(tmp_path: Path, body: str) -> Path:
    p = tmp_path / "imprint.toml"
    p.write_text(
        f'[store]\npath = "state/imprint.db"\n[tls]\nenabled = false\n'
        f'[http]\nhost = "127.0.0.1"\nport = {free_port()}\n' + body
    )
    return p


DHCP = 'enabled = true\nhost = "127.0.0.1"\nport = {port}\nserver_ip = "127.0.0.1"\n'


def dhcp(extra: str = "") -> str:
    return "[dhcp]\n" + DHCP.format(port=free_port(socket.SOCK_DGRAM)) + extra


# (case, TOML after [http], the key and the sentence the error must carry)
MISSING_CASES = [
    ("dhcp-interface", dhcp(f'interface = "{MISSING}"\n'), "dhcp.interface"),
    (
        "dhcp-link",
        '[dhcp]\nenabled = true\nhost = "127.0.0.1"\n'
        f'[[dhcp.links]]\ninterface = "lo"\nserver_ip = "127.0.0.1"\n'
        f'[[dhcp.links]]\ninterface = "{MISSING}"\nserver_ip = "127.0.0.2"\n',
        "dhcp.links.1.interface",
    ),
    (
        "mdns-interfaces",
        f'[mdns]\nenabled = true\ninterfaces = ["{MISSING}"]\n',
        "mdns.interfaces.0",
    ),
    ("mdns-interface", f'[mdns]\nenabled = true\ninterface = "{MISSING}"\n', "mdns.interface"),
]


@pytest.mark.parametrize(
    ("body", "key"), [c[1:] for c in MISSING_CASES], ids=[c[0] for c in MISSING_CASES]
)
def test_an_interface_this_host_lacks_is_refused_naming_the_key(
    tmp_path: Path, body: str, key: str
) -> None:
    done = check(write(tmp_path, body))
    assert done.returncode == 2, done.stdout
    assert f"{key}: there is no interface '{MISSING}' on this host" in done.stderr
    assert "lo" in done.stderr.split("its interfaces:")[1]  # what there is instead
    # The same file passes when the host is not asked (a config written for another host).
    done = check(write(tmp_path, body), "--no-host-checks")
    assert done.returncode == 0, done.stderr
    assert "this host was not checked (--no-host-checks)" in done.stdout


def test_an_interface_of_a_disabled_section_is_not_asked_for(tmp_path: Path) -> None:
    done = check(write(tmp_path, f'[dhcp]\nenabled = false\ninterface = "{MISSING}"\n'))
    assert done.returncode == 0, done.stderr


@pytest.mark.parametrize("key", ["http.host", "dhcp.host", "mdns.host"])
def test_a_listen_address_this_host_lacks_is_refused_naming_the_key(
    tmp_path: Path, key: str
) -> None:
    section = key.split(".")[0]
    udp = free_port(socket.SOCK_DGRAM)
    body = {
        "http": "",
        "dhcp": f'[dhcp]\nenabled = true\nserver_ip = "127.0.0.1"\nport = {udp}\n',
        "mdns": f"[mdns]\nenabled = true\nport = {udp}\n",
    }[section]
    p = write(tmp_path, body + (f'host = "{NOT_HERE}"\n' if body else ""))
    if section == "http":
        p.write_text(p.read_text().replace('host = "127.0.0.1"', f'host = "{NOT_HERE}"'))
    done = check(p)
    assert done.returncode == 2, done.stdout
    assert f"{key}: {NOT_HERE} is not an address of this host" in done.stderr
    assert "127.0.0.1" in done.stderr  # this host's addresses are named


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "127.0.0.1", "::1"])
def test_wildcard_and_loopback_listen_addresses_pass(tmp_path: Path, host: str) -> None:
    if ":" in host and not socket.has_ipv6:
        pytest.skip("no IPv6 here")
    p = write(tmp_path, "")
    p.write_text(p.read_text().replace('host = "127.0.0.1"', f'host = "{host}"'))
    done = check(p)
    assert done.returncode == 0, done.stderr
    assert f"this host has every interface and address named: {host} (http.host)" in done.stdout


def test_an_existing_interface_passes_and_is_named(tmp_path: Path) -> None:
    done = check(write(tmp_path, dhcp('interface = "lo"\n')))
    assert done.returncode == 0, done.stderr
    assert "lo (dhcp.interface)" in done.stdout


def test_it_says_which_file_it_checked(tmp_path: Path) -> None:
    p = write(tmp_path, "")
    done = check(p)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[0] == f"configuration OK: {p.resolve()}"
    done = check(p, env={**clean_env(), "IMPRINT_CODES__TTL_HOURS": "2"})
    assert done.stdout.splitlines()[0] == (
        f"configuration OK: {p.resolve()}, with IMPRINT_CODES__TTL_HOURS from the environment"
    )


def test_without_a_file_it_names_the_places_it_looked_instead_of_checking_defaults(
    tmp_path: Path,
) -> None:
    done = subprocess.run(
        [*imprint_argv(), "check-config"],
        capture_output=True,
        text=True,
        timeout=60,
        env=clean_env(),
        cwd=tmp_path,
        check=False,
    )
    assert done.returncode == 2, done.stderr
    assert "configuration OK" not in done.stdout
    for place in ("--config", "$IMPRINT_CONFIG", "/etc/imprint/imprint.toml"):
        assert place in done.stderr, done.stderr
    assert not list(tmp_path.iterdir()), "check-config wrote nothing"


PROFILE = """
[[dhcp.profiles]]
name = "acme"
match = "Acme-"
match_kind = "prefix"
options = [
  { code = 224, encoding = "text", value = "{url}" },
  { code = 43, encoding = "sub-options", value = { 1 = "{host}", 2 = "{port}" } },
  { code = 150, encoding = "ipv4-list", value = "{server_ip}, 192.0.2.9" },
]
"""


def test_profiles_shows_each_option_as_sent(tmp_path: Path) -> None:
    p = write(tmp_path, dhcp() + PROFILE)
    text = p.read_text()
    port = text.split("port = ")[1].split("\n")[0]  # [http] port, in the derived public URL
    url = f"http://127.0.0.1:{port}/provision"
    done = check(p, "--profiles")
    assert done.returncode == 0, done.stderr
    out = done.stdout
    assert "DHCP options sent per profile (server id 127.0.0.1):" in out
    block = out.split("profile acme (site; vendor class (option 60) starts with 'Acme-'):")[1]
    block = block.split("\nprofile ")[0]
    assert f"option 224 site-specific (RFC 3942) (text, {len(url)} octets)" in block
    assert f"hex:     {url.encode().hex(' ')}" in block
    assert f"decoded: {url!r}" in block
    sub = bytes([1, 9]) + b"127.0.0.1" + bytes([2, len(port)]) + port.encode()
    assert f"option 43 vendor-encapsulated-options (sub-options, {len(sub)} octets)" in block
    assert f"hex:     {sub.hex(' ')}" in block
    assert f"decoded: 1='127.0.0.1' 2='{port}'" in block
    assert "hex:     7f 00 00 01 c0 00 02 09" in block
    assert "decoded: 127.0.0.1, 192.0.2.9" in block
    # Then the built-ins, in the order they are tried; the generic default last.
    names = [ln.split()[1] for ln in out.splitlines() if ln.startswith("profile ")]
    assert names == [
        "acme",
        "ms-uc-client",
        "polycom",
        "yealink",
        "cisco-ip-phone",
        "onie",
        "sztp",
        "generic",
    ]
    # Without --profiles, none of it.
    assert "hex:" not in check(p).stdout


def test_profiles_without_the_builtins_and_with_dhcp_off(tmp_path: Path) -> None:
    p = write(tmp_path, "[dhcp]\nenabled = false\nbuiltin_profiles = false\n" + PROFILE)
    done = check(p, "--profiles")
    assert done.returncode == 0, done.stderr
    assert "DHCP is off; with it on, these options would be sent per profile" in done.stdout
    names = [ln.split()[1] for ln in done.stdout.splitlines() if ln.startswith("profile ")]
    assert names == ["acme"]
