"""Lease pool for `full` mode: pure (no I/O, `now` passed in), returning the changes to persist.

Addresses are handled as ints inside and as dotted text in `Lease` (what the store keeps). A
client is its option 61 client identifier when it sends one, else its MAC (RFC 2131 §4.2). Each
state-changing call returns `PoolResult.changes`: `Lease` rows to upsert by address. Offers are
not persisted: an offer is no promise (RFC 2131 §4.3.1), and a lost offer only costs a retry.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from enum import StrEnum
from typing import Any, Protocol


class LeaseState(StrEnum):
    OFFERED = "offered"  # held for a client between OFFER and REQUEST (memory only)
    BOUND = "bound"  # acknowledged; expires_at is the end of the lease
    RELEASED = "released"  # given back by the client (RFC 2131 §4.3.4)
    EXPIRED = "expired"  # lease ran out, or a quarantine ended
    DECLINED = "declined"  # client found it in use (DHCPDECLINE); quarantined until expires_at


@dataclass(frozen=True, slots=True)
class Lease:
    """One address's latest state; the store upserts these by `ip`."""

    ip: str
    mac: str
    client_id: bytes | None
    state: LeaseState
    expires_at: float  # epoch seconds: lease end, offer hold end or quarantine end
    subnet: str  # e.g. "198.18.77.0/24"
    updated_at: float


class LeaseStore(Protocol):
    """Where full-mode leases persist; the SQLite store implements this."""

    async def load_leases(self) -> list[Lease]: ...

    async def save_leases(self, changes: Sequence[Lease]) -> None:
        """Upsert every lease in one transaction, keyed by `ip`; later items win."""
        ...


class MemoryLeaseStore:
    """A LeaseStore that keeps leases in a dict: real but not durable (labs, tests)."""

    def __init__(self, leases: Iterable[Lease] = ()) -> None:
        self.leases: dict[str, Lease] = {lease.ip: lease for lease in leases}
        self.saves = 0

    async def load_leases(self) -> list[Lease]:
        return list(self.leases.values())

    async def save_leases(self, changes: Sequence[Lease]) -> None:
        self.saves += 1
        for lease in changes:
            self.leases[lease.ip] = lease


def ip_text(ip: int) -> str:
    """An IPv4 address as an int to dotted-quad text (what str(IPv4Address(ip)) gives, faster)."""
    return f"{ip >> 24}.{(ip >> 16) & 255}.{(ip >> 8) & 255}.{ip & 255}"


@dataclass(frozen=True, slots=True)
class Subnet:
    """One subnet served in full mode."""

    network: ipaddress.IPv4Network
    pool_first: ipaddress.IPv4Address
    pool_last: ipaddress.IPv4Address
    router: ipaddress.IPv4Address | None
    dns: tuple[ipaddress.IPv4Address, ...]
    lease_time: int
    # Derived once here, because the packet path would otherwise redo these conversions on
    # every request (ipaddress objects are slow to format and compare).
    key: str = field(init=False, repr=False, compare=False)
    net_lo: int = field(init=False, repr=False, compare=False)
    net_hi: int = field(init=False, repr=False, compare=False)
    pool_lo: int = field(init=False, repr=False, compare=False)
    pool_hi: int = field(init=False, repr=False, compare=False)
    # The subnet's own reply options on the wire: mask (1), router (3), DNS servers (6).
    reply_options: tuple[tuple[int, bytes], ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        net = self.network
        opts: list[tuple[int, bytes]] = [(1, net.netmask.packed)]
        if self.router is not None:
            opts.append((3, self.router.packed))
        if self.dns:
            opts.append((6, b"".join(a.packed for a in self.dns)))
        for name, value in (
            ("key", str(net)),
            ("net_lo", int(net.network_address)),
            ("net_hi", int(net.broadcast_address)),
            ("pool_lo", int(self.pool_first)),
            ("pool_hi", int(self.pool_last)),
            ("reply_options", tuple(opts)),
        ):
            object.__setattr__(self, name, value)

    def contains(self, ip: int) -> bool:
        return self.net_lo <= ip <= self.net_hi

    def in_pool(self, ip: int) -> bool:
        return self.pool_lo <= ip <= self.pool_hi


MAX_LEASE_TIME = 7 * 86400  # a week: long enough for any site, short enough to recover addresses
# The keys of one [[dhcp.subnets]] table: (type, default, meaning), for the generated
# configuration reference (server/config_reference.py); the parser below allows exactly these.
SUBNET_KEY_DOCS: dict[str, tuple[str, str, str]] = {
    "subnet": ("IPv4 network", "required", "the subnet, e.g. 198.18.77.0/24"),
    "pool": (
        "address range",
        "required",
        "addresses leased, 'first-last' inside the subnet (not its network or broadcast address)",
    ),
    "router": (
        "IPv4 address",
        "none",
        "default gateway (option 3); inside the subnet, outside the pool",
    ),
    "dns": ("list of IPv4 addresses", "[]", "DNS servers (option 6); outside the pool"),
    "lease_time": (
        "integer, 60-604800",
        "3600",
        "seconds a lease lasts (option 51); renewals at half of it",
    ),
}
SUBNET_KEYS = tuple(SUBNET_KEY_DOCS)


def subnet_from_mapping(d: Mapping[str, Any], where: str = "dhcp.subnets") -> Subnet:
    """Build a Subnet from one `[[dhcp.subnets]]` table (subnet, pool, router, dns, lease_time).

    The only rules a subnet is checked by: the settings call this for each table, so
    `imprint check-config` refuses exactly what `imprint serve` would. `where` names the table
    in messages (e.g. "dhcp.subnets.0"); a ValueError starts with the key to fix.
    """
    if not isinstance(d, Mapping):
        raise ValueError(
            f"{where}: each subnet must be a table with subnet, pool, router, dns, lease_time"
        )
    unknown = sorted(str(k) for k in d if k not in SUBNET_KEYS)
    if unknown:
        raise ValueError(
            f"{where}: unknown key {unknown[0]!r}; allowed keys: {', '.join(SUBNET_KEYS)}"
        )
    try:
        net = ipaddress.IPv4Network(str(d.get("subnet", "")), strict=True)
    except ValueError as e:
        raise ValueError(
            f"{where}.subnet: {d.get('subnet')!r} is not an IPv4 network like 198.18.77.0/24 ({e})"
        ) from None
    pool = d.get("pool")
    if not isinstance(pool, str) or "-" not in pool:
        raise ValueError(
            f"{where}.pool: give the range as 'first-last', e.g. '198.18.77.100-198.18.77.200'"
            f"{f' (got {pool!r})' if pool is not None else ''}"
        )
    first_s, _, last_s = pool.partition("-")
    try:
        first = ipaddress.IPv4Address(first_s.strip())
        last = ipaddress.IPv4Address(last_s.strip())
    except ValueError as e:
        raise ValueError(f"{where}.pool: {pool!r}: {e}") from None
    hosts_lo = net.network_address + 1 if net.prefixlen < 31 else net.network_address
    hosts_hi = net.broadcast_address - 1 if net.prefixlen < 31 else net.broadcast_address
    if not (hosts_lo <= first <= last <= hosts_hi):
        raise ValueError(
            f"{where}.pool: {pool!r} must be an ascending range of host addresses inside {net} "
            "(not the network or broadcast address)"
        )
    router = None
    if d.get("router") not in (None, ""):
        try:
            router = ipaddress.IPv4Address(str(d["router"]))
        except ValueError as e:
            raise ValueError(f"{where}.router: {e}") from None
        if router not in net:
            raise ValueError(f"{where}.router: {router} is not inside {net}")
        if first <= router <= last:
            raise ValueError(f"{where}.router: {router} is inside the pool {pool}; shrink the pool")
    dns_raw = d.get("dns", [])
    if isinstance(dns_raw, str) or not isinstance(dns_raw, Sequence):
        raise ValueError(f'{where}.dns: give a list of IPv4 addresses, e.g. ["198.18.77.1"]')
    try:
        dns = tuple(ipaddress.IPv4Address(str(a)) for a in dns_raw)
    except ValueError as e:
        raise ValueError(f"{where}.dns: {e}") from None
    for a in dns:
        if first <= a <= last:
            raise ValueError(f"{where}.dns: {a} is inside the pool {pool}; shrink the pool")
    lease_time = d.get("lease_time", 3600)
    if (
        isinstance(lease_time, bool)
        or not isinstance(lease_time, int)
        or not 60 <= lease_time <= MAX_LEASE_TIME
    ):
        raise ValueError(
            f"{where}.lease_time: {lease_time!r} must be whole seconds from 60 to {MAX_LEASE_TIME}"
        )
    return Subnet(
        network=net, pool_first=first, pool_last=last, router=router, dns=dns, lease_time=lease_time
    )


def subnets_from_tables(tables: object, where: str = "dhcp.subnets") -> tuple[Subnet, ...]:
    """Every `[[dhcp.subnets]]` table built and checked together: no two may overlap (a client's
    subnet is found by address, so an overlap would make the choice depend on file order)."""
    if isinstance(tables, str | bytes) or not isinstance(tables, Sequence):
        raise ValueError(f"{where}: give a list of [[dhcp.subnets]] tables")
    out: list[Subnet] = []
    for i, table in enumerate(tables):
        s = table if isinstance(table, Subnet) else subnet_from_mapping(table, f"{where}.{i}")
        for j, other in enumerate(out):
            if s.network.overlaps(other.network):
                same = "is given twice" if s.network == other.network else "overlaps"
                raise ValueError(
                    f"{where}.{i}.subnet: {s.network} {same} ({where}.{j} is {other.network}); "
                    "give each network once"
                )
        out.append(s)
    return tuple(out)


def subnet_table(s: Subnet) -> dict[str, Any]:
    """A Subnet as its `[[dhcp.subnets]]` table: subnet_from_mapping(subnet_table(s)) == s."""
    table: dict[str, Any] = {"subnet": str(s.network), "pool": f"{s.pool_first}-{s.pool_last}"}
    if s.router is not None:
        table["router"] = str(s.router)
    table["dns"] = [str(a) for a in s.dns]
    table["lease_time"] = s.lease_time
    return table


def check_server_address(
    subnets: Sequence[Subnet], server_ip: str, where: str = "dhcp.subnets"
) -> None:
    """ValueError when a pool holds this server's own address (full mode would lease it out)."""
    me = ipaddress.IPv4Address(server_ip)
    for i, s in enumerate(subnets):
        if s.pool_first <= me <= s.pool_last:
            raise ValueError(
                f"{where}.{i}.pool: {s.pool_first}-{s.pool_last} contains this server's own "
                f"address {me} (dhcp.server_ip); shrink the pool"
            )


class PoolOutcome(StrEnum):
    OFFER = "offer"
    ACK = "ack"
    NAK = "nak"
    SILENT = "silent"  # no reply, by protocol


class PoolReason(StrEnum):
    """Stable codes for what the pool decided."""

    OFFERED = "DHCP_OFFERED"
    BOUND = "DHCP_BOUND"
    RENEWED = "DHCP_RENEWED"
    INFORMED = "DHCP_INFORMED"
    NO_SUBNET = "DHCP_NO_SUBNET"  # no configured subnet for giaddr / the receiving interface
    POOL_EXHAUSTED = "DHCP_POOL_EXHAUSTED"
    NOT_SELECTED = "DHCP_NOT_SELECTED"  # REQUEST names another server (RFC 2131 §4.3.2)
    NO_REQUESTED_IP = "DHCP_NO_REQUESTED_IP"  # SELECTING without option 50
    WRONG_NETWORK = "DHCP_WRONG_NETWORK"  # requested address not on the client's subnet
    WRONG_ADDRESS = "DHCP_WRONG_ADDRESS"  # not the address we hold for this client
    ADDRESS_TAKEN = "DHCP_ADDRESS_TAKEN"  # bound to another client
    UNKNOWN_CLIENT = "DHCP_UNKNOWN_CLIENT"  # INIT-REBOOT with no record: stay silent
    NOT_OUR_LEASE = "DHCP_NOT_OUR_LEASE"  # renew/release of an address we do not serve
    RELEASED = "DHCP_RELEASED"
    DECLINED = "DHCP_DECLINED"


@dataclass(frozen=True, slots=True)
class PoolResult:
    outcome: PoolOutcome
    reason: PoolReason
    lease: Lease | None = None
    subnet: Subnet | None = None
    changes: tuple[Lease, ...] = ()


_Owner = tuple[str, bytes | str]  # ("cid", option 61) or ("mac", MAC): who holds a lease


def _owner(mac: str, client_id: bytes | None) -> _Owner:
    return ("cid", client_id) if client_id else ("mac", mac)


def _lease_owner(lease: Lease) -> _Owner:
    return _owner(lease.mac, lease.client_id)


class LeasePool:
    """Addresses of every configured subnet and who holds them."""

    def __init__(
        self,
        subnets: Sequence[Subnet],
        *,
        offer_hold: float = 60,
        decline_quarantine: float = 86400,
    ) -> None:
        self.subnets = tuple(subnets)
        self.offer_hold = offer_hold
        # Kea's decline-probation-period default: long enough for a conflicting host to go.
        self.decline_quarantine = decline_quarantine
        self._by_ip: dict[int, Lease] = {}
        self._owned: dict[tuple[str, _Owner], int] = {}
        # Fresh addresses are handed out in order; one never returns to "fresh", so a cursor
        # per subnet makes finding one O(1) amortised.
        self._fresh: dict[str, int] = {s.key: s.pool_lo for s in self.subnets}

    # -- lookups --

    def subnet_containing(self, ip: int) -> Subnet | None:
        for s in self.subnets:
            if s.contains(ip):
                return s
        return None

    def select_subnet(self, giaddr: int, local_ip: int) -> Subnet | None:
        """The subnet a client is on: the relay's (giaddr) or the receiving interface's."""
        return self.subnet_containing(giaddr if giaddr else local_ip)

    def lease_for(self, ip: str) -> Lease | None:
        return self._by_ip.get(int(ipaddress.IPv4Address(ip)))

    def leases(self) -> list[Lease]:
        return list(self._by_ip.values())

    def free_count(self, subnet: Subnet, now: float) -> int:
        """Addresses of `subnet`'s pool anyone could be offered now."""
        return sum(
            1
            for ip in range(subnet.pool_lo, subnet.pool_hi + 1)
            if self._free_for_anyone(self._by_ip.get(ip), now)
        )

    def load(self, leases: Iterable[Lease]) -> int:
        """Adopt persisted leases; returns how many were skipped (outside today's pools)."""
        skipped = 0
        for lease in leases:
            ip = int(ipaddress.IPv4Address(lease.ip))
            subnet = self.subnet_containing(ip)
            if subnet is None or not subnet.in_pool(ip):
                skipped += 1
                continue
            lease = replace(lease, subnet=subnet.key)
            self._set(ip, lease)
        for s in self.subnets:
            self._advance_fresh(s)
        return skipped

    # -- internals --

    @staticmethod
    def _free_for_anyone(lease: Lease | None, now: float) -> bool:
        if lease is None:
            return True
        if lease.state in (LeaseState.BOUND, LeaseState.OFFERED, LeaseState.DECLINED):
            return lease.expires_at <= now
        return True

    def _usable_by(self, ip: int, owner: _Owner, now: float) -> bool:
        lease = self._by_ip.get(ip)
        if lease is None:
            return True
        if lease.state is LeaseState.DECLINED:
            return lease.expires_at <= now
        if _lease_owner(lease) == owner:
            return True
        return self._free_for_anyone(lease, now)

    def _set(self, ip: int, lease: Lease) -> None:
        old = self._by_ip.get(ip)
        if old is not None:
            key = (old.subnet, _lease_owner(old))
            if self._owned.get(key) == ip:
                del self._owned[key]
        self._by_ip[ip] = lease
        if lease.state is not LeaseState.DECLINED:
            key = (lease.subnet, _lease_owner(lease))
            prev = self._owned.get(key)
            if prev is not None and prev != ip:
                # A client holds one address per subnet; its old one goes back to the pool.
                old_lease = self._by_ip[prev]
                if old_lease.state in (LeaseState.BOUND, LeaseState.OFFERED):
                    at = lease.updated_at
                    self._by_ip[prev] = replace(
                        old_lease, state=LeaseState.RELEASED, expires_at=at, updated_at=at
                    )
            self._owned[key] = ip

    def _advance_fresh(self, subnet: Subnet) -> None:
        cur = self._fresh[subnet.key]
        last = subnet.pool_hi
        while cur <= last and cur in self._by_ip:
            cur += 1
        self._fresh[subnet.key] = cur

    def _pick(self, subnet: Subnet, owner: _Owner, requested: int | None, now: float) -> int | None:
        held = self._owned.get((subnet.key, owner))
        if held is not None and self._usable_by(held, owner, now):
            return held
        if (
            requested is not None
            and subnet.in_pool(requested)
            and self._usable_by(requested, owner, now)
        ):
            return requested
        self._advance_fresh(subnet)
        cur = self._fresh[subnet.key]
        if cur <= subnet.pool_hi:
            return cur
        # No never-used address left: reuse the one free for longest. `expires_at` is when
        # each state stopped holding the address (lease end, release time, hold/quarantine end).
        best: int | None = None
        best_at = 0.0
        for ip in range(subnet.pool_lo, subnet.pool_hi + 1):
            lease = self._by_ip.get(ip)
            if self._free_for_anyone(lease, now):
                at = lease.expires_at if lease is not None else float("-inf")
                if best is None or at < best_at:
                    best, best_at = ip, at
        return best

    def _bind(
        self,
        subnet: Subnet,
        ip: int,
        mac: str,
        client_id: bytes | None,
        now: float,
        reason: PoolReason,
    ) -> PoolResult:
        before = self._owned.get((subnet.key, _owner(mac, client_id)))
        lease = Lease(
            ip=ip_text(ip),
            mac=mac,
            client_id=client_id,
            state=LeaseState.BOUND,
            expires_at=now + subnet.lease_time,
            subnet=subnet.key,
            updated_at=now,
        )
        self._set(ip, lease)
        changes: list[Lease] = [lease]
        if before is not None and before != ip:
            changes.append(self._by_ip[before])
        return PoolResult(PoolOutcome.ACK, reason, lease, subnet, tuple(changes))

    # -- DHCP operations (RFC 2131 §4.3) --

    def offer(
        self, subnet: Subnet, mac: str, client_id: bytes | None, requested: int | None, now: float
    ) -> PoolResult:
        """DHCPDISCOVER: hold an address for this client (its own, the requested, or a free one)."""
        owner = _owner(mac, client_id)
        ip = self._pick(subnet, owner, requested, now)
        if ip is None:
            return PoolResult(PoolOutcome.SILENT, PoolReason.POOL_EXHAUSTED, subnet=subnet)
        current = self._by_ip.get(ip)
        if (
            current is not None
            and current.state is LeaseState.BOUND
            and _lease_owner(current) == owner
            and current.expires_at > now
        ):
            lease = current  # already bound: offer it again without downgrading it
        else:
            lease = Lease(
                ip=ip_text(ip),
                mac=mac,
                client_id=client_id,
                state=LeaseState.OFFERED,
                expires_at=now + self.offer_hold,
                subnet=subnet.key,
                updated_at=now,
            )
            self._set(ip, lease)
        return PoolResult(PoolOutcome.OFFER, PoolReason.OFFERED, lease, subnet)

    def select(
        self, subnet: Subnet, mac: str, client_id: bytes | None, requested: int | None, now: float
    ) -> PoolResult:
        """DHCPREQUEST in SELECTING state naming us: bind the offered address or NAK."""
        if requested is None:
            return PoolResult(PoolOutcome.NAK, PoolReason.NO_REQUESTED_IP, subnet=subnet)
        if not subnet.in_pool(requested):
            return PoolResult(PoolOutcome.NAK, PoolReason.WRONG_ADDRESS, subnet=subnet)
        if not self._usable_by(requested, _owner(mac, client_id), now):
            return PoolResult(PoolOutcome.NAK, PoolReason.ADDRESS_TAKEN, subnet=subnet)
        return self._bind(subnet, requested, mac, client_id, now, PoolReason.BOUND)

    def not_selected(self, mac: str, client_id: bytes | None, now: float) -> PoolResult:
        """DHCPREQUEST naming another server: our offers to this client lapse (§4.3.2)."""
        owner = _owner(mac, client_id)
        for s in self.subnets:
            ip = self._owned.get((s.key, owner))
            if ip is None:
                continue
            lease = self._by_ip[ip]
            if lease.state is LeaseState.OFFERED:
                self._by_ip[ip] = replace(lease, expires_at=now, updated_at=now)
        return PoolResult(PoolOutcome.SILENT, PoolReason.NOT_SELECTED)

    def init_reboot(
        self, subnet: Subnet, mac: str, client_id: bytes | None, requested: int, now: float
    ) -> PoolResult:
        """DHCPREQUEST in INIT-REBOOT state: confirm the client's remembered address (§4.3.2)."""
        if not subnet.contains(requested):
            return PoolResult(PoolOutcome.NAK, PoolReason.WRONG_NETWORK, subnet=subnet)
        owner = _owner(mac, client_id)
        held = self._owned.get((subnet.key, owner))
        if held is None:
            # "If the DHCP server has no record of this client, then it MUST remain silent."
            return PoolResult(PoolOutcome.SILENT, PoolReason.UNKNOWN_CLIENT, subnet=subnet)
        if held != requested:
            return PoolResult(PoolOutcome.NAK, PoolReason.WRONG_ADDRESS, subnet=subnet)
        return self._bind(subnet, requested, mac, client_id, now, PoolReason.BOUND)

    def renew(self, mac: str, client_id: bytes | None, ciaddr: int, now: float) -> PoolResult:
        """DHCPREQUEST in RENEWING state (unicast): extend the client's lease on `ciaddr`.

        An address in our pool that nobody holds is bound to the client again: that is how a
        client survives a server that lost its lease database.
        """
        subnet = self.subnet_containing(ciaddr)
        if subnet is None:
            return PoolResult(PoolOutcome.SILENT, PoolReason.NOT_OUR_LEASE)
        if not subnet.in_pool(ciaddr):
            return PoolResult(PoolOutcome.NAK, PoolReason.WRONG_ADDRESS, subnet=subnet)
        if not self._usable_by(ciaddr, _owner(mac, client_id), now):
            return PoolResult(PoolOutcome.NAK, PoolReason.ADDRESS_TAKEN, subnet=subnet)
        return self._bind(subnet, ciaddr, mac, client_id, now, PoolReason.RENEWED)

    def rebind(self, mac: str, client_id: bytes | None, ciaddr: int, now: float) -> PoolResult:
        """DHCPREQUEST in REBINDING state (broadcast): same checks as renew; only the path differs."""
        return self.renew(mac, client_id, ciaddr, now)

    def release(self, mac: str, client_id: bytes | None, ciaddr: int, now: float) -> PoolResult:
        """DHCPRELEASE: the client gives `ciaddr` back (§4.3.4); others' leases are untouched."""
        lease = self._by_ip.get(ciaddr)
        if (
            lease is None
            or _lease_owner(lease) != _owner(mac, client_id)
            or lease.state is not LeaseState.BOUND
        ):
            return PoolResult(PoolOutcome.SILENT, PoolReason.NOT_OUR_LEASE)
        new = replace(lease, state=LeaseState.RELEASED, expires_at=now, updated_at=now)
        self._by_ip[ciaddr] = new
        return PoolResult(
            PoolOutcome.SILENT, PoolReason.RELEASED, new, self.subnet_containing(ciaddr), (new,)
        )

    def decline(
        self, mac: str, client_id: bytes | None, requested: int | None, now: float
    ) -> PoolResult:
        """DHCPDECLINE: the address is in use by someone else; quarantine it (§4.3.3)."""
        if requested is None:
            return PoolResult(PoolOutcome.SILENT, PoolReason.NOT_OUR_LEASE)
        lease = self._by_ip.get(requested)
        if lease is None or _lease_owner(lease) != _owner(mac, client_id):
            return PoolResult(PoolOutcome.SILENT, PoolReason.NOT_OUR_LEASE)
        new = replace(
            lease,
            state=LeaseState.DECLINED,
            expires_at=now + self.decline_quarantine,
            updated_at=now,
        )
        self._set(requested, new)
        return PoolResult(
            PoolOutcome.SILENT, PoolReason.DECLINED, new, self.subnet_containing(requested), (new,)
        )

    def expire(self, now: float) -> tuple[Lease, ...]:
        """Mark lapsed leases and ended quarantines EXPIRED; returns the changes to persist."""
        changes: list[Lease] = []
        for ip, lease in list(self._by_ip.items()):
            if lease.expires_at > now:
                continue
            if lease.state in (LeaseState.BOUND, LeaseState.DECLINED):
                new = replace(lease, state=LeaseState.EXPIRED, updated_at=now)
                self._by_ip[ip] = new
                changes.append(new)
        return tuple(changes)
