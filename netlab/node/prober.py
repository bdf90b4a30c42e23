"""The lab's kubelet prober: readiness of every pod, on one thread.

A container with a `readinessProbe` is ready when its probe passes (period,
timeout and thresholds as given; the lab's defaults are 1 s and 1 failure,
so endpoints follow within about a second). A container without one is
ready when each TCP port it declares (and each numeric TCP targetPort of a
Service selecting it) accepts connections, checked every IMPLICIT_PERIOD;
with no such port it is ready once running. A pod is ready when all its
containers are.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from ipaddress import IPv4Address

from netlab.node import probes
from netlab.spec.model import ContainerSpec, ProbeSpec

log = logging.getLogger(__name__)

IMPLICIT_PERIOD = 0.25  # seconds between implicit TCP checks
IMPLICIT_TIMEOUT = 0.25
TICK = 0.05

Key = tuple[str, str]


@dataclass
class Check:
    """One container's readiness check and its running tally."""

    container: str
    probe: ProbeSpec | None  # None: implicit TCP checks of `ports`
    ports: tuple[int, ...] = ()
    due: float = 0.0
    passed: int = 0
    failed: int = 0
    ready: bool = False
    running: bool = False  # an exec/http check in flight

    @property
    def period(self) -> float:
        return self.probe.period if self.probe else IMPLICIT_PERIOD

    @property
    def timeout(self) -> float:
        return self.probe.timeout if self.probe else IMPLICIT_TIMEOUT

    def record(self, ok: bool) -> bool:
        """Count a result; whether readiness changed."""
        success = self.probe.success_threshold if self.probe else 1
        failure = self.probe.failure_threshold if self.probe else 1
        if ok:
            self.passed, self.failed = self.passed + 1, 0
            if not self.ready and self.passed >= success:
                self.ready = True
                return True
        else:
            self.failed, self.passed = self.failed + 1, 0
            if self.ready and self.failed >= failure:
                self.ready = False
                return True
        return False


@dataclass
class Target:
    key: Key
    ip: IPv4Address
    node_path: str
    pod_netns: str
    checks: list[Check] = field(default_factory=list)
    # a container's name -> the command prefix that enters it (exec probes run inside)
    enter: Callable[[str], Sequence[str]] | None = None

    @property
    def ready(self) -> bool:
        return all(c.ready for c in self.checks)


def checks_for(
    containers: tuple[ContainerSpec, ...],
    extra_ports: tuple[int, ...],
    start: float,
    not_serving: frozenset[str] = frozenset(),
) -> list[Check]:
    """The checks of a pod's containers (`extra_ports`: Services' numeric
    TCP target ports, checked on the first container without a probe that is
    not named in `not_serving`, e.g. a sidecar, which only forwards them)."""
    checks = []
    extra = set(extra_ports)
    for container in containers:
        probe = container.readiness_probe
        if probe is not None:
            port = _port_number(probe, container)
            probe_ports = (port,) if port is not None else ()
            due = start + probe.initial_delay
            checks.append(Check(container.name, probe, probe_ports, due=due))
            continue
        ports = {p.container_port for p in container.ports if p.protocol == "TCP"}
        if container.name not in not_serving:
            ports |= extra
            extra = set()
        checks.append(Check(container.name, None, tuple(sorted(ports)), due=start))
    return checks


def _entry(target: Target, check: Check) -> Sequence[str]:
    """How an exec probe enters its container; a container not running fails it."""
    if target.enter is None:
        return ("ip", "netns", "exec", target.pod_netns)
    try:
        return target.enter(check.container)
    except Exception:
        return ("false",)


def _port_number(probe: ProbeSpec, container: ContainerSpec) -> int | None:
    if isinstance(probe.port, int):
        return probe.port
    for port in container.ports:
        if port.name == probe.port:
            return port.container_port
    return None


class Prober:
    """Runs due checks every TICK; calls `on_change(key, ready)` when a pod's
    readiness flips (never while holding its own lock)."""

    def __init__(self, on_change: Callable[[Key, bool], None]):
        self.on_change = on_change
        self.targets: dict[Key, Target] = {}
        self.lock = threading.Lock()
        self.stopped = threading.Event()
        self.pool = ThreadPoolExecutor(max_workers=4, thread_name_prefix="probe")
        self.thread = threading.Thread(target=self._loop, name="prober", daemon=True)
        self.thread.start()

    def add(self, target: Target, ready: bool = False) -> None:
        """Probe a pod; a pod probed already keeps the state of every check
        that is unchanged (a new Service must not make ready pods unready).
        `ready`: it was ready when an earlier supervisor last looked (it stays
        so until its checks fail as often as their thresholds say)."""
        if ready:
            for check in target.checks:
                check.ready = True
        with self.lock:
            old = self.targets.get(target.key)
            if old is not None:
                kept = {(c.container, c.probe, c.ports): c for c in old.checks}
                target.checks = [
                    kept.get((c.container, c.probe, c.ports), c) for c in target.checks
                ]
            self.targets[target.key] = target

    def reset(self, key: Key) -> None:
        """A container of the pod ended: every check must pass again."""
        with self.lock:
            target = self.targets.get(key)
            for check in target.checks if target else ():
                check.ready, check.passed, check.failed = False, 0, 0

    def remove(self, key: Key) -> None:
        with self.lock:
            self.targets.pop(key, None)

    def ready(self, key: Key) -> bool:
        with self.lock:
            target = self.targets.get(key)
            return target is not None and target.ready

    def close(self) -> None:
        self.stopped.set()
        self.thread.join(5)
        self.pool.shutdown(wait=True, cancel_futures=True)

    def _loop(self) -> None:
        while not self.stopped.wait(TICK):
            try:
                self._tick()
            except Exception:  # a probe must never end the prober
                log.exception("readiness probing failed")

    def _tick(self) -> None:
        now = time.monotonic()
        tcp: dict[str, list[tuple[Target, Check]]] = {}
        with self.lock:
            for target in self.targets.values():
                for check in target.checks:
                    if check.running or check.due > now:
                        continue
                    check.due = now + check.period
                    if check.probe is None or check.probe.kind == "tcpSocket":
                        tcp.setdefault(target.node_path, []).append((target, check))
                    else:
                        check.running = True
                        self.pool.submit(self._slow, target, check)
        changed: list[Target] = []
        for node_path, items in tcp.items():
            wanted = [(t.ip, port) for t, c in items for port in c.ports]
            timeout = max(c.timeout for _, c in items)
            results = probes.tcp_many(node_path, wanted, timeout) if wanted else {}
            with self.lock:
                for target, check in items:
                    ok = all(results.get((target.ip, port), False) for port in check.ports)
                    if self._record(target, check, ok):
                        changed.append(target)
        self._notify(changed)

    def _slow(self, target: Target, check: Check) -> None:
        probe = check.probe
        assert probe is not None
        try:
            if probe.kind == "httpGet":
                port = check.ports[0] if check.ports else 0
                ok = probes.http_get(target.node_path, target.ip, port, probe.path, probe.timeout)
            else:
                ok = probes.run_command(_entry(target, check), probe.command, probe.timeout)
        except Exception:
            log.exception("probe of %s/%s failed", *target.key)
            ok = False
        with self.lock:
            check.running = False
            changed = self._record(target, check, ok)
        if changed:
            self._notify([target])

    def _record(self, target: Target, check: Check, ok: bool) -> bool:
        """Count a result (lock held); whether the pod's readiness flipped."""
        if self.targets.get(target.key) is not target:
            return False  # removed meanwhile
        before = target.ready
        check.record(ok)
        return target.ready != before

    def _notify(self, changed: list[Target]) -> None:
        for target in changed:
            self.on_change(target.key, target.ready)
