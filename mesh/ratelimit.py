"""Envoy's local rate limit: one token bucket per RateLimitPolicy in each sidecar.

A bucket starts full (`max_tokens`); every `fill_interval` after its creation
adds `tokens_per_fill`, capped at `max_tokens`. Fills are counted lazily from
the clock, aligned to the creation time (fill k happens at t0 + k * interval),
so no timer runs and the bound is exact: in any window, the requests accepted
never exceed `max_tokens` plus `tokens_per_fill` times the fills inside it.

Buckets are keyed by `RateLimit.key`: a table swap that keeps a policy keeps
its tokens; `retain` forgets the ones no table names any more.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Sequence
from typing import NamedTuple

from mesh.table import RateLimit


class Verdict(NamedTuple):  # a tuple: made per request, cheaper than a frozen dataclass
    """The outcome of one request against the applicable buckets (the most
    restrictive one's numbers, for the draft-03 `x-ratelimit-*` headers)."""

    allowed: bool
    limit: int  # max_tokens
    remaining: int  # tokens left after this request
    reset: int  # whole seconds until the next fill
    policy: str  # RateLimit.name
    window: int = 1  # fill interval in whole seconds (at least 1), for `;w=`

    def header_lines(self) -> bytes:
        """`x-ratelimit-limit/remaining/reset` as Envoy emits them (IETF draft-03)."""
        return (
            f"x-ratelimit-limit: {self.limit}, {self.limit};w={self.window}\r\n"
            f"x-ratelimit-remaining: {self.remaining}\r\n"
            f"x-ratelimit-reset: {self.reset}\r\n"
        ).encode("ascii")


class _Bucket:
    __slots__ = ("tokens", "origin", "fills", "limit", "interval", "source", "window")

    def __init__(self, limit: RateLimit, now: float) -> None:
        self.limit = limit
        self.interval = limit.fill_interval if limit.fill_interval > 0 else 1e-3
        self.tokens = limit.max_tokens
        self.origin = now  # fill k is due at origin + k * fill_interval
        self.fills = 0  # fills accounted so far
        self.source: RateLimit | None = None  # the table object it was last found by
        self.window = _window(limit.fill_interval)

    def refill(self, now: float) -> None:
        limit = self.limit
        due = int((now - self.origin) // self.interval)
        if due > self.fills:
            self.tokens = min(
                limit.max_tokens, self.tokens + (due - self.fills) * limit.tokens_per_fill
            )
            self.fills = due

    def reset(self, now: float) -> int:
        """Whole seconds until the next fill, rounded up."""
        left = self.origin + (self.fills + 1) * self.interval - now - 1e-9
        if left <= 0:
            return 0
        whole = int(left)
        return whole if whole == left else whole + 1


def _window(interval: float) -> int:
    return max(1, int(interval))


class RateLimiter:
    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._buckets: dict[tuple, _Bucket] = {}
        self._by_id: dict[int, _Bucket] = {}  # id(RateLimit) -> its bucket, checked by identity

    def check(
        self, limits: Sequence[RateLimit], route: str | None, source_service: str | None
    ) -> Verdict | None:
        """Take one token from every applicable bucket, or from none (all or nothing).
        None when no limit applies to this request."""
        if not limits:
            return None
        now = self._clock()
        buckets = self._buckets
        applicable: list[_Bucket] = []
        for limit in limits:
            if limit.route is not None and limit.route != route:
                continue
            if limit.source is not None and limit.source != source_service:
                continue
            bucket = self._by_id.get(id(limit))
            if bucket is None or bucket.source is not limit:
                key = limit.key
                bucket = buckets.get(key)
                if bucket is None:
                    bucket = buckets[key] = _Bucket(limit, now)
                else:
                    bucket.refill(now)
                bucket.source = limit
                self._by_id[id(limit)] = bucket
            else:
                bucket.refill(now)
            applicable.append(bucket)
        if not applicable:
            return None
        if len(applicable) == 1:  # the usual case: one policy on the destination
            tightest = applicable[0]
            allowed = tightest.tokens > 0
            if allowed:
                tightest.tokens -= 1
        else:
            allowed = all(b.tokens > 0 for b in applicable)
            if allowed:
                for b in applicable:
                    b.tokens -= 1
            tightest = min(applicable, key=_tokens)  # the first of the fewest
        reset = tightest.reset(now)
        if tightest.tokens <= 0 and reset < 1:
            reset = 1
        limit = tightest.limit
        tokens = tightest.tokens
        return Verdict(
            allowed,
            limit.max_tokens,
            tokens if tokens > 0 else 0,
            reset,
            limit.name,
            tightest.window,
        )

    def retain(self, limits: Iterable[RateLimit]) -> None:
        """Forget the buckets whose key is not among `limits` (after a table swap)."""
        keep = {limit.key for limit in limits}
        for key in [k for k in self._buckets if k not in keep]:
            del self._buckets[key]
        self._by_id.clear()  # the next check finds each bucket by its key again

    def tokens(self, limit: RateLimit) -> int | None:
        """The tokens a bucket holds now (None if it was never used): for stats, tests."""
        bucket = self._buckets.get(limit.key)
        if bucket is None:
            return None
        bucket.refill(self._clock())
        return bucket.tokens


def _tokens(bucket: _Bucket) -> int:
    return bucket.tokens
