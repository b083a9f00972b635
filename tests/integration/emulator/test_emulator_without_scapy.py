"""`imprint-device` where scapy cannot be imported, as after `pip install imprint` (no extras).

scapy is made unimportable for a real child process by a `sitecustomize` on its PYTHONPATH that
puts None in `sys.modules["scapy"]` (the import system then refuses it with
ModuleNotFoundError, as when it is not installed). The console script must then say in one line
which extra to install and exit 1 (an environment error), not end in a traceback. The wheel
check (scripts/check-wheel) runs the same command in a virtualenv where scapy is really absent.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from device_emulator.__main__ import EXIT_ENVIRONMENT, NEEDS_SCAPY
from tests.helpers.server import emulator_argv

ROOT = Path(__file__).resolve().parents[3]
DHCP_ARGS = ["dhcp", "inform", "--server", "127.0.0.1:9", "--mac", "02:00:00:00:00:01"]


def run_blocking(
    tmp_path: Path, module: str | None, argv: list[str]
) -> subprocess.CompletedProcess[str]:
    """Run `argv` with `module` (and its submodules) unimportable; None blocks nothing."""
    site = tmp_path / "site"
    site.mkdir(exist_ok=True)
    lines = ["import sys"]
    if module is not None:
        lines.append(f"sys.modules[{module!r}] = None")
    (site / "sitecustomize.py").write_text("\n".join(lines) + "\n")
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(site), str(ROOT)])
    env.pop("PYTHONSTARTUP", None)
    return subprocess.run(
        argv, capture_output=True, text=True, timeout=60, env=env, cwd=tmp_path, check=False
    )


@pytest.mark.parametrize(
    "args", [["--help"], DHCP_ARGS, ["run", "--mac", "02:00:00:00:00:01"]], ids=str
)
def test_console_script_names_the_extra_when_scapy_is_missing(
    tmp_path: Path, args: list[str]
) -> None:
    done = run_blocking(tmp_path, "scapy", [*emulator_argv(), *args])
    assert done.returncode == EXIT_ENVIRONMENT == 1
    assert done.stderr == NEEDS_SCAPY + "\n"
    assert "pip install 'imprint[emulator]'" in done.stderr
    assert done.stdout == ""


def test_python_m_device_emulator_names_the_extra_too(tmp_path: Path) -> None:
    done = run_blocking(tmp_path, "scapy", [sys.executable, "-m", "device_emulator", "--help"])
    assert (done.returncode, done.stderr, done.stdout) == (1, NEEDS_SCAPY + "\n", "")


def test_with_scapy_importable_the_same_command_runs(tmp_path: Path) -> None:
    # The control: the same child, with the sitecustomize blocking nothing, shows its help.
    done = run_blocking(tmp_path, None, [*emulator_argv(), "--help"])
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("usage: imprint-device")
    assert "scapy" not in done.stderr


def test_another_missing_module_is_not_blamed_on_scapy(tmp_path: Path) -> None:
    # dnslib is a server dependency: if it were missing the install is broken, and saying
    # "install the emulator extra" would send the user the wrong way; the error stays visible.
    done = run_blocking(tmp_path, "dnslib", [*emulator_argv(), "--help"])
    assert done.returncode != 0
    assert "ModuleNotFoundError" in done.stderr
    assert "dnslib" in done.stderr
    assert NEEDS_SCAPY not in done.stderr
