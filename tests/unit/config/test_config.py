"""Settings: the file, environment overrides, and errors that name the key and the reason."""

from __future__ import annotations

from pathlib import Path

import pytest

from server.config import ConfigError, load_settings
from server.dhcp.pool import Subnet, subnets_from_tables
from server.dhcp.profiles import (
    VendorProfile,
    builtin_profiles,
    profile_from_mapping,
    profile_table,
    profiles_from_tables,
)


def write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "imprint.toml"
    p.write_text(text)
    return p


def test_defaults_without_a_file() -> None:
    s = load_settings(None)
    assert s.codes.ttl_hours == 24 and s.codes.max_attempts == 5
    assert s.tls.enabled is True and s.mdns.service == "_imprint._tcp"


def test_environment_overrides_the_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    p = write(tmp_path, "[http]\nport = 1234\nhost = '127.0.0.1'\n[codes]\nttl_hours = 2\n")
    monkeypatch.setenv("IMPRINT_HTTP__PORT", "9999")
    monkeypatch.setenv("IMPRINT_DHCP__MODE", "proxy")
    s = load_settings(p)
    assert s.http.port == 9999 and s.http.host == "127.0.0.1"
    assert s.dhcp.mode == "proxy" and s.codes.ttl_hours == 2


def test_relative_paths_are_relative_to_the_file(tmp_path: Path) -> None:
    s = load_settings(write(tmp_path, "[store]\npath = 'state/imprint.db'\n"))
    assert s.store.path == tmp_path / "state" / "imprint.db"
    assert s.codes_key_file == tmp_path / "state" / "imprint-codes.key"


@pytest.mark.parametrize(
    ("text", "fragments"),
    [
        ("[http]\nport = 'abc'\n", ["http.port", "valid integer", "'abc'"]),
        ("[http]\nprot = 1\n", ["http.prot", "unknown key"]),
        ("[bogus]\nx = 1\n", ["bogus", "unknown key"]),
        ("[dhcp]\nmode = 'relay'\n", ["dhcp.mode", "'inform', 'proxy' or 'full'"]),
        ("[dhcp]\nenabled = true\nmode = 'full'\n", ["dhcp", "[[dhcp.subnets]]"]),
        (
            "[[dhcp.subnets]]\nsubnet = '198.18.77.1/24'\n",
            ["dhcp.subnets.0.subnet", "not an IPv4 network"],
        ),
        (
            "[[dhcp.subnets]]\nsubnet = '198.18.77.0/24'\npool = '198.18.78.1-198.18.78.9'\n",
            ["inside 198.18.77.0/24"],
        ),
        ("[mdns]\nservice = '_averyveryverylongname._tcp'\n", ["mdns.service", "1-15 characters"]),
        ("[tls]\ncert_file = 'a.pem'\n", ["tls", "together"]),
        ("[codes]\nttl_hours = 0\n", ["codes.ttl_hours", "greater than 0"]),
    ],
)
def test_invalid_config_names_the_key_and_reason(
    tmp_path: Path, text: str, fragments: list[str]
) -> None:
    with pytest.raises(ConfigError) as exc:
        load_settings(write(tmp_path, text))
    for f in fragments:
        assert f in str(exc.value)


def test_missing_and_malformed_files(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        load_settings(tmp_path / "nope.toml")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_settings(write(tmp_path, "[http\n"))


def test_env_override_errors_name_the_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("IMPRINT_CODES__MAX_ATTEMPTS", "lots")
    with pytest.raises(ConfigError, match="codes.max_attempts"):
        load_settings(None)


def test_the_settings_hold_the_built_subnets_and_profiles(tmp_path: Path) -> None:
    s = load_settings(
        write(
            tmp_path,
            "[[dhcp.subnets]]\nsubnet = '198.18.77.0/24'\npool = '198.18.77.10-198.18.77.20'\n"
            "router = '198.18.77.1'\n"
            "[[dhcp.profiles]]\nname = 'acme'\nmatch = 'Acme'\n"
            "options = [{ code = 242, value = '{url}' }]\n",
        )
    )
    (subnet,) = s.dhcp.subnets
    assert isinstance(subnet, Subnet) and str(subnet.router) == "198.18.77.1"
    assert subnet.lease_time == 3600  # the one default, from server/dhcp/pool.py
    (profile,) = s.dhcp.profiles
    assert isinstance(profile, VendorProfile) and profile.name == "acme"
    # They dump back to their TOML tables, which build the same objects again.
    dumped = s.dhcp.model_dump(mode="json")
    assert subnets_from_tables(dumped["subnets"]) == s.dhcp.subnets
    assert profiles_from_tables(dumped["profiles"]) == s.dhcp.profiles


def test_every_builtin_profile_dumps_to_a_table_that_builds_it_again() -> None:
    for p in builtin_profiles():
        assert profile_from_mapping(profile_table(p)) == p


def test_subnets_from_the_environment_are_built_by_the_same_rules(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv(
        "IMPRINT_DHCP__SUBNETS",
        '[{"subnet": "198.18.77.0/24", "pool": "198.18.77.10-198.18.77.20", "router": "198.18.77.15"}]',
    )
    with pytest.raises(ConfigError) as exc:
        load_settings(None)
    assert "dhcp.subnets.0.router: 198.18.77.15 is inside the pool" in str(exc.value)
    monkeypatch.setenv(
        "IMPRINT_DHCP__SUBNETS",
        '[{"subnet": "198.18.77.0/24", "pool": "198.18.77.10-198.18.77.20"}]',
    )
    (subnet,) = load_settings(None).dhcp.subnets
    assert str(subnet.network) == "198.18.77.0/24"


def test_server_ip_must_be_an_ipv4_address(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"dhcp.server_ip: 'eth0' is not an IPv4 address"):
        load_settings(write(tmp_path, "[dhcp]\nserver_ip = 'eth0'\n"))


# -- [[dhcp.links]]: several links, each with its own mode and subnets ----------------------------

LINKS = """
[dhcp]
enabled = true

[[dhcp.links]]
interface = "eth0.100"
mode = "full"
server_ip = "10.100.0.1"
[[dhcp.links.subnets]]
subnet = "10.100.0.0/24"
pool = "10.100.0.100-10.100.0.199"

[[dhcp.links]]
interface = "eth0.200"
mode = "inform"
"""


def test_links_give_each_interface_its_mode_server_id_and_subnets(tmp_path: Path) -> None:
    s = load_settings(write(tmp_path, LINKS))
    full, inform = s.dhcp.served_links()
    assert (full.interface, full.mode, full.server_ip) == ("eth0.100", "full", "10.100.0.1")
    assert [str(sub.network) for sub in full.subnets] == ["10.100.0.0/24"]
    assert (inform.interface, inform.mode, inform.server_ip, inform.subnets) == (
        "eth0.200",
        "inform",
        None,
        (),
    )


def test_without_links_the_dhcp_keys_are_the_one_link(tmp_path: Path) -> None:
    s = load_settings(write(tmp_path, '[dhcp]\nenabled = true\ninterface = "eth1"\n'))
    (link,) = s.dhcp.served_links()
    assert (link.interface, link.mode, link.subnets) == ("eth1", "inform", ())


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        (
            LINKS.replace("enabled = true", 'enabled = true\nmode = "proxy"'),
            "mode and [[dhcp.links]]",
        ),
        (
            LINKS.replace("enabled = true", 'enabled = true\ninterface = "eth0"'),
            "interface and [[dhcp.links]] are both set",
        ),
        (
            LINKS.replace('interface = "eth0.200"', 'interface = "eth0.100"'),
            "interface 'eth0.100' is already links.0",
        ),
        (LINKS.replace('interface = "eth0.200"\n', ""), "links.1 needs an interface"),
        (
            LINKS.replace('mode = "inform"', 'mode = "full"'),
            "links.1 (eth0.200): mode = 'full' needs",
        ),
        (LINKS.replace('server_ip = "10.100.0.1"', 'server_ip = "x"'), "links.0.server_ip"),
        (LINKS.replace('mode = "inform"', 'colour = "red"'), "dhcp.links.1.colour: unknown key"),
        (
            LINKS
            + '[[dhcp.links]]\ninterface = "eth0.300"\nmode = "full"\n[[dhcp.links.subnets]]\n'
            'subnet = "10.100.0.0/25"\npool = "10.100.0.10-10.100.0.20"\n',
            "overlaps",
        ),
    ],
    ids=[
        "mode",
        "interface",
        "twice",
        "no-interface",
        "full-no-pool",
        "bad-ip",
        "unknown",
        "overlap",
    ],
)
def test_bad_links_are_refused_with_what_to_fix(tmp_path: Path, text: str, fragment: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_settings(write(tmp_path, text))
    assert fragment in str(info.value)


def test_store_url_takes_postgresql_only_and_says_what_to_set(tmp_path: Path) -> None:
    cfg = tmp_path / "imprint.toml"
    cfg.write_text("[store]\nurl = 'mysql://db/imprint'\n")
    with pytest.raises(ConfigError) as exc:
        load_settings(cfg)
    assert "store.url" in str(exc.value) and "postgresql://" in str(exc.value)
    for url in ("postgresql://imprint@db/imprint", "postgres:///imprint?host=/run/postgresql"):
        cfg.write_text(f"[store]\nurl = '{url}'\n")
        s = load_settings(cfg)
        assert s.store.url == url and s.store.backend == "postgresql"
    cfg.write_text("[store]\npath = 'x.db'\n")
    assert load_settings(cfg).store.url is None  # SQLite stays the default
