"""SQL for remote sign-in: tenant user accounts, device authorization grants, refresh tokens.

Reads use the store's reader connection; writes take the open `Tx` of a `store.transaction(now)`
so that the caller's checks, the change and its audit entry commit together.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass
from typing import Any

from server.oauth.model import (
    ENDED,
    SESSION,
    GrantEvent,
    GrantRow,
    GrantStatus,
    GrantTransitionError,
    sources,
    target,
)
from server.registry.model import DeviceEvent, DeviceState
from server.registry.model import sources as device_sources
from server.registry.model import target as device_target
from server.registry.store import set_state
from server.store.base import Store, Tx


@dataclass(frozen=True, slots=True)
class UserRow:
    username: str
    tenant_id: str
    display_name: str
    password_hash: str
    disabled: bool
    created_at: str
    updated_at: str


_USER_COLS = "username, tenant_id, display_name, password_hash, disabled, created_at, updated_at"


def _user(r: Sequence[Any]) -> UserRow:
    return UserRow(r[0], r[1], r[2], r[3], bool(r[4]), r[5], r[6])


_GRANT_COLS = (
    "id, mac, tenant_id, client_id, scope, status, username, created_at, expires_at, "
    "interval_s, last_poll_at, user_code_sealed"
)


def _grant(r: Sequence[Any]) -> GrantRow:
    return GrantRow(
        r[0], r[1], r[2], r[3], r[4], GrantStatus(r[5]), r[6], r[7], r[8], int(r[9]), r[10], r[11]
    )


@dataclass(frozen=True, slots=True)
class ClientRow:
    """A device seen as an OAuth client (client_id = device_id)."""

    mac: str
    device_id: str
    tenant_id: str
    tenant_name: str
    location: str
    state: DeviceState
    client_secret_hash: bytes | None
    signed_in_user: str | None


_CLIENT_SQL = (
    "SELECT d.mac, d.device_id, d.tenant_id, t.name, d.location, d.state, "
    "d.client_secret_hash, d.signed_in_user FROM devices d JOIN tenants t ON t.id = d.tenant_id "
)


def _client(r: Sequence[Any]) -> ClientRow:
    return ClientRow(
        r[0], r[1], r[2], r[3], r[4], DeviceState(r[5]), bytes(r[6]) if r[6] else None, r[7]
    )


@dataclass(frozen=True, slots=True)
class RefreshRow:
    """A refresh token with what deciding a refresh needs: its grant, user and device."""

    grant_id: str
    expires_at: str
    rotated_at: str | None
    grant_status: GrantStatus
    client_id: str
    mac: str
    tenant_id: str
    scope: str
    username: str | None
    user_disabled: bool | None  # None: the account no longer exists


def _marks(statuses: Collection[GrantStatus]) -> tuple[str, list[GrantStatus]]:
    """`?, ?` and the sorted values, for a `status IN (...)` condition."""
    values = sorted(statuses)
    return ",".join("?" * len(values)), values


async def _move_grants(
    tx: Tx,
    event: GrantEvent,
    where: str,
    params: Sequence[Any],
    *,
    among: frozenset[GrantStatus] | None = None,
    sets: str = "",
    set_params: Sequence[Any] = (),
) -> int:
    """Apply `event` to the grants matching `where`, guarded by the transition table (only
    grants in one of its source statuses move, or in `among`, a subset of them); returns how
    many moved. `sets` (", col = ?, ...") changes other columns in the same statement."""
    allowed = sources(event)
    if among is not None and not among <= allowed:
        raise GrantTransitionError(f"{event.value} is not allowed from {sorted(among - allowed)}")
    marks, from_ = _marks(allowed if among is None else among)
    cur = await tx.execute(
        f"UPDATE oauth_device_grants SET status = ?{sets} WHERE {where} AND status IN ({marks})",
        [target(event), *set_params, *params, *from_],
    )
    return int(cur.rowcount)


_CHUNK = 400  # ids per `IN (...)`: two lists of it stay far below SQLite's variable limit
_REVOKED_SETS = ", revoked_at = ?, user_code_digest = NULL, user_code_sealed = NULL"


async def revoke_device_tokens(tx: Tx, mac: str) -> int:
    """Revoke every live grant of `mac` and delete its refresh tokens; returns grants revoked.

    Called by the registry inside its own transaction when a device is reset or deleted.
    """
    await tx.execute(
        "DELETE FROM oauth_refresh_tokens WHERE grant_id IN "
        "(SELECT id FROM oauth_device_grants WHERE mac = ?)",
        (mac,),
    )
    return await _move_grants(
        tx, GrantEvent.REVOKE, "mac = ?", (mac,), sets=_REVOKED_SETS, set_params=(tx.now,)
    )


class OAuthStore:
    """Users, grants and refresh tokens, over the same SQLite file as the registry."""

    def __init__(self, store: Store) -> None:
        self.store = store

    # ---- users ---------------------------------------------------------------------------

    async def get_user(self, username: str) -> UserRow | None:
        row = await self.store._one(
            f"SELECT {_USER_COLS} FROM tenant_users WHERE username = ?", (username,)
        )
        return _user(row) if row else None

    async def list_users(self, tenant_id: str) -> list[UserRow]:
        rows = await self.store._all(
            f"SELECT {_USER_COLS} FROM tenant_users WHERE tenant_id = ? ORDER BY username",
            (tenant_id,),
        )
        return [_user(r) for r in rows]

    @staticmethod
    async def insert_user(
        tx: Tx, username: str, tenant_id: str, display_name: str, password_hash: str
    ) -> None:
        """Raises sqlite3.IntegrityError when the username is taken (in any tenant)."""
        await tx.execute(
            "INSERT INTO tenant_users (username, tenant_id, display_name, password_hash, "
            "disabled, created_at, updated_at) VALUES (?, ?, ?, ?, 0, ?, ?)",
            (username, tenant_id, display_name, password_hash, tx.now, tx.now),
        )

    @staticmethod
    async def user_in_tx(tx: Tx, username: str) -> UserRow | None:
        row = await tx.fetchone(
            f"SELECT {_USER_COLS} FROM tenant_users WHERE username = ?", (username,)
        )
        return _user(row) if row else None

    @staticmethod
    async def update_user(
        tx: Tx,
        username: str,
        tenant_id: str,
        *,
        disabled: bool | None = None,
        display_name: str | None = None,
        password_hash: str | None = None,
    ) -> int:
        sets: list[str] = ["updated_at = ?"]
        params: list[Any] = [tx.now]
        if disabled is not None:
            sets.append("disabled = ?")
            params.append(1 if disabled else 0)
        if display_name is not None:
            sets.append("display_name = ?")
            params.append(display_name)
        if password_hash is not None:
            sets.append("password_hash = ?")
            params.append(password_hash)
        cur = await tx.execute(
            f"UPDATE tenant_users SET {', '.join(sets)} WHERE username = ? AND tenant_id = ?",
            [*params, username, tenant_id],
        )
        return int(cur.rowcount)

    # ---- clients (devices) ---------------------------------------------------------------------

    async def client(self, client_id: str) -> ClientRow | None:
        row = await self.store._one(_CLIENT_SQL + "WHERE d.device_id = ?", (client_id,))
        return _client(row) if row else None

    async def device(self, mac: str) -> ClientRow | None:
        row = await self.store._one(_CLIENT_SQL + "WHERE d.mac = ?", (mac,))
        return _client(row) if row else None

    @staticmethod
    async def client_by_mac(tx: Tx, mac: str) -> ClientRow | None:
        row = await tx.fetchone(_CLIENT_SQL + "WHERE d.mac = ?", (mac,))
        return _client(row) if row else None

    @staticmethod
    async def set_signed_in(tx: Tx, mac: str, username: str) -> bool:
        """Signed in as `username` (from awaiting sign-in, or replacing the user before)."""
        return await set_state(tx, mac, DeviceEvent.SIGN_IN, also={"signed_in_user": username})

    @staticmethod
    async def set_signed_out(tx: Tx, mac: str) -> bool:
        """Back to awaiting sign-in (only from signed in: an unprovisioned device stays so)."""
        return await set_state(tx, mac, DeviceEvent.SIGN_OUT, also={"signed_in_user": None})

    # ---- device authorization grants -----------------------------------------------------------

    @staticmethod
    async def start_grant(
        tx: Tx,
        *,
        grant_id: str,
        device_code_hash: bytes,
        user_code_digest: bytes,
        user_code_sealed: bytes,
        mac: str,
        tenant_id: str,
        client_id: str,
        scope: str,
        expires_at: str,
        interval_s: int,
    ) -> None:
        """Insert a pending grant, dropping the device's earlier requests that never completed.

        Raises sqlite3.IntegrityError if the user code collides with a live one (caller retries).
        """
        # A device shows one user code at a time: a new request replaces the one before it.
        marks, dropped = _marks(ENDED | {GrantStatus.PENDING})
        await tx.execute(
            f"DELETE FROM oauth_device_grants WHERE mac = ? AND (status IN ({marks}) "
            "OR (status = ? AND expires_at <= ?))",
            (mac, *dropped, GrantStatus.APPROVED, tx.now),
        )
        await tx.execute(
            "INSERT INTO oauth_device_grants (id, device_code_hash, user_code_digest, "
            "user_code_sealed, mac, tenant_id, client_id, scope, status, created_at, expires_at, "
            "interval_s) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                grant_id,
                device_code_hash,
                user_code_digest,
                user_code_sealed,
                mac,
                tenant_id,
                client_id,
                scope,
                GrantStatus.PENDING,
                tx.now,
                expires_at,
                interval_s,
            ),
        )

    @staticmethod
    async def grant_by_device_code(tx: Tx, device_code_hash: bytes) -> GrantRow | None:
        row = await tx.fetchone(
            f"SELECT {_GRANT_COLS} FROM oauth_device_grants WHERE device_code_hash = ?",
            (device_code_hash,),
        )
        return _grant(row) if row else None

    async def grant_by_user_code(self, digest: bytes) -> GrantRow | None:
        row = await self.store._one(
            f"SELECT {_GRANT_COLS} FROM oauth_device_grants WHERE user_code_digest = ?",
            (digest,),
        )
        return _grant(row) if row else None

    async def grant(self, grant_id: str) -> GrantRow | None:
        row = await self.store._one(
            f"SELECT {_GRANT_COLS} FROM oauth_device_grants WHERE id = ?", (grant_id,)
        )
        return _grant(row) if row else None

    @staticmethod
    async def grant_in_tx(tx: Tx, grant_id: str) -> GrantRow | None:
        row = await tx.fetchone(
            f"SELECT {_GRANT_COLS} FROM oauth_device_grants WHERE id = ?", (grant_id,)
        )
        return _grant(row) if row else None

    async def pending_grant(self, mac: str, now: str) -> GrantRow | None:
        """The device's current sign-in request, if it has one that has not expired."""
        row = await self.store._one(
            f"SELECT {_GRANT_COLS} FROM oauth_device_grants WHERE mac = ? AND "
            "status = ? AND expires_at > ? ORDER BY created_at DESC LIMIT 1",
            (mac, GrantStatus.PENDING, now),
        )
        return _grant(row) if row else None

    @staticmethod
    async def pending_in_tenant(
        tx: Tx, tenant_id: str, macs: Sequence[str] | None
    ) -> list[tuple[GrantRow, ClientRow]]:
        """The tenant's pending, unexpired sign-ins of provisioned devices (of `macs` only,
        when given), with their devices: what a bulk approval may answer."""
        sql = (
            f"SELECT {', '.join('g.' + c.strip() for c in _GRANT_COLS.split(','))}, "
            "d.mac, d.device_id, d.tenant_id, t.name, d.location, d.state, "
            "d.client_secret_hash, d.signed_in_user FROM oauth_device_grants g "
            "JOIN devices d ON d.mac = g.mac JOIN tenants t ON t.id = d.tenant_id "
            "WHERE g.tenant_id = ? AND d.tenant_id = ? AND g.status = ? AND g.expires_at > ? "
            "AND d.client_secret_hash IS NOT NULL"
        )
        base: list[Any] = [tenant_id, tenant_id, GrantStatus.PENDING, tx.now]
        n = len(_GRANT_COLS.split(","))
        if macs is None:
            rows = await tx.fetchall(sql, base)
        else:
            rows = []
            for i in range(0, len(macs), _CHUNK):
                chunk = macs[i : i + _CHUNK]
                rows += await tx.fetchall(
                    sql + f" AND g.mac IN ({','.join('?' * len(chunk))})", [*base, *chunk]
                )
        return [(_grant(r[:n]), _client(r[n:])) for r in rows]

    @staticmethod
    async def approve_many(tx: Tx, grants: Sequence[GrantRow], username: str) -> list[str]:
        """Approve these pending grants as `username` in a few set-wise statements: each
        device's other sessions are revoked (one user per device) and it is signed in as
        `username`. Returns the MACs whose grant moved (a grant answered meanwhile does not)."""
        approved: list[str] = []
        marks, session = _marks(SESSION)
        from_ = sorted(device_sources(DeviceEvent.SIGN_IN))
        for i in range(0, len(grants), _CHUNK):
            chunk = grants[i : i + _CHUNK]
            ids = [g.id for g in chunk]
            q = ",".join("?" * len(chunk))
            moved = await tx.fetchall(
                f"UPDATE oauth_device_grants SET status = ?, username = ?, decided_at = ?, "
                f"user_code_digest = NULL WHERE id IN ({q}) AND expires_at > ? AND status = ? "
                "RETURNING mac, id",
                [
                    target(GrantEvent.APPROVE),
                    username,
                    tx.now,
                    *ids,
                    tx.now,
                    GrantStatus.PENDING,
                ],
            )
            if not moved:
                continue
            macs = [str(r[0]) for r in moved]
            kept = [str(r[1]) for r in moved]
            m = ",".join("?" * len(macs))
            await tx.execute(
                "DELETE FROM oauth_refresh_tokens WHERE grant_id IN (SELECT id FROM "
                f"oauth_device_grants WHERE mac IN ({m}) AND id NOT IN ({m}) "
                f"AND status IN ({marks}))",
                (*macs, *kept, *session),
            )
            await _move_grants(
                tx,
                GrantEvent.REVOKE,
                f"mac IN ({m}) AND id NOT IN ({m})",
                (*macs, *kept),
                among=SESSION,
                sets=", revoked_at = ?",
                set_params=(tx.now,),
            )
            await tx.execute(
                "UPDATE devices SET state = ?, updated_at = ?, signed_in_user = ? "
                f"WHERE mac IN ({m}) AND state IN ({','.join('?' * len(from_))})",
                (device_target(DeviceEvent.SIGN_IN), tx.now, username, *macs, *from_),
            )
            await tx.mark_changed(macs)
            approved += macs
        return approved

    @staticmethod
    async def record_poll(tx: Tx, grant_id: str, at: float, interval_s: int) -> None:
        await tx.execute(
            "UPDATE oauth_device_grants SET last_poll_at = ?, interval_s = ? WHERE id = ?",
            (at, interval_s, grant_id),
        )

    @staticmethod
    async def decide(tx: Tx, grant_id: str, event: GrantEvent, username: str | None) -> bool:
        """Approve or deny a pending, unexpired grant; False if it was no longer pending."""
        if event not in (GrantEvent.APPROVE, GrantEvent.DENY):
            raise GrantTransitionError(f"a user's answer is approve or deny, not {event.value}")
        moved = await _move_grants(
            tx,
            event,
            "id = ? AND expires_at > ?",
            (grant_id, tx.now),
            sets=", username = ?, decided_at = ?, user_code_digest = NULL",
            set_params=(username, tx.now),
        )
        return moved == 1

    @staticmethod
    async def mark_issued(tx: Tx, grant_id: str) -> bool:
        """Approved -> issued, exactly once: of two concurrent polls only one gets tokens."""
        moved = await _move_grants(
            tx, GrantEvent.ISSUE, "id = ?", (grant_id,), sets=", user_code_sealed = NULL"
        )
        return moved == 1

    @staticmethod
    async def revoke_grant(tx: Tx, grant_id: str) -> None:
        await tx.execute("DELETE FROM oauth_refresh_tokens WHERE grant_id = ?", (grant_id,))
        await _move_grants(
            tx, GrantEvent.REVOKE, "id = ?", (grant_id,), sets=_REVOKED_SETS, set_params=(tx.now,)
        )

    @staticmethod
    async def revoke_other_sessions(tx: Tx, mac: str, keep: str) -> int:
        """Revoke the device's signed-in sessions other than `keep` (one user per device)."""
        marks, session = _marks(SESSION)
        await tx.execute(
            "DELETE FROM oauth_refresh_tokens WHERE grant_id IN (SELECT id FROM "
            f"oauth_device_grants WHERE mac = ? AND id != ? AND status IN ({marks}))",
            (mac, keep, *session),
        )
        return await _move_grants(
            tx,
            GrantEvent.REVOKE,
            "mac = ? AND id != ?",
            (mac, keep),
            among=SESSION,
            sets=", revoked_at = ?",
            set_params=(tx.now,),
        )

    @staticmethod
    async def revoke_user_sessions(tx: Tx, username: str) -> list[str]:
        """Revoke every session of `username`; returns the MACs that were signed in with it."""
        marks, session = _marks(SESSION)
        rows = await tx.fetchall(
            "SELECT DISTINCT mac FROM oauth_device_grants WHERE username = ? AND "
            f"status IN ({marks}) ORDER BY mac",
            (username, *session),
        )
        await tx.execute(
            "DELETE FROM oauth_refresh_tokens WHERE grant_id IN (SELECT id FROM "
            f"oauth_device_grants WHERE username = ? AND status IN ({marks}))",
            (username, *session),
        )
        await _move_grants(
            tx,
            GrantEvent.REVOKE,
            "username = ?",
            (username,),
            among=SESSION,
            sets=", revoked_at = ?",
            set_params=(tx.now,),
        )
        return [r[0] for r in rows]

    @staticmethod
    async def macs_signed_in_as(tx: Tx, username: str) -> list[str]:
        rows = await tx.fetchall(
            "SELECT mac FROM devices WHERE signed_in_user = ? AND state = ? ORDER BY mac",
            (username, DeviceState.SIGNED_IN),
        )
        return [r[0] for r in rows]

    # ---- refresh tokens ----------------------------------------------------------------------

    @staticmethod
    async def insert_refresh(tx: Tx, digest: bytes, grant_id: str, expires_at: str) -> None:
        await tx.execute(
            "INSERT INTO oauth_refresh_tokens (digest, grant_id, created_at, expires_at) "
            "VALUES (?, ?, ?, ?)",
            (digest, grant_id, tx.now, expires_at),
        )

    _REFRESH_SQL = (
        "SELECT r.grant_id, r.expires_at, r.rotated_at, g.status, g.client_id, g.mac, "
        "g.tenant_id, g.scope, g.username, u.disabled FROM oauth_refresh_tokens r "
        "JOIN oauth_device_grants g ON g.id = r.grant_id "
        "LEFT JOIN tenant_users u ON u.username = g.username WHERE r.digest = ?"
    )

    @staticmethod
    def _refresh(r: Sequence[Any]) -> RefreshRow:
        return RefreshRow(
            r[0],
            r[1],
            r[2],
            GrantStatus(r[3]),
            r[4],
            r[5],
            r[6],
            r[7],
            r[8],
            None if r[9] is None else bool(r[9]),
        )

    @classmethod
    async def refresh_in_tx(cls, tx: Tx, digest: bytes) -> RefreshRow | None:
        row = await tx.fetchone(cls._REFRESH_SQL, (digest,))
        return cls._refresh(row) if row else None

    async def refresh_token(self, digest: bytes) -> RefreshRow | None:
        row = await self.store._one(self._REFRESH_SQL, (digest,))
        return self._refresh(row) if row else None

    @staticmethod
    async def rotate_refresh(tx: Tx, digest: bytes, grant_id: str) -> bool:
        """Mark `digest` used, exactly once; keep only it as the grant's replay tripwire."""
        cur = await tx.execute(
            "UPDATE oauth_refresh_tokens SET rotated_at = ? WHERE digest = ? AND rotated_at IS NULL",
            (tx.now, digest),
        )
        if int(cur.rowcount) != 1:
            return False
        await tx.execute(
            "DELETE FROM oauth_refresh_tokens WHERE grant_id = ? AND rotated_at IS NOT NULL "
            "AND digest != ?",
            (grant_id, digest),
        )
        return True


__all__ = [
    "OAuthStore",
    "UserRow",
    "GrantRow",
    "ClientRow",
    "RefreshRow",
    "revoke_device_tokens",
]
