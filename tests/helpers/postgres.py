"""A throwaway PostgreSQL server for the tests: the Debian package's binaries, a cluster made by
initdb in a temporary folder, listening only on a Unix socket in that folder, stopped and removed
when the session ends. Each test gets a database of its own (CREATE DATABASE ... TEMPLATE
template0), so tests never see each other's rows.

PostgreSQL refuses to run as root: run as root (CI), the cluster belongs to the `postgres` system
user the package creates (or `nobody`), which owns the folder. Without the binaries (no
`postgresql` package) the tests that need it skip, saying so.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import pwd
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

SUPERUSER = "imprint_test"


def find_bindir() -> Path | None:
    """The newest /usr/lib/postgresql/<major>/bin holding initdb, pg_ctl and postgres."""
    root = Path("/usr/lib/postgresql")
    found = []
    for d in root.glob("*/bin") if root.is_dir() else []:
        if all((d / b).is_file() for b in ("initdb", "pg_ctl", "postgres")):
            with contextlib.suppress(ValueError):
                found.append((int(d.parent.name), d))
    return max(found)[1] if found else None


def _unprivileged() -> pwd.struct_passwd | None:
    """The account to run the server as when we are root; None when we are not root."""
    if os.geteuid() != 0:
        return None
    for name in ("postgres", "nobody"):
        with contextlib.suppress(KeyError):
            return pwd.getpwnam(name)
    raise RuntimeError("running as root and neither a 'postgres' nor a 'nobody' user exists")


@dataclass
class PgCluster:
    bindir: Path
    root: Path
    user: pwd.struct_passwd | None
    _names: Iterator[int] = field(default_factory=lambda: itertools.count(1))

    @property
    def data(self) -> Path:
        return self.root / "data"

    @property
    def socket_dir(self) -> Path:
        return self.root

    def url(self, dbname: str) -> str:
        return f"postgresql://{SUPERUSER}@/{dbname}?host={self.socket_dir}"

    def _run(self, *argv: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        kw: dict[str, object] = {}
        if self.user is not None:
            kw = {"user": self.user.pw_uid, "group": self.user.pw_gid, "extra_groups": []}
        return subprocess.run(  # type: ignore[call-overload, no-any-return]
            list(argv),
            capture_output=True,
            text=True,
            check=check,
            cwd=self.root,
            env={**os.environ, "LC_ALL": "C", "PGTZ": "UTC"},
            **kw,
        )

    def start(self) -> None:
        if self.user is not None:
            os.chown(self.root, self.user.pw_uid, self.user.pw_gid)
        self._run(
            str(self.bindir / "initdb"),
            "-D",
            str(self.data),
            "-A",
            "trust",
            "-U",
            SUPERUSER,
            "-E",
            "UTF8",
            "--locale=C",
            "--no-sync",
        )
        opts = (
            f"-c listen_addresses='' -k {self.socket_dir} -c fsync=off "
            "-c synchronous_commit=off -c full_page_writes=off -c max_connections=200 "
            "-c shared_buffers=32MB"
        )
        r = self._run(
            str(self.bindir / "pg_ctl"),
            "-D",
            str(self.data),
            "-l",
            str(self.root / "server.log"),
            "-o",
            opts,
            "-w",
            "-t",
            "60",
            "start",
            check=False,
        )
        if r.returncode != 0:
            log = (self.root / "server.log").read_text(errors="replace")[-2000:]
            raise RuntimeError(f"pg_ctl start failed: {r.stdout}{r.stderr}\n{log}")

    def stop(self) -> None:
        self._run(
            str(self.bindir / "pg_ctl"), "-D", str(self.data), "-m", "fast", "-w", "stop",
            check=False,
        )  # fmt: skip

    def sql(self, statement: str, dbname: str = "postgres") -> str:
        """Run one statement with psql (as the cluster's superuser); its output."""
        r = self._run(
            str(self.bindir / "psql"), "-X", "-q", "-At", "-v", "ON_ERROR_STOP=1",
            "-h", str(self.socket_dir), "-U", SUPERUSER, "-d", dbname, "-c", statement,
            check=False,
        )  # fmt: skip
        if r.returncode != 0:
            raise RuntimeError(f"psql {statement!r}: {r.stderr.strip()}")
        return r.stdout

    def new_database(self) -> str:
        """A fresh, empty database; its URL."""
        name = f"t{next(self._names)}"
        self.sql(f"CREATE DATABASE {name} TEMPLATE template0")
        return self.url(name)


@pytest.fixture(scope="session")
def pg_cluster() -> Iterator[PgCluster]:
    bindir = find_bindir()
    if bindir is None:
        pytest.skip(
            "PostgreSQL server binaries not found under /usr/lib/postgresql/*/bin: install the "
            "Debian 'postgresql' package (scripts/install-debian-deps.sh does)"
        )
    root = Path(tempfile.mkdtemp(prefix="imprint-pg-"))
    cluster = PgCluster(bindir, root, _unprivileged())
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.stop()
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def pg_url(pg_cluster: PgCluster) -> str:
    """The URL of a database of this test's own on the session's PostgreSQL server."""
    return pg_cluster.new_database()
