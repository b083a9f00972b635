"""The pure code-entry decision: each refusal rule with values, and its properties with
hypothesis (one success per code, lock after N misses, attempts_left never rises, an expired
code never works, `is_current` agrees with `redeem`).

A property run replays a sequence of entries against one code, applying each verdict's writes
the way the service does (one more failed attempt; the code consumed and the device provisioned).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from server.provisioning.outcome import Outcome
from server.provisioning.redeem import (
    REFUSALS,
    CodeState,
    Entry,
    Policy,
    Verdict,
    is_current,
    redeem,
)
from server.registry.model import DeviceState, iso

MAC = "02:00:5e:00:00:01"
T0 = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)
NOW = iso(T0)
RIGHT = hashlib.sha256(b"right").digest()
WRONG = hashlib.sha256(b"wrong").digest()


def code(
    *,
    state: DeviceState = DeviceState.AWAITING_ACTIVATION,
    digest: bytes | None = RIGHT,
    expires: timedelta = timedelta(hours=1),
    used: bool = False,
    failed: int = 0,
) -> CodeState:
    return CodeState(state, digest, iso(T0 + expires), NOW if used else None, failed)


def entry(digest: bytes = RIGHT, source: str = "198.18.0.5", dhcp: str | None = None) -> Entry:
    return Entry(MAC, digest, source, dhcp)


POLICY = Policy(max_attempts=5)


# ---- each rule, by value ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("row", "typed", "outcome", "left", "counted"),
    [
        (None, RIGHT, Outcome.NOT_REGISTERED, None, False),
        (code(state=DeviceState.AWAITING_SIGN_IN), RIGHT, Outcome.ALREADY_PROVISIONED, None, False),
        (code(state=DeviceState.SIGNED_IN), WRONG, Outcome.ALREADY_PROVISIONED, None, False),
        (code(digest=None), RIGHT, Outcome.NO_CODE, None, False),
        (code(used=True), RIGHT, Outcome.NO_CODE, None, False),
        (code(failed=5), RIGHT, Outcome.LOCKED, 0, False),
        (code(failed=5, expires=-timedelta(hours=1)), RIGHT, Outcome.LOCKED, 0, False),
        (code(expires=timedelta(0)), RIGHT, Outcome.EXPIRED_CODE, None, False),
        (code(expires=-timedelta(seconds=1)), WRONG, Outcome.EXPIRED_CODE, None, False),
        (code(failed=4), WRONG, Outcome.LOCKED, 0, True),
        (code(failed=3), WRONG, Outcome.WRONG_CODE, 1, True),
        (code(), WRONG, Outcome.WRONG_CODE, 4, True),
        (code(failed=4), RIGHT, Outcome.SUCCESS, None, False),
    ],
    ids=lambda v: ("right" if v == RIGHT else "wrong") if isinstance(v, bytes) else None,
)
def test_each_rule_refuses_as_the_table_says(
    row: CodeState | None, typed: bytes, outcome: Outcome, left: int | None, counted: bool
) -> None:
    verdict = redeem(row, entry(typed), NOW, POLICY)
    assert (verdict.outcome, verdict.attempts_left, verdict.count_attempt) == (
        outcome,
        left,
        counted,
    )
    assert verdict.consumes_code == (outcome is Outcome.SUCCESS)


def test_messages_tell_the_technician_what_to_do_next() -> None:
    assert MAC in redeem(None, entry(), NOW, POLICY).message
    wrong = redeem(code(failed=3), entry(WRONG), NOW, POLICY).message
    assert MAC in wrong and "1 attempt left" in wrong
    assert "2 attempts left" in redeem(code(failed=2), entry(WRONG), NOW, POLICY).message
    expired = redeem(code(expires=-timedelta(hours=2)), entry(), NOW, POLICY).message
    assert iso(T0 - timedelta(hours=2)) in expired and "new code" in expired
    assert "now locked" in redeem(code(failed=4), entry(WRONG), NOW, POLICY).message
    assert "locked after" in redeem(code(failed=5), entry(), NOW, POLICY).message


def test_the_dhcp_address_warns_or_refuses() -> None:
    elsewhere = entry(source="127.0.0.1", dhcp="198.18.77.12")
    warned = redeem(code(), elsewhere, NOW, POLICY)
    assert warned.outcome is Outcome.SUCCESS
    assert warned.warning == "code entered from 127.0.0.1, but DHCP saw this MAC at 198.18.77.12"
    strict = Policy(max_attempts=5, require_dhcp_match=True)
    assert redeem(code(), elsewhere, NOW, strict).outcome is Outcome.ADDRESS_MISMATCH
    # A wrong code is still a wrong code (counted) when the address differs too.
    assert redeem(code(), replace(elsewhere, digest=WRONG), NOW, strict).count_attempt
    same = entry(source="198.18.77.12", dhcp="198.18.77.12")
    assert redeem(code(), same, NOW, strict) == Verdict(Outcome.SUCCESS, "")
    assert redeem(code(), entry(dhcp=None), NOW, strict).warning is None


def test_outcomes_keep_the_wire_statuses_and_feed_the_limiter_with_guesses_only() -> None:
    assert {o.value: o.http_status for o in Outcome} == {
        "success": 200,
        "not_registered": 404,
        "already_provisioned": 409,
        "no_code": 409,
        "wrong_code": 401,
        "expired_code": 410,
        "locked": 423,
        "address_mismatch": 403,
    }
    assert {o for o in Outcome if o.counts_as_failure} == {Outcome.WRONG_CODE, Outcome.LOCKED}
    assert [o for o in Outcome if not o.is_refusal] == [Outcome.SUCCESS]
    # Every refusal outcome is reachable from the table, and only success is not in it.
    assert {r.outcome for r in REFUSALS} == set(Outcome) - {Outcome.SUCCESS}


# ---- properties --------------------------------------------------------------------------------


@dataclass
class Replay:
    """One code's life under a sequence of entries, with the service's writes applied."""

    row: CodeState
    successes: int = 0

    def enter(self, typed: bytes, now: str, policy: Policy) -> Verdict:
        verdict = redeem(self.row, entry(typed), now, policy)
        if verdict.count_attempt:
            self.row = replace(self.row, failed_attempts=self.row.failed_attempts + 1)
        if verdict.consumes_code:
            self.successes += 1
            self.row = replace(self.row, used_at=now, state=DeviceState.AWAITING_SIGN_IN)
        return verdict


entries = st.lists(
    st.tuples(st.booleans(), st.integers(min_value=0, max_value=3_600)),  # (right?, seconds later)
    max_size=25,
)
policies = st.builds(Policy, st.integers(min_value=1, max_value=10), st.booleans())
ttls = st.integers(min_value=0, max_value=20_000)


def _run(ttl_s: int, seq: list[tuple[bool, int]], policy: Policy) -> tuple[Replay, list[Verdict]]:
    replay = Replay(code(expires=timedelta(seconds=ttl_s)))
    at = T0
    verdicts = []
    for right, later in seq:
        at += timedelta(seconds=later)
        verdicts.append(replay.enter(RIGHT if right else WRONG, iso(at), policy))
    return replay, verdicts


@settings(max_examples=300, deadline=None)
@given(ttls, entries, policies)
def test_a_code_succeeds_at_most_once(ttl_s: int, seq: list[tuple[bool, int]], p: Policy) -> None:
    replay, verdicts = _run(ttl_s, seq, p)
    assert replay.successes <= 1
    wins = [i for i, v in enumerate(verdicts) if v.outcome is Outcome.SUCCESS]
    # After the success every entry is refused as already provisioned.
    if wins:
        assert all(v.outcome is Outcome.ALREADY_PROVISIONED for v in verdicts[wins[0] + 1 :])


@settings(max_examples=300, deadline=None)
@given(ttls, entries, policies)
def test_n_misses_lock_the_code_for_good(
    ttl_s: int, seq: list[tuple[bool, int]], p: Policy
) -> None:
    replay, verdicts = _run(ttl_s, seq, p)
    counted = 0
    for v in verdicts:
        if counted >= p.max_attempts:
            # Locked: even the right code, even before it expires, is refused and not counted.
            assert v.outcome is Outcome.LOCKED and v.attempts_left == 0 and not v.count_attempt
        counted += v.count_attempt
        if v.count_attempt and counted == p.max_attempts:
            assert v.outcome is Outcome.LOCKED  # the miss that uses up the last attempt says so
    assert replay.row.failed_attempts == counted <= p.max_attempts
    assert replay.successes == 0 or counted < p.max_attempts


@settings(max_examples=300, deadline=None)
@given(ttls, entries, policies)
def test_attempts_left_never_goes_up(ttl_s: int, seq: list[tuple[bool, int]], p: Policy) -> None:
    _, verdicts = _run(ttl_s, seq, p)
    shown = [v.attempts_left for v in verdicts if v.attempts_left is not None]
    assert all(a >= b for a, b in zip(shown, shown[1:], strict=False))
    assert all(0 <= a < p.max_attempts for a in shown)


@settings(max_examples=300, deadline=None)
@given(
    st.integers(min_value=0, max_value=10),
    st.integers(min_value=-86_400, max_value=86_400),
    st.booleans(),
    policies,
)
def test_an_expired_code_never_succeeds(
    failed: int, expires_s: int, right: bool, p: Policy
) -> None:
    row = code(expires=timedelta(seconds=expires_s), failed=failed)
    verdict = redeem(row, entry(RIGHT if right else WRONG), NOW, p)
    if expires_s <= 0:
        assert verdict.outcome is not Outcome.SUCCESS
        assert not verdict.count_attempt  # a dead code is not worth a guess either


@settings(max_examples=300, deadline=None)
@given(
    st.sampled_from(DeviceState),
    st.booleans(),
    st.booleans(),
    st.integers(min_value=-100, max_value=100),
    st.integers(min_value=0, max_value=12),
    st.integers(min_value=1, max_value=10),
)
def test_is_current_is_exactly_when_the_right_code_would_work(
    state: DeviceState, issued: bool, used: bool, expires_s: int, failed: int, n: int
) -> None:
    row = code(
        state=state,
        digest=RIGHT if issued else None,
        used=used,
        expires=timedelta(seconds=expires_s),
        failed=failed,
    )
    works = redeem(row, entry(RIGHT), NOW, Policy(n)).outcome is Outcome.SUCCESS
    stored_expiry = row.expires_at if issued else None
    assert is_current(row.state, stored_expiry, row.used_at, failed, NOW, n) == works
