"""Composition root: builds every service from Settings. The only place that names concrete
classes; aiohttp's cleanup_ctx starts and stops the store (and the DHCP/mDNS responders)."""

from __future__ import annotations

import asyncio
import contextlib
import errno
import gc
import ipaddress
import logging
import platform
import resource
import signal
import socket
import ssl
import sys
import time
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlsplit

from aiohttp import web
from aiohttp.typedefs import Handler
from prometheus_client.aiohttp import make_aiohttp_handler

from server import __version__
from server.admin import ui as admin_web
from server.api import docs as api_docs
from server.api import http as api
from server.api import users as api_users
from server.config import ConfigError, DhcpLink, Settings
from server.core import looplag
from server.core.logs import RateLimitedLog
from server.core.metrics import Registry as MetricsRegistry
from server.core.metrics import scrape_registry
from server.core.ratelimit import FailureLimiter, TokenBuckets
from server.core.tls import CertInfo, ensure_self_signed, load_configured
from server.dhcp.pool import Subnet
from server.dhcp.probe import probe_segment
from server.dhcp.responder import Mode
from server.dhcp.service import DhcpService
from server.dhcp.trace import TraceWatcher, trace_file
from server.dhcp.transport import DhcpServer, start_dhcp
from server.hostcheck import check_host
from server.mdns.neighbours import (
    KernelNeighbours,
    NeighbourResolver,
    interface_addresses,
    interface_networks,
)
from server.mdns.netlink import NetlinkNeighbours
from server.mdns.probe import Prober
from server.mdns.records import ServiceRecords, build_records, host_labels
from server.mdns.service import MdnsService
from server.mdns.transport import MdnsServer, start_mdns
from server.oauth import http as oauth_web
from server.oauth.keys import SIGNING_KEY_NAME, CodeKeys, SigningKey
from server.oauth.service import OAuthService
from server.oauth.store import OAuthStore
from server.provisioning import http as provisioning
from server.provisioning.codes import CodeVault, load_or_create_key
from server.registry.discovered import DiscoveredDevices
from server.registry.model import ProvisioningEndpoint
from server.registry.service import Registry
from server.reload import install_sighup
from server.store.open import make_store
from server.store.sqlite import SqliteStore
from server.web.errors import json_errors
from server.web.keys import SERVICES, Services
from server.web.limits import MIN_BODY_RATE, HttpListener, body_deadline
from server.web.routes import RouteTable, build_openapi

log = logging.getLogger("imprint")

DISCOVERED_SAVE_S = 2.0
PROVISION_PATH = "/provision"  # the device-facing endpoint, relative to the public URL

Clock = Callable[[], datetime]


def resolve_certificate(settings: Settings) -> CertInfo | None:
    """The TLS certificate to serve with, or None when [tls] enabled = false."""
    if not settings.tls.enabled:
        return None
    if settings.tls.cert_file and settings.tls.key_file:
        try:
            return load_configured(settings.tls.cert_file, settings.tls.key_file)
        except ValueError as e:
            raise ConfigError(str(e)) from e
    names = [settings.http.host] if settings.http.host not in ("0.0.0.0", "::", "") else []
    if settings.http.public_url:
        host = urlsplit(settings.http.public_url).hostname
        if host:
            names.insert(0, host)
    return ensure_self_signed(settings.state_dir, names or ["imprint"])


def public_url(settings: Settings) -> str:
    if settings.http.public_url:
        return settings.http.public_url
    scheme = "https" if settings.tls.enabled else "http"
    host = settings.http.host
    if host in ("0.0.0.0", "::", ""):
        host = socket.gethostname()
    hostpart = f"[{host}]" if ":" in host else host
    return f"{scheme}://{hostpart}:{settings.http.port}"


meta = RouteTable()


@meta.route(
    "GET",
    "/healthz",
    summary="Liveness: the process answers",
    tag="meta",
    auth="none",
    responses={200: ("alive", {"type": "object"})},
)
async def healthz(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok", "version": __version__})


@meta.route(
    "GET",
    "/readyz",
    summary="Readiness: the store is open and the index loaded",
    tag="meta",
    auth="none",
    responses={200: ("ready", {"type": "object"}), 503: ("not ready", None)},
)
async def readyz(request: web.Request) -> web.Response:
    ready = request.app[SERVICES].ready
    return web.json_response({"ready": ready}, status=200 if ready else 503)


@meta.route(
    "GET",
    "/metrics",
    summary="Prometheus metrics",
    tag="meta",
    auth="none",
    responses={
        200: ("Prometheus text format (OpenMetrics when the Accept header asks)", "text/plain")
    },
)
async def metrics(request: web.Request) -> web.StreamResponse:
    # prometheus_client's own aiohttp handler: it picks the format from Accept, honours
    # `?name[]=` and compresses when the client accepts it.
    resp: web.StreamResponse = await request.app[METRICS_HANDLER](request)
    resp.headers["X-Content-Type-Options"] = "nosniff"
    return resp


def _store_ctx(clock: Clock | None) -> Callable[[web.Application], AsyncIterator[None]]:
    async def ctx(app: web.Application) -> AsyncIterator[None]:
        svc = app[SERVICES]
        s = svc.settings
        store = make_store(s.store)
        await store.open()
        key = load_or_create_key(s.codes_key_file)
        registry = Registry(
            store,
            CodeVault(key),
            code_ttl=timedelta(hours=s.codes.ttl_hours),
            max_attempts=s.codes.max_attempts,
            clock=clock or (lambda: datetime.now(UTC)),
        )
        await registry.load_index()
        svc.discovered.restore(await store.list_discovered())
        registry.on_registered.append(svc.discovered.remove_all)
        svc._registry = registry
        gauge = svc.metrics.gauge("imprint_devices", "Registered devices by state", ("state",))
        gauge.set_function(lambda: _count_states(registry))
        svc.metrics.gauge(
            "imprint_tenant_devices", "Registered devices by tenant and state", ("tenant", "state")
        ).set_function(lambda: _count_tenant_states(registry))
        rollout_errors = svc.metrics.counter(
            "imprint_rollout_errors_total",
            "Code entries refused and sign-ins failed, by tenant and reason",
            ("tenant", "reason"),
        )
        registry.rollout.on_error.append(lambda tenant, reason: rollout_errors.inc(tenant, reason))
        poller = asyncio.create_task(
            _poll(registry, s.store.poll_interval_s, svc), name="registry-poll"
        )
        log.info("store open at %s: %d registered devices", store.location, len(registry.index))
        try:
            yield
        finally:
            poller.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await poller
            svc._registry = None
            with contextlib.suppress(Exception):
                await store.replace_discovered(svc.discovered.recent())
            await store.close()
            log.info("store closed")

    return ctx


async def _loop_lag_ctx(app: web.Application) -> AsyncIterator[None]:
    """The event-loop lag probe (`imprint_event_loop_lag_seconds`), from start to stop."""
    async with looplag.running(app[SERVICES].metrics):
        yield


async def _oauth_ctx(app: web.Application) -> AsyncIterator[None]:
    """Remote sign-in (RFC 8628): needs the open store; makes the signing key at first start."""
    svc = app[SERVICES]
    s = svc.settings
    o = s.oauth
    registry = svc.registry
    signing = await asyncio.to_thread(SigningKey.load_or_create, s.state_dir / SIGNING_KEY_NAME)
    svc._oauth = OAuthService(
        registry,
        OAuthStore(registry.store),
        CodeKeys(load_or_create_key(s.codes_key_file)),
        signing,
        public_url=svc.public_url,
        audience=o.audience,
        device_code_ttl=timedelta(seconds=o.device_code_ttl_s),
        interval_s=o.interval_s,
        access_token_ttl=timedelta(seconds=o.access_token_ttl_s),
        refresh_token_ttl=timedelta(seconds=o.refresh_token_ttl_s),
        metrics=svc.metrics,
    )
    log.info("OAuth access tokens signed with ES256 key id %s", signing.kid)
    try:
        yield
    finally:
        svc._oauth = None


def _count_states(registry: Registry) -> dict[tuple[str, ...], float]:
    """From the index's counts (kept as devices change): no walk over every device per scrape."""
    counts: dict[tuple[str, ...], float] = {}
    for (_, state), n in registry.index.all_state_counts().items():
        counts[(state,)] = counts.get((state,), 0) + n
    return counts


def _count_tenant_states(registry: Registry) -> dict[tuple[str, ...], float]:
    return {key: float(n) for key, n in registry.index.all_state_counts().items()}


async def _poll(registry: Registry, interval: float, svc: Services) -> None:
    """Keep the index in step with writes from other processes (the CLI), and save the
    discovered list (at most every DISCOVERED_SAVE_S) so `imprint discovered` can read it."""
    saved_version = svc.discovered.version
    saved_at = 0.0
    loop = asyncio.get_running_loop()
    while True:
        await asyncio.sleep(interval)
        try:
            n = await registry.poll_changes()
            if n:
                log.info("picked up %d registry change(s) made by another process", n)
            # The rollout view's chart: a point per tenant whose counts changed (tenants are few).
            registry.rollout.sample(registry.index, registry.index.tenant_counts(), time.time())
            if (
                svc.discovered.version != saved_version
                and loop.time() - saved_at >= DISCOVERED_SAVE_S
            ):
                saved_version = svc.discovered.version
                saved_at = loop.time()
                await registry.store.replace_discovered(svc.discovered.recent())
        except Exception:
            log.exception("registry poll failed; retrying")


def provisioning_endpoint(services: Services) -> ProvisioningEndpoint:
    """What DHCP options and mDNS records advertise: public URL, provisioning path, fingerprint."""
    return endpoint_for(
        services.public_url, services.cert.fingerprint_sha256 if services.cert else ""
    )


def endpoint_for(public: str, fingerprint: str) -> ProvisioningEndpoint:
    """The provisioning endpoint under the public URL `public` (pure)."""
    url = urlsplit(public)
    scheme = url.scheme or "https"
    port = url.port or (443 if scheme == "https" else 80)
    return ProvisioningEndpoint(
        scheme=scheme,
        host=url.hostname or "imprint",
        port=port,
        path=url.path.rstrip("/") + PROVISION_PATH,
        fingerprint_sha256=fingerprint,
    )


def dhcp_server_ip(settings: Settings, link: DhcpLink | None = None) -> str:
    """The server identifier of `link` (default the only one): its server_ip, else the IPv4
    address of its interface; ConfigError if neither."""
    link = link or settings.dhcp.served_links()[0]
    section = f"dhcp.links[{link.interface}]" if settings.dhcp.links else "dhcp"
    return link.server_ip or _interface_ipv4(link.interface, section)


async def _run_dhcp(app: web.Application) -> AsyncIterator[None]:
    svc = app[SERVICES]
    s = svc.settings.dhcp
    if not s.enabled:
        yield
        return
    links = s.served_links()
    servers: list[DhcpServer] = []
    try:
        for link in links:
            # Each link: its own socket (bound to its interface, so a reply leaves by the link
            # its request came in on), mode, server identifier, pool and summary line.
            others = tuple(sub for lk in links if lk is not link for sub in lk.subnets)
            servers.append(await _start_dhcp_link(app, link, others, several=len(links) > 1))
        svc.dhcp = tuple(server.service for server in servers)
        yield
    finally:
        svc.dhcp = ()
        for server in servers:
            await server.close()


async def _start_dhcp_link(
    app: web.Application, link: DhcpLink, others: tuple[Subnet, ...], *, several: bool
) -> DhcpServer:
    svc = app[SERVICES]
    s = svc.settings.dhcp
    registry = svc.registry
    server_ip = dhcp_server_ip(svc.settings, link)
    # The subnets and profiles were built when the settings loaded; check-config builds the same.
    config, table = s.build(provisioning_endpoint(svc), server_ip, link)
    mode = config.mode
    if mode is Mode.FULL:
        await _probe_before_full_mode(app, link)  # refuse beside another DHCP server
    service = DhcpService(
        config,
        registry.index,
        svc.metrics,
        discovered=svc.discovered,
        lease_store=registry.store if mode is Mode.FULL else None,
        sightings=svc.sightings,
        # SQLite: the inline lease writer on the store's file; PostgreSQL: save_leases.
        lease_db=(
            registry.store.path
            if mode is Mode.FULL and isinstance(registry.store, SqliteStore)
            else None
        ),
        profiles=table,
        link=link.name if several else "",
        other_subnets=others,
    )
    server = await start_dhcp(
        service,
        s.host,
        s.port,
        link.interface,
        queue_size=s.queue_size,
        workers=s.workers,
        summary_interval=svc.settings.log.summary_interval_s,
        trace_file=trace_file(svc.settings.state_dir),
    )
    log.info(
        "DHCP responder (%s mode) on %s:%d%s, server id %s",
        link.mode,
        s.host,
        s.port,
        f" interface {link.interface}" if link.interface else "",
        server_ip,
    )
    return server


async def _run_mdns(app: web.Application) -> AsyncIterator[None]:
    svc = app[SERVICES]
    s = svc.settings.mdns
    if not s.enabled:
        yield
        return
    links: list[str | None] = list(s.links) or [None]
    servers: list[MdnsServer] = []
    services: list[MdnsService] = []
    tasks: list[asyncio.Task[None]] = []
    try:
        for iface in links:
            server, service = await _start_mdns_link(svc, iface, several=len(links) > 1)
            servers.append(server)
            services.append(service)
        tasks.append(asyncio.create_task(_mdns_log_loop(svc, services), name="mdns-log"))
        yield
    finally:
        for task in tasks:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        for server in servers:
            server.close(goodbye=True)
        for server in servers:
            await server.wait_closed()


async def _mdns_log_loop(svc: Services, services: list[MdnsService]) -> None:
    """The mDNS log at the shipped default, as DHCP's: a summary line per [log]
    summary_interval_s, and the trace list (`imprint trace MAC`, the file DHCP reads too)
    re-read every second."""
    watcher = TraceWatcher(trace_file(svc.settings.state_dir))
    interval = svc.settings.log.summary_interval_s
    loop = asyncio.get_running_loop()
    last_summary = loop.time()
    while True:
        try:
            change = watcher.poll()
            if change is not None:
                for service in services:
                    service.set_trace(change[0])
            if interval > 0 and loop.time() - last_summary >= interval:
                last_summary = loop.time()
                for service in services:
                    service.log_summary(interval)
        except Exception:
            log.exception("mdns log loop failed; retrying")
        await asyncio.sleep(1.0)


async def _start_mdns_link(
    svc: Services, link: str | None, *, several: bool
) -> tuple[MdnsServer, MdnsService]:
    """One responder on one link (mDNS is link-local): its own addresses, records and names."""
    s = svc.settings.mdns
    endpoint = provisioning_endpoint(svc)
    loopback = link == "lo" or (link is None and _is_loopback(s.host))
    iface = "lo" if loopback else link
    networks = interface_networks(iface)
    # With several links each advertises its own addresses; with one, the public URL's address
    # when it is one (the address devices are told to use).
    addresses = [endpoint.host] if _is_ip(endpoint.host) and not several else []
    if not addresses and iface:
        addresses = [a for a in interface_addresses(iface) if ":" not in a or not several]
    ipv6 = s.ipv6 and not loopback and iface is not None
    if ipv6 and iface:
        # AAAA for this link, link-local included: the answer goes out on this link only.
        addresses += [
            a
            for a in interface_addresses(iface, link_local=True)
            if ":" in a and a not in addresses
        ]
    if not addresses:
        raise ConfigError(
            f"mdns: cannot tell which address to advertise on {iface or 'any interface'}: set "
            "[http] public_url to an address or set [mdns] interfaces to links with an address"
        )
    hostname = s.hostname or f"imprint-{socket.gethostname().split('.')[0]}"

    def build(instance: str, host: str) -> ServiceRecords:
        return build_records(
            endpoint, hostname=host, addresses=addresses, service=s.service, instance_name=instance
        )

    prober = Prober(s.instance_name, host_labels(hostname)[0].decode(), build)
    neighbours = NeighbourResolver(
        static=s.static_neighbours,
        kernel=None if loopback else KernelNeighbours(iface),
        kernel6=NetlinkNeighbours(iface) if ipv6 else None,
        leases=svc.sightings.mac_of,
    )
    service = MdnsService(
        prober.records,
        svc.registry.index,
        networks=networks,
        neighbours=neighbours,
        metrics=svc.metrics,
        rate=s.rate_per_source,
        burst=s.burst_per_source,
        datagram_rate=s.datagrams_per_source,
        datagram_burst=s.datagram_burst_per_source,
        link=iface or "",
        sightings=svc.sightings,
    )
    server = await start_mdns(
        service,
        s.host,
        s.port,
        None if loopback else iface,
        join_group=not loopback,
        capture=s.capture_frames and not loopback,
        ipv6=ipv6,
        share_port=s.share_port,
    )
    if not loopback and iface:
        # RFC 6762 §8: the names are probed before start-up completes (about 0.75 s).
        claimer = server.claim(prober, announce=s.announce, interface=iface)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(claimer.claimed.wait(), 10)
    log.info(
        "mDNS responder for %s.local. on %s:%d%s",
        s.service,
        s.host,
        s.port,
        " (lab: static neighbours, no multicast group)"
        if loopback
        else f" interface {iface}, addresses {', '.join(addresses)}",
    )
    return server, service


def _is_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


def _is_loopback(host: str) -> bool:
    return _is_ip(host) and ipaddress.ip_address(host).is_loopback


def _interface_ipv4(interface: str | None, section: str) -> str:
    for addr in interface_addresses(interface) if interface else []:
        if "." in addr:
            return addr
    raise ConfigError(
        f"{section}.server_ip: not set and no IPv4 address found on interface {interface!r}; "
        "give this server's address on the site VLAN"
    )


def build_app(
    settings: Settings, *, clock: Clock | None = None, cert: CertInfo | None = None
) -> web.Application:
    """The whole server as one aiohttp Application (HTTP + background responders)."""
    metrics_registry = MetricsRegistry()
    services = Services(
        settings=settings,
        metrics=metrics_registry,
        discovered=DiscoveredDevices(settings.dhcp.discovered_max),
    )
    services.cert = cert
    services.public_url = public_url(settings)
    p = settings.provision
    services.provision_limiter = TokenBuckets(p.rate_per_source, p.burst_per_source)
    # Wrong codes from one address: 10 in a burst, then one every 10 s (per-device locking after
    # [codes] max_attempts is the other half; this one slows a host that cycles through MACs).
    services.provision_failures = FailureLimiter(0.1, 10)
    # The root is the device-facing audience (/provision, /healthz, /readyz, /metrics and the
    # OAuth discovery document); every other audience is a sub-application with exactly its
    # own middlewares and error renderer, so no middleware tests the path.
    app = web.Application(middlewares=[json_errors], client_max_size=settings.http.max_upload_bytes)
    app[SERVICES] = services
    _setup_ops(app)  # HTTP latency histogram (outermost middleware), imprint_build_info
    root_tables = [meta, provisioning.routes, oauth_web.well_known, admin_web.root_routes]
    for t in root_tables:
        t.add_to(app)
    app.add_subapp(api.PREFIX, api.sub_app(services, [api.routes, api_users.routes]))
    app.add_subapp(api_docs.PREFIX, api_docs.sub_app(services))
    for prefix, sub in oauth_web.sub_apps(services):
        app.add_subapp(prefix, sub)
    app.add_subapp(admin_web.PREFIX, admin_web.sub_app(services))
    tables = [
        *root_tables,
        api.routes,
        api_users.routes,
        api_docs.routes,
        *oauth_web.routes,
        admin_web.routes,
    ]
    services.openapi = build_openapi(tables, title="Imprint", version=__version__)
    app.cleanup_ctx.append(_store_ctx(clock))
    app.cleanup_ctx.append(_loop_lag_ctx)
    app.cleanup_ctx.append(_oauth_ctx)
    app.cleanup_ctx.append(_run_dhcp)
    app.cleanup_ctx.append(_run_mdns)
    return app


def ssl_context(cert: CertInfo) -> ssl.SSLContext:
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(cert.cert_file, cert.key_file)
    return ctx


async def serve(
    settings: Settings, *, ready: Callable[[str], None] | None = None, dhcp_probe: bool = True
) -> None:
    """Run until SIGINT/SIGTERM; in-flight requests finish, then services stop in order.

    SIGHUP reloads the config file (see server/reload.py); `dhcp_probe=False` skips full
    mode's check for another DHCP server."""
    # Bulk work runs Python in worker threads (code minting, CSV and JSON of 100,000 rows); a
    # thread keeps the GIL for up to the switch interval, and each of the loop's steps then
    # waits that long. 1 ms instead of the default 5 ms: measured with 100,000 devices, the
    # worst /healthz latency during bulk codes fell from 0.08-0.10 s to 0.06 s.
    sys.setswitchinterval(0.001)
    # The interfaces and listen addresses the config names exist here (check-config asks alike).
    check_host(settings)
    cert = resolve_certificate(settings)
    if cert is None:
        log.warning(
            "TLS is disabled ([tls] enabled = false): codes and credentials cross the "
            "network in clear text; use this only on a lab or loopback network"
        )
    else:
        kind = "self-signed" if cert.self_signed else "configured"
        log.info(
            "TLS certificate (%s) %s SHA-256 fingerprint %s",
            kind,
            cert.cert_file,
            cert.fingerprint_sha256,
        )
    # SIGTERM from the moment start-up begins: a stop that arrives while the site binds or the
    # GC freezes is honoured once start-up ends (a clean exit 0), not the default kill.
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    app = build_app(settings, cert=cert)
    app[DHCP_PROBE] = dhcp_probe
    install_sighup(app)
    # shutdown_timeout: how long in-flight requests may run on after SIGTERM.
    runner = web.AppRunner(app, handle_signals=False, access_log=None, shutdown_timeout=10)
    h = settings.http
    raise_fd_limit(h.max_connections)
    loop.set_exception_handler(_loop_exceptions())
    site = HttpListener(
        runner,
        h.host,
        h.port,
        ssl_context=ssl_context(cert) if cert else None,
        max_connections=h.max_connections,
        max_connections_per_source=h.max_connections_per_source,
        head_timeout=h.head_timeout_s,
        keepalive_timeout=h.keepalive_timeout_s,
        metrics=app[SERVICES].metrics,
    )
    try:
        await runner.setup()
        await site.start()
    except (ConfigError, ValueError, OSError) as e:
        await site.stop()
        await runner.cleanup()
        if isinstance(e, ConfigError):
            raise  # already names the key to fix, as check-config does
        if isinstance(e, OSError) and e.errno == errno.EACCES:
            raise ConfigError(
                f"{e}: ports below 1024 need root or CAP_NET_BIND_SERVICE (see the README)"
            ) from e
        raise ConfigError(f"cannot start: {e}") from e
    # What start-up built lives as long as the process (the registry's MAC index, the lease
    # pool, route tables, modules): take it out of the cyclic GC's sight, so a full collection
    # walks only what was made since. Measured at 9,000 DORA/s with 2,000 MACs: full
    # collections of up to 26 ms, four per 12 s, each one a backlog of datagrams.
    gc.collect()
    gc.freeze()
    url = app[SERVICES].public_url
    log.info("Imprint %s listening on %s (public URL %s)", __version__, site.name, url)
    if ready:
        ready(url)
    try:
        await stop.wait()
    finally:
        log.info("shutting down")
        await site.stop()
        await runner.cleanup()


def raise_fd_limit(max_connections: int) -> None:
    """Lift the soft open-files limit toward the hard one, so `[http] max_connections` (plus the
    store, DHCP, mDNS and log files) fit; a shortfall is said, not left for accept() to hit."""
    want = max_connections + 256
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY or soft >= want:
        return
    target = want if hard == resource.RLIM_INFINITY else min(want, hard)
    if target > soft:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    if target < want:
        log.warning(
            "open-files limit %d is below what [http] max_connections = %d needs (%d): raise "
            "LimitNOFILE (systemd) or ulimit -n, or lower max_connections",
            target,
            max_connections,
            want,
        )


def _loop_exceptions() -> Callable[[asyncio.AbstractEventLoop, dict[str, Any]], None]:
    """The loop's handler for errors no task owns: out of file descriptors or memory at accept()
    is a flood, said in one line (rate-limited), not a traceback per attempt; anything else is
    asyncio's default report."""
    notes = RateLimitedLog(log, every=10.0)

    def handle(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        exc = context.get("exception")
        if isinstance(exc, OSError) and exc.errno in (
            errno.EMFILE,
            errno.ENFILE,
            errno.ENOBUFS,
            errno.ENOMEM,
        ):
            notes.warning(
                f"oserror-{exc.errno}",
                "%s: %s (lower [http] max_connections or raise the open-files limit)",
                context.get("message", "event loop"),
                exc.strerror or exc,
            )
            return
        loop.default_exception_handler(context)

    return handle


# -- operations: HTTP metrics, build info, the full-mode probe (SIGHUP: server/reload.py) ----

DHCP_PROBE = web.AppKey("dhcp_probe", bool)  # False: `imprint serve --no-dhcp-probe`
METRICS_HANDLER: web.AppKey[Handler] = web.AppKey("metrics_handler")  # made in _setup_ops
_HTTP_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


def _setup_ops(app: web.Application) -> None:
    """`imprint_build_info`, the HTTP latency histogram (outermost middleware), the request body
    deadline (server/web/limits.py) and the /metrics handler (the imprint_* families with
    prometheus_client's process and GC collectors)."""
    metrics = app[SERVICES].metrics
    app[METRICS_HANDLER] = make_aiohttp_handler(scrape_registry(metrics))
    metrics.gauge(
        "imprint_build_info", "The running Imprint version (always 1)", ("version", "python")
    ).set(1, __version__, platform.python_version())
    hist = metrics.histogram(
        "imprint_http_request_duration_seconds",
        "HTTP request handling time, by method, route template and status",
        ("method", "route", "status"),
        buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
    )

    @web.middleware
    async def http_metrics(request: web.Request, handler: Any) -> web.StreamResponse:
        start = time.perf_counter()
        status = 500
        try:
            resp: web.StreamResponse = await handler(request)
            status = resp.status
            return resp
        except web.HTTPException as e:
            status = e.status
            raise
        finally:
            # The route's template (/api/v1/tenants/{tenant}/devices/{mac}), never the raw path:
            # label values stay bounded and no MAC or code becomes a label.
            resource = request.match_info.route.resource
            route = resource.canonical if resource is not None else "unmatched"
            method = request.method if request.method in _HTTP_METHODS else "other"
            hist.observe(time.perf_counter() - start, method, route, str(status))

    app.middlewares.insert(0, http_metrics)
    body_timeouts = metrics.counter(
        "imprint_http_body_timeouts_total",
        "Connections closed because a request body fell behind [http] head_timeout_s plus "
        f"{MIN_BODY_RATE:g} bytes a second",
    )
    settings = app[SERVICES].settings
    app.middlewares.insert(1, body_deadline(settings.http.head_timeout_s, body_timeouts))


async def _probe_before_full_mode(app: web.Application, link: DhcpLink) -> None:
    """Full mode refuses to start when another DHCP server leases on the link's segment."""
    s = app[SERVICES].settings.dhcp
    if not app.get(DHCP_PROBE, True) or not s.probe_other_servers:
        return
    await probe_segment(link.interface, s.host)
