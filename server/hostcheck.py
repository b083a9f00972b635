"""Does this host have what the configuration names: its interfaces and its listen addresses?

The settings validate the file alone; these checks ask the host (the kernel's interface list,
and a test bind of each listen address). `imprint serve` runs them before it binds anything and
`imprint check-config` runs the same ones, so both refuse a config naming an interface that is
not here, or an address this host does not have, with the same sentence naming the key.

Only what serve would use is checked: a disabled section's interface or address is not.
"""

from __future__ import annotations

import contextlib
import errno
import ipaddress
import socket

from server.config import ConfigError, Settings
from server.mdns.neighbours import interface_addresses


def interface_names() -> list[str]:
    """Every network interface of this host (network namespace), sorted."""
    return sorted(name for _, name in socket.if_nameindex())


def configured_interfaces(s: Settings) -> list[tuple[str, str]]:
    """(key, interface) for every interface serve would open, in file order."""
    out: list[tuple[str, str]] = []
    if s.dhcp.enabled:
        if s.dhcp.links:
            out += [
                (f"dhcp.links.{i}.interface", lk.interface)
                for i, lk in enumerate(s.dhcp.links)
                if lk.interface
            ]
        elif s.dhcp.interface:
            out.append(("dhcp.interface", s.dhcp.interface))
    if s.mdns.enabled:
        if s.mdns.interfaces:
            out += [(f"mdns.interfaces.{i}", n.strip()) for i, n in enumerate(s.mdns.interfaces)]
        elif s.mdns.interface:
            out.append(("mdns.interface", s.mdns.interface))
    return out


def configured_addresses(s: Settings) -> list[tuple[str, str]]:
    """(key, address) for every listen address serve would bind."""
    out = [("http.host", s.http.host)]
    if s.dhcp.enabled:
        out.append(("dhcp.host", s.dhcp.host))
    if s.mdns.enabled:
        out.append(("mdns.host", s.mdns.host))
    return out


def _has_interface(name: str) -> bool:
    try:
        socket.if_nametoindex(name)
    except OSError:
        return False
    return True


def _can_bind(address: str) -> bool:
    """Whether this host lets a socket bind `address` (it is one of its own, or multicast)."""
    try:
        infos = socket.getaddrinfo(address, 0, type=socket.SOCK_DGRAM, flags=socket.AI_NUMERICHOST)
    except socket.gaierror:
        return False
    for family, kind, proto, _, sockaddr in infos:
        with socket.socket(family, kind, proto) as sock:
            try:
                sock.bind(sockaddr)
            except OSError as e:
                if e.errno == errno.EADDRNOTAVAIL:
                    continue
                return True  # another reason (e.g. no scope): serve says so when it binds
            return True
    return False


def host_addresses() -> list[str]:
    """`interface: addresses` for each interface with an address, for messages."""
    out: list[str] = []
    for name in interface_names():
        with contextlib.suppress(OSError):
            addrs = interface_addresses(name)
            if addrs:
                out.append(f"{name} {', '.join(addrs)}")
    return out


def _address_problem(key: str, host: str) -> str | None:
    fix = "give one of this host's addresses, or 0.0.0.0 (or ::) for every address"
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        try:
            infos = socket.getaddrinfo(host, None, type=socket.SOCK_DGRAM)
        except socket.gaierror as e:
            return f"{key}: {host!r} is not an address and does not resolve ({e.strerror}); {fix}"
        resolved = sorted({str(info[4][0]) for info in infos})
        if any(_can_bind(a) for a in resolved):
            return None
        return (
            f"{key}: {host!r} resolves to {', '.join(resolved)}, none of them an address of "
            f"this host ({'; '.join(host_addresses()) or 'it has none'}); {fix}"
        )
    if ip.is_unspecified or ip.is_loopback or _can_bind(host):
        return None
    return (
        f"{key}: {host} is not an address of this host "
        f"({'; '.join(host_addresses()) or 'it has none'}); {fix}"
    )


def host_problems(s: Settings) -> list[str]:
    """One sentence per configured interface or listen address this host does not have."""
    problems: list[str] = []
    missing = [(k, n) for k, n in configured_interfaces(s) if not _has_interface(n)]
    if missing:
        have = ", ".join(interface_names()) or "none"
        problems += [
            f"{key}: there is no interface {name!r} on this host (its interfaces: {have}); "
            "name one of them"
            for key, name in missing
        ]
    for key, host in configured_addresses(s):
        problem = _address_problem(key, host)
        if problem:
            problems.append(problem)
    return problems


def check_host(s: Settings) -> None:
    """ConfigError naming each key whose interface or address this host does not have."""
    problems = host_problems(s)
    if problems:
        raise ConfigError(
            "the configuration does not fit this host:\n" + "\n".join(f"  {p}" for p in problems)
        )
