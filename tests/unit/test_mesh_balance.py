"""mesh.balance: weighted destinations, then ROUND_ROBIN / RANDOM / LEAST_REQUEST
endpoints, with state that survives table swaps."""

from __future__ import annotations

import random
from collections import Counter

import pytest

from mesh.balance import FULL_SCAN_MAX, Balancer
from mesh.table import LEAST_REQUEST, RANDOM, ROUND_ROBIN, Destination, Endpoint, Route


def eps(*last: int, port: int = 9080) -> tuple[Endpoint, ...]:
    return tuple(Endpoint(f"10.244.1.{n}", port, pod=f"default/p{n}") for n in last)


THREE = eps(1, 2, 3)


def dest(endpoints=THREE, lb=ROUND_ROBIN, weight=100, subset=None, service="reviews"):
    return Destination("default", service, 9080, endpoints, weight, subset, lb)


def ips(chosen) -> list[str]:
    return [None if e is None else e.ip.rsplit(".", 1)[1] for e in chosen]


# -- choose ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "weights, expected",
    [
        ((100,), {"d0": 1.0}),
        ((0,), {"d0": 1.0}),  # a single destination takes everything (Istio: weight 100)
        ((90, 10), {"d0": 0.9, "d1": 0.1}),
        ((50, 0, 50), {"d0": 0.5, "d2": 0.5}),
        ((0, 100), {"d1": 1.0}),
        ((34, 33, 33), {"d0": 0.34, "d1": 0.33, "d2": 0.33}),
    ],
)
def test_choose_follows_the_weights(weights, expected):
    route = Route("r", tuple(dest(weight=w, subset=f"d{i}") for i, w in enumerate(weights)))
    balancer = Balancer(random.Random(7))
    n = 20000
    got = Counter(balancer.choose(route).subset for _ in range(n))
    assert set(got) == set(expected)  # weight 0 never chosen
    for name, share in expected.items():
        assert abs(got[name] / n - share) < 0.015, (name, got)


@pytest.mark.parametrize("weights", [(), (0, 0)])
def test_choose_returns_none_without_a_usable_destination(weights):
    route = Route("r", tuple(dest(weight=w, subset=f"d{i}") for i, w in enumerate(weights)))
    assert Balancer(random.Random(1)).choose(route) is None


# -- round robin ---------------------------------------------------------------


def test_round_robin_rotates_strictly_per_request():
    balancer = Balancer(random.Random(1))
    d = dest()
    assert ips(balancer.pick(d) for _ in range(7)) == ["1", "2", "3", "1", "2", "3", "1"]


def test_round_robin_survives_a_table_swap_by_key():
    balancer = Balancer(random.Random(1))
    assert ips([balancer.pick(dest()), balancer.pick(dest())]) == ["1", "2"]
    swapped = dest()  # a new object, same key
    assert swapped is not dest() and swapped.key == dest().key
    assert ips([balancer.pick(swapped)]) == ["3"]
    other = dest(subset="v2")  # another key has its own rotation
    assert ips([balancer.pick(other)]) == ["1"]


@pytest.mark.parametrize(
    "before, after, expected",
    [
        ((1, 2, 3, 4), (1, 2), ["1", "2", "1"]),  # shrunk below the position: wraps
        ((1, 2), (1, 2, 3, 4), ["1", "2", "3", "4", "1"]),  # grown: carries on
        ((1, 2, 3), (), [None]),
    ],
)
def test_round_robin_when_the_endpoints_change(before, after, expected):
    balancer = Balancer(random.Random(1))
    for _ in range(len(before) + 2):  # the position is now 2 of 4, 0 of 2, 2 of 3
        balancer.pick(dest(eps(*before)))
    got = ips(balancer.pick(dest(eps(*after))) for _ in range(len(expected)))
    assert got == expected


@pytest.mark.parametrize(
    "exclude, expected",
    [
        ((), "1"),
        ((("10.244.1.1", 9080),), "2"),
        ((("10.244.1.1", 9080), ("10.244.1.2", 9080)), "3"),
        ((("10.244.1.1", 9080), ("10.244.1.2", 9080), ("10.244.1.3", 9080)), None),
        ((("10.244.1.1", 9999),), "1"),  # another port is another endpoint
    ],
)
def test_pick_skips_excluded_endpoints(exclude, expected):
    assert ips([Balancer(random.Random(1)).pick(dest(), exclude=exclude)]) == [expected]
    for lb in (RANDOM, LEAST_REQUEST):
        for seed in range(20):
            got = Balancer(random.Random(seed)).pick(dest(lb=lb), exclude=set(exclude))
            assert (got is None) == (expected is None)
            assert got is None or got.address not in set(exclude)


def test_round_robin_after_a_retry_moves_past_the_tried_endpoint():
    balancer = Balancer(random.Random(1))
    d = dest()
    first = balancer.pick(d)
    retry = balancer.pick(d, exclude={first.address})
    assert ips([first, retry, balancer.pick(d)]) == ["1", "2", "3"]


def test_pick_without_endpoints_is_none():
    for lb in (ROUND_ROBIN, RANDOM, LEAST_REQUEST):
        assert Balancer(random.Random(1)).pick(dest((), lb=lb)) is None


# -- random --------------------------------------------------------------------


def test_random_is_uniform_and_deterministic_with_a_seeded_rng():
    d = dest(eps(1, 2, 3, 4), lb=RANDOM)
    first = [Balancer(random.Random(3)).pick(d).ip for _ in range(1)]
    again = [Balancer(random.Random(3)).pick(d).ip for _ in range(1)]
    assert first == again
    balancer = Balancer(random.Random(3))
    got = Counter(balancer.pick(d).ip for _ in range(8000))
    assert len(got) == 4 and all(abs(c / 8000 - 0.25) < 0.03 for c in got.values())
    excluded = Counter(balancer.pick(d, {("10.244.1.1", 9080)}).ip for _ in range(6000))
    assert set(excluded) == {"10.244.1.2", "10.244.1.3", "10.244.1.4"}
    assert all(abs(c / 6000 - 1 / 3) < 0.03 for c in excluded.values())


# -- least request --------------------------------------------------------------


def test_least_request_picks_the_fewest_in_flight_and_rotates_ties():
    balancer = Balancer(random.Random(1))
    d = dest(eps(1, 2, 3), lb=LEAST_REQUEST)
    a, b, c = d.endpoints
    # all idle: ties rotate
    assert ips(balancer.pick(d) for _ in range(4)) == ["1", "2", "3", "1"]
    balancer.started(a)
    balancer.started(a)
    balancer.started(b)
    assert ips([balancer.pick(d)]) == ["3"]
    balancer.started(c)  # loads: a=2, b=1, c=1 -> b and c tie
    assert sorted(ips([balancer.pick(d), balancer.pick(d)])) == ["2", "3"]
    balancer.finished(a)
    balancer.finished(a)  # a idle now
    assert ips([balancer.pick(d)]) == ["1"]
    assert balancer.in_flight(a) == 0 and balancer.in_flight(b) == 1


def test_in_flight_is_kept_by_address_across_objects_and_never_negative():
    balancer = Balancer(random.Random(1))
    ep = Endpoint("10.244.1.1", 9080)
    same = Endpoint("10.244.1.1", 9080, pod="default/p1", node="n1")
    balancer.started(ep)
    balancer.started(same)
    assert balancer.in_flight(("10.244.1.1", 9080)) == 2
    for _ in range(3):
        balancer.finished(same)
    assert balancer.in_flight(ep) == 0
    balancer.started(ep)
    assert balancer.in_flight(ep) == 1


def test_least_request_with_many_endpoints_uses_two_choices_and_avoids_the_busy():
    n = FULL_SCAN_MAX + 8
    d = dest(tuple(Endpoint(f"10.244.2.{i}", 80) for i in range(n)), lb=LEAST_REQUEST)
    balancer = Balancer(random.Random(5))
    busy = d.endpoints[: n // 2]
    for ep in busy:
        for _ in range(10):
            balancer.started(ep)
    got = Counter(balancer.pick(d).ip for _ in range(4000))
    on_busy = sum(got[e.ip] for e in busy)
    # a busy one wins only when both choices are busy: about 1/4 of the time
    assert 0.15 < on_busy / 4000 < 0.35
