"""Process-local UI state, pure (callers pass `now`): flash messages, pending uploads,
and the small text helpers the templates use."""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from aiohttp import web

from server.core.ratelimit import FailureLimiter
from server.registry.service import ImportMode, ImportRow


@dataclass(frozen=True, slots=True)
class Flash:
    level: str  # "ok" | "error"
    text: str
    href: str = ""
    link: str = ""


class FlashBox:
    """One-shot messages shown on the page after a POST-redirect; bounded by session count."""

    def __init__(self, max_sessions: int = 1024) -> None:
        self.max_sessions = max_sessions
        self._box: OrderedDict[str, list[Flash]] = OrderedDict()

    def add(self, key: str, flash: Flash) -> None:
        self._box.setdefault(key, []).append(flash)
        self._box.move_to_end(key)
        while len(self._box) > self.max_sessions:
            self._box.popitem(last=False)

    def pop(self, key: str) -> list[Flash]:
        return self._box.pop(key, [])


@dataclass(frozen=True, slots=True)
class PendingUpload:
    id: str
    username: str
    tenant_id: str
    filename: str
    rows: tuple[ImportRow, ...]
    created: float
    mode: ImportMode = "create"


class PendingUploads:
    """Checked CSV uploads waiting for "Confirm import": bounded in count and age.

    Kept in memory between the preview and the confirmation so the file is parsed and checked
    once and the confirmation stores exactly what the preview showed.
    """

    def __init__(self, max_entries: int = 8, ttl_s: float = 900.0) -> None:
        self.max_entries = max_entries
        self.ttl_s = ttl_s
        self._items: OrderedDict[str, PendingUpload] = OrderedDict()

    def _expire(self, now: float) -> None:
        for key in [k for k, v in self._items.items() if now - v.created >= self.ttl_s]:
            del self._items[key]

    def put(self, upload: PendingUpload, now: float) -> None:
        """Keep `upload`; an earlier pending upload of the same admin and tenant is replaced."""
        self._expire(now)
        for key in [
            k
            for k, v in self._items.items()
            if v.username == upload.username and v.tenant_id == upload.tenant_id
        ]:
            del self._items[key]
        self._items[upload.id] = upload
        while len(self._items) > self.max_entries:
            self._items.popitem(last=False)

    def take(
        self, upload_id: str, username: str, tenant_id: str, now: float
    ) -> PendingUpload | None:
        """Remove and return the upload if it is this admin's, for this tenant, and not expired."""
        self._expire(now)
        item = self._items.get(upload_id)
        if item is None or item.username != username or item.tenant_id != tenant_id:
            return None
        del self._items[upload_id]
        return item

    def __len__(self) -> int:
        return len(self._items)


@dataclass
class UiState:
    flash: FlashBox = field(default_factory=FlashBox)
    uploads: PendingUploads = field(default_factory=PendingUploads)
    # Failed sign-ins: 10 in a burst per address then one every 10 s; 20 per username then one
    # every 30 s (the latter slows a spread-out guesser without locking the admin out for good).
    failures_by_source: FailureLimiter = field(default_factory=lambda: FailureLimiter(0.1, 10))
    failures_by_user: FailureLimiter = field(default_factory=lambda: FailureLimiter(1 / 30, 20))


UI = web.AppKey("imprint_admin_ui", UiState)


def safe_next(target: str | None) -> str:
    """A post-login destination inside the UI; anything else (other hosts, schemes) -> /ui."""
    if not target or any(ord(c) < 33 or ord(c) == 127 for c in target):
        return "/ui"  # control characters and spaces would end up in the Location header
    parts = urlsplit(target)
    if (
        parts.scheme
        or parts.netloc
        or "\\" in target
        or target.startswith("//")
        or not (parts.path == "/ui" or parts.path.startswith("/ui/"))
        or parts.path.startswith("/ui/login")
    ):
        return "/ui"
    return target


def page_count(total: int, size: int) -> int:
    return max(1, -(-total // size))


def size_text(n: int) -> str:
    """A byte count as people read it: 512 bytes, 64 KiB, 32 MiB."""
    for unit, size in (("MiB", 1 << 20), ("KiB", 1 << 10)):
        if n >= size:
            return f"{n / size:.3g} {unit}"
    return f"{n} bytes"


def when(value: str | None) -> str:
    """ISO 8601 UTC as people read it: 2026-11-27 12:00 UTC."""
    if not value:
        return ""
    return value.replace("T", " ")[:16] + " UTC"
