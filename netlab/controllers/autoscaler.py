"""The autoscaler, Knative's idea (the KPA): a Deployment marked with
`autoscaling.knative.dev/*` annotations is scaled between minScale and maxScale on
the requests in flight per pod, as its pods' sidecars report them (Knative's
queue-proxy does the same), averaged over a stable window; a burst at twice the
capacity (the panic window, a tenth of the stable one) scales up at once and holds
off scale-down. With minScale 0, a window without any request scales to zero.

The decision (`decide`) is pure and table-tested; the controller samples every
TICK seconds and writes `spec.replicas`, which the Deployment controller acts on.
"""

from __future__ import annotations

import math
import time
from collections import deque
from collections.abc import Callable, Hashable, Iterable
from dataclasses import dataclass, field
from typing import Protocol

from netlab.controllers.base import Controller
from netlab.controllers.deployment import is_ready
from netlab.errors import ApiError
from netlab.spec.autoscale import PREFIX, TICK, Settings, settings_of
from netlab.store import Event, Store

PANIC_THRESHOLD = 2.0  # Knative: 200% of what the ready pods should carry


@dataclass
class Samples:
    """(time, total requests in flight) over the stable window."""

    points: deque = field(default_factory=deque)
    panicking_until: float = 0.0
    since_empty: float | None = None  # when the traffic last was not zero

    def add(self, now: float, value: float, window: float) -> None:
        self.points.append((now, value))
        while self.points and self.points[0][0] < now - window:
            self.points.popleft()

    def average(self, now: float, window: float) -> float:
        recent = [v for t, v in self.points if t > now - window]
        return sum(recent) / len(recent) if recent else 0.0


def decide(settings: Settings, current: int, ready: int, samples: Samples, now: float) -> int:
    """How many pods the Deployment should have now."""
    stable = samples.average(now, settings.window)
    panic = samples.average(now, settings.panic_window)
    want = math.ceil(stable / settings.target) if stable > 0 else 0
    capacity = max(ready, 1) * settings.target
    if panic / capacity >= PANIC_THRESHOLD:  # a burst: up at once, and no way down a while
        samples.panicking_until = now + settings.window
        want = max(want, math.ceil(panic / settings.target))
    if now < samples.panicking_until:
        want = max(want, current)
    if want == 0 and current > 0 and settings.min_scale == 0:
        # to zero only after a whole window without a single request in flight
        span = samples.points[-1][0] - samples.points[0][0] if samples.points else 0.0
        if any(v > 0 for _, v in samples.points) or span < settings.window - TICK:
            want = max(want, 1)
    if want == 0 and current > 0 and settings.min_scale > 0:
        want = settings.min_scale
    return max(settings.min_scale, min(settings.max_scale, max(want, 0)))


class Scrape(Protocol):
    def in_flight(self, pod: dict) -> float | None:
        """Requests the pod is serving now, from its sidecar; None if it did not answer."""
        ...

    def waiting(self, namespace: str, deployment: str) -> int:
        """Requests held for a Deployment scaled to zero (the activator's count)."""
        ...


class Autoscaler(Controller):
    name = "autoscaler"
    watches = ("deployments",)
    resync = 10.0

    def __init__(self, store: Store, scrape: Scrape, clock: Callable[[], float] = time.monotonic):
        super().__init__(store)
        self.scrape, self.clock = scrape, clock
        self.samples: dict[Hashable, Samples] = {}

    def keys_for(self, event: Event) -> Iterable[Hashable]:
        meta = event.object["metadata"]
        if any(k.startswith(PREFIX) for k in (meta.get("annotations") or {})):
            return [(meta["namespace"], meta["name"])]
        return []

    def all_keys(self) -> Iterable[Hashable]:
        items, _ = self.store.list("deployments")
        return [
            (d["metadata"]["namespace"], d["metadata"]["name"])
            for d in items
            if any(k.startswith(PREFIX) for k in d["metadata"].get("annotations") or {})
        ]

    def reconcile(self, key: Hashable) -> float | None:
        namespace, name = key  # type: ignore[misc]
        try:
            deployment = self.store.get("deployments", namespace, name)
        except ApiError:
            self.samples.pop(key, None)
            return None
        try:
            settings = settings_of(deployment["metadata"].get("annotations") or {})
        except ValueError:
            return None  # refused when applied; an old object is left alone
        if settings is None:
            self.samples.pop(key, None)
            return None
        pods = [p for p in self.controlled("pods", namespace, "Deployment", name) if is_ready(p)]
        total = float(self.scrape.waiting(namespace, name))
        for pod in pods:
            total += self.scrape.in_flight(pod) or 0.0
        now = self.clock()
        samples = self.samples.setdefault(key, Samples())
        samples.add(now, total, settings.window)
        current = int((deployment.get("spec") or {}).get("replicas", 1))
        want = decide(settings, current, len(pods), samples, now)
        if want != current:
            deployment["spec"]["replicas"] = want
            self.store.update(deployment)  # a conflict: tried again on the next tick
        return TICK
