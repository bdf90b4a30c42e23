"""The container runtime service, CRI's role for the lab's kubelets: pod sandboxes,
images, container bundles, and the runtime process that runs them (runc through
netlab.realize.runtimed). It is given the lab's run directory, its name and where
to record the processes it starts, and nothing of the Lab: the pod manager asks it
for sandboxes and containers as a kubelet asks containerd.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from netlab.node.bundle import Bind
from netlab.node.cgroups import CgroupError, cgroups_path, container_dirs, own_cgroups
from netlab.node.containers import (
    PAUSE_ARGV,
    Bundles,
    ContainerConfigError,
    enter_argv,
    image_command,
    pause_ident,
    process_cgroup_procs,
    runc_id,
)
from netlab.node.images import ImageError, ImagePullError, ImageStore
from netlab.node.metrics import ContainerCgroup
from netlab.node.sandbox import Sandboxes, SandboxRequest
from netlab.plan import PodPlan
from netlab.plan.names import lab_prefix
from netlab.realize import netns
from netlab.realize.processes import container_env, container_path
from netlab.realize.runtime import ContainerRequest, Runtime, RuntimeProcess
from netlab.spec.model import ContainerSpec


@dataclass(frozen=True)
class ContainerStart:
    """One container to start: which, in which pod, how."""

    pod: PodPlan
    index: int
    log: Path
    fork: bool = False  # a sidecar forked from the zygote, not a runc container
    pause_pid: int | None = None  # the pod's shared PID namespace's PID 1
    backing_off: bool = False  # its image could not be pulled last time
    binds: tuple[Bind, ...] = ()  # its volumeMounts
    env_from: Mapping[str, str] = field(default_factory=dict)  # envFrom's variables
    env_refs: Mapping[str, str] = field(default_factory=dict)  # env valueFrom's

    @property
    def container(self) -> ContainerSpec:
        return self.pod.template.containers[self.index]

    @property
    def ident(self) -> str:
        return f"{self.pod.namespace}/{self.pod.name}/{self.container.name}"


@dataclass(frozen=True)
class Prepared:
    request: ContainerRequest
    image_id: str


class ContainerRuntimeService:
    def __init__(
        self,
        run_dir: Path,
        lab: str,
        record_pid: Callable[[int, str, str], None],
        images: ImageStore | None = None,
    ) -> None:
        self.record_pid = record_pid
        self.runtime = Runtime(run_dir, record_pid)  # outlives the supervisor
        self.sandboxes = Sandboxes(self.runtime)
        self.bundles = Bundles(run_dir, lab_prefix(lab), self.sandboxes)
        self.images = images if images is not None else ImageStore()

    # -- the runtime process ----------------------------------------------

    def start(self) -> None:
        self.runtime.start_daemon()

    def stop(self) -> None:
        """End the runtime process (the pod manager has stopped the containers)."""
        self.runtime.shutdown()

    # -- images -----------------------------------------------------------

    def check_images(self, pods: Iterable[PodPlan]) -> None:
        """Every image the pods name is here (built, imported, or pulled now);
        ImageError naming the pod and container if not."""
        seen: set[tuple] = set()
        for pod in pods:
            for c in pod.template.containers:
                policy = c.recorded.get("imagePullPolicy")
                if (c.image, policy) in seen:
                    continue
                seen.add((c.image, policy))
                try:
                    self.images.resolve(c.image, policy)
                except ImagePullError as exc:
                    raise ImageError(f"pod {pod.name}, container {c.name}: {exc.message}") from exc
                except ImageError as exc:
                    raise ImageError(f"pod {pod.name}, container {c.name}: {exc}") from exc

    # -- sandboxes --------------------------------------------------------

    def run_sandboxes(self, pods: Sequence[PodPlan]) -> None:
        """The pods' shared UTS and IPC namespaces (their network is the CNI's)."""
        self.sandboxes.create([SandboxRequest(p.netns, p.name) for p in pods])

    def remove_sandbox(self, pod: PodPlan) -> None:
        self.sandboxes.remove(pod.netns)

    def start_pauses(self, pods: Sequence[PodPlan], logs: Sequence[Path]) -> list[RuntimeProcess]:
        """The PID 1 of each pod that shares one PID namespace among its containers
        (shareProcessNamespace), as the CRI's pause container is."""
        if not pods:
            return []
        requests = []
        for pod, log in zip(pods, logs, strict=True):
            prepared = self.bundles.prepare_pause(pod)
            requests.append(
                ContainerRequest(
                    pause_ident(pod),
                    PAUSE_ARGV,
                    {"PATH": container_path()},
                    pod.netns,
                    log,
                    bundle=prepared.bundle,
                    runc_id=prepared.runc_id,
                    lower=prepared.lower,
                    cgroups_path=prepared.cgroups_path,
                )
            )
        procs = self.runtime.start(requests)
        for pod, proc in zip(pods, procs, strict=True):
            self.record_pid(proc.pid, "container", pause_ident(pod))
        return procs

    # -- containers -------------------------------------------------------

    def prepare(self, start: ContainerStart) -> Prepared:
        """What the runtime needs to start the container: its image resolved, its
        bundle written. ContainerConfigError: it cannot be created (yet)."""
        pod, container = start.pod, start.container
        if start.fork:  # `python -m mesh ...`, forked: the zygote runs mesh
            request = ContainerRequest(
                start.ident,
                container.argv[3:],
                container_env(pod, container),
                str(netns.netns_path(pod.netns)),
                start.log,
                True,
                sandbox=self.bundles.sandbox_of(pod),
            )
            return Prepared(request, "")
        try:
            image = self.images.resolve(container.image, container.recorded.get("imagePullPolicy"))
        except ImagePullError as exc:
            reason = "ImagePullBackOff" if start.backing_off else exc.reason
            raise ContainerConfigError(reason, exc.message) from exc
        except ImageError as exc:
            raise ContainerConfigError("InvalidImageName", str(exc)) from exc
        own_path = any(e.startswith("PATH=") for e in image.config.env)
        env = container_env(pod, container, host_path=not own_path)
        if start.env_from or start.env_refs:  # envFrom < env (its values, then valueFrom)
            env = {**env, **start.env_from, **dict(container.env), **start.env_refs}
        argv, env = image_command(container, image.config, env)
        if not argv:
            raise ContainerConfigError(
                "CreateContainerError", "no command specified: the image has no entrypoint"
            )
        bundle = self.bundles.prepare(
            pod,
            container,
            argv,
            env,
            lower=str(image.rootfs),
            image_user=image.config.user or None,
            cwd=image.config.working_dir or "/",
            pid_namespace=Path(f"/proc/{start.pause_pid}/ns/pid") if start.pause_pid else None,
            volumes=start.binds,
        )
        request = ContainerRequest(
            start.ident,
            argv,
            env,
            pod.netns,
            start.log,
            bundle=bundle.bundle,
            runc_id=bundle.runc_id,
            lower=bundle.lower,
            cgroups_path=bundle.cgroups_path,
        )
        return Prepared(request, image.image_id)

    def run(self, requests: Sequence[ContainerRequest]) -> list[RuntimeProcess]:
        """Start these containers (all or none)."""
        return self.runtime.start(requests)

    @staticmethod
    def container_id(pod: PodPlan, container: str, forked: bool) -> str:
        return f"{'zygote' if forked else 'runc'}://{runc_id(pod.netns, container)}"

    def entry(self, pid: int) -> list[str]:
        """The command prefix that enters a running container (exec, exec probes): its
        namespaces and its cgroups."""
        return enter_argv(pid, process_cgroup_procs(self.bundles.cgroups, pid))

    def container_cgroups(self, running: Iterable[tuple[PodPlan, str]]) -> list[ContainerCgroup]:
        """The cgroups of these running runc containers, (pod, container name) each."""
        pid, layout = self.runtime.daemon_pid, self.bundles.cgroups
        if pid is None:
            return []
        try:  # read once per listing, not once per container (metrics ask every 2 s)
            own = own_cgroups(pid)
        except CgroupError:
            return []  # the runtime is gone
        found = []
        for plan, name in running:
            path = cgroups_path(layout, self.bundles.lab_prefix, runc_id(plan.netns, name))
            dirs = container_dirs(layout, path, pid, own=own)
            found.append(ContainerCgroup(plan.namespace, plan.name, name, plan.node, dirs))
        return found
