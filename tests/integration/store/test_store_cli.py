"""`imprint db init` / `imprint db migrate` on either backend, run as the real CLI."""

from __future__ import annotations

import sqlite3
import urllib.parse
from pathlib import Path

import pytest

from tests.helpers.postgres import PgCluster
from tests.helpers.proc import run_imprint


def _config(tmp_path: Path, store_url: str | None) -> Path:
    cfg = tmp_path / "imprint.toml"
    url = f"url = '{store_url}'\n" if store_url else ""
    cfg.write_text(f"[store]\npath = 'state/imprint.db'\n{url}")
    return cfg


def _add_future_migration(store_url: str | None, tmp_path: Path, pg: PgCluster | None) -> None:
    sql = "INSERT INTO schema_migrations VALUES (9999, '9999_future.sql', '2030-01-01 00:00:00')"
    if store_url is None:
        with sqlite3.connect(tmp_path / "state" / "imprint.db") as db:
            db.execute(sql)
    else:
        assert pg is not None
        pg.sql(sql, dbname=urllib.parse.urlsplit(store_url).path.lstrip("/"))


def test_db_migrate_applies_pending_migrations_and_refuses_a_newer_schema(
    tmp_path: Path, store_url: str | None, request: pytest.FixtureRequest
) -> None:
    cfg = _config(tmp_path, store_url)
    missing = run_imprint(cfg, "db", "migrate", check=False)
    if store_url is None:  # SQLite: migrate never creates a store, it names db init
        assert missing.returncode == 2 and "imprint db init" in missing.stderr, missing.stderr
        run_imprint(cfg, "db", "init")
    else:  # PostgreSQL: the database exists; migrate brings an empty one up to date
        assert missing.returncode == 0, missing.stderr
        assert "applied 0001_initial.sql" in missing.stdout, missing.stdout
    done = run_imprint(cfg, "db", "migrate")
    assert "up to date" in done.stdout and "schema version 7" in done.stdout, done.stdout
    assert "password" not in done.stdout

    pg = None
    if store_url is not None:
        pg = request.getfixturevalue("pg_cluster")
    _add_future_migration(store_url, tmp_path, pg)
    refused = run_imprint(cfg, "db", "migrate", check=False)
    assert refused.returncode == 1, refused.stdout + refused.stderr
    assert (
        "the database schema is version 9999, this Imprint knows up to 7: upgrade Imprint"
        in refused.stderr
    ), refused.stderr
    listed = run_imprint(cfg, "tenants", "list", check=False)
    assert listed.returncode == 1 and "upgrade Imprint" in listed.stderr, listed.stderr
