"""Logging in human or JSON form; `extra=` fields of a record become JSON keys (never codes or secrets).

Records are written off the event loop: the root logger's one handler is a `QueueHandler` that
only queues the record (its message already merged with its arguments), and a `QueueListener`
thread formats and writes it. A record is built only when its level is enabled, so callers on a
hot path check `isEnabledFor` before building costly arguments. When the writer falls behind
(a blocked stderr) the queue is bounded: later records are dropped and counted, not held.
"""

from __future__ import annotations

import atexit
import copy
import json
import logging
import logging.handlers
import queue
import sys
import time
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any

_STD = set(logging.LogRecord("", 0, "", 0, "", None, None).__dict__) | {"message", "asctime"}
# Records waiting for the writer thread; past this many, new ones are dropped (and counted).
QUEUE_SIZE = 10_000


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, object] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for k, v in record.__dict__.items():
            if k not in _STD and not k.startswith("_"):
                out[k] = (
                    v if isinstance(v, str | int | float | bool | None | list | dict) else str(v)
                )
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        elif record.exc_text:  # already rendered where it was logged (see _QueueHandler)
            out["exc"] = record.exc_text
        return json.dumps(out, separators=(",", ":"))


class _QueueHandler(logging.handlers.QueueHandler):
    """Queue a copy of the record: message merged, traceback rendered, nothing else formatted.

    The stock `prepare` formats the whole line in the caller's thread and folds the traceback
    into the message; this leaves the formatting (and the JSON `exc` key) to the writer.
    """

    def __init__(self, q: queue.Queue[logging.LogRecord]) -> None:
        super().__init__(q)
        self.dropped = 0

    def prepare(self, record: logging.LogRecord) -> logging.LogRecord:
        record = copy.copy(record)
        record.msg = record.getMessage()
        record.args = None
        if record.exc_info:
            if not record.exc_text:
                record.exc_text = logging.Formatter().formatException(record.exc_info)
            record.exc_info = None  # a traceback holds frames: do not ship it to the thread
        return record

    def enqueue(self, record: logging.LogRecord) -> None:
        try:
            self.queue.put_nowait(record)
        except queue.Full:
            self.dropped += 1


_listener: logging.handlers.QueueListener | None = None


def stop_logging() -> None:
    """Write every queued record and stop the writer thread (at exit, or before reconfiguring)."""
    global _listener
    listener, _listener = _listener, None
    if listener is not None:
        listener.stop()


atexit.register(stop_logging)


def setup_logging(level: str = "INFO", fmt: str = "human") -> None:
    """Route every record through a new queue and writer thread (at start, and on SIGHUP).

    The new queue takes records before the old writer stops, so none falls between the two;
    the new writer starts once the old one has written what was queued to it (in the old
    format), so the two never write to stderr at once."""
    global _listener
    previous = _listener
    handler = logging.StreamHandler(sys.stderr)
    if fmt == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)-7s %(name)s: %(message)s"))
    q: queue.Queue[logging.LogRecord] = queue.Queue(QUEUE_SIZE)
    listener = logging.handlers.QueueListener(q, handler, respect_handler_level=False)
    root = logging.getLogger()
    root.handlers[:] = [_QueueHandler(q)]
    root.setLevel(level)
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
    if previous is not None:
        previous.stop()
    listener.start()
    _listener = listener


def summary_line(tally: Mapping[tuple[str, str], int]) -> tuple[str, dict[str, int]]:
    """The summary's text and its `decisions` field: total first, then each (decision, reason)
    by count, largest first (pure)."""
    items = sorted(tally.items(), key=lambda kv: (-kv[1], kv[0]))
    counts = {f"{d} {r}": n for (d, r), n in items}
    parts = ", ".join(f"{k} {n}" for k, n in counts.items())
    return f"{sum(tally.values())} datagrams: {parts}", counts


class RateLimitedLog:
    """Lines a flood could repeat, let through at a bounded rate per key.

    Each key (a reason such as "first-sighting"; keep the set of keys small and fixed, never a
    MAC or an address) has a bucket of `burst` lines that refills one line per `every` seconds.
    A line past the bucket is not built, only counted; the next line let through for that key
    says how many were held back since the previous one, so the log never hides that a flood
    happened. `clock` is injectable for tests."""

    def __init__(
        self,
        logger: logging.Logger,
        *,
        every: float,
        burst: int = 1,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if every <= 0 or burst < 1:
            raise ValueError("every must be positive and burst at least 1")
        self.logger = logger
        self.every = every
        self.burst = burst
        self._clock = clock
        self._buckets: dict[str, tuple[float, float]] = {}  # key -> (tokens, when)
        self._held: dict[str, int] = {}

    def held(self, key: str) -> int:
        """Lines of `key` held back since the last one logged."""
        return self._held.get(key, 0)

    def log(self, level: int, key: str, msg: str, *args: object, **kwargs: Any) -> bool:
        """Log `msg % args` at `level` unless `key`'s bucket is empty; True if it was logged."""
        if not self.logger.isEnabledFor(level):
            return False
        now = self._clock()
        tokens, then = self._buckets.get(key, (float(self.burst), now))
        tokens = min(float(self.burst), tokens + (now - then) / self.every)
        if tokens < 1.0:
            self._buckets[key] = (tokens, now)
            self._held[key] = self._held.get(key, 0) + 1
            return False
        self._buckets[key] = (tokens - 1.0, now)
        held = self._held.pop(key, 0)
        if held:
            msg = f"{msg} (and {held} more like this not logged: over {self.burst} per {self.every:g} s)"
        self.logger.log(level, msg, *args, **kwargs)
        return True

    def info(self, key: str, msg: str, *args: object, **kwargs: Any) -> bool:
        return self.log(logging.INFO, key, msg, *args, **kwargs)

    def warning(self, key: str, msg: str, *args: object, **kwargs: Any) -> bool:
        return self.log(logging.WARNING, key, msg, *args, **kwargs)
