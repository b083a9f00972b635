"""The in-memory index of registered MACs, and how many devices each tenant has in each state
(and in each location and state, for the rollout view).

The DHCP and mDNS hot paths read it as a dict (`mac in index`, `index.get(mac)`). The registry
service keeps it in step with the store (its own commits, and other processes' changes picked
up by polling), and every change goes through `__setitem__`, `pop` or `clear`, which keep the
counts exact with it: the admin UI's tab counts and a device list's total then cost a dict read,
not a walk over a million index entries in SQLite. Pure: no I/O.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from typing import Any

from server.registry.model import DeviceView


class MacIndex(dict[str, DeviceView]):
    """MAC -> DeviceView, with `state_counts` and `location_counts` per tenant kept as entries
    come and go, and a per-tenant change number (`changes`) that moves with every one."""

    def __init__(self, views: Iterable[DeviceView] = ()) -> None:
        super().__init__()
        self._counts: Counter[tuple[str, str]] = Counter()
        # tenant -> (location, state) -> devices: nested, so one tenant's table is read
        # without a walk over every other tenant's locations.
        self._locations: dict[str, Counter[tuple[str, str]]] = {}
        self._changes: Counter[str] = Counter()
        for v in views:
            self[v.mac] = v

    def __setitem__(self, mac: str, view: DeviceView) -> None:
        old = dict.get(self, mac)
        if old is not None:
            self._forget(old)
        dict.__setitem__(self, mac, view)
        self._counts[(view.tenant_id, view.state.value)] += 1
        locations = self._locations.get(view.tenant_id)
        if locations is None:
            locations = self._locations[view.tenant_id] = Counter()
        locations[(view.location, view.state.value)] += 1
        self._changes[view.tenant_id] += 1

    def __delitem__(self, mac: str) -> None:
        self._forget(dict.pop(self, mac))

    def pop(self, mac: str, *default: Any) -> Any:
        if mac in self:
            view = dict.pop(self, mac)
            self._forget(view)
            return view
        if default:
            return default[0]
        raise KeyError(mac)

    def clear(self) -> None:
        for tid in self._locations:  # the tenants that had entries
            self._changes[tid] += 1
        dict.clear(self)
        self._counts.clear()
        self._locations.clear()

    def _refuse(self, *_: Any, **__: Any) -> Any:
        raise TypeError("MacIndex changes one entry at a time: index[mac] = view, or pop(mac)")

    # Bulk mutators would bypass the counts.
    update = setdefault = popitem = __ior__ = _refuse

    def _forget(self, view: DeviceView) -> None:
        key = (view.tenant_id, view.state.value)
        self._counts[key] -= 1
        if self._counts[key] <= 0:
            del self._counts[key]
        locations = self._locations[view.tenant_id]
        where = (view.location, view.state.value)
        locations[where] -= 1
        if locations[where] <= 0:
            del locations[where]
            if not locations:
                del self._locations[view.tenant_id]
        self._changes[view.tenant_id] += 1

    def state_counts(self, tenant_id: str) -> dict[str, int]:
        """The tenant's devices by state value (states with none are absent)."""
        return {state: n for (tid, state), n in self._counts.items() if tid == tenant_id}

    def location_counts(self, tenant_id: str) -> dict[tuple[str, str], int]:
        """The tenant's devices by (location, state value); pairs with none are absent."""
        return dict(self._locations.get(tenant_id, ()))

    def all_state_counts(self) -> dict[tuple[str, str], int]:
        """(tenant id, state value) -> devices, for every tenant (the metrics' gauges)."""
        return dict(self._counts)

    def changes(self, tenant_id: str) -> int:
        """A number that moves whenever one of the tenant's entries is set or removed."""
        return self._changes.get(tenant_id, 0)

    def tenant_counts(self) -> dict[str, int]:
        """Devices per tenant id."""
        out: Counter[str] = Counter()
        for (tid, _), n in self._counts.items():
            out[tid] += n
        return dict(out)

    def count(self, tenant_id: str, state: str | None = None) -> int:
        if state is not None:
            return self._counts.get((tenant_id, state), 0)
        return sum(n for (tid, _), n in self._counts.items() if tid == tenant_id)
