"""Device authorization grants (RFC 8628): their statuses and the transition table.

Pure: no I/O. The store (server/oauth/store.py) changes a grant's status only through one guarded
UPDATE that reads this table, so a grant cannot skip a step or leave a final status.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum


class GrantStatus(StrEnum):
    PENDING = "pending"  # the device shows its user code; nobody has answered yet
    APPROVED = "approved"  # a user approved; the device's next poll gets tokens
    DENIED = "denied"  # a user denied (final)
    ISSUED = "issued"  # tokens were issued once: the device is signed in with this grant
    REVOKED = "revoked"  # signed out, reset, replaced or replayed (final)


@dataclass(frozen=True, slots=True)
class GrantRow:
    """One device authorization grant as stored (oauth/store.py reads and writes it)."""

    id: str
    mac: str
    tenant_id: str
    client_id: str
    scope: str
    status: GrantStatus
    username: str | None
    created_at: str
    expires_at: str
    interval_s: int
    last_poll_at: float | None
    user_code_sealed: bytes | None


class GrantEvent(StrEnum):
    APPROVE = "approve"
    DENY = "deny"
    ISSUE = "issue"  # the device's poll picks up its tokens, exactly once
    REVOKE = "revoke"


TRANSITIONS: Mapping[GrantStatus, Mapping[GrantEvent, GrantStatus]] = {
    GrantStatus.PENDING: {
        GrantEvent.APPROVE: GrantStatus.APPROVED,
        GrantEvent.DENY: GrantStatus.DENIED,
        GrantEvent.REVOKE: GrantStatus.REVOKED,
    },
    GrantStatus.APPROVED: {
        GrantEvent.ISSUE: GrantStatus.ISSUED,
        GrantEvent.REVOKE: GrantStatus.REVOKED,
    },
    GrantStatus.ISSUED: {GrantEvent.REVOKE: GrantStatus.REVOKED},
    GrantStatus.DENIED: {},
    GrantStatus.REVOKED: {},
}

# A user is signed in on the device through a grant in one of these (tokens issued or due).
SESSION: frozenset[GrantStatus] = frozenset({GrantStatus.APPROVED, GrantStatus.ISSUED})
# Finished without a session: a new request from the device may drop them.
ENDED: frozenset[GrantStatus] = frozenset({GrantStatus.DENIED, GrantStatus.REVOKED})


class GrantTransitionError(ValueError):
    """An event the table does not allow from the grant's status."""


def next_status(status: GrantStatus, event: GrantEvent) -> GrantStatus:
    try:
        return TRANSITIONS[status][event]
    except KeyError:
        raise GrantTransitionError(f"a {status.value} grant cannot {event.value}") from None


def sources(event: GrantEvent) -> frozenset[GrantStatus]:
    """The statuses from which `event` is allowed."""
    return frozenset(s for s, moves in TRANSITIONS.items() if event in moves)


def target(event: GrantEvent) -> GrantStatus:
    """Where `event` leads: one status per event."""
    (to,) = {moves[event] for moves in TRANSITIONS.values() if event in moves}
    return to


def is_final(status: GrantStatus) -> bool:
    return not TRANSITIONS[status]


for _event in GrantEvent:  # every event leads to one status: one guarded UPDATE applies it
    target(_event)

__all__ = [
    "GrantStatus",
    "GrantEvent",
    "TRANSITIONS",
    "SESSION",
    "ENDED",
    "GrantTransitionError",
    "next_status",
    "sources",
    "target",
    "is_final",
]
