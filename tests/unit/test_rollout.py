"""The rollout arithmetic (Kubernetes' deployment controller) and strategy checks."""

from __future__ import annotations

import pytest

from netlab.controllers.rollout import Replica, Strategy, complete, step
from netlab.spec.strategy import check_strategy


def pods(spec: str) -> list[Replica]:
    """'aR aU bR': hash a ready, hash a unready, hash b ready (created in that order)."""
    return [
        Replica(f"p{i}", word[0], word[1] == "R", created=i) for i, word in enumerate(spec.split())
    ]


@pytest.mark.parametrize(
    "replicas,strategy,spec,create,delete",
    [
        (3, Strategy(), "", 3, ()),  # new deployment
        (3, Strategy(), "bR bR", 1, ()),  # a pod was deleted
        (1, Strategy(), "bR bR bR", 0, ("p2", "p1")),  # scaled down: newest go first
        (2, Strategy(), "bR bU bR", 0, ("p1",)),  # unready goes first
        # rolling, surge 1 unavailable 0: one new pod, no old pod goes yet
        (3, Strategy(max_surge=1, max_unavailable=0), "aR aR aR", 1, ()),
        (3, Strategy(max_surge=1, max_unavailable=0), "aR aR aR bU", 0, ()),
        (3, Strategy(max_surge=1, max_unavailable=0), "aR aR aR bR", 0, ("p2",)),
        (3, Strategy(max_surge=1, max_unavailable=0), "aR aR bR", 1, ()),
        # surge 0 unavailable 1: an old pod goes first
        (3, Strategy(max_surge=0, max_unavailable=1), "aR aR aR", 0, ("p2",)),
        (3, Strategy(max_surge=0, max_unavailable=1), "aR aR", 1, ()),
        # unready old pods serve nobody: they may always go
        (3, Strategy(max_surge=1, max_unavailable=0), "aU aR aR", 2, ("p0",)),
        # Recreate: all old pods, then the new ones
        (3, Strategy("Recreate"), "aR aR aR", 0, ("p0", "p1", "p2")),
        (3, Strategy("Recreate"), "", 3, ()),
        # scaled to zero mid-rollout
        (0, Strategy(), "aR bR", 0, ("p1", "p0")),
    ],
)
def test_step(replicas, strategy, spec, create, delete):
    change = step(replicas, strategy, "b", pods(spec))
    assert change.create == create
    assert sorted(change.delete) == sorted(delete)


@pytest.mark.parametrize(
    "surge,unavailable,replicas,bounds",
    [
        ("25%", "25%", 4, (1, 1)),
        ("25%", "25%", 3, (1, 0)),  # surge rounds up, unavailable down
        ("25%", "25%", 1, (1, 0)),
        (0, 0, 3, (0, 1)),  # both zero could never move
        (2, "50%", 5, (2, 2)),
    ],
)
def test_bounds(surge, unavailable, replicas, bounds):
    assert Strategy(max_surge=surge, max_unavailable=unavailable).bounds(replicas) == bounds


@pytest.mark.parametrize("surge,unavailable", [(1, 0), (0, 1), ("25%", "25%"), (3, 2)])
@pytest.mark.parametrize("replicas", [1, 3, 5])
def test_a_rollout_converges_within_its_bounds(surge, unavailable, replicas):
    """Simulated to the end: pods become ready one step after they start; at no step are
    there more than replicas + surge pods or fewer than replicas - unavailable ready."""
    strategy = Strategy(max_surge=surge, max_unavailable=unavailable)
    max_surge, max_unavailable = strategy.bounds(replicas)
    current = [Replica(f"old{i}", "a", True, i) for i in range(replicas)]
    serial = replicas
    for _ in range(50):
        if complete(replicas, "b", current):
            break
        change = step(replicas, strategy, "b", current)
        current = [p for p in current if p.name not in change.delete]
        assert sum(p.ready for p in current) >= replicas - max_unavailable
        for _ in range(change.create):
            serial += 1
            current.append(Replica(f"new{serial}", "b", False, serial))
        assert len(current) <= replicas + max_surge
        current = [Replica(p.name, p.template_hash, True, p.created) for p in current]
    assert complete(replicas, "b", current)


@pytest.mark.parametrize(
    "strategy,field",
    [
        ({"type": "BlueGreen"}, "strategy.type"),
        ({"type": "Recreate", "rollingUpdate": {"maxSurge": 1}}, "strategy.rollingUpdate"),
        ({"rollingUpdate": {"maxSurge": -1}}, "strategy.rollingUpdate.maxSurge"),
        ({"rollingUpdate": {"maxUnavailable": "lots"}}, "strategy.rollingUpdate.maxUnavailable"),
        ({"rollingUpdate": {"maxSurge": 0, "maxUnavailable": 0}}, "strategy.rollingUpdate"),
        ({"rollingUpdate": {"maxSurge": 1, "surge": 2}}, "strategy.rollingUpdate.surge"),
        ({"kind": "x"}, "strategy.kind"),
    ],
)
def test_bad_strategies_name_the_field(strategy, field):
    problems = check_strategy(strategy)
    assert field in [p[0] for p in problems], problems


@pytest.mark.parametrize(
    "strategy",
    [None, {"type": "Recreate"}, {"rollingUpdate": {"maxSurge": "50%", "maxUnavailable": 0}}],
)
def test_good_strategies(strategy):
    assert check_strategy(strategy) == []
