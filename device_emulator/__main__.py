"""`imprint-device`: act as a booting device and show what Imprint told it.

Exit codes: 0 provisioning information received; 2 no answer in time, or an answer without
provisioning information; 1 usage or environment error (bad flag, no such interface, no
permission for a raw socket).
"""

from __future__ import annotations

import argparse
import asyncio
import ipaddress
import json
import sys
from collections.abc import Sequence
from typing import NoReturn

from device_emulator.dhcp_client import (
    LAB_CLIENT_PORT,
    DhcpResult,
    RetryPolicy,
    discover_request,
    inform,
    interface_ipv4,
    interface_mac,
    open_transport,
)
from device_emulator.dhcp_codec import (
    DEFAULT_REQUEST_OPTIONS,
    DeviceIdentity,
    client_id_from_text,
    mac_to_bytes,
    mac_to_text,
    requested_options_from_text,
)
from device_emulator.mdns_client import MdnsResult, MdnsTransport, query_service
from device_emulator.mdns_codec import DEFAULT_SERVICE
from device_emulator.provisioning import NoAnswer, ProvisioningInfo

EXIT_OK, EXIT_USAGE, EXIT_NO_ANSWER = 0, 1, 2


class UsageError(Exception):
    """The command line cannot work as given; the message says what to change."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        # argparse exits 2 on usage errors; 2 here means "no answer", so usage is 1.
        self.print_usage(sys.stderr)
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message}\n")


def _host_port(text: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise argparse.ArgumentTypeError(f"{text!r} is not HOST:PORT (e.g. 127.0.0.1:6767)")
    try:
        ipaddress.IPv4Address(host)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{host!r} is not an IPv4 address") from None
    return host, int(port)


def _port(text: str) -> int:
    if not text.isdigit() or not 0 <= int(text) < 65536:
        raise argparse.ArgumentTypeError(f"{text!r} is not a UDP port number")
    return int(text)


def _positive(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if value <= 0:
        raise argparse.ArgumentTypeError("must be more than 0 seconds")
    return value


def build_parser() -> argparse.ArgumentParser:
    """The `imprint-device` command line."""
    parser = _Parser(
        prog="imprint-device",
        description="Emulate a booting device: discover Imprint by DHCP or mDNS.",
    )
    commands = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    dhcp = commands.add_parser("dhcp", help="ask by DHCP (INFORM, or DISCOVER/REQUEST)")
    dhcp.add_argument("exchange", choices=["inform", "discover"])
    dhcp.add_argument("--mac", help="device MAC (default with --iface: the interface's MAC)")
    dhcp.add_argument("--vendor-class", help="option 60, e.g. MS-UC-Client, yealink, Polycom-VVX")
    dhcp.add_argument(
        "--request-options",
        default=",".join(str(c) for c in DEFAULT_REQUEST_OPTIONS),
        help="option 55 codes, comma separated (default %(default)s)",
    )
    dhcp.add_argument("--client-id", help="option 61: 'auto' (01+MAC) or hex octets")
    dhcp.add_argument("--hostname", help="option 12")
    dhcp.add_argument("--max-size", type=int, help="option 57, maximum DHCP message size")
    where = dhcp.add_mutually_exclusive_group(required=True)
    where.add_argument("--iface", help="raw Ethernet on this interface (needs root/netns)")
    where.add_argument(
        "--server", type=_host_port, help="UDP to HOST:PORT (lab, e.g. 127.0.0.1:6767)"
    )
    dhcp.add_argument(
        "--client-port",
        type=_port,
        help=f"local UDP port (default {LAB_CLIENT_PORT} with --server, 68 with --iface)",
    )
    dhcp.add_argument("--bind", default="0.0.0.0", help="local address for --server mode")
    dhcp.add_argument("--address", help="INFORM ciaddr (default with --iface: its IPv4)")
    flag = dhcp.add_mutually_exclusive_group()
    flag.add_argument(
        "--broadcast-flag",
        dest="broadcast",
        action="store_true",
        default=None,
        help="set the BOOTP broadcast flag (default: on for discover with --iface, else off)",
    )
    flag.add_argument("--no-broadcast-flag", dest="broadcast", action="store_false")
    dhcp.add_argument("--timeout", type=_positive, default=10.0, help="total seconds (10)")
    dhcp.add_argument(
        "--retry-initial",
        type=_positive,
        default=4.0,
        help="first retransmission after this many seconds, doubling up to 64 (RFC 2131 §4.1)",
    )
    dhcp.add_argument(
        "--offer-wait", type=float, default=1.0, help="discover: wait for more offers"
    )
    dhcp.add_argument("--json", action="store_true", help="print JSON")

    mdns = commands.add_parser("mdns", help="browse DNS-SD by mDNS")
    mdns.add_argument("--service", default=DEFAULT_SERVICE, help="default %(default)s")
    mdns.add_argument("--server", type=_host_port, help="ask HOST:PORT instead of the group")
    mdns.add_argument("--iface", help="interface for multicast (netns)")
    mdns.add_argument("--qu", action="store_true", help="QU query from port 5353 (RFC 6762 §5.4)")
    mdns.add_argument("--client-port", type=_port, help="local port (default 5353 --qu, else any)")
    mdns.add_argument("--timeout", type=_positive, default=3.0, help="total seconds (3)")
    mdns.add_argument("--json", action="store_true", help="print JSON")
    return parser


def _identity(args: argparse.Namespace) -> DeviceIdentity:
    mac_text: str | None = args.mac
    if mac_text is None:
        if args.iface is None:
            raise UsageError("--mac is required with --server")
        mac_text = interface_mac(args.iface)
    try:
        mac = mac_to_text(mac_to_bytes(mac_text))
        options = requested_options_from_text(args.request_options)
        client_id = client_id_from_text(args.client_id, mac) if args.client_id else None
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    if args.max_size is not None and not 576 <= args.max_size <= 65535:
        raise UsageError("--max-size must be 576..65535 (RFC 2132 §9.10)")
    if args.vendor_class is not None and not args.vendor_class.isascii():
        raise UsageError("--vendor-class must be ASCII")
    return DeviceIdentity(
        mac=mac,
        vendor_class=args.vendor_class,
        request_options=options,
        client_id=client_id,
        hostname=args.hostname,
        max_message_size=args.max_size,
    )


async def run_dhcp(args: argparse.Namespace) -> DhcpResult:
    """Run one DHCP exchange as the command line says."""
    identity = _identity(args)
    ciaddr: str | None = None
    if args.exchange == "inform":
        ciaddr = args.address or (interface_ipv4(args.iface) if args.iface else None)
        if ciaddr is None:
            raise UsageError("INFORM needs --address (or an --iface that has an IPv4 address)")
        try:
            ipaddress.IPv4Address(ciaddr)
        except ValueError:
            raise UsageError(f"--address {ciaddr!r} is not an IPv4 address") from None
    promisc = bool(args.iface) and identity.mac != interface_mac(args.iface)
    transport = open_transport(
        iface=args.iface,
        server=args.server,
        client_port=args.client_port,
        bind_address=args.bind,
        promisc=promisc,
    )
    retry = RetryPolicy(initial=args.retry_initial, jitter=min(1.0, args.retry_initial / 4))
    try:
        if ciaddr is not None:
            return await inform(
                identity,
                transport,
                ciaddr=ciaddr,
                time_limit=args.timeout,
                retry=retry,
                broadcast=args.broadcast,
            )
        return await discover_request(
            identity,
            transport,
            time_limit=args.timeout,
            retry=retry,
            offer_wait=args.offer_wait,
            broadcast=args.broadcast,
        )
    finally:
        transport.close()


async def run_mdns(args: argparse.Namespace) -> MdnsResult:
    """Run one DNS-SD browse as the command line says."""
    transport = MdnsTransport(
        qu=args.qu, server=args.server, iface=args.iface, client_port=args.client_port
    )
    try:
        return await query_service(transport, service=args.service, time_limit=args.timeout)
    finally:
        transport.close()


def _describe(info: ProvisioningInfo) -> list[str]:
    lines = [f"  provisioning URL: {info.url or '(none)'}"]
    if info.url:
        lines.append(
            f"  scheme {info.scheme}  host {info.host}  port {info.port}  path {info.path}"
        )
    lines.append(f"  fingerprint (sha256): {info.fingerprint or '(none)'}")
    if info.vendor_profiles:
        lines.append(f"  encodings seen: {', '.join(info.vendor_profiles)}")
    for url in info.urls[1:]:
        lines.append(f"  also: {url}")
    if info.sip_servers:
        lines.append(f"  SIP servers (120): {', '.join(info.sip_servers)}")
    if info.tftp_servers:
        lines.append(f"  TFTP servers: {', '.join(info.tftp_servers)}")
    return lines


def _print_dhcp(result: DhcpResult) -> None:
    print(
        f"DHCP{result.message_type} from server {result.server_id or '?'} "
        f"(xid 0x{result.xid:08x}, yiaddr {result.yiaddr}, {result.sent} sent)"
    )
    if result.offer is not None and result.offer is not result.reply:
        print(f"  after DHCPOFFER yiaddr {result.offer.yiaddr} from {result.offer.server_id}")
    for line in _describe(result.provisioning):
        print(line)
    print(f"  options: {', '.join(str(c) for c in result.reply.option_order)}")
    for problem in result.problems + result.provisioning.problems:
        print(f"  problem: {problem}")


def _print_mdns(result: MdnsResult) -> None:
    for service in result.services:
        addresses = ", ".join(service.addresses)
        print(f"{service.instance} at {service.host}:{service.port} ({addresses})")
        txt = " ".join(k if v is None else f"{k}={v}" for k, v in service.txt.items())
        print(f"  TXT: {txt}")
    for line in _describe(result.provisioning):
        print(line)
    for problem in result.problems + result.provisioning.problems:
        print(f"  problem: {problem}")


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of `imprint-device`; returns the exit code."""
    args = build_parser().parse_args(argv)
    try:
        if args.command == "dhcp":
            dhcp_result = asyncio.run(run_dhcp(args))
            info = dhcp_result.provisioning
            if args.json:
                print(json.dumps(dhcp_result.as_dict(), indent=2))
            else:
                _print_dhcp(dhcp_result)
        else:
            mdns_result = asyncio.run(run_mdns(args))
            info = mdns_result.provisioning
            if args.json:
                print(json.dumps(mdns_result.as_dict(), indent=2))
            else:
                _print_mdns(mdns_result)
    except UsageError as exc:
        print(f"imprint-device: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except NoAnswer as exc:
        print(f"imprint-device: no answer: {exc}", file=sys.stderr)
        return EXIT_NO_ANSWER
    except OSError as exc:
        print(f"imprint-device: cannot open the network: {exc}", file=sys.stderr)
        return EXIT_USAGE
    if not info.found:
        print("imprint-device: the answer carried no provisioning information", file=sys.stderr)
        return EXIT_NO_ANSWER
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
