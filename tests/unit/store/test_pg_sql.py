"""The PostgreSQL store's pure helpers: house SQL placeholders, and URLs without passwords."""

from __future__ import annotations

from server.store.postgres import _sql, redact


def test_question_marks_become_numbered_parameters_outside_literals_and_comments() -> None:
    assert _sql("SELECT a FROM t WHERE x = ? AND y IN (?, ?)") == (
        "SELECT a FROM t WHERE x = $1 AND y IN ($2, $3)"
    )
    assert _sql("SELECT '?', \"a?\" FROM t WHERE z = ? -- why?\nAND w = ?") == (
        "SELECT '?', \"a?\" FROM t WHERE z = $1 -- why?\nAND w = $2"
    )
    assert _sql("SELECT 'it''s ?' WHERE q LIKE ? ESCAPE '\\'") == (
        "SELECT 'it''s ?' WHERE q LIKE $1 ESCAPE '\\'"
    )
    assert _sql("SELECT 1") == "SELECT 1"


def test_a_url_is_shown_without_its_password() -> None:
    assert redact("postgresql://imprint:s3cret@db.example:5433/imprint?sslmode=require") == (
        "postgresql://imprint:***@db.example:5433/imprint?sslmode=require"
    )
    assert redact("postgresql:///imprint?host=/run/postgresql") == (
        "postgresql:///imprint?host=/run/postgresql"
    )
