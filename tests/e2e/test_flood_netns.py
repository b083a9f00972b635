"""Issue 17: floods of malformed and oversized DHCP and mDNS packets against the running server.

The CI-sized run of bench/reliability/flood.py (tests/helpers/flood.py): the real `imprint serve`
at its shipped defaults in a namespace, an attacker host sending the hostile mix at 2,000
datagrams a second, and valid DHCP and mDNS clients beside it. The valid traffic must still be
answered, `/healthz` must answer every time, the server must live and log no traceback, and each
kind of hostile packet must be dropped for its own counted reason. The loop-stall and latency
figures are the bench's to report; this test asserts none of them.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.helpers.flood import Flood, FloodLab
from tests.helpers.netns import require_root_netns
from tests.helpers.reliability import VALID_ANSWERED_MIN_PCT, ProbeResult

pytestmark = pytest.mark.netns

RATE = 2000.0
SECONDS = 5.0


@pytest.fixture(scope="module")
def flood_lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FloodLab]:
    require_root_netns()
    with FloodLab(Path(tmp_path_factory.mktemp("flood"))) as lab:
        yield lab


def _check_survived(result: ProbeResult, lab: FloodLab) -> None:
    shown = f"{result.as_json()}\nlog tail:\n{lab.server.log()[-3000:]}"
    assert result.crashes == 0, shown
    assert result.tracebacks == 0, shown
    assert result.sent >= RATE * SECONDS * 0.99, shown
    pct = result.valid_answered_pct
    assert pct is not None and pct >= VALID_ANSWERED_MIN_PCT, shown
    assert result.extra["healthz_misses"] == 0, shown


def _counted(result: ProbeResult, metric: str, reason: str) -> int:
    key = f"{metric}{{reason={reason}}}"
    return int(result.extra.get("server_counters", {}).get(key, 0))


def test_dhcp_flood_of_oversized_and_malformed_datagrams(flood_lab: FloodLab) -> None:
    result = flood_lab.run(Flood("dhcp", RATE, SECONDS))
    _check_survived(result, flood_lab)
    dropped = "imprint_dhcp_packets_dropped_total"
    # Every 65 KB datagram that reached the socket was refused on its size, undecoded.
    kinds = result.extra["kinds"]
    for reason in ("DHCP_TOO_LARGE", "DHCP_TRUNCATED", "DHCP_OPTION_OVERRUN", "IMP_UNREGISTERED"):
        assert _counted(result, dropped, reason) > 0, (reason, result.as_json())
    assert kinds["oversized"] > 0
    # The unregistered flood is not one log line per packet (26 MB per 200,000 before).
    assert result.extra["log_bytes"] < 64 * 1024, result.extra["log_bytes"]


def test_mdns_flood_of_pointer_chains_and_label_bombs(flood_lab: FloodLab) -> None:
    result = flood_lab.run(Flood("mdns", RATE, SECONDS))
    _check_survived(result, flood_lab)
    dropped = "imprint_mdns_packets_dropped_total"
    # The attacker's first datagrams are decoded and refused; past its budget none is decoded.
    assert _counted(result, dropped, "MDNS_SOURCE_FLOOD") > 0, result.as_json()
    assert _counted(result, dropped, "MDNS_POINTER_LOOP") > 0, result.as_json()
