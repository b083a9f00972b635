"""The reads every SQL store shares, written once in the house SQL ('?' placeholders, syntax both
SQLite and PostgreSQL accept): a store supplies `_one`, `_all` and `transaction`.

Each read is one call that runs the statement to its end (see SqliteStore's note on why an
execute and a fetch as two calls let a reader keep a stale snapshot).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from contextlib import AbstractAsyncContextManager
from typing import Any

from server.dhcp.leaseview import LeaseRow
from server.dhcp.pool import Lease, LeaseState
from server.registry.discovered import SeenDevice
from server.registry.model import Device, DeviceState, Tenant
from server.store.base import AuditRow, TokenRow, Tx

_DEVICE_COLS = (
    "d.mac, d.tenant_id, d.location, d.state, d.created_at, d.updated_at, d.device_id, "
    "c.expires_at, d.signed_in_user"
)


def _device(row: Sequence[Any]) -> Device:
    return Device(
        mac=row[0],
        tenant_id=row[1],
        location=row[2],
        state=DeviceState(row[3]),
        created_at=row[4],
        updated_at=row[5],
        device_id=row[6],
        code_expires_at=row[7],
        signed_in_user=row[8],
    )


class SqlReads:
    """Reads (and the lease and discovered-list writes) in SQL both backends run as written."""

    # Case-insensitive (for ASCII) substring search: SQLite's LIKE is, PostgreSQL's ILIKE is.
    _LIKE = "LIKE"

    async def _one(self, sql: str, params: Sequence[Any] = ()) -> Any:
        raise NotImplementedError

    async def _all(self, sql: str, params: Sequence[Any] = ()) -> list[Any]:
        raise NotImplementedError

    def transaction(self, now: str) -> AbstractAsyncContextManager[Tx]:
        raise NotImplementedError

    async def get_tenant(self, tenant_id: str) -> Tenant | None:
        row = await self._one("SELECT id, name, created_at FROM tenants WHERE id = ?", (tenant_id,))
        return Tenant(*row) if row else None

    async def list_tenants(self, only: str | None = None) -> list[Tenant]:
        if only is not None:
            rows = await self._all("SELECT id, name, created_at FROM tenants WHERE id = ?", (only,))
        else:
            rows = await self._all("SELECT id, name, created_at FROM tenants ORDER BY id")
        return [Tenant(*r) for r in rows]

    async def get_device(self, mac: str, tenant_id: str | None = None) -> Device | None:
        sql = f"SELECT {_DEVICE_COLS} FROM devices d LEFT JOIN codes c ON c.mac = d.mac WHERE d.mac = ?"
        params: list[Any] = [mac]
        if tenant_id is not None:
            sql += " AND d.tenant_id = ?"
            params.append(tenant_id)
        row = await self._one(sql, params)
        return _device(row) if row else None

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
    ) -> tuple[int | None, list[Device]]:
        """Up to `limit` of a tenant's devices in MAC order: the first ones `after` a MAC, the last
        ones `before` one (keyset: an index seek however deep the page), or those at `offset`.
        The count of all matches walks the tenant's index entries (about 60 ms per million
        devices), so a caller that has it already skips it."""
        where = ["d.tenant_id = ?"]
        params: list[Any] = [tenant_id]
        if state:
            where.append("d.state = ?")
            params.append(state)
        if q:
            like_op = self._LIKE
            where.append(f"(d.mac {like_op} ? ESCAPE '\\' OR d.location {like_op} ? ESCAPE '\\')")
            like = "%" + q.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
            params += [like, like]
        cond = " AND ".join(where)
        count: int | None = None
        if with_count:
            count_row = await self._one(f"SELECT count(*) FROM devices d WHERE {cond}", params)
            count = int(count_row[0])
        order = "d.mac"
        if after is not None:
            cond += " AND d.mac > ?"
            params.append(after)
        if before is not None:
            cond += " AND d.mac < ?"
            params.append(before)
            order = "d.mac DESC"
        rows = await self._all(
            f"SELECT {_DEVICE_COLS} FROM devices d LEFT JOIN codes c ON c.mac = d.mac "
            f"WHERE {cond} ORDER BY {order} LIMIT ? OFFSET ?",
            [*params, limit, offset],
        )
        if before is not None:
            rows.reverse()
        return count, [_device(r) for r in rows]

    async def export_rows(self, tenant_id: str, state: str | None) -> list[tuple[str, str, str]]:
        """(mac, location, state) for the export (its codes come from the provisioning service)."""
        sql = "SELECT d.mac, d.location, d.state FROM devices d WHERE d.tenant_id = ?"
        params: list[Any] = [tenant_id]
        if state:
            sql += " AND d.state = ?"
            params.append(state)
        return await self._all(sql + " ORDER BY d.mac", params)

    async def existing_macs(self, macs: Sequence[str]) -> dict[str, str]:
        """Which of `macs` are registered already: mac -> tenant id."""
        found: dict[str, str] = {}
        for i in range(0, len(macs), 500):
            chunk = macs[i : i + 500]
            marks = ",".join("?" * len(chunk))
            for mac, tenant in await self._all(
                f"SELECT mac, tenant_id FROM devices WHERE mac IN ({marks})", chunk
            ):
                found[mac] = tenant
        return found

    async def macs_in_state(self, tenant_id: str, state: str) -> list[str]:
        rows = await self._all(
            "SELECT mac FROM devices WHERE tenant_id = ? AND state = ? ORDER BY mac",
            (tenant_id, state),
        )
        return [r[0] for r in rows]

    async def devices_in(self, tenant_id: str, macs: Sequence[str]) -> dict[str, Device]:
        """The devices of `tenant_id` among `macs`, by MAC."""
        out: dict[str, Device] = {}
        for i in range(0, len(macs), 500):
            chunk = macs[i : i + 500]
            marks = ",".join("?" * len(chunk))
            for row in await self._all(
                f"SELECT {_DEVICE_COLS} FROM devices d LEFT JOIN codes c ON c.mac = d.mac "
                f"WHERE d.tenant_id = ? AND d.mac IN ({marks})",
                [tenant_id, *chunk],
            ):
                out[row[0]] = _device(row)
        return out

    async def all_device_views(self) -> list[tuple[str, str, str, str, str]]:
        """(mac, tenant_id, tenant_name, state, location) for every device: builds the index."""
        return await self._all(
            "SELECT d.mac, d.tenant_id, t.name, d.state, d.location "
            "FROM devices d JOIN tenants t ON t.id = d.tenant_id"
        )

    async def device_views(self, macs: Sequence[str]) -> list[tuple[str, str, str, str, str]]:
        out: list[tuple[str, str, str, str, str]] = []
        for i in range(0, len(macs), 500):
            chunk = macs[i : i + 500]
            marks = ",".join("?" * len(chunk))
            out += await self._all(
                "SELECT d.mac, d.tenant_id, t.name, d.state, d.location FROM devices d "
                f"JOIN tenants t ON t.id = d.tenant_id WHERE d.mac IN ({marks})",
                chunk,
            )
        return out

    async def max_change_seq(self) -> int:
        row = await self._one("SELECT coalesce(max(seq), 0) FROM registry_changes")
        return int(row[0])

    async def changes_since(self, seq: int, limit: int = 50_000) -> list[tuple[int, str]]:
        return await self._all(
            "SELECT seq, mac FROM registry_changes WHERE seq > ? ORDER BY seq LIMIT ?",
            (seq, limit),
        )

    async def token_by_digest(self, digest: bytes) -> TokenRow | None:
        row = await self._one(
            "SELECT id, role, tenant_id, name, created_at, revoked_at FROM api_tokens "
            "WHERE digest = ?",
            (digest,),
        )
        return TokenRow(*row) if row else None

    async def list_tokens(self) -> list[TokenRow]:
        rows = await self._all(
            "SELECT id, role, tenant_id, name, created_at, revoked_at FROM api_tokens ORDER BY created_at"
        )
        return [TokenRow(*r) for r in rows]

    async def list_audit(
        self, tenant_id: str | None, limit: int, before_id: int | None
    ) -> list[AuditRow]:
        where: list[str] = []
        params: list[Any] = []
        if tenant_id is not None:
            where.append("tenant_id = ?")
            params.append(tenant_id)
        if before_id is not None:
            where.append("id < ?")
            params.append(before_id)
        cond = ("WHERE " + " AND ".join(where)) if where else ""
        rows = await self._all(
            f"SELECT id, at, actor, tenant_id, action, target, before, after FROM audit {cond} "
            "ORDER BY id DESC LIMIT ?",
            [*params, limit],
        )
        return [
            AuditRow(
                r[0],
                r[1],
                r[2],
                r[3],
                r[4],
                r[5],
                json.loads(r[6]) if r[6] else None,
                json.loads(r[7]) if r[7] else None,
            )
            for r in rows
        ]

    # ---- DHCP leases (full mode): the LeaseStore protocol of server/dhcp/pool.py ----------------

    async def load_leases(self) -> list[Lease]:
        rows = await self._all(
            "SELECT ip, mac, client_id, state, expires_at, subnet, updated_at FROM dhcp_leases"
        )
        return [
            Lease(
                ip=r[0],
                mac=r[1],
                client_id=r[2],
                state=LeaseState(r[3]),
                expires_at=r[4],
                subnet=r[5],
                updated_at=r[6],
            )
            for r in rows
        ]

    async def list_leases(
        self, tenant_id: str | None = None, mac: str | None = None
    ) -> list[LeaseRow]:
        """Stored leases with the device holding each (tenant and location; None when its MAC
        is not registered now); with `tenant_id`, only that tenant's devices' leases."""
        where, params = [], []
        if tenant_id is not None:
            where.append("d.tenant_id = ?")
            params.append(tenant_id)
        if mac is not None:
            where.append("l.mac = ?")
            params.append(mac)
        rows = await self._all(
            "SELECT l.ip, l.mac, l.client_id, l.state, l.expires_at, l.subnet, l.updated_at, "
            "d.tenant_id, d.location FROM dhcp_leases l LEFT JOIN devices d ON d.mac = l.mac"
            + (" WHERE " + " AND ".join(where) if where else ""),
            params,
        )
        return [
            LeaseRow(Lease(r[0], r[1], r[2], LeaseState(r[3]), r[4], r[5], r[6]), r[7], r[8])
            for r in rows
        ]

    async def save_leases(self, changes: Sequence[Lease]) -> None:
        """Upsert every lease in one transaction, keyed by ip; later items win."""
        async with self.transaction("") as tx:
            await tx.executemany(
                "INSERT INTO dhcp_leases (ip, mac, client_id, state, expires_at, subnet, "
                "updated_at) VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (ip) DO UPDATE SET "
                "mac = excluded.mac, client_id = excluded.client_id, state = excluded.state, "
                "expires_at = excluded.expires_at, subnet = excluded.subnet, "
                "updated_at = excluded.updated_at",
                [
                    (x.ip, x.mac, x.client_id, x.state.value, x.expires_at, x.subnet, x.updated_at)
                    for x in changes
                ],
            )

    # ---- the discovered list (unregistered MACs seen on the network) ------------------------------

    async def replace_discovered(self, rows: Sequence[SeenDevice]) -> None:
        """Store exactly `rows` as the discovered list, in one transaction."""
        async with self.transaction("") as tx:
            await tx.execute("DELETE FROM discovered")
            await tx.executemany(
                "INSERT INTO discovered (mac, vendor_class, interface, source, first_seen, "
                "last_seen, count) VALUES (?, ?, ?, ?, ?, ?, ?)",
                [
                    (
                        r.mac,
                        r.vendor_class,
                        r.interface,
                        r.source,
                        r.first_seen,
                        r.last_seen,
                        r.count,
                    )
                    for r in rows
                ],
            )

    async def list_discovered(self, limit: int | None = None) -> list[SeenDevice]:
        """Most recently seen first."""
        rows = await self._all(
            "SELECT mac, vendor_class, interface, source, first_seen, last_seen, count "
            "FROM discovered ORDER BY last_seen DESC" + ("" if limit is None else " LIMIT ?"),
            () if limit is None else (limit,),
        )
        return [SeenDevice(r[0], r[1], r[2], r[3], r[4], r[5], r[6]) for r in rows]
