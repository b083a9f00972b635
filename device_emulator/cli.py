"""The commands of `imprint-device`: act as a booting device and show what Imprint told it.

Subcommands: `dhcp` and `mdns` ask once and print the answer; `run` boots one device through
discovery, code entry and provisioning; `fleet` runs many devices from an exported CSV.

Exit codes: 0 provisioning information received (`run`: the device shows its sign-in screen, or
with `--sign-in` "Signed in as <user>"; `fleet`: every device did); 2 no answer in time, an
answer without provisioning information, or (`run`/`fleet`) provisioning failed; 1 usage or
environment error (bad flag, no such interface, no permission for a raw socket, scapy not
installed: see `device_emulator.__main__`).
"""

from __future__ import annotations

import argparse
import asyncio
import ipaddress
import json
import socket
import sys
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import NoReturn

from device_emulator.device import (
    Device,
    DeviceMachine,
    Discoverer,
    Event,
    HttpOptions,
    PinPolicy,
    SignInOptions,
    State,
    dhcp_discoverer,
    fixed_code,
    mdns_discoverer,
)
from device_emulator.dhcp_client import (
    LAB_CLIENT_PORT,
    DhcpResult,
    DhcpTransport,
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
from device_emulator.fleet import ExportError, FleetConfig, load_export, run_fleet
from device_emulator.mdns_client import MdnsResult, MdnsTransport, query_service
from device_emulator.mdns_codec import DEFAULT_SERVICE
from device_emulator.provisioning import NoAnswer, ProvisioningInfo, normalize_fingerprint

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

    dhcp_options = _dhcp_options()
    dhcp = commands.add_parser(
        "dhcp", help="ask by DHCP (INFORM, or DISCOVER/REQUEST)", parents=[dhcp_options]
    )
    dhcp.add_argument("exchange", choices=["inform", "discover"])
    dhcp.add_argument("--mac", help="device MAC (default with --iface: the interface's MAC)")
    dhcp.add_argument("--vendor-class", help="option 60, e.g. MS-UC-Client, yealink, Polycom-VVX")
    dhcp.add_argument("--client-id", help="option 61: 'auto' (01+MAC) or hex octets")
    dhcp.add_argument("--hostname", help="option 12")
    dhcp.add_argument("--max-size", type=int, help="option 57, maximum DHCP message size")
    where = dhcp.add_mutually_exclusive_group(required=True)
    where.add_argument("--iface", help="raw Ethernet on this interface (needs root/netns)")
    where.add_argument(
        "--server", type=_host_port, help="UDP to HOST:PORT (lab, e.g. 127.0.0.1:6767)"
    )
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

    device_options = _device_options(dhcp_options)
    run = commands.add_parser(
        "run",
        parents=[device_options],
        help="boot one device: discover, show the provision screen, enter the code, provision",
        description="Boot one emulated device through discovery, code entry and provisioning. "
        "Exit 0 when it shows 'Sign in to <tenant>', 2 when provisioning failed.",
    )
    run.add_argument("--mac", help="device MAC (default with --iface: the interface's MAC)")
    run.add_argument(
        "--code",
        help="verification code (default: typed at a prompt; stdin must be a terminal)",
    )
    # Sign-in is opt-in: without it `run` stops at the sign-in screen as it always has, so
    # scripts and the fleet that only provision are not left polling for a user.
    run.add_argument(
        "--sign-in",
        action="store_true",
        help="after provisioning, start the RFC 8628 device sign-in: show the user code and "
        "URL, poll, and show 'Signed in as <user>' (exit 0 then)",
    )
    run.add_argument(
        "--stay",
        action="store_true",
        help="implies --sign-in: once signed in keep running, refresh the token every "
        "--refresh-every seconds, and after a remote sign-out show the sign-in page with a new "
        "code; stops at --time-limit",
    )
    run.add_argument(
        "--refresh-every",
        type=_positive,
        default=30.0,
        help="with --stay: seconds between token refreshes, i.e. how soon a sign-out shows (30)",
    )
    run.add_argument(
        "--time-limit",
        type=_positive,
        default=600.0,
        help="with --sign-in: stop after this many seconds from power-on (600)",
    )

    fleet = commands.add_parser(
        "fleet",
        parents=[device_options],
        help="run many devices from an exported CSV and summarise",
        description="Run one emulated device per row of an Imprint device export that has a "
        "verification code. Exit 0 when all were provisioned (with --sign-in: signed in), "
        "2 otherwise.",
    )
    fleet.add_argument("--csv", required=True, type=Path, help="export CSV (MAC ID, ... code)")
    fleet.add_argument("--concurrency", type=int, default=200, help="devices booting at once (200)")
    fleet.add_argument(
        "--address-base",
        help="give device i the address BASE+i (INFORM ciaddr, mDNS and HTTPS source), e.g. "
        "127.1.0.0 on loopback; needed for mDNS",
    )
    fleet.add_argument(
        "--no-keep-alive",
        dest="keep_alive",
        action="store_false",
        help="close the HTTPS connection after every request",
    )
    fleet.add_argument(
        "--sign-in",
        action="store_true",
        help="after provisioning, each device starts the RFC 8628 sign-in and polls until it "
        "holds its tokens (approve the user codes meanwhile, e.g. POST "
        ".../sign-ins/approve); a device showing its user code no longer counts against "
        "--concurrency",
    )
    fleet.add_argument(
        "--sign-in-time-limit",
        type=_positive,
        default=300.0,
        help="with --sign-in: a device gives up this many seconds after power-on (300)",
    )
    fleet.add_argument(
        "--share-tls-sessions",
        action="store_true",
        help="resume one TLS session across all devices (each device always resumes its own): "
        "real devices would not share one; for benches of the server's other work",
    )
    fleet.add_argument("--progress", action="store_true", help="print progress to stderr")
    return parser


def _dhcp_options() -> _Parser:
    """The DHCP client flags of `dhcp`, `run` and `fleet` (an argparse parent)."""
    parent = _Parser(add_help=False)
    p = parent.add_argument_group("DHCP client")
    p.add_argument(
        "--request-options",
        default=",".join(str(c) for c in DEFAULT_REQUEST_OPTIONS),
        help="option 55 codes, comma separated (default %(default)s)",
    )
    p.add_argument(
        "--client-port",
        type=_port,
        help=f"DHCP local UDP port (default {LAB_CLIENT_PORT} with --server, 68 with --iface)",
    )
    p.add_argument("--bind", default="0.0.0.0", help="DHCP local address for --server mode")
    p.add_argument(
        "--retry-initial",
        type=_positive,
        default=4.0,
        help="first DHCP retransmission after this many seconds, doubling up to 64 (RFC 2131 §4.1)",
    )
    return parent


def _device_options(dhcp_options: _Parser) -> _Parser:
    """The flags of a booting device, shared by `run` and `fleet` (an argparse parent)."""
    parent = _Parser(add_help=False, parents=[dhcp_options])
    p = parent.add_argument_group("discovery and provisioning")
    p.add_argument(
        "--discover",
        choices=["dhcp", "mdns", "both"],
        default="dhcp",
        help="how to find Imprint (default dhcp; both: DHCP, then mDNS)",
    )
    p.add_argument(
        "--parallel",
        action="store_true",
        help="with --discover both: ask DHCP and mDNS at once, take the first answer",
    )
    p.add_argument(
        "--vendor-class",
        default="MS-UC-Client",
        help="option 60 (default %(default)s, whose option 43 carries the certificate pin)",
    )
    p.add_argument("--exchange", choices=["inform", "discover"], default="inform")
    p.add_argument("--iface", help="raw Ethernet (DHCP) / multicast (mDNS) on this interface")
    p.add_argument(
        "--server", type=_host_port, help="DHCP by UDP to HOST:PORT (lab, e.g. 127.0.0.1:6767)"
    )
    p.add_argument(
        "--address",
        help="INFORM ciaddr (default: the interface's IPv4, or the address that reaches --server)",
    )
    p.add_argument("--dhcp-timeout", type=_positive, default=10.0, help="seconds (10)")
    p.add_argument(
        "--mdns-server", type=_host_port, help="mDNS legacy unicast to HOST:PORT (lab responder)"
    )
    p.add_argument("--mdns-qu", action="store_true", help="QU query from port 5353 instead")
    p.add_argument("--service", default=DEFAULT_SERVICE, help="DNS-SD service (%(default)s)")
    p.add_argument("--mdns-timeout", type=_positive, default=3.0, help="seconds (3)")
    p.add_argument(
        "--pin",
        help="pin this SHA-256 certificate fingerprint instead of the advertised one (tests)",
    )
    p.add_argument(
        "--insecure-no-pin",
        action="store_true",
        help="lab only: provision over https even when no fingerprint was advertised",
    )
    p.add_argument("--http-timeout", type=_positive, default=10.0, help="seconds (10)")
    p.add_argument("--json", action="store_true", help="print JSON instead of screens")
    return parent


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


def _open_dhcp(args: argparse.Namespace, identity: DeviceIdentity) -> DhcpTransport:
    """The DHCP socket the flags of `_dhcp_options` (and --iface/--server) describe."""
    promisc = bool(args.iface) and identity.mac != interface_mac(args.iface)
    return open_transport(
        iface=args.iface,
        server=args.server,
        client_port=args.client_port,
        bind_address=args.bind,
        promisc=promisc,
    )


def _retry(args: argparse.Namespace) -> RetryPolicy:
    """DHCP retransmission from --retry-initial, with a jitter of a quarter of it (at most 1 s)."""
    initial: float = args.retry_initial
    return RetryPolicy(initial=initial, jitter=min(1.0, initial / 4))


async def run_dhcp(args: argparse.Namespace) -> DhcpResult:
    """Run one DHCP exchange as the command line says."""
    identity = _identity(args)
    ciaddr: str | None = None
    if args.exchange == "inform":
        ciaddr = _inform_address(
            args.address or (interface_ipv4(args.iface) if args.iface else None)
        )
    transport = _open_dhcp(args, identity)
    retry = _retry(args)
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


def _route_address(server: tuple[str, int]) -> str:
    """The local address the kernel would send from to reach `server` (no packet is sent)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.connect(server)
        return str(sock.getsockname()[0])


def _check_device_args(args: argparse.Namespace) -> None:
    uses_dhcp = args.discover in ("dhcp", "both")
    if args.parallel and args.discover != "both":
        raise UsageError("--parallel needs --discover both")
    if uses_dhcp and (args.server is None) == (args.iface is None):
        raise UsageError("DHCP discovery needs exactly one of --server HOST:PORT or --iface")
    if args.pin is not None and normalize_fingerprint(args.pin) is None:
        raise UsageError("--pin must be a SHA-256 fingerprint: 64 hex digits")
    if args.vendor_class is not None and not args.vendor_class.isascii():
        raise UsageError("--vendor-class must be ASCII")


def _ciaddr(args: argparse.Namespace) -> str | None:
    if args.exchange != "inform":
        return None
    ciaddr: str | None = args.address
    if ciaddr is None and args.iface:
        ciaddr = interface_ipv4(args.iface)
    if ciaddr is None and args.server:
        ciaddr = _route_address(args.server)
    return _inform_address(ciaddr)


def _inform_address(ciaddr: str | None) -> str:
    """The INFORM ciaddr found from the flags, checked to be an IPv4 address."""
    if ciaddr is None:
        raise UsageError("INFORM needs --address (or an --iface that has an IPv4 address)")
    try:
        ipaddress.IPv4Address(ciaddr)
    except ValueError:
        raise UsageError(f"--address {ciaddr!r} is not an IPv4 address") from None
    return ciaddr


def _print_json_event(machine: DeviceMachine, event: Event) -> None:
    """One JSON line per state change, flushed, so a caller can follow the device live."""
    line = {**event.as_dict(), "screen": machine.screen(), "sign_in": machine.sign_in_view()}
    print(json.dumps(line), flush=True)


def _print_event(machine: DeviceMachine, event: Event) -> None:
    start = machine.events[0].at
    print(f"[{event.at - start:8.3f} s] {event.state.value}: {event.detail}")
    print(machine.screen())
    if event.state is State.PROVISION_SCREEN:
        for warning in machine.warnings:
            print(f"imprint-device: warning: {warning}", file=sys.stderr)
    sys.stdout.flush()


async def _read_line(prompt: str) -> str | None:
    """input() in a daemon thread (so Ctrl-C is not held up by a blocked read); None at EOF."""
    loop = asyncio.get_running_loop()
    done: asyncio.Future[str | None] = loop.create_future()

    def read() -> None:
        try:
            line: str | None = input(prompt)
        except EOFError:
            line = None
        except BaseException as exc:  # delivered to the waiting coroutine
            loop.call_soon_threadsafe(_settle, done, None, exc)
            return
        loop.call_soon_threadsafe(_settle, done, line, None)

    threading.Thread(target=read, name="code-prompt", daemon=True).start()
    return await done


def _settle(
    future: asyncio.Future[str | None], value: str | None, exc: BaseException | None
) -> None:
    if future.done():
        return
    if exc is not None:
        future.set_exception(exc)
    else:
        future.set_result(value)


async def _prompt_code(machine: DeviceMachine) -> str | None:
    """Read a code typed on the terminal; None at end of input."""
    for _ in range(100):  # bounded: an empty line asks again
        line = await _read_line("Code: ")
        if line is None:
            return None
        if line.strip():
            return line
    return None


async def run_device(args: argparse.Namespace) -> DeviceMachine:
    """Boot one device as the command line says and return its finished state machine."""
    _check_device_args(args)
    interactive = args.code is None
    if interactive and not sys.stdin.isatty():
        raise UsageError("no code: give --code CODE, or run on a terminal to type it")
    mac = args.mac or (interface_mac(args.iface) if args.iface else None)
    if mac is None:
        raise UsageError("--mac is required without --iface")
    sign_in = None
    if args.sign_in or args.stay:
        sign_in = SignInOptions(
            stay=args.stay, refresh_every=args.refresh_every, time_limit=args.time_limit
        )
    try:
        mac = mac_to_text(mac_to_bytes(mac))
        request_options = requested_options_from_text(args.request_options)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    discoverers: list[tuple[str, Discoverer]] = []
    transport = None
    if args.discover in ("dhcp", "both"):
        identity = DeviceIdentity(
            mac=mac, vendor_class=args.vendor_class, request_options=request_options
        )
        ciaddr = _ciaddr(args)
        transport = _open_dhcp(args, identity)
        retry = _retry(args)
        discoverers.append(
            (
                "dhcp",
                dhcp_discoverer(
                    identity, transport, ciaddr=ciaddr, time_limit=args.dhcp_timeout, retry=retry
                ),
            )
        )
    if args.discover in ("mdns", "both"):

        def open_mdns() -> MdnsTransport:
            return MdnsTransport(qu=args.mdns_qu, server=args.mdns_server, iface=args.iface)

        discoverers.append(
            ("mdns", mdns_discoverer(open_mdns, service=args.service, time_limit=args.mdns_timeout))
        )
    device = Device(
        mac,
        discoverers,
        _prompt_code if interactive else fixed_code(args.code),
        interactive=interactive,
        parallel_discovery=args.parallel,
        pin_policy=PinPolicy(override=args.pin, insecure_no_pin=args.insecure_no_pin),
        http=HttpOptions(timeout=args.http_timeout),
        listener=(_print_json_event if sign_in else None) if args.json else _print_event,
        sign_in=sign_in,
    )
    try:
        return await device.run()
    finally:
        if transport is not None:
            transport.close()


async def run_fleet_command(args: argparse.Namespace) -> int:
    """`imprint-device fleet`: run the devices of an export CSV and print the summary."""
    _check_device_args(args)
    if args.concurrency < 1:
        raise UsageError("--concurrency must be at least 1")
    try:
        entries, skipped = load_export(args.csv)
    except OSError as exc:
        raise UsageError(f"cannot read {args.csv}: {exc.strerror or exc}") from None
    except ExportError as exc:
        raise UsageError(f"{args.csv}: {exc}") from None
    try:
        request_options = requested_options_from_text(args.request_options)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    ciaddr = None
    if args.address_base is None and args.discover != "mdns":
        ciaddr = _ciaddr(args)
    elif args.address_base is not None:
        try:
            ipaddress.IPv4Address(args.address_base)
        except ValueError:
            raise UsageError(f"--address-base {args.address_base!r} is not IPv4") from None
    if args.discover != "dhcp" and args.mdns_server is None:
        raise UsageError("the fleet browses mDNS by legacy unicast: give --mdns-server HOST:PORT")
    if args.exchange != "inform":
        raise UsageError("the fleet uses DHCPINFORM (--exchange inform)")
    config = FleetConfig(
        discover=args.discover,
        parallel_discovery=args.parallel,
        concurrency=args.concurrency,
        dhcp_server=args.server,
        iface=args.iface,
        client_port=args.client_port,
        bind_address=args.bind,
        ciaddr=ciaddr,
        address_base=args.address_base,
        vendor_class=args.vendor_class,
        request_options=request_options,
        dhcp_time_limit=args.dhcp_timeout,
        retry=_retry(args),
        mdns_server=args.mdns_server,
        service=args.service,
        mdns_time_limit=args.mdns_timeout,
        pin=PinPolicy(override=args.pin, insecure_no_pin=args.insecure_no_pin),
        http_timeout=args.http_timeout,
        keep_alive=args.keep_alive,
        sign_in=args.sign_in,
        sign_in_time_limit=args.sign_in_time_limit,
        share_tls_sessions=args.share_tls_sessions,
    )

    last = [0.0]

    def progress(done: int, total: int) -> None:
        now = asyncio.get_running_loop().time()
        if done == total or now - last[0] >= 2.0:
            last[0] = now
            print(f"imprint-device: {done}/{total} devices finished", file=sys.stderr)

    try:
        report = await run_fleet(
            config,
            entries,
            skipped=skipped,
            progress=progress if args.progress else None,
        )
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    if args.json:
        print(json.dumps(report.as_dict(), indent=2))
    else:
        print(f"fleet from {args.csv}, discovery by {args.discover}")
        for line in report.lines():
            print(line)
    goal = report.signed_in if args.sign_in else report.provisioned
    return EXIT_OK if goal == report.devices else EXIT_NO_ANSWER


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of `imprint-device`; returns the exit code."""
    args = build_parser().parse_args(argv)
    try:
        if args.command == "fleet":
            return asyncio.run(run_fleet_command(args))
        if args.command == "run":
            return _device_outcome(args, asyncio.run(run_device(args)))
        return _discovery_outcome(args)
    except UsageError as exc:
        print(f"imprint-device: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except NoAnswer as exc:
        print(f"imprint-device: no answer: {exc}", file=sys.stderr)
        return EXIT_NO_ANSWER
    except OSError as exc:
        print(f"imprint-device: cannot open the network: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        return 130


def _discovery_outcome(args: argparse.Namespace) -> int:
    """`dhcp` and `mdns`: ask once, print the answer, exit 0 when it carries provisioning."""
    result: DhcpResult | MdnsResult = (
        asyncio.run(run_dhcp(args)) if args.command == "dhcp" else asyncio.run(run_mdns(args))
    )
    info = result.provisioning
    if args.json:
        print(json.dumps(result.as_dict(), indent=2))
    elif isinstance(result, DhcpResult):
        _print_dhcp(result)
    else:
        _print_mdns(result)
    if not info.found:
        print("imprint-device: the answer carried no provisioning information", file=sys.stderr)
        return EXIT_NO_ANSWER
    return EXIT_OK


def _device_outcome(args: argparse.Namespace, machine: DeviceMachine) -> int:
    """`run`: exit 0 at the sign-in screen (with --sign-in: signed in), else 2 with why."""
    signing_in = args.sign_in or args.stay
    if args.json:
        # With sign-in the events were JSON lines: the story is one more line, not a block.
        print(json.dumps(machine.as_dict(), indent=None if signing_in else 2), flush=True)
    if machine.state is (State.SIGNED_IN if signing_in else State.SIGN_IN_SCREEN):
        return EXIT_OK
    problem = machine.sign_in_problem
    if signing_in and machine.failure is None:
        why = problem.message if problem is not None else "nobody approved it in time"
        print(f"imprint-device: not signed in: {why}", file=sys.stderr)
        return EXIT_NO_ANSWER
    failure = machine.failure
    if failure is not None:
        what = "sign-in" if machine.entered(State.SIGNING_IN) is not None else "provisioning"
        print(f"imprint-device: {what} failed: {failure.message}", file=sys.stderr)
    return EXIT_NO_ANSWER
