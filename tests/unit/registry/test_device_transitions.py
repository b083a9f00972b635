"""The device lifecycle table, read directly and driven without I/O (as h11's test_state.py)."""

from __future__ import annotations

import itertools

import pytest

from server.registry.model import (
    TRANSITIONS,
    DeviceEvent,
    DeviceState,
    TransitionError,
    next_state,
    sources,
    target,
)

AA, ASI, SI = DeviceState.AWAITING_ACTIVATION, DeviceState.AWAITING_SIGN_IN, DeviceState.SIGNED_IN
E = DeviceEvent

# The lifecycle as the product describes it, written out once more by hand: the table must say
# exactly this, no more.
EXPECTED = {
    (AA, E.PROVISION): ASI,
    (AA, E.RESET): AA,
    (ASI, E.SIGN_IN): SI,
    (ASI, E.RESET): AA,
    (SI, E.SIGN_IN): SI,
    (SI, E.SIGN_OUT): ASI,
    (SI, E.RESET): AA,
}


@pytest.mark.parametrize(("state", "event"), list(itertools.product(DeviceState, DeviceEvent)))
def test_every_pair_is_allowed_or_refused_as_the_table_says(
    state: DeviceState, event: DeviceEvent
) -> None:
    if (state, event) in EXPECTED:
        assert next_state(state, event) is EXPECTED[state, event]
        assert TRANSITIONS[state][event] is EXPECTED[state, event]
        assert state in sources(event)
    else:
        with pytest.raises(TransitionError, match=f"{state.value} cannot {event.value}"):
            next_state(state, event)
        assert event not in TRANSITIONS[state]
        assert state not in sources(event)


def test_each_event_has_one_target_so_one_guarded_update_applies_it() -> None:
    for event in DeviceEvent:
        assert {next_state(s, event) for s in sources(event)} == {target(event)}
    assert target(E.PROVISION) is ASI and target(E.RESET) is AA


def test_every_state_is_in_the_table_and_reachable_from_registration() -> None:
    assert set(TRANSITIONS) == set(DeviceState)
    seen, todo = {AA}, [AA]
    while todo:
        for nxt in TRANSITIONS[todo.pop()].values():
            if nxt not in seen:
                seen.add(nxt)
                todo.append(nxt)
    assert seen == set(DeviceState)


def test_a_reset_returns_any_device_to_the_start() -> None:
    assert sources(E.RESET) == set(DeviceState)
    assert sources(E.SIGN_OUT) == {SI}  # an unprovisioned device is never "signed out"
    assert sources(E.PROVISION) == {AA}  # a code provisions a device once per reset
