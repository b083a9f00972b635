"""Migration files are split into statements the way SQLite reads them."""

from __future__ import annotations

import pytest

from server.store.sqlite import _split_sql, migrations


def test_inline_comments_with_semicolons_and_triggers_stay_whole() -> None:
    script = (
        "-- a file comment; with a semicolon\n"
        "CREATE TABLE t (\n  id TEXT PRIMARY KEY, -- opaque; the token's id\n  n INTEGER\n);\n"
        "CREATE TRIGGER t_ins AFTER INSERT ON t BEGIN\n  UPDATE t SET n = 1; \nEND;\n"
    )
    parts = _split_sql(script)
    assert len(parts) == 2
    assert parts[0].endswith(");") and "opaque; the token" in parts[0]
    assert parts[1].startswith("CREATE TRIGGER") and parts[1].endswith("END;")


def test_a_statement_left_open_is_refused() -> None:
    with pytest.raises(ValueError, match="middle of a statement"):
        _split_sql("CREATE TABLE t (id TEXT);\nCREATE TABLE u (\n")


def test_shipped_migrations_have_unique_increasing_numbers_and_parse() -> None:
    found = migrations()
    versions = [v for v, _, _ in found]
    assert versions == sorted(set(versions)) and versions[0] == 1
    for _, name, sql in found:
        assert _split_sql(sql), name
