"""Per-source token buckets with bounded memory. Pure: the caller passes `now` (seconds)."""

from __future__ import annotations

from collections import OrderedDict


class TokenBuckets:
    """One token bucket per key (a source address), at most `max_keys` of them (LRU eviction).

    Each key may spend `burst` tokens at once and regains `rate` tokens per second. An evicted
    key starts again with a full bucket: the cap bounds memory, not what a host can send, and a
    flood from many sources is bounded by the link's on-link addresses anyway.
    """

    def __init__(self, rate: float, burst: float, max_keys: int = 4096) -> None:
        if rate <= 0 or burst < 1 or max_keys < 1:
            raise ValueError("rate must be > 0, burst >= 1 and max_keys >= 1")
        self.rate = rate
        self.burst = burst
        self.max_keys = max_keys
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()  # key -> tokens, t

    def allow(self, key: str, now: float) -> bool:
        """Take one token for `key` at time `now`; False when its bucket is empty."""
        entry = self._buckets.get(key)
        if entry is None:
            tokens, stamp = self.burst, now
            if len(self._buckets) >= self.max_keys:
                self._buckets.popitem(last=False)
        else:
            last_tokens, last = entry
            # A clock that steps back must neither mint tokens nor take them away.
            stamp = max(now, last)
            tokens = min(self.burst, last_tokens + (stamp - last) * self.rate)
            self._buckets.move_to_end(key)
        allowed = tokens >= 1.0
        self._buckets[key] = (tokens - 1.0 if allowed else tokens, stamp)
        return allowed

    def __len__(self) -> int:
        return len(self._buckets)

    def has_tokens(self, key: str, now: float) -> bool:
        """Whether `key` could spend a token at `now`, without spending one."""
        entry = self._buckets.get(key)
        if entry is None:
            return True
        tokens, last = entry
        return min(self.burst, tokens + (max(now, last) - last) * self.rate) >= 1.0


class FailureLimiter:
    """Blocks a key after `burst` failures, letting one more through every 1/`rate` seconds."""

    def __init__(self, rate: float, burst: float, max_keys: int = 4096) -> None:
        self._buckets = TokenBuckets(rate, burst, max_keys)

    def record(self, key: str, now: float) -> None:
        self._buckets.allow(key, now)

    def blocked(self, key: str, now: float) -> bool:
        return not self._buckets.has_tokens(key, now)
