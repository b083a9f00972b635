"""Admin accounts, sessions and CSRF tokens for the web UI.

Admins have the same roles as API tokens (operator: every tenant; admin: one tenant) and act
through the same `Principal`, so the registry's tenant scoping applies to the UI unchanged.

Sessions are server-side rows (not signed cookies) so that logout, the idle timeout and
disabling an admin take effect at once: the cookie holds 256 random bits and the store holds
only their SHA-256. Each session carries a synchroniser CSRF token that every state-changing
form must echo (OWASP CSRF Prevention Cheat Sheet); the login form, which has no session yet,
uses a double-submit cookie instead.

Pure helpers (validation, expiry, comparisons) take `now`; `AdminAuth` is the thin service
that adds the clock, randomness, argon2id and the store.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
import re
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

from server.admin.store import AdminRow, AdminStore
from server.registry.model import iso, parse_iso
from server.registry.service import Principal, Role
from server.store.base import Invalid

log = logging.getLogger("imprint.admin")

MIN_PASSWORD = 10
MAX_PASSWORD = 1024  # argon2 would hash more, but nobody types it and it costs CPU per attempt
_USERNAME = re.compile(r"^[a-z0-9](?:[a-z0-9._@-]{0,62}[a-z0-9])?$")


@dataclass(frozen=True, slots=True)
class SessionPolicy:
    """How long a session lives: idle timeout, absolute limit, and how often to record activity."""

    idle_timeout: timedelta = timedelta(minutes=30)
    max_age: timedelta = timedelta(hours=12)
    # Writing last_seen on every request would make every page view a write; a minute of slack
    # on a 30-minute idle timeout is not worth that.
    touch_after: timedelta = timedelta(seconds=60)


def validate_username(value: str) -> str:
    """Lowercased username, or Invalid saying what is allowed."""
    name = value.strip().lower() if isinstance(value, str) else ""
    if not _USERNAME.match(name):
        raise Invalid(
            f"username {value!r} must be 1-64 characters of a-z, 0-9, '.', '_', '@' and '-', "
            "starting and ending with a letter or digit"
        )
    return name


def validate_password(value: str) -> str:
    if not isinstance(value, str) or not MIN_PASSWORD <= len(value) <= MAX_PASSWORD:
        raise Invalid(f"the password must be {MIN_PASSWORD} to {MAX_PASSWORD} characters long")
    if value != value.strip():
        # A pasted password with a trailing newline would never match what the admin types.
        raise Invalid("the password must not start or end with spaces or line breaks")
    return value


def validate_role(role: str, tenant_id: str | None) -> Role:
    """The role, checked against the tenant rule that api_tokens also follow."""
    if role == "operator":
        if tenant_id:
            raise Invalid("an operator covers all tenants: do not give a tenant")
        return "operator"
    if role == "admin":
        if not tenant_id:
            raise Invalid("an admin belongs to one tenant: give --tenant")
        return "admin"
    raise Invalid("role must be 'operator' or 'admin'")


def session_problem(
    created_at: datetime, last_seen_at: datetime, now: datetime, policy: SessionPolicy
) -> str | None:
    """Why a session may no longer be used ("idle" or "expired"), or None while it is valid."""
    if now - last_seen_at >= policy.idle_timeout:
        return "idle"
    if now - created_at >= policy.max_age:
        return "expired"
    return None


def needs_touch(last_seen_at: datetime, now: datetime, policy: SessionPolicy) -> bool:
    return now - last_seen_at >= policy.touch_after


def tokens_match(expected: str, given: str | None) -> bool:
    """Constant-time comparison of a CSRF token; an empty or missing token never matches."""
    if not expected or not given:
        return False
    return hmac.compare_digest(expected.encode(), given.encode())


def session_digest(token: str) -> bytes:
    # 256 random bits: a plain SHA-256 is a safe stored form (as for API tokens).
    return hashlib.sha256(token.encode()).digest()


@dataclass(frozen=True, slots=True)
class AdminSession:
    """The signed-in admin behind a request."""

    username: str
    role: Role
    tenant_id: str | None
    csrf_token: str
    created_at: str
    last_seen_at: str

    @property
    def principal(self) -> Principal:
        return Principal(actor=f"admin:{self.username}", role=self.role, tenant_id=self.tenant_id)


@dataclass(frozen=True, slots=True)
class Lookup:
    """A cookie's session, or why there is none ("missing", "unknown", "idle", "expired")."""

    session: AdminSession | None
    problem: str | None = None


class AdminAuth:
    """Admin accounts, password checks and sessions, over `AdminStore`."""

    def __init__(
        self,
        store: AdminStore,
        *,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        policy: SessionPolicy | None = None,
        hasher: PasswordHasher | None = None,
    ) -> None:
        self.store = store
        self.clock = clock
        self.policy = policy or SessionPolicy()
        self.hasher = hasher or PasswordHasher()  # argon2id, RFC 9106 low-memory parameters
        self._dummy_hash: str | None = None

    # ---- accounts ------------------------------------------------------------------------

    async def create_admin(
        self, actor: str, username: str, password: str, role: str, tenant_id: str | None
    ) -> AdminRow:
        name = validate_username(username)
        checked_role = validate_role(role, tenant_id)
        validate_password(password)
        digest = await asyncio.to_thread(self.hasher.hash, password)
        return await self.store.insert_admin(
            iso(self.clock()), actor, name, digest, checked_role, tenant_id or None
        )

    async def set_disabled(self, actor: str, username: str, disabled: bool) -> None:
        await self.store.set_disabled(
            iso(self.clock()), actor, validate_username(username), disabled
        )

    # ---- sessions ------------------------------------------------------------------------

    async def login(
        self, username: str, password: str, source: str
    ) -> tuple[str, AdminSession] | None:
        """Check the password; on success start a session: (cookie token, session)."""
        try:
            name = validate_username(username)
        except Invalid:
            name = ""
        row = await self.store.get_admin(name) if name else None
        if row is None or row.disabled:
            # Spend the same time as a real check, so response times do not reveal which
            # usernames exist.
            await asyncio.to_thread(self._verify, await self._dummy(), password)
            return None
        if not await asyncio.to_thread(self._verify, row.password_hash, password):
            return None
        now_dt = self.clock()
        now = iso(now_dt)
        if self.hasher.check_needs_rehash(row.password_hash):
            fresh = await asyncio.to_thread(self.hasher.hash, password)
            await self.store.set_password_hash(now, row.username, fresh)
        token = secrets.token_urlsafe(32)
        csrf = secrets.token_urlsafe(32)
        await self.store.create_session(
            now,
            session_digest(token),
            row,
            csrf,
            source,
            idle_before=iso(now_dt - self.policy.idle_timeout),
            created_before=iso(now_dt - self.policy.max_age),
        )
        role: Role = "operator" if row.role == "operator" else "admin"
        return token, AdminSession(row.username, role, row.tenant_id, csrf, now, now)

    async def lookup(self, token: str | None) -> Lookup:
        """The live session for a cookie value; records activity at most once a minute."""
        if not token:
            return Lookup(None, "missing")
        digest = session_digest(token)
        row = await self.store.session(digest)
        if row is None or row.disabled:
            return Lookup(None, "unknown")
        now_dt = self.clock()
        last_seen = parse_iso(row.last_seen_at)
        problem = session_problem(parse_iso(row.created_at), last_seen, now_dt, self.policy)
        if problem is not None:
            await self.store.delete_session(iso(now_dt), digest, None)
            return Lookup(None, problem)
        if needs_touch(last_seen, now_dt, self.policy):
            await self.store.touch_session(iso(now_dt), digest)
        role: Role = "operator" if row.role == "operator" else "admin"
        return Lookup(
            AdminSession(
                row.username, role, row.tenant_id, row.csrf_token, row.created_at, row.last_seen_at
            )
        )

    async def logout(self, token: str, session: AdminSession) -> None:
        await self.store.delete_session(
            iso(self.clock()), session_digest(token), (session.username, session.tenant_id)
        )

    # ---- password checks -------------------------------------------------------------------

    def _verify(self, password_hash: str, password: str) -> bool:
        try:
            return self.hasher.verify(password_hash, password)
        except (VerifyMismatchError, VerificationError, InvalidHashError):
            return False

    async def _dummy(self) -> str:
        if self._dummy_hash is None:
            self._dummy_hash = await asyncio.to_thread(self.hasher.hash, secrets.token_urlsafe(16))
        return self._dummy_hash
