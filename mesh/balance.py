"""Load balancing: a weighted choice among a route's destinations, then one
endpoint of the chosen destination by its policy (Envoy's ROUND_ROBIN, RANDOM,
LEAST_REQUEST).

The state (round-robin positions, requests in flight) is keyed by
`Destination.key` and by endpoint address, not by the table's objects, so it
survives a table swap: a new `Destination` with the same key carries on the
rotation where the old one left it.
"""

from __future__ import annotations

import os
import random
from collections.abc import Collection

from mesh.table import LEAST_REQUEST, RANDOM, Destination, Endpoint, Route

FULL_SCAN_MAX = 32  # LEAST_REQUEST scans every endpoint up to this many, else two random choices


class Balancer:
    def __init__(self, rng: random.Random | None = None) -> None:
        self._rng = rng if rng is not None else random.Random(os.urandom(16))
        self._position: dict[str, int] = {}  # Destination.key -> next index (round robin, ties)
        self._inflight: dict[tuple[str, int], int] = {}  # endpoint address -> requests

    # -- destinations ----------------------------------------------------------

    def choose(self, route: Route) -> Destination | None:
        """One destination, weighted; weight 0 is never chosen. A single destination
        takes all traffic whatever its weight (Istio assumes 100). None if there is
        none, or every weight is 0."""
        dests = route.destinations
        if len(dests) == 1:
            return dests[0]
        total = 0
        for d in dests:
            if d.weight > 0:
                total += d.weight
        if total <= 0:
            return None
        point = self._rng.random() * total
        for d in dests:
            if d.weight > 0:
                point -= d.weight
                if point < 0:
                    return d
        for d in reversed(dests):  # float rounding at the very top
            if d.weight > 0:
                return d
        return None  # unreachable

    # -- endpoints -------------------------------------------------------------

    def pick(self, dest: Destination, exclude: Collection[tuple[str, int]] = ()) -> Endpoint | None:
        """One endpoint of `dest` whose address is not in `exclude` (the ones a retry
        already tried); None when nothing is left."""
        eps = dest.endpoints
        n = len(eps)
        if n == 0:
            return None
        lb = dest.lb
        if lb == RANDOM:
            return self._random(eps, exclude)
        if lb == LEAST_REQUEST:
            return self._least(dest.key, eps, exclude)
        return self._round_robin(dest.key, eps, exclude)

    def _round_robin(
        self, key: str, eps: tuple[Endpoint, ...], exclude: Collection[tuple[str, int]]
    ) -> Endpoint | None:
        n = len(eps)
        start = self._position.get(key, 0) % n  # the list may have shrunk since
        if not exclude:
            self._position[key] = (start + 1) % n
            return eps[start]
        for i in range(n):
            index = (start + i) % n
            ep = eps[index]
            if (ep.ip, ep.port) not in exclude:
                self._position[key] = (index + 1) % n
                return ep
        return None

    def _random(
        self, eps: tuple[Endpoint, ...], exclude: Collection[tuple[str, int]]
    ) -> Endpoint | None:
        if exclude:
            eps = tuple(ep for ep in eps if (ep.ip, ep.port) not in exclude)
            if not eps:
                return None
        return eps[int(self._rng.random() * len(eps))]

    def _least(
        self, key: str, eps: tuple[Endpoint, ...], exclude: Collection[tuple[str, int]]
    ) -> Endpoint | None:
        inflight = self._inflight
        if exclude:
            eps = tuple(ep for ep in eps if (ep.ip, ep.port) not in exclude)
        n = len(eps)
        if n == 0:
            return None
        if n > FULL_SCAN_MAX:  # Envoy's power of two choices
            rng = self._rng
            a = eps[int(rng.random() * n)]
            b = eps[int(rng.random() * n)]
            load_a = inflight.get((a.ip, a.port), 0)
            load_b = inflight.get((b.ip, b.port), 0)
            return b if load_b < load_a else a
        # the fewest in flight; among equals, the first from a rotating start
        start = self._position.get(key, 0) % n
        best = None
        best_load = -1
        best_index = 0
        for i in range(n):
            index = (start + i) % n
            ep = eps[index]
            load = inflight.get((ep.ip, ep.port), 0)
            if best is None or load < best_load:
                best, best_load, best_index = ep, load, index
                if load == 0:
                    break
        self._position[key] = (best_index + 1) % n
        return best

    # -- requests in flight ----------------------------------------------------

    def started(self, ep: Endpoint) -> None:
        address = (ep.ip, ep.port)
        self._inflight[address] = self._inflight.get(address, 0) + 1

    def finished(self, ep: Endpoint) -> None:
        address = (ep.ip, ep.port)
        left = self._inflight.get(address, 0) - 1
        if left > 0:
            self._inflight[address] = left
        else:
            self._inflight.pop(address, None)  # the map holds only busy endpoints

    def in_flight(self, ep: Endpoint | tuple[str, int]) -> int:
        """Requests in flight to an endpoint (for stats and tests)."""
        address = ep if isinstance(ep, tuple) else (ep.ip, ep.port)
        return self._inflight.get(address, 0)

    def forget(self, keep: Collection[str]) -> None:
        """Drop round-robin positions of destination keys no longer in any table."""
        for key in [k for k in self._position if k not in keep]:
            del self._position[key]
