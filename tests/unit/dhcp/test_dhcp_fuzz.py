"""Random and mutated packets: decode raises only DecodeError, and the service never raises.

Mutations start from the captured fixtures: truncation, byte flips, option lengths that run
past the end, option overload (52) pointing at garbage, pad/end storms, long and repeated options.
"""

from __future__ import annotations

import asyncio

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from server.core.metrics import Counter, Registry
from server.dhcp.codec import DecodeError, DhcpMessage, decode, encode
from server.dhcp.pool import MemoryLeaseStore, subnet_from_mapping
from server.dhcp.responder import Mode
from server.dhcp.service import DhcpConfig, DhcpService
from server.registry.discovered import DiscoveredDevices
from server.registry.model import DeviceState, DeviceView, ProvisioningEndpoint
from tests.helpers.fixtures import load_hex_fixture

FIXTURES = [
    data
    for name in (
        "dhcp/dhcpcd-inform-ms-uc-client.hex",
        "dhcp/dhcpcd-discover.hex",
        "dhcp/udhcpc-discover-yealink.hex",
        "dhcp/perfdhcp-relayed-discover.hex",
    )
    for _src, data in load_hex_fixture(name)
]
MACS = ["02:00:5e:00:01:01", "02:00:5e:00:01:02", "02:00:5e:00:02:01"]
EP = ProvisioningEndpoint("https", "imprint.example.net", 443, "/provision", "ab" * 32)
SUBNET = subnet_from_mapping(
    {"subnet": "198.18.77.0/24", "pool": "198.18.77.100-198.18.77.104", "router": "198.18.77.1"}
)


def _options_end(data: bytes) -> int:
    end = data.rfind(b"\xff")
    return end if end >= 240 else len(data)


@st.composite
def mutated(draw: st.DrawFn) -> bytes:
    data = bytearray(draw(st.sampled_from(FIXTURES)))
    for _ in range(draw(st.integers(1, 4))):
        kind = draw(
            st.sampled_from(
                ["truncate", "flip", "length", "overload", "storm", "overrun", "dangling", "insert"]
            )
        )
        n = len(data)
        if kind == "truncate":
            del data[draw(st.integers(0, n)) :]
        elif kind == "flip" and n:
            data[draw(st.integers(0, n - 1))] = draw(st.integers(0, 255))
        elif kind == "length" and n > 241:
            # Most of these land on an option length byte of a real option.
            data[draw(st.integers(241, n - 1))] = draw(st.integers(0, 255))
        elif kind == "overload" and n >= 240:
            data[240:240] = bytes([52, 1, draw(st.integers(0, 5))])
            garbage = draw(st.binary(min_size=192, max_size=192))
            data[44:236] = garbage
        elif kind == "storm":
            at = draw(st.integers(min(240, n), n))
            run = bytes([draw(st.sampled_from([0, 255]))]) * draw(st.integers(1, 3000))
            data[at:at] = run
        elif kind == "overrun":
            del data[_options_end(bytes(data)) :]
            data += bytes([draw(st.integers(1, 254)), draw(st.integers(1, 255))])
            data += draw(st.binary(max_size=20))
        elif kind == "dangling":
            # An option code as the very last octet: no room for its length.
            del data[_options_end(bytes(data)) :]
            data.append(draw(st.integers(1, 254)))
        elif kind == "insert":
            at = draw(st.integers(min(240, n), n))
            code = draw(st.sampled_from([43, 50, 52, 53, 54, 55, 57, 60, 61, 82, 224]))
            value = draw(st.binary(max_size=255))
            data[at:at] = bytes([code, len(value)]) + value
    return bytes(data)


packets = st.one_of(mutated(), st.binary(max_size=1500), st.sampled_from(FIXTURES))


def _services(store: MemoryLeaseStore) -> list[tuple[DhcpService, Registry]]:
    index = {m: DeviceView(m, "acme", "Acme", DeviceState.SIGNED_IN, "lab") for m in MACS}
    out = []
    for mode in Mode:
        reg = Registry()
        cfg = DhcpConfig(mode=mode, server_ip="198.18.77.1", endpoint=EP, subnets=(SUBNET,))
        svc = DhcpService(
            cfg, index, reg, DiscoveredDevices(50), store if mode is Mode.FULL else None
        )
        out.append((svc, reg))
    return out


def _errors(reg: Registry) -> float:
    m = reg.get("imprint_dhcp_errors_total")
    assert isinstance(m, Counter)
    return m.total()


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=packets)
def test_decode_raises_nothing_but_decode_error(data: bytes) -> None:
    try:
        msg = decode(data)
    except DecodeError as e:
        assert e.reason.startswith("DHCP_")
        return
    assert isinstance(msg, DhcpMessage)
    assert len(msg.chaddr) == 6 and 1 <= msg.msg_type <= 255
    if 52 not in msg.options:
        # What we decode we can encode, and it reads back the same.
        again = decode(encode(msg, max_size=70_000))
        assert again.options == msg.options
        assert (again.xid, again.ciaddr, again.giaddr, again.chaddr) == (
            msg.xid,
            msg.ciaddr,
            msg.giaddr,
            msg.chaddr,
        )


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(batch=st.lists(packets, min_size=1, max_size=4))
def test_service_handle_never_raises_and_catches_no_internal_error(batch: list[bytes]) -> None:
    async def run() -> None:
        store = MemoryLeaseStore()
        services = _services(store)
        await services[2][0].start()
        for data in batch:
            for svc, reg in services:
                outs = await svc.handle(data, ("198.18.77.11", 68), "eth0")
                assert isinstance(outs, list)
                for out in outs:
                    decode(out.data)  # every reply we send is itself well-formed
                # handle() swallows exceptions to protect the transport; none may happen.
                assert _errors(reg) == 0

    asyncio.run(run())
