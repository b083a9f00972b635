"""The CLI tests' config: a store in a temporary folder, TLS off (nothing here serves)."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture
def cfg(tmp_path: Path) -> Path:
    p = tmp_path / "imprint.toml"
    p.write_text("[store]\npath = 'state/imprint.db'\n[tls]\nenabled = false\n")
    return p
