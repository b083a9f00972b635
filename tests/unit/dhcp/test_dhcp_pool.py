"""Full-mode lease pool: allocation, renewal, release, decline quarantine, expiry, exhaustion, relays."""

from __future__ import annotations

import asyncio
import ipaddress
from typing import Any

import pytest

from server.dhcp.pool import (
    Lease,
    LeasePool,
    LeaseState,
    MemoryLeaseStore,
    PoolOutcome,
    PoolReason,
    Subnet,
    check_server_address,
    subnet_from_mapping,
    subnet_table,
    subnets_from_tables,
)

A = "02:00:5e:00:01:01"
B = "02:00:5e:00:01:02"
C = "02:00:5e:00:01:03"
T0 = 1_700_000_000.0


def ip(text: str) -> int:
    return int(ipaddress.IPv4Address(text))


def lab_subnet(pool: str = "198.18.77.100-198.18.77.102", lease_time: int = 3600) -> Subnet:
    return subnet_from_mapping(
        {
            "subnet": "198.18.77.0/24",
            "pool": pool,
            "router": "198.18.77.1",
            "dns": ["198.18.77.1", "198.18.77.2"],
            "lease_time": lease_time,
        }
    )


def relay_subnet() -> Subnet:
    return subnet_from_mapping(
        {"subnet": "10.20.0.0/16", "pool": "10.20.5.1-10.20.5.9", "lease_time": 600}
    )


def new_pool(**kw: Any) -> tuple[LeasePool, Subnet]:
    s = lab_subnet(**kw)
    return LeasePool([s, relay_subnet()], offer_hold=30, decline_quarantine=3600), s


def bind(pool: LeasePool, s: Subnet, mac: str, now: float = T0, cid: bytes | None = None) -> Lease:
    offer = pool.offer(s, mac, cid, None, now)
    assert offer.outcome is PoolOutcome.OFFER and offer.lease is not None
    ack = pool.select(s, mac, cid, ip(offer.lease.ip), now)
    assert ack.outcome is PoolOutcome.ACK and ack.lease is not None
    return ack.lease


def test_offer_then_select_binds_the_first_free_address() -> None:
    pool, s = new_pool()
    offer = pool.offer(s, A, None, None, T0)
    assert offer.lease is not None
    assert (offer.lease.ip, offer.lease.state, offer.changes) == (
        "198.18.77.100",
        LeaseState.OFFERED,
        (),
    )
    ack = pool.select(s, A, None, ip("198.18.77.100"), T0 + 1)
    assert ack.outcome is PoolOutcome.ACK and ack.reason is PoolReason.BOUND
    assert ack.lease is not None and ack.lease.state is LeaseState.BOUND
    assert ack.lease.expires_at == T0 + 1 + 3600
    assert ack.changes == (ack.lease,)


def test_offer_honours_a_free_requested_address_in_the_pool() -> None:
    pool, s = new_pool()
    offer = pool.offer(s, A, None, ip("198.18.77.102"), T0)
    assert offer.lease is not None and offer.lease.ip == "198.18.77.102"
    outside = pool.offer(s, B, None, ip("198.18.77.50"), T0)
    assert outside.lease is not None and outside.lease.ip == "198.18.77.100"


def test_an_offered_address_is_held_from_other_clients_until_the_hold_ends() -> None:
    pool, s = new_pool()
    first = pool.offer(s, A, None, None, T0)
    second = pool.offer(s, B, None, ip("198.18.77.100"), T0 + 1)
    assert first.lease is not None and second.lease is not None
    assert second.lease.ip != first.lease.ip


def test_same_client_gets_the_same_address_again() -> None:
    pool, s = new_pool()
    lease = bind(pool, s, A)
    again = pool.offer(s, A, None, None, T0 + 10)
    assert again.lease is not None and again.lease.ip == lease.ip
    assert again.lease.state is LeaseState.BOUND  # an offer does not downgrade a binding


def test_client_id_identifies_the_client_over_the_mac() -> None:
    pool, s = new_pool()
    lease = bind(pool, s, A, cid=b"\x01host-1")
    # Same client id behind another NIC: same lease; same MAC without that id: another client.
    same = pool.offer(s, B, b"\x01host-1", None, T0 + 1)
    other = pool.offer(s, A, None, None, T0 + 1)
    assert same.lease is not None and same.lease.ip == lease.ip
    assert other.lease is not None and other.lease.ip != lease.ip


def test_select_for_an_address_bound_to_another_client_is_naked() -> None:
    pool, s = new_pool()
    lease = bind(pool, s, A)
    res = pool.select(s, B, None, ip(lease.ip), T0 + 5)
    assert (res.outcome, res.reason) == (PoolOutcome.NAK, PoolReason.ADDRESS_TAKEN)
    res = pool.select(s, B, None, ip("198.18.77.50"), T0 + 5)
    assert (res.outcome, res.reason) == (PoolOutcome.NAK, PoolReason.WRONG_ADDRESS)
    res = pool.select(s, B, None, None, T0 + 5)
    assert (res.outcome, res.reason) == (PoolOutcome.NAK, PoolReason.NO_REQUESTED_IP)


def test_renew_extends_the_lease_and_rebind_does_the_same() -> None:
    pool, s = new_pool()
    lease = bind(pool, s, A)
    renewed = pool.renew(A, None, ip(lease.ip), T0 + 1800)
    assert renewed.outcome is PoolOutcome.ACK and renewed.reason is PoolReason.RENEWED
    assert renewed.lease is not None and renewed.lease.expires_at == T0 + 1800 + 3600
    rebound = pool.rebind(A, None, ip(lease.ip), T0 + 3000)
    assert rebound.lease is not None and rebound.lease.expires_at == T0 + 3000 + 3600
    assert rebound.changes == (rebound.lease,)


def test_renew_of_someone_elses_address_is_naked_and_of_a_foreign_one_silent() -> None:
    pool, s = new_pool()
    lease = bind(pool, s, A)
    assert pool.renew(B, None, ip(lease.ip), T0 + 1).reason is PoolReason.ADDRESS_TAKEN
    assert pool.renew(B, None, ip("198.18.77.7"), T0 + 1).outcome is PoolOutcome.NAK
    foreign = pool.renew(B, None, ip("192.0.2.7"), T0 + 1)
    assert (foreign.outcome, foreign.reason) == (PoolOutcome.SILENT, PoolReason.NOT_OUR_LEASE)


def test_renew_rebinds_a_free_pool_address_after_the_server_lost_its_state() -> None:
    pool, _ = new_pool()
    res = pool.renew(A, None, ip("198.18.77.101"), T0)
    assert res.outcome is PoolOutcome.ACK and res.lease is not None and res.lease.mac == A


def test_init_reboot_rules_of_rfc2131_4_3_2() -> None:
    pool, s = new_pool()
    lease = bind(pool, s, A)
    ok = pool.init_reboot(s, A, None, ip(lease.ip), T0 + 60)
    assert ok.outcome is PoolOutcome.ACK
    wrong = pool.init_reboot(s, A, None, ip("198.18.77.101"), T0 + 60)
    assert (wrong.outcome, wrong.reason) == (PoolOutcome.NAK, PoolReason.WRONG_ADDRESS)
    other_net = pool.init_reboot(s, A, None, ip("192.168.1.10"), T0 + 60)
    assert (other_net.outcome, other_net.reason) == (PoolOutcome.NAK, PoolReason.WRONG_NETWORK)
    unknown = pool.init_reboot(s, B, None, ip("198.18.77.101"), T0 + 60)
    assert (unknown.outcome, unknown.reason) == (PoolOutcome.SILENT, PoolReason.UNKNOWN_CLIENT)


def test_release_frees_the_address_but_keeps_affinity() -> None:
    pool, s = new_pool()
    lease = bind(pool, s, A)
    assert pool.release(B, None, ip(lease.ip), T0 + 1).reason is PoolReason.NOT_OUR_LEASE
    res = pool.release(A, None, ip(lease.ip), T0 + 2)
    assert res.reason is PoolReason.RELEASED and res.lease is not None
    assert res.changes == (res.lease,) and res.lease.state is LeaseState.RELEASED
    assert pool.offer(s, A, None, None, T0 + 3).lease.ip == lease.ip  # type: ignore[union-attr]


def test_declined_address_is_quarantined_then_returns() -> None:
    pool, s = new_pool(pool="198.18.77.100-198.18.77.101")
    lease = bind(pool, s, A)
    res = pool.decline(A, None, ip(lease.ip), T0 + 1)
    assert res.reason is PoolReason.DECLINED and res.lease is not None
    assert res.lease.state is LeaseState.DECLINED and res.lease.expires_at == T0 + 1 + 3600
    # The decliner and everyone else get other addresses while it is quarantined.
    assert pool.offer(s, A, None, ip(lease.ip), T0 + 2).lease.ip == "198.18.77.101"  # type: ignore[union-attr]
    assert pool.select(s, A, None, ip("198.18.77.101"), T0 + 2).outcome is PoolOutcome.ACK
    assert pool.offer(s, B, None, None, T0 + 2).outcome is PoolOutcome.SILENT
    assert pool.offer(s, B, None, ip(lease.ip), T0 + 3).reason is PoolReason.POOL_EXHAUSTED
    after = pool.offer(s, B, None, None, T0 + 1 + 3600)
    assert after.lease is not None and after.lease.ip == lease.ip


def test_decline_of_an_address_the_client_does_not_hold_changes_nothing() -> None:
    pool, s = new_pool()
    lease = bind(pool, s, A)
    assert pool.decline(B, None, ip(lease.ip), T0).reason is PoolReason.NOT_OUR_LEASE
    assert pool.decline(A, None, None, T0).reason is PoolReason.NOT_OUR_LEASE
    assert pool.lease_for(lease.ip) == lease


def test_exhaustion_then_expired_leases_are_reused_oldest_first() -> None:
    pool, s = new_pool()
    leases = [bind(pool, s, mac, now=T0 + i) for i, mac in enumerate((A, B, C))]
    assert pool.free_count(s, T0 + 10) == 0
    res = pool.offer(s, "02:00:5e:00:01:04", None, None, T0 + 10)
    assert (res.outcome, res.reason) == (PoolOutcome.SILENT, PoolReason.POOL_EXHAUSTED)
    changes = pool.expire(T0 + 3600 + 1.5)
    assert [c.ip for c in changes] == [leases[0].ip, leases[1].ip]
    assert all(c.state is LeaseState.EXPIRED for c in changes)
    res = pool.offer(s, "02:00:5e:00:01:04", None, None, T0 + 3602)
    assert res.lease is not None and res.lease.ip == leases[0].ip


def test_expire_ends_quarantines() -> None:
    pool, s = new_pool()
    lease = bind(pool, s, A)
    pool.decline(A, None, ip(lease.ip), T0)
    assert pool.expire(T0 + 3599) == ()
    (change,) = pool.expire(T0 + 3600)
    assert change.ip == lease.ip and change.state is LeaseState.EXPIRED


def test_moving_to_a_new_address_releases_the_old_one() -> None:
    pool, s = new_pool()
    old = bind(pool, s, A)
    res = pool.select(s, A, None, ip("198.18.77.102"), T0 + 5)
    assert res.lease is not None and res.lease.ip == "198.18.77.102"
    assert [c.ip for c in res.changes] == ["198.18.77.102", old.ip]
    assert res.changes[1].state is LeaseState.RELEASED


def test_not_selected_lets_our_offer_lapse() -> None:
    pool, s = new_pool(pool="198.18.77.100-198.18.77.100")
    pool.offer(s, A, None, None, T0)
    assert pool.offer(s, B, None, None, T0 + 1).reason is PoolReason.POOL_EXHAUSTED
    assert pool.not_selected(A, None, T0 + 2).reason is PoolReason.NOT_SELECTED
    assert pool.offer(s, B, None, None, T0 + 3).lease is not None


def test_subnet_choice_uses_giaddr_when_relayed_else_the_local_address() -> None:
    pool, s = new_pool()
    local = ip("198.18.77.1")
    assert pool.select_subnet(0, local) is s
    relayed = pool.select_subnet(ip("10.20.0.1"), local)
    assert relayed is not None and str(relayed.network) == "10.20.0.0/16"
    assert pool.select_subnet(ip("172.16.0.1"), local) is None
    res = pool.offer(relayed, A, None, None, T0)
    assert (
        res.lease is not None and res.lease.ip == "10.20.5.1" and res.lease.subnet == "10.20.0.0/16"
    )


def test_a_client_holds_one_lease_per_subnet() -> None:
    pool, s = new_pool()
    here = bind(pool, s, A)
    relayed = pool.select_subnet(ip("10.20.0.1"), 0)
    assert relayed is not None
    there = bind(pool, relayed, A)
    assert here.ip != there.ip
    assert pool.lease_for(here.ip) == here


def test_load_restores_bindings_and_skips_leases_outside_the_pools() -> None:
    pool, s = new_pool()
    lease = bind(pool, s, A)
    pool.decline(B, None, None, T0)
    restored, _ = new_pool()
    stray = Lease("192.0.2.9", B, None, LeaseState.BOUND, T0 + 99, "192.0.2.0/24", T0)
    assert restored.load([lease, stray]) == 1
    again = restored.offer(s, A, None, None, T0 + 5)
    assert again.lease == lease
    fresh = restored.offer(s, B, None, None, T0 + 5)
    assert fresh.lease is not None and fresh.lease.ip == "198.18.77.101"


def test_memory_lease_store_round_trip() -> None:
    pool, s = new_pool()
    store = MemoryLeaseStore()
    lease = bind(pool, s, A)
    asyncio.run(store.save_leases([lease, pool.release(A, None, ip(lease.ip), T0 + 1).lease]))  # type: ignore[list-item]
    (loaded,) = asyncio.run(store.load_leases())
    assert loaded.state is LeaseState.RELEASED and loaded.ip == lease.ip


@pytest.mark.parametrize(
    ("mapping", "fragment"),
    [
        ({"subnet": "198.18.77.1/24", "pool": "198.18.77.10-198.18.77.20"}, "dhcp.subnets.subnet"),
        ({"subnet": "198.18.77.0/24"}, "pool: give the range as 'first-last'"),
        ({"subnet": "198.18.77.0/24", "pool": "198.18.77.20-198.18.77.10"}, "ascending range"),
        ({"subnet": "198.18.77.0/24", "pool": "198.18.77.0-198.18.77.10"}, "not the network"),
        (
            {"subnet": "198.18.77.0/24", "pool": "198.18.77.10-198.18.78.10"},
            "inside 198.18.77.0/24",
        ),
        ({"subnet": "198.18.77.0/24", "pool": "198.18.77.10-bad"}, "pool"),
        (
            {"subnet": "198.18.77.0/24", "pool": "198.18.77.10-198.18.77.20", "router": "10.0.0.1"},
            "router: 10.0.0.1 is not inside",
        ),
        (
            {
                "subnet": "198.18.77.0/24",
                "pool": "198.18.77.10-198.18.77.20",
                "router": "198.18.77.15",
            },
            "inside the pool",
        ),
        (
            {"subnet": "198.18.77.0/24", "pool": "198.18.77.10-198.18.77.20", "dns": "198.18.77.1"},
            "dns: give a list",
        ),
        ({"subnet": "198.18.77.0/24", "pool": "198.18.77.10-198.18.77.20", "dns": ["x"]}, "dns"),
        (
            {
                "subnet": "198.18.77.0/24",
                "pool": "198.18.77.10-198.18.77.20",
                "dns": ["198.18.77.11"],
            },
            "dns: 198.18.77.11 is inside the pool",
        ),
        (
            {"subnet": "198.18.77.0/24", "pool": "198.18.77.10-198.18.77.20", "lease_time": 5},
            "lease_time",
        ),
        (
            {"subnet": "198.18.77.0/24", "pool": "198.18.77.10-198.18.77.20", "gateway": "x"},
            "unknown key 'gateway'",
        ),
    ],
)
def test_bad_subnet_config_says_what_to_fix(mapping: dict[str, Any], fragment: str) -> None:
    with pytest.raises(ValueError) as exc:
        subnet_from_mapping(mapping)
    assert fragment in str(exc.value)


def test_subnet_tables_are_checked_together() -> None:
    a = {"subnet": "198.18.77.0/24", "pool": "198.18.77.10-198.18.77.20"}
    b = {"subnet": "198.18.0.0/16", "pool": "198.18.1.10-198.18.1.20"}
    c = {"subnet": "10.20.0.0/16", "pool": "10.20.5.1-10.20.5.9"}
    built = subnets_from_tables([a, c])
    assert [str(s.network) for s in built] == ["198.18.77.0/24", "10.20.0.0/16"]
    with pytest.raises(ValueError, match=r"dhcp.subnets.1.subnet: 198.18.77.0/24 is given twice"):
        subnets_from_tables([a, a])
    with pytest.raises(ValueError, match=r"dhcp.subnets.2.subnet: 198.18.0.0/16 overlaps"):
        subnets_from_tables([a, c, b])
    with pytest.raises(ValueError, match=r"dhcp.subnets.1.pool"):
        subnets_from_tables([a, {"subnet": "10.0.0.0/8"}])
    # Each dumps to a table that builds it again.
    assert subnets_from_tables([subnet_table(s) for s in built]) == built


def test_the_server_address_must_stay_out_of_every_pool() -> None:
    subnets = subnets_from_tables(
        [{"subnet": "198.18.77.0/24", "pool": "198.18.77.10-198.18.77.20"}]
    )
    check_server_address(subnets, "198.18.77.1")
    with pytest.raises(ValueError, match=r"dhcp.subnets.0.pool: .* own address 198.18.77.15"):
        check_server_address(subnets, "198.18.77.15")
