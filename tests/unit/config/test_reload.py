"""server/reload.py's pure half: which changed keys a SIGHUP applies live, which wait for a
restart, and the settings the server holds afterwards."""

from __future__ import annotations

from pathlib import Path

from server.config import Settings, load_settings
from server.reload import RELOADABLE, changed_keys, plan_reload

BASE = """
[http]
port = {port}
[codes]
max_attempts = {attempts}
[dhcp]
builtin_profiles = {builtins}
[[dhcp.profiles]]
name = "acme"
match = "Acme-Phone"
options = [{{ code = 242, value = "{template}" }}]
"""


def settings(tmp_path: Path, **kw: object) -> Settings:
    values = {"port": 8443, "attempts": 5, "builtins": "true", "template": "v1 {url}"} | kw
    path = tmp_path / f"imprint-{len(list(tmp_path.iterdir()))}.toml"
    path.write_text(BASE.format(**values))
    return load_settings(path)


def test_nothing_changed_plans_nothing(tmp_path: Path) -> None:
    a, b = settings(tmp_path), settings(tmp_path)
    plan = plan_reload(a, b)
    assert plan.live == () and plan.restart == ()
    assert not plan.profiles_changed and not plan.logging_changed


def test_live_keys_apply_and_the_rest_wait_for_a_restart(tmp_path: Path) -> None:
    old = settings(tmp_path)
    new = settings(tmp_path, port=9000, attempts=3, template="v2 {url}")
    # A profile list counts as one key, whatever changed inside it.
    assert changed_keys(old, new) == [
        "codes.max_attempts",
        "config_file",
        "dhcp.profiles",
        "http.port",
    ]
    plan = plan_reload(old, new)
    assert plan.live == ("codes.max_attempts", "dhcp.profiles")
    assert set(plan.live) <= RELOADABLE
    assert plan.restart == ("http.port",)  # the file's own name is not a setting to restart for
    assert plan.profiles_changed and not plan.logging_changed
    # The running server keeps its listener but takes the new profiles and code policy.
    after = plan.settings
    assert after.http.port == 8443 and after.config_file == old.config_file
    assert after.codes.max_attempts == 3
    assert after.dhcp.profiles is new.dhcp.profiles
    assert after.dhcp.profiles[0].options[0].values == ("v2 {url}",)


def test_turning_the_builtins_off_is_a_profile_change(tmp_path: Path) -> None:
    plan = plan_reload(settings(tmp_path), settings(tmp_path, builtins="false"))
    assert plan.live == ("dhcp.builtin_profiles",) and plan.profiles_changed
    assert plan.settings.dhcp.builtin_profiles is False
