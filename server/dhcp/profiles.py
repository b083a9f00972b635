"""Vendor profiles as data: which clients get which provisioning options, and how they are encoded.

A profile matches a client by its vendor class (option 60, `exact` or `prefix`, case-sensitive
octets), by an option code in its parameter request list (`requested`, e.g. SZTP's 143), or
always (`any`, the generic default). Profiles are tried in order and the first match wins.

Option values are templates over public data only (the provisioning URL is public; nothing secret
goes into DHCP): {url} {host} {port} {path} {scheme} {fingerprint} {server_ip}. They are rendered
once at startup into bytes by `ProfileTable`, so the packet path only looks them up.

The built-in generic default sends the URL as text in option 224 and the TLS certificate's SHA-256
fingerprint (64 lowercase hex digits, so the device can pin it) as text in option 225; 224-254 are
site-specific codes (RFC 3942 §2), so no standard client misreads them. Sites that want option 43
instead configure their own `match_kind = "any"` profile, which is tried before the built-ins.
"""

from __future__ import annotations

import ipaddress
import re
import string
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from functools import cache
from typing import Any

from server.registry.model import ProvisioningEndpoint


class MatchKind(StrEnum):
    EXACT = "exact"  # option 60 equals `match`
    PREFIX = "prefix"  # option 60 starts with `match`
    REQUESTED = "requested"  # option 55 lists the code given in `match`
    ANY = "any"  # every client (a default; put it last)


class Encoding(StrEnum):
    TEXT = "text"  # the rendered template as UTF-8 (RFC 2132 NVT text, no trailing NUL)
    IPV4_LIST = "ipv4-list"  # IPv4 addresses (comma/space separated), 4 octets each
    URI_LIST_16 = "uri-list-16"  # each URI preceded by a 2-octet length (RFC 8572 §8.3)
    SUB_OPTIONS = "sub-options"  # 1-octet code, 1-octet length, text (RFC 2132 §8.4 style)
    DNS_LABELS = "dns-labels"  # names in uncompressed RFC 1035 §3.1 label form
    SIP_SERVERS = "sip-servers"  # RFC 3361 §3: 0x00 + labels, or 0x01 + IPv4 addresses
    HEX = "hex"  # raw octets given as hex digits (no placeholders)


PLACEHOLDERS = ("url", "host", "port", "path", "scheme", "fingerprint", "server_ip")
_LIST_ENCODINGS = frozenset({Encoding.URI_LIST_16, Encoding.DNS_LABELS, Encoding.SIP_SERVERS})
# Options the responder owns: a profile cannot set them (RFC 2131 §4.3.1 table 3, RFC 3046, 6842).
RESERVED_CODES = frozenset({0, 50, 51, 52, 53, 54, 55, 56, 57, 58, 59, 61, 82, 255})
_LABEL = re.compile(r"^[A-Za-z0-9_](?:[A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?$")
# The keys of one [[dhcp.profiles]] table and of one of its options: (type, default, meaning),
# for the generated configuration reference; the parsers below allow exactly these.
PROFILE_KEY_DOCS: dict[str, tuple[str, str, str]] = {
    "name": ("string", "required", "unique name, shown in logs, check-config and the admin UI"),
    "match": (
        "string",
        'required, except with match_kind = "any"',
        "vendor class (option 60) text to match, case-sensitive; with requested an option code",
    ),
    "match_kind": (
        '"exact" | "prefix" | "requested" | "any"',
        '"exact"',
        "exact/prefix: option 60 equals/starts with match; requested: option 55 lists the code "
        "match; any: every client (a default: put it last)",
    ),
    "options": ("list of tables", "required", "the options sent (at least one), keys below"),
}
OPTION_KEY_DOCS: dict[str, tuple[str, str, str]] = {
    "code": (
        "integer, 1-254",
        "required",
        f"DHCP option code (not {sorted(RESERVED_CODES - {0, 255})})",
    ),
    "encoding": (
        " | ".join(f'"{e.value}"' for e in Encoding),
        '"text"',
        "how the value becomes octets: text (UTF-8), ipv4-list, uri-list-16 (RFC 8572), "
        "sub-options (code, length, text), dns-labels (RFC 1035), sip-servers (RFC 3361), hex",
    ),
    "value": (
        "template, list of templates, or table",
        "required",
        "the value; templates may use "
        + " ".join("{" + p + "}" for p in PLACEHOLDERS)
        + "; a list for the list encodings; a table {sub-code = template} for sub-options",
    ),
}
_PROFILE_KEYS = tuple(PROFILE_KEY_DOCS)
_OPTION_KEYS = tuple(OPTION_KEY_DOCS)


@dataclass(frozen=True, slots=True)
class OptionSpec:
    """One option of a profile: its code, encoding and value template(s)."""

    code: int
    encoding: Encoding
    values: tuple[str, ...] = ()  # one template, or several for list encodings
    sub_options: tuple[tuple[int, str], ...] = ()  # (sub-code, template) for sub-options


@dataclass(frozen=True, slots=True)
class VendorProfile:
    """Which clients a profile applies to and the options it sends them."""

    name: str
    match_kind: MatchKind
    match: str
    options: tuple[OptionSpec, ...]
    _match_bytes: bytes = field(init=False, repr=False, compare=False)
    _match_code: int = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_match_bytes", self.match.encode())
        code = int(self.match) if self.match_kind is MatchKind.REQUESTED else -1
        object.__setattr__(self, "_match_code", code)

    def matches(self, vendor_class: bytes | None, prl: bytes) -> bool:
        """Whether a client with this option 60 and option 55 gets this profile."""
        kind = self.match_kind
        if kind is MatchKind.EXACT:
            return vendor_class == self._match_bytes
        if kind is MatchKind.PREFIX:
            return vendor_class is not None and vendor_class.startswith(self._match_bytes)
        if kind is MatchKind.REQUESTED:
            return self._match_code in prl
        return True


def _where(profile: str, *keys: str | int) -> str:
    return f"dhcp.profiles[{profile}]" + "".join(
        f".{k}" if isinstance(k, str) else f"[{k}]" for k in keys
    )


def _check_template(template: object, where: str) -> str:
    if not isinstance(template, str):
        raise ValueError(f"{where}: must be text, got {type(template).__name__}")
    try:
        parsed = list(string.Formatter().parse(template))
    except ValueError as e:
        raise ValueError(
            f"{where}: {template!r} is not a valid template ({e}); write {{{{ for a literal brace"
        ) from e
    for _literal, name, spec, conversion in parsed:
        if name is None:
            continue
        if name not in PLACEHOLDERS or spec or conversion:
            raise ValueError(
                f"{where}: {{{name}{'!' + conversion if conversion else ''}{':' + spec if spec else ''}}} "
                f"is not a placeholder; use one of {', '.join('{' + p + '}' for p in PLACEHOLDERS)}"
            )
    return template


def _parse_option(profile: str, index: int, raw: object) -> OptionSpec:
    where = _where(profile, "options", index)
    if not isinstance(raw, Mapping):
        raise ValueError(f"{where}: must be a table with code, encoding and value")
    unknown = sorted(str(k) for k in raw if k not in _OPTION_KEYS)
    if unknown:
        raise ValueError(
            f"{where}: unknown key {unknown[0]!r}; allowed keys: {', '.join(_OPTION_KEYS)}"
        )
    code = raw.get("code")
    if not isinstance(code, int) or isinstance(code, bool) or not 1 <= code <= 254:
        raise ValueError(f"{where}.code: {code!r} must be an option code from 1 to 254")
    if code in RESERVED_CODES:
        raise ValueError(
            f"{where}.code: option {code} is set by the DHCP responder itself; "
            f"profiles cannot set {sorted(RESERVED_CODES - {0, 255})}"
        )
    enc_raw = raw.get("encoding", "text")
    try:
        encoding = Encoding(enc_raw)
    except ValueError:
        raise ValueError(
            f"{where}.encoding: {enc_raw!r} is not an encoding; use one of {', '.join(e.value for e in Encoding)}"
        ) from None
    if "value" not in raw:
        raise ValueError(f"{where}.value: missing; give the option's value template")
    value = raw["value"]
    vwhere = f"{where}.value"
    if encoding is Encoding.SUB_OPTIONS:
        if not isinstance(value, Mapping) or not value:
            raise ValueError(
                f'{vwhere}: sub-options need a table of sub-code = "template", e.g. {{ 1 = "{{url}}" }}'
            )
        subs: list[tuple[int, str]] = []
        for k, tmpl in value.items():
            try:
                sub = int(k)
            except (TypeError, ValueError):
                sub = -1
            if not 1 <= sub <= 254 or isinstance(k, bool):
                raise ValueError(f"{vwhere}: sub-option code {k!r} must be a number from 1 to 254")
            if any(s == sub for s, _ in subs):
                raise ValueError(f"{vwhere}: sub-option {sub} is given twice")
            subs.append((sub, _check_template(tmpl, f"{vwhere}.{k}")))
        return OptionSpec(code=code, encoding=encoding, sub_options=tuple(subs))
    items: list[object]
    if isinstance(value, list):
        if encoding not in _LIST_ENCODINGS and encoding is not Encoding.IPV4_LIST:
            raise ValueError(
                f"{vwhere}: encoding {encoding.value!r} takes one text value, not a list"
            )
        if not value:
            raise ValueError(f"{vwhere}: the list is empty")
        items = list(value)
    else:
        items = [value]
    values = tuple(_check_template(v, f"{vwhere}") for v in items)
    if encoding is Encoding.HEX:
        try:
            bytes.fromhex(values[0].replace(":", " "))
        except ValueError:
            raise ValueError(f"{vwhere}: {values[0]!r} is not hex octets like '01 02 ff'") from None
    return OptionSpec(code=code, encoding=encoding, values=values)


def profile_from_mapping(d: Mapping[str, Any]) -> VendorProfile:
    """Build a VendorProfile from one `[[dhcp.profiles]]` table; ValueError says what to fix.

    Keys: name, match, match_kind (exact|prefix|requested|any, default exact), options: a list
    of tables {code, encoding (default text), value}; value is a template, a list of templates
    for list encodings, or a table {sub-code = template} for sub-options.
    """
    if not isinstance(d, Mapping):
        raise ValueError(f"dhcp.profiles: each profile must be a table, got {type(d).__name__}")
    name = d.get("name")
    if not isinstance(name, str) or not name.strip():
        raise ValueError(
            'dhcp.profiles: a profile has no name; add name = "..." to each [[dhcp.profiles]]'
        )
    unknown = sorted(str(k) for k in d if k not in _PROFILE_KEYS)
    if unknown:
        raise ValueError(
            f"{_where(name, str(unknown[0]))}: unknown key; allowed keys: {', '.join(_PROFILE_KEYS)}"
        )
    kind_raw = d.get("match_kind", "exact")
    try:
        kind = MatchKind(kind_raw)
    except ValueError:
        raise ValueError(
            f"{_where(name, 'match_kind')}: {kind_raw!r} is not a match kind; use one of "
            f"{', '.join(k.value for k in MatchKind)}"
        ) from None
    match = d.get("match", "")
    if kind is MatchKind.REQUESTED:
        if isinstance(match, bool) or not (
            isinstance(match, int) or (isinstance(match, str) and match.isdigit())
        ):
            raise ValueError(
                f'{_where(name, "match")}: with match_kind = "requested" give an option code, e.g. 143'
            )
        if not 1 <= int(match) <= 254:
            raise ValueError(
                f"{_where(name, 'match')}: {match!r} must be an option code from 1 to 254"
            )
        match = str(int(match))
    elif kind is MatchKind.ANY:
        if match not in ("", None):
            raise ValueError(
                f'{_where(name, "match")}: match_kind = "any" matches every client; remove match'
            )
        match = ""
    elif not isinstance(match, str) or not match:
        raise ValueError(
            f'{_where(name, "match")}: give the vendor class (option 60) text to match, e.g. "MS-UC-Client"'
        )
    options = d.get("options")
    if not isinstance(options, list) or not options:
        raise ValueError(
            f"{_where(name, 'options')}: give at least one [[dhcp.profiles.options]] table"
        )
    specs = tuple(_parse_option(name, i, o) for i, o in enumerate(options))
    seen: set[int] = set()
    for s in specs:
        if s.code in seen:
            raise ValueError(f"{_where(name, 'options')}: option {s.code} is given twice")
        seen.add(s.code)
    return VendorProfile(name=name, match_kind=kind, match=match, options=specs)


def profiles_from_tables(tables: object) -> tuple[VendorProfile, ...]:
    """Every `[[dhcp.profiles]]` table built, in order; names must be unique (log lines and
    the admin UI tell profiles apart by name)."""
    if isinstance(tables, str | bytes) or not isinstance(tables, Sequence):
        raise ValueError("dhcp.profiles: give a list of [[dhcp.profiles]] tables")
    out: list[VendorProfile] = []
    for table in tables:
        p = table if isinstance(table, VendorProfile) else profile_from_mapping(table)
        if any(o.name == p.name for o in out):
            raise ValueError(f"{_where(p.name)}: the name is used by two profiles; rename one")
        out.append(p)
    return tuple(out)


def profile_table(p: VendorProfile) -> dict[str, Any]:
    """A VendorProfile as its `[[dhcp.profiles]]` table: profile_from_mapping() builds it back."""
    options: list[dict[str, Any]] = []
    for o in p.options:
        value: Any
        if o.encoding is Encoding.SUB_OPTIONS:
            value = {str(sub): tmpl for sub, tmpl in o.sub_options}
        elif o.encoding in _LIST_ENCODINGS or len(o.values) > 1:
            value = list(o.values)
        else:
            value = o.values[0]
        options.append({"code": o.code, "encoding": o.encoding.value, "value": value})
    table: dict[str, Any] = {"name": p.name, "match_kind": p.match_kind.value}
    if p.match_kind is not MatchKind.ANY:
        table["match"] = p.match
    table["options"] = options
    return table


# --- rendering -----------------------------------------------------------------------------


def _labels(name: str, where: str) -> bytes:
    """A DNS name in uncompressed label form (RFC 1035 §3.1), ending with the root label."""
    parts = name.rstrip(".").split(".")
    if not name.rstrip(".") or not all(_LABEL.match(p) for p in parts):
        raise ValueError(
            f"{where}: {name!r} is not a DNS name (labels of 1-63 letters, digits, '-')"
        )
    out = b"".join(bytes((len(p),)) + p.encode("ascii") for p in parts) + b"\x00"
    if len(out) > 255:
        raise ValueError(f"{where}: {name!r} is longer than 255 octets in label form")
    return out


def _ipv4(text: str, where: str) -> bytes:
    try:
        return ipaddress.IPv4Address(text).packed
    except ValueError:
        raise ValueError(
            f"{where}: {text!r} is not an IPv4 address (use {{server_ip}} or a literal)"
        ) from None


def _is_ipv4(text: str) -> bool:
    try:
        ipaddress.IPv4Address(text)
    except ValueError:
        return False
    return True


def render_option(spec: OptionSpec, values: Mapping[str, str], where: str) -> bytes:
    """Encode one option from its templates; b"" means "nothing to send"; ValueError if invalid."""
    enc = spec.encoding
    if enc is Encoding.SUB_OPTIONS:
        out = bytearray()
        for sub, tmpl in spec.sub_options:
            text = tmpl.format_map(values).encode()
            if not text:
                continue  # e.g. an empty path: leave the sub-option out
            if len(text) > 255:
                raise ValueError(
                    f"{where} sub-option {sub}: {len(text)} octets, a sub-option holds 255"
                )
            out += bytes((sub, len(text))) + text
        return bytes(out)
    rendered = [t.format_map(values) for t in spec.values]
    if enc is Encoding.TEXT:
        return rendered[0].encode()
    if enc is Encoding.HEX:
        return bytes.fromhex(rendered[0].replace(":", " "))
    if enc is Encoding.IPV4_LIST:
        addrs = [a for r in rendered for a in r.replace(",", " ").split()]
        return b"".join(_ipv4(a, where) for a in addrs)
    items = [r.strip() for r in rendered if r.strip()]
    if enc is Encoding.URI_LIST_16:
        out = bytearray()
        for uri in items:
            raw = uri.encode()
            if len(raw) > 0xFFFF:
                raise ValueError(f"{where}: URI longer than 65535 octets")
            out += len(raw).to_bytes(2, "big") + raw
        return bytes(out)
    if enc is Encoding.DNS_LABELS:
        return b"".join(_labels(n, where) for n in items)
    # SIP_SERVERS: RFC 3361 §3 forbids mixing names and addresses in one option.
    if not items:
        return b""
    if all(_is_ipv4(i) for i in items):
        return b"\x01" + b"".join(_ipv4(i, where) for i in items)
    if any(_is_ipv4(i) for i in items):
        raise ValueError(f"{where}: RFC 3361 does not allow names and addresses in one option 120")
    return b"\x00" + b"".join(_labels(n, where) for n in items)


def template_values(endpoint: ProvisioningEndpoint, server_ip: str) -> dict[str, str]:
    """The placeholder values profiles are rendered with: public data only."""
    return {
        "url": endpoint.url,
        "host": endpoint.host,
        "port": str(endpoint.port),
        "path": endpoint.path,
        "scheme": endpoint.scheme,
        "fingerprint": endpoint.fingerprint_sha256.lower(),
        "server_ip": server_ip,
    }


def render_profile(profile: VendorProfile, values: Mapping[str, str]) -> dict[int, bytes]:
    """All options of a profile as bytes, in profile order; empty results are left out."""
    out: dict[int, bytes] = {}
    for spec in profile.options:
        raw = render_option(spec, values, _where(profile.name, f"option {spec.code}"))
        if raw:
            out[spec.code] = raw
    return out


# --- built-ins -------------------------------------------------------------------------------

BUILTIN_PROFILE_DATA: tuple[Mapping[str, Any], ...] = (
    {
        # Lync/Skype for Business phones ask for 43 and 120 in a DHCPINFORM. Sub-options 1-5 are
        # the standard ones; 6 carries the TLS certificate's SHA-256 (64 hex digits) so a device
        # can pin it. Phones skip sub-options they do not know; with no certificate 6 is omitted.
        "name": "ms-uc-client",
        "match": "MS-UC-Client",
        "match_kind": "exact",
        "options": [
            {
                "code": 43,
                "encoding": "sub-options",
                "value": {
                    "1": "MS-UC-Client",
                    "2": "{scheme}",
                    "3": "{host}",
                    "4": "{port}",
                    "5": "{path}",
                    "6": "{fingerprint}",
                },
            },
            {"code": 120, "encoding": "sip-servers", "value": "{host}"},
        ],
    },
    {
        "name": "polycom",
        "match": "Polycom-",
        "match_kind": "prefix",
        "options": [
            {"code": 160, "encoding": "text", "value": "{url}"},
            {"code": 66, "encoding": "text", "value": "{url}"},
        ],
    },
    {
        "name": "yealink",
        "match": "yealink",
        "match_kind": "exact",
        "options": [{"code": 66, "encoding": "text", "value": "{url}"}],
    },
    {
        "name": "cisco-ip-phone",
        "match": "Cisco Systems, Inc. IP Phone",
        "match_kind": "prefix",
        "options": [{"code": 150, "encoding": "ipv4-list", "value": "{server_ip}"}],
    },
    {
        # ONIE reuses 114 (the RFC 8910 captive-portal code) as its default installer URL.
        "name": "onie",
        "match": "onie_vendor:",
        "match_kind": "prefix",
        "options": [{"code": 114, "encoding": "text", "value": "{url}"}],
    },
    {
        # SZTP clients (RFC 8572 §8.1) have no fixed vendor class; they list 143 in option 55.
        "name": "sztp",
        "match": "143",
        "match_kind": "requested",
        "options": [{"code": 143, "encoding": "uri-list-16", "value": ["{url}"]}],
    },
    {
        "name": "generic",
        "match_kind": "any",
        "options": [
            {"code": 224, "encoding": "text", "value": "{url}"},
            {"code": 225, "encoding": "text", "value": "{fingerprint}"},
        ],
    },
)


@cache
def builtin_profiles() -> tuple[VendorProfile, ...]:
    """The built-in profiles, parsed from BUILTIN_PROFILE_DATA (generic default last)."""
    return tuple(profile_from_mapping(d) for d in BUILTIN_PROFILE_DATA)


@dataclass(frozen=True, slots=True)
class ProfileMatch:
    profile: VendorProfile
    options: Mapping[int, bytes]


ReplyOptionsKey = tuple[int, bool, bytes | None, bytes, str]


class ProfileTable:
    """Profiles rendered once for one endpoint and server address; `select` is the packet path.

    `reply_options` is the responder's memo of what this table's profiles put in a reply (see
    responder.respond): it lives and dies with the table, so a new table starts with none.
    """

    def __init__(
        self,
        site_profiles: Sequence[VendorProfile],
        endpoint: ProvisioningEndpoint,
        server_ip: str,
        *,
        builtins: bool = True,
    ) -> None:
        values = template_values(endpoint, server_ip)
        self.site_profiles = tuple(site_profiles)
        self.builtins = builtins
        self.warnings: list[str] = []
        self.reply_options: dict[ReplyOptionsKey, tuple[dict[int, bytes], str]] = {}
        entries: list[ProfileMatch] = []
        # A site profile that cannot be rendered is our config's fault: refuse to start.
        for p in site_profiles:
            entries.append(ProfileMatch(p, render_profile(p, values)))
        if builtins:
            # A built-in that does not fit this endpoint (e.g. option 120 with an IPv6 host)
            # loses that option only; the reason is kept for a startup warning.
            for p in builtin_profiles():
                opts: dict[int, bytes] = {}
                for spec in p.options:
                    where = _where(p.name, f"option {spec.code}")
                    try:
                        raw = render_option(spec, values, where)
                    except ValueError as e:
                        self.warnings.append(f"built-in profile option left out: {e}")
                        continue
                    if raw:
                        opts[spec.code] = raw
                entries.append(ProfileMatch(p, opts))
        self.entries: tuple[ProfileMatch, ...] = tuple(entries)

    def select(self, vendor_class: bytes | None, prl: bytes) -> ProfileMatch | None:
        """The first profile matching this client, with its rendered options."""
        if vendor_class is not None and vendor_class.endswith(b"\x00"):
            # RFC 2132 §2: receivers must accept text options with trailing NULs.
            vendor_class = vendor_class.rstrip(b"\x00")
        for entry in self.entries:
            if entry.profile.matches(vendor_class, prl):
                return entry
        return None


# --- describing what a profile sends (check-config --profiles) -----------------------------

OPTION_NAMES: Mapping[int, str] = {
    43: "vendor-encapsulated-options",
    66: "tftp-server-name",
    67: "bootfile-name",
    72: "www-server",
    114: "captive-portal URL (RFC 8910); ONIE's default installer URL",
    120: "sip-servers (RFC 3361)",
    125: "vendor-identifying vendor-specific information",
    143: "sztp-redirect (RFC 8572)",
    150: "tftp-server-address (Cisco)",
    160: "provisioning server URL (Polycom)",
}


def option_name(code: int) -> str:
    """A short name of a DHCP option a profile may send, for people reading check-config."""
    if code in OPTION_NAMES:
        return OPTION_NAMES[code]
    if 224 <= code <= 254:
        return "site-specific (RFC 3942)"
    return "(no name known here)"


def _read_labels(raw: bytes, i: int) -> tuple[str, int]:
    labels: list[str] = []
    while i < len(raw) and raw[i] != 0:
        n = raw[i]
        labels.append(raw[i + 1 : i + 1 + n].decode("ascii", "replace"))
        i += 1 + n
    return ".".join(labels), i + 1


def decode_option(encoding: Encoding, raw: bytes) -> str:
    """The octets of one rendered option read back per its encoding (the inverse of
    render_option), as one line of text."""
    if encoding is Encoding.TEXT:
        return repr(raw.decode("utf-8", "replace"))
    if encoding is Encoding.HEX:
        return raw.hex(" ")
    if encoding is Encoding.IPV4_LIST:
        return ", ".join(str(ipaddress.IPv4Address(raw[i : i + 4])) for i in range(0, len(raw), 4))
    if encoding is Encoding.URI_LIST_16:
        uris: list[str] = []
        i = 0
        while i + 2 <= len(raw):
            n = int.from_bytes(raw[i : i + 2], "big")
            uris.append(repr(raw[i + 2 : i + 2 + n].decode("utf-8", "replace")))
            i += 2 + n
        return ", ".join(uris)
    if encoding is Encoding.SUB_OPTIONS:
        subs: list[str] = []
        i = 0
        while i + 2 <= len(raw):
            sub, n = raw[i], raw[i + 1]
            subs.append(f"{sub}={raw[i + 2 : i + 2 + n].decode('utf-8', 'replace')!r}")
            i += 2 + n
        return " ".join(subs)
    if encoding is Encoding.DNS_LABELS:
        names: list[str] = []
        i = 0
        while i < len(raw):
            name, i = _read_labels(raw, i)
            names.append(name)
        return ", ".join(names)
    # SIP_SERVERS: RFC 3361 §3, encoding byte 0 (names) or 1 (addresses).
    if raw[:1] == b"\x01":
        return "addresses " + decode_option(Encoding.IPV4_LIST, raw[1:])
    return "names " + decode_option(Encoding.DNS_LABELS, raw[1:])


def describe_match(p: VendorProfile) -> str:
    """Which clients a profile applies to, in words."""
    if p.match_kind is MatchKind.EXACT:
        return f"vendor class (option 60) is {p.match!r}"
    if p.match_kind is MatchKind.PREFIX:
        return f"vendor class (option 60) starts with {p.match!r}"
    if p.match_kind is MatchKind.REQUESTED:
        return f"option 55 asks for option {p.match}"
    return "every client no earlier profile matched"


def describe_profiles(table: ProfileTable) -> list[str]:
    """Every profile of `table` in the order they are tried, each option it sends: code, name,
    encoding, the octets in hex and read back."""
    site = {id(p) for p in table.site_profiles}
    lines: list[str] = []
    for entry in table.entries:
        p = entry.profile
        kind = "site" if id(p) in site else "built-in"
        lines.append(f"profile {p.name} ({kind}; {describe_match(p)}):")
        specs = {spec.code: spec for spec in p.options}
        for spec in p.options:
            if spec.code not in entry.options:
                lines.append(
                    f"  option {spec.code} {option_name(spec.code)}: not sent (renders empty, or left out: see the warnings)"
                )
        for code, raw in entry.options.items():
            enc = specs[code].encoding
            lines.append(f"  option {code} {option_name(code)} ({enc.value}, {len(raw)} octets)")
            lines.append(f"    hex:     {raw.hex(' ')}")
            lines.append(f"    decoded: {decode_option(enc, raw)}")
    return lines
