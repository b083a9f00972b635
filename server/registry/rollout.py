"""What a tenant's rollout looks like now and lately: the figures of the admin UI's rollout view.

The counts by state and by location come from the MAC index (server/registry/index.py), which
keeps them exact as devices change, so a view costs dict reads, not a scan. This module keeps
the rest, bounded per tenant: the last errors with their reasons (code entry refused, sign-in
failed), the devices locked after too many wrong codes, and a history of the state counts (one
sample a second at most, and only when they changed) for the chart. Pure: the time is passed in.
"""

from __future__ import annotations

from collections import Counter, deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from server.registry.index import MacIndex
from server.registry.model import DeviceState

MAX_ERRORS = 50  # the last errors kept per tenant
MAX_HISTORY = 900  # samples kept per tenant: 15 minutes at one a second
MAX_LOCKED = 100_000  # locked MACs remembered per tenant (a bound, not a rule)
MAX_LOCATIONS = 200  # rows of the per-location table sent to the page
SAMPLE_EVERY_S = 1.0

STATES = tuple(s.value for s in DeviceState)
# Why code entry was refused (server/provisioning/outcome.py) or sign-in failed, for people.
REASONS: Mapping[str, str] = {
    "wrong_code": "wrong code",
    "locked": "locked after too many wrong codes",
    "expired_code": "code expired",
    "no_code": "no code issued",
    "already_provisioned": "already provisioned",
    "address_mismatch": "address differs from DHCP's",
    "not_registered": "not registered",
    "access_denied": "sign-in denied by the user",
    "expired_token": "sign-in code expired before approval",
}


@dataclass(frozen=True, slots=True)
class RolloutError:
    at: float  # epoch seconds
    mac: str
    location: str
    stage: str  # "code_entry" or "sign_in"
    reason: str  # a REASONS key
    message: str

    def as_dict(self) -> dict[str, Any]:
        return {
            "at": self.at,
            "when": datetime.fromtimestamp(self.at, UTC).strftime("%Y-%m-%d %H:%M:%S"),
            "mac": self.mac,
            "location": self.location,
            "stage": self.stage,
            "reason": self.reason,
            "label": REASONS.get(self.reason, self.reason.replace("_", " ")),
            "message": self.message,
        }


class RolloutLog:
    """Per tenant: the last errors, the locked devices and the state-count history."""

    def __init__(self) -> None:
        self._errors: dict[str, deque[RolloutError]] = {}
        self._locked: dict[str, set[str]] = {}
        self._history: dict[str, deque[tuple[float, tuple[int, ...]]]] = {}
        self._sampled: dict[str, tuple[float, int]] = {}  # tenant -> (at, index changes)
        self.error_counts: Counter[tuple[str, str]] = Counter()  # (tenant, reason)
        # Called with (tenant, reason) for every error (the metrics' counter).
        self.on_error: list[Callable[[str, str], None]] = []

    # ---- errors and locks ------------------------------------------------------------------

    def record(
        self,
        tenant_id: str,
        mac: str,
        location: str,
        stage: str,
        reason: str,
        message: str,
        at: float,
        *,
        locked: bool = False,
    ) -> None:
        """Note an error of one of the tenant's devices; `locked`: it is now locked."""
        ring = self._errors.get(tenant_id)
        if ring is None:
            ring = self._errors[tenant_id] = deque(maxlen=MAX_ERRORS)
        ring.append(RolloutError(at, mac, location, stage, reason, message[:300]))
        self.error_counts[(tenant_id, reason)] += 1
        for listener in self.on_error:
            listener(tenant_id, reason)
        if locked:
            macs = self._locked.setdefault(tenant_id, set())
            if len(macs) < MAX_LOCKED:
                macs.add(mac)

    def unlock(self, tenant_id: str, macs: Iterable[str]) -> None:
        """New codes were issued for `macs`: they are no longer locked."""
        locked = self._locked.get(tenant_id)
        if locked:
            locked.difference_update(macs)

    def locked(self, tenant_id: str, index: MacIndex) -> int:
        """The tenant's devices locked now: still its own and still awaiting activation."""
        macs = self._locked.get(tenant_id)
        if not macs:
            return 0
        gone = set()
        for mac in macs:
            view = index.get(mac)
            if (
                view is None
                or view.tenant_id != tenant_id
                or view.state is not DeviceState.AWAITING_ACTIVATION
            ):
                gone.add(mac)
        macs -= gone  # provisioned after a new code, reset, deleted: not locked any more
        return len(macs)

    def errors(self, tenant_id: str) -> list[RolloutError]:
        """The tenant's last errors, newest first."""
        return list(reversed(self._errors.get(tenant_id, ())))

    def forget(self, tenant_id: str) -> None:
        """The tenant was deleted."""
        for table in (self._errors, self._locked, self._history, self._sampled):
            table.pop(tenant_id, None)

    # ---- history ---------------------------------------------------------------------------

    def sample(self, index: MacIndex, tenant_ids: Iterable[str], now: float) -> None:
        """Add a history point for each tenant whose counts changed since its last point, at
        most one a second (the registry poller calls this; so does each view)."""
        for tid in tenant_ids:
            changes = index.changes(tid)
            last = self._sampled.get(tid)
            if last is not None and (last[1] == changes or now - last[0] < SAMPLE_EVERY_S):
                continue
            counts = index.state_counts(tid)
            history = self._history.get(tid)
            if history is None:
                history = self._history[tid] = deque(maxlen=MAX_HISTORY)
            history.append((now, tuple(counts.get(s, 0) for s in STATES)))
            self._sampled[tid] = (now, changes)

    def history(self, tenant_id: str, since: float = 0.0) -> list[tuple[float, tuple[int, ...]]]:
        return [p for p in self._history.get(tenant_id, ()) if p[0] > since]

    # ---- the view --------------------------------------------------------------------------

    def summary(
        self, index: MacIndex, tenant_id: str, now: float, since: float = 0.0
    ) -> dict[str, Any]:
        """What the rollout view shows, as JSON-ready data (history after `since` only)."""
        self.sample(index, (tenant_id,), now)
        counts = index.state_counts(tenant_id)
        by_location: dict[str, dict[str, int]] = {}
        for (location, state), n in index.location_counts(tenant_id).items():
            by_location.setdefault(location, dict.fromkeys(STATES, 0))[state] = n
        names = sorted(by_location, key=lambda loc: (loc == "", loc.casefold(), loc))
        return {
            "tenant": tenant_id,
            "at": now,
            "states": STATES,
            "counts": {s: counts.get(s, 0) for s in STATES},
            "total": sum(counts.values()),
            "locked": self.locked(tenant_id, index),
            "errors_total": sum(n for (tid, _), n in self.error_counts.items() if tid == tenant_id),
            "locations": [
                {
                    "location": loc,
                    "counts": by_location[loc],
                    "total": sum(by_location[loc].values()),
                }
                for loc in names[:MAX_LOCATIONS]
            ],
            "locations_total": len(names),
            "errors": [e.as_dict() for e in self.errors(tenant_id)],
            "history": [
                {"at": at, "counts": dict(zip(STATES, values, strict=True))}
                for at, values in self.history(tenant_id, since)
            ],
        }


__all__ = ["RolloutLog", "RolloutError", "REASONS", "STATES", "MAX_ERRORS", "MAX_HISTORY"]
