"""OAuth request rules, pure: RFC 6749 §5.2 errors, form parameters and client credentials,
scopes, the RFC 8628 poll decision, and the account field rules."""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from urllib.parse import unquote_plus

from server.oauth.model import GrantRow, GrantStatus
from server.registry.model import parse_iso
from server.store.base import Invalid

DEVICE_CODE_GRANT = "urn:ietf:params:oauth:grant-type:device_code"
REFRESH_GRANT = "refresh_token"
SLOW_DOWN_STEP_S = 5  # RFC 8628 §3.5
# A client that waits the full interval measured from when it *sent* its previous poll can
# arrive a little early by network jitter; only polls clearly faster than that are slowed.
POLL_SLACK_S = 0.5
APPROVAL_TTL_S = 300  # how long the page's approve/deny form stays valid
MAX_SCOPE = 1000
MAX_USERNAME = 128
MAX_DISPLAY_NAME = 100
MIN_PASSWORD = 8
MAX_PASSWORD = 256


_USERNAME = re.compile(r"^[a-z0-9][a-z0-9._@+-]{0,127}$")
# RFC 6749 §3.3: scope-token = 1*( %x21 / %x23-5B / %x5D-7E )
_SCOPE_TOKEN = re.compile(r"^[\x21\x23-\x5b\x5d-\x7e]+$")


Clock = Callable[[], datetime]


class OAuthError(Exception):
    """An RFC 6749 §5.2 error response: `error`, `error_description`, HTTP status, headers."""

    def __init__(
        self,
        error: str,
        description: str,
        status: int = 400,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(description)
        self.error = error
        self.description = description
        self.status = status
        self.headers = dict(headers or {})

    def body(self) -> dict[str, str]:
        return {"error": self.error, "error_description": self.description}


def invalid_client(description: str) -> OAuthError:
    # RFC 6749 §5.2: 401 with a WWW-Authenticate challenge for the scheme clients may use.
    return OAuthError(
        "invalid_client", description, 401, {"WWW-Authenticate": 'Basic realm="imprint"'}
    )


def single_params(pairs: Iterable[tuple[str, str]]) -> dict[str, str]:
    """Form parameters as a dict: repeated ones are refused, empty ones count as absent.

    RFC 6749 §3.1: "Parameters sent without a value MUST be treated as if they were omitted";
    "Request and response parameters MUST NOT be included more than once".
    """
    out: dict[str, str] = {}
    for name, value in pairs:
        if not value:
            continue
        if name in out:
            raise OAuthError("invalid_request", f"parameter {name!r} is given more than once")
        out[name] = value
    return out


def client_credentials(authorization: str | None, params: Mapping[str, str]) -> tuple[str, str]:
    """The (client_id, client_secret) a request authenticates with: Basic or form parameters."""
    if authorization:
        scheme, _, value = authorization.strip().partition(" ")
        if scheme.lower() != "basic":
            raise invalid_client(
                f"authenticate with HTTP Basic (client_id:client_secret), not {scheme!r}"
            )
        try:
            decoded = base64.b64decode(value.strip(), validate=True).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError):
            raise invalid_client("the Basic credentials are not valid base64 of UTF-8") from None
        raw_id, sep, raw_secret = decoded.partition(":")
        if not sep:
            raise invalid_client("the Basic credentials must be client_id:client_secret")
        # RFC 6749 §2.3.1: both halves are form-urlencoded before they are joined.
        client_id, secret = unquote_plus(raw_id), unquote_plus(raw_secret)
        if "client_secret" in params:
            raise OAuthError(
                "invalid_request",
                "use one client authentication method: HTTP Basic or client_secret in the body",
            )
        if params.get("client_id", client_id) != client_id:
            raise OAuthError(
                "invalid_request", "client_id in the body differs from the one in HTTP Basic"
            )
        return client_id, secret
    if "client_secret" in params:
        if "client_id" not in params:
            raise OAuthError("invalid_request", "client_secret is given without client_id")
        return params["client_id"], params["client_secret"]
    raise invalid_client(
        "client authentication is required: HTTP Basic with the device_id and client_secret "
        "that provisioning returned"
    )


def validate_scope(scope: str | None) -> str:
    """The requested scope, normalised (single spaces, duplicates dropped), or invalid_scope."""
    if not scope:
        return ""
    if len(scope) > MAX_SCOPE:
        raise OAuthError("invalid_scope", f"scope is longer than {MAX_SCOPE} characters")
    tokens = scope.split(" ")
    if not all(_SCOPE_TOKEN.match(t) for t in tokens):
        raise OAuthError(
            "invalid_scope", "scope is space-separated tokens of printable ASCII (RFC 6749 §3.3)"
        )
    return " ".join(dict.fromkeys(tokens))


@dataclass(frozen=True, slots=True)
class PollOutcome:
    """What one token request with a device_code gets: "issue" or an RFC 8628 §3.5 error."""

    result: str
    interval_s: int


def poll_outcome(grant: GrantRow, now: datetime) -> PollOutcome:
    """Decide a device_code poll from the grant's state and the time. Pure."""
    interval = grant.interval_s
    if grant.status is GrantStatus.DENIED:
        return PollOutcome("access_denied", interval)
    if grant.status not in (GrantStatus.PENDING, GrantStatus.APPROVED):
        return PollOutcome("invalid_grant", interval)  # redeemed already, or revoked
    if parse_iso(grant.expires_at) <= now:
        return PollOutcome("expired_token", interval)
    if grant.status is GrantStatus.APPROVED:
        return PollOutcome("issue", interval)
    if grant.last_poll_at is not None and (
        now.timestamp() - grant.last_poll_at < interval - POLL_SLACK_S
    ):
        # RFC 8628 §3.5: "the interval MUST be increased by 5 seconds for this and all
        # subsequent requests"; the server holds the client to it.
        return PollOutcome("slow_down", interval + SLOW_DOWN_STEP_S)
    return PollOutcome("authorization_pending", interval)


POLL_DESCRIPTIONS = {
    "authorization_pending": "the user has not approved or denied the sign-in yet; keep polling",
    "slow_down": "polling too fast: wait 5 s longer between requests from now on",
    "access_denied": "the user denied the sign-in",
    "expired_token": "the device code expired; start again with a new device authorization",
    "invalid_grant": "the device code is not valid (unknown, already used, or revoked)",
}


def normalize_username(value: object) -> str:
    """A valid username, lowercased, or Invalid saying what is allowed."""
    name = value.strip().lower() if isinstance(value, str) else ""
    if not _USERNAME.match(name):
        raise Invalid(
            f"username must be 1-{MAX_USERNAME} characters of a-z, 0-9 and . _ @ + -, "
            "starting with a letter or digit (e.g. room-101@contoso.com)",
            [{"field": "username", "value": str(value), "message": "invalid username"}],
        )
    return name


def validate_display_name(value: object) -> str:
    name = value.strip() if isinstance(value, str) else None
    if name is None or len(name) > MAX_DISPLAY_NAME or any(ord(c) < 32 for c in name):
        raise Invalid(
            f"display_name must be text of at most {MAX_DISPLAY_NAME} characters, "
            "without control characters"
        )
    return name


def validate_password(value: object) -> str:
    if not isinstance(value, str) or not MIN_PASSWORD <= len(value) <= MAX_PASSWORD:
        raise Invalid(
            f"password must be {MIN_PASSWORD}-{MAX_PASSWORD} characters",
            [{"field": "password", "message": "too short or too long"}],
        )
    return value
