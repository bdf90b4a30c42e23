"""How a Deployment moves toward its spec, one step at a time (pure; table-tested).

The arithmetic of Kubernetes' deployment controller: a RollingUpdate never runs more
than `replicas + maxSurge` pods and never has fewer than `replicas - maxUnavailable`
ready; Recreate stops every old pod before it starts a new one. Each step looks only
at the pods as they are now, so a step repeated or lost changes nothing.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from netlab.errors import NetlabError
from netlab.spec.strategy import DEFAULT_SURGE, RECREATE, ROLLING

DEFAULT_UNAVAILABLE = DEFAULT_SURGE  # both 25%, as in Kubernetes


@dataclass(frozen=True)
class Replica:
    """What the controller knows of one of the Deployment's pods."""

    name: str
    template_hash: str
    ready: bool
    created: int = 0  # creation order (the store's revision): newer pods go first


@dataclass(frozen=True)
class Step:
    create: int  # new pods to start from the current template
    delete: tuple[str, ...]  # pods to stop


@dataclass(frozen=True)
class Strategy:
    type: str = ROLLING
    max_surge: int | str = DEFAULT_SURGE
    max_unavailable: int | str = DEFAULT_UNAVAILABLE

    def bounds(self, replicas: int) -> tuple[int, int]:
        """(surge, unavailable) as pod counts: surge rounds up, unavailable down, as
        Kubernetes does; both zero would never move, so unavailable becomes 1."""
        surge = _count(self.max_surge, replicas, math.ceil)
        unavailable = _count(self.max_unavailable, replicas, math.floor)
        if surge == 0 and unavailable == 0:
            unavailable = 1
        return surge, unavailable


def _count(value: int | str, replicas: int, rounding) -> int:
    if isinstance(value, int):
        return value
    return int(rounding(replicas * int(value.rstrip("%")) / 100))


def parse_strategy(spec: Any) -> Strategy:
    """`spec.strategy` of a Deployment (already validated, or None for the defaults)."""
    if not isinstance(spec, dict):
        return Strategy()
    kind = spec.get("type") or ROLLING
    rolling = spec.get("rollingUpdate") or {}
    return Strategy(
        kind,
        rolling.get("maxSurge", DEFAULT_SURGE),
        rolling.get("maxUnavailable", DEFAULT_UNAVAILABLE),
    )


def step(replicas: int, strategy: Strategy, current_hash: str, pods: list[Replica]) -> Step:
    """The next changes toward `replicas` pods of `current_hash`, all ready."""
    new = [p for p in pods if p.template_hash == current_hash]
    old = [p for p in pods if p.template_hash != current_hash]
    if not old:
        return _scale(replicas, new)
    if strategy.type == RECREATE:  # every old pod goes before any new one starts
        return Step(0, tuple(p.name for p in old))
    surge, unavailable = strategy.bounds(replicas)
    delete: list[str] = []
    # too many new pods (scaled down mid-rollout): the surplus goes, unready and newest first
    if len(new) > replicas:
        surplus = _by_removal_order(new)[: len(new) - replicas]
        delete += [p.name for p in surplus]
        new = [p for p in new if p.name not in delete]
    # old pods that are not ready serve nobody: they may always go
    unready_old = [p for p in old if not p.ready]
    delete += [p.name for p in unready_old]
    ready_old = [p for p in old if p.ready]
    # scale up the new pods within the surge
    running = len(new) + len(ready_old)
    create = max(0, min(replicas - len(new), replicas + surge - running))
    # scale down ready old pods while enough pods stay ready
    min_ready = replicas - unavailable
    ready_now = sum(1 for p in new if p.ready) + len(ready_old)
    budget = max(0, ready_now - min_ready)
    for pod in _by_removal_order(ready_old)[:budget]:
        delete.append(pod.name)
    return Step(create, tuple(delete))


def _scale(replicas: int, pods: list[Replica]) -> Step:
    if len(pods) < replicas:
        return Step(replicas - len(pods), ())
    surplus = _by_removal_order(pods)[: len(pods) - replicas]
    return Step(0, tuple(p.name for p in surplus))


def _by_removal_order(pods: list[Replica]) -> list[Replica]:
    """Which pods go first when some must: not ready, then the newest (as Kubernetes)."""
    return sorted(pods, key=lambda p: (p.ready, -p.created, p.name))


def complete(replicas: int, current_hash: str, pods: list[Replica]) -> bool:
    """The rollout is done: exactly `replicas` pods, all of the current template, all ready."""
    return len(pods) == replicas and all(p.template_hash == current_hash and p.ready for p in pods)


class RolloutError(NetlabError):
    """A rollout that cannot go on (no such revision to undo to, ...)."""
