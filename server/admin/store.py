"""SQL for the admin web UI: admin accounts, their sessions, and the UI's read-only listings.

Reads use the store's reader connection; every write is one `store.transaction(now)` carrying its
audit entry, like the registry's.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from server.store.base import Conflict, NotFound, Store


@dataclass(frozen=True, slots=True)
class AdminRow:
    username: str
    password_hash: str
    role: str
    tenant_id: str | None
    disabled: bool
    created_at: str
    updated_at: str


_ADMIN_COLS = "username, password_hash, role, tenant_id, disabled, created_at, updated_at"


def _admin(r: Sequence[Any]) -> AdminRow:
    return AdminRow(r[0], r[1], r[2], r[3], bool(r[4]), r[5], r[6])


@dataclass(frozen=True, slots=True)
class SessionRow:
    """A session joined with its admin, so one read answers "who is this and may they act"."""

    username: str
    role: str
    tenant_id: str | None
    disabled: bool
    csrf_token: str
    created_at: str
    last_seen_at: str


class AdminStore:
    """Admin accounts and sessions, over the same SQLite file as the registry."""

    def __init__(self, store: Store) -> None:
        self.store = store

    # ---- accounts ------------------------------------------------------------------------

    async def get_admin(self, username: str) -> AdminRow | None:
        row = await self.store._one(
            f"SELECT {_ADMIN_COLS} FROM admins WHERE username = ?", (username,)
        )
        return _admin(row) if row else None

    async def list_admins(self) -> list[AdminRow]:
        rows = await self.store._all(f"SELECT {_ADMIN_COLS} FROM admins ORDER BY username")
        return [_admin(r) for r in rows]

    async def insert_admin(
        self,
        now: str,
        actor: str,
        username: str,
        password_hash: str,
        role: str,
        tenant_id: str | None,
    ) -> AdminRow:
        """Raises Conflict when the username is taken, NotFound when the tenant does not exist."""
        try:
            async with self.store.transaction(now) as tx:
                if tenant_id is not None and not await tx.fetchone(
                    "SELECT 1 FROM tenants WHERE id = ?", (tenant_id,)
                ):
                    raise NotFound(f"tenant {tenant_id!r} not found")
                await tx.execute(
                    f"INSERT INTO admins ({_ADMIN_COLS}) VALUES (?, ?, ?, ?, 0, ?, ?)",
                    (username, password_hash, role, tenant_id, now, now),
                )
                await tx.audit(
                    actor,
                    tenant_id,
                    "admin.create",
                    username,
                    None,
                    {"username": username, "role": role, "tenant": tenant_id},
                )
        except sqlite3.IntegrityError as e:
            raise Conflict(f"admin {username!r} already exists") from e
        return AdminRow(username, password_hash, role, tenant_id, False, now, now)

    async def set_disabled(self, now: str, actor: str, username: str, disabled: bool) -> None:
        """Disable (ending every session of) or re-enable an admin; NotFound if there is none."""
        async with self.store.transaction(now) as tx:
            row = await tx.fetchone("SELECT tenant_id FROM admins WHERE username = ?", (username,))
            if row is None:
                raise NotFound(f"no admin named {username!r}")
            await tx.execute(
                "UPDATE admins SET disabled = ?, updated_at = ? WHERE username = ?",
                (int(disabled), now, username),
            )
            if disabled:
                await tx.execute("DELETE FROM admin_sessions WHERE username = ?", (username,))
            await tx.audit(
                actor,
                row[0],
                "admin.disable" if disabled else "admin.enable",
                username,
                None,
                None,
            )

    async def set_password_hash(self, now: str, username: str, password_hash: str) -> None:
        """Store a re-hashed password (same password, stronger parameters): not audited."""
        async with self.store.transaction(now) as tx:
            await tx.execute(
                "UPDATE admins SET password_hash = ?, updated_at = ? WHERE username = ?",
                (password_hash, now, username),
            )

    # ---- sessions ------------------------------------------------------------------------

    async def create_session(
        self,
        now: str,
        id_hash: bytes,
        admin: AdminRow,
        csrf_token: str,
        source: str,
        idle_before: str,
        created_before: str,
    ) -> None:
        """Start a session (audited as a login); drop every session that can no longer be used."""
        async with self.store.transaction(now) as tx:
            await tx.execute(
                "DELETE FROM admin_sessions WHERE last_seen_at < ? OR created_at < ?",
                (idle_before, created_before),
            )
            await tx.execute(
                "INSERT INTO admin_sessions (id_hash, username, csrf_token, created_at, "
                "last_seen_at, source) VALUES (?, ?, ?, ?, ?, ?)",
                (id_hash, admin.username, csrf_token, now, now, source),
            )
            await tx.audit(
                f"admin:{admin.username}",
                admin.tenant_id,
                "admin.login",
                admin.username,
                None,
                {"source": source},
            )

    async def session(self, id_hash: bytes) -> SessionRow | None:
        row = await self.store._one(
            "SELECT a.username, a.role, a.tenant_id, a.disabled, s.csrf_token, s.created_at, "
            "s.last_seen_at FROM admin_sessions s JOIN admins a ON a.username = s.username "
            "WHERE s.id_hash = ?",
            (id_hash,),
        )
        if row is None:
            return None
        return SessionRow(row[0], row[1], row[2], bool(row[3]), row[4], row[5], row[6])

    async def touch_session(self, now: str, id_hash: bytes) -> None:
        async with self.store.transaction(now) as tx:
            await tx.execute(
                "UPDATE admin_sessions SET last_seen_at = ? WHERE id_hash = ?", (now, id_hash)
            )

    async def delete_session(
        self, now: str, id_hash: bytes, audit: tuple[str, str | None] | None
    ) -> bool:
        """End a session; `audit` = (username, tenant) records a logout. True if it existed."""
        async with self.store.transaction(now) as tx:
            cur = await tx.execute("DELETE FROM admin_sessions WHERE id_hash = ?", (id_hash,))
            gone = int(cur.rowcount) == 1
            if gone and audit is not None:
                username, tenant_id = audit
                await tx.audit(f"admin:{username}", tenant_id, "admin.logout", username)
        return gone

    async def session_count(self, username: str) -> int:
        row = await self.store._one(
            "SELECT count(*) FROM admin_sessions WHERE username = ?", (username,)
        )
        return int(row[0])
