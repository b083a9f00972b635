"""The one place that picks the store: SQLite at [store] path, or PostgreSQL at [store] url."""

from __future__ import annotations

from server.config import StoreSettings
from server.store.base import Store


def make_store(settings: StoreSettings) -> Store:
    """The configured store, not yet open (asyncpg is imported only for PostgreSQL)."""
    if settings.url is not None:
        from server.store.postgres import PgStore

        return PgStore(settings.url, settings.pool_size, settings.busy_timeout_ms)
    from server.store.sqlite import SqliteStore

    return SqliteStore(settings.path, settings.busy_timeout_ms)
