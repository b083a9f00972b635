"""The decision of a technician's code entry, as a table of refusal rules. Pure: no I/O, no clock.

`redeem` reads what the store holds for the device (`CodeState`), the keyed digest of what was
typed, the time and the policy, and returns a `Verdict`: the outcome, the technician's message,
and what the service must write (one more failed attempt, or the code consumed). The service
(server/provisioning/service.py) does the writing, in one transaction with the audit entry.

The rules are tried in order; the first that applies refuses. None applying is a success.
`is_current` is the same rule set read the other way: whether a stored code would still work,
which decides what the admin UI and the export show.
"""

from __future__ import annotations

import hmac
from collections.abc import Callable
from dataclasses import dataclass

from server.provisioning.outcome import Outcome
from server.registry.model import DeviceState, parse_iso


@dataclass(frozen=True, slots=True)
class CodeState:
    """What the store holds for a registered device when a code is entered."""

    state: DeviceState
    digest: bytes | None  # None: no code issued
    expires_at: str | None  # ISO 8601 UTC "…Z" strings compare in time order
    used_at: str | None
    failed_attempts: int = 0
    provisioned_from: str | None = None  # the address the code was redeemed from


@dataclass(frozen=True, slots=True)
class Policy:
    max_attempts: int
    require_dhcp_match: bool = False
    # A device whose response was lost may enter the same code again, from the same address, in
    # this window after its success, and gets new credentials (see `_retry`); 0 turns it off.
    retry_window_s: int = 300


@dataclass(frozen=True, slots=True)
class Entry:
    """One code entry: who typed it where, and the keyed digest of the (normalised) code."""

    mac: str
    digest: bytes
    source: str
    dhcp_address: str | None = None  # where DHCP last saw this MAC, if it did


@dataclass(frozen=True, slots=True)
class Verdict:
    outcome: Outcome
    message: str
    attempts_left: int | None = None
    count_attempt: bool = False  # the store adds one to the code's failed attempts
    warning: str | None = None  # success, but recorded in the audit entry
    retry: bool = False  # a repeat of a success: new credentials, the code is already used

    @property
    def consumes_code(self) -> bool:
        return self.outcome is Outcome.SUCCESS and not self.retry


@dataclass(frozen=True, slots=True)
class _Case:
    row: CodeState | None
    entry: Entry
    now: str
    policy: Policy

    # Each property is only read by rules after the ones that make it meaningful.
    @property
    def failed(self) -> int:
        return self.row.failed_attempts if self.row else 0

    @property
    def left_after_miss(self) -> int:
        return self.policy.max_attempts - self.failed - 1

    @property
    def matches(self) -> bool:
        digest = self.row.digest if self.row else None
        return digest is not None and hmac.compare_digest(digest, self.entry.digest)

    @property
    def address_differs(self) -> bool:
        return self.entry.dhcp_address is not None and self.entry.dhcp_address != self.entry.source


@dataclass(frozen=True, slots=True)
class Rule:
    outcome: Outcome
    applies: Callable[[_Case], bool]
    message: Callable[[_Case], str]
    attempts_left: Callable[[_Case], int | None] = lambda c: None
    count_attempt: bool = False


def _plural(n: int) -> str:
    return f"{n} attempt{'s' if n != 1 else ''}"


REFUSALS: tuple[Rule, ...] = (
    Rule(
        Outcome.NOT_REGISTERED,
        lambda c: c.row is None,
        lambda c: (
            f"This device ({c.entry.mac}) is not registered with Imprint. Ask your admin to "
            "register its MAC address, then enter the code again."
        ),
    ),
    Rule(
        Outcome.ALREADY_PROVISIONED,
        lambda c: c.row is not None and c.row.state is not DeviceState.AWAITING_ACTIVATION,
        lambda c: (
            "This device is already provisioned. If it must be provisioned again, ask your "
            "admin to reset it and issue a new code."
        ),
    ),
    Rule(
        Outcome.NO_CODE,
        lambda c: c.row is not None and (c.row.digest is None or c.row.used_at is not None),
        lambda c: (
            "No verification code has been issued for this device. Ask your admin to generate one."
        ),
    ),
    Rule(
        Outcome.LOCKED,
        lambda c: c.failed >= c.policy.max_attempts,
        lambda c: (
            "This device is locked after too many wrong codes. Ask your admin to issue a new code."
        ),
        attempts_left=lambda c: 0,
    ),
    Rule(
        Outcome.EXPIRED_CODE,
        lambda c: c.row is not None and (c.row.expires_at or "") <= c.now,
        lambda c: (
            f"This code expired at {c.row.expires_at if c.row else ''} UTC. Ask your admin for "
            "a new code."
        ),
    ),
    Rule(  # the miss that uses up the last attempt
        Outcome.LOCKED,
        lambda c: not c.matches and c.left_after_miss <= 0,
        lambda c: (
            "That code is not right, and this device is now locked. Ask your admin to issue a "
            "new code."
        ),
        attempts_left=lambda c: 0,
        count_attempt=True,
    ),
    Rule(
        Outcome.WRONG_CODE,
        lambda c: not c.matches,
        lambda c: (
            f"That code is not right for this device. Check the code listed for {c.entry.mac}; "
            f"{_plural(c.left_after_miss)} left."
        ),
        attempts_left=lambda c: c.left_after_miss,
        count_attempt=True,
    ),
    Rule(
        Outcome.ADDRESS_MISMATCH,
        lambda c: c.address_differs and c.policy.require_dhcp_match,
        lambda c: (
            "This request does not come from the address the network gave this device. Enter "
            "the code on the device itself."
        ),
    ),
)


# A repeat closer than this to the success is a concurrent entry of the same code (it loses), not
# a client retrying after its response was lost (which waits out its own timeout first).
RETRY_MIN_GAP_S = 3


def _retry(case: _Case) -> bool:
    """The same code, from the address it was redeemed from, by a device still awaiting sign-in,
    between RETRY_MIN_GAP_S and the policy's window after the success: the device never got its
    credentials (a response lost to a crash or the network), so it may have new ones. The
    earlier ones are replaced, so no one holds two."""
    row = case.row
    window = case.policy.retry_window_s
    if (
        window <= 0
        or row is None
        or row.state is not DeviceState.AWAITING_SIGN_IN
        or row.used_at is None
        or row.provisioned_from != case.entry.source
        or not case.matches
    ):
        return False
    gap = (parse_iso(case.now) - parse_iso(row.used_at)).total_seconds()
    return RETRY_MIN_GAP_S <= gap <= window


def redeem(row: CodeState | None, entry: Entry, now: str, policy: Policy) -> Verdict:
    """Decide one code entry (`row` is None when the MAC is not registered)."""
    case = _Case(row, entry, now, policy)
    if _retry(case):
        return Verdict(Outcome.SUCCESS, "", retry=True)
    for rule in REFUSALS:
        if rule.applies(case):
            return Verdict(
                rule.outcome,
                rule.message(case),
                rule.attempts_left(case),
                count_attempt=rule.count_attempt,
            )
    warning = None
    if case.address_differs:
        warning = f"code entered from {entry.source}, but DHCP saw this MAC at {entry.dhcp_address}"
    return Verdict(Outcome.SUCCESS, "", warning=warning)


# The answer when the code was consumed between the read and the write (a concurrent entry won).
ALREADY_USED = Verdict(Outcome.NO_CODE, "This code has already been used.")


def is_current(
    state: DeviceState | str,
    expires_at: str | None,
    used_at: str | None,
    failed_attempts: int | None,
    now: str,
    max_attempts: int,
) -> bool:
    """Whether a stored code would still be accepted now: the device awaits activation, and the
    code is issued, unused, unexpired and not locked (the rules above, before the code itself)."""
    return (
        state == DeviceState.AWAITING_ACTIVATION
        and expires_at is not None
        and used_at is None
        and expires_at > now
        and (failed_attempts or 0) < max_attempts
    )


__all__ = ["CodeState", "Policy", "Entry", "Verdict", "REFUSALS", "redeem", "is_current"]
