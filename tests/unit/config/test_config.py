"""Settings: the file, environment overrides, and errors that name the key and the reason."""

from __future__ import annotations

from pathlib import Path

import pytest

from server.config import ConfigError, load_settings


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
