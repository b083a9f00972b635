"""Full-mode DHCP leases, scoped as every registry read is: an operator sees every lease (those
of MACs no longer registered too), a tenant admin only the leases of its tenant's devices, and
asking for another tenant is 404, the same answer as for a tenant that does not exist.

Shared by GET /api/v1/leases, `imprint leases` and the admin UI's Leases page.
"""

from __future__ import annotations

from server.core.mac import MacError, normalize_mac
from server.dhcp.leaseview import LeasePage, page_of
from server.registry.service import Principal, Registry
from server.store.base import Invalid, NotFound


async def list_leases(
    reg: Registry,
    who: Principal,
    *,
    tenant: str | None = None,
    mac: str | None = None,
    state: str | None = None,
    limit: int = 100,
    cursor: str | None = None,
) -> LeasePage:
    """One page of the leases `who` may see, in address order; Invalid (422) for a filter,
    limit or cursor that cannot be used, NotFound for a tenant `who` cannot see."""
    if tenant is not None:
        await reg.get_tenant(who, tenant)
    elif who.role != "operator":
        if who.tenant_id is None:
            raise NotFound("this token belongs to no tenant")
        tenant = who.tenant_id
    norm: str | None = None
    if mac is not None:
        try:
            norm = normalize_mac(mac)
        except MacError as e:
            raise Invalid(str(e), [{"field": "mac", "value": mac, "message": str(e)}]) from None
    rows = await reg.store.list_leases(tenant, norm)
    try:
        return page_of(rows, now=reg.clock().timestamp(), state=state, limit=limit, cursor=cursor)
    except ValueError as e:
        raise Invalid(str(e)) from None
