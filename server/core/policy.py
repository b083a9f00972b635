"""The one place that answers "is this MAC registered, and what does it get?".

DHCP, mDNS and HTTP all ask through `decide`, which returns a typed Decision with a stable reason
code (used in logs, metrics and tests) and never a bare bool. Pure: the registry index is passed in.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum

from server.registry.model import DeviceView


class Reason(StrEnum):
    """Stable reason codes. Never rename one: logs, metrics and dashboards depend on them."""

    REGISTERED = "IMP_REGISTERED"  # registered MAC: answer
    UNREGISTERED = "IMP_UNREGISTERED"  # not in the registry: silent drop
    MAC_UNKNOWN = "IMP_MAC_UNKNOWN"  # the querier's MAC could not be learned: silent drop


@dataclass(frozen=True, slots=True)
class Decision:
    answer: bool
    reason: Reason
    device: DeviceView | None = None


_UNREGISTERED = Decision(answer=False, reason=Reason.UNREGISTERED)


def decide(index: Mapping[str, DeviceView], mac: str) -> Decision:
    """Decide whether the device with normalised `mac` is answered on the LAN."""
    device = index.get(mac)
    if device is None:
        return _UNREGISTERED
    return Decision(answer=True, reason=Reason.REGISTERED, device=device)
