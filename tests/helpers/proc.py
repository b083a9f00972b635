"""The real `imprint` as a subprocess, and loopback ports for it: what the ops, CLI and
end-to-end tests share instead of each writing its own."""

from __future__ import annotations

import http.client
import os
import socket
import subprocess
from pathlib import Path

from tests.helpers.server import imprint_argv, wait_until


def free_port(kind: int = socket.SOCK_STREAM) -> int:
    """A loopback port that was free a moment ago (TCP by default, SOCK_DGRAM for UDP)."""
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def clean_env() -> dict[str, str]:
    """This process's environment without IMPRINT_* overrides, so only the config file counts."""
    return {k: v for k, v in os.environ.items() if not k.startswith("IMPRINT_")}


def run_imprint(
    config: Path, *args: str, check: bool = True, stdin: str | None = None, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    """`imprint ARGS --config CONFIG`; with `check`, a non-zero exit fails the test with output."""
    done = subprocess.run(
        [*imprint_argv(), *args, "--config", str(config)],
        capture_output=True,
        text=True,
        input=stdin,
        timeout=timeout,
        env=clean_env(),
    )
    if check:
        assert done.returncode == 0, done.stdout + done.stderr
    return done


def serve(config: Path, log: Path) -> subprocess.Popen[str]:
    """`imprint serve --config CONFIG` in the background, its output appended to `log`."""
    with open(log, "a") as out:
        return subprocess.Popen(
            [*imprint_argv(), "serve", "--config", str(config)],
            stdout=out,
            stderr=subprocess.STDOUT,
            env=clean_env(),
            text=True,
        )


def wait_ready(proc: subprocess.Popen[str], port: int, log: Path, within: float = 30) -> None:
    """Until plain-HTTP /readyz on loopback `port` says 200; a server that exits fails the test
    with its log."""

    def ready() -> bool:
        assert proc.poll() is None, log.read_text()
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
        try:
            conn.request("GET", "/readyz")
            return conn.getresponse().status == 200
        except OSError:
            return False
        finally:
            conn.close()

    wait_until(ready, within, "imprint serve to be ready")
