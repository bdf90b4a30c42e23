"""The attach/detach controller: each PersistentVolume of the lab's driver is attached
to the node whose pods use it (a VolumeAttachment object records it, as CSI's external
attacher does), and detached once no pod there needs it.

One PV is attached to one node at a time (ReadWriteOnce: the pods of that node may
share it): a pod on another node waits, and gets Kubernetes' Multi-Attach event. A
lost node (NotReady and tainted unreachable by the node lifecycle controller, its pods
deleted by the lab) has its disks force-detached at once, so they follow their pods;
the kernel's fence (netlab.node.loopdisks) refuses an attach while any loop device
still backs the image, whatever this controller believes.

Reconciled per PV: its key is the PV's name.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Hashable, Iterable
from typing import Protocol

from netlab.controllers.base import Controller
from netlab.controllers.nodelifecycle import UNREACHABLE, node_ready
from netlab.errors import ApiError, NetlabError
from netlab.events import EventRecorder
from netlab.node.attachments import (
    DRIVER,
    bound_claim,
    claims_of,
    image_of,
    pods_using,
    terminating,
    va_name,
)
from netlab.objects import now
from netlab.store import Event, Store

log = logging.getLogger(__name__)

COMPONENT = "attachdetach-controller"
FAILED_ATTACH = "FailedAttachVolume"
RETRY = 0.1  # seconds: a fenced attach (the old node's mount not gone yet) is tried again
WAIT = 1.0  # seconds: a pod waiting for another node to let go is looked at again
REPORT_EVERY = 10.0  # seconds between two Multi-Attach events of one pod and volume


def multi_attach(pv: str) -> str:
    """Kubernetes' text (attach/detach controller's reconciler)."""
    return (
        f'Multi-Attach error for volume "{pv}" Volume is already exclusively attached to one '
        "node and can't be attached to another"
    )


class DiskRuntime(Protocol):
    """The kernel side (netlab.node.loopdisks.LabDisks)."""

    def attached(self, image: str) -> str | None:
        """The device backing `image` now, or None."""
        ...

    def attach(self, image: str) -> str:
        """Attach `image`; its device. loopdisks.DiskFenced while a device backs it."""
        ...

    def hold(self, device: str) -> None:
        """Keep an attached device (one attached before a restart) from going."""
        ...

    def detach(self, node: str, pv: str, image: str | None) -> None:
        """Unmount `node`'s global mount of `pv` if still mounted; free `image`'s device
        (at once, or once its last mount is gone)."""
        ...


def lost(node: dict | None) -> bool:
    """Gone from the lab, or NotReady and tainted unreachable (its pods are evicted)."""
    if node is None:
        return True
    taints = (node.get("spec") or {}).get("taints") or ()
    return not node_ready(node) and any(t.get("key") == UNREACHABLE for t in taints)


class AttachDetachController(Controller):
    name = COMPONENT
    watches = ("persistentvolumes", "persistentvolumeclaims", "pods", "volumeattachments", "nodes")
    resync = 2.0  # the kernel's side is looked at again (a device gone with a restart)

    def __init__(
        self, store: Store, runtime: DiskRuntime, events: EventRecorder, clock: Callable[[], float]
    ):
        super().__init__(store)
        self.runtime, self.events, self.clock = runtime, events, clock
        self._reported: dict[tuple[str, ...], float] = {}  # (ns, pod, pv, message) -> when

    # -- keys ------------------------------------------------------------------

    def keys_for(self, event: Event) -> Iterable[Hashable]:
        plural, objs = event.resource.plural, [o for o in (event.object, event.old) if o]
        if plural == "persistentvolumes":
            return [event.object["metadata"]["name"]]
        if plural == "volumeattachments":
            return {self._pv_of(o) for o in objs} - {""}
        if plural == "persistentvolumeclaims":
            return {(o.get("spec") or {}).get("volumeName") or "" for o in objs} - {""}
        if plural == "pods":
            keys = set()
            for pod in objs:
                for claim in claims_of(pod):
                    keys.add(self._claimed_pv(pod["metadata"]["namespace"], claim))
            return keys - {""}
        if plural == "nodes":
            node = event.object["metadata"]["name"]
            return {
                self._pv_of(va) for va in self._attachments() if va["spec"].get("nodeName") == node
            }
        return []

    def all_keys(self) -> Iterable[Hashable]:
        names = {pv["metadata"]["name"] for pv in self.store.list("persistentvolumes")[0]}
        return sorted(names | {self._pv_of(va) for va in self._attachments()})

    def _claimed_pv(self, namespace: str, claim: str) -> str:
        try:
            pvc = self.store.get("persistentvolumeclaims", namespace, claim)
        except ApiError:
            return ""
        return (pvc.get("spec") or {}).get("volumeName") or ""

    @staticmethod
    def _pv_of(va: dict) -> str:
        return ((va.get("spec") or {}).get("source") or {}).get("persistentVolumeName") or ""

    def _attachments(self) -> list[dict]:
        return [
            va
            for va in self.store.list("volumeattachments")[0]
            if (va.get("spec") or {}).get("attacher") == DRIVER
        ]

    # -- reconcile -------------------------------------------------------------

    def reconcile(self, key: Hashable) -> float | None:
        pv_name = str(key)
        vas = [va for va in self._attachments() if self._pv_of(va) == pv_name]
        try:
            pv = self.store.get("persistentvolumes", None, pv_name)
        except ApiError:
            pv = None
        image = image_of(pv) if pv is not None else None
        claim = bound_claim(self.store, pv) if pv is not None else None
        users = pods_using(self.store, claim) if claim is not None else []
        nodes = {n["metadata"]["name"]: n for n in self.store.list("nodes")[0]}
        users = [p for p in users if not lost(nodes.get(p["spec"]["nodeName"]))]
        keep = {p["spec"]["nodeName"] for p in users}  # terminating pods still hold it
        waiting = [p for p in users if not terminating(p)]

        # detach first: a node none of whose pods needs the disk any more lets it go
        current = []
        for va in vas:
            node = va["spec"]["nodeName"]
            if image is not None and node in keep:
                current.append(va)
                continue
            self.runtime.detach(node, pv_name, image)
            self._delete(va)
        if image is None:
            return None
        if len(current) > 1:  # never made by this controller; the first one stays
            log.error("%s: PV %s has %d attachments", self.name, pv_name, len(current))
        holder = current[0]["spec"]["nodeName"] if current else None
        if holder is None:
            if not waiting:
                return None
            holder = waiting[0]["spec"]["nodeName"]
            current = [self._create(pv_name, holder)]
        again = self._ensure_attached(current[0], image, waiting)
        elsewhere = [p for p in waiting if p["spec"]["nodeName"] != holder]
        for pod in elsewhere:
            self._report(pod, pv_name, multi_attach(pv_name))
        if elsewhere:
            again = min(again or WAIT, WAIT)
        return again

    def _ensure_attached(self, va: dict, image: str, waiting: list[dict]) -> float | None:
        """The VolumeAttachment's disk attached in the kernel, and its status saying so."""
        status = va.get("status") or {}
        recorded = (status.get("attachmentMetadata") or {}).get("devicePath")
        device = self.runtime.attached(image)
        if status.get("attached") and device is not None and device == recorded:
            self.runtime.hold(device)
            return None
        pv = self._pv_of(va)
        try:
            if device is not None:  # a device from before that nothing records as this one
                raise NetlabError(
                    f"disk image {image} is still attached as {device}: waiting for it to be "
                    "released"
                )
            device = self.runtime.attach(image)
        except NetlabError as exc:  # fenced: the old node's mount is not gone yet
            self.store.patch_status(
                "volumeattachments",
                None,
                va["metadata"]["name"],
                {"attached": False, "attachmentMetadata": None,
                 "attachError": {"time": now(), "message": str(exc)}},
            )  # fmt: skip
            for pod in waiting:
                if pod["spec"]["nodeName"] == va["spec"]["nodeName"]:
                    self._report(pod, pv, f'AttachVolume.Attach failed for volume "{pv}" : {exc}')
            return RETRY
        try:
            self.store.patch_status(
                "volumeattachments",
                None,
                va["metadata"]["name"],
                {
                    "attached": True,
                    "attachmentMetadata": {"devicePath": device},
                    "attachError": None,
                },
            )
        except Exception:  # unrecorded, the device would fence the disk forever: let it go
            self.runtime.detach(va["spec"]["nodeName"], pv, image)
            raise
        return None

    def _create(self, pv: str, node: str) -> dict:
        return self.store.create(
            {
                "apiVersion": "storage.k8s.io/v1",
                "kind": "VolumeAttachment",
                "metadata": {"name": va_name(pv, node)},
                "spec": {
                    "attacher": DRIVER,
                    "nodeName": node,
                    "source": {"persistentVolumeName": pv},
                },
                "status": {"attached": False},
            }
        )

    def _delete(self, va: dict) -> None:
        try:
            self.store.delete("volumeattachments", None, va["metadata"]["name"])
        except ApiError:
            pass

    def _report(self, pod: dict, pv: str, message: str) -> None:
        """A Warning event on the waiting pod, once every REPORT_EVERY seconds."""
        meta = pod["metadata"]
        key = (meta["namespace"], meta["name"], pv, message)
        at = self.clock()
        last = self._reported.get(key)
        if last is not None and at - last < REPORT_EVERY:
            return
        if len(self._reported) > 1000:
            self._reported = {k: t for k, t in self._reported.items() if at - t < REPORT_EVERY}
        self._reported[key] = at
        self.events.pod(
            meta["namespace"], meta["name"], FAILED_ATTACH, message, COMPONENT, "Warning"
        )
