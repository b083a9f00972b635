"""SQL for the registry's device rows that the services write: the one guarded state change.

Writes take the open `Tx` of a `store.transaction(now)` so that the caller's checks, the change
and its audit entry commit together.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from server.registry.model import DeviceEvent, sources, target
from server.store.sqlite import Tx

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


__all__ = ["set_state"]
