#!/usr/bin/env python3
"""Live floods: hostile DHCP and mDNS packets against a running server, valid traffic beside them.

One network-namespace lab (tests/helpers/flood.py: the server at its shipped defaults, TLS on,
DHCP inform and mDNS on eth0; a DHCP client, three mDNS clients and an attacker) and, for each
probe, one flood from the attacker of `--rate` datagrams per second for `--seconds`:

- `dhcp`: to UDP 67, a mix of 65 KB datagrams of 21,600 option pieces (2 %), 1,500-octet
  datagrams of 418 pieces, option overload into garbage, mangled and cut INFORMs, random bytes
  and DISCOVERs from random unregistered MACs;
- `mdns`: to UDP 5353, unicast and to the group: pointer-chained questions filling 65 KB and
  9 KB, pointer loops, 250 known answers naming a 127-label name, 64 questions of 127 labels,
  cut and random messages, and well-formed browses from the unregistered attacker.

Beside each flood, valid DHCPINFORMs (200/s, bench/dhcp/inform_load.py) and legacy-unicast mDNS
browses (0.8/s from each of three registered hosts, within the per-source limit) are sent and
their answers counted, and `/healthz` is asked every 100 ms. The report per probe
(tests/helpers/reliability.py): hostile datagrams sent, valid sent and answered, worst
event-loop stall, /healthz p50, server RSS before and after, crashes and tracebacks, plus what
the server counted as dropped. Targets (issue 17): valid >= 99 %, stall <= 50 ms, /healthz p50
< 100 ms, 0 crashes, 0 tracebacks.

Needs root (namespaces). Never asserts. `--json`: one JSON object per probe per line.

    sudo .venv/bin/python bench/reliability/flood.py [--rate 5000] [--seconds 20] [--probes dhcp,mdns] [--json]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from tests.helpers.flood import Flood, run_floods  # noqa: E402
from tests.helpers.netns import netns_unavailable_reason  # noqa: E402
from tests.helpers.reliability import table  # noqa: E402

PROBES = ("dhcp", "mdns")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rate", type=float, default=5000.0, help="hostile datagrams per second")
    parser.add_argument("--seconds", type=float, default=20.0, help="length of each flood")
    parser.add_argument("--probes", default=",".join(PROBES), help=f"of {', '.join(PROBES)}")
    parser.add_argument("--json", action="store_true", help="one JSON object per probe per line")
    args = parser.parse_args(argv)
    probes = [p.strip() for p in args.probes.split(",") if p.strip()]
    if sorted(set(probes) - set(PROBES)) or args.rate <= 0 or not 0 < args.seconds <= 600:
        parser.error("probes are dhcp, mdns; --rate > 0; 0 < --seconds <= 600")
    why = netns_unavailable_reason()
    if why is not None:
        print(f"flood.py needs network namespaces: {why}", file=sys.stderr)
        return 2
    results = []
    with tempfile.TemporaryDirectory(prefix="imprint-flood-bench-") as tmp:
        floods = [Flood(p, args.rate, args.seconds) for p in probes]
        for result in run_floods(Path(tmp), floods):
            results.append(result)
            if args.json:
                print(json.dumps(result.as_json(), allow_nan=False), flush=True)
            else:
                print(f"{result.probe}: {json.dumps(result.extra)}", flush=True)
    if not args.json:
        print(table(results))
        for r in results:
            for miss in r.misses():
                print(f"{r.probe}: misses target: {miss}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
