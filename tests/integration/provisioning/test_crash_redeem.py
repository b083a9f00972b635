"""Issue 17: a SIGKILL in the middle of a redemption storm loses no success and doubles none.

The real server (`imprint serve`) over a temporary SQLite file, 500 devices with codes. 32
threads enter the codes at once over real loopback sockets, each device from its own address
(127.1.x.y); every 10th device is also entered by a second client (127.2.x.y) at the same
moment, and every 40th client never reads its answer (a response lost on the way back). Once a
share of the devices got a 200 the server is SIGKILLed; each client's answer before the kill is
recorded. After a restart on the same file:

- 0 lost: every device whose client got a 200 is provisioned, with exactly the client secret
  that 200 carried;
- 0 double: no two clients got a 200 for one device, and no device has two `provision.success`
  audit entries;
- the store, the audit, the change feed, the API and the in-memory index agree on who is
  provisioned, and `PRAGMA integrity_check` says 'ok';
- every device without an answer then enters its code again: from the address it was redeemed
  from when its response was lost (an idempotent retry: new credentials, `provision.retry`
  audited), from its own when it was not redeemed (still valid: a first success). From another
  address a lost-response device's code is refused. Afterwards every device is provisioned
  exactly once, holding the credentials it got last.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.helpers.crash import storm_round

DEVICES = 500
TENANT = "storm"


@pytest.mark.timeout(240)
@pytest.mark.parametrize("kill_after", [0.3, 0.7])
def test_sigkill_during_redemption_storm_loses_and_doubles_nothing(
    tmp_path: Path, kill_after: float
) -> None:
    r = storm_round(tmp_path / "round", TENANT, DEVICES, kill_after=kill_after)
    print(
        f"\n{r.entries} entries for {r.devices} devices, {r.sent} sent before the kill: "
        f"{r.acked} acknowledged, {r.intact} intact after restart, {len(r.lost)} lost, "
        f"{len(r.double)} double; {r.response_lost} responses lost, {r.not_committed} "
        f"uncommitted, {r.unsent} unsent; after the retries {r.completed} provisioned "
        f"({r.retries} as retries); integrity {r.integrity!r} / {r.final_integrity!r}"
    )
    assert r.integrity == "ok" and r.final_integrity == "ok"
    assert r.lost == [], f"acknowledged but not provisioned with those credentials: {r.lost}"
    assert r.double == [], f"provisioned twice: {r.double}"
    assert r.unexpected == []
    assert r.inconsistent == []
    assert r.acked >= 1 and r.acked == r.intact
    # The kill came mid-storm: some devices had no answer, and the retry path was taken.
    assert r.response_lost >= 1
    assert r.not_committed + r.unsent >= 1
    assert r.other_source == 409
    assert r.final_problems == []
    assert r.completed == DEVICES
    assert r.crashes == 0 and r.tracebacks == 0
