"""The persistentVolumeClaim volume plugin (kubelet's CSI plugin, for the lab's loop
disks): once the attach/detach controller has attached the claim's PV to the pod's
node, the node mounts it once at its global mount (`plugins/pv/<pv>/globalmount` on
the node's disk) and every pod of the node that uses it binds that directory. The
last pod of the node to go unmounts it, so that the controller may detach the disk.

One host mount per attached disk: runc copies the host's mount table at each
container's start, so mounts are kept few.
"""

from __future__ import annotations

import threading
from pathlib import Path

from netlab.errors import ApiError
from netlab.node import loopdisks
from netlab.node.attachments import (
    bound_claim,
    claims_of,
    global_mount,
    image_of,
    terminating,
    va_name,
)
from netlab.node.volumeplugin import VolumeContext, VolumeNotReady
from netlab.objects import NETNS_ANNOTATION
from netlab.spec.volumes import ClaimSource, VolumeSpec
from netlab.store import Store

RETRY = 0.1  # seconds: the controller attaches within a reconcile


def unmounted(volume: str) -> str:
    """kubelet's FailedMount text while a volume is not attached or mounted yet."""
    return (
        f"Unable to attach or mount volumes: unmounted volumes=[{volume}], "
        f"unattached volumes=[{volume}]: timed out waiting for the condition"
    )


class ClaimVolumes:
    kinds = ("persistentVolumeClaim",)

    def __init__(self, store: Store) -> None:
        self.store = store
        self._lock = threading.Lock()  # one node's mount decisions at a time (pods in parallel)

    def _pv(self, ctx: VolumeContext, volume: VolumeSpec) -> tuple[str, dict]:
        """The name and object of the PV the volume's claim is bound to; VolumeNotReady
        with kubelet's text if there is none yet."""
        assert isinstance(volume.source, ClaimSource)
        namespace, claim = ctx.pod.namespace, volume.source.claim_name
        try:
            pvc = self.store.get("persistentvolumeclaims", namespace, claim)
        except ApiError:
            raise VolumeNotReady(f'persistentvolumeclaim "{claim}" not found') from None
        phase = (pvc.get("status") or {}).get("phase") or ""
        name = (pvc.get("spec") or {}).get("volumeName") or ""
        if phase != "Bound" or not name:
            raise VolumeNotReady(
                f'PVC {namespace}/{claim} has non-bound phase ("{phase}") or empty '
                f'pvc.Spec.VolumeName ("{name}")'
            )
        try:
            return name, self.store.get("persistentvolumes", None, name)
        except ApiError:
            raise VolumeNotReady(f'persistentvolume "{name}" not found') from None

    def setup(self, ctx: VolumeContext, volume: VolumeSpec) -> Path:
        name, pv = self._pv(ctx, volume)
        image = image_of(pv)
        if image is None:
            raise VolumeNotReady(
                f'volume "{volume.name}": PersistentVolume {name} is not a disk of the lab '
                "(its spec.csi.driver is not netlab.io/loop-disk)"
            )
        target = global_mount(ctx.node_disk, name)
        try:
            va = self.store.get("volumeattachments", None, va_name(name, ctx.pod.node))
        except ApiError:
            va = {}
        status = va.get("status") or {}
        device = (status.get("attachmentMetadata") or {}).get("devicePath")
        # the kernel is the last word: the device must back this PV's image now
        if not status.get("attached") or not device or loopdisks.backing_file(device) != image:
            raise VolumeNotReady(unmounted(volume.name), retry=RETRY)
        with self._lock:
            loopdisks.mount_global(device, target)
        return target

    def resync(self, ctx: VolumeContext, volume: VolumeSpec) -> None:
        return None

    def teardown(self, ctx: VolumeContext, volume: VolumeSpec) -> None:
        """Unmount the node's global mount unless another pod of the node still uses the PV."""
        pv = self._pv_for_teardown(ctx, volume)
        if pv is None:
            return
        with self._lock:
            if not self._others_use(ctx, pv):
                loopdisks.unmount_global(global_mount(ctx.node_disk, pv["metadata"]["name"]))

    def _pv_for_teardown(self, ctx: VolumeContext, volume: VolumeSpec) -> dict | None:
        try:
            return self._pv(ctx, volume)[1]
        except VolumeNotReady:  # the claim went first: the PV still names it
            assert isinstance(volume.source, ClaimSource)
            for pv in self.store.list("persistentvolumes")[0]:
                ref = (pv.get("spec") or {}).get("claimRef") or {}
                if (ref.get("namespace"), ref.get("name")) == (
                    ctx.pod.namespace,
                    volume.source.claim_name,
                ):
                    return pv
        return None

    def _others_use(self, ctx: VolumeContext, pv: dict) -> bool:
        """Another pod of the node (in the store, not being deleted) uses the PV's claim."""
        claim = bound_claim(self.store, pv)
        if claim is None:
            return False
        for pod in self.store.list(
            "pods", claim["metadata"]["namespace"], field_selector=f"spec.nodeName={ctx.pod.node}"
        )[0]:
            meta = pod["metadata"]
            me = (meta["namespace"], meta["name"]) == ctx.pod.key and (
                meta.get("annotations") or {}
            ).get(NETNS_ANNOTATION, ctx.pod.netns) == ctx.pod.netns
            if not me and not terminating(pod) and claim["metadata"]["name"] in claims_of(pod):
                return True
        return False
