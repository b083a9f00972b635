"""Composition root: builds every service from Settings. The only place that names concrete
classes; aiohttp's cleanup_ctx starts and stops the store (and the DHCP/mDNS responders)."""

from __future__ import annotations

import asyncio
import contextlib
import errno
import ipaddress
import logging
import signal
import socket
import ssl
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from urllib.parse import urlsplit

from aiohttp import web

from server import __version__
from server.codes import CodeVault, load_or_create_key
from server.config import ConfigError, Settings
from server.dhcp.pool import subnet_from_mapping
from server.dhcp.profiles import profile_from_mapping
from server.dhcp.responder import Mode
from server.dhcp.service import DhcpConfig, DhcpService
from server.dhcp.transport import start_dhcp
from server.discovered import DiscoveredDevices
from server.domain import ProvisioningEndpoint
from server.mdns.neighbours import (
    KernelNeighbours,
    NeighbourResolver,
    interface_addresses,
    interface_networks,
)
from server.mdns.records import build_records
from server.mdns.service import MdnsService
from server.mdns.transport import start_mdns
from server.metrics import Registry as MetricsRegistry
from server.ratelimit import FailureLimiter, TokenBuckets
from server.registry import Registry
from server.store.sqlite import SqliteStore
from server.tlscert import CertInfo, ensure_self_signed, load_configured
from server.web import api, provisioning
from server.web.errors import error_middleware
from server.web.keys import SERVICES, Services
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
    responses={200: ("Prometheus text format", "text/plain")},
)
async def metrics(request: web.Request) -> web.Response:
    body = request.app[SERVICES].metrics.render()
    return web.Response(
        text=body,
        content_type="text/plain",
        charset="utf-8",
        headers={"X-Content-Type-Options": "nosniff"},
    )


def _store_ctx(clock: Clock | None) -> Callable[[web.Application], AsyncIterator[None]]:
    async def ctx(app: web.Application) -> AsyncIterator[None]:
        svc = app[SERVICES]
        s = svc.settings
        store = SqliteStore(s.store.path, s.store.busy_timeout_ms)
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
        poller = asyncio.create_task(
            _poll(registry, s.store.poll_interval_s, svc), name="registry-poll"
        )
        log.info("store open at %s: %d registered devices", s.store.path, len(registry.index))
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


def _count_states(registry: Registry) -> dict[tuple[str, ...], float]:
    counts: dict[tuple[str, ...], float] = {}
    for v in registry.index.values():
        counts[(v.state.value,)] = counts.get((v.state.value,), 0) + 1
    return counts


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
    url = urlsplit(services.public_url)
    scheme = url.scheme or "https"
    port = url.port or (443 if scheme == "https" else 80)
    return ProvisioningEndpoint(
        scheme=scheme,
        host=url.hostname or "imprint",
        port=port,
        path=url.path.rstrip("/") + PROVISION_PATH,
        fingerprint_sha256=services.cert.fingerprint_sha256 if services.cert else "",
    )


async def _run_dhcp(app: web.Application) -> AsyncIterator[None]:
    svc = app[SERVICES]
    s = svc.settings.dhcp
    if not s.enabled:
        yield
        return
    registry = svc.registry
    server_ip = s.server_ip or _interface_ipv4(s.interface, "dhcp")
    mode = Mode(s.mode)
    config = DhcpConfig(
        mode=mode,
        server_ip=server_ip,
        endpoint=provisioning_endpoint(svc),
        profiles=tuple(profile_from_mapping(p) for p in s.profiles),
        subnets=tuple(subnet_from_mapping(x.model_dump()) for x in s.subnets),
        client_port=s.client_port,
        server_port=s.server_port,
        builtin_profiles=s.builtin_profiles,
    )
    service = DhcpService(
        config,
        registry.index,
        svc.metrics,
        discovered=svc.discovered,
        lease_store=registry.store if mode is Mode.FULL else None,
        sightings=svc.sightings,
    )
    server = await start_dhcp(
        service, s.host, s.port, s.interface, queue_size=s.queue_size, workers=s.workers
    )
    svc.extra["dhcp"] = service
    log.info(
        "DHCP responder (%s mode) on %s:%d%s, server id %s",
        s.mode,
        s.host,
        s.port,
        f" interface {s.interface}" if s.interface else "",
        server_ip,
    )
    try:
        yield
    finally:
        await server.close()
        svc.extra.pop("dhcp", None)


async def _run_mdns(app: web.Application) -> AsyncIterator[None]:
    svc = app[SERVICES]
    s = svc.settings.mdns
    if not s.enabled:
        yield
        return
    endpoint = provisioning_endpoint(svc)
    loopback = s.interface == "lo" or (s.interface is None and _is_loopback(s.host))
    iface = "lo" if loopback else s.interface
    networks = interface_networks(iface)
    addresses = [endpoint.host] if _is_ip(endpoint.host) else []
    if not addresses and iface:
        addresses = interface_addresses(iface)
    if not addresses:
        raise ConfigError(
            "mdns: cannot tell which address to advertise: set [http] public_url to an address "
            "or set [mdns] interface"
        )
    records = build_records(
        endpoint,
        hostname=s.hostname or f"imprint-{socket.gethostname().split('.')[0]}",
        addresses=addresses,
        service=s.service,
        instance_name=s.instance_name,
    )
    neighbours = NeighbourResolver(
        static=s.static_neighbours,
        kernel=None if loopback else KernelNeighbours(iface),
        leases=svc.sightings.mac_of,
    )
    service = MdnsService(
        records,
        svc.registry.index,
        networks=networks,
        neighbours=neighbours,
        metrics=svc.metrics,
        rate=s.rate_per_source,
        burst=s.burst_per_source,
    )
    server = await start_mdns(
        service, s.host, s.port, None if loopback else iface, join_group=not loopback
    )
    log.info(
        "mDNS responder for %s.local. on %s:%d%s",
        s.service,
        s.host,
        s.port,
        " (lab: static neighbours, no multicast group)" if loopback else f" interface {iface}",
    )
    try:
        yield
    finally:
        server.close(goodbye=True)
        await server.wait_closed()


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
    app = web.Application(
        middlewares=[error_middleware, api.auth_middleware],
        client_max_size=settings.http.max_upload_bytes,
    )
    app[SERVICES] = services
    tables = [meta, api.routes, provisioning.routes]
    for t in tables:
        t.add_to(app)
    services.openapi = build_openapi(tables, title="Imprint", version=__version__)
    app.cleanup_ctx.append(_store_ctx(clock))
    app.cleanup_ctx.append(_run_dhcp)
    app.cleanup_ctx.append(_run_mdns)
    return app


def ssl_context(cert: CertInfo) -> ssl.SSLContext:
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(cert.cert_file, cert.key_file)
    return ctx


async def serve(settings: Settings, *, ready: Callable[[str], None] | None = None) -> None:
    """Run until SIGINT/SIGTERM; in-flight requests finish, then services stop in order."""
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
    app = build_app(settings, cert=cert)
    runner = web.AppRunner(app, handle_signals=False, access_log=None)
    try:
        await runner.setup()
        site = web.TCPSite(
            runner,
            settings.http.host,
            settings.http.port,
            ssl_context=ssl_context(cert) if cert else None,
            shutdown_timeout=10,
        )
        await site.start()
    except (ConfigError, ValueError, OSError) as e:
        await runner.cleanup()
        if isinstance(e, OSError) and e.errno == errno.EACCES:
            raise ConfigError(
                f"{e}: ports below 1024 need root or CAP_NET_BIND_SERVICE (see the README)"
            ) from e
        raise ConfigError(f"cannot start: {e}") from e
    url = app[SERVICES].public_url
    log.info("Imprint %s listening on %s (public URL %s)", __version__, site.name, url)
    if ready:
        ready(url)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        log.info("shutting down")
        await runner.cleanup()
