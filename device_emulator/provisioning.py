"""What a device learned about where to provision itself, from DHCP or mDNS. Pure.

This is the emulator's own reading of the answers: it shares no code with server/ so that a
misreading on one side cannot hide a misreading on the other.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, urlsplit

_HEX64 = re.compile(r"^[0-9a-f]{64}$")
_URL = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://\S+$")


class NoAnswer(TimeoutError):
    """No usable answer arrived within the time allowed; the message says what was asked."""


@dataclass(frozen=True, slots=True)
class ProvisioningInfo:
    """Where to provision: the URL a device would fetch and the certificate pin it would use."""

    source: str  # "dhcp" or "mdns"
    url: str | None = None
    scheme: str | None = None
    host: str | None = None
    port: int | None = None
    path: str | None = None
    # SHA-256 of the server certificate, 64 lowercase hex digits, or None when none was sent.
    fingerprint: str | None = None
    # Vendor encodings recognised in the answer, most preferred first (e.g. "ms-uc-client").
    vendor_profiles: tuple[str, ...] = ()
    # Every provisioning URL found, most preferred first; `url` is the first of them.
    urls: tuple[str, ...] = ()
    sip_servers: tuple[str, ...] = ()  # option 120 (RFC 3361): names or IPv4 addresses
    tftp_servers: tuple[str, ...] = ()  # option 150 addresses, option 66 when it is not a URL
    # Things in the answer a strict device would stumble over; the parser is tolerant but says so.
    problems: tuple[str, ...] = field(default=())

    @property
    def found(self) -> bool:
        """True when the answer told the device where to go (a URL or at least a server)."""
        return bool(self.url or self.tftp_servers or self.sip_servers)

    def as_dict(self) -> dict[str, Any]:
        """Plain JSON-ready form."""
        return {
            "source": self.source,
            "url": self.url,
            "scheme": self.scheme,
            "host": self.host,
            "port": self.port,
            "path": self.path,
            "fingerprint": self.fingerprint,
            "vendor_profiles": list(self.vendor_profiles),
            "urls": list(self.urls),
            "sip_servers": list(self.sip_servers),
            "tftp_servers": list(self.tftp_servers),
            "problems": list(self.problems),
        }


def normalize_fingerprint(value: str) -> str | None:
    """Return a SHA-256 fingerprint as 64 lowercase hex digits, or None if `value` is not one.

    Tolerates a `sha256:` / `sha-256=` prefix, colons or spaces between bytes, and any case,
    because the final encoding on the wire is not settled yet.
    """
    text = value.strip().lower()
    for prefix in ("sha256:", "sha256=", "sha-256:", "sha-256="):
        if text.startswith(prefix):
            text = text[len(prefix) :]
            break
    text = text.replace(":", "").replace(" ", "")
    return text if _HEX64.match(text) else None


def fingerprint_from_url(url: str) -> str | None:
    """Find a certificate pin carried in a URL: `#sha256=<hex>` fragment or `?fp=`/`?sha256=`."""
    parts = urlsplit(url)
    if parts.fragment:
        for key, values in parse_qs(parts.fragment, keep_blank_values=True).items():
            if key.lower() in ("sha256", "fp", "fingerprint"):
                for value in values:
                    found = normalize_fingerprint(value)
                    if found:
                        return found
    if parts.query:
        for key, values in parse_qs(parts.query, keep_blank_values=True).items():
            if key.lower() in ("fp", "sha256", "fingerprint"):
                for value in values:
                    found = normalize_fingerprint(value)
                    if found:
                        return found
    return None


def looks_like_url(text: str) -> bool:
    """True for `scheme://something` with no whitespace."""
    return bool(_URL.match(text))


def split_url(url: str) -> tuple[str | None, str | None, int | None, str | None, list[str]]:
    """Return (scheme, host, port, path, problems) of a URL; default ports for http/https/tftp."""
    problems: list[str] = []
    parts = urlsplit(url)
    scheme = parts.scheme.lower() or None
    host = parts.hostname
    try:
        port = parts.port
    except ValueError:
        problems.append(f"URL {url!r} has a port that is not a number in 0..65535")
        port = None
    if port is None and scheme is not None:
        port = {"https": 443, "http": 80, "tftp": 69}.get(scheme)
    path = parts.path or "/"
    if parts.query:
        path = f"{path}?{parts.query}"
    return scheme, host, port, path, problems
