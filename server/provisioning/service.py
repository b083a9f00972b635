"""Verification codes with their side effects: issuing, redeeming, and the one unsealing path.

The decisions are pure (server/provisioning/redeem.py); this service reads the store, applies
the verdict's writes and its audit entry in one transaction, and updates the registry's MAC
index afterwards. It is the only place that unseals a stored code: the admin UI and the export
both ask `current_codes`.
"""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import Awaitable, Callable, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, replace
from datetime import datetime, timedelta

from server.core.mac import MacError, normalize_mac
from server.provisioning import store as codes
from server.provisioning.codes import (
    CodeFormatError,
    CodeVault,
    format_code,
    generate_code,
    normalize_code,
)
from server.provisioning.outcome import Outcome
from server.provisioning.redeem import ALREADY_USED, Entry, Policy, Verdict, is_current, redeem
from server.registry.model import DeviceEvent, DeviceState, Tenant, iso, token_digest
from server.registry.store import set_state
from server.store.base import Invalid, Store, Tx

_CHUNK = 5000


@dataclass(frozen=True, slots=True)
class CodePolicy:
    """[codes] of the configuration: how long a code lives and how many misses lock it."""

    ttl: timedelta = timedelta(hours=24)
    max_attempts: int = 5


@dataclass(frozen=True, slots=True)
class IssuedCode:
    mac: str
    code: str  # formatted XXXX-XXXX
    expires_at: str


@dataclass(frozen=True, slots=True)
class CurrentCode:
    """A code that would be accepted now, as the admin sees it."""

    code: str  # formatted XXXX-XXXX
    expires_at: str


@dataclass(frozen=True, slots=True)
class Redemption:
    """The outcome of a technician's code entry."""

    outcome: Outcome
    message: str
    mac: str
    attempts_left: int | None = None
    tenant: Tenant | None = None
    device_id: str | None = None
    client_secret: str | None = None
    warning: str | None = None

    @property
    def error(self) -> Outcome | None:
        """The error code POST /provision answers with; None on success."""
        return None if self.outcome is Outcome.SUCCESS else self.outcome


class ProvisioningService:
    """Issue and redeem codes; `transaction` and `changed` come from the registry, whose MAC
    index must learn of a provisioned device."""

    def __init__(
        self,
        store: Store,
        vault: CodeVault,
        *,
        policy: CodePolicy,
        clock: Callable[[], datetime],
        transaction: Callable[[str], AbstractAsyncContextManager[Tx]],
        changed: Callable[[Sequence[str]], Awaitable[None]],
        quick_transaction: Callable[[str], AbstractAsyncContextManager[Tx]] | None = None,
    ) -> None:
        self.store = store
        self.vault = vault
        self.policy = policy
        self.clock = clock
        self._transaction = transaction
        # Code entry's one short transaction runs inline (no thread hop per statement).
        self._quick_transaction = quick_transaction or transaction
        self._changed = changed

    def set_policy(self, *, ttl: timedelta | None = None, max_attempts: int | None = None) -> None:
        """Apply a reloaded [codes] section; holds from the next code issued or entered."""
        self.policy = replace(
            self.policy,
            ttl=self.policy.ttl if ttl is None else ttl,
            max_attempts=self.policy.max_attempts if max_attempts is None else max_attempts,
        )

    # ---- issuing ---------------------------------------------------------------------------------

    async def issue(
        self,
        actor: str,
        tenant_id: str,
        targets: Sequence[str],
        progress: Callable[[int, int], None] | None = None,
    ) -> list[IssuedCode]:
        """A fresh code per MAC (revoking any previous one), valid for the policy's ttl.

        The caller has checked that each MAC is a device of `tenant_id` awaiting activation;
        `progress(stored, total)` is called after each chunk is written.
        """
        now_dt = self.clock()
        now = iso(now_dt)
        expires = iso(now_dt + self.policy.ttl)
        # CPU work off the event loop: the DHCP/mDNS responders share it.
        rows, issued = await asyncio.to_thread(self._mint, targets, now, expires)
        async with self._transaction(now) as tx:
            for start in range(0, len(rows), _CHUNK):
                chunk = rows[start : start + _CHUNK]
                await codes.insert_codes(tx, chunk)
                await tx.audit_many(
                    (actor, tenant_id, "code.generate", r.mac, None, {"expires_at": expires})
                    for r in chunk
                )
                if progress:
                    progress(min(start + _CHUNK, len(rows)), len(rows))
        return issued

    def _mint(
        self, targets: Sequence[str], now: str, expires: str
    ) -> tuple[list[codes.NewCode], list[IssuedCode]]:
        rows: list[codes.NewCode] = []
        issued: list[IssuedCode] = []
        for mac in targets:
            code = generate_code()
            rows.append(
                codes.NewCode(
                    mac, self.vault.digest(mac, code), self.vault.seal(mac, code), now, expires
                )
            )
            issued.append(IssuedCode(mac, format_code(code), expires))
        return rows, issued

    # ---- the one unsealing path ------------------------------------------------------------------

    async def current_codes(
        self, tenant_id: str, macs: Sequence[str] | None = None
    ) -> dict[str, CurrentCode]:
        """mac -> the code that would be accepted now, for `tenant_id`'s devices (only `macs`
        when given); devices without such a code are absent."""
        rows = await codes.sealed_codes(self.store, tenant_id, macs)
        now = iso(self.clock())
        max_attempts = self.policy.max_attempts

        def unseal() -> dict[str, CurrentCode]:
            return {
                r.mac: CurrentCode(format_code(self.vault.unseal(r.mac, r.sealed)), r.expires_at)
                for r in rows
                if is_current(
                    r.state, r.expires_at, r.used_at, r.failed_attempts, now, max_attempts
                )
            }

        return await asyncio.to_thread(unseal)

    # ---- redeeming (the technician's code entry) ------------------------------------------------

    async def redeem(
        self,
        mac: str,
        code: str,
        source: str,
        *,
        dhcp_address: str | None = None,
        require_dhcp_match: bool = False,
        retry_window_s: int = 300,
    ) -> Redemption:
        """Check `code` for `mac` and bind the device to its tenant: exactly one success per code.

        Raises Invalid for a malformed MAC or code (not counted as an attempt).
        """
        try:
            mac = normalize_mac(mac)
        except MacError as e:
            raise Invalid(str(e), [{"field": "mac", "value": mac, "message": str(e)}]) from e
        try:
            entered = normalize_code(code)
        except CodeFormatError as e:
            raise Invalid(str(e), [{"field": "code", "message": str(e)}]) from e
        entry = Entry(mac, self.vault.digest(mac, entered), source, dhcp_address)
        policy = Policy(self.policy.max_attempts, require_dhcp_match, retry_window_s)
        now = iso(self.clock())
        actor = f"device:{mac}@{source}"
        secret = secrets.token_urlsafe(32)
        async with self._quick_transaction(now) as tx:
            row = await codes.redeem_row(tx, mac)
            verdict = redeem(row.code if row else None, entry, now, policy)
            if row is None:
                return Redemption(verdict.outcome, verdict.message, mac)
            if verdict.count_attempt:
                await codes.count_failure(tx, mac)
            if verdict.consumes_code and not await codes.consume(tx, mac, policy.max_attempts):
                verdict = ALREADY_USED
            if verdict.retry and not await codes.replace_secret(tx, mac, token_digest(secret)):
                verdict = ALREADY_USED
            if verdict.outcome is not Outcome.SUCCESS:
                await self._audit_refusal(tx, actor, row.tenant_id, mac, source, verdict)
                return Redemption(verdict.outcome, verdict.message, mac, verdict.attempts_left)
            if verdict.retry:
                # The first success's response never reached the device: the same code from
                # the same address got new credentials above, and the unseen ones stop working.
                await tx.audit(
                    actor,
                    row.tenant_id,
                    "provision.retry",
                    mac,
                    None,
                    {"state": DeviceState.AWAITING_SIGN_IN.value, "source": source},
                )
            else:
                await set_state(
                    tx,
                    mac,
                    DeviceEvent.PROVISION,
                    also={
                        "client_secret_hash": token_digest(secret),
                        "provisioned_at": now,
                        "provisioned_from": source,
                    },
                )
                await tx.audit(
                    actor,
                    row.tenant_id,
                    "provision.success",
                    mac,
                    {"state": DeviceState.AWAITING_ACTIVATION.value},
                    {
                        "state": DeviceState.AWAITING_SIGN_IN.value,
                        "source": source,
                        **({"warning": verdict.warning} if verdict.warning else {}),
                    },
                )
        if not verdict.retry:  # a retry changes no state the MAC index holds
            await self._changed([mac])
        return Redemption(
            Outcome.SUCCESS,
            f"Provisioned to {row.tenant_name}.",
            mac,
            tenant=Tenant(row.tenant_id, row.tenant_name, ""),
            device_id=row.device_id,
            client_secret=secret,
            warning=verdict.warning,
        )

    @staticmethod
    async def _audit_refusal(
        tx: Tx, actor: str, tenant_id: str, mac: str, source: str, verdict: Verdict
    ) -> None:
        await tx.audit(
            actor,
            tenant_id,
            "provision.failed",
            mac,
            None,
            {
                "reason": verdict.outcome.value,
                "source": source,
                "attempts_left": verdict.attempts_left,
            },
        )


__all__ = ["ProvisioningService", "CodePolicy", "IssuedCode", "CurrentCode", "Redemption"]
