"""The services one server instance runs, reachable from handlers through one typed AppKey.

aiohttp freezes the Application before startup, so the container is created with the app and
filled by the startup context (server/app.py); `ready` says whether the store is open.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from server.admin.auth import AdminAuth
from server.config import Settings
from server.core.metrics import Registry as MetricsRegistry
from server.core.ratelimit import FailureLimiter, TokenBuckets
from server.core.tls import CertInfo
from server.dhcp.service import DhcpService
from server.oauth.service import OAuthService
from server.provisioning.sightings import Sightings
from server.registry.discovered import DiscoveredDevices
from server.registry.service import Registry


class NotReady(Exception):
    """The store is not open yet (or any more)."""


@dataclass
class Services:
    settings: Settings
    metrics: MetricsRegistry
    discovered: DiscoveredDevices
    openapi: dict[str, Any] = field(default_factory=dict)
    cert: CertInfo | None = None
    public_url: str = ""
    sightings: Sightings = field(default_factory=Sightings)
    provision_limiter: TokenBuckets = field(default_factory=lambda: TokenBuckets(2.0, 10))
    provision_failures: FailureLimiter = field(default_factory=lambda: FailureLimiter(0.1, 10))
    _registry: Registry | None = None
    _oauth: OAuthService | None = None
    admin: AdminAuth | None = None  # admin UI accounts and sessions; set once the store is open
    # The DHCP responders while they run, one per link (SIGHUP reloads their profiles).
    dhcp: tuple[DhcpService, ...] = ()

    @property
    def registry(self) -> Registry:
        if self._registry is None:
            raise NotReady("the store is not open")
        return self._registry

    @property
    def oauth(self) -> OAuthService:
        """Remote sign-in (RFC 8628) and tenant user accounts; set once the store is open."""
        if self._oauth is None:
            raise NotReady("the store is not open")
        return self._oauth

    @property
    def ready(self) -> bool:
        return self._registry is not None and self._registry.store.is_open


SERVICES = web.AppKey("services", Services)


def cookies_secure(request: web.Request) -> bool:
    """Whether a cookie set on this answer carries `Secure`: the request came over TLS, or the
    public URL is https (TLS ends at a proxy in front). One rule for every page that sets one."""
    return request.secure or request.app[SERVICES].public_url.startswith("https://")
