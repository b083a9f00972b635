"""`imprint-device` (and `python -m device_emulator`): the emulated device's command line.

The commands live in `device_emulator.cli`, which builds packets with scapy. scapy is not a
dependency of the server, so a plain `pip install imprint` has the console script but not scapy:
then this says in one line which extra to install instead of ending in an import traceback.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

# The emulator's exit code for a usage or environment error (`device_emulator.cli`).
EXIT_ENVIRONMENT = 1
NEEDS_SCAPY = "imprint-device needs scapy: pip install 'imprint[emulator]'"


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of `imprint-device`; returns the exit code."""
    try:
        from device_emulator import cli
    except ModuleNotFoundError as exc:
        if exc.name is None or exc.name.partition(".")[0] != "scapy":
            raise
        print(NEEDS_SCAPY, file=sys.stderr)
        return EXIT_ENVIRONMENT
    return cli.main(argv)


if __name__ == "__main__":
    sys.exit(main())
