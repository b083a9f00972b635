"""Fixtures for end-to-end tests in network namespaces (see tests/helpers/netns.py)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.helpers.netns import (
    Topology,
    netns_unavailable_reason,
    require_root_netns,
    sweep_stale_namespaces,
)


@pytest.fixture(scope="session", autouse=True)
def _sweep_stale_netns() -> None:
    """Once per session, remove `imp-*` namespaces left by killed runs (dead owners only)."""
    if netns_unavailable_reason() is None:
        sweep_stale_namespaces()


@pytest.fixture
def netns_topology() -> Iterator[Topology]:
    """Server (198.18.77.1) and two hosts (.11, .12) on one bridge; skips without root."""
    require_root_netns()
    with Topology(hosts=2) as topology:
        yield topology


@pytest.fixture
def netns_relay_topology() -> Iterator[Topology]:
    """Server, two LAN hosts, and one remote host (198.18.78.11) behind a routing relay."""
    require_root_netns()
    with Topology(hosts=2, remote_hosts=1) as topology:
        yield topology
