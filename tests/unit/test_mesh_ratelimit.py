"""mesh.ratelimit: Envoy's local rate limit token buckets, exactly, on a fake clock."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mesh.ratelimit import RateLimiter, Verdict
from mesh.table import RateLimit


class Clock:
    def __init__(self, now: float = 100.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def rl(name="default/rl", max_tokens=3, per_fill=1, interval=1.0, route=None, source=None):
    return RateLimit(name, max_tokens, per_fill, interval, route, source)


# -- applicability -----------------------------------------------------------------


@pytest.mark.parametrize(
    "limit_route, limit_source, route, source, applies",
    [
        (None, None, None, None, True),
        (None, None, "split", "default/productpage", True),
        ("split", None, "split", None, True),
        ("split", None, "other", None, False),
        ("split", None, None, None, False),
        (None, "default/productpage", None, "default/productpage", True),
        (None, "default/productpage", None, "default/reviews", False),
        (None, "default/productpage", None, None, False),
        ("split", "default/productpage", "split", "default/productpage", True),
        ("split", "default/productpage", "split", "default/reviews", False),
    ],
)
def test_a_limit_applies_by_route_and_source(limit_route, limit_source, route, source, applies):
    limiter = RateLimiter(Clock())
    verdict = limiter.check([rl(route=limit_route, source=limit_source)], route, source)
    assert (verdict is not None) == applies
    if applies:
        assert verdict == Verdict(True, 3, 2, 1, "default/rl", 1)


def test_no_limits_no_verdict():
    assert RateLimiter(Clock()).check([], "r", "s") is None


# -- one bucket ----------------------------------------------------------------------


def test_a_bucket_starts_full_and_fills_on_its_own_grid():
    clock = Clock(10.0)
    limiter = RateLimiter(clock)
    limit = rl(max_tokens=3, per_fill=2, interval=2.0)
    got = [limiter.check([limit], None, None).allowed for _ in range(4)]
    assert got == [True, True, True, False]
    clock.now = 11.9  # before the first fill (due at 12.0)
    assert not limiter.check([limit], None, None).allowed
    clock.now = 12.0  # fill 1: +2
    assert [limiter.check([limit], None, None).remaining for _ in range(2)] == [1, 0]
    v = limiter.check([limit], None, None)
    assert not v.allowed and v.remaining == 0 and v.reset == 2
    clock.now = 19.5  # fills 2, 3 (and 4 at 18.0): capped at 3
    assert limiter.tokens(limit) == 3
    v = limiter.check([limit], None, None)
    assert v.allowed and v.remaining == 2 and v.reset == 1  # next fill at 20.0


@pytest.mark.parametrize(
    "interval, now, reset",
    [
        (1.0, 100.0, 1),  # a full interval to go
        (1.0, 100.999, 1),  # at least 1 when empty
        (5.0, 101.2, 4),  # 3.8 s -> 4
        (60.0, 100.0, 60),
        (0.1, 100.05, 1),  # sub-second intervals still say 1
    ],
)
def test_reset_is_whole_seconds_to_the_next_fill(interval, now, reset):
    clock = Clock(100.0)
    limiter = RateLimiter(clock)
    limit = rl(max_tokens=1, interval=interval)
    assert limiter.check([limit], None, None).allowed
    clock.now = now
    v = limiter.check([limit], None, None)
    assert (v.allowed, v.remaining, v.reset) == (False, 0, reset)


@pytest.mark.parametrize(
    "verdict, lines",
    [
        (
            Verdict(True, 10, 7, 1, "p", 1),
            b"x-ratelimit-limit: 10, 10;w=1\r\nx-ratelimit-remaining: 7\r\nx-ratelimit-reset: 1\r\n",
        ),
        (
            Verdict(False, 20, 0, 5, "p", 5),
            b"x-ratelimit-limit: 20, 20;w=5\r\nx-ratelimit-remaining: 0\r\nx-ratelimit-reset: 5\r\n",
        ),
        (
            Verdict(True, 3, 2, 1, "p"),  # the window defaults to 1 s
            b"x-ratelimit-limit: 3, 3;w=1\r\nx-ratelimit-remaining: 2\r\nx-ratelimit-reset: 1\r\n",
        ),
    ],
)
def test_header_lines_are_draft_03_as_envoy_writes_them(verdict, lines):
    assert verdict.header_lines() == lines


@pytest.mark.parametrize("interval, window", [(1.0, 1), (0.25, 1), (5.0, 5), (2.5, 2), (60, 60)])
def test_the_window_is_the_fill_interval_in_whole_seconds(interval, window):
    v = RateLimiter(Clock()).check([rl(interval=interval)], None, None)
    assert v.window == window
    assert f"x-ratelimit-limit: 3, 3;w={window}\r\n".encode() in v.header_lines()


# -- several buckets -------------------------------------------------------------------


def test_several_buckets_all_or_nothing_and_the_tightest_verdict():
    clock = Clock()
    limiter = RateLimiter(clock)
    wide = rl("default/wide", max_tokens=5)
    narrow = rl("default/narrow", max_tokens=2, route="split")
    v = limiter.check([wide, narrow], "split", None)
    assert (v.allowed, v.policy, v.remaining, v.limit) == (True, "default/narrow", 1, 2)
    limiter.check([wide, narrow], "split", None)
    v = limiter.check([wide, narrow], "split", None)  # narrow is empty: nothing taken from wide
    assert (v.allowed, v.policy, v.remaining) == (False, "default/narrow", 0)
    assert limiter.tokens(wide) == 3
    v = limiter.check([wide, narrow], "other", None)  # only wide applies
    assert (v.allowed, v.policy, v.remaining) == (True, "default/wide", 2)


def test_equal_remaining_reports_the_first_limit():
    limiter = RateLimiter(Clock())
    v = limiter.check([rl("a", max_tokens=4), rl("b", max_tokens=4)], None, None)
    assert v.policy == "a"


# -- table swaps ------------------------------------------------------------------------


def test_a_swap_keeps_the_tokens_of_an_unchanged_policy_and_retain_forgets():
    clock = Clock()
    limiter = RateLimiter(clock)
    old = rl(max_tokens=3)
    limiter.check([old], None, None)
    limiter.check([old], None, None)
    same = rl(max_tokens=3, route=None)  # a new object of the next table
    assert limiter.check([same], None, None).remaining == 0
    changed = rl(max_tokens=4)  # another bucket size: another bucket, full
    assert limiter.check([changed], None, None).remaining == 3
    limiter.retain([changed])
    assert limiter.tokens(old) is None and limiter.tokens(changed) == 3
    assert limiter.check([old], None, None).remaining == 2  # forgotten: starts full again


# -- the bound, exactly ------------------------------------------------------------------


def reference(limits, times):
    """Fills applied one by one at their instants (no lazy arithmetic)."""
    state = {}
    out = []
    for t in times:
        for lim in limits:
            if lim.key not in state:
                state[lim.key] = [lim.max_tokens, t, 0]
            s = state[lim.key]
            while s[1] + (s[2] + 1) * lim.fill_interval <= t:
                s[2] += 1
                s[0] = min(lim.max_tokens, s[0] + lim.tokens_per_fill)
        ok = all(state[lim.key][0] > 0 for lim in limits)
        if ok:
            for lim in limits:
                state[lim.key][0] -= 1
        out.append(ok)
    return out


bucket = st.builds(
    lambda m, p, i: (m, p, i),
    st.integers(1, 5),
    st.integers(1, 5),
    st.sampled_from([1.0, 2.0, 3.0, 0.5, 0.25]),
)


@settings(max_examples=150, deadline=None)
@given(
    shapes=st.lists(bucket, min_size=1, max_size=3),
    gaps=st.lists(st.sampled_from([0.0, 0.0, 0.25, 0.5, 1.0, 3.0]), min_size=1, max_size=60),
    start=st.sampled_from([0.0, 7.25, 1000.5]),
)
def test_in_any_window_accepted_never_exceeds_max_plus_fills(shapes, gaps, start):
    limits = [rl(f"p{i}", m, p, iv) for i, (m, p, iv) in enumerate(shapes)]
    times, t = [], start
    for gap in gaps:
        t += gap
        times.append(t)
    clock = Clock(start)
    limiter = RateLimiter(clock)
    verdicts = []
    for t in times:
        clock.now = t
        verdicts.append(limiter.check(limits, None, None))
    accepted = [v.allowed for v in verdicts]
    assert accepted == reference(limits, times)
    for v in verdicts:  # the verdict is the tightest bucket's
        assert 0 <= v.remaining <= max(m for m, _, _ in shapes)
        assert v.allowed or v.remaining == 0
    origin = times[0]
    for lim in limits:
        for i, a in enumerate(times):
            for span in (0.25, 0.5, 1.0, 2.0, 3.0, 5.0, 10.0):
                end = a + span
                count = sum(
                    1 for t, ok in zip(times[i:], accepted[i:], strict=True) if ok and t < end
                )
                k_lo = int((a - origin) // lim.fill_interval)  # fills due at or before a
                k_hi = -int(-(end - origin) // lim.fill_interval) - 1  # fills due before end
                fills = max(0, k_hi - k_lo)
                assert count <= lim.max_tokens + lim.tokens_per_fill * fills, (lim, a, span)
