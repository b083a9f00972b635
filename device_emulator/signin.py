"""The device side of remote sign-in: the OAuth 2.0 Device Authorization Grant (RFC 8628).

Pure parts (no sockets, no clock): the RFC 8414 metadata, the device authorization and token
responses parsed from status + JSON, `PollSchedule` (the polling interval, `slow_down`, expiry,
back-off after network errors) and `refresh_step` (what a refresh answer means for the device).
`OAuthClient` is the thin I/O part over the device's one `https_client.HttpClient` (standard
library only, no aiohttp), the same client and connection that sent the code: it pins the same
certificate, and authenticates as the confidential client it became there (HTTP Basic, RFC 6749
§2.3.1).
"""

from __future__ import annotations

import base64
import binascii
import json
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any
from urllib.parse import quote_plus, urlencode, urlsplit

from device_emulator.https_client import HttpClient, HttpProtocolError

__all__ = [
    "DEFAULT_INTERVAL",
    "DEVICE_CODE_GRANT",
    "SLOW_DOWN_STEP",
    "DeviceAuthorization",
    "Endpoints",
    "OAuthClient",
    "OAuthFailure",
    "PollSchedule",
    "PollStep",
    "RefreshStep",
    "SignInError",
    "Tokens",
    "Url",
    "basic_authorization",
    "endpoints_from_metadata",
    "form_body",
    "jwt_claims",
    "parse_device_authorization",
    "parse_token_response",
    "parse_url",
    "refresh_step",
]

DEVICE_CODE_GRANT = "urn:ietf:params:oauth:grant-type:device_code"
DEFAULT_INTERVAL = 5.0  # RFC 8628 §3.2: "If no value is provided, clients MUST use 5"
SLOW_DOWN_STEP = 5.0  # RFC 8628 §3.5: +5 s "for this and all subsequent requests"
MAX_BACKOFF = 60.0
FORM = "application/x-www-form-urlencoded"


class SignInError(Exception):
    """The authorization server cannot be used (bad metadata, another origin, not OAuth)."""


@dataclass(frozen=True, slots=True)
class Url:
    """An absolute http(s) URL split the way a connection needs it."""

    scheme: str
    host: str
    port: int
    target: str  # path and query, starting with "/"

    @property
    def origin(self) -> tuple[str, str, int]:
        """Scheme, host and port: what the certificate pin is valid for."""
        return (self.scheme, self.host.lower(), self.port)

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{self.scheme}://{host}:{self.port}{self.target}"


def parse_url(text: str) -> Url:
    """Split an absolute http(s) URL; SignInError when it is not one."""
    try:
        parts = urlsplit(text)
        port = parts.port
    except ValueError as exc:
        raise SignInError(f"{text!r} is not a URL: {exc}") from None
    if parts.scheme not in ("https", "http") or not parts.hostname:
        raise SignInError(f"{text!r} is not an absolute https or http URL")
    target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    return Url(
        parts.scheme, parts.hostname, port or (443 if parts.scheme == "https" else 80), target
    )


@dataclass(frozen=True, slots=True)
class Endpoints:
    """The two endpoints of RFC 8628 taken from the RFC 8414 metadata."""

    issuer: str
    device_authorization: Url
    token: Url


def endpoints_from_metadata(body: Any, metadata_url: Url) -> Endpoints:
    """Read RFC 8414 metadata; both endpoints must be on the metadata's origin, because the
    device only trusts the certificate it pinned when it provisioned there."""
    if not isinstance(body, dict):
        raise SignInError("the authorization server metadata is not a JSON object")
    found: dict[str, Url] = {}
    for name in ("device_authorization_endpoint", "token_endpoint"):
        value = body.get(name)
        if not isinstance(value, str) or not value:
            raise SignInError(f"the authorization server metadata has no {name}")
        url = parse_url(value)
        if url.origin != metadata_url.origin:
            raise SignInError(
                f"{name} {value} is on another server than {metadata_url}: its certificate "
                "is not the one this device pinned"
            )
        found[name] = url
    issuer = body.get("issuer")
    return Endpoints(
        issuer=issuer if isinstance(issuer, str) else "",
        device_authorization=found["device_authorization_endpoint"],
        token=found["token_endpoint"],
    )


@dataclass(frozen=True, slots=True)
class OAuthFailure:
    """An RFC 6749 §5.2 error answer (or a local stand-in such as `http_502`)."""

    error: str
    description: str
    status: int | None = None


def _failure(status: int, body: Any) -> OAuthFailure:
    if isinstance(body, dict) and isinstance(body.get("error"), str) and body["error"]:
        desc = body.get("error_description")
        return OAuthFailure(body["error"], desc if isinstance(desc, str) else "", status)
    return OAuthFailure(f"http_{status}", f"HTTP {status} without an OAuth error", status)


@dataclass(frozen=True, slots=True)
class DeviceAuthorization:
    """RFC 8628 §3.2: what the device shows and the code it polls with."""

    device_code: str = field(repr=False)
    user_code: str
    verification_uri: str
    verification_uri_complete: str | None
    expires_in: float
    interval: float


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
        return None
    return float(value)


def parse_device_authorization(status: int, body: Any) -> DeviceAuthorization | OAuthFailure:
    """The device authorization response (RFC 8628 §3.2), or the error it carries."""
    if status != 200:
        return _failure(status, body)
    if not isinstance(body, dict):
        return OAuthFailure("invalid_response", "the device authorization is not a JSON object")
    strings = {k: body.get(k) for k in ("device_code", "user_code", "verification_uri")}
    missing = [k for k, v in strings.items() if not isinstance(v, str) or not v]
    expires_in = _number(body.get("expires_in"))
    if missing or expires_in is None:
        what = ", ".join(missing + ([] if expires_in is not None else ["expires_in"]))
        return OAuthFailure("invalid_response", f"the device authorization lacks {what}", status)
    complete = body.get("verification_uri_complete")
    return DeviceAuthorization(
        device_code=str(strings["device_code"]),
        user_code=str(strings["user_code"]),
        verification_uri=str(strings["verification_uri"]),
        verification_uri_complete=complete if isinstance(complete, str) and complete else None,
        expires_in=expires_in,
        interval=_number(body.get("interval")) or DEFAULT_INTERVAL,
    )


@dataclass(frozen=True, slots=True)
class Tokens:
    """A successful token response (RFC 6749 §5.1) and the user it names."""

    access_token: str = field(repr=False)
    refresh_token: str | None = field(repr=False)
    expires_in: float | None
    subject: str | None


def jwt_claims(token: str) -> dict[str, Any] | None:
    """The payload of a JWT (RFC 7519 §7.2 steps 1-7, signature NOT checked: for display
    only), or None when `token` is not a JWS compact serialization with a JSON object."""
    parts = token.split(".")
    if len(parts) != 3:
        return None
    payload = parts[1]
    try:
        # base64url without padding (RFC 7515 §2); restore the padding the decoder wants.
        raw = base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4))
        claims = json.loads(raw.decode("utf-8"))
    except (binascii.Error, ValueError):
        return None
    return claims if isinstance(claims, dict) else None


def parse_token_response(status: int, body: Any) -> Tokens | OAuthFailure:
    """A token endpoint answer: tokens (user from the access token's `sub`) or the error."""
    if status != 200:
        return _failure(status, body)
    if not isinstance(body, dict) or not isinstance(body.get("access_token"), str):
        return OAuthFailure("invalid_response", "the token response has no access_token", status)
    token_type = body.get("token_type")
    if not isinstance(token_type, str) or token_type.lower() != "bearer":
        return OAuthFailure(
            "invalid_response", f"token_type {token_type!r} is not Bearer (RFC 6750)", status
        )
    claims = jwt_claims(body["access_token"]) or {}
    sub = claims.get("sub")
    refresh = body.get("refresh_token")
    return Tokens(
        access_token=body["access_token"],
        refresh_token=refresh if isinstance(refresh, str) and refresh else None,
        expires_in=_number(body.get("expires_in")),
        subject=sub if isinstance(sub, str) and sub else None,
    )


class PollStep(StrEnum):
    """What one poll answer means for the device."""

    SIGNED_IN = "signed_in"
    PENDING = "pending"  # authorization_pending: same interval
    SLOW_DOWN = "slow_down"  # interval grew by 5 s for good
    DENIED = "denied"  # access_denied: show it, then start again
    EXPIRED = "expired"  # expired_token (or our own clock): start again
    RETRY = "retry"  # the network or the server failed: back off, poll again
    FAILED = "failed"  # the client is not accepted any more (e.g. reset): stop


@dataclass
class PollSchedule:
    """When to poll next for one device code; pure: times come from the caller."""

    interval: float
    expires_at: float
    next_at: float
    backoff: float = 0.0
    slow_downs: int = 0
    polls: int = 0

    @classmethod
    def start(cls, auth: DeviceAuthorization, now: float) -> PollSchedule:
        """The schedule for a device authorization received at `now`."""
        return cls(
            interval=auth.interval, expires_at=now + auth.expires_in, next_at=now + auth.interval
        )

    def expired(self, now: float) -> bool:
        """True once the device code's lifetime (RFC 8628 §3.2 expires_in) has passed."""
        return now >= self.expires_at

    def on_answer(self, answer: Tokens | OAuthFailure, sent_at: float) -> PollStep:
        """Take the answer to the poll sent at `sent_at` and plan the next one."""
        self.polls += 1
        if isinstance(answer, Tokens):
            return PollStep.SIGNED_IN
        error = answer.error
        if error == "slow_down":
            self.interval += SLOW_DOWN_STEP
            self.slow_downs += 1
        # The server measures the interval from when it saw the previous poll, so the next one
        # is due `interval` after this one was *sent*, not after its answer came back.
        self.next_at = sent_at + self.interval
        if error in ("authorization_pending", "slow_down"):
            self.backoff = 0.0
            return PollStep.PENDING if error == "authorization_pending" else PollStep.SLOW_DOWN
        if error == "access_denied":
            return PollStep.DENIED
        if error in ("expired_token", "invalid_grant"):
            # invalid_grant: the device code was replaced or revoked; a new one is the way on.
            return PollStep.EXPIRED
        if answer.status is None or answer.status >= 500 or error == "invalid_response":
            self._back_off(sent_at)
            return PollStep.RETRY
        return PollStep.FAILED

    def on_network_error(self, sent_at: float) -> PollStep:
        """The poll got no answer: back off exponentially (RFC 8628 §3.5)."""
        self._back_off(sent_at)
        return PollStep.RETRY

    def _back_off(self, sent_at: float) -> None:
        self.backoff = min(MAX_BACKOFF, self.backoff * 2 if self.backoff else self.interval)
        self.next_at = sent_at + max(self.interval, self.backoff)


class RefreshStep(StrEnum):
    """What a refresh_token answer means for a signed-in device."""

    KEEP = "keep"  # new tokens: still signed in (rotate the refresh token)
    SIGNED_OUT = "signed_out"  # invalid_grant: signed out remotely (or the token expired)
    RETRY = "retry"  # the network or the server failed: try again later
    FAILED = "failed"  # the client is refused (reset or deleted): stop


def refresh_step(answer: Tokens | OAuthFailure) -> RefreshStep:
    """Map a refresh answer (RFC 6749 §6, §5.2) to what the device does next."""
    if isinstance(answer, Tokens):
        return RefreshStep.KEEP
    if answer.error == "invalid_grant":
        return RefreshStep.SIGNED_OUT
    if answer.status is None or answer.status >= 500 or answer.error == "invalid_response":
        return RefreshStep.RETRY
    return RefreshStep.FAILED


def basic_authorization(client_id: str, secret: str) -> str:
    """HTTP Basic for an OAuth client: each half form-urlencoded first (RFC 6749 §2.3.1)."""
    raw = f"{quote_plus(client_id)}:{quote_plus(secret)}".encode()
    return "Basic " + base64.b64encode(raw).decode("ascii")


def form_body(params: dict[str, str]) -> bytes:
    """application/x-www-form-urlencoded UTF-8 (RFC 6749 Appendix B)."""
    return urlencode(params).encode("utf-8")


# --- I/O ------------------------------------------------------------------------------------


class OAuthClient:
    """The device as an OAuth client of the server it provisioned with.

    Its requests go through the device's one `HttpClient` (the one that sent the code): the
    same pinned, kept-alive connection, or a resumed TLS session when the server closed it. A
    token request is never sent twice on its own (`resend=False`): a refresh token rotates on
    use (RFC 9700 §4.14.2) and a device code is redeemed once, so a request lost on a kept
    connection is left to the poll schedule's back-off instead.
    """

    def __init__(
        self,
        metadata_url: str,
        client_id: str,
        client_secret: str,
        *,
        http: HttpClient,
    ) -> None:
        self.metadata_url = parse_url(metadata_url)
        self.client_id = client_id
        self._secret = client_secret
        self.http = http
        self.endpoints: Endpoints | None = None
        self.requests = 0

    async def _exchange(
        self, method: str, url: Url, params: dict[str, str] | None, *, resend: bool = True
    ) -> tuple[int, Any]:
        headers: tuple[tuple[str, str], ...] = ()
        if params is not None:
            headers = (("Authorization", basic_authorization(self.client_id, self._secret)),)
        self.requests += 1
        response = await self.http.send(
            url.scheme,
            url.host,
            url.port,
            method,
            url.target,
            body=None if params is None else form_body(params),
            content_type=None if params is None else FORM,
            headers=headers,
            resend=resend,
        )
        try:
            body = response.json()
        except HttpProtocolError:
            body = None
        return response.status, body

    async def discover(self) -> Endpoints:
        """GET the RFC 8414 metadata (once); HttpError or SignInError when unusable."""
        if self.endpoints is None:
            status, body = await self._exchange("GET", self.metadata_url, None)
            if status != 200:
                raise SignInError(f"the metadata at {self.metadata_url} answered HTTP {status}")
            self.endpoints = endpoints_from_metadata(body, self.metadata_url)
        return self.endpoints

    async def start(self, scope: str | None = None) -> DeviceAuthorization | OAuthFailure:
        """POST the device authorization request (RFC 8628 §3.1)."""
        endpoints = await self.discover()
        params = {"client_id": self.client_id, **({"scope": scope} if scope else {})}
        status, body = await self._exchange("POST", endpoints.device_authorization, params)
        return parse_device_authorization(status, body)

    async def poll(self, device_code: str) -> Tokens | OAuthFailure:
        """One device access token request (RFC 8628 §3.4)."""
        endpoints = await self.discover()
        params = {
            "grant_type": DEVICE_CODE_GRANT,
            "device_code": device_code,
            "client_id": self.client_id,
        }
        status, body = await self._exchange("POST", endpoints.token, params, resend=False)
        return parse_token_response(status, body)

    async def refresh(self, refresh_token: str) -> Tokens | OAuthFailure:
        """Exchange the refresh token for new tokens (RFC 6749 §6)."""
        endpoints = await self.discover()
        params = {"grant_type": "refresh_token", "refresh_token": refresh_token}
        status, body = await self._exchange("POST", endpoints.token, params, resend=False)
        return parse_token_response(status, body)
