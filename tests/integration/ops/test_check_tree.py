"""scripts/check-tree, the CI guard against tracked generated files, on real git checkouts.

Each test makes a scratch repository with the project's .gitignore, stages files (forcing past
the ignore rules where a careless `git add -f` would), and runs the script on it.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[3]
SCRIPT = ROOT / "scripts" / "check-tree"

pytestmark = pytest.mark.skipif(shutil.which("git") is None, reason="needs git")


def git(repo: Path, *args: str) -> None:
    subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True, timeout=30)


def scratch_repo(tmp_path: Path, files: dict[str, str], *, force: tuple[str, ...] = ()) -> Path:
    repo = tmp_path / "repo"
    repo.mkdir()
    git(repo, "init", "-q")
    shutil.copy(ROOT / ".gitignore", repo / ".gitignore")
    for name, text in files.items():
        (repo / name).parent.mkdir(parents=True, exist_ok=True)
        (repo / name).write_text(text)
    git(repo, "add", "-A")
    if force:
        git(repo, "add", "-f", *force)
    return repo


def check_tree(repo: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["bash", str(SCRIPT), str(repo)], capture_output=True, text=True, timeout=60, check=False
    )


def test_a_clean_tree_passes(tmp_path: Path) -> None:
    repo = scratch_repo(
        tmp_path,
        {
            "server/app.py": "",
            "server/store/migrations/0001_initial.sql": "",
            "tests/fixtures/dhcp/discover.pcap": "",
            ".venv/bin/python": "",  # on disk but ignored: fine
            "server/__pycache__/app.cpython-311.pyc": "",
        },
    )
    done = check_tree(repo)
    assert done.returncode == 0, done.stderr
    assert "no generated files tracked (4 files)" in done.stdout


def test_tracked_generated_files_fail_and_are_named(tmp_path: Path) -> None:
    generated = (
        ".venv/bin/python",
        "venv/pyvenv.cfg",
        "server/__pycache__/app.cpython-311.pyc",
        ".mypy_cache/3.11/server.json",
        "dist/imprint-0.1.0-py3-none-any.whl",
        "imprint.egg-info/PKG-INFO",
        "test-artifacts/shot.png",
        "lab-state/imprint.db",
        "state/imprint.db-wal",
    )
    repo = scratch_repo(
        tmp_path, {"server/app.py": "", **dict.fromkeys(generated, "")}, force=generated
    )
    done = check_tree(repo)
    assert done.returncode == 1
    assert f"git tracks {len(generated)} generated or environment file(s)" in done.stderr
    for path in generated:
        assert f"  {path}  (" in done.stderr
    assert "server/app.py" not in done.stderr
    assert "git rm -r --cached" in done.stderr


def test_an_ignore_rule_gone_missing_fails(tmp_path: Path) -> None:
    repo = scratch_repo(tmp_path, {"server/app.py": ""})
    rules = (repo / ".gitignore").read_text().splitlines()
    (repo / ".gitignore").write_text("\n".join(r for r in rules if r != ".mypy_cache/") + "\n")
    done = check_tree(repo)
    assert done.returncode == 1
    assert ".gitignore does not ignore these generated paths" in done.stderr
    assert ".mypy_cache/3.11/x.json" in done.stderr


def test_this_repository_tracks_no_generated_file() -> None:
    done = subprocess.run(
        ["bash", str(SCRIPT)], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr
