"""The Dockerfile's steps, run without a Docker engine.

No Docker daemon runs here, so the build is replayed where it can be: the files its COPY lines
name go into a scratch "container root", its pip RUN line runs there in a fresh virtualenv (with
the container paths mapped into the scratch root), and the result must work on its own: the
source tree is gone, `imprint --version` and `check-config` run, `imprint serve` serves, and the
image's HEALTHCHECK command answers 0 against it (and non-zero once it is stopped). The file
capability RUN line is run on a copy of a Python interpreter and checked with getcap and by
binding UDP 67 as an unprivileged user.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import stat
import subprocess
import tempfile
import time
import venv
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from server import __version__
from tests.helpers.proc import free_port

ROOT = Path(__file__).resolve().parents[3]
NETWORK_TROUBLE = (
    "NewConnectionError",
    "Failed to establish a new connection",
    "Temporary failure in name resolution",
    "Network is unreachable",
    "No matching distribution found",
    "ProxyError",
    "SSLError",
    "ConnectTimeoutError",
)


@dataclass(frozen=True)
class Instruction:
    keyword: str
    args: str


def dockerfile() -> list[Instruction]:
    """The Dockerfile's instructions, with continuation lines joined and comments dropped."""
    out: list[Instruction] = []
    pending = ""
    for line in (ROOT / "Dockerfile").read_text().splitlines():
        if not pending and (not line.strip() or line.lstrip().startswith("#")):
            continue
        if line.rstrip().endswith("\\"):
            pending += line.rstrip()[:-1] + " "
            continue
        full = (pending + line).strip()
        pending = ""
        keyword, _, args = full.partition(" ")
        out.append(Instruction(keyword.upper(), args.strip()))
    return out


def exec_form(args: str) -> list[str]:
    """A JSON exec-form argument list (CMD ["a", "b"]), as Docker reads it."""
    value = json.loads(args)
    assert isinstance(value, list) and all(isinstance(v, str) for v in value), args
    return value


def map_paths(command: str, mapping: dict[str, Path]) -> str:
    """Container absolute paths in `command` -> their scratch copies; refuses leftovers."""
    for container, local in sorted(mapping.items(), key=lambda kv: -len(kv[0])):
        command = re.sub(rf"(?<![\w/.-]){re.escape(container)}(?=[\s/;&|]|$)", str(local), command)
    for container in mapping:
        assert not re.search(rf"(?<![\w/.-]){re.escape(container)}(?=[\s/;&|]|$)", command)
    return command


def test_dockerfile_shape_small_non_root_health_checked() -> None:
    steps = dockerfile()
    froms = [s.args for s in steps if s.keyword == "FROM"]
    assert froms == ["python:3.11-slim"]
    runs = " ".join(s.args for s in steps if s.keyword == "RUN")
    assert "--no-cache-dir" in runs
    for tool in ("apt-get", "gcc", "build-essential", "scapy"):
        assert tool not in runs, f"the image should not install {tool}"
    users = [s.args for s in steps if s.keyword == "USER"]
    assert users and users[-1] not in ("root", "0"), "the image must end as a non-root user"
    health = [s.args for s in steps if s.keyword == "HEALTHCHECK"]
    assert len(health) == 1 and "CMD [" in health[0]
    cmd = exec_form([s.args for s in steps if s.keyword == "CMD"][-1])
    assert cmd[:2] == ["imprint", "serve"]
    config = cmd[cmd.index("--config") + 1]
    copies = [s.args.split() for s in steps if s.keyword == "COPY"]
    assert any(c[-1] == config and (ROOT / c[0]).is_file() for c in copies), config
    exposed = " ".join(s.args for s in steps if s.keyword == "EXPOSE").split()
    assert {"67/udp", "5353/udp"} <= set(exposed)
    compose = (ROOT / "configs" / "docker-compose.yml").read_text()
    assert re.search(r"^\s*network_mode:\s*host\s*$", compose, re.M)
    assert "NET_BIND_SERVICE" in compose and "NET_RAW" in compose


@dataclass
class Built:
    venv: Path
    root: Path  # the scratch container root

    def bin(self, name: str) -> Path:
        return self.venv / "bin" / name

    def run(self, *argv: str | Path, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(a) for a in argv], capture_output=True, text=True, timeout=timeout, env=_env()
        )


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("IMPRINT_", "PYTHON"))}
    env["PIP_DISABLE_PIP_VERSION_CHECK"] = "1"
    return env


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Built]:
    """Replay the Dockerfile's COPY and pip RUN lines in a scratch root and a clean venv."""
    base = tmp_path_factory.mktemp("docker")
    root = base / "root"
    env_dir = base / "venv"
    venv.EnvBuilder(with_pip=True, clear=True).create(env_dir)
    mapping: dict[str, Path] = {}
    workdir = Path("/")
    ran = 0
    for step in dockerfile():
        if step.keyword == "WORKDIR":
            workdir = workdir / step.args
            mapping[str(workdir)] = root / workdir.relative_to("/")
            mapping[str(workdir)].mkdir(parents=True, exist_ok=True)
        elif step.keyword == "COPY" and ran == 0:
            *sources, dest = step.args.split()
            target = root / (workdir / dest).relative_to("/")
            for src in sources:
                path = ROOT / src
                if path.is_dir():  # Docker copies a directory's contents into the target
                    shutil.copytree(path, target, ignore=shutil.ignore_patterns("__pycache__"))
                    continue
                into = target / path.name if dest.endswith("/") or len(sources) > 1 else target
                into.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(path, into)
        elif step.keyword == "RUN" and "pip install" in step.args:
            command = map_paths(step.args, mapping)
            done = subprocess.run(
                ["sh", "-c", command],
                cwd=mapping[str(workdir)],
                capture_output=True,
                text=True,
                timeout=900,
                env={**_env(), "PATH": f"{env_dir / 'bin'}{os.pathsep}{os.environ['PATH']}"},
            )
            output = done.stdout + done.stderr
            if done.returncode != 0 and any(t in output for t in NETWORK_TROUBLE):
                pytest.skip(f"pip cannot reach a package index here: {output[-600:]}")
            assert done.returncode == 0, output[-4000:]
            ran += 1
    assert ran == 1, "expected exactly one `pip install` RUN line in the Dockerfile"
    yield Built(env_dir, root)


def test_installed_server_runs_without_the_source_tree(built: Built) -> None:
    assert not (built.root / "src").exists(), "the RUN line removes the build context"
    done = built.run(built.bin("imprint"), "--version")
    assert (done.returncode, done.stdout.strip()) == (0, f"imprint {__version__}")
    done = built.run(
        built.bin("imprint"),
        "check-config",
        "--no-host-checks",  # the example names the site host's eth0
        "--config",
        ROOT / "configs" / "site-inform.toml",
    )
    assert done.returncode == 0 and "configuration OK" in done.stdout, done.stderr
    # The server only: scapy (GPL-2.0-only) stays out of the image.
    done = built.run(built.bin("python"), "-c", "import scapy")
    assert done.returncode != 0 and "No module named 'scapy'" in done.stderr


def test_installed_server_serves_and_the_healthcheck_follows_it(
    built: Built, tmp_path: Path
) -> None:
    """The installed package carries its migrations, templates and static files, and the
    HEALTHCHECK command (run exactly, with this venv's python) accepts the self-signed TLS."""
    steps = dockerfile()
    health = next(s.args for s in steps if s.keyword == "HEALTHCHECK")
    argv = exec_form(health[health.index("CMD") + 3 :].strip())
    assert argv[0] == "python"
    port = free_port()
    config = tmp_path / "imprint.toml"
    config.write_text(
        f'[store]\npath = "state/imprint.db"\n[http]\nhost = "127.0.0.1"\nport = {port}\n'
        "[tls]\nenabled = true\n"
    )
    # The image's ENV applies to the server too (it must not read them as settings), with the
    # health URL pointed at this test's port.
    image_env = dict(
        pair.split("=", 1) for s in steps if s.keyword == "ENV" for pair in shlex.split(s.args)
    )
    assert "IMPRINT_HEALTH_URL" in image_env
    env = {**_env(), **image_env, "IMPRINT_HEALTH_URL": f"https://127.0.0.1:{port}/healthz"}
    check = [str(built.bin("python")), *argv[1:]]
    log = tmp_path / "serve.log"
    with open(log, "w") as out:
        proc = subprocess.Popen(
            [built.bin("imprint"), "serve", "--config", config],
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
        )
    try:
        deadline = time.monotonic() + 60
        while True:
            assert proc.poll() is None, log.read_text()
            done = subprocess.run(check, capture_output=True, text=True, timeout=30, env=env)
            if done.returncode == 0:
                break
            assert time.monotonic() < deadline, done.stderr + log.read_text()
            time.sleep(0.2)
        proc.terminate()
        assert proc.wait(30) == 0, log.read_text()
        down = subprocess.run(check, capture_output=True, text=True, timeout=30, env=env)
        assert down.returncode != 0 and "Connection refused" in down.stderr
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)


# -- the file-capability step -----------------------------------------------------------------


@pytest.fixture
def world_readable_dir() -> Iterator[Path]:
    """A scratch directory an unprivileged user can enter (pytest's tmp_path is 0700)."""
    path = Path(tempfile.mkdtemp(prefix="imp-caps-"))
    path.chmod(0o755)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


PRIVILEGED_WORK = (
    "import socket\n"
    "s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n"
    "s.bind(('127.0.0.1', 67))\n"
    "socket.socket(socket.AF_PACKET, socket.SOCK_DGRAM).close()\n"
    "print('bound 67 and opened a packet socket')\n"
)


def test_capability_step_lets_an_unprivileged_user_bind_67_and_probe(
    world_readable_dir: Path,
) -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root (setting file capabilities, switching user)")
    tools = {t: shutil.which(t) for t in ("setpriv", "unshare", "getcap")}
    if None in tools.values():
        pytest.skip(f"needs setpriv, unshare and getcap (util-linux, libcap2-bin): {tools}")
    system_python = Path("/usr/bin/python3")
    if not system_python.exists():
        pytest.skip("needs a system /usr/bin/python3 an unprivileged user can run")
    step = next(s.args for s in dockerfile() if s.keyword == "RUN" and "setxattr" in s.args)
    words = shlex.split(step)
    assert words[0] == "python", step
    plain = world_readable_dir / "plain-python"
    capped = world_readable_dir / "capped-python"
    for copy in (plain, capped):
        shutil.copy2(system_python.resolve(), copy)
        copy.chmod(stat.S_IRWXU | stat.S_IRGRP | stat.S_IXGRP | stat.S_IROTH | stat.S_IXOTH)
    done = subprocess.run([str(capped), *words[1:]], capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, done.stderr
    getcap = subprocess.run(
        [str(tools["getcap"]), str(capped)], capture_output=True, text=True, timeout=30
    )
    assert getcap.stdout.split()[-1] == "cap_net_bind_service,cap_net_raw=ep", getcap.stdout

    def as_nobody(python: Path) -> subprocess.CompletedProcess[str]:
        # A fresh network namespace: binding 67 there touches nothing on this machine.
        return subprocess.run(
            [
                str(tools["unshare"]),
                "--net",
                str(tools["setpriv"]),
                "--reuid=65534",
                "--regid=65534",
                "--clear-groups",
                "--inh-caps=-all",
                str(python),
                "-c",
                PRIVILEGED_WORK,
            ],
            capture_output=True,
            text=True,
            timeout=30,
            cwd=world_readable_dir,
        )

    denied = as_nobody(plain)
    assert denied.returncode != 0 and "Permission denied" in denied.stderr, denied.stderr
    allowed = as_nobody(capped)
    assert allowed.returncode == 0, allowed.stderr
    assert "bound 67 and opened a packet socket" in allowed.stdout
