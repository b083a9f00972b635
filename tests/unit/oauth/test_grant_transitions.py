"""The grant status table (RFC 8628 device flow), read directly and driven without I/O."""

from __future__ import annotations

import itertools

import pytest

from server.oauth.model import (
    ENDED,
    SESSION,
    TRANSITIONS,
    GrantEvent,
    GrantStatus,
    GrantTransitionError,
    is_final,
    next_status,
    sources,
    target,
)

G, E = GrantStatus, GrantEvent

EXPECTED = {
    (G.PENDING, E.APPROVE): G.APPROVED,
    (G.PENDING, E.DENY): G.DENIED,
    (G.PENDING, E.REVOKE): G.REVOKED,
    (G.APPROVED, E.ISSUE): G.ISSUED,
    (G.APPROVED, E.REVOKE): G.REVOKED,
    (G.ISSUED, E.REVOKE): G.REVOKED,
}


@pytest.mark.parametrize(("status", "event"), list(itertools.product(GrantStatus, GrantEvent)))
def test_every_pair_is_allowed_or_refused_as_the_table_says(
    status: GrantStatus, event: GrantEvent
) -> None:
    if (status, event) in EXPECTED:
        assert next_status(status, event) is EXPECTED[status, event]
        assert status in sources(event)
    else:
        with pytest.raises(GrantTransitionError, match=f"{status.value} grant cannot"):
            next_status(status, event)
        assert status not in sources(event)


def test_the_table_matches_the_database_check_and_has_one_target_per_event() -> None:
    # migrations/0001: CHECK (status IN ('pending', 'approved', 'denied', 'issued', 'revoked'))
    assert {s.value for s in GrantStatus} == {"pending", "approved", "denied", "issued", "revoked"}
    assert set(TRANSITIONS) == set(GrantStatus)
    for event in GrantEvent:
        assert {next_status(s, event) for s in sources(event)} == {target(event)}


def test_denied_and_revoked_are_final_and_a_session_can_be_revoked() -> None:
    assert {s for s in GrantStatus if is_final(s)} == ENDED == {G.DENIED, G.REVOKED}
    assert sources(E.REVOKE) >= SESSION
    assert sources(E.ISSUE) == {G.APPROVED}  # tokens only after approval, exactly once
    assert sources(E.APPROVE) == sources(E.DENY) == {G.PENDING}


def test_a_grant_reaches_a_final_status_in_at_most_three_steps() -> None:
    # From pending, every path ends in a final status: nothing cycles back to pending.
    def longest(s: GrantStatus) -> int:
        return 0 if is_final(s) else 1 + max(longest(n) for n in TRANSITIONS[s].values())

    assert longest(G.PENDING) == 3  # approve, issue, revoke
