"""kubelet's pod workers: each pod's containers started (the sidecars forked from the
zygote while the apps start), watched, restarted as the pod's restartPolicy says
with kubelet's back-off (CrashLoopBackOff), held with kubelet's reason while they
cannot be created (ErrImagePull, CreateContainerConfigError) and tried again, and
stopped. The pod records (`PodRuntime`) are the lab's; this part is given the
container runtime service, the event recorder, the lock the records are kept
under, and two callbacks: a pod's status changed, a container stopped running.
"""

from __future__ import annotations

import subprocess
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from netlab import objects
from netlab.events import EventRecorder
from netlab.node.bundle import Bind
from netlab.node.containers import (
    BACKOFF_MAX,
    BACKOFF_START,
    PAUSE_NAME,
    PULL_FAILURES,
    ContainerConfigError,
    read_environ,
)
from netlab.node.cri import ContainerRuntimeService, ContainerStart
from netlab.node.metrics import ContainerCgroup
from netlab.plan import PodPlan
from netlab.realize.processes import stop_processes
from netlab.realize.runtime import ContainerRequest, RuntimeProcess
from netlab.spec.model import ContainerSpec
from netlab.system import SIDECAR_CONTAINER


class ContainerInputs(Protocol):
    """What a container takes from outside its pod spec: kubelet's volume manager and
    its env from ConfigMaps, Secrets and the pod's fields."""

    def binds(self, pod: PodPlan, container: ContainerSpec) -> tuple[Bind, ...]:
        """Its volumeMounts, every volume of the pod set up; VolumeNotReady: not yet."""
        ...

    def env(
        self, pod: PodPlan, container: ContainerSpec
    ) -> tuple[Mapping[str, str], Mapping[str, str]]:
        """(its envFrom variables, its env valueFrom variables); ContainerConfigError if
        an object or key it needs is missing."""
        ...


@dataclass
class PodRuntime:
    plan: PodPlan
    status: objects.PodStatus
    procs: dict[str, subprocess.Popen] = field(default_factory=dict)
    pause: RuntimeProcess | None = None  # the sandbox's PID 1 (shareProcessNamespace)
    deleted: bool = False
    meta: objects.PodMeta | None = None  # labels and annotations changed since it was made

    @property
    def labels(self) -> Mapping[str, str]:
        """The pod's labels now (a client may relabel a running pod)."""
        return self.meta.labels if self.meta is not None else self.plan.labels

    @property
    def owned(self) -> bool:
        """Still its Deployment's or Job's: a relabeled pod its owner no longer selects
        is released (orphaned), as the ReplicaSet controller releases it."""
        return bool(self.plan.owner) and (self.meta is None or not self.meta.released)


class PodWorkers:
    def __init__(
        self,
        cri: ContainerRuntimeService,
        events: EventRecorder,
        lock: threading.RLock,
        log_path: Callable[[PodPlan, str], Path],
        published: Callable[[PodRuntime], None],
        not_running: Callable[[PodRuntime], None],
        active: Callable[[], bool],
        fork_sidecars: bool = True,
        inputs: ContainerInputs | None = None,
    ) -> None:
        self.cri, self.events, self.lock = cri, events, lock
        self.inputs = inputs  # volumes and env from other objects; None: a container has none
        self.log_path = log_path
        self.published = published  # the pod's status changed: publish it
        self.not_running = not_running  # a container ended: out of the endpoints, probe anew
        self.active = active  # False once the lab stops
        self.fork_sidecars = fork_sidecars

    def forked(self, rt: PodRuntime, index: int) -> bool:
        return self.fork_sidecars and rt.plan.template.containers[index].name == SIDECAR_CONTAINER

    # -- starting ---------------------------------------------------------

    def start(
        self, runtimes: Sequence[PodRuntime], before_apps: Callable[[], None] | None = None
    ) -> list[tuple[PodRuntime, int]]:
        """Start every container of these pods: all, or none (RealizeError). The zygote
        forks the sidecars meanwhile (their requests go out first); `before_apps` runs
        before any app does (the mesh's interception). The containers started, for
        `started_events` once the pods are published."""
        wanted = [(rt, i) for rt in runtimes for i in range(len(rt.plan.template.containers))]
        forked = [(rt, i) for rt, i in wanted if self.forked(rt, i)]
        execed = [(rt, i) for rt, i in wanted if not self.forked(rt, i)]
        forks: dict[str, object] = {}

        def fork() -> None:
            try:
                forks["procs"] = self.cri.run([self._request(rt, i) for rt, i in forked])
            except BaseException as exc:  # raised below, in the caller's thread
                forks["error"] = exc

        forking = threading.Thread(target=fork, name="fork-sidecars") if forked else None
        if forking is not None:
            forking.start()
        held: list[tuple[PodRuntime, int, ContainerConfigError]] = []
        try:
            self._start_pauses([rt for rt in runtimes if rt.plan.template.share_process_namespace])
            if before_apps is not None:
                before_apps()
            requests = []
            for rt, i in list(execed):
                try:
                    requests.append(self._request(rt, i))
                except ContainerConfigError as exc:  # kubelet would not create it (yet)
                    execed.remove((rt, i))
                    held.append((rt, i, exc))
            procs = self.cri.run(requests)
        except BaseException:
            if forking is not None:  # all or nothing: no sidecar left without its pod
                forking.join()
                stop_processes(forks.get("procs", ()), grace=0.0)
            raise
        if forking is not None:
            forking.join()
        if "error" in forks:
            stop_processes(procs, grace=0.0)
            raise forks["error"]
        started = list(zip(execed + forked, procs + forks.get("procs", []), strict=True))
        for (rt, index), proc in started:
            self.attach(rt, index, proc)
        for rt, index, exc in held:
            self._hold(rt, index, exc)
        return sorted(((rt, i) for (rt, i), _ in started), key=_order)

    def started_events(self, started: Sequence[tuple[PodRuntime, int]]) -> None:
        for rt, index in started:
            container = rt.plan.template.containers[index]
            self._started_events(rt.plan, container.name, container.image)

    def _request(self, rt: PodRuntime, index: int) -> ContainerRequest:
        """What the runtime needs to start container `index` of the pod (its image
        resolved, its bundle written); ContainerConfigError if it cannot be made yet."""
        state = rt.status.containers[index]
        container = rt.plan.template.containers[index]
        fork = self.forked(rt, index)
        binds, env_from, env_refs = (), {}, {}
        if self.inputs is not None and not fork:  # the volumes first, as kubelet waits for them
            binds = self.inputs.binds(rt.plan, container)
            env_from, env_refs = self.inputs.env(rt.plan, container)
        start = ContainerStart(
            rt.plan,
            index,
            self.log_path(rt.plan, container.name),
            fork=fork,
            pause_pid=rt.pause.pid if rt.pause else None,
            backing_off=state.reason in PULL_FAILURES,
            binds=binds,
            env_from=env_from,
            env_refs=env_refs,
        )
        prepared = self.cri.prepare(start)
        if not start.fork:
            state.image_id = prepared.image_id
        return prepared.request

    def _start_pauses(self, runtimes: Sequence[PodRuntime]) -> None:
        """The PID 1 of the pods that share a PID namespace (shareProcessNamespace)."""
        plans = [rt.plan for rt in runtimes]
        logs = [self.log_path(p, PAUSE_NAME) for p in plans]
        for rt, proc in zip(runtimes, self.cri.start_pauses(plans, logs), strict=True):
            rt.pause = proc

    def start_container(self, rt: PodRuntime, index: int) -> None:
        try:
            request = self._request(rt, index)
        except ContainerConfigError as exc:
            self._hold(rt, index, exc)
            return
        (proc,) = self.cri.run([request])
        self.attach(rt, index, proc)
        container = rt.plan.template.containers[index]
        self._started_events(rt.plan, container.name, container.image)

    def attach(self, rt: PodRuntime, index: int, proc: RuntimeProcess, fresh: bool = True) -> None:
        """The container runs as `proc`: on the lab's record, in the pod's status, watched.
        `fresh`: it has just started (else it was running when the supervisor came)."""
        container = rt.plan.template.containers[index]
        if fresh:
            ident = f"{rt.plan.namespace}/{rt.plan.name}/{container.name}"
            self.cri.record_pid(proc.pid, "container", ident)
        state = rt.status.containers[index]
        state.state, state.pid, state.finished_at = "running", proc.pid, None
        state.image, state.message = container.image or "", None
        state.container_id = self.cri.container_id(rt.plan, container.name, self.forked(rt, index))
        if fresh or state.started_at is None:
            state.started_at = objects.now()
        rt.procs[container.name] = proc
        self.cri.runtime.on_exit(
            proc, lambda p, rt=rt, i=index: self.ended(rt, i, p.returncode, p.oom_killed)
        )

    def _started_events(self, plan: PodPlan, name: str, image: str | None) -> None:
        """kubelet's events for a container it has started."""
        shown = image or "host"
        self.events.pod_all(
            plan.namespace,
            plan.name,
            [
                ("Pulled", f'Container image "{shown}" already present on machine'),
                ("Created", f"Created container {name}"),
                ("Started", f"Started container {name}"),
            ],
        )

    # -- waiting, ending, restarting --------------------------------------

    def _hold(self, rt: PodRuntime, index: int, exc: ContainerConfigError) -> None:
        """The container cannot be created yet (its image, its configuration): it waits
        with kubelet's reason, and is tried again after a back-off."""
        state = rt.status.containers[index]
        state.state, state.reason, state.message = "waiting", exc.reason, exc.waiting_message
        state.holds += 1
        reason, message = exc.warning
        self.events.pod(rt.plan.namespace, rt.plan.name, reason, message, type_="Warning")
        self._later(exc.retry_after(state.holds), self._retry, rt, index)
        self.published(rt)

    def _retry(self, rt: PodRuntime, index: int) -> None:
        with self.lock:
            if rt.deleted or not self.active() or rt.status.containers[index].state != "waiting":
                return
            self.start_container(rt, index)
            self.published(rt)

    def ended(self, rt: PodRuntime, index: int, code: int | None, oom: bool = False) -> None:
        """Container `index` of the pod ended with `code`: restart it as its policy says."""
        with self.lock:
            if rt.deleted or not self.active():
                return
            state = rt.status.containers[index]
            state.end(code, objects.now(), oom)
            name = rt.plan.template.containers[index].name
            if oom:
                self.events.pod(
                    rt.plan.namespace, rt.plan.name, "OOMKilled",
                    f"Container {name} was killed: it used more memory than its limit",
                    type_="Warning",
                )  # fmt: skip
            policy = rt.plan.template.restart_policy
            if policy == "Always" or (policy == "OnFailure" and code != 0):
                state.last = state.terminated()  # the run that ended is its lastState now
                state.state, state.reason = "waiting", "CrashLoopBackOff"
                self.events.pod(
                    rt.plan.namespace, rt.plan.name, "BackOff",
                    f"Back-off restarting failed container {name} in pod {rt.plan.name}",
                    type_="Warning",
                )  # fmt: skip
                delay = min(BACKOFF_MAX, BACKOFF_START * 2**state.restarts)
                self._later(delay, self._restart, rt, index)
            self.not_running(rt)

    def _restart(self, rt: PodRuntime, index: int) -> None:
        with self.lock:
            if rt.deleted or not self.active():
                return
            rt.status.containers[index].restarts += 1
            self.start_container(rt, index)
            self.published(rt)

    @staticmethod
    def _later(delay: float, what: Callable, *args) -> None:
        timer = threading.Timer(delay, what, args)
        timer.daemon = True
        timer.start()

    # -- stopping ---------------------------------------------------------

    def evict(self, rt: PodRuntime, message: str) -> None:
        """kubelet's eviction manager: the pod's containers are killed and stay down, it
        is Failed with reason Evicted and the manager's `message` (an event says so)."""
        self.events.pod(rt.plan.namespace, rt.plan.name, "Evicted", message, type_="Warning")
        rt.status.evicted = message
        self.stop([rt], 0.0)
        rt.procs.clear()  # ended: nothing of them is stopped again
        stamp = objects.now()
        for state in rt.status.containers:
            if state.state == "running":
                state.end(137, stamp)

    def stop(self, runtimes: Sequence[PodRuntime], grace: float) -> None:
        """Stop the pods' containers: SIGTERM to all, then SIGKILL to those still running
        `grace` seconds later."""
        procs = []
        for rt in runtimes:
            for name in rt.procs:
                self.events.pod(
                    rt.plan.namespace, rt.plan.name, "Killing", f"Stopping container {name}"
                )
            procs += processes_of(rt)
        for proc in procs:
            self.cri.runtime.forget(proc)
        stop_processes(procs, grace=grace)

    # -- what runs --------------------------------------------------------

    def entry(self, rt: PodRuntime, container: str | None = None) -> list[str]:
        """The command prefix that enters a running container of the pod: the one named,
        else the first that is not the sidecar. LookupError: no such container;
        ProcessLookupError: it is not running."""
        names = [c.name for c in rt.plan.template.containers]
        if container is None:
            container = next((n for n in names if n != SIDECAR_CONTAINER), names[0])
        elif container not in names:
            raise LookupError(f"container {container} is not valid for pod {rt.plan.name}")
        proc = rt.procs.get(container)
        if proc is None or proc.poll() is not None:
            raise ProcessLookupError(
                f"container {container} in pod {rt.plan.name} is not running; "
                f"`netlab logs {rt.plan.name} -c {container}` shows why"
            )
        return self.cri.entry(proc.pid)

    def environ(self, rt: PodRuntime, container: str | None = None) -> dict[str, str]:
        """The environment the running container was started with (its app's, as runc
        gave it: image, pod spec, ConfigMaps and Secrets), for a command exec'd into it;
        empty if it is not running."""
        names = [c.name for c in rt.plan.template.containers]
        if container is None:
            container = next((n for n in names if n != SIDECAR_CONTAINER), names[0])
        proc = rt.procs.get(container)
        if proc is None or proc.poll() is not None:
            return {}
        return read_environ(proc.pid)

    def cgroups(self, runtimes: Sequence[PodRuntime]) -> list[ContainerCgroup]:
        """The running containers' cgroups (the forked sidecars have none of their own)."""
        running = [
            (rt.plan, container.name)
            for rt in runtimes
            for index, container in enumerate(rt.plan.template.containers)
            if not self.forked(rt, index)
            and (proc := rt.procs.get(container.name)) is not None
            and proc.returncode is None
        ]
        return self.cri.container_cgroups(running)


def processes_of(rt: PodRuntime) -> list:
    """Every process the pod runs: its containers', and its pause if it has one."""
    return [*rt.procs.values(), *([rt.pause] if rt.pause else [])]


def _order(pair: tuple[PodRuntime, int]) -> tuple:
    rt, index = pair
    return (rt.plan.namespace, rt.plan.name, index)
