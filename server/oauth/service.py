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
  next refresh gets `invalid_grant` and it shows its sign-in page again."""

from __future__ import annotations

import hmac
import secrets
import sqlite3
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import quote

from server.core.metrics import Registry as MetricsRegistry
from server.core.ratelimit import FailureLimiter, TokenBuckets
from server.oauth.keys import CodeKeys, SigningKey
from server.oauth.model import GrantEvent, GrantStatus
from server.oauth.rules import (
    APPROVAL_TTL_S,
    DEVICE_CODE_GRANT,
    POLL_DESCRIPTIONS,
    REFRESH_GRANT,
    OAuthError,
    PollOutcome,
    invalid_client,
    normalize_username,
    poll_outcome,
    validate_scope,
)
from server.oauth.store import ClientRow, OAuthStore, UserRow, revoke_device_tokens
from server.oauth.users import Passwords, UserAccounts
from server.provisioning.codes import format_code, generate_code, normalize_code
from server.registry.model import Device, DeviceState, iso, parse_iso, token_digest
from server.registry.service import Principal, Registry, normalize_macs
from server.store.base import Conflict, Invalid, Tx


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
class BulkApproval:
    """What a bulk approval did: the devices now signed in as `user`, and the MACs asked for
    that had no pending sign-in (not asked yet, already answered, or expired)."""

    user: str
    approved: list[str]
    not_pending: list[str]


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
                raise OAuthError("invalid_grant", POLL_DESCRIPTIONS["invalid_grant"])
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
            raise OAuthError(outcome.result, POLL_DESCRIPTIONS[outcome.result])
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

    async def approve_pending(
        self, who: Principal, tenant_id: str, username: str, macs: Sequence[str] | None
    ) -> BulkApproval:
        """Approve, as the tenant's user `username`, every pending sign-in of the tenant (or of
        `macs`): what the verification page does for one device, for a whole rollout at once.

        The admin vouches for the devices instead of the user typing each code and password, so
        this is the admin's (or operator's) action and audited as theirs, one entry per device.
        Devices of `macs` with no pending sign-in are reported, not refused: a rollout approves
        again as more devices show their codes.
        """
        await self.registry.get_tenant(who, tenant_id)
        try:
            account = normalize_username(username)
        except Invalid:
            raise Invalid(
                f"user {username!r} is not a valid username: give one of the tenant's user "
                "accounts (GET /api/v1/tenants/{tenant}/users)",
                [{"field": "user", "value": str(username), "message": "invalid username"}],
            ) from None
        targets: list[str] | None = None
        if macs is not None:
            targets = normalize_macs(macs, "some MACs are not valid; nothing was approved")
            found = await self.registry.store.devices_in(tenant_id, targets)
            details = [
                {"index": i, "value": m, "message": "not registered in this tenant"}
                for i, m in enumerate(targets)
                if m not in found
            ]
            if details:
                raise Invalid(
                    "some MACs are not devices of this tenant; nothing was approved", details
                )
        async with self.registry.store.transaction(self.registry.now()) as tx:
            user = await self.store.user_in_tx(tx, account)
            if user is None or user.tenant_id != tenant_id:
                raise Invalid(
                    f"tenant {tenant_id!r} has no user account {account!r}: create it first "
                    f"(POST /api/v1/tenants/{tenant_id}/users) or name one of its accounts",
                    [{"field": "user", "value": account, "message": "no such account here"}],
                )
            if user.disabled:
                raise Conflict(
                    f"the account {account!r} is disabled: enable it first (PATCH "
                    f'/api/v1/tenants/{tenant_id}/users/{account} {{"disabled": false}})'
                )
            pending = await self.store.pending_in_tenant(tx, tenant_id, targets)
            approved = await self.store.approve_many(tx, [g for g, _ in pending], account)
            moved = set(approved)
            await tx.audit_many(
                (
                    who.actor,
                    tenant_id,
                    "oauth.approve",
                    device.mac,
                    {"state": device.state.value, "user": device.signed_in_user},
                    {"state": DeviceState.SIGNED_IN.value, "user": account, "bulk": True},
                )
                for _, device in pending
                if device.mac in moved
            )
        if approved:
            await self.registry.refresh(approved)
        not_pending = [] if targets is None else [m for m in targets if m not in moved]
        return BulkApproval(account, approved, not_pending)

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
