"""Tenant user accounts devices are signed in as: argon2id passwords, create, disable, reset."""

from __future__ import annotations

import asyncio
import secrets
import sqlite3
from typing import Any

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

from server.oauth.rules import normalize_username, validate_display_name, validate_password
from server.oauth.store import OAuthStore, UserRow
from server.registry.model import DeviceState
from server.registry.service import Principal, Registry
from server.store.base import Conflict, Invalid, NotFound


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
