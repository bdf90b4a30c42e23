"""The container runtime's client, CRI's role for the lab: from a pod and one of its
containers, the OCI bundle runc will run (config.json written here; the root
filesystem is mounted by the runtime process, which owns the container's life).

The default image is the host's root, read-only under the container's own
writable layer: a manifest without `image:` runs what it ran before, now in a
container. netlab's own system images (the DNS server, the activator, the
collector) are that image too, with the lab's run directory bound in, where they
find the lab API's socket.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import netlab
from netlab.errors import NetlabError
from netlab.node import bundle as oci
from netlab.node.cgroups import CgroupError, CgroupLayout, cgroups_path, own_cgroups
from netlab.node.cni import etc_dir
from netlab.node.imagepolicy import HOST_IMAGES
from netlab.node.images import ImageConfig
from netlab.node.limits import linux_resources
from netlab.node.sandbox import Sandboxes
from netlab.node.security import (
    UserLookupError,
    effective_context,
    oci_linux_security,
    oci_process_security,
    pod_desc,
    run_as_non_root_error,
)
from netlab.paths import STATE_ROOT
from netlab.plan import PodPlan
from netlab.plan.names import bounded
from netlab.realize.netns import netns_path
from netlab.realize.processes import alive_as_recorded
from netlab.realize.runtime import STATE_DIR
from netlab.spec.model import ContainerSpec, Resources

HOST_ROOT = "/"
SYSTEM_IMAGES = HOST_IMAGES - {"host"}  # netlab's own: they find the lab API in its run dir
PULL_FAILURES = ("ErrImagePull", "ImagePullBackOff")
PAUSE_NAME = "POD"  # kubelet's name for a pod's sandbox container
# the pause: PID 1 of a shared PID namespace, which reaps the orphans it inherits
PAUSE_ARGV = ("/bin/sh", "-c", 'trap "exit 0" TERM INT; while :; do sleep 3600 & wait; done')
ETC_FILES = ("hosts", "resolv.conf", "hostname")
RUNC_ID_MAX = 200
MEMSW = "memory.memsw.limit_in_bytes"  # there only where the kernel accounts swap
_NOT_IN_IDS = re.compile(r"[^\w+.-]")


def etc_files(pod: PodPlan) -> dict[str, Path]:
    """kubelet's files of the pod, bound over the container's: /etc/hosts -> the pod's."""
    return {f"/etc/{name}": etc_dir(pod.netns) / name for name in ETC_FILES}


def pause_ident(pod: PodPlan) -> str:
    return f"{pod.namespace}/{pod.name}/{PAUSE_NAME}"


def runc_id(netns: str, container: str) -> str:
    """`nl-lab.pod+container`: the lab's prefix first, as every object of the lab;
    '+' is in no Kubernetes name."""
    return _NOT_IN_IDS.sub("_", bounded(f"{netns}+{container}", RUNC_ID_MAX))


def oci_resources(resources: Resources, layout: CgroupLayout) -> dict:
    """The OCI linux.resources for the container's requests and limits; memory+swap
    only where the kernel accounts swap (cgroup v1 without it refuses the write)."""
    cgroup2 = layout.mode == "v2"
    out = linux_resources(resources, cgroup2=cgroup2)
    memory = out.get("memory")
    memory_mount = layout.mounts.get("memory")
    if memory and not cgroup2 and not (memory_mount and (memory_mount / MEMSW).exists()):
        memory.pop("swap", None)
    return out


NSENTER = shutil.which("nsenter") or "/usr/bin/nsenter"  # found with the host's PATH, not
# the container's (its environment is the command's)
# joins the cgroups named before `--` (its own pid into each cgroup.procs), then execs the
# rest: what is exec'd into a container counts against its limits, as with `runc exec`
_JOIN_CGROUPS = 'while [ "$1" != -- ]; do echo $$ > "$1" || exit 126; shift; done; shift; exec "$@"'


def enter_argv(pid: int, cgroup_procs: Sequence[Path] = ()) -> list[str]:
    """A command prefix that enters every namespace of a container's process, and its
    cgroups (their `cgroup.procs` files), as `runc exec` does (nsenter forks into its
    PID namespace; entering the mount namespace puts the command at the container's
    root)."""
    argv = [NSENTER, "--target", str(pid), "--all", "--"]
    if not cgroup_procs:
        return argv
    return ["/bin/sh", "-c", _JOIN_CGROUPS, "netlab-exec", *map(str, cgroup_procs), "--", *argv]


def process_cgroup_procs(layout: CgroupLayout, pid: int) -> list[Path]:
    """The `cgroup.procs` file of process `pid`'s cgroup in each hierarchy runc puts
    containers in ([] if it is gone)."""
    try:
        own = own_cgroups(pid)
    except CgroupError:
        return []
    found: list[Path] = []
    for h in layout.container_hierarchies:
        path = next((own[k] for k in h.keys if k in own), None)
        directory = h.directory(path) if path is not None else None
        if directory is not None and (directory / "cgroup.procs") not in found:
            found.append(directory / "cgroup.procs")
    return found


def read_environ(pid: int) -> dict[str, str]:
    """The environment process `pid` was started with ({} if it is gone)."""
    try:
        raw = Path(f"/proc/{pid}/environ").read_bytes()
    except OSError:
        return {}
    pairs = (entry.split(b"=", 1) for entry in raw.split(b"\0") if b"=" in entry)
    return {k.decode(errors="replace"): v.decode(errors="replace") for k, v in pairs}


def image_command(
    container: ContainerSpec, image: ImageConfig, env: Mapping[str, str]
) -> tuple[list[str], dict[str, str]]:
    """What runs and with which environment, as kubelet decides: `command` replaces
    the image's entrypoint, `args` its cmd; the image's environment first, the pod's
    over it."""
    if container.command:
        argv = [*container.command, *container.args]
    elif container.args:
        argv = [*image.entrypoint, *container.args]
    else:
        argv = [*image.entrypoint, *image.cmd]
    merged = dict(e.split("=", 1) for e in image.env if "=" in e)
    merged.update(env)
    return argv, merged


def container_pid(run_dir: Path, container_id: str) -> int | None:
    """The host PID of a running runc container (`runc://ID` as its status shows it),
    from the runtime's state in the lab's run directory; None if it is not running."""
    scheme, _, ident = container_id.partition("://")
    if scheme != "runc" or not ident or "/" in ident:
        return None
    try:
        with open(run_dir / STATE_DIR / ident / "state.json") as f:
            state = json.load(f)
        pid = int(state["init_process_pid"])
        started = int(state.get("init_process_start") or 0)
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return pid if alive_as_recorded(pid, started) else None


def host_binds() -> tuple[oci.Bind, ...]:
    """Where netlab itself runs from, when that is not on the root filesystem
    (an overlay of `/` shows only the root filesystem's own files)."""
    root_dev = os.stat(HOST_ROOT).st_dev
    wanted = {Path(sys.prefix), Path(netlab.__file__).resolve().parent.parent}
    return tuple(
        oci.Bind(p, str(p)) for p in sorted(wanted) if p.exists() and os.stat(p).st_dev != root_dev
    )


BACKOFF_START = 0.5  # seconds before a container's first restart or retry; doubles
BACKOFF_MAX = 30.0  # up to this (kubelet's back-off)


class ContainerConfigError(NetlabError):
    """kubelet would not create the container: `reason` for its waiting state. How it
    waits is the error's to say (a volume not ready yet waits otherwise)."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason

    @property
    def waiting_message(self) -> str | None:
        """The message of the container's waiting state."""
        return str(self)

    @property
    def warning(self) -> tuple[str, str]:
        """kubelet's Warning event: (reason, message)."""
        return "Failed", f"Error: {self}"

    def retry_after(self, holds: int) -> float:
        """Seconds before the `holds`-th try again."""
        return min(BACKOFF_MAX, BACKOFF_START * 2**holds)


@dataclass(frozen=True)
class Prepared:
    """A bundle ready for the runtime process."""

    runc_id: str
    bundle: Path
    lower: str  # the image's root filesystem (the overlay's read-only layer)
    cgroups_path: str  # its OCI cgroupsPath (relative: under the runtime's own cgroup)


class Bundles:
    """Writes the lab's container bundles under `<run_dir>/containers/`."""

    def __init__(self, run_dir: Path, lab_prefix: str, sandboxes: Sandboxes) -> None:
        self.root = run_dir / "containers"
        self.run_dir = run_dir
        self.lab_prefix = lab_prefix
        self.sandboxes = sandboxes
        self._host_binds = host_binds()
        self.cgroups = CgroupLayout.detect()

    def sandbox_of(self, pod: PodPlan) -> dict:
        """What a container forked into the pod (a sidecar from the zygote) joins and
        binds itself, as runc does for the others."""
        paths = self.sandboxes.paths(pod.netns)
        return {
            "uts": str(paths.uts),
            "ipc": str(paths.ipc),
            "etc": {target: str(source) for target, source in etc_files(pod).items()},
            # volumes of other pods, copied into its new mount namespace: let go of
            "detach": [str(STATE_ROOT), str(self.run_dir / "pods")],
        }

    def prepare_pause(self, pod: PodPlan) -> Prepared:
        """The bundle of the pod's pause container (the default image, no privileges)."""
        pause = ContainerSpec(PAUSE_NAME, PAUSE_ARGV)
        return self.prepare(pod, pause, PAUSE_ARGV, {"PATH": "/usr/bin:/bin"})

    def prepare(
        self,
        pod: PodPlan,
        container: ContainerSpec,
        argv: Sequence[str],
        env: Mapping[str, str],
        lower: str = HOST_ROOT,
        image_user: str | None = None,
        cwd: str = "/",
        pid_namespace: Path | None = None,
        volumes: Sequence[oci.Bind] = (),
    ) -> Prepared:
        """Write the container's bundle (`volumes`: its volumeMounts, as bind mounts). ContainerConfigError: kubelet would not create
        it (CreateContainerConfigError and the like), with its reason and message."""
        ident = runc_id(pod.netns, container.name)
        directory = self.root / ident
        directory.mkdir(parents=True, exist_ok=True)
        binds = list(self._host_binds)
        if container.image in SYSTEM_IMAGES:
            binds.append(oci.Bind(self.run_dir, str(self.run_dir), readonly=False))
        binds.extend(volumes)
        cgroup = cgroups_path(self.cgroups, self.lab_prefix, ident)
        ctx = effective_context(pod.template.security, container.security)
        refused = run_as_non_root_error(
            ctx, image_user, pod=pod_desc(pod.name, pod.namespace, ""), container=container.name
        )
        if refused is not None:
            raise ContainerConfigError("CreateContainerConfigError", refused)
        try:
            process = oci_process_security(ctx, image_user, Path(lower))
        except UserLookupError as exc:
            raise ContainerConfigError("CreateContainerError", str(exc)) from exc
        config = oci.ContainerConfig(
            args=argv,
            env=env,
            cwd=cwd or "/",
            rootfs=directory / "rootfs",
            netns=netns_path(pod.netns),
            sandbox=self.sandboxes.paths(pod.netns),
            cgroups_path=cgroup,
            etc=etc_files(pod),
            binds=binds,
            pid_namespace=pid_namespace,
            process_security=process,
            linux_security=oci_linux_security(ctx),
            resources=oci_resources(container.resources, self.cgroups),
        )
        oci.write(directory, config)
        return Prepared(ident, directory, lower, cgroup)
