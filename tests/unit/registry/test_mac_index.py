"""The MAC index keeps its per-tenant counts by state and by location and state exact through
every kind of change, and moves a tenant's change number with each of them."""

from __future__ import annotations

from collections import Counter

import pytest
from hypothesis import given
from hypothesis import strategies as st

from server.registry.index import MacIndex
from server.registry.model import DeviceState, DeviceView

MACS = [f"02:00:5e:00:00:{i:02x}" for i in range(12)]
TENANTS = ["a", "b", "c"]
LOCATIONS = ["", "Floor 1", "Floor 2"]

ops = st.lists(
    st.one_of(
        st.tuples(
            st.just("set"),
            st.sampled_from(MACS),
            st.sampled_from(TENANTS),
            st.sampled_from(list(DeviceState)),
            st.sampled_from(LOCATIONS),
        ),
        st.tuples(st.just("pop"), st.sampled_from(MACS)),
        st.tuples(st.just("del"), st.sampled_from(MACS)),
        st.tuples(st.just("clear")),
    ),
    max_size=80,
)


def recount(index: MacIndex) -> Counter[tuple[str, str]]:
    return Counter((v.tenant_id, v.state.value) for v in index.values())


@given(ops)
def test_counts_match_the_entries_after_any_sequence_of_changes(seq: list[tuple]) -> None:
    index = MacIndex()
    for op in seq:
        before = {t: index.changes(t) for t in TENANTS}
        touched = {v.tenant_id for v in index.values()} if op[0] == "clear" else set()
        if op[0] in ("pop", "del") and op[1] in index:
            touched.add(index[op[1]].tenant_id)
        if op[0] == "set":
            _, mac, tenant, state, location = op
            if mac in index:
                touched.add(index[mac].tenant_id)
            touched.add(tenant)
            index[mac] = DeviceView(mac, tenant, tenant.upper(), state, location)
        elif op[0] == "pop":
            assert index.pop(op[1], None) is None or op[1] not in index
        elif op[0] == "del":
            if op[1] in index:
                del index[op[1]]
            else:
                with pytest.raises(KeyError):
                    del index[op[1]]
        else:
            index.clear()
        truth = recount(index)
        for tenant in TENANTS:
            assert (index.changes(tenant) != before[tenant]) == (tenant in touched)
            assert index.location_counts(tenant) == dict(
                Counter(
                    (v.location, v.state.value) for v in index.values() if v.tenant_id == tenant
                )
            )
            want = {s: n for (t, s), n in truth.items() if t == tenant}
            assert index.state_counts(tenant) == want
            assert index.count(tenant) == sum(want.values())
            for state in DeviceState:
                assert index.count(tenant, state.value) == truth[(tenant, state.value)]
        assert index.all_state_counts() == dict(truth)
        assert index.tenant_counts() == {
            t: n for t in TENANTS if (n := sum(v for (tt, _), v in truth.items() if tt == t))
        }


def test_a_state_change_moves_the_device_between_counts() -> None:
    mac = MACS[0]
    index = MacIndex([DeviceView(mac, "a", "A", DeviceState.AWAITING_ACTIVATION, "")])
    index[mac] = DeviceView(mac, "a", "A", DeviceState.AWAITING_SIGN_IN, "")
    assert index.state_counts("a") == {"awaiting_sign_in": 1} and index.count("a") == 1
    assert index.pop(mac).state is DeviceState.AWAITING_SIGN_IN and index.count("a") == 0
    with pytest.raises(KeyError):
        index.pop(mac)


def test_bulk_changes_that_would_skip_the_counts_are_refused() -> None:
    index = MacIndex()
    view = DeviceView(MACS[0], "a", "A", DeviceState.AWAITING_ACTIVATION, "")
    for call in (
        lambda: index.update({MACS[0]: view}),
        lambda: index.setdefault(MACS[0], view),
        lambda: index.popitem(),
    ):
        with pytest.raises(TypeError, match="one entry at a time"):
            call()
    assert len(index) == 0 and index.count("a") == 0
