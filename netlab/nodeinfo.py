"""What kubelet reports about its machine in a Node's status: `nodeInfo` (kernel, OS
image, architecture, container runtime, the machine's IDs), `capacity` and
`allocatable` (cpu, memory, ephemeral-storage, pods), and the conditions it posts.

The lab's nodes share the host's kernel, CPUs and memory, so they report the host's
(as kind's nodes, containers on one host, do); the IDs are each node's own, derived
from the lab's and the node's names: the same after a supervisor restart, different
after the host reboots (bootID). The kubernetes Python client refuses a Node whose
nodeInfo lacks any of these fields, and `kubectl describe node` divides by the cpu and
memory given here.
"""

from __future__ import annotations

import functools
import os
import platform
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from netlab.apiserver.version import GIT_VERSION

KUBELET_VERSION = GIT_VERSION  # kubelets are the version the API server says it is
EVICTION_MEMORY_KIB = 100 * 1024  # kubelet's default eviction threshold: memory.available<100Mi
EVICTION_STORAGE = 0.10  # ... and nodefs.available<10%
ARCHITECTURES = {"x86_64": "amd64", "aarch64": "arm64", "armv7l": "arm", "i686": "386"}
_IDS = uuid.UUID("6f1b2a57-0c1e-4d53-9f1e-6e65746c6162")  # netlab's uuid5 namespace


@dataclass(frozen=True)
class Machine:
    """The host, as every node of the lab sees it."""

    kernel: str  # uname -r
    os_image: str  # PRETTY_NAME of /etc/os-release
    architecture: str  # GOARCH spelling: amd64, arm64
    cpus: int
    memory_kib: int  # MemTotal
    storage_kib: int  # the root filesystem's size (kubelet's nodefs)
    boot_id: str  # the host's

    @classmethod
    @functools.cache
    def of_host(cls) -> Machine:
        """This host's facts (read once per process)."""
        machine = platform.machine()
        fs = os.statvfs("/")
        return cls(
            kernel=os.uname().release,
            os_image=_os_image(Path("/etc/os-release")),
            architecture=ARCHITECTURES.get(machine, machine),
            cpus=len(os.sched_getaffinity(0)) or os.cpu_count() or 1,
            memory_kib=_meminfo_kib(Path("/proc/meminfo"), "MemTotal"),
            storage_kib=fs.f_blocks * fs.f_frsize // 1024,
            boot_id=_read(Path("/proc/sys/kernel/random/boot_id")),
        )


def _read(path: Path) -> str:
    try:
        return path.read_text().strip()
    except OSError:
        return ""


def _os_image(path: Path) -> str:
    """PRETTY_NAME of an os-release file (kubelet's osImage), "Linux" if none."""
    for line in _read(path).splitlines():
        key, _, value = line.partition("=")
        if key == "PRETTY_NAME":
            return value.strip().strip('"') or "Linux"
    return "Linux"


def _meminfo_kib(path: Path, field: str) -> int:
    for line in _read(path).splitlines():
        key, _, value = line.partition(":")
        if key == field:
            return int(value.split()[0])
    return 0


def node_ids(lab: str, node: str, boot_id: str) -> dict[str, str]:
    """The node's machineID (32 hex digits, as /etc/machine-id), systemUUID and bootID."""
    machine = uuid.uuid5(_IDS, f"{lab}/{node}")
    return {
        "machineID": machine.hex,
        "systemUUID": str(uuid.uuid5(machine, "system")),
        "bootID": str(uuid.uuid5(machine, f"boot/{boot_id}")),
    }


@functools.cache
def runtime_version() -> str:
    """The OCI runtime the lab's containers run under, as kubelet shows containerd's:
    `runc://1.1.5`."""
    from netlab.node.runc import runtime_name, version

    return version(runtime_name())


def node_info(lab: str, node: str, machine: Machine) -> dict[str, str]:
    """status.nodeInfo, every field the API's NodeSystemInfo requires."""
    return {
        "architecture": machine.architecture,
        **node_ids(lab, node, machine.boot_id),
        "containerRuntimeVersion": runtime_version(),
        "kernelVersion": machine.kernel,
        "kubeProxyVersion": "",  # deprecated: kubelet no longer fills it in
        "kubeletVersion": KUBELET_VERSION,
        "operatingSystem": "linux",
        "osImage": machine.os_image,
    }


def resources(
    machine: Machine, pods: int, declared: Mapping[str, str] | None = None
) -> tuple[dict[str, str], dict[str, str]]:
    """status.capacity and status.allocatable: the host's cpus, memory and disk, and the
    node's pods; allocatable less kubelet's default eviction thresholds. What the lab
    file `declared` for the node (cpu, memory: its quantities) is both its capacity and
    its allocatable: a machine of that size with nothing held back."""
    capacity = {
        "cpu": str(machine.cpus),
        "ephemeral-storage": f"{machine.storage_kib}Ki",
        "memory": f"{machine.memory_kib}Ki",
        "pods": str(pods),
    }
    allocatable = dict(
        capacity,
        **{
            "ephemeral-storage": str(int(machine.storage_kib * 1024 * (1 - EVICTION_STORAGE))),
            "memory": f"{max(0, machine.memory_kib - EVICTION_MEMORY_KIB)}Ki",
        },
    )
    capacity.update(declared or {})
    allocatable.update(declared or {})
    return capacity, allocatable


def host_allocatable(machine: Machine | None = None) -> tuple[int, int]:
    """The cpu (millicores) and memory (bytes) a node declaring none has for pods: the
    host's, as `resources` reports its allocatable."""
    machine = machine or Machine.of_host()
    return machine.cpus * 1000, max(0, machine.memory_kib - EVICTION_MEMORY_KIB) * 1024


PRESSURES = (
    ("MemoryPressure", "KubeletHasSufficientMemory", "kubelet has sufficient memory available"),
    ("DiskPressure", "KubeletHasNoDiskPressure", "kubelet has no disk pressure"),
    ("PIDPressure", "KubeletHasSufficientPID", "kubelet has sufficient PID available"),
)


def conditions(ready: bool, now: str, heartbeat: str | None = None) -> list[dict[str, str]]:
    """The conditions kubelet posts (Ready and the three pressures), changed at `now`.
    Not ready: as the node lifecycle controller leaves them when kubelet went silent,
    every one Unknown, its last heartbeat `heartbeat` (when kubelet last posted)."""
    out = []
    for type_, reason, message in PRESSURES:
        if ready:
            out.append(_condition(type_, "False", reason, message, now, now))
        else:
            out.append(_unknown(type_, now, heartbeat or now))
    if ready:
        out.append(
            _condition("Ready", "True", "KubeletReady", "kubelet is posting ready status", now, now)
        )
    else:
        out.append(_unknown("Ready", now, heartbeat or now))
    return out


def _unknown(type_: str, now: str, heartbeat: str) -> dict[str, str]:
    return _condition(
        type_,
        "Unknown",
        "NodeStatusUnknown",
        "Kubelet stopped posting node status.",
        now,
        heartbeat,
    )


def _condition(
    type_: str, status: str, reason: str, message: str, now: str, heartbeat: str
) -> dict[str, str]:
    return {
        "type": type_,
        "status": status,
        "lastHeartbeatTime": heartbeat,
        "lastTransitionTime": now,
        "reason": reason,
        "message": message,
    }
