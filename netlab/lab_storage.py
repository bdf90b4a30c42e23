"""The lab's storage objects in its store: the default StorageClass made at build,
StorageClasses, PersistentVolumeClaims and PersistentVolumes written as kube-apiserver
admits them (defaults filled in, the default class given to a claim without one, the
protection finalizers added, immutable fields kept so), and their deletes, which the
persistentvolume controller completes (a claim in use stays Terminating)."""

from __future__ import annotations

import copy
from collections.abc import Iterable

from netlab import objects
from netlab.controllers.persistentvolume import PV_PROTECTION, PVC_PROTECTION, default_class
from netlab.errors import ApiError, Problem, SpecError
from netlab.node.diskimages import DiskImages
from netlab.spec.storage import (
    DEFAULT_CLASS,
    DEFAULT_CLASS_ANNOTATION,
    PROVISIONER,
    ClaimObjectSpec,
    StorageClassSpec,
    VolumeObjectSpec,
)
from netlab.store import Store

# annotations the persistentvolume controller and the scheduler write: kept when a
# manifest is applied again without them
CONTROLLER_PREFIXES = ("pv.kubernetes.io/", "volume.kubernetes.io/", "volume.beta.kubernetes.io/")
IMMUTABLE_CLASS_FIELDS = {
    "provisioner": "updates to provisioner are forbidden.",
    "parameters": "updates to parameters are forbidden.",
    "reclaimPolicy": "updates to reclaimPolicy are forbidden.",
    "volumeBindingMode": "field is immutable",
}


def default_class_object() -> dict:
    """The lab's StorageClass `standard`: its disks, made at once, deleted with their claim."""
    return {
        "apiVersion": "storage.k8s.io/v1",
        "kind": "StorageClass",
        "metadata": {"name": DEFAULT_CLASS, "annotations": {DEFAULT_CLASS_ANNOTATION: "true"}},
        "provisioner": PROVISIONER,
        "parameters": {"fsType": "ext4"},
        "reclaimPolicy": "Delete",
        "volumeBindingMode": "Immediate",
        "allowVolumeExpansion": False,
    }


def class_names(store: Store) -> list[str]:
    """The StorageClasses the lab has now (that applied claims may name)."""
    return [c["metadata"]["name"] for c in store.list("storageclasses")[0]]


def store_storage(
    store: Store,
    lab: str,
    classes: Iterable[StorageClassSpec] = (),
    volumes: Iterable[VolumeObjectSpec] = (),
    claims: Iterable[ClaimObjectSpec] = (),
    build: bool = False,
) -> list[dict]:
    """Write StorageClasses, then static volumes, then claims (`build`: the lab's
    default class first); what was done to each, as `netlab apply` reports it."""
    if build:
        store.apply(default_class_object())
    results = [apply_class(store, spec) for spec in classes]
    results += [apply_volume(store, lab, spec) for spec in volumes]
    return results + [apply_claim(store, spec) for spec in claims]


def _get(store: Store, plural: str, namespace: str | None, name: str) -> dict | None:
    try:
        return store.get(plural, namespace, name)
    except ApiError:
        return None


def _refuse(kind: str, name: str, path: str, message: str, fix: str) -> SpecError:
    return SpecError([Problem(f"{kind}/{name}: {path}", message, fix)])


def _result(kind: str, namespace: str, name: str, action: str) -> dict:
    return {"kind": kind, "namespace": namespace, "name": name, "action": action}


def _metadata(wanted: dict, old: dict) -> dict:
    """The manifest's metadata over the stored one: its labels and annotations (the
    controllers' annotations kept), the store's own fields and finalizers as stored."""
    meta = dict(old["metadata"])
    new = wanted.get("metadata") or {}
    notes = dict(new.get("annotations") or {})
    for key, value in (old["metadata"].get("annotations") or {}).items():
        if key.startswith(CONTROLLER_PREFIXES) and key not in notes:
            notes[key] = value
    meta.update(name=new["name"], labels=dict(new.get("labels") or {}), annotations=notes)
    return meta


def _write(store: Store, kind: str, namespace: str, name: str, new: dict, old: dict | None):
    if old is None:
        store.create(new)
        return _result(kind, namespace, name, "created")
    if objects.manifest_of(new) == objects.manifest_of(old) and new.get("spec") == old.get("spec"):
        return _result(kind, namespace, name, "unchanged")
    store.update(new)
    return _result(kind, namespace, name, "configured")


def apply_class(store: Store, spec: StorageClassSpec) -> dict:
    """A StorageClass (reclaimPolicy and volumeBindingMode defaulted); its provisioner,
    parameters, reclaimPolicy and volumeBindingMode cannot change."""
    old = _get(store, "storageclasses", None, spec.name)
    new = copy.deepcopy(spec.manifest)
    new.setdefault("reclaimPolicy", spec.reclaim_policy)
    new.setdefault("volumeBindingMode", spec.binding_mode)
    if old is not None:
        for field, message in IMMUTABLE_CLASS_FIELDS.items():
            if (new.get(field) or None) != (old.get(field) or None):
                raise _refuse(
                    "StorageClass", spec.name, field, f"Forbidden: {message}",
                    "delete the StorageClass and create it again (its volumes keep theirs)",
                )  # fmt: skip
        new["metadata"] = _metadata(new, old)
    return _write(store, "StorageClass", "", spec.name, new, old)


def apply_claim(store: Store, spec: ClaimObjectSpec) -> dict:
    """A PersistentVolumeClaim: created Pending with the default class if it names
    none, volumeMode Filesystem and the pvc-protection finalizer; once made, only its
    labels and annotations change."""
    old = _get(store, "persistentvolumeclaims", spec.namespace, spec.name)
    new = copy.deepcopy(spec.manifest)
    wanted = new.setdefault("spec", {})
    wanted.setdefault("volumeMode", "Filesystem")
    if old is None:
        if _get(store, "namespaces", None, spec.namespace) is None:
            store.apply(objects.namespace_object(spec.namespace))
        if "storageClassName" not in wanted:
            chosen = default_class(store)
            if chosen is not None:
                wanted["storageClassName"] = chosen
        new["metadata"]["finalizers"] = [PVC_PROTECTION]
        new["status"] = {"phase": "Pending"}
        return _write(store, "PersistentVolumeClaim", spec.namespace, spec.name, new, None)
    stored = old.get("spec") or {}
    for field in ("storageClassName", "volumeName"):
        if field not in wanted and field in stored:
            wanted[field] = stored[field]
    if wanted != stored:
        before = ((stored.get("resources") or {}).get("requests") or {}).get("storage")
        after = ((wanted.get("resources") or {}).get("requests") or {}).get("storage")
        if before != after:
            raise _refuse(
                "PersistentVolumeClaim", spec.name, "spec.resources.requests.storage",
                "Forbidden: only dynamically provisioned pvc can be resized and the "
                "storageclass that provisions the pvc must support resize",
                f"keep storage: {before}; the lab's disks are not resized",
            )  # fmt: skip
        raise _refuse(
            "PersistentVolumeClaim", spec.name, "spec",
            "Forbidden: spec is immutable after creation except resources.requests and "
            "volumeAttributesClassName for bound claims",
            "delete the claim and create it again (with reclaimPolicy Delete its data goes)",
        )  # fmt: skip
    new["metadata"] = _metadata(new, old)
    new["status"] = old.get("status") or {}
    return _write(store, "PersistentVolumeClaim", spec.namespace, spec.name, new, old)


def apply_volume(store: Store, lab: str, spec: VolumeObjectSpec) -> dict:
    """A static PersistentVolume: its csi.volumeHandle made the path of its disk image
    in the lab's disks directory (the persistentvolume controller makes the image);
    its disk cannot change."""
    old = _get(store, "persistentvolumes", None, spec.name)
    new = copy.deepcopy(spec.manifest)
    wanted = new["spec"]
    path = DiskImages(lab).path_of(spec.volume_handle)
    if path is None:
        raise _refuse(
            "PersistentVolume", spec.name, "spec.csi.volumeHandle",
            f"{spec.volume_handle!r} is not a disk of this lab",
            f"name the disk (e.g. volumeHandle: disk1), or give the path of an image in "
            f"{DiskImages(lab).root}",
        )  # fmt: skip
    wanted["csi"] = dict(wanted["csi"], volumeHandle=str(path))
    wanted.setdefault("persistentVolumeReclaimPolicy", spec.reclaim_policy)
    wanted.setdefault("volumeMode", "Filesystem")
    if old is None:
        new["metadata"]["finalizers"] = [PV_PROTECTION]
        new["status"] = {"phase": "Pending"}
        return _write(store, "PersistentVolume", "", spec.name, new, None)
    stored = old.get("spec") or {}
    if "claimRef" not in wanted and "claimRef" in stored:
        wanted["claimRef"] = stored["claimRef"]
    if wanted.get("csi") != stored.get("csi"):
        raise _refuse(
            "PersistentVolume", spec.name, "spec.persistentvolumesource",
            "Forbidden: spec.persistentvolumesource is immutable after creation",
            "delete the volume and create it again",
        )  # fmt: skip
    new["metadata"] = _metadata(new, old)
    new["status"] = old.get("status") or {}
    return _write(store, "PersistentVolume", "", spec.name, new, old)


def mark_deleting(store: Store, plural: str, namespace: str | None, name: str) -> dict:
    """A claim or volume being deleted: Terminating (deletionTimestamp) until the
    persistentvolume controller removes it, once nothing uses it."""
    current = store.get(plural, namespace, name)
    if current["metadata"].get("deletionTimestamp"):
        return current
    current["metadata"]["deletionTimestamp"] = objects.now()
    current["metadata"]["deletionGracePeriodSeconds"] = 0
    return store.update(current)


def delete_class(store: Store, name: str) -> dict:
    """A StorageClass goes at once (its volumes keep what they were made with)."""
    return store.delete("storageclasses", None, name)
