"""SIGHUP: read the config file again and apply what can change while the server runs.

Two halves: `plan_reload` is pure (which keys changed, which of them apply live, and the
settings the server holds afterwards); `reload_config` applies a plan through the services'
public setters (`DhcpService.set_profiles`, the registry's code policy, the provisioning rate
limiter) and logs what it did. An invalid file changes nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from aiohttp import web

from server.config import ConfigError, Settings, load_settings
from server.core.logs import setup_logging
from server.dhcp.profiles import ProfileTable
from server.dhcp.service import DhcpService
from server.registry.service import Registry
from server.web.keys import SERVICES, NotReady

log = logging.getLogger("imprint")

# Keys SIGHUP applies to the running server; any other change is reported as needing a restart.
RELOADABLE = frozenset(
    {
        "dhcp.profiles",
        "dhcp.builtin_profiles",
        "log.level",
        "log.format",
        "codes.ttl_hours",
        "codes.max_attempts",
        "provision.rate_per_source",
        "provision.burst_per_source",
        "provision.require_dhcp_match",
    }
)
PROFILE_KEYS = frozenset({"dhcp.profiles", "dhcp.builtin_profiles"})
LOG_KEYS = frozenset({"log.level", "log.format"})


def _flatten(data: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in data.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            out.update(_flatten(value, name + "."))
        else:
            out[name] = value
    return out


def changed_keys(old: Settings, new: Settings) -> list[str]:
    """Dotted names of the settings that differ (a list-valued key counts as one)."""
    a, b = _flatten(old.model_dump(mode="json")), _flatten(new.model_dump(mode="json"))
    return sorted(k for k in a.keys() | b.keys() if a.get(k) != b.get(k))


@dataclass(frozen=True, slots=True)
class ReloadPlan:
    """What a reload from `old` to `new` does (pure: nothing applied yet)."""

    live: tuple[str, ...]  # changed keys applied now
    restart: tuple[str, ...]  # changed keys that only apply after a restart
    settings: Settings  # what the server holds afterwards: `old` with the live keys of `new`

    @property
    def profiles_changed(self) -> bool:
        return bool(PROFILE_KEYS.intersection(self.live))

    @property
    def logging_changed(self) -> bool:
        return bool(LOG_KEYS.intersection(self.live))


def plan_reload(old: Settings, new: Settings) -> ReloadPlan:
    """Which changed keys apply live and which wait for a restart, and the resulting settings."""
    changed = changed_keys(old, new)
    live = tuple(k for k in changed if k in RELOADABLE)
    restart = tuple(k for k in changed if k not in RELOADABLE and k != "config_file")
    settings = old.model_copy(
        update={
            "log": new.log,
            "provision": new.provision,
            "codes": old.codes.model_copy(
                update={"ttl_hours": new.codes.ttl_hours, "max_attempts": new.codes.max_attempts}
            ),
            "dhcp": old.dhcp.model_copy(
                update={
                    "profiles": new.dhcp.profiles,
                    "builtin_profiles": new.dhcp.builtin_profiles,
                }
            ),
        }
    )
    return ReloadPlan(live, restart, settings)


def _set_code_policy(registry: Registry, settings: Settings) -> None:
    # The provisioning service reads its policy at each code issued or entered.
    registry.provisioning.set_policy(
        ttl=timedelta(hours=settings.codes.ttl_hours), max_attempts=settings.codes.max_attempts
    )


async def reload_config(app: web.Application) -> list[str]:
    """Re-read the config file and apply what can change live; returns the keys applied.

    An invalid file changes nothing (the running configuration stays, the error is logged).
    """
    svc = app[SERVICES]
    old = svc.settings
    source = str(old.config_file) if old.config_file else "the environment"
    try:
        new = await asyncio.to_thread(load_settings, old.config_file)
    except ConfigError as e:
        log.error("SIGHUP: configuration not reloaded, the running one stays: %s", e)
        return []
    plan = plan_reload(old, new)
    tables: list[tuple[DhcpService, ProfileTable]] = []
    if plan.profiles_changed:
        links = {link.name: link for link in new.dhcp.served_links()}
        try:  # built before anything changes: a profile that cannot render changes nothing
            for dhcp in svc.dhcp:
                link = links.get(dhcp.link) if dhcp.link else None
                _, table = new.dhcp.build(dhcp.config.endpoint, dhcp.config.server_ip, link)
                tables.append((dhcp, table))
        except ConfigError as e:
            log.error("SIGHUP: configuration not reloaded, the running one stays: %s", e)
            return []
    if plan.logging_changed:
        setup_logging(new.log.level, new.log.format)
    for dhcp, table in tables:
        dhcp.set_profiles(table)  # between datagrams: the packet path runs on this loop
    # Without an open store there is no registry yet; it is built from svc.settings when it is.
    with contextlib.suppress(NotReady):
        _set_code_policy(svc.registry, plan.settings)
    limiter = svc.provision_limiter
    limiter.rate = new.provision.rate_per_source
    limiter.burst = new.provision.burst_per_source
    svc.settings = plan.settings
    live, restart = list(plan.live), list(plan.restart)
    log.info(
        "SIGHUP: reloaded %s: %s",
        source,
        f"applied {', '.join(live)}" if live else "nothing to apply",
        extra={"applied": live, "restart_needed": restart},
    )
    if restart:
        log.warning(
            "SIGHUP: changed in %s but only applied after a restart: %s",
            source,
            ", ".join(restart),
            extra={"restart_needed": restart},
        )
    return live


def install_sighup(app: web.Application) -> None:
    """SIGHUP reloads the config (one reload at a time; a second SIGHUP waits its turn)."""
    loop = asyncio.get_running_loop()
    lock = asyncio.Lock()
    tasks: set[asyncio.Task[None]] = set()

    async def run() -> None:
        async with lock:
            try:
                await reload_config(app)
            except Exception:
                log.exception("SIGHUP: reload failed; the running configuration stays")

    def on_hup() -> None:
        task = loop.create_task(run(), name="sighup-reload")
        tasks.add(task)
        task.add_done_callback(tasks.discard)

    loop.add_signal_handler(signal.SIGHUP, on_hup)
