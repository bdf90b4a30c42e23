"""What a kind of volume offers kubelet's volume manager (`netlab.node.volumes`): make
the volume ready on the pod's node before its containers start, a host path that is
bound into them; refresh it while the pod runs; take it down with the pod.

One plugin per kind (emptyDir, hostPath, configMap and secret, persistentVolumeClaim),
as kubelet's volume plugins are. A plugin touches only what its kind owns.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from netlab.node.containers import ContainerConfigError
from netlab.plan import PodPlan
from netlab.spec.volumes import VolumeSpec


class VolumeNotReady(ContainerConfigError):
    """The volume cannot be set up yet (its ConfigMap is missing, its disk is attached
    to another node): the pod waits in ContainerCreating, the manager tries again, and
    a Warning event `event` (kubelet's FailedMount, the attach/detach controller's
    FailedAttachVolume) says why with `message`."""

    RETRY_MAX = 2.0  # a pod waiting for its volumes is tried at least this often

    def __init__(self, message: str, event: str = "FailedMount", retry: float = 0.2) -> None:
        super().__init__("ContainerCreating", message)
        self.message, self.event, self.retry = message, event, retry

    @property
    def waiting_message(self) -> str | None:
        return None  # ContainerCreating, as kubelet shows it; the event says why

    @property
    def warning(self) -> tuple[str, str]:
        return self.event, self.message

    def retry_after(self, holds: int) -> float:
        return min(self.RETRY_MAX, self.retry * 2 ** (holds // 10))


@dataclass(frozen=True)
class VolumeContext:
    """Where one pod's volumes live on its node."""

    lab: str
    pod: PodPlan
    pod_dir: Path  # the pod's volumes in the run directory (memory-backed: /run)
    node_disk: Path  # the pod's node's own disk (netlab.paths.node_disk)

    def volume_dir(self, kind: str, name: str) -> Path:
        """kubelet's pods/<uid>/volumes/kubernetes.io~<kind>/<name>, in the run directory."""
        return self.pod_dir / f"kubernetes.io~{kind}" / name

    def disk_dir(self, kind: str, name: str) -> Path:
        """The same on the node's disk (disk-backed emptyDirs)."""
        return self.node_disk / "pods" / self.pod.netns / f"kubernetes.io~{kind}" / name


class VolumePlugin(Protocol):
    kinds: tuple[str, ...]  # the VolumeSpec.kind values it serves

    def setup(self, ctx: VolumeContext, volume: VolumeSpec) -> Path:
        """Make the volume ready on the pod's node; the host path bound into the pod's
        containers (a mount's subPath is below it). Idempotent: called again for a
        container that restarts. VolumeNotReady: not yet, try again."""
        ...

    def resync(self, ctx: VolumeContext, volume: VolumeSpec) -> None:
        """While the pod runs: bring the volume up to date (a changed ConfigMap)."""
        ...

    def teardown(self, ctx: VolumeContext, volume: VolumeSpec) -> None:
        """The pod is gone: remove what setup made (unmount first, never across a mount)."""
        ...
