"""Remote sign-in: the OAuth 2.0 Device Authorization Grant (RFC 8628) and tenant user accounts.

How it fits together
--------------------
A provisioned device is a confidential OAuth client: `client_id` is its `device_id` and its
`client_secret` is the one `POST /provision` returned (stored as SHA-256). It authenticates with
HTTP Basic (RFC 6749 §2.3.1) or form parameters on every request; a device that is awaiting
activation or was reset has no secret and gets `invalid_client`.

The device asks `POST /oauth2/device_authorization` for a device code and shows the user code
(8 letters of `BCDFGHJKLMNPQRSTVWXZ`, RFC 8628 §6.1) and `{public_url}/device`. A person (or the
admin, through "Sign in a user") opens that page, types the code and the credentials of a tenant
user account, checks the device, tenant and location the page shows (RFC 8628 §5.4) and approves
or denies. Meanwhile the device polls `POST /oauth2/token`; polling faster than the interval is
answered `slow_down` and the required interval grows by 5 s (RFC 8628 §3.5).

Stored secrets: the device code (256 bits) as SHA-256; the user code as HMAC-SHA256 under a key
derived from the code key file (it has only ~34.6 bits, so an unkeyed hash would be reversible),
plus an AES-256-GCM copy the admin's "Sign in a user" can show; refresh tokens as SHA-256;
passwords as argon2id (hashed off the event loop: it is slow on purpose).

Token design (for the README)
-----------------------------
* Access tokens are JWTs (RFC 9068 profile, header `typ: at+jwt`) signed with ES256 (ECDSA
  P-256, RFC 7518 §3.4). The key is made at first start in the state directory
  (`imprint-oauth-signing.pem`, mode 0600); its `kid` is the RFC 7638 thumbprint, and the public
  key is published at `/oauth2/jwks` (advertised as `jwks_uri` in the RFC 8414 metadata at
  `/.well-known/oauth-authorization-server`). A resource server verifies tokens offline.
* Claims: `iss` (the public URL), `sub` (the username; usernames are unique across tenants),
  `aud` (`[oauth] audience`, default the public URL), `iat`, `exp`, `jti`, `client_id` (the
  device_id), `tenant`, `sid` (the sign-in, i.e. the grant), and `scope` when one was asked for.
* Access tokens live `[oauth] access_token_ttl_s` (1 h). They cannot be recalled: a resource
  server must honour `exp`, and one that needs to see a sign-out at once asks
  `POST /oauth2/introspect` (RFC 7662; it answers `active: false` after sign-out).
* Refresh tokens are opaque 256-bit strings, valid `[oauth] refresh_token_ttl_s` (30 days) and
  rotated on every use; presenting a rotated one again revokes the whole sign-in
  (RFC 9700 §4.14.2). Sign-out, reset, delete, or disabling the user revoke them, so the device's
  next refresh gets `invalid_grant` and it shows its sign-in page again.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import hmac
import json
import os
import re
import secrets
import sqlite3
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import quote, unquote_plus

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import (
    decode_dss_signature,
    encode_dss_signature,
)
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from server.core.metrics import Registry as MetricsRegistry
from server.core.ratelimit import FailureLimiter, TokenBuckets
from server.oauth.model import GrantEvent, GrantStatus
from server.oauth.store import ClientRow, GrantRow, OAuthStore, UserRow, revoke_device_tokens
from server.provisioning.codes import format_code, generate_code, normalize_code
from server.registry.model import Device, DeviceState
from server.registry.service import Principal, Registry, iso, parse_iso, token_digest
from server.store.base import Conflict, Invalid, NotFound
from server.store.sqlite import Tx

DEVICE_CODE_GRANT = "urn:ietf:params:oauth:grant-type:device_code"
REFRESH_GRANT = "refresh_token"
SLOW_DOWN_STEP_S = 5  # RFC 8628 §3.5
# A client that waits the full interval measured from when it *sent* its previous poll can
# arrive a little early by network jitter; only polls clearly faster than that are slowed.
POLL_SLACK_S = 0.5
APPROVAL_TTL_S = 300  # how long the page's approve/deny form stays valid
SIGNING_KEY_NAME = "imprint-oauth-signing.pem"
MAX_SCOPE = 1000
MAX_USERNAME = 128
MAX_DISPLAY_NAME = 100
MIN_PASSWORD = 8
MAX_PASSWORD = 256

_USERNAME = re.compile(r"^[a-z0-9][a-z0-9._@+-]{0,127}$")
# RFC 6749 §3.3: scope-token = 1*( %x21 / %x23-5B / %x5D-7E )
_SCOPE_TOKEN = re.compile(r"^[\x21\x23-\x5b\x5d-\x7e]+$")

Clock = Callable[[], datetime]


# ---- errors --------------------------------------------------------------------------------------


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


# ---- pure request rules ----------------------------------------------------------------------------


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


_POLL_DESCRIPTIONS = {
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


# ---- keys ---------------------------------------------------------------------------------------------


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def b64url_decode(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _json_bytes(obj: Mapping[str, Any]) -> bytes:
    return json.dumps(obj, separators=(",", ":"), sort_keys=True).encode()


class SigningKey:
    """The ES256 key access tokens are signed with; `kid` is its RFC 7638 thumbprint."""

    def __init__(self, key: ec.EllipticCurvePrivateKey) -> None:
        if not isinstance(key.curve, ec.SECP256R1):
            raise ValueError("the OAuth signing key must be an EC P-256 key (ES256)")
        self._key = key
        self._public = key.public_key()
        nums = self._public.public_numbers()
        self._x = b64url(nums.x.to_bytes(32, "big"))
        self._y = b64url(nums.y.to_bytes(32, "big"))
        # RFC 7638 §3.2: the required members only, in lexicographic order, no whitespace.
        required = {"crv": "P-256", "kty": "EC", "x": self._x, "y": self._y}
        self.kid = b64url(hashlib.sha256(_json_bytes(required)).digest())

    @classmethod
    def load_or_create(cls, path: Path) -> SigningKey:
        """Read the PEM key at `path`, or create it (mode 0600) on first start."""
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            path.parent.mkdir(parents=True, exist_ok=True)
            key = ec.generate_private_key(ec.SECP256R1())
            pem = key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "wb") as f:
                f.write(pem)
            return cls(key)
        loaded = serialization.load_pem_private_key(data, password=None)
        if not isinstance(loaded, ec.EllipticCurvePrivateKey):
            raise ValueError(f"{path} is not an EC private key; delete it to make a new one")
        return cls(loaded)

    def public_jwk(self) -> dict[str, str]:
        return {
            "kty": "EC",
            "crv": "P-256",
            "x": self._x,
            "y": self._y,
            "kid": self.kid,
            "use": "sig",
            "alg": "ES256",
        }

    def sign(self, claims: Mapping[str, Any]) -> str:
        """A compact JWS (ES256) of `claims` with `typ: at+jwt` (RFC 9068 §2.1)."""
        header = {"alg": "ES256", "typ": "at+jwt", "kid": self.kid}
        signing_input = f"{b64url(_json_bytes(header))}.{b64url(_json_bytes(claims))}"
        der = self._key.sign(signing_input.encode("ascii"), ec.ECDSA(hashes.SHA256()))
        r, s = decode_dss_signature(der)
        # RFC 7518 §3.4: the JWS signature is R || S, each 32 bytes big-endian, not DER.
        return f"{signing_input}.{b64url(r.to_bytes(32, 'big') + s.to_bytes(32, 'big'))}"

    def verify(self, token: str) -> dict[str, Any] | None:
        """The claims of a token this key signed, or None (no time checks here)."""
        parts = token.split(".")
        if len(parts) != 3:
            return None
        try:
            header = json.loads(b64url_decode(parts[0]))
            sig = b64url_decode(parts[2])
            if (
                not isinstance(header, dict)
                or header.get("alg") != "ES256"
                or header.get("kid") != self.kid
                or len(sig) != 64
            ):
                return None
            der = encode_dss_signature(
                int.from_bytes(sig[:32], "big"), int.from_bytes(sig[32:], "big")
            )
            self._public.verify(
                der, f"{parts[0]}.{parts[1]}".encode("ascii"), ec.ECDSA(hashes.SHA256())
            )
            claims = json.loads(b64url_decode(parts[1]))
        except (ValueError, InvalidSignature, binascii.Error):
            return None
        return claims if isinstance(claims, dict) else None


class CodeKeys:
    """Keys derived from the code key file: user code digest and seal, approval form MACs."""

    def __init__(self, secret: bytes) -> None:
        if len(secret) < 32:
            raise ValueError("code key must be at least 32 bytes")
        self._digest_key = self._derive(secret, b"imprint oauth user code digest v1")
        self._aead = AESGCM(self._derive(secret, b"imprint oauth user code seal v1"))
        self._form_key = self._derive(secret, b"imprint oauth approval form v1")

    @staticmethod
    def _derive(secret: bytes, info: bytes) -> bytes:
        return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=info).derive(secret)

    def user_code_digest(self, code: str) -> bytes:
        return hmac.new(self._digest_key, code.encode(), hashlib.sha256).digest()

    def seal(self, code: str, grant_id: str) -> bytes:
        nonce = os.urandom(12)
        return nonce + self._aead.encrypt(nonce, code.encode(), grant_id.encode())

    def unseal(self, sealed: bytes, grant_id: str) -> str:
        return self._aead.decrypt(sealed[:12], sealed[12:], grant_id.encode()).decode()

    def sign_form(self, grant_id: str, username: str, expires: int, nonce: str) -> str:
        """A short-lived approval token naming the grant and the user, bound to the CSRF nonce."""
        payload = b64url(_json_bytes({"g": grant_id, "u": username, "e": expires}))
        mac = hmac.new(self._form_key, f"{payload}|{nonce}".encode(), hashlib.sha256).digest()
        return f"{payload}.{b64url(mac)}"

    def verify_form(self, token: str, nonce: str, now: float) -> tuple[str, str] | None:
        """(grant_id, username) if `token` is ours, unexpired and bound to `nonce`."""
        payload, _, mac = token.partition(".")
        want = hmac.new(self._form_key, f"{payload}|{nonce}".encode(), hashlib.sha256).digest()
        try:
            if not hmac.compare_digest(b64url_decode(mac), want):
                return None
            data = json.loads(b64url_decode(payload))
        except (ValueError, binascii.Error):
            return None
        if not isinstance(data, dict) or not isinstance(data.get("e"), int) or data["e"] < now:
            return None
        g, u = data.get("g"), data.get("u")
        return (g, u) if isinstance(g, str) and isinstance(u, str) else None


# ---- user accounts ---------------------------------------------------------------------------------


class Passwords:
    """argon2id hashing, always off the event loop (it costs tens of ms of CPU on purpose)."""

    def __init__(self, hasher: PasswordHasher | None = None) -> None:
        self.hasher = hasher or PasswordHasher()
        self._dummy: str | None = None

    async def hash(self, password: str) -> str:
        return await asyncio.to_thread(self.hasher.hash, password)

    async def verify(self, stored: str | None, password: str) -> bool:
        """Check `password`; with no stored hash, spend the same time and answer False."""
        if stored is None:
            # Same cost whether the account exists or not: no timing oracle for usernames.
            if self._dummy is None:
                self._dummy = await self.hash(secrets.token_urlsafe(16))
            await asyncio.to_thread(self._check, self._dummy, password)
            return False
        return await asyncio.to_thread(self._check, stored, password)

    def _check(self, stored: str, password: str) -> bool:
        try:
            return self.hasher.verify(stored, password)
        except (VerificationError, InvalidHashError):
            return False

    def needs_rehash(self, stored: str) -> bool:
        return self.hasher.check_needs_rehash(stored)


class UserAccounts:
    """Tenant user accounts: create, list, disable, reset password; scoped like devices."""

    def __init__(
        self, registry: Registry, store: OAuthStore, passwords: Passwords | None = None
    ) -> None:
        self.registry = registry
        self.store = store
        self.passwords = passwords or Passwords()

    async def _user(self, who: Principal, tenant_id: str, username: str) -> UserRow:
        await self.registry.get_tenant(who, tenant_id)
        try:
            name = normalize_username(username)
        except Invalid:
            raise NotFound(f"user {username!r} not found in tenant {tenant_id!r}") from None
        user = await self.store.get_user(name)
        if user is None or user.tenant_id != tenant_id:
            raise NotFound(f"user {name!r} not found in tenant {tenant_id!r}")
        return user

    async def get(self, who: Principal, tenant_id: str, username: str) -> UserRow:
        return await self._user(who, tenant_id, username)

    async def create(
        self, who: Principal, tenant_id: str, username: str, display_name: str, password: str
    ) -> UserRow:
        await self.registry.get_tenant(who, tenant_id)
        name = normalize_username(username)
        display = validate_display_name(display_name)
        digest = await self.passwords.hash(validate_password(password))
        try:
            async with self.registry.store.transaction(self.registry.now()) as tx:
                await self.store.insert_user(tx, name, tenant_id, display, digest)
                await tx.audit(
                    who.actor,
                    tenant_id,
                    "user.create",
                    name,
                    None,
                    {"username": name, "display_name": display},
                )
        except sqlite3.IntegrityError as e:
            # Usernames are unique across tenants; do not say which tenant holds it.
            raise Conflict(f"username {name!r} is already taken") from e
        return await self._user(who, tenant_id, name)

    async def list(self, who: Principal, tenant_id: str) -> list[UserRow]:
        await self.registry.get_tenant(who, tenant_id)
        return await self.store.list_users(tenant_id)

    async def update(
        self,
        who: Principal,
        tenant_id: str,
        username: str,
        *,
        disabled: bool | None = None,
        display_name: str | None = None,
    ) -> UserRow:
        """Change an account; disabling it also signs out every device signed in with it."""
        before = await self._user(who, tenant_id, username)
        display = None if display_name is None else validate_display_name(display_name)
        signed_out: list[str] = []
        async with self.registry.store.transaction(self.registry.now()) as tx:
            await self.store.update_user(
                tx, before.username, tenant_id, disabled=disabled, display_name=display
            )
            changes_before: dict[str, Any] = {}
            changes_after: dict[str, Any] = {}
            if disabled is not None and disabled != before.disabled:
                changes_before["disabled"], changes_after["disabled"] = before.disabled, disabled
            if display is not None and display != before.display_name:
                changes_before["display_name"] = before.display_name
                changes_after["display_name"] = display
            if disabled:
                await self.store.revoke_user_sessions(tx, before.username)
                signed_out = await self.store.macs_signed_in_as(tx, before.username)
                for mac in signed_out:
                    await self.store.set_signed_out(tx, mac)
                    await tx.audit(
                        who.actor,
                        tenant_id,
                        "device.sign_out",
                        mac,
                        {"state": DeviceState.SIGNED_IN.value, "user": before.username},
                        {"state": DeviceState.AWAITING_SIGN_IN.value, "reason": "user disabled"},
                    )
            if changes_after:
                await tx.audit(
                    who.actor,
                    tenant_id,
                    "user.update",
                    before.username,
                    changes_before,
                    changes_after,
                )
        if signed_out:
            await self.registry.refresh(signed_out)
        return await self._user(who, tenant_id, before.username)

    async def reset_password(
        self, who: Principal, tenant_id: str, username: str, password: str
    ) -> None:
        """Set a new password. Devices already signed in stay signed in (disable to end them)."""
        user = await self._user(who, tenant_id, username)
        digest = await self.passwords.hash(validate_password(password))
        async with self.registry.store.transaction(self.registry.now()) as tx:
            await self.store.update_user(tx, user.username, tenant_id, password_hash=digest)
            await tx.audit(who.actor, tenant_id, "user.password_reset", user.username, None, None)

    async def check_login(self, username: str, password: str) -> UserRow | None:
        """The enabled account these credentials belong to, or None (same cost either way)."""
        try:
            name = normalize_username(username)
        except Invalid:
            name = ""
        user = await self.store.get_user(name) if name else None
        ok = await self.passwords.verify(user.password_hash if user else None, password)
        if user is None or not ok or user.disabled:
            return None
        if self.passwords.needs_rehash(user.password_hash):
            digest = await self.passwords.hash(password)
            async with self.registry.store.transaction(self.registry.now()) as tx:
                await self.store.update_user(
                    tx, user.username, user.tenant_id, password_hash=digest
                )
        return user


# ---- the authorization server ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class DeviceAuthorization:
    """RFC 8628 §3.2 response."""

    device_code: str
    user_code: str  # XXXX-XXXX
    verification_uri: str
    verification_uri_complete: str
    expires_in: int
    interval: int

    def as_dict(self) -> dict[str, Any]:
        return {
            "device_code": self.device_code,
            "user_code": self.user_code,
            "verification_uri": self.verification_uri,
            "verification_uri_complete": self.verification_uri_complete,
            "expires_in": self.expires_in,
            "interval": self.interval,
        }


@dataclass(frozen=True, slots=True)
class PendingSignIn:
    """A device's current sign-in request as the verification page and the admin see it."""

    grant_id: str
    mac: str
    location: str
    tenant_id: str
    tenant_name: str
    expires_at: str


@dataclass(frozen=True, slots=True)
class SignInCode:
    """What the admin's "Sign in a user" returns."""

    mac: str
    user_code: str
    verification_uri: str
    verification_uri_complete: str
    expires_at: str


@dataclass(frozen=True, slots=True)
class Decision:
    """The result of approve/deny on the verification page; `error` is None on success."""

    error: str | None
    message: str
    mac: str = ""


class OAuthService:
    """Device authorization, token endpoint, verification page decisions and admin sign-in."""

    def __init__(
        self,
        registry: Registry,
        store: OAuthStore,
        keys: CodeKeys,
        signing_key: SigningKey,
        *,
        public_url: str,
        audience: str | None = None,
        device_code_ttl: timedelta = timedelta(seconds=900),
        interval_s: int = 5,
        access_token_ttl: timedelta = timedelta(hours=1),
        refresh_token_ttl: timedelta = timedelta(days=30),
        metrics: MetricsRegistry | None = None,
        passwords: Passwords | None = None,
    ) -> None:
        self.registry = registry
        self.store = store
        self.keys = keys
        self.signing_key = signing_key
        self.issuer = public_url.rstrip("/")
        self.audience = audience or self.issuer
        self.device_code_ttl = device_code_ttl
        self.interval_s = interval_s
        self.access_token_ttl = access_token_ttl
        self.refresh_token_ttl = refresh_token_ttl
        self.users = UserAccounts(registry, store, passwords)
        self.metrics = metrics or MetricsRegistry()
        self._token_requests = self.metrics.counter(
            "imprint_oauth_token_requests_total",
            "OAuth token endpoint requests by grant type and result",
            ("grant_type", "result"),
        )
        # Verification page: every POST from one source, and failed user codes or passwords
        # from it (RFC 8628 §5.1: user codes can be guessed), and failed passwords per account.
        self.page_limiter = TokenBuckets(2.0, 30)
        self.page_failures = FailureLimiter(0.1, 10)
        self.account_failures = FailureLimiter(1 / 30, 20)

    @property
    def verification_uri(self) -> str:
        return f"{self.issuer}/device"

    def _complete_uri(self, user_code: str) -> str:
        return f"{self.verification_uri}?user_code={quote(user_code)}"

    def metadata(self) -> dict[str, Any]:
        """RFC 8414 authorization server metadata."""
        return {
            "issuer": self.issuer,
            "token_endpoint": f"{self.issuer}/oauth2/token",
            "device_authorization_endpoint": f"{self.issuer}/oauth2/device_authorization",
            "jwks_uri": f"{self.issuer}/oauth2/jwks",
            "introspection_endpoint": f"{self.issuer}/oauth2/introspect",
            "introspection_endpoint_auth_methods_supported": ["bearer"],
            "grant_types_supported": [DEVICE_CODE_GRANT, REFRESH_GRANT],
            "token_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post"],
            # No authorization endpoint: the device grant is the only user-facing flow.
            "response_types_supported": [],
            "service_documentation": f"{self.issuer}/api/v1/openapi.json",
        }

    def jwks(self) -> dict[str, Any]:
        return {"keys": [self.signing_key.public_jwk()]}

    # ---- client authentication -----------------------------------------------------------------

    async def authenticate_client(self, client_id: str, secret: str) -> ClientRow:
        """The provisioned device these credentials belong to, or invalid_client."""
        client = await self.store.client(client_id)
        stored = client.client_secret_hash if client else None
        # Compare even for an unknown client, so the answer takes the same time.
        ok = hmac.compare_digest(token_digest(secret), stored or b"\x00" * 32)
        if client is None or stored is None or not ok:
            raise invalid_client(
                "unknown client, wrong secret, or a device that is not provisioned (or was "
                "reset): provision it again with a verification code"
            )
        return client

    # ---- RFC 8628 §3.1-3.2 -----------------------------------------------------------------------

    async def device_authorization(
        self, client: ClientRow, scope: str | None
    ) -> DeviceAuthorization:
        """Start a sign-in for `client`: a new device code and user code (replacing older ones)."""
        if client.state not in (DeviceState.AWAITING_SIGN_IN, DeviceState.SIGNED_IN):
            raise invalid_client("the device is not provisioned")
        scope_value = validate_scope(scope)
        now_dt = self.registry.clock()
        now = iso(now_dt)
        expires = now_dt + self.device_code_ttl
        device_code = secrets.token_urlsafe(32)  # 256 bits (RFC 8628 §5.2 asks for enough)
        grant_id = "sgn_" + secrets.token_hex(12)
        for attempt in range(5):
            user_code = generate_code()
            try:
                async with self.registry.store.transaction(now) as tx:
                    await self.store.start_grant(
                        tx,
                        grant_id=grant_id,
                        device_code_hash=token_digest(device_code),
                        user_code_digest=self.keys.user_code_digest(user_code),
                        user_code_sealed=self.keys.seal(user_code, grant_id),
                        mac=client.mac,
                        tenant_id=client.tenant_id,
                        client_id=client.device_id,
                        scope=scope_value,
                        expires_at=iso(expires),
                        interval_s=self.interval_s,
                    )
                break
            except sqlite3.IntegrityError:
                if attempt == 4:  # 5 collisions among live codes: the table is full of them
                    raise
        shown = format_code(user_code)
        return DeviceAuthorization(
            device_code=device_code,
            user_code=shown,
            verification_uri=self.verification_uri,
            verification_uri_complete=self._complete_uri(shown),
            expires_in=int(self.device_code_ttl.total_seconds()),
            interval=self.interval_s,
        )

    # ---- RFC 8628 §3.4-3.5 and RFC 6749 §6: the token endpoint -----------------------------------

    def count(self, grant_type: str, result: str) -> None:
        label = {DEVICE_CODE_GRANT: "device_code", REFRESH_GRANT: "refresh_token"}.get(
            grant_type, "unsupported"
        )
        self._token_requests.inc(label, result)

    async def token(self, client: ClientRow, params: Mapping[str, str]) -> dict[str, Any]:
        """Answer a token request of an authenticated client; raises OAuthError."""
        grant_type = params.get("grant_type")
        if not grant_type:
            raise OAuthError("invalid_request", "grant_type is required")
        if grant_type == DEVICE_CODE_GRANT:
            code = params.get("device_code")
            if not code:
                raise OAuthError("invalid_request", "device_code is required")
            return await self._redeem_device_code(client, code)
        if grant_type == REFRESH_GRANT:
            token = params.get("refresh_token")
            if not token:
                raise OAuthError("invalid_request", "refresh_token is required")
            return await self._refresh(client, token, params.get("scope"))
        raise OAuthError(
            "unsupported_grant_type",
            f"grant_type {grant_type[:100]!r} is not supported; use {DEVICE_CODE_GRANT} "
            "or refresh_token",
        )

    async def _redeem_device_code(self, client: ClientRow, device_code: str) -> dict[str, Any]:
        now_dt = self.registry.clock()
        refresh: str | None = None
        async with self.registry.store.transaction(iso(now_dt)) as tx:
            grant = await self.store.grant_by_device_code(tx, token_digest(device_code))
            if grant is None or grant.client_id != client.device_id:
                raise OAuthError("invalid_grant", _POLL_DESCRIPTIONS["invalid_grant"])
            outcome = poll_outcome(grant, now_dt)
            if outcome.result in ("authorization_pending", "slow_down"):
                await self.store.record_poll(tx, grant.id, now_dt.timestamp(), outcome.interval_s)
            elif outcome.result == "issue":
                # Conditional update: of two concurrent polls only one redeems the grant.
                if await self.store.mark_issued(tx, grant.id):
                    refresh = await self._new_refresh_token(tx, grant.id, now_dt)
                else:
                    outcome = PollOutcome("invalid_grant", grant.interval_s)
        if refresh is None or grant.username is None:
            raise OAuthError(outcome.result, _POLL_DESCRIPTIONS[outcome.result])
        return self._token_response(
            grant_id=grant.id,
            client_id=grant.client_id,
            tenant_id=grant.tenant_id,
            username=grant.username,
            scope=grant.scope,
            refresh=refresh,
            now=now_dt,
        )

    async def _new_refresh_token(self, tx: Tx, grant_id: str, now: datetime) -> str:
        token = secrets.token_urlsafe(32)
        await self.store.insert_refresh(
            tx, token_digest(token), grant_id, iso(now + self.refresh_token_ttl)
        )
        return token

    def _token_response(
        self,
        *,
        grant_id: str,
        client_id: str,
        tenant_id: str,
        username: str,
        scope: str,
        refresh: str,
        now: datetime,
    ) -> dict[str, Any]:
        """RFC 6749 §5.1 response with a fresh access token (claims: see the module docstring)."""
        ttl = int(self.access_token_ttl.total_seconds())
        iat = int(now.timestamp())
        claims: dict[str, Any] = {
            "iss": self.issuer,
            "sub": username,
            "aud": self.audience,
            "iat": iat,
            "exp": iat + ttl,
            "jti": secrets.token_urlsafe(16),
            "client_id": client_id,
            "tenant": tenant_id,
            "sid": grant_id,
        }
        if scope:
            claims["scope"] = scope
        body: dict[str, Any] = {
            "access_token": self.signing_key.sign(claims),
            "token_type": "Bearer",
            "expires_in": ttl,
            "refresh_token": refresh,
        }
        if scope:
            body["scope"] = scope
        return body

    async def _refresh(self, client: ClientRow, token: str, scope: str | None) -> dict[str, Any]:
        now_dt = self.registry.clock()
        now = iso(now_dt)
        digest = token_digest(token)
        signed_out: str | None = None
        error: OAuthError | None = None
        new_token: str | None = None
        async with self.registry.store.transaction(now) as tx:
            row = await self.store.refresh_in_tx(tx, digest)
            if row is None or row.client_id != client.device_id:
                raise OAuthError("invalid_grant", "the refresh token is not valid")
            if row.rotated_at is not None:
                # A rotated token used again: someone holds a copy. End the whole sign-in.
                await self.store.revoke_grant(tx, row.grant_id)
                await self.store.set_signed_out(tx, row.mac)
                await tx.audit(
                    f"device:{row.mac}",
                    row.tenant_id,
                    "oauth.refresh_replay",
                    row.mac,
                    {"state": DeviceState.SIGNED_IN.value, "user": row.username},
                    {"state": DeviceState.AWAITING_SIGN_IN.value},
                )
                signed_out = row.mac
                error = OAuthError(
                    "invalid_grant",
                    "the refresh token was already used; the sign-in is revoked, sign in again",
                )
            elif row.grant_status is not GrantStatus.ISSUED or row.username is None:
                error = OAuthError("invalid_grant", "the sign-in was ended (signed out or reset)")
            elif row.expires_at <= now:
                error = OAuthError("invalid_grant", "the refresh token expired; sign in again")
            elif row.user_disabled is not False:
                error = OAuthError("invalid_grant", "the user account is disabled or gone")
            else:
                requested = validate_scope(scope)
                granted = set(row.scope.split()) if row.scope else set()
                if requested and not set(requested.split()) <= granted:
                    # RFC 6749 §6: a refresh may narrow the scope, never widen it.
                    raise OAuthError("invalid_scope", "a refresh cannot ask for a wider scope")
                if not await self.store.rotate_refresh(tx, digest, row.grant_id):
                    raise OAuthError("invalid_grant", "the refresh token is not valid")
                new_token = await self._new_refresh_token(tx, row.grant_id, now_dt)
        if signed_out:
            await self.registry.refresh([signed_out])
        if error is not None:
            raise error
        if new_token is None or row.username is None:
            raise OAuthError("invalid_grant", "the refresh token is not valid")
        return self._token_response(
            grant_id=row.grant_id,
            client_id=row.client_id,
            tenant_id=row.tenant_id,
            username=row.username,
            # RFC 6749 §6: a refresh may narrow the access token's scope; the grant keeps its own.
            scope=validate_scope(scope) or row.scope,
            refresh=new_token,
            now=now_dt,
        )

    # ---- RFC 7662 introspection ---------------------------------------------------------------

    async def introspect(self, who: Principal, token: str) -> dict[str, Any]:
        """Whether `token` (access or refresh) is active now, as `who` may see it."""
        now_dt = self.registry.clock()
        inactive: dict[str, Any] = {"active": False}
        claims = self.signing_key.verify(token)
        if claims is not None:
            exp, sid, tenant = claims.get("exp"), claims.get("sid"), claims.get("tenant")
            if (
                not isinstance(exp, int)
                or exp <= now_dt.timestamp()
                or claims.get("iss") != self.issuer
                or not isinstance(sid, str)
                or not isinstance(tenant, str)
                or not who.sees(tenant)
            ):
                return inactive
            grant = await self.store.grant(sid)
            if grant is None or grant.status is not GrantStatus.ISSUED:
                return inactive
            return {"active": True, "token_type": "Bearer", "username": claims.get("sub"), **claims}
        row = await self.store.refresh_token(token_digest(token))
        if (
            row is None
            or row.rotated_at is not None
            or row.grant_status is not GrantStatus.ISSUED
            or row.expires_at <= iso(now_dt)
            or row.user_disabled is not False
            or not who.sees(row.tenant_id)
        ):
            return inactive
        out: dict[str, Any] = {
            "active": True,
            "client_id": row.client_id,
            "username": row.username,
            "sub": row.username,
            "tenant": row.tenant_id,
            "exp": int(parse_iso(row.expires_at).timestamp()),
            "iss": self.issuer,
            "sid": row.grant_id,
        }
        if row.scope:
            out["scope"] = row.scope
        return out

    # ---- the verification page ----------------------------------------------------------------------

    async def find_pending(self, user_code: str) -> PendingSignIn | None:
        """The pending, unexpired sign-in a typed user code names (CodeFormatError if malformed)."""
        code = normalize_code(user_code)
        grant = await self.store.grant_by_user_code(self.keys.user_code_digest(code))
        if (
            grant is None
            or grant.status is not GrantStatus.PENDING
            or parse_iso(grant.expires_at) <= self.registry.clock()
        ):
            return None
        device = await self.store.device(grant.mac)
        if device is None:
            return None
        return PendingSignIn(
            grant.id,
            device.mac,
            device.location,
            device.tenant_id,
            device.tenant_name,
            grant.expires_at,
        )

    async def audit_tenant_mismatch(
        self, user: UserRow, pending: PendingSignIn, source: str
    ) -> None:
        """Record a refused cross-tenant approval in both tenants (neither learns the other)."""
        async with self.registry.store.transaction(self.registry.now()) as tx:
            # The device's tenant learns that an outside account tried, not which one.
            await tx.audit(
                f"verification-page@{source}",
                pending.tenant_id,
                "oauth.tenant_mismatch",
                pending.mac,
                None,
                {"reason": "the account belongs to another tenant"},
            )
            await tx.audit(
                f"user:{user.username}@{source}",
                user.tenant_id,
                "oauth.tenant_mismatch",
                user.username,
                None,
                {"reason": "tried to sign in a device of another tenant"},
            )

    async def audit_login_failure(self, username: str, source: str) -> None:
        user = await self.store.get_user(username)
        if user is None:
            return
        async with self.registry.store.transaction(self.registry.now()) as tx:
            await tx.audit(
                f"user:{user.username}@{source}",
                user.tenant_id,
                "user.login_failed",
                user.username,
                None,
                {"source": source},
            )

    async def decide(self, grant_id: str, username: str, approve: bool, source: str) -> Decision:
        """Approve or deny a pending sign-in as `username`; approval signs the device in."""
        actor = f"user:{username}@{source}"
        async with self.registry.store.transaction(self.registry.now()) as tx:
            grant = await self.store.grant_in_tx(tx, grant_id)
            user = await self.store.user_in_tx(tx, username)
            if (
                grant is None
                or grant.status is not GrantStatus.PENDING
                or parse_iso(grant.expires_at) <= self.registry.clock()
            ):
                return Decision(
                    "not_pending",
                    "This sign-in request is no longer waiting: it expired, was already "
                    "answered, or the device started a new one. Enter the code the device "
                    "shows now.",
                )
            if user is None or user.disabled:
                return Decision("user_disabled", "This account is disabled.")
            if user.tenant_id != grant.tenant_id:
                return Decision(
                    "tenant_mismatch",
                    "This device belongs to a different organisation than your account.",
                )
            device = await self.store.client_by_mac(tx, grant.mac)
            if device is None or device.client_secret_hash is None:
                return Decision("not_provisioned", "This device is no longer provisioned.")
            if not approve:
                await self.store.decide(tx, grant.id, GrantEvent.DENY, user.username)
                await tx.audit(
                    actor, grant.tenant_id, "oauth.deny", grant.mac, None, {"user": user.username}
                )
                return Decision(
                    None, "Sign-in denied. The device will not be signed in.", grant.mac
                )
            if not await self.store.decide(tx, grant.id, GrantEvent.APPROVE, user.username):
                return Decision("not_pending", "This sign-in request is no longer waiting.")
            # One user per device: an earlier sign-in on it ends here.
            await self.store.revoke_other_sessions(tx, grant.mac, grant.id)
            await self.store.set_signed_in(tx, grant.mac, user.username)
            await tx.audit(
                actor,
                grant.tenant_id,
                "oauth.approve",
                grant.mac,
                {"state": device.state.value, "user": device.signed_in_user},
                {"state": DeviceState.SIGNED_IN.value, "user": user.username},
            )
        await self.registry.refresh([grant.mac])
        return Decision(
            None,
            f"Approved. The device {grant.mac} signs in as {user.username} within a few seconds.",
            grant.mac,
        )

    def approval_token(self, grant_id: str, username: str, nonce: str) -> str:
        expires = int(self.registry.clock().timestamp()) + APPROVAL_TTL_S
        return self.keys.sign_form(grant_id, username, expires, nonce)

    def check_approval_token(self, token: str, nonce: str) -> tuple[str, str] | None:
        return self.keys.verify_form(token, nonce, self.registry.clock().timestamp())

    # ---- the admin's "Sign in a user" and sign-out -----------------------------------------------

    async def sign_in_code(self, who: Principal, tenant_id: str, mac: str) -> SignInCode:
        """The device's current user code, so the admin can complete its sign-in."""
        device = await self.registry.get_device(who, tenant_id, mac)
        if device.state == DeviceState.AWAITING_ACTIVATION:
            raise Conflict(
                "the device is not provisioned yet: enter its verification code on it first"
            )
        grant = await self.store.pending_grant(device.mac, self.registry.now())
        if grant is None or grant.user_code_sealed is None:
            raise Conflict("the device has not started sign-in; check it shows its sign-in page")
        code = format_code(self.keys.unseal(grant.user_code_sealed, grant.id))
        async with self.registry.store.transaction(self.registry.now()) as tx:
            await tx.audit(
                who.actor,
                tenant_id,
                "device.sign_in",
                device.mac,
                None,
                {"expires_at": grant.expires_at},
            )
        return SignInCode(
            device.mac, code, self.verification_uri, self._complete_uri(code), grant.expires_at
        )

    async def sign_out(self, who: Principal, tenant_id: str, mac: str) -> Device:
        """Revoke the device's tokens and requests; it returns to awaiting sign-in."""
        before = await self.registry.get_device(who, tenant_id, mac)
        if before.state == DeviceState.AWAITING_ACTIVATION:
            raise Conflict("the device is not provisioned, so it is not signed in")
        async with self.registry.store.transaction(self.registry.now()) as tx:
            revoked = await revoke_device_tokens(tx, before.mac)
            await self.store.set_signed_out(tx, before.mac)
            await tx.audit(
                who.actor,
                tenant_id,
                "device.sign_out",
                before.mac,
                {"state": before.state.value, "user": before.signed_in_user},
                {"state": DeviceState.AWAITING_SIGN_IN.value, "revoked": revoked},
            )
        await self.registry.refresh([before.mac])
        return await self.registry.get_device(who, tenant_id, before.mac)


__all__ = [
    "OAuthService",
    "OAuthError",
    "UserAccounts",
    "Passwords",
    "SigningKey",
    "CodeKeys",
    "DeviceAuthorization",
    "SignInCode",
    "PendingSignIn",
    "Decision",
    "poll_outcome",
    "PollOutcome",
    "client_credentials",
    "single_params",
    "validate_scope",
    "normalize_username",
    "DEVICE_CODE_GRANT",
]
