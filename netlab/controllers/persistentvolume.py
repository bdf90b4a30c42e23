"""The persistentvolume controller and the lab's provisioner: claims bound to
volumes, disks made for them, and given back when the claim goes.

As kube-controller-manager's persistentvolume-controller and a CSI external
provisioner do together:

- a Pending claim binds to an Available volume that fits (its class, its access
  modes, at least its size, its selector; a volume pre-bound to it, or the one it
  names in `volumeName`), the smallest first;
- else, for a class whose provisioner is the lab's (`netlab.io/loop-disk`), a disk is
  made and a volume `pvc-<claim uid>` for it: at once (Immediate), or once a pod using
  the claim has a node (WaitForFirstConsumer: the claim is annotated
  `volume.kubernetes.io/selected-node`, as the scheduler does);
- binding writes the volume's claimRef, then the claim's volumeName and status
  (Pending -> Bound);
- a claim being deleted goes once no pod uses it (kubernetes.io/pvc-protection);
- a volume whose claim is gone is Released; with reclaimPolicy Delete its disk and
  the volume go once no VolumeAttachment names it (the attach controller detaches
  first); Retain keeps both;
- a volume being deleted goes once no claim is bound to it and it is detached
  (kubernetes.io/pv-protection).

It touches disks only through a `DiskRuntime` (netlab.node.diskimages.DiskImages).
"""

from __future__ import annotations

from collections.abc import Hashable, Iterable
from typing import Protocol

from netlab.controllers.base import Controller
from netlab.errors import ApiError
from netlab.events import EventRecorder
from netlab.node.diskimages import DiskBusy, DiskError
from netlab.objects import now
from netlab.spec.quantity import bytes_, format_memory
from netlab.spec.storage import DEFAULT_CLASS_ANNOTATION, PROVISIONER, selector_matches
from netlab.store import Event, Store

COMPONENT = "persistentvolume-controller"
PROVISIONED_BY = "pv.kubernetes.io/provisioned-by"
SELECTED_NODE = "volume.kubernetes.io/selected-node"
STORAGE_PROVISIONER = "volume.kubernetes.io/storage-provisioner"
BETA_STORAGE_PROVISIONER = "volume.beta.kubernetes.io/storage-provisioner"
BIND_COMPLETED = "pv.kubernetes.io/bind-completed"
BOUND_BY_CONTROLLER = "pv.kubernetes.io/bound-by-controller"
PVC_PROTECTION = "kubernetes.io/pvc-protection"
PV_PROTECTION = "kubernetes.io/pv-protection"
BUSY_RETRY = 0.2  # seconds before a disk still attached is tried again
RESYNC = 10.0


class DiskRuntime(Protocol):
    """The disks the controller makes and removes (the lab's: DiskImages)."""

    def create(self, name: str, size_bytes: int) -> tuple[str, int]:
        """Make (or find) the disk `name` of at least `size_bytes`: (volumeHandle, size)."""
        ...

    def exists(self, handle: str) -> bool: ...

    def delete(self, handle: str) -> None:
        """Remove the disk; DiskBusy while a node has it attached, DiskError if it cannot."""
        ...


def claims_of_pod(pod: dict) -> list[str]:
    """The claims a pod's volumes name."""
    return [
        source["claimName"]
        for volume in (pod.get("spec") or {}).get("volumes") or ()
        if isinstance(source := volume.get("persistentVolumeClaim"), dict)
        and source.get("claimName")
    ]


def default_class(store: Store) -> str | None:
    """The default StorageClass's name (the newest, if several say they are)."""
    classes = [
        c
        for c in store.list("storageclasses")[0]
        if (c["metadata"].get("annotations") or {}).get(DEFAULT_CLASS_ANNOTATION) == "true"
    ]
    classes.sort(key=lambda c: (c["metadata"].get("creationTimestamp", ""), c["metadata"]["name"]))
    return classes[-1]["metadata"]["name"] if classes else None


def _size(obj_capacity: dict | None) -> int:
    try:
        return bytes_((obj_capacity or {}).get("storage", "0"))
    except ValueError:
        return 0


def fits(volume: dict, claim: dict) -> str | None:
    """Why the volume cannot serve the claim, or None if it can."""
    spec, wanted = volume.get("spec") or {}, claim.get("spec") or {}
    if (spec.get("storageClassName") or "") != (wanted.get("storageClassName") or ""):
        return "storageClassName does not match"
    if (spec.get("volumeMode") or "Filesystem") != (wanted.get("volumeMode") or "Filesystem"):
        return "requested volume mode does not match"
    if not set(wanted.get("accessModes") or ()) <= set(spec.get("accessModes") or ()):
        return "incompatible accessMode"
    if _size(spec.get("capacity")) < _size((wanted.get("resources") or {}).get("requests")):
        return "requested PV is too small"
    if not selector_matches(wanted.get("selector"), volume["metadata"].get("labels") or {}):
        return "volume's labels do not match the claim's selector"
    return None


class PersistentVolumeController(Controller):
    name = COMPONENT
    watches = (
        "persistentvolumeclaims",
        "persistentvolumes",
        "pods",
        "volumeattachments",
    )
    resync = RESYNC

    def __init__(self, store: Store, disks: DiskRuntime, events: EventRecorder | None = None):
        super().__init__(store)
        self.disks, self.events = disks, events

    # -- keys ------------------------------------------------------------------

    def keys_for(self, event: Event) -> Iterable[Hashable]:
        obj, plural = event.object, event.resource.plural
        meta = obj["metadata"]
        if plural == "persistentvolumeclaims":
            return [("claim", meta["namespace"], meta["name"])]
        if plural == "persistentvolumes":
            keys: list[Hashable] = [("volume", meta["name"])]
            ref = (obj.get("spec") or {}).get("claimRef") or {}
            if ref.get("name"):
                keys.append(("claim", ref.get("namespace") or "default", ref["name"]))
            return keys
        if plural == "pods":
            return [("claim", meta["namespace"], claim) for claim in claims_of_pod(obj)]
        source = (obj.get("spec") or {}).get("source") or {}
        name = source.get("persistentVolumeName")
        return [("volume", name)] if name else []

    def all_keys(self) -> Iterable[Hashable]:
        claims = [("claim", ns, name) for ns, name in self.keys_of("persistentvolumeclaims")]
        return claims + [("volume", name) for _, name in self.keys_of("persistentvolumes")]

    def reconcile(self, key: Hashable) -> float | None:
        if key[0] == "claim":
            return self._claim(key[1], key[2])
        return self._volume(key[1])

    # -- reads -----------------------------------------------------------------

    def _get(self, plural: str, namespace: str | None, name: str) -> dict | None:
        try:
            return self.store.get(plural, namespace, name)
        except ApiError:
            return None

    def _users(self, namespace: str, claim: str) -> list[dict]:
        """The pods that use the claim and have not ended."""
        return [
            pod
            for pod in self.store.list("pods", namespace)[0]
            if claim in claims_of_pod(pod)
            and (pod.get("status") or {}).get("phase") not in ("Succeeded", "Failed")
        ]

    def _attachments(self, volume: str) -> list[dict]:
        return [
            va
            for va in self.store.list("volumeattachments")[0]
            if ((va.get("spec") or {}).get("source") or {}).get("persistentVolumeName") == volume
        ]

    def _record(self, claim: dict, reason: str, message: str, warning: bool = False,
                component: str = COMPONENT) -> None:  # fmt: skip
        if self.events is None:
            return
        meta = claim["metadata"]
        self.events.record(
            "PersistentVolumeClaim", meta["namespace"], meta["name"], meta.get("uid", ""),
            reason, message, component, "Warning" if warning else "Normal",
        )  # fmt: skip

    # -- claims ----------------------------------------------------------------

    def _claim(self, namespace: str, name: str) -> float | None:
        claim = self._get("persistentvolumeclaims", namespace, name)
        if claim is None:  # its volume may be released now
            for volume in self.store.list("persistentvolumes")[0]:
                ref = volume["spec"].get("claimRef") or {}
                if (ref.get("namespace"), ref.get("name")) == (namespace, name):
                    self.queue.add(("volume", volume["metadata"]["name"]))
            return None
        if claim["metadata"].get("deletionTimestamp"):
            return self._release_claim(claim)
        spec = claim.get("spec") or {}
        if "storageClassName" not in spec:  # retroactive default class, as Kubernetes does
            chosen = default_class(self.store)
            if chosen is not None:
                claim["spec"] = dict(spec, storageClassName=chosen)
                self.store.update(claim)
                return None
        if spec.get("volumeName"):
            return self._named(claim, spec["volumeName"])
        volume = self._match(claim)
        if volume is not None:
            self._bind(claim, volume)
            return None
        return self._provision(claim)

    def _release_claim(self, claim: dict) -> float | None:
        """pvc-protection: a claim being deleted goes once no pod uses it."""
        meta = claim["metadata"]
        if self._users(meta["namespace"], meta["name"]):
            return None  # a pod's end queues the claim again
        try:
            self.store.delete("persistentvolumeclaims", meta["namespace"], meta["name"])
        except ApiError:
            pass
        volume = (claim.get("spec") or {}).get("volumeName")
        if volume:
            self.queue.add(("volume", volume))
        return None

    def _named(self, claim: dict, name: str) -> float | None:
        """A claim that names its volume (pre-bound, or bound before)."""
        meta = claim["metadata"]
        volume = self._get("persistentvolumes", None, name)
        phase = (claim.get("status") or {}).get("phase")
        if volume is None:
            if phase == "Bound":
                claim["status"] = dict(claim.get("status") or {}, phase="Lost")
                self.store.update(claim)
                self._record(
                    claim, "ClaimLost",
                    "Bound claim has lost its PersistentVolume. Data on the volume is lost!",
                    warning=True,
                )  # fmt: skip
            elif phase != "Pending":
                self._pending(claim)
            return None
        ref = volume["spec"].get("claimRef") or {}
        if ref.get("uid") == meta["uid"]:
            self._bind(claim, volume)  # both halves written? finish what is not
            return None
        mine = (ref.get("namespace"), ref.get("name")) == (meta["namespace"], meta["name"])
        if ref and not (mine and not ref.get("uid")):
            self._pending(claim)
            self._record(
                claim, "FailedBinding",
                f'volume "{name}" already bound to a different claim.', warning=True,
            )  # fmt: skip
            return None
        why = fits(volume, claim)
        if why is not None:
            self._pending(claim)
            self._record(
                claim, "FailedBinding", f'Cannot bind to requested volume "{name}": {why}',
                warning=True,
            )  # fmt: skip
            return None
        self._bind(claim, volume)
        return None

    def _match(self, claim: dict) -> dict | None:
        """The smallest Available volume that fits the claim (one pre-bound to it first)."""
        meta = claim["metadata"]
        candidates = []
        for volume in self.store.list("persistentvolumes")[0]:
            if volume["metadata"].get("deletionTimestamp"):
                continue
            ref = volume["spec"].get("claimRef")
            if ref:
                mine = (ref.get("namespace"), ref.get("name")) == (meta["namespace"], meta["name"])
                if not mine or ref.get("uid") not in (None, "", meta["uid"]):
                    continue
            elif (volume.get("status") or {}).get("phase") not in (None, "Available"):
                continue
            if fits(volume, claim) is None:
                candidates.append((not ref, _size(volume["spec"].get("capacity")), volume))
        candidates.sort(key=lambda c: (c[0], c[1], c[2]["metadata"]["name"]))
        return candidates[0][2] if candidates else None

    def _pending(self, claim: dict) -> dict:
        """The claim, Pending (written if it was not)."""
        if (claim.get("status") or {}).get("phase") != "Pending":
            claim["status"] = {"phase": "Pending"}
            return self.store.update(claim)
        return claim

    def _provision(self, claim: dict) -> float | None:
        claim = self._pending(claim)
        meta, spec = claim["metadata"], claim.get("spec") or {}
        class_name = spec.get("storageClassName") or ""
        if not class_name:
            self._record(
                claim, "FailedBinding",
                "no persistent volumes available for this claim and no storage class is set",
            )  # fmt: skip
            return None
        storage_class = self._get("storageclasses", None, class_name)
        if storage_class is None:
            self._record(
                claim, "ProvisioningFailed",
                f'storageclass.storage.k8s.io "{class_name}" not found', warning=True,
            )  # fmt: skip
            return None
        if storage_class.get("provisioner") != PROVISIONER:
            return None  # another provisioner's (none in a lab): a volume made by hand binds
        notes = dict(meta.get("annotations") or {})
        if storage_class.get("volumeBindingMode") == "WaitForFirstConsumer":
            if not notes.get(SELECTED_NODE):
                node = next(
                    (p["spec"]["nodeName"] for p in self._users(meta["namespace"], meta["name"])
                     if (p.get("spec") or {}).get("nodeName")),
                    None,
                )  # fmt: skip
                if node is None:
                    self._record(
                        claim, "WaitForFirstConsumer",
                        "waiting for first consumer to be created before binding",
                    )  # fmt: skip
                    return None
                notes[SELECTED_NODE] = node
        if notes.get(STORAGE_PROVISIONER) != PROVISIONER:
            notes[STORAGE_PROVISIONER] = notes[BETA_STORAGE_PROVISIONER] = PROVISIONER
        if notes != (meta.get("annotations") or {}):
            claim["metadata"]["annotations"] = notes
            claim = self.store.update(claim)
        name = f"pvc-{meta['uid']}"
        volume = self._get("persistentvolumes", None, name)
        if volume is None:
            volume = self._make_volume(claim, storage_class, name)
            if volume is None:
                return RESYNC
        self._bind(claim, volume)
        return None

    def _make_volume(self, claim: dict, storage_class: dict, name: str) -> dict | None:
        meta, spec = claim["metadata"], claim["spec"]
        self._record(
            claim, "Provisioning",
            f'External provisioner is provisioning volume for claim "{meta["namespace"]}/'
            f'{meta["name"]}"', component=PROVISIONER,
        )  # fmt: skip
        try:
            handle, size = self.disks.create(name, _size(spec["resources"].get("requests")))
        except DiskError as exc:
            self._record(
                claim, "ProvisioningFailed",
                f'failed to provision volume with StorageClass "{storage_class["metadata"]["name"]}"'
                f": {exc}", warning=True, component=PROVISIONER,
            )  # fmt: skip
            return None
        fs_type = next(
            (v for k, v in (storage_class.get("parameters") or {}).items()
             if k in ("fsType", "csi.storage.k8s.io/fstype")),
            "ext4",
        )  # fmt: skip
        volume = {
            "apiVersion": "v1",
            "kind": "PersistentVolume",
            "metadata": {
                "name": name,
                "annotations": {PROVISIONED_BY: PROVISIONER},
                "finalizers": [PV_PROTECTION],
            },
            "spec": {
                "capacity": {"storage": format_memory(size)},
                "accessModes": list(spec.get("accessModes") or ()),
                "persistentVolumeReclaimPolicy": storage_class.get("reclaimPolicy") or "Delete",
                "storageClassName": storage_class["metadata"]["name"],
                "volumeMode": spec.get("volumeMode") or "Filesystem",
                "claimRef": _claim_ref(claim),
                "csi": {"driver": PROVISIONER, "volumeHandle": handle, "fsType": fs_type},
            },
            "status": {"phase": "Pending"},
        }
        if storage_class.get("mountOptions"):
            volume["spec"]["mountOptions"] = list(storage_class["mountOptions"])
        volume = self.store.create(volume)
        self._record(
            claim, "ProvisioningSucceeded", f"Successfully provisioned volume {name}",
            component=PROVISIONER,
        )  # fmt: skip
        return volume

    def _bind(self, claim: dict, volume: dict) -> None:
        """The volume's claimRef, then the claim's volumeName and status: Bound."""
        meta = claim["metadata"]
        by_controller = not (claim.get("spec") or {}).get("volumeName")
        ref = volume["spec"].get("claimRef") or {}
        if ref.get("uid") != meta["uid"] or (volume.get("status") or {}).get("phase") != "Bound":
            volume["spec"] = dict(volume["spec"], claimRef=_claim_ref(claim))
            volume["status"] = _phase("Bound")
            volume = self.store.update(volume)
        notes = dict(meta.get("annotations") or {})
        notes[BIND_COMPLETED] = "yes"
        if by_controller:
            notes[BOUND_BY_CONTROLLER] = "yes"
        status = {
            "phase": "Bound",
            "accessModes": list(volume["spec"].get("accessModes") or ()),
            "capacity": dict(volume["spec"].get("capacity") or {}),
        }
        spec = dict(claim.get("spec") or {}, volumeName=volume["metadata"]["name"])
        if (
            spec != claim.get("spec")
            or notes != meta.get("annotations")
            or (claim.get("status") != status)
        ):
            claim["spec"], claim["status"] = spec, status
            claim["metadata"]["annotations"] = notes
            self.store.update(claim)

    # -- volumes ---------------------------------------------------------------

    def _volume(self, name: str) -> float | None:
        volume = self._get("persistentvolumes", None, name)
        if volume is None:
            return None
        spec, status = volume.get("spec") or {}, volume.get("status") or {}
        ref = spec.get("claimRef") or {}
        claim = None
        if ref.get("name"):
            claim = self._get("persistentvolumeclaims", ref.get("namespace") or "default",
                              ref["name"])  # fmt: skip
        bound = claim is not None and ref.get("uid") and claim["metadata"]["uid"] == ref["uid"]
        if volume["metadata"].get("deletionTimestamp"):
            if bound:
                return None  # pv-protection: the claim's going queues this again
            return self._reclaim(volume, deleting=True)
        if not ref.get("uid"):  # free, or kept for a claim by name
            if not ref and spec.get("csi", {}).get("driver") == PROVISIONER:
                handle = spec["csi"].get("volumeHandle", "")
                if not self.disks.exists(handle):  # a static volume's disk: made now
                    try:
                        self.disks.create(handle, _size(spec.get("capacity")))
                    except DiskError:
                        return self._set_phase(volume, "Failed") or RESYNC
            if ref.get("name"):
                self.queue.add(("claim", ref.get("namespace") or "default", ref["name"]))
            return self._set_phase(volume, "Available")
        if bound:
            return None  # the claim's reconcile completes the binding
        if status.get("phase") == "Failed":
            return None
        volume = self._set_phase(volume, "Released", keep=True)
        if spec.get("persistentVolumeReclaimPolicy") != "Delete":
            return None  # Retain: the disk stays, and so does the volume
        return self._reclaim(volume, deleting=False)

    def _reclaim(self, volume: dict, deleting: bool) -> float | None:
        """The volume's disk (reclaimPolicy Delete) and then the volume, once detached."""
        name, spec = volume["metadata"]["name"], volume.get("spec") or {}
        if self._attachments(name):
            return None  # the VolumeAttachment's going queues this again
        csi = spec.get("csi") or {}
        if (
            spec.get("persistentVolumeReclaimPolicy") == "Delete"
            and csi.get("driver") == PROVISIONER
        ):
            try:
                self.disks.delete(csi.get("volumeHandle", ""))
            except DiskBusy:
                return BUSY_RETRY
            except DiskError as exc:
                if not deleting:
                    self._set_phase(volume, "Failed", message=str(exc))
                    if self.events is not None:
                        self.events.record(
                            "PersistentVolume", "default", name, volume["metadata"]["uid"],
                            "VolumeFailedDelete", str(exc), COMPONENT, "Warning",
                        )  # fmt: skip
                    return None
        try:
            self.store.delete("persistentvolumes", None, name)
        except ApiError:
            pass
        return None

    def _set_phase(self, volume: dict, phase: str, keep: bool = False,
                   message: str = "") -> dict | None:  # fmt: skip
        """The volume in `phase` (written if it was not); None unless `keep`."""
        if (volume.get("status") or {}).get("phase") != phase:
            volume["status"] = _phase(phase, message)
            volume = self.store.update(volume)
        return volume if keep else None


def _phase(phase: str, message: str = "") -> dict:
    status = {"phase": phase, "lastPhaseTransitionTime": now()}
    if message:
        status["message"] = message
    return status


def _claim_ref(claim: dict) -> dict:
    meta = claim["metadata"]
    return {
        "kind": "PersistentVolumeClaim",
        "namespace": meta["namespace"],
        "name": meta["name"],
        "uid": meta["uid"],
        "apiVersion": "v1",
        "resourceVersion": meta.get("resourceVersion", ""),
    }
