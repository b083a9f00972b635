"""`[mdns]` links: the old single `interface` key and the `interfaces` list."""

from __future__ import annotations

from pathlib import Path

import pytest

from server.config import ConfigError, load_settings


def load(tmp_path: Path, text: str):  # type: ignore[no-untyped-def]
    p = tmp_path / "imprint.toml"
    p.write_text(text)
    return load_settings(p).mdns


def test_single_interface_key_still_works_and_is_the_one_link(tmp_path: Path) -> None:
    m = load(tmp_path, "[mdns]\ninterface = 'eth0'\n")
    assert m.links == ["eth0"]


def test_interfaces_list_names_every_link(tmp_path: Path) -> None:
    m = load(tmp_path, "[mdns]\ninterfaces = ['eth0.100', 'eth0.200']\n")
    assert m.links == ["eth0.100", "eth0.200"]
    assert load(tmp_path, "[mdns]\ninterface = 'eth1'\ninterfaces = ['eth1']\n").links == ["eth1"]


def test_no_interface_means_no_list(tmp_path: Path) -> None:
    m = load(tmp_path, "[mdns]\nenabled = true\n")
    assert m.links == []
    assert (m.ipv6, m.capture_frames, m.announce) == (True, True, False)


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("[mdns]\ninterface = 'eth0'\ninterfaces = ['eth1']\n", "keep only interfaces"),
        ("[mdns]\ninterfaces = ['eth0', 'eth0']\n", "twice"),
        ("[mdns]\ninterfaces = ['']\n", "empty"),
        ("[mdns]\ninterfaces = ['lo', 'eth0']\n", "lab mode"),
    ],
)
def test_bad_interface_settings_name_the_key(tmp_path: Path, text: str, fragment: str) -> None:
    with pytest.raises(ConfigError) as err:
        load(tmp_path, text)
    assert "mdns" in str(err.value) and fragment in str(err.value)
