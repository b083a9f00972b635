"""Settings: one TOML file plus IMPRINT_<SECTION>__<KEY> environment overrides, validated once.

Invalid config is our own fault, not a peer's: `load_settings` raises ConfigError naming every bad
key and the reason, and `imprint serve` refuses to start.
"""

from __future__ import annotations

import ipaddress
import os
import tomllib
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PlainSerializer,
    PlainValidator,
    ValidationError,
    WithJsonSchema,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

# Pure builders of the DHCP domain objects (no I/O): the settings validators call them.
from server.dhcp.pool import Subnet, check_server_address, subnet_table, subnets_from_tables
from server.dhcp.profiles import ProfileTable, VendorProfile, profile_table, profiles_from_tables
from server.registry.model import ProvisioningEndpoint

if TYPE_CHECKING:
    from server.dhcp.service import DhcpConfig


class ConfigError(Exception):
    """The configuration cannot be used; str(self) names each key and what to fix."""


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class StoreSettings(_Section):
    """Where the state lives: the SQLite database (or a PostgreSQL one, `url`), with the code key
    and the certificate."""

    path: Path = Field(
        default=Path("imprint.db"),
        description="SQLite database file (WAL mode); the code key file and the self-signed "
        "TLS certificate are kept in the same folder. Relative to the config file's folder",
    )
    busy_timeout_ms: int = Field(
        default=5000,
        ge=0,
        le=600_000,
        description="milliseconds a write waits for another writer (the CLI, a backup) to "
        "finish before it fails as busy",
    )
    poll_interval_s: float = Field(
        default=1.0,
        gt=0,
        le=60,
        description="seconds between the server's looks for changes made by the CLI (devices, "
        "codes, tokens); a CLI change is live within this long",
    )
    url: str | None = Field(
        default=None,
        description="PostgreSQL instead of the SQLite file: a libpq URL such as "
        "postgresql://imprint@db.example/imprint or postgresql:///imprint?host=/run/postgresql "
        "(password from ~/.pgpass or PGPASSWORD, not this file). Unset: SQLite at `path`. "
        "The code key file and the TLS certificate stay in `path`'s folder either way",
    )
    pool_size: int = Field(
        default=10,
        ge=1,
        le=1000,
        description="PostgreSQL only: connections the server keeps open to the database",
    )

    @field_validator("url")
    @classmethod
    def _store_url(cls, v: str | None) -> str | None:
        if v is None or not v.strip():
            return None
        v = v.strip()
        scheme = v.split("://", 1)[0].lower() if "://" in v else ""
        if scheme not in ("postgresql", "postgres"):
            raise ValueError(
                "must be a PostgreSQL URL starting with postgresql:// (or postgres://); "
                "for SQLite leave url unset and set path"
            )
        return v

    @property
    def backend(self) -> Literal["sqlite", "postgresql"]:
        return "sqlite" if self.url is None else "postgresql"


class HttpSettings(_Section):
    """The HTTPS listener: provisioning, OAuth, the REST API, the web UI and /metrics, and what
    one connection may hold."""

    host: str = Field(
        default="0.0.0.0",
        description="address the HTTPS listener binds: 0.0.0.0 (or ::) for every address, or "
        "one address of this host",
    )
    port: int = Field(
        default=8443,
        ge=0,
        le=65535,
        description="TCP port of the REST API, provisioning, OAuth and the web UI (below 1024 "
        "needs CAP_NET_BIND_SERVICE; 0: any free port)",
    )
    public_url: str | None = Field(
        default=None,
        description="URL devices and admins use (sent in DHCP options and mDNS records); "
        "derived from host/port if unset",
    )
    max_upload_bytes: int = Field(
        default=32 * 1024 * 1024,
        ge=1024,
        description="largest request body in bytes (e.g. a CSV import); larger ones get 413",
    )
    # What one connection may hold (nginx's client_header_timeout / keepalive_timeout /
    # limit_conn): see server/web/limits.py.
    head_timeout_s: float = Field(
        default=20.0,
        gt=0,
        le=3600,
        description="seconds a new connection has for the TLS handshake and its first request head",
    )
    keepalive_timeout_s: float = Field(
        default=60.0,
        gt=0,
        le=3600,
        description="seconds an idle keep-alive connection (or a later half-sent head) is kept",
    )
    max_connections: int = Field(
        default=1024,
        ge=1,
        le=1_000_000,
        description="connections open at once; one more is closed on arrival (the open-files "
        "limit is raised to fit)",
    )
    max_connections_per_source: int = Field(
        default=256,
        ge=1,
        le=1_000_000,
        description="connections open at once from one source address; at most max_connections",
    )

    @field_validator("public_url")
    @classmethod
    def _url(cls, v: str | None) -> str | None:
        if v is not None and not (v.startswith("https://") or v.startswith("http://")):
            raise ValueError("must start with https:// or http://")
        return v.rstrip("/") if v else v

    @model_validator(mode="after")
    def _caps(self) -> HttpSettings:
        if self.max_connections_per_source > self.max_connections:
            raise ValueError(
                f"max_connections_per_source ({self.max_connections_per_source}) is more than "
                f"max_connections ({self.max_connections})"
            )
        return self


class TlsSettings(_Section):
    """The certificate HTTPS serves; its SHA-256 fingerprint is advertised to devices."""

    enabled: bool = Field(
        default=True,
        description="serve HTTPS; false serves plain HTTP with a warning (codes and credentials "
        "then cross the network in clear text: lab only)",
    )
    cert_file: Path | None = Field(
        default=None,
        description="PEM certificate (chain) to serve; unset: a self-signed one is made at "
        "first start next to the store. Give key_file with it",
    )
    key_file: Path | None = Field(
        default=None, description="PEM private key of cert_file; give both or neither"
    )

    @model_validator(mode="after")
    def _pair(self) -> TlsSettings:
        if (self.cert_file is None) != (self.key_file is None):
            raise ValueError("cert_file and key_file must be given together (or neither)")
        return self


def _subnets(value: Any) -> tuple[Subnet, ...]:
    return subnets_from_tables(value)


def _profiles(value: Any) -> tuple[VendorProfile, ...]:
    return profiles_from_tables(value)


# The settings hold the domain objects themselves, built by the one set of rules in
# server/dhcp/pool.py and server/dhcp/profiles.py; they dump back to their TOML tables (which is
# what a SIGHUP compares).
SubnetTables = Annotated[
    tuple[Subnet, ...],
    PlainValidator(_subnets),
    PlainSerializer(lambda v: [subnet_table(x) for x in v], return_type=list[dict[str, Any]]),
    WithJsonSchema({"type": "array", "items": {"type": "object"}}),
]
ProfileTables = Annotated[
    tuple[VendorProfile, ...],
    PlainValidator(_profiles),
    PlainSerializer(lambda v: [profile_table(x) for x in v], return_type=list[dict[str, Any]]),
    WithJsonSchema({"type": "array", "items": {"type": "object"}}),
]
# Renders {fingerprint} where the certificate is not known yet (check-config): any 64 hex
# digits render, or fail to, exactly as the real SHA-256 does.
FINGERPRINT_STAND_IN = "0" * 64


def _ipv4_server_id(v: str | None) -> str | None:
    if v is None:
        return v
    try:
        return str(ipaddress.IPv4Address(v))
    except ValueError:
        raise ValueError(
            f"{v!r} is not an IPv4 address; give this server's address on the site VLAN "
            "(or leave it out to take the interface's)"
        ) from None


DhcpMode = Literal["inform", "proxy", "full"]
# The [dhcp] keys that describe one link; with [[dhcp.links]] each table carries its own.
LINK_KEYS = ("interface", "mode", "server_ip", "subnets")


class DhcpLink(_Section):
    """One link (an interface, e.g. a VLAN sub-interface) served with its own mode and subnets."""

    interface: str | None = Field(
        default=None,
        description="the link's network interface, e.g. eth0.100 (required; must exist on this "
        "host)",
    )
    mode: DhcpMode = Field(default="inform", description="this link's mode, as [dhcp] mode")
    server_ip: str | None = Field(
        default=None, description="server identifier on this link; default the interface's address"
    )
    subnets: SubnetTables = Field(
        default=(),
        description="this link's [[dhcp.links.subnets]] tables (keys as [[dhcp.subnets]]); "
        "full mode needs at least one",
    )

    _server_ip = field_validator("server_ip")(_ipv4_server_id)

    @property
    def name(self) -> str:
        return self.interface or ""


class DhcpSettings(_Section):
    """The DHCP responder: on one interface with the keys below, or on several links with
    [[dhcp.links]] tables."""

    enabled: bool = Field(default=False, description="run the DHCP responder")
    mode: DhcpMode = Field(
        default="inform",
        description="inform: answer DHCPINFORM beside the site's DHCP server; proxy: options in "
        "OFFER/ACK without an address; full: lease addresses from [[dhcp.subnets]] (only to "
        "registered MACs)",
    )
    interface: str | None = Field(
        default=None,
        description="network interface to serve (SO_BINDTODEVICE; must exist on this host); "
        "unset: every interface, and server_ip must be given",
    )
    host: str = Field(
        default="0.0.0.0",
        description="address the DHCP socket binds; keep 0.0.0.0 to receive broadcasts",
    )
    port: int = Field(
        default=67,
        ge=0,
        le=65535,
        description="UDP port requests arrive on (67; below 1024 needs CAP_NET_BIND_SERVICE)",
    )
    client_port: int = Field(
        default=68,
        ge=1,
        le=65535,
        description="UDP port replies are sent to on clients (68; a lab knob)",
    )
    server_ip: str | None = Field(
        default=None, description="server identifier (option 54); defaults to the interface address"
    )
    queue_size: int = Field(
        default=4096,
        ge=1,
        description="full mode: datagrams held while their replies wait for a lease commit; "
        "past queue_size + workers they are shed before decoding (DHCP_QUEUE_FULL)",
    )
    workers: int = Field(
        default=8,
        ge=1,
        le=256,
        description="full mode: lease commits in flight at once; adds to the queue_size budget",
    )
    server_port: int = Field(
        default=67,
        ge=1,
        le=65535,
        description="UDP port replies are sent to on relays (67; a lab knob)",
    )
    builtin_profiles: bool = Field(
        default=True,
        description="after the [[dhcp.profiles]], try the built-in vendor profiles (ms-uc-client, "
        "polycom, yealink, cisco-ip-phone, onie, sztp, generic); see `imprint check-config "
        "--profiles`",
    )
    discovered_max: int = Field(
        default=10_000,
        ge=1,
        description="unregistered MACs remembered for `imprint discovered`; past it a MAC seen "
        "only once is forgotten first (a flood of spoofed MACs costs bounded memory)",
    )
    probe_other_servers: bool = Field(
        default=True,
        description="full mode: refuse to start if another DHCP server answers on the interface",
    )
    subnets: SubnetTables = Field(
        default=(),
        description="[[dhcp.subnets]] tables: the pools full mode leases from (see below)",
    )
    profiles: ProfileTables = Field(
        default=(),
        description="[[dhcp.profiles]] tables: which clients get which options, tried in order "
        "before the built-ins (see below)",
    )
    links: list[DhcpLink] = Field(
        default_factory=list,
        description="several links at once ([[dhcp.links]] tables: interface, mode, server_ip, "
        "subnets), e.g. one VLAN sub-interface per site VLAN; replies leave by the link the "
        "request came in on",
    )

    _server_ip = field_validator("server_ip")(_ipv4_server_id)

    @model_validator(mode="after")
    def _full_needs_subnets(self) -> DhcpSettings:
        if not self.enabled:
            return self
        if not self.links:
            if self.mode == "full" and not self.subnets:
                raise ValueError(
                    "mode = 'full' needs at least one [[dhcp.subnets]] table with a pool"
                )
            return self
        both = [k for k in LINK_KEYS if k in self.model_fields_set]
        if both:
            raise ValueError(
                f"{', '.join(both)} and [[dhcp.links]] are both set: with links, give each "
                "link's interface, mode, server_ip and subnets in its own [[dhcp.links]] table"
            )
        seen: dict[str, int] = {}
        for i, link in enumerate(self.links):
            where = f"links.{i}"
            if not link.interface or not link.interface.strip():
                raise ValueError(f'{where} needs an interface, e.g. interface = "eth0.100"')
            if link.interface in seen:
                raise ValueError(
                    f"{where}: interface {link.interface!r} is already links.{seen[link.interface]}"
                )
            seen[link.interface] = i
            if link.mode == "full" and not link.subnets:
                raise ValueError(
                    f"{where} ({link.interface}): mode = 'full' needs at least one "
                    "[[dhcp.links.subnets]] table with a pool after this [[dhcp.links]] table"
                )
        nets = [(lk.interface, sub.network) for lk in self.links for sub in lk.subnets]
        for a, (ia, na) in enumerate(nets):
            for ib, nb in nets[a + 1 :]:
                if ia != ib and na.overlaps(nb):
                    raise ValueError(
                        f"links: subnet {na} on {ia} overlaps {nb} on {ib}; each link "
                        "leases from its own subnets"
                    )
        return self

    def served_links(self) -> list[DhcpLink]:
        """Every link to serve: the [[dhcp.links]] tables, else one made of the [dhcp] keys."""
        if self.links:
            return list(self.links)
        return [
            DhcpLink.model_construct(
                interface=self.interface,
                mode=self.mode,
                server_ip=self.server_ip,
                subnets=self.subnets,
            )
        ]

    def build(
        self,
        endpoint: ProvisioningEndpoint,
        server_ip: str | None,
        link: DhcpLink | None = None,
    ) -> tuple[DhcpConfig, ProfileTable]:
        """What the DHCP service of `link` (default: the only one) runs with: its very subnets,
        the shared profiles, and the profile table rendered for `endpoint`; ConfigError names
        the key to fix.

        `imprint serve` and `imprint check-config` both call this, so they refuse the same
        configs. `server_ip` None means not known here (taken from the interface at start):
        profiles render with a stand-in address (any IPv4 address renders alike) and the check
        that no pool holds the server's own address waits for `serve`.
        """
        from server.dhcp.responder import Mode
        from server.dhcp.service import DhcpConfig

        link = link or self.served_links()[0]
        config = DhcpConfig(
            mode=Mode(link.mode),
            server_ip=server_ip or "0.0.0.0",
            endpoint=endpoint,
            profiles=self.profiles,
            subnets=link.subnets,
            client_port=self.client_port,
            server_port=self.server_port,
            builtin_profiles=self.builtin_profiles,
        )
        try:
            if server_ip is not None and config.mode is Mode.FULL:
                check_server_address(link.subnets, server_ip)
            table = ProfileTable(
                self.profiles, endpoint, config.server_ip, builtins=self.builtin_profiles
            )
        except ValueError as e:
            where = f"dhcp.links ({link.interface}): " if self.links else ""
            raise ConfigError(where + str(e)) from None
        return config, table


class MdnsSettings(_Section):
    """The mDNS / DNS-SD responder: answers registered devices' queries for the service."""

    enabled: bool = Field(default=False, description="run the mDNS / DNS-SD responder")
    interface: str | None = Field(
        default=None,
        description="one link (must exist on this host); same as interfaces = [it]; 'lo' is the "
        "lab mode",
    )
    interfaces: list[str] = Field(
        default_factory=list,
        description="links to answer on, e.g. VLAN sub-interfaces ['eth0.100', 'eth0.200']: each "
        "answers with its own addresses, only the queries that came in on it",
    )
    service: str = Field(
        default="_imprint._tcp",
        description="DNS-SD service type answered, '_name._tcp' or '_name._udp' ('.local.' "
        "implied)",
    )
    host: str = Field(
        default="0.0.0.0",
        description="address the mDNS socket binds; keep 0.0.0.0 to receive multicast queries",
    )
    port: int = Field(
        default=5353, ge=0, le=65535, description="UDP port queries arrive on (5353; a lab knob)"
    )
    instance_name: str = Field(
        default="Imprint",
        description="DNS-SD instance name (1-63 bytes of UTF-8); on a conflict ' (2)' etc. is "
        "added",
    )
    hostname: str | None = Field(
        default=None,
        description="host label of the SRV target (<hostname>.local.); default "
        "imprint-<this host's name>",
    )
    static_neighbours: dict[str, str] = Field(
        default_factory=dict, description="lab: source IP -> MAC where there is no L2 to learn from"
    )
    ipv6: bool = Field(
        default=True,
        description="also join ff02::fb on the interface and answer IPv6 queriers, with AAAA "
        "records for the interface's IPv6 addresses (link-local included)",
    )
    announce: bool = Field(
        default=False,
        description="after probing, multicast our records twice (RFC 6762 §8.3) and a goodbye "
        "at shutdown. Off by default: an announcement tells every host on the link, registered "
        "or not, that the service exists; off, only answered devices hear of it",
    )
    share_port: bool = Field(
        default=False,
        description="bind the mDNS port beside another responder on this host that allows it "
        "(Avahi): SO_REUSEADDR. Off by default, so a second server cannot take queries meant "
        "for this one; with it on, keep capture_frames on (queries are then read from frames)",
    )
    capture_frames: bool = Field(
        default=True,
        description="read queries as Ethernet frames (AF_PACKET, needs CAP_NET_RAW) to learn the "
        "querier's MAC from its own frame; without the capability the neighbour table is used",
    )
    rate_per_source: float = Field(
        default=1.0, gt=0, description="mDNS queries per second answered for one source address"
    )
    burst_per_source: float = Field(
        default=8,
        ge=1,
        description="mDNS queries one source may have answered at once above rate_per_source "
        "(token bucket size)",
    )
    datagrams_per_source: float = Field(
        default=100.0,
        gt=0,
        description="mDNS datagrams per second read from one source address, of any kind, "
        "before decoding; past it (and its burst) they are dropped undecoded",
    )
    datagram_burst_per_source: float = Field(
        default=200,
        ge=1,
        description="mDNS datagrams one source may send at once above datagrams_per_source "
        "(token bucket size)",
    )

    @field_validator("service")
    @classmethod
    def _service(cls, v: str) -> str:
        v = v.removesuffix(".").removesuffix(".local")
        parts = v.split(".")
        if len(parts) != 2 or not parts[0].startswith("_") or parts[1] not in ("_tcp", "_udp"):
            raise ValueError(f"{v!r} must look like '_name._tcp' (the '.local.' suffix is implied)")
        if not 1 <= len(parts[0]) - 1 <= 15:
            raise ValueError(f"service name {parts[0][1:]!r} must be 1-15 characters (RFC 6335)")
        return v

    @model_validator(mode="after")
    def _links(self) -> MdnsSettings:
        names = [n.strip() for n in self.interfaces]
        if any(not n for n in names):
            raise ValueError("interfaces: an interface name is empty")
        if len(set(names)) != len(names):
            raise ValueError(f"interfaces: {names} names an interface twice")
        if self.interface and names and names != [self.interface]:
            raise ValueError(
                f"interface = {self.interface!r} and interfaces = {names} are both set: "
                "keep only interfaces"
            )
        if "lo" in names and len(names) > 1:
            raise ValueError("interfaces: 'lo' (lab mode) cannot be combined with other links")
        return self

    @property
    def links(self) -> list[str]:
        """Every interface to answer on: `interfaces`, else `[interface]`, else []."""
        names = [n.strip() for n in self.interfaces]
        return names or ([self.interface] if self.interface else [])


class CodesSettings(_Section):
    """Verification codes: how long they last and how many wrong entries lock a device."""

    ttl_hours: float = Field(
        default=24,
        gt=0,
        le=24 * 30,
        description="hours a verification code is valid after it is generated",
    )
    max_attempts: int = Field(
        default=5,
        ge=1,
        le=100,
        description="wrong code entries before the device is locked and needs a new code",
    )
    key_file: Path | None = Field(
        default=None,
        description="secret key that seals the codes, kept outside the database (back it up "
        "with it); default imprint-codes.key next to the store",
    )


class ProvisionSettings(_Section):
    """Code entry by devices (POST /provision): rate limits and address checks."""

    rate_per_source: float = Field(
        default=2.0, gt=0, description="code entries per second allowed from one source address"
    )
    burst_per_source: float = Field(
        default=10,
        ge=1,
        description="code entries one source may make at once above rate_per_source (token "
        "bucket size)",
    )
    require_dhcp_match: bool = Field(
        default=False,
        description="refuse a redemption from an address other than the one DHCP saw the MAC at",
    )
    retry_window_s: int = Field(
        default=300,
        ge=0,
        le=3600,
        description="seconds after a success in which the same code from the same address gets "
        "new credentials (a response lost on the way); 0: never",
    )


class OAuthSettings(_Section):
    """Remote sign-in (RFC 8628 device authorization grant) and the tokens it issues."""

    device_code_ttl_s: int = Field(
        default=900, ge=60, le=3600, description="seconds a device/user code pair is valid"
    )
    interval_s: int = Field(
        default=5, ge=1, le=60, description="minimum seconds between a device's token polls"
    )
    access_token_ttl_s: int = Field(
        default=3600, ge=60, le=86400, description="seconds an access token (JWT) is valid"
    )
    refresh_token_ttl_s: int = Field(
        default=30 * 86400,
        ge=3600,
        le=365 * 86400,
        description="seconds a refresh token is valid; each refresh starts a new one (rotation)",
    )
    audience: str | None = Field(
        default=None, description="access tokens' `aud` claim; defaults to the public URL"
    )


class LogSettings(_Section):
    """What the log says. At INFO the DHCP log is one summary line per interval (decisions by
    reason), the first sighting of each unregistered MAC, and every decision about the MACs in
    the trace list (`imprint trace MAC`); each decision about everyone is a DEBUG line."""

    level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = Field(
        default="INFO",
        description="least severe log level written (serve; other commands: WARNING)",
    )
    format: Literal["human", "json"] = Field(
        default="human",
        description="human: one readable line per event; json: one JSON object per line",
    )
    summary_interval_s: float = Field(
        default=60,
        ge=0,
        le=86400,
        description="seconds between DHCP decision summaries at INFO (0: none); "
        "an interval with no datagrams logs nothing",
    )


class Settings(BaseSettings):
    """Every setting of one Imprint instance."""

    model_config = SettingsConfigDict(
        env_prefix="IMPRINT_", env_nested_delimiter="__", extra="forbid", frozen=True
    )

    store: StoreSettings = StoreSettings()
    http: HttpSettings = HttpSettings()
    tls: TlsSettings = TlsSettings()
    dhcp: DhcpSettings = DhcpSettings()
    mdns: MdnsSettings = MdnsSettings()
    codes: CodesSettings = CodesSettings()
    provision: ProvisionSettings = ProvisionSettings()
    oauth: OAuthSettings = OAuthSettings()
    log: LogSettings = LogSettings()
    config_file: Path | None = Field(
        default=None,
        description="set by load_settings to the file read (not a key of the file)",
    )

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # Environment beats the file: an operator overrides one key without editing the file.
        return (env_settings, init_settings)

    @property
    def state_dir(self) -> Path:
        return self.store.path.parent

    @property
    def codes_key_file(self) -> Path:
        return self.codes.key_file or self.state_dir / "imprint-codes.key"


def _format_errors(err: ValidationError, source: str) -> str:
    lines = [f"invalid configuration ({source}):"]
    for e in err.errors():
        loc = ".".join(str(p) for p in e["loc"])
        msg = e["msg"]
        if e["type"] == "extra_forbidden":
            msg = "unknown key (check the spelling; docs/configuration.md lists every key)"
        if e["type"] == "value_error":
            msg = msg.removeprefix("Value error, ")
            if msg.startswith(loc):
                # The domain builders name the exact key (e.g. dhcp.subnets.0.pool) themselves.
                lines.append(f"  {msg}")
                continue
        value = e.get("input")
        shown = "" if isinstance(value, dict | list) or value is None else f" (got {value!r})"
        lines.append(f"  {loc}: {msg}{shown}")
    return "\n".join(lines)


def load_settings(path: str | os.PathLike[str] | None = None) -> Settings:
    """Read the TOML file at `path` (if any), apply IMPRINT_* overrides, validate; or ConfigError.

    Relative paths in the file ([store] path, [tls] files, [codes] key_file) are taken relative
    to the file's folder, so a config works wherever the server is started from.
    """
    data: dict[str, Any] = {}
    source = "defaults and environment"
    base: Path | None = None
    if path is not None:
        p = Path(path)
        source = str(p)
        try:
            with p.open("rb") as f:
                data = tomllib.load(f)
        except FileNotFoundError as e:
            raise ConfigError(f"config file {p} does not exist") from e
        except tomllib.TOMLDecodeError as e:
            raise ConfigError(f"config file {p} is not valid TOML: {e}") from e
        except OSError as e:
            raise ConfigError(f"config file {p} cannot be read: {e}") from e
        base = p.resolve().parent
        data["config_file"] = str(p.resolve())
    try:
        settings = Settings(**data)
    except ValidationError as e:
        raise ConfigError(_format_errors(e, source)) from None
    if base is not None:
        settings = _resolve_paths(settings, base)
    return settings


def _resolve_paths(s: Settings, base: Path) -> Settings:
    def rel(p: Path | None) -> Path | None:
        return None if p is None or p.is_absolute() else base / p

    store = s.store.model_copy(update={"path": rel(s.store.path) or s.store.path})
    tls = s.tls.model_copy(
        update={
            "cert_file": rel(s.tls.cert_file) or s.tls.cert_file,
            "key_file": rel(s.tls.key_file) or s.tls.key_file,
        }
    )
    codes = s.codes.model_copy(update={"key_file": rel(s.codes.key_file) or s.codes.key_file})
    return s.model_copy(update={"store": store, "tls": tls, "codes": codes})
