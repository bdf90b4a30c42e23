"""Resource metrics of the lab's containers, as metrics-server serves them
(metrics.k8s.io/v1beta1): a sampler reads every container's cgroup each `interval`,
keeps what a `window` of CPU rate needs, and answers PodMetrics and NodeMetrics.

As metrics-server does: CPU is the rate of the cumulative CPU time between two
samples about a window apart, in nanocores; memory is the working set of the newest
sample (usage minus inactive file pages); a container appears once it has two
samples. A node's usage is the sum of its containers' (the lab's nodes share one
machine, so there is no node cgroup of its own to read).
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from fractions import Fraction
from pathlib import Path

from netlab.node.cgroups import Usage, usage
from netlab.spec import quantity

API_VERSION = "metrics.k8s.io/v1beta1"
log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ContainerCgroup:
    """One running container and its cgroup directories (cgroups.container_dirs)."""

    namespace: str
    pod: str
    container: str
    node: str
    dirs: Mapping[str, Path] = field(hash=False)


@dataclass(frozen=True)
class _Sample:
    at: float  # the sampler's clock (monotonic)
    wall: datetime
    usage: Usage


@dataclass
class _History:
    cgroup: ContainerCgroup
    samples: deque[_Sample] = field(default_factory=deque)


@dataclass(frozen=True)
class Rate:
    """A container's usage over its window."""

    nanocores: int
    working_set: int  # bytes, at `timestamp`
    window: float  # seconds between the two samples
    timestamp: datetime  # of the newer sample


class MetricsSampler:
    """Samples every container's cgroup on a thread of its own; answers the
    metrics.k8s.io shapes from what it kept."""

    def __init__(
        self,
        list_containers: Callable[[], Iterable[ContainerCgroup]],
        window: float = 10.0,
        interval: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
        read: Callable[[Mapping[str, Path]], Usage | None] = usage,
        now: Callable[[], datetime] = lambda: datetime.now(UTC),
    ):
        self.list_containers = list_containers
        self.window, self.interval = window, interval
        self.clock, self.read, self.now = clock, read, now
        self._lock = threading.Lock()
        self._histories: dict[tuple[str, str, str], _History] = {}
        self._ticks: deque[tuple[float, datetime]] = deque()  # when sample() ran
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # -- sampling ------------------------------------------------------------

    def start(self) -> None:
        if self._thread is not None:
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="metrics-sampler", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        """End the sampling thread and wait for it."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.sample()
            except Exception:  # a listing that failed once: the next tick tries again
                log.debug("metrics: sampling failed", exc_info=True)
            self._stop.wait(self.interval)

    def sample(self) -> None:
        """Read every container once (the thread calls this each interval). The reads
        happen outside the lock; containers no longer listed are forgotten."""
        containers = list(self.list_containers())
        at, wall = self.clock(), self.now()
        read = [(c, self.read(c.dirs)) for c in containers]
        with self._lock:
            seen = set()
            for cgroup, used in read:
                key = (cgroup.namespace, cgroup.pod, cgroup.container)
                seen.add(key)
                history = self._histories.get(key)
                if history is None or history.cgroup.dirs != cgroup.dirs:  # a new container
                    history = self._histories[key] = _History(cgroup)
                history.cgroup = cgroup
                if used is None:  # its cgroup is gone (it ended): nothing to say now
                    history.samples.clear()
                    continue
                last = history.samples[-1] if history.samples else None
                if last is not None and used.cpu_ns < last.usage.cpu_ns:  # counter reset
                    history.samples.clear()
                history.samples.append(_Sample(at, wall, used))
                _trim(history.samples, self.window)
            for key in set(self._histories) - seen:
                del self._histories[key]
            self._ticks.append((at, wall))
            while len(self._ticks) > 2 and self._ticks[1][0] <= at - self.window:
                self._ticks.popleft()

    # -- answers -------------------------------------------------------------

    def rates(self) -> dict[ContainerCgroup, Rate]:
        """Each container's CPU rate and working set, for those with two samples."""
        with self._lock:
            histories = [(h.cgroup, list(h.samples)) for h in self._histories.values()]
        out = {}
        for cgroup, samples in histories:
            if len(samples) < 2:
                continue
            first, last = _pair(samples, self.window)
            span = last.at - first.at
            if span <= 0:
                continue
            cpu = (last.usage.cpu_ns - first.usage.cpu_ns) / span
            out[cgroup] = Rate(round(cpu), last.usage.memory_working_set, span, last.wall)
        return out

    def pod_metrics(self) -> list[dict]:
        """PodMetrics of every pod with metrics (no labels: the API adds the pod's)."""
        pods: dict[tuple[str, str], list[tuple[str, Rate]]] = {}
        for cgroup, rate in self.rates().items():
            pods.setdefault((cgroup.namespace, cgroup.pod), []).append((cgroup.container, rate))
        created = _time(self.now())
        items = []
        for (namespace, pod), containers in sorted(pods.items()):
            containers.sort(key=lambda c: c[0])
            items.append(
                pod_metrics_object(
                    namespace,
                    pod,
                    created,
                    max(r.timestamp for _, r in containers),
                    min(r.window for _, r in containers),
                    [(name, r.nanocores, r.working_set) for name, r in containers],
                )
            )
        return items

    def node_metrics(self, nodes: Iterable[str] = ()) -> list[dict]:
        """NodeMetrics: each node's containers summed. A node in `nodes` with no
        container reports zero once the sampler has a window of its own."""
        sums: dict[str, list] = {}
        for cgroup, rate in self.rates().items():
            total = sums.setdefault(cgroup.node, [0, 0, rate.window, rate.timestamp])
            total[0] += rate.nanocores
            total[1] += rate.working_set
            total[2] = min(total[2], rate.window)
            total[3] = max(total[3], rate.timestamp)
        with self._lock:
            ticks = list(self._ticks)
        if len(ticks) >= 2:
            (first_at, _), (last_at, last_wall) = ticks[0], ticks[-1]
            for node in nodes:
                sums.setdefault(node, [0, 0, last_at - first_at, last_wall])
        created = _time(self.now())
        return [
            node_metrics_object(node, created, timestamp, window, cpu, memory)
            for node, (cpu, memory, window, timestamp) in sorted(sums.items())
        ]


def _trim(samples: deque[_Sample], window: float) -> None:
    """Keep the samples of the window and the newest one before it (the rate's start)."""
    newest = samples[-1].at
    while len(samples) > 2 and samples[1].at <= newest - window:
        samples.popleft()


def _pair(samples: list[_Sample], window: float) -> tuple[_Sample, _Sample]:
    """The newest sample and the newest one at least a window before it (or the
    oldest, while there is not a window of samples yet)."""
    last = samples[-1]
    first = samples[0]
    for sample in samples:
        if sample.at <= last.at - window:
            first = sample
    return first, last


# -- the shapes ----------------------------------------------------------------------


def pod_metrics_object(
    namespace: str,
    name: str,
    created: str,
    timestamp: datetime,
    window: float,
    containers: Iterable[tuple[str, int, int]],
    labels: Mapping[str, str] | None = None,
) -> dict:
    """A PodMetrics as metrics-server serves it; `containers`: (name, nanocores, bytes)."""
    meta: dict = {"name": name, "namespace": namespace, "creationTimestamp": created}
    if labels:
        meta["labels"] = dict(labels)
    return {
        "kind": "PodMetrics",
        "apiVersion": API_VERSION,
        "metadata": meta,
        "timestamp": _time(timestamp),
        "window": go_duration(window),
        "containers": [
            {"name": c, "usage": {"cpu": cpu_quantity(cpu), "memory": memory_quantity(mem)}}
            for c, cpu, mem in containers
        ],
    }


def node_metrics_object(
    name: str, created: str, timestamp: datetime, window: float, nanocores: int, memory: int
) -> dict:
    """A NodeMetrics as metrics-server serves it."""
    return {
        "kind": "NodeMetrics",
        "apiVersion": API_VERSION,
        "metadata": {"name": name, "creationTimestamp": created},
        "timestamp": _time(timestamp),
        "window": go_duration(window),
        "usage": {"cpu": cpu_quantity(nanocores), "memory": memory_quantity(memory)},
    }


def _time(at: datetime) -> str:
    """metav1.Time: RFC 3339 in UTC, whole seconds."""
    return at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def cpu_quantity(nanocores: int) -> str:
    """A Quantity of nanocores in apimachinery's canonical form, as metrics-server's
    `resource.NewScaledQuantity(n, -9)` prints: 2216637n, 12345u, 5m, 1."""
    return quantity.canonical(quantity.Quantity(Fraction(nanocores, 10**9)))


def memory_quantity(size: int) -> str:
    """A Quantity of bytes in BinarySI form: 14224Ki, 2Mi; under 1024, plain bytes."""
    return str(size) if -1024 < size < 1024 else quantity.format_memory(size)


def parse_quantity(text: str) -> Fraction:
    """The value of a Kubernetes quantity ("250m" -> 1/4, "2Mi" -> 2097152, "1e3");
    ValueError if it is not one."""
    return quantity.parse_quantity(text.strip()).value


def go_duration(seconds: float) -> str:
    """Go's time.Duration.String(), as metav1.Duration is written: 10s, 10.421s, 1m0.5s."""
    ns = round(seconds * 1e9)
    if ns == 0:
        return "0s"
    sign, ns = ("-", -ns) if ns < 0 else ("", ns)
    if ns < 1_000_000_000:  # under a second: ms, µs or ns
        for unit, size in (("ms", 1_000_000), ("µs", 1_000), ("ns", 1)):
            if ns >= size:
                return sign + _fraction(ns, size) + unit
    hours, rest = divmod(ns, 3600 * 10**9)
    minutes, rest = divmod(rest, 60 * 10**9)
    text = _fraction(rest, 10**9) + "s"
    if hours:
        return f"{sign}{hours}h{minutes}m{text}"
    if minutes:
        return f"{sign}{minutes}m{text}"
    return sign + text


def _fraction(value: int, unit: int) -> str:
    whole, frac = divmod(value, unit)
    if not frac:
        return str(whole)
    digits = len(str(unit)) - 1
    return f"{whole}.{frac:0{digits}d}".rstrip("0")
