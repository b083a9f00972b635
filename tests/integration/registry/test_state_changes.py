"""The guarded state writes over a real SQLite file: a device or grant moves only as its
transition table allows, whatever state the row is in when the write runs."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from server.oauth.model import GrantEvent, GrantStatus, GrantTransitionError
from server.oauth.store import OAuthStore, revoke_device_tokens
from server.provisioning.codes import CodeVault
from server.registry.model import TRANSITIONS, DeviceEvent, DeviceState, iso
from server.registry.service import Principal, Registry
from server.registry.store import NewDevice, insert_devices, set_state
from server.store.base import Conflict
from server.store.sqlite import SqliteStore

OP = Principal("test", "operator")
MAC = "02:00:5e:00:00:01"
T0 = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)


@pytest.fixture
async def registry(tmp_path: Path) -> AsyncIterator[Registry]:
    store = SqliteStore(tmp_path / "imprint.db")
    await store.open()
    reg = Registry(store, CodeVault(os.urandom(32)), clock=lambda: T0)
    await reg.create_tenant(OP, "contoso", "Contoso")
    await reg.add_device(OP, "contoso", MAC, "Room 1")
    try:
        yield reg
    finally:
        await store.close()


async def _force(reg: Registry, state: DeviceState) -> None:
    async with reg.store.transaction(reg.now()) as tx:
        await tx.execute("UPDATE devices SET state = ? WHERE mac = ?", (state, MAC))


async def _state(reg: Registry) -> DeviceState:
    return (await reg.get_device(OP, "contoso", MAC)).state


@pytest.mark.parametrize("start", list(DeviceState))
@pytest.mark.parametrize("event", list(DeviceEvent))
async def test_set_state_moves_a_device_only_as_the_table_allows(
    registry: Registry, start: DeviceState, event: DeviceEvent
) -> None:
    await _force(registry, start)
    async with registry.store.transaction(registry.now()) as tx:
        moved = await set_state(tx, MAC, event)
    expected = TRANSITIONS[start].get(event)
    assert moved == (expected is not None)
    assert await _state(registry) == (expected or start)


async def test_set_state_checks_the_tenant_and_the_columns(registry: Registry) -> None:
    async with registry.store.transaction(registry.now()) as tx:
        assert not await set_state(tx, MAC, DeviceEvent.PROVISION, tenant_id="fabrikam")
        with pytest.raises(ValueError, match="cannot set \\['location'\\]"):
            await set_state(tx, MAC, DeviceEvent.PROVISION, also={"location": "x"})
        assert await set_state(
            tx, MAC, DeviceEvent.PROVISION, tenant_id="contoso", also={"provisioned_from": "h"}
        )
    assert await _state(registry) is DeviceState.AWAITING_SIGN_IN


async def _grant(reg: Registry, oauth: OAuthStore, grant_id: str) -> None:
    async with reg.store.transaction(reg.now()) as tx:
        await oauth.start_grant(
            tx,
            grant_id=grant_id,
            device_code_hash=grant_id.encode(),
            user_code_digest=b"u" + grant_id.encode(),
            user_code_sealed=b"s",
            mac=MAC,
            tenant_id="contoso",
            client_id="dev",
            scope="",
            expires_at=iso(T0 + timedelta(minutes=15)),
            interval_s=5,
        )


async def _status(oauth: OAuthStore, grant_id: str) -> GrantStatus | None:
    row = await oauth.grant(grant_id)
    return None if row is None else row.status


async def test_a_grant_is_issued_once_and_never_leaves_a_final_status(registry: Registry) -> None:
    oauth = OAuthStore(registry.store)
    await _grant(registry, oauth, "g1")
    assert await _status(oauth, "g1") is GrantStatus.PENDING
    async with registry.store.transaction(registry.now()) as tx:
        assert not await oauth.mark_issued(tx, "g1")  # not approved yet
        assert await oauth.decide(tx, "g1", GrantEvent.APPROVE, None)
        assert not await oauth.decide(tx, "g1", GrantEvent.DENY, None)  # answered already
        assert await oauth.mark_issued(tx, "g1")
        assert not await oauth.mark_issued(tx, "g1")  # exactly once
        with pytest.raises(GrantTransitionError):
            await oauth.decide(tx, "g1", GrantEvent.ISSUE, None)
    assert await _status(oauth, "g1") is GrantStatus.ISSUED
    async with registry.store.transaction(registry.now()) as tx:
        assert await revoke_device_tokens(tx, MAC) == 1
        assert await revoke_device_tokens(tx, MAC) == 0  # revoked is final
        assert not await oauth.decide(tx, "g1", GrantEvent.APPROVE, None)
    assert await _status(oauth, "g1") is GrantStatus.REVOKED


async def test_a_denied_grant_is_not_revoked_and_a_new_request_replaces_it(
    registry: Registry,
) -> None:
    oauth = OAuthStore(registry.store)
    await _grant(registry, oauth, "g1")
    async with registry.store.transaction(registry.now()) as tx:
        assert await oauth.decide(tx, "g1", GrantEvent.DENY, None)
        assert await revoke_device_tokens(tx, MAC) == 0
    assert await _status(oauth, "g1") is GrantStatus.DENIED
    await _grant(registry, oauth, "g2")
    assert await _status(oauth, "g1") is None
    assert await _status(oauth, "g2") is GrantStatus.PENDING


async def test_the_store_answers_a_broken_uniqueness_rule_with_conflict(
    registry: Registry,
) -> None:
    with pytest.raises(Conflict, match="tenant 'contoso' already exists"):
        await registry.create_tenant(OP, "contoso", "Again")
    with pytest.raises(Conflict, match=f"MAC {MAC} is already registered"):
        await registry.add_device(OP, "contoso", MAC, "Room 2")
    other = "02:00:5e:00:00:02"
    # A batch clashing on its last row stores none of its rows, and says so.
    with pytest.raises(Conflict, match="import aborted, nothing stored"):
        async with registry.store.transaction(registry.now()) as tx:
            await insert_devices(
                tx, "contoso", [NewDevice(other, "dev_a", ""), NewDevice(MAC, "dev_b", "")]
            )
    assert await registry.store.existing_macs([other, MAC]) == {MAC: "contoso"}
    assert len(registry.index) == 1
