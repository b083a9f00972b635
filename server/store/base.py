"""What the rest of Imprint may ask of a store, and the errors it answers with.

SQLite is the embedded default (server/store/sqlite.py). A site that outgrows one machine moves
to PostgreSQL behind the same methods, never to a home-made engine.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterable, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from server.dhcp.leaseview import LeaseRow
    from server.dhcp.pool import Lease
    from server.registry.discovered import SeenDevice
    from server.registry.model import Device, Tenant

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


class IntegrityError(sqlite3.IntegrityError):
    """A uniqueness or reference rule broke, on a store other than SQLite (whose own
    sqlite3.IntegrityError the callers catch): callers catch `sqlite3.IntegrityError` for both."""


class SchemaTooNew(StoreError):
    """The database was migrated by a newer Imprint than this one."""

    code = "schema_too_new"

    def __init__(self, where: str, found: int, known: int) -> None:
        super().__init__(
            f"{where}: the database schema is version {found}, this Imprint knows up to "
            f"{known}: upgrade Imprint"
        )
        self.found = found
        self.known = known


@dataclass(frozen=True, slots=True)
class TokenRow:
    id: str
    role: str
    tenant_id: str | None
    name: str
    created_at: str
    revoked_at: str | None


@dataclass(frozen=True, slots=True)
class AuditRow:
    id: int
    at: str
    actor: str
    tenant_id: str | None
    action: str
    target: str | None
    before: Any
    after: Any


class Tx:
    """One open write transaction: SQL helpers that run inside it, including the audit entry.

    Two kinds share these helpers: the writer connection's (`transaction`, each statement a
    round trip to aiosqlite's thread) and the inline one's (`quick_transaction`, each statement
    run at once on the event loop thread). A capability's SQL is written once, against Tx.
    """

    def __init__(self, now: str) -> None:
        self.now = now
        self.changed_macs: list[str] = []
        self.last_seq = 0  # highest registry_changes.seq written by this transaction

    async def execute(self, sql: str, params: Sequence[Any] = ()) -> Any:
        """Run one statement; the cursor (for `rowcount`)."""
        raise NotImplementedError

    async def executemany(self, sql: str, rows: Iterable[Sequence[Any]]) -> None:
        raise NotImplementedError

    async def fetchone(self, sql: str, params: Sequence[Any] = ()) -> Any:
        raise NotImplementedError

    async def fetchall(self, sql: str, params: Sequence[Any] = ()) -> list[Any]:
        raise NotImplementedError

    async def audit(
        self,
        actor: str,
        tenant_id: str | None,
        action: str,
        target: str | None,
        before: Any = None,
        after: Any = None,
    ) -> None:
        await self.execute(
            "INSERT INTO audit (at, actor, tenant_id, action, target, before, after) "
            "VALUES (?, ?, ?, ?, ?, ?, ?)",
            (self.now, actor, tenant_id, action, target, _json(before), _json(after)),
        )

    async def audit_many(
        self, rows: Iterable[tuple[str, str | None, str, str | None, Any, Any]]
    ) -> None:
        await self.executemany(
            "INSERT INTO audit (at, actor, tenant_id, action, target, before, after) "
            "VALUES (?, ?, ?, ?, ?, ?, ?)",
            ((self.now, a, t, act, tg, _json(b), _json(af)) for a, t, act, tg, b, af in rows),
        )

    async def mark_changed(self, macs: Sequence[str]) -> None:
        """Record device changes so other processes' indexes pick them up."""
        self.changed_macs.extend(macs)
        if len(macs) == 1:  # one statement: seq is the rowid, so the cursor gives it
            cur = await self.execute("INSERT INTO registry_changes (mac) VALUES (?)", (macs[0],))
            self.last_seq = int(cur.lastrowid or 0)
            return
        await self.executemany(
            "INSERT INTO registry_changes (mac) VALUES (?)", ((m,) for m in macs)
        )
        row = await self.fetchone("SELECT max(seq) FROM registry_changes")
        self.last_seq = int(row[0]) if row and row[0] is not None else 0


_ENCODER = json.JSONEncoder(sort_keys=True, separators=(",", ":"))


def _json(v: Any) -> str | None:
    return None if v is None else _ENCODER.encode(v)


class Store(Protocol):
    """What the services ask of a store (SqliteStore, PgStore)."""

    applied: list[str]  # the migrations the last `open` applied, by file name

    @property
    def location(self) -> str:
        """Where the data is, for messages (never a password)."""
        ...

    @property
    def is_open(self) -> bool: ...

    async def open(self) -> None: ...
    async def close(self) -> None: ...
    async def schema_version(self) -> int: ...
    def transaction(self, now: str) -> AbstractAsyncContextManager[Tx]: ...
    def quick_transaction(self, now: str) -> AbstractAsyncContextManager[Tx]: ...
    async def _one(self, sql: str, params: Sequence[Any] = ()) -> Any: ...
    async def _all(self, sql: str, params: Sequence[Any] = ()) -> list[Any]: ...
    async def get_tenant(self, tenant_id: str) -> Tenant | None: ...
    async def list_tenants(self, only: str | None = None) -> list[Tenant]: ...
    async def get_device(self, mac: str, tenant_id: str | None = None) -> Device | None: ...
    async def list_devices(
        self,
        tenant_id: str,
        state: str | None,
        q: str | None,
        limit: int,
        offset: int = 0,
        after: str | None = None,
        before: str | None = None,
        with_count: bool = True,
    ) -> tuple[int | None, list[Device]]: ...
    async def export_rows(
        self, tenant_id: str, state: str | None
    ) -> list[tuple[str, str, str]]: ...
    async def existing_macs(self, macs: Sequence[str]) -> dict[str, str]: ...
    async def macs_in_state(self, tenant_id: str, state: str) -> list[str]: ...
    async def devices_in(self, tenant_id: str, macs: Sequence[str]) -> dict[str, Device]: ...
    async def all_device_views(self) -> list[tuple[str, str, str, str, str]]: ...
    async def device_views(self, macs: Sequence[str]) -> list[tuple[str, str, str, str, str]]: ...
    async def max_change_seq(self) -> int: ...
    async def changes_since(self, seq: int, limit: int = 50_000) -> list[tuple[int, str]]: ...
    async def data_version(self) -> int: ...
    async def token_by_digest(self, digest: bytes) -> TokenRow | None: ...
    async def list_tokens(self) -> list[TokenRow]: ...
    async def list_audit(
        self, tenant_id: str | None, limit: int, before_id: int | None
    ) -> list[AuditRow]: ...
    async def load_leases(self) -> list[Lease]: ...
    async def list_leases(
        self, tenant_id: str | None = None, mac: str | None = None
    ) -> list[LeaseRow]: ...
    async def save_leases(self, changes: Sequence[Lease]) -> None: ...
    async def replace_discovered(self, rows: Sequence[SeenDevice]) -> None: ...
    async def list_discovered(self, limit: int | None = None) -> list[SeenDevice]: ...
    async def integrity_check(self) -> str: ...
