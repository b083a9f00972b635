"""Device-facing provisioning: the technician's code entry binds the device to its tenant.

Every answer tells a technician what to do next without revealing more than needed. Each source
address is rate limited, and failed entries from one source are limited more tightly.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time

from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field

from server.core.logs import RateLimitedLog
from server.core.mac import MacError, normalize_mac
from server.provisioning.outcome import Outcome
from server.store.base import Invalid
from server.web.errors import ApiError
from server.web.keys import SERVICES
from server.web.routes import RouteTable, parse_json

routes = RouteTable()
log = logging.getLogger("imprint.provision")
# Refused code entries, one key per reason: a brute-force run or a storm of retries logs a burst
# of 20 per reason and then one a second, each saying how many were held back
# (imprint_code_attempts_total counts every one).
_refusals = RateLimitedLog(log, every=1.0, burst=20)


class ProvisionIn(BaseModel):
    model_config = ConfigDict(extra="ignore")
    mac: str = Field(description="the device's MAC address")
    code: str = Field(description="the verification code (XXXX-XXXX; case, spaces, dashes ignored)")


class TenantRef(BaseModel):
    id: str
    name: str = Field(description="shown on the device's sign-in page")


class ProvisionOut(BaseModel):
    status: str = Field(examples=["provisioned"])
    tenant: TenantRef
    device_id: str
    client_id: str = Field(description="the device's OAuth client_id (= device_id)")
    client_secret: str = Field(description="the device's OAuth client secret; shown once")
    authorization_server: str = Field(description="RFC 8414 metadata URL")


class ProvisionError(BaseModel):
    error: str
    message: str
    details: list[dict[str, object]] = []
    attempts_left: int | None = None


@routes.route(
    "POST",
    "/provision",
    summary="Redeem a verification code on a device (technician)",
    tag="provisioning",
    auth="none",
    body=ProvisionIn,
    responses={
        200: ("provisioned: the device is bound to its tenant", ProvisionOut),
        400: ("malformed MAC, code or body", ProvisionError),
        401: ("wrong code (attempts_left says how many remain)", ProvisionError),
        403: ("source address differs from the one DHCP saw (when required)", ProvisionError),
        404: ("the MAC is not registered", ProvisionError),
        409: ("already provisioned, or no code issued", ProvisionError),
        410: ("the code expired: ask the admin for a new one", ProvisionError),
        423: ("locked after too many wrong codes: the admin must issue a new code", ProvisionError),
        429: (
            "too many attempts from this address: retry after Retry-After seconds",
            ProvisionError,
        ),
    },
)
async def provision(request: web.Request) -> web.Response:
    svc = request.app[SERVICES]
    source = request.remote or "unknown"
    now = asyncio.get_running_loop().time()
    if not svc.provision_limiter.allow(source, now) or svc.provision_failures.blocked(source, now):
        retry = max(1, math.ceil(1 / svc.settings.provision.rate_per_source))
        raise ApiError(
            429,
            "rate_limited",
            f"Too many attempts from this address. Wait {retry} s and try again.",
            headers={"Retry-After": str(retry)},
        )
    raw = await request.read()
    body = ProvisionIn.model_validate(parse_json(request, raw) if raw else None)
    try:
        result = await svc.registry.provisioning.redeem(
            body.mac,
            body.code,
            source,
            dhcp_address=svc.sightings.ip_of(_mac_key(body.mac)),
            require_dhcp_match=svc.settings.provision.require_dhcp_match,
            retry_window_s=svc.settings.provision.retry_window_s,
        )
    except Invalid as e:  # a typo, not a guess: not counted as an attempt
        raise ApiError(400, "bad_request", str(e), e.details) from e
    attempts = svc.metrics.counter(
        "imprint_code_attempts_total", "Verification code entries by result", ("result",)
    )
    outcome = result.outcome
    attempts.inc(outcome.value)
    if outcome.is_refusal:
        if outcome.counts_as_failure:
            svc.provision_failures.record(source, now)
        view = svc.registry.index.get(result.mac)
        if view is not None:  # the rollout view's last errors (a registered device's only)
            svc.registry.rollout.record(
                view.tenant_id,
                view.mac,
                view.location,
                "code_entry",
                outcome.value,
                result.message,
                time.time(),
                locked=outcome is Outcome.LOCKED,  # the last miss answers locked too
            )
        _refusals.info(
            outcome.value,
            "provisioning refused: mac=%s source=%s reason=%s",
            result.mac,
            source,
            outcome.value,
            extra={"mac": result.mac, "source": source, "reason": outcome.value},
        )
        payload: dict[str, object] = {
            "error": outcome.value,
            "message": result.message,
            "details": [],
        }
        if result.attempts_left is not None:
            payload["attempts_left"] = result.attempts_left
        return web.json_response(
            payload, status=outcome.http_status, headers={"Cache-Control": "no-store"}
        )
    if result.warning:
        log.warning("provisioned %s with a warning: %s", result.mac, result.warning)
    assert result.tenant is not None and result.device_id is not None
    log.info(
        "provisioned mac=%s tenant=%s source=%s",
        result.mac,
        result.tenant.id,
        source,
        extra={"mac": result.mac, "tenant": result.tenant.id, "source": source},
    )
    return web.json_response(
        {
            "status": "provisioned",
            "tenant": {"id": result.tenant.id, "name": result.tenant.name},
            "device_id": result.device_id,
            "client_id": result.device_id,
            "client_secret": result.client_secret,
            "authorization_server": f"{svc.public_url}/.well-known/oauth-authorization-server",
        },
        headers={"Cache-Control": "no-store"},
    )


def _mac_key(mac: str) -> str:
    try:
        return normalize_mac(mac)
    except MacError:
        return ""
