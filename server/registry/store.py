"""SQL for the registry's writes: tenants, devices (with the one guarded state change) and API
tokens. The registry service holds no SQL; the reads it shares with other capabilities stay on
the store (server/store/sqlite.py) for now.

Writes take the open `Tx` of a `store.transaction(now)` so that the caller's checks, the change
and its audit entry commit together. A broken uniqueness rule (sqlite3.IntegrityError) is
answered here as the domain's Conflict, with a message that says what clashed.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from server.registry.model import DeviceEvent, DeviceState, sources, target
from server.store.base import Conflict, Tx


@dataclass(frozen=True, slots=True)
class NewDevice:
    mac: str
    device_id: str
    location: str


async def insert_tenant(tx: Tx, tenant_id: str, name: str) -> None:
    try:
        await tx.execute(
            "INSERT INTO tenants (id, name, created_at) VALUES (?, ?, ?)",
            (tenant_id, name, tx.now),
        )
    except sqlite3.IntegrityError as e:
        raise Conflict(f"tenant {tenant_id!r} already exists") from e


_INSERT_DEVICE = (
    "INSERT INTO devices (mac, device_id, tenant_id, location, state, created_at, updated_at) "
    "VALUES (?, ?, ?, ?, ?, ?, ?)"
)


async def insert_device(tx: Tx, tenant_id: str, device: NewDevice) -> None:
    """Register one device, awaiting activation (where the lifecycle starts)."""
    try:
        await tx.execute(_INSERT_DEVICE, _device_params(tx, tenant_id, device))
    except sqlite3.IntegrityError as e:
        # A MAC belongs to at most one tenant; do not say which one holds it.
        raise Conflict(f"MAC {device.mac} is already registered") from e
    await tx.mark_changed([device.mac])


async def insert_devices(tx: Tx, tenant_id: str, devices: Sequence[NewDevice]) -> None:
    """Register many devices in the caller's transaction (all or, on Conflict, none)."""
    try:
        await tx.executemany(_INSERT_DEVICE, [_device_params(tx, tenant_id, d) for d in devices])
    except sqlite3.IntegrityError as e:
        # Lost a race with another writer registering the same MAC: nothing is stored.
        raise Conflict(f"import aborted, nothing stored: {e}") from e
    await tx.mark_changed([d.mac for d in devices])


def _device_params(tx: Tx, tenant_id: str, d: NewDevice) -> tuple[Any, ...]:
    state = DeviceState.AWAITING_ACTIVATION.value
    return (d.mac, d.device_id, tenant_id, d.location, state, tx.now, tx.now)


async def set_location(tx: Tx, mac: str, tenant_id: str, location: str) -> None:
    await tx.execute(
        "UPDATE devices SET location = ?, updated_at = ? WHERE mac = ? AND tenant_id = ?",
        (location, tx.now, mac, tenant_id),
    )
    await tx.mark_changed([mac])


async def set_locations(tx: Tx, tenant_id: str, changes: Sequence[tuple[str, str, str]]) -> None:
    """Move many devices of `tenant_id` to new locations: (mac, expected old, new) each.

    All or none: when any device is gone or no longer at its expected location (another writer
    got there first), raises Conflict and the caller's transaction stores nothing.
    """
    for i in range(0, len(changes), 500):
        chunk = changes[i : i + 500]
        marks = ",".join("?" * len(chunk))
        current = dict(
            await tx.fetchall(
                f"SELECT mac, location FROM devices WHERE tenant_id = ? AND mac IN ({marks})",
                [tenant_id, *(mac for mac, _old, _new in chunk)],
            )
        )
        moved = [mac for mac, old, _new in chunk if current.get(mac) != old]
        if moved:
            raise Conflict(
                f"{len(moved)} device(s) changed or were deleted while this import ran "
                f"(first: {moved[0]}); nothing was stored: upload the file again"
            )
    await tx.executemany(
        "UPDATE devices SET location = ?, updated_at = ? WHERE mac = ? AND tenant_id = ?",
        [(new, tx.now, mac, tenant_id) for mac, _old, new in changes],
    )
    await tx.mark_changed([mac for mac, _old, _new in changes])


async def tenant_macs(tx: Tx, tenant_id: str) -> list[str]:
    rows = await tx.fetchall(
        "SELECT mac FROM devices WHERE tenant_id = ? ORDER BY mac", (tenant_id,)
    )
    return [str(r[0]) for r in rows]


async def count_tenant_users(tx: Tx, tenant_id: str) -> int:
    row = await tx.fetchone("SELECT COUNT(*) FROM tenant_users WHERE tenant_id = ?", (tenant_id,))
    return int(row[0]) if row else 0


async def delete_tenant(tx: Tx, tenant_id: str, macs: Sequence[str]) -> None:
    """Delete the tenant with its devices (their codes and grants cascade) and user accounts;
    its API tokens and admin accounts go with it (ON DELETE CASCADE). The audit log stays."""
    for start in range(0, len(macs), 500):
        chunk = list(macs[start : start + 500])
        marks = ",".join("?" * len(chunk))
        await tx.execute(f"DELETE FROM devices WHERE mac IN ({marks})", chunk)
        await tx.mark_changed(chunk)
    await tx.execute("DELETE FROM tenant_users WHERE tenant_id = ?", (tenant_id,))
    await tx.execute("DELETE FROM tenants WHERE id = ?", (tenant_id,))


async def delete_device(tx: Tx, mac: str, tenant_id: str) -> None:
    """Delete the device (its code and grants go with it: ON DELETE CASCADE)."""
    await tx.execute("DELETE FROM devices WHERE mac = ? AND tenant_id = ?", (mac, tenant_id))
    await tx.mark_changed([mac])


async def insert_token(
    tx: Tx, token_id: str, digest: bytes, role: str, tenant_id: str | None, name: str
) -> None:
    try:
        await tx.execute(
            "INSERT INTO api_tokens (id, digest, role, tenant_id, name, created_at) "
            "VALUES (?, ?, ?, ?, ?, ?)",
            (token_id, digest, role, tenant_id, name, tx.now),
        )
    except sqlite3.IntegrityError as e:
        raise Conflict(f"token id {token_id!r} is taken; try again") from e


async def revoke_token(tx: Tx, token_id: str) -> bool:
    """Revoke an active token; False if there is none with that id."""
    cur = await tx.execute(
        "UPDATE api_tokens SET revoked_at = ? WHERE id = ? AND revoked_at IS NULL",
        (tx.now, token_id),
    )
    return int(cur.rowcount) == 1


# Columns a state change may set beside `state` (never built from caller text).
_STATE_COLUMNS = frozenset(
    {"client_secret_hash", "provisioned_at", "provisioned_from", "signed_in_user"}
)


async def set_state(
    tx: Tx,
    mac: str,
    event: DeviceEvent,
    *,
    tenant_id: str | None = None,
    also: Mapping[str, Any] | None = None,
) -> bool:
    """Apply `event` to the device, guarded by the transition table; True if it moved.

    The UPDATE only matches a device in one of the event's source states (`sources(event)`), so
    a device changed meanwhile, or in a state the table does not allow, is left as it is and
    False is returned. `also` sets other device columns in the same statement. The change is
    recorded for other processes' indexes either way.
    """
    extra = dict(also or {})
    unknown = set(extra) - _STATE_COLUMNS
    if unknown:
        raise ValueError(f"set_state cannot set {sorted(unknown)}")
    from_ = sorted(sources(event))
    sets = ["state = ?", "updated_at = ?", *(f"{col} = ?" for col in extra)]
    params: list[Any] = [target(event), tx.now, *extra.values(), mac, *from_]
    where = f"mac = ? AND state IN ({','.join('?' * len(from_))})"
    if tenant_id is not None:
        where += " AND tenant_id = ?"
        params.append(tenant_id)
    cur = await tx.execute(f"UPDATE devices SET {', '.join(sets)} WHERE {where}", params)
    await tx.mark_changed([mac])
    return int(cur.rowcount) == 1


__all__ = [
    "NewDevice",
    "insert_tenant",
    "insert_device",
    "insert_devices",
    "set_location",
    "set_locations",
    "delete_device",
    "set_state",
    "insert_token",
    "revoke_token",
]
