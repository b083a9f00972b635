"""The rollout log: bounded error rings per tenant, locks that end with a new code or a state
change, and a state-count history of at most one point a second, only when counts move."""

from __future__ import annotations

from server.registry.index import MacIndex
from server.registry.model import DeviceState, DeviceView
from server.registry.rollout import MAX_ERRORS, MAX_HISTORY, RolloutLog

A, S, IN = DeviceState.AWAITING_ACTIVATION, DeviceState.AWAITING_SIGN_IN, DeviceState.SIGNED_IN


def view(i: int, tenant: str = "a", state: DeviceState = A, location: str = "L1") -> DeviceView:
    return DeviceView(f"02:00:5e:00:00:{i:02x}", tenant, tenant.upper(), state, location)


def test_errors_are_kept_per_tenant_newest_first_and_bounded() -> None:
    log, counted = RolloutLog(), []
    log.on_error.append(lambda tenant, reason: counted.append((tenant, reason)))
    for i in range(MAX_ERRORS + 7):
        log.record("a", f"mac{i}", "L1", "code_entry", "wrong_code", "That code is not right", i)
    log.record("b", "macb", "", "sign_in", "access_denied", "denied", 100.0)
    errors = log.errors("a")
    assert len(errors) == MAX_ERRORS and errors[0].mac == f"mac{MAX_ERRORS + 6}"
    assert [e.reason for e in log.errors("b")] == ["access_denied"]
    assert log.error_counts[("a", "wrong_code")] == MAX_ERRORS + 7  # counted, not just kept
    assert len(counted) == MAX_ERRORS + 8
    first = log.errors("b")[0].as_dict()
    assert first["label"] == "sign-in denied by the user" and first["when"] == "1970-01-01 00:01:40"
    log.forget("a")
    assert log.errors("a") == [] and log.errors("b")


def test_a_lock_ends_with_a_new_code_or_when_the_device_leaves_awaiting_activation() -> None:
    index = MacIndex([view(1), view(2), view(3)])
    log = RolloutLog()
    for v in (view(1), view(2), view(3)):
        log.record("a", v.mac, v.location, "code_entry", "locked", "locked", 0.0, locked=True)
    assert log.locked("a", index) == 3 and log.locked("b", index) == 0
    log.unlock("a", [view(1).mac])
    index[view(2).mac] = view(2, state=S)  # provisioned after all (a new code, entered)
    index.pop(view(3).mac)
    assert log.locked("a", index) == 0


def test_history_has_a_point_when_counts_change_at_most_one_a_second() -> None:
    index, log = MacIndex([view(1), view(2, tenant="b")]), RolloutLog()
    log.sample(index, ["a", "b"], 10.0)
    log.sample(index, ["a", "b"], 20.0)  # nothing changed: no point
    index[view(1).mac] = view(1, state=S)
    log.sample(index, ["a"], 20.5)
    index[view(1).mac] = view(1, state=IN)
    log.sample(index, ["a"], 20.9)  # changed, but within the second of the last point
    log.sample(index, ["a"], 21.6)
    assert log.history("a") == [(10.0, (1, 0, 0)), (20.5, (0, 1, 0)), (21.6, (0, 0, 1))]
    assert log.history("a", since=20.5) == [(21.6, (0, 0, 1))]
    assert log.history("b") == [(10.0, (1, 0, 0))]
    for i in range(MAX_HISTORY + 5):
        index[view(1).mac] = view(1, state=(A, S)[i % 2])
        log.sample(index, ["a"], 100.0 + i)
    assert len(log.history("a")) == MAX_HISTORY


def test_the_summary_has_counts_locations_and_errors_of_the_tenant_only() -> None:
    index = MacIndex(
        [view(1, location="Floor 2"), view(2, state=IN, location="floor 1"), view(3, "b")]
    )
    log = RolloutLog()
    log.record("b", view(3).mac, "L1", "code_entry", "expired_code", "expired", 1.0)
    data = log.summary(index, "a", 5.0)
    assert data["counts"] == {"awaiting_activation": 1, "awaiting_sign_in": 0, "signed_in": 1}
    assert data["total"] == 2 and data["errors"] == [] and data["errors_total"] == 0
    assert [(r["location"], r["total"]) for r in data["locations"]] == [
        ("floor 1", 1),
        ("Floor 2", 1),
    ]
    assert data["history"] == [
        {"at": 5.0, "counts": {"awaiting_activation": 1, "awaiting_sign_in": 0, "signed_in": 1}}
    ]
