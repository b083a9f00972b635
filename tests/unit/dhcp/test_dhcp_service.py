"""DhcpService glue: metrics, log line, discovered list, live registry, lease persistence before ACK."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from typing import Any

import pytest

from server.core.metrics import Counter, Registry
from server.dhcp.codec import MessageType, decode, ip_bytes
from server.dhcp.pool import Lease, LeaseState, MemoryLeaseStore, subnet_from_mapping
from server.dhcp.responder import Mode
from server.dhcp.service import DhcpConfig, DhcpService
from server.provisioning.sightings import LastSeen, Sightings
from server.registry.discovered import DiscoveredDevices
from server.registry.model import DeviceState, DeviceView, ProvisioningEndpoint
from tests.helpers.fixtures import load_hex_fixture, scapy_dhcp, split_src

MAC = "02:00:5e:00:01:01"
SERVER = "198.18.77.1"
EP = ProvisioningEndpoint("https", "imprint.example.net", 443, "/provision", "ab" * 32)
T0 = 1_700_000_000.0
SUBNET = subnet_from_mapping(
    {
        "subnet": "198.18.77.0/24",
        "pool": "198.18.77.100-198.18.77.199",
        "router": SERVER,
        "lease_time": 600,
    }
)


def view(mac: str) -> DeviceView:
    return DeviceView(mac, "acme", "Acme", DeviceState.AWAITING_ACTIVATION, "desk")


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> float:
        return self.now


def make(
    mode: Mode = Mode.INFORM,
    index: dict[str, DeviceView] | None = None,
    store: MemoryLeaseStore | None = None,
    clock: Clock | None = None,
    **kw: Any,
) -> tuple[DhcpService, Registry, DiscoveredDevices, dict[str, DeviceView]]:
    reg = Registry()
    disc = DiscoveredDevices(max_entries=100)
    idx = index if index is not None else {MAC: view(MAC)}
    cfg = DhcpConfig(mode=mode, server_ip=SERVER, endpoint=EP, subnets=(SUBNET,), **kw)
    svc = DhcpService(cfg, idx, reg, disc, store, clock=clock or Clock())
    return svc, reg, disc, idx


def counter(reg: Registry, name: str) -> Counter:
    m = reg.get(name)
    assert isinstance(m, Counter)
    return m


async def test_inform_fixture_is_answered_and_counted() -> None:
    svc, reg, disc, _ = make()
    (src, data), *_ = load_hex_fixture("dhcp/dhcpcd-inform-ms-uc-client.hex")
    (out,) = await svc.handle(data, split_src(src), "eth0")
    assert out.dest == ("198.18.77.11", 68) and out.msg_type == MessageType.ACK
    reply = decode(out.data)
    assert reply.options[53] == bytes([MessageType.ACK]) and 43 in reply.options
    assert counter(reg, "imprint_dhcp_packets_received_total").value("inform") == 1
    assert counter(reg, "imprint_dhcp_packets_sent_total").value("ack") == 1
    assert counter(reg, "imprint_dhcp_decisions_total").value("reply", "IMP_REGISTERED") == 1
    assert counter(reg, "imprint_dhcp_packets_dropped_total").total() == 0
    assert len(disc) == 0


async def test_unregistered_mac_is_dropped_counted_and_remembered() -> None:
    svc, reg, disc, _ = make(index={})
    (src, data), *_ = load_hex_fixture("dhcp/dhcpcd-inform-ms-uc-client.hex")
    assert await svc.handle(data, split_src(src), "eth0") == []
    assert await svc.handle(data, split_src(src), "eth0") == []
    assert counter(reg, "imprint_dhcp_packets_dropped_total").value("IMP_UNREGISTERED") == 2
    assert counter(reg, "imprint_dhcp_decisions_total").value("ignore", "IMP_UNREGISTERED") == 2
    assert counter(reg, "imprint_dhcp_packets_sent_total").total() == 0
    seen = disc.get(MAC)
    assert seen is not None
    assert (seen.vendor_class, seen.interface, seen.source, seen.count) == (
        "MS-UC-Client",
        "eth0",
        "dhcp",
        2,
    )
    assert "02:00:5e" not in reg.render()  # no MAC in any metric label


async def test_registry_changes_take_effect_on_the_next_packet() -> None:
    svc, _, _, idx = make(index={})
    data = scapy_dhcp("inform", mac=MAC, ciaddr="198.18.77.11")
    assert await svc.handle(data, ("198.18.77.11", 68), "eth0") == []
    idx[MAC] = view(MAC)
    assert len(await svc.handle(data, ("198.18.77.11", 68), "eth0")) == 1
    del idx[MAC]
    assert await svc.handle(data, ("198.18.77.11", 68), "eth0") == []


async def test_malformed_datagrams_are_dropped_with_their_reason() -> None:
    svc, reg, _, _ = make()
    assert await svc.handle(b"\x01\x01\x06", ("198.18.77.11", 68), "eth0") == []
    good = scapy_dhcp("inform", mac=MAC)
    assert (
        await svc.handle(
            good[:236] + b"\x00\x00\x00\x00" + good[240:], ("198.18.77.11", 68), "eth0"
        )
        == []
    )
    dropped = counter(reg, "imprint_dhcp_packets_dropped_total")
    assert dropped.value("DHCP_TRUNCATED") == 1 and dropped.value("DHCP_NO_COOKIE") == 1
    assert counter(reg, "imprint_dhcp_packets_received_total").value("malformed") == 2


async def test_another_servers_reply_is_dropped_and_not_remembered() -> None:
    svc, reg, disc, _ = make(index={})
    offer = scapy_dhcp("offer", op=2, mac="02:00:5e:00:01:07")
    assert await svc.handle(offer, ("198.18.77.254", 67), "eth0") == []
    assert counter(reg, "imprint_dhcp_packets_dropped_total").value("DHCP_NOT_REQUEST") == 1
    assert len(disc) == 0


async def test_multicast_or_zero_chaddr_is_dropped_and_not_remembered() -> None:
    svc, reg, disc, _ = make(index={})
    for mac in ("03:00:5e:00:01:01", "00:00:00:00:00:00"):
        assert await svc.handle(scapy_dhcp("inform", mac=mac), ("198.18.77.11", 68), "eth0") == []
    assert counter(reg, "imprint_dhcp_packets_dropped_total").value("DHCP_BAD_CHADDR") == 2
    assert len(disc) == 0


async def test_one_debug_log_line_per_decision_with_fields(
    caplog: pytest.LogCaptureFixture,
) -> None:
    svc, _, _, _ = make()
    caplog.set_level(logging.DEBUG, logger="imprint.dhcp")
    data = scapy_dhcp("inform", mac=MAC, xid=0xABCDEF01, ciaddr="198.18.77.11")
    await svc.handle(data, ("198.18.77.11", 68), "eth0")
    await svc.handle(
        scapy_dhcp("discover", mac="02:00:5e:00:09:09", xid=7), ("0.0.0.0", 68), "eth0"
    )
    records = [r for r in caplog.records if r.name == "imprint.dhcp" and hasattr(r, "decision")]
    assert len(records) == 2
    first, second = (r.__dict__ for r in records)
    assert [r.levelno for r in records] == [logging.DEBUG, logging.DEBUG]
    assert (first["xid"], first["mac"], first["msg_type"], first["decision"], first["reason"]) == (
        "abcdef01",
        MAC,
        "inform",
        "reply",
        "IMP_REGISTERED",
    )
    assert first["options_sent"] == [53, 54, 224, 225]
    assert first["dest"] == "198.18.77.11:68"
    assert (second["decision"], second["reason"], second["options_sent"]) == (
        "ignore",
        "IMP_UNREGISTERED",
        [],
    )


async def test_inform_mode_ignores_discover_with_a_reason() -> None:
    (src, data), *_ = load_hex_fixture("dhcp/udhcpc-discover-yealink.hex")
    mac = decode(data).chaddr.hex(":")
    svc, reg, _, _ = make(index={mac: view(mac)})
    assert await svc.handle(data, split_src(src), "eth0") == []
    assert counter(reg, "imprint_dhcp_decisions_total").value("ignore", "DHCP_TYPE_NOT_SERVED") == 1
    assert counter(reg, "imprint_dhcp_packets_dropped_total").value("DHCP_TYPE_NOT_SERVED") == 1


async def test_proxy_mode_offers_options_to_the_yealink_fixture() -> None:
    (src, data), *_ = load_hex_fixture("dhcp/udhcpc-discover-yealink.hex")
    mac = decode(data).chaddr.hex(":")
    svc, _, _, _ = make(Mode.PROXY, index={mac: view(mac)})
    (out,) = await svc.handle(data, split_src(src), "eth0")
    reply = decode(out.data)
    assert reply.options[53] == bytes([MessageType.OFFER]) and reply.yiaddr == bytes(4)
    assert reply.options[66] == b"https://imprint.example.net/provision"
    assert out.dest == ("255.255.255.255", 68)


class GatedStore(MemoryLeaseStore):
    """A real in-memory store whose commits wait for the test to open a gate, and are recorded."""

    def __init__(self) -> None:
        super().__init__()
        self.gate = asyncio.Event()
        self.batches: list[list[str]] = []

    async def save_leases(self, changes: Sequence[Lease]) -> None:
        await self.gate.wait()
        self.batches.append([c.ip for c in changes])
        await super().save_leases(changes)


def request_for(mac: str, ip: str, xid: int) -> bytes:
    return scapy_dhcp(
        "request", mac=mac, xid=xid, options=[("server_id", SERVER), ("requested_addr", ip)]
    )


async def test_full_mode_ack_waits_until_the_lease_is_stored() -> None:
    store = GatedStore()
    svc, _, _, _ = make(Mode.FULL, store=store)
    await svc.start()
    (offer,) = await svc.handle(scapy_dhcp("discover", mac=MAC), ("0.0.0.0", 68), "eth0")
    offered = decode(offer.data).yiaddr
    assert store.leases == {}  # offers are not persisted
    task = asyncio.create_task(
        svc.handle(request_for(MAC, "198.18.77.100", 2), ("0.0.0.0", 68), "eth0")
    )
    for _ in range(5):
        await asyncio.sleep(0)
    assert not task.done() and store.leases == {}
    store.gate.set()
    (ack,) = await asyncio.wait_for(task, 5)
    assert decode(ack.data).options[53] == bytes([MessageType.ACK])
    assert decode(ack.data).yiaddr == offered == ip_bytes("198.18.77.100")
    assert store.leases["198.18.77.100"].state is LeaseState.BOUND


async def test_concurrent_acks_share_one_commit() -> None:
    store = GatedStore()
    svc, reg, _, idx = make(Mode.FULL, store=store)
    macs = [f"02:00:5e:00:03:{i:02x}" for i in range(1, 11)]
    for m in macs:
        idx[m] = view(m)
    first = asyncio.create_task(
        svc.handle(request_for(macs[0], "198.18.77.100", 1), ("0.0.0.0", 68), "eth0")
    )
    await asyncio.sleep(0)
    await asyncio.sleep(0)  # the first commit is now waiting in save_leases
    rest = [
        asyncio.create_task(
            svc.handle(request_for(m, f"198.18.77.{101 + i}", 2 + i), ("0.0.0.0", 68), "eth0")
        )
        for i, m in enumerate(macs[1:])
    ]
    for _ in range(5):
        await asyncio.sleep(0)
    store.gate.set()
    outs = await asyncio.wait_for(asyncio.gather(first, *rest), 5)
    assert all(len(o) == 1 for o in outs)
    assert store.batches == [["198.18.77.100"], [f"198.18.77.{101 + i}" for i in range(9)]]
    assert len(store.leases) == 10
    hist = reg.render()
    assert "imprint_dhcp_lease_commit_batch_size_count 2" in hist
    assert "imprint_dhcp_lease_commit_batch_size_sum 10" in hist


class FailOnceStore(MemoryLeaseStore):
    def __init__(self) -> None:
        super().__init__()
        self.failed = False

    async def save_leases(self, changes: Sequence[Lease]) -> None:
        if not self.failed:
            self.failed = True
            raise OSError("disk full")
        await super().save_leases(changes)


async def test_store_failure_withholds_the_ack_and_the_retry_succeeds(
    caplog: pytest.LogCaptureFixture,
) -> None:
    store = FailOnceStore()
    svc, reg, _, _ = make(Mode.FULL, store=store)
    caplog.set_level(logging.ERROR, logger="imprint.dhcp")
    data = request_for(MAC, "198.18.77.100", 3)
    assert await svc.handle(data, ("0.0.0.0", 68), "eth0") == []
    assert counter(reg, "imprint_dhcp_packets_dropped_total").value("DHCP_LEASE_STORE_FAILED") == 1
    assert any("lease store failed" in r.getMessage() for r in caplog.records)
    (ack,) = await svc.handle(data, ("0.0.0.0", 68), "eth0")
    assert decode(ack.data).options[53] == bytes([MessageType.ACK])
    assert "198.18.77.100" in store.leases
    assert counter(reg, "imprint_dhcp_errors_total").total() == 0


async def test_start_loads_leases_and_expiry_is_persisted() -> None:
    clock = Clock()
    store = MemoryLeaseStore(
        [Lease("198.18.77.150", MAC, None, LeaseState.BOUND, T0 + 100, "198.18.77.0/24", T0 - 500)]
    )
    svc, reg, _, _ = make(Mode.FULL, store=store, clock=clock)
    await svc.start()
    (offer,) = await svc.handle(scapy_dhcp("discover", mac=MAC), ("0.0.0.0", 68), "eth0")
    assert decode(offer.data).yiaddr == ip_bytes("198.18.77.150")
    assert 'imprint_dhcp_leases{state="bound"} 1' in reg.render()
    clock.now = T0 + 101
    assert await svc.expire_leases() == 1
    assert store.leases["198.18.77.150"].state is LeaseState.EXPIRED


async def test_links_share_one_store_each_loads_its_own_leases_and_the_gauge_sums_them(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """[[dhcp.links]]: one lease store, one service per link; neither takes the other's leases
    for strays, and imprint_dhcp_leases counts both until a service stops."""
    other = subnet_from_mapping({"subnet": "10.200.0.0/24", "pool": "10.200.0.100-10.200.0.199"})
    mac2 = "02:00:5e:00:01:02"
    store = MemoryLeaseStore(
        [
            Lease("198.18.77.150", MAC, None, LeaseState.BOUND, T0 + 100, "198.18.77.0/24", T0),
            Lease("10.200.0.150", mac2, None, LeaseState.BOUND, T0 + 100, "10.200.0.0/24", T0),
        ]
    )
    reg = Registry()
    idx = {MAC: view(MAC), mac2: view(mac2)}
    first = DhcpService(
        DhcpConfig(mode=Mode.FULL, server_ip=SERVER, endpoint=EP, subnets=(SUBNET,)),
        idx,
        reg,
        lease_store=store,
        clock=Clock(),
        link="eth0.100",
        other_subnets=(other,),
    )
    second = DhcpService(
        DhcpConfig(mode=Mode.FULL, server_ip="10.200.0.1", endpoint=EP, subnets=(other,)),
        idx,
        reg,
        lease_store=store,
        clock=Clock(),
        link="eth0.200",
        other_subnets=(SUBNET,),
    )
    caplog.set_level(logging.WARNING, logger="imprint.dhcp")
    await first.start()
    await second.start()
    assert [r for r in caplog.records if "outside today's pools" in r.getMessage()] == []
    assert first.pool is not None and [x.ip for x in first.pool.leases()] == ["198.18.77.150"]
    assert second.pool is not None and [x.ip for x in second.pool.leases()] == ["10.200.0.150"]
    assert 'imprint_dhcp_leases{state="bound"} 2' in reg.render()
    await second.close()
    assert 'imprint_dhcp_leases{state="bound"} 1' in reg.render()


async def test_release_is_persisted_and_counted_as_silent_not_dropped() -> None:
    store = MemoryLeaseStore()
    svc, reg, _, _ = make(Mode.FULL, store=store)
    await svc.handle(request_for(MAC, "198.18.77.100", 1), ("0.0.0.0", 68), "eth0")
    release = scapy_dhcp(
        "release", mac=MAC, ciaddr="198.18.77.100", options=[("server_id", SERVER)]
    )
    assert await svc.handle(release, ("198.18.77.100", 68), "eth0") == []
    assert store.leases["198.18.77.100"].state is LeaseState.RELEASED
    assert counter(reg, "imprint_dhcp_decisions_total").value("silent", "DHCP_RELEASED") == 1
    assert counter(reg, "imprint_dhcp_packets_dropped_total").total() == 0


def test_bad_service_config_is_refused_with_the_key() -> None:
    with pytest.raises(ValueError, match="dhcp.server_ip"):
        DhcpService(DhcpConfig(mode=Mode.INFORM, server_ip="eth0", endpoint=EP), {}, Registry())
    with pytest.raises(ValueError, match="lease store"):
        DhcpService(
            DhcpConfig(mode=Mode.FULL, server_ip=SERVER, endpoint=EP, subnets=(SUBNET,)),
            {},
            Registry(),
        )
    with pytest.raises(ValueError, match="dhcp.subnets"):
        DhcpService(
            DhcpConfig(mode=Mode.FULL, server_ip=SERVER, endpoint=EP),
            {},
            Registry(),
            None,
            MemoryLeaseStore(),
        )
    with pytest.raises(ValueError, match="own address"):
        DhcpService(
            DhcpConfig(mode=Mode.FULL, server_ip="198.18.77.120", endpoint=EP, subnets=(SUBNET,)),
            {},
            Registry(),
            None,
            MemoryLeaseStore(),
        )


async def test_an_ack_notes_when_where_and_what_the_device_was() -> None:
    sightings = Sightings()
    cfg = DhcpConfig(mode=Mode.INFORM, server_ip=SERVER, endpoint=EP)
    svc = DhcpService(cfg, {MAC: view(MAC)}, Registry(), clock=Clock(), sightings=sightings)
    (src, data), *_ = load_hex_fixture("dhcp/dhcpcd-inform-ms-uc-client.hex")
    await svc.handle(data, split_src(src), "eth0")
    assert sightings.last_seen(MAC) == LastSeen(
        MAC, T0, "198.18.77.11", "MS-UC-Client", "eth0", "dhcp", "chaddr"
    )
    assert sightings.mac_of("198.18.77.11") == MAC
