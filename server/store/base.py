"""What the rest of Imprint may ask of a store, and the errors it answers with.

SQLite is the embedded default (server/store/sqlite.py). A site that outgrows one machine moves
to PostgreSQL behind the same methods, never to a home-made engine.
"""

from __future__ import annotations

# The widest integers the store holds (SQLite INTEGER): binding a wider one raises OverflowError.
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1


class StoreError(Exception):
    """Base of the store's errors; each carries a message that says what to fix."""

    code = "store_error"


class NotFound(StoreError):
    code = "not_found"


class Conflict(StoreError):
    code = "conflict"


class Invalid(StoreError):
    """The request is well-formed but breaks a rule (e.g. a code for a device already provisioned)."""

    code = "invalid"

    def __init__(self, message: str, details: list[dict[str, object]] | None = None) -> None:
        super().__init__(message)
        self.details = details or []
