"""configs/imprint.service: systemd accepts it, and it grants what the server needs and no more.

`systemd-analyze verify` checks every directive name and value (an unknown or misspelt hardening
key is only a warning at boot, so it would otherwise go unnoticed). That the two capabilities
are enough for full mode on ports 67 and 443 is proven by running the server with only them, in
tests/e2e/test_rogue_dhcp_netns.py.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from server.config import load_settings

ROOT = Path(__file__).resolve().parents[3]
UNIT = ROOT / "configs" / "imprint.service"


def directives() -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for line in UNIT.read_text().splitlines():
        if not line.strip() or line.startswith(("#", "[")):
            continue
        key, _, value = line.partition("=")
        out.setdefault(key.strip(), []).append(value.strip())
    return out


def test_unit_is_least_privilege_and_matches_the_site_configs() -> None:
    d = directives()
    caps = d["AmbientCapabilities"][0].split()
    assert sorted(caps) == ["CAP_NET_BIND_SERVICE", "CAP_NET_RAW"]
    assert sorted(d["CapabilityBoundingSet"][0].split()) == sorted(caps)
    assert d["NoNewPrivileges"] == ["yes"] and d["ProtectSystem"] == ["strict"]
    assert d["User"] == ["imprint"] and d["ExecReload"] == ["/bin/kill -HUP $MAINPID"]
    assert d["RestartPreventExitStatus"] == ["2"]  # configuration errors do not loop
    # The examples keep their state where StateDirectory= makes it writable, and the unit
    # reads the config from ConfigurationDirectory=.
    state = Path("/var/lib") / d["StateDirectory"][0]
    for name in ("site-inform.toml", "site-full.toml"):
        assert load_settings(ROOT / "configs" / name).state_dir == state
    exec_start = d["ExecStart"][0].split()
    config = Path(exec_start[exec_start.index("--config") + 1])
    assert config.parent == Path("/etc") / d["ConfigurationDirectory"][0]


def test_systemd_analyze_verify_accepts_the_unit(tmp_path: Path) -> None:
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze not installed")
    imprint = Path(sys.executable).with_name("imprint")
    if not imprint.exists():
        pytest.skip(f"no installed `imprint` script beside {sys.executable}")
    # verify checks that ExecStart's program exists: point it at this environment's script.
    unit = tmp_path / "imprint.service"
    unit.write_text(UNIT.read_text().replace("/opt/imprint/bin/imprint", str(imprint)))
    done = subprocess.run(
        [analyze, "verify", str(unit)], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.strip() == "" and done.stderr.strip() == "", done.stdout + done.stderr
