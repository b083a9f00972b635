"""The CLI tests' config: a store in a temporary folder, TLS off (nothing here serves)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.helpers.proc import run_imprint


@pytest.fixture
def bare_cfg(tmp_path: Path) -> Path:
    """The config alone: no store yet (`imprint db init` makes it)."""
    p = tmp_path / "imprint.toml"
    p.write_text("[store]\npath = 'state/imprint.db'\n[tls]\nenabled = false\n")
    return p


@pytest.fixture
def cfg(bare_cfg: Path) -> Path:
    """The config with its store made by `imprint db init`."""
    run_imprint(bare_cfg, "db", "init")
    return bare_cfg
