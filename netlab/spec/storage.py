"""StorageClass, PersistentVolumeClaim and PersistentVolume, read as kube-apiserver
validates them, and refused where the lab's one provisioner cannot serve them.

The lab has one kind of disk: `netlab.io/loop-disk`, an ext4 image in the lab's state
directory that one node at a time attaches as a loop device, like a cloud persistent
disk (ReadWriteOnce: one node; ReadWriteOncePod: one pod). ReadOnlyMany and
ReadWriteMany, block volumes and other volume sources are refused before anything is
built, naming the field and what to write instead. `read_claim_spec` reads a claim's
spec wherever one appears (a PersistentVolumeClaim, a StatefulSet's
volumeClaimTemplates); `check_claim_classes` checks that each names a StorageClass
the lab knows.
"""

from __future__ import annotations

import copy
from collections.abc import Collection, Iterable
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from netlab.spec.model import frozen_map
from netlab.spec.quantity import QuantityError, fix_for, quantity_of
from netlab.spec.validate import Checker, describe, did_you_mean, item, join

PROVISIONER = "netlab.io/loop-disk"  # the lab's one provisioner, and its CSI driver's name
DEFAULT_CLASS = "standard"  # made by the lab at build, the default class
DEFAULT_CLASS_ANNOTATION = "storageclass.kubernetes.io/is-default-class"
ACCESS_MODES = ("ReadOnlyMany", "ReadWriteMany", "ReadWriteOnce", "ReadWriteOncePod")
SUPPORTED_MODES = ("ReadWriteOnce", "ReadWriteOncePod")
MODE_ABBREVIATIONS = {  # kubectl's, in its order
    "ReadWriteOnce": "RWO",
    "ReadOnlyMany": "ROX",
    "ReadWriteMany": "RWX",
    "ReadWriteOncePod": "RWOP",
}
VOLUME_MODES = ("Block", "Filesystem")
RECLAIM_POLICIES = ("Delete", "Retain")
BINDING_MODES = ("Immediate", "WaitForFirstConsumer")
FS_TYPES = ("ext4",)
FS_PARAMETERS = ("fsType", "csi.storage.k8s.io/fstype")
MODES_FIX = (
    "use ReadWriteOnce (the pods of one node share the disk) or ReadWriteOncePod (one "
    f"pod): the lab's disks ({PROVISIONER}) attach to one node at a time, as a cloud "
    "persistent disk does"
)

CLAIM_FIELDS = (
    "accessModes",
    "selector",
    "resources",
    "volumeName",
    "storageClassName",
    "volumeMode",
    "dataSource",
    "dataSourceRef",
    "volumeAttributesClassName",
)
RESOURCE_FIELDS = ("requests", "limits")
SELECTOR_FIELDS = ("matchLabels", "matchExpressions")
EXPRESSION_FIELDS = ("key", "operator", "values")
OPERATORS = ("In", "NotIn", "Exists", "DoesNotExist")
CLASS_FIELDS = (
    "provisioner",
    "parameters",
    "reclaimPolicy",
    "mountOptions",
    "allowVolumeExpansion",
    "volumeBindingMode",
    "allowedTopologies",
)
VOLUME_FIELDS = (
    "capacity",
    "accessModes",
    "persistentVolumeReclaimPolicy",
    "storageClassName",
    "volumeMode",
    "claimRef",
    "csi",
    "mountOptions",
    "nodeAffinity",
    "volumeAttributesClassName",
)
# PersistentVolumeSource's other members: Kubernetes' own, none of which the lab has
OTHER_SOURCES = (
    "hostPath", "local", "nfs", "iscsi", "gcePersistentDisk", "awsElasticBlockStore",
    "azureDisk", "azureFile", "cephfs", "rbd", "fc", "flexVolume", "cinder", "glusterfs",
    "portworxVolume", "scaleIO", "storageos", "vsphereVolume", "photonPersistentDisk",
    "quobyte", "flocker",
)  # fmt: skip
CSI_FIELDS = (
    "driver",
    "volumeHandle",
    "readOnly",
    "fsType",
    "volumeAttributes",
    "controllerPublishSecretRef",
    "nodeStageSecretRef",
    "nodePublishSecretRef",
    "controllerExpandSecretRef",
    "nodeExpandSecretRef",
)
CLAIM_REF_FIELDS = (
    "apiVersion",
    "kind",
    "namespace",
    "name",
    "uid",
    "resourceVersion",
    "fieldPath",
)


@dataclass(frozen=True)
class ClaimSpec:
    """What a claim asks for: a PersistentVolumeClaim's spec, or a template's."""

    access_modes: tuple[str, ...]
    storage: int  # bytes requested (resources.requests.storage, rounded up)
    storage_class: str | None = None  # None: the default class; "": no class at all
    volume_mode: str = "Filesystem"
    volume_name: str = ""  # pre-bound to this PersistentVolume
    selector: MappingProxyType | None = None  # matchLabels/matchExpressions, as written


@dataclass(frozen=True)
class ClaimObjectSpec:
    """A PersistentVolumeClaim."""

    name: str
    namespace: str
    claim: ClaimSpec
    labels: MappingProxyType = field(default_factory=frozen_map)
    manifest: dict[str, Any] = field(compare=False, hash=False, default_factory=dict)


@dataclass(frozen=True)
class StorageClassSpec:
    name: str
    provisioner: str = PROVISIONER
    reclaim_policy: str = "Delete"
    binding_mode: str = "Immediate"
    allow_expansion: bool = False
    parameters: MappingProxyType = field(default_factory=frozen_map)
    is_default: bool = False
    manifest: dict[str, Any] = field(compare=False, hash=False, default_factory=dict)


@dataclass(frozen=True)
class VolumeObjectSpec:
    """A PersistentVolume written by a user (a static volume)."""

    name: str
    storage: int  # bytes (spec.capacity.storage)
    access_modes: tuple[str, ...]
    reclaim_policy: str = "Retain"  # a static volume's default, as Kubernetes defaults it
    storage_class: str = ""
    volume_handle: str = ""
    claim_ref: MappingProxyType | None = None
    labels: MappingProxyType = field(default_factory=frozen_map)
    manifest: dict[str, Any] = field(compare=False, hash=False, default_factory=dict)


# ---------------------------------------------------------------- claims


def _storage(value: Any, path: str, checker: Checker, what: str) -> int | None:
    """A storage quantity greater than zero, in bytes (rounded up)."""
    if value is None:
        checker.add(path, "Required value", f"give the size, e.g. {what}: 1Gi")
        return None
    try:
        quantity = quantity_of(value)
    except QuantityError as exc:
        shown = f'"{value}"' if isinstance(value, str) else describe(value)
        checker.add(path, f"Invalid value: {shown}: {exc}", fix_for(value))
        return None
    if quantity.value <= 0:
        checker.add(
            path, f'Invalid value: "{quantity}": must be greater than zero', "write e.g. 1Gi"
        )
        return None
    return quantity.whole


def read_access_modes(obj: dict, path: str, checker: Checker) -> tuple[str, ...] | None:
    """spec.accessModes: at least one, Kubernetes' names, ReadWriteOncePod alone, and
    only the modes the lab's disks have."""
    here = join(path, "accessModes")
    modes = checker.str_list(obj, "accessModes", path)
    if modes is None:
        return None
    if not modes:
        checker.add(here, "Required value: at least 1 access mode is required", "add ReadWriteOnce")
        return None
    good = True
    for i, mode in enumerate(modes):
        if mode not in ACCESS_MODES:
            supported = ", ".join(f'"{m}"' for m in ACCESS_MODES)
            checker.add(
                item(here, i),
                f'Unsupported value: "{mode}": supported values: {supported}',
                did_you_mean(mode, SUPPORTED_MODES, "the lab's disks take"),
            )
            good = False
        elif mode not in SUPPORTED_MODES:
            checker.add(
                item(here, i),
                f"{mode} is not supported by the lab's provisioner {PROVISIONER}",
                MODES_FIX,
            )
            good = False
    if "ReadWriteOncePod" in modes and len(set(modes)) > 1:
        checker.add(
            here,
            "Forbidden: may not use ReadWriteOncePod with other access modes",
            "keep ReadWriteOncePod alone, or use ReadWriteOnce",
        )
        good = False
    return tuple(dict.fromkeys(modes)) if good else None


def _selector(obj: dict, path: str, checker: Checker) -> MappingProxyType | None:
    value = obj.get("selector")
    if value is None:
        return None
    here = join(path, "selector")
    selector = checker.mapping(value, here, SELECTOR_FIELDS)
    if selector is None:
        return None
    checker.labels(selector, "matchLabels", here)
    expressions = checker.take(selector, "matchExpressions", here, "list", default=[]) or []
    for i, entry in enumerate(expressions):
        at = item(join(here, "matchExpressions"), i)
        expression = checker.mapping(entry, at, EXPRESSION_FIELDS, required=("key", "operator"))
        if expression is None:
            continue
        operator = checker.take(expression, "operator", at, "string")
        values = checker.str_list(expression, "values", at)
        if operator is not None and operator not in OPERATORS:
            checker.add(
                join(at, "operator"),
                f'Unsupported value: "{operator}"',
                did_you_mean(operator, OPERATORS, "use one of"),
            )
        elif operator in ("In", "NotIn") and not values:
            checker.add(join(at, "values"), "Required value", "list the values, e.g. [fast]")
        elif operator in ("Exists", "DoesNotExist") and values:
            checker.add(join(at, "values"), "Forbidden: may not be specified", "remove values")
    return frozen_map(copy.deepcopy(selector))


def read_claim_spec(value: Any, path: str, checker: Checker) -> ClaimSpec | None:
    """A claim's spec at `path` (a PersistentVolumeClaim's `spec`, a StatefulSet's
    `spec.volumeClaimTemplates[i].spec`); None, with the problems recorded, if it is
    not one the lab can serve. Whether its StorageClass exists is `check_claim_classes`'s."""
    spec = checker.mapping(value, path, CLAIM_FIELDS, required=("accessModes", "resources"))
    if spec is None:
        return None
    before = len(checker.problems)
    modes = read_access_modes(spec, path, checker)
    storage = None
    resources = spec.get("resources")
    if resources is not None:
        here = join(path, "resources")
        found = checker.mapping(resources, here, RESOURCE_FIELDS, required=("requests",))
        requests = checker.take(found or {}, "requests", here, "mapping", default={}) or {}
        if found is not None and "requests" in found:
            storage = _storage(
                requests.get("storage"), join(here, "requests.storage"), checker, "storage"
            )
            for key in requests:
                if key != "storage":
                    checker.add(
                        join(join(here, "requests"), key),
                        f"a claim asks for storage only, not {key!r}",
                        "remove it",
                    )
        limits = checker.take(found or {}, "limits", here, "mapping", default={}) or {}
        if limits.get("storage") is not None:
            _storage(limits["storage"], join(here, "limits.storage"), checker, "storage")
    storage_class = checker.take(spec, "storageClassName", path, "string")
    volume_mode = checker.choice(spec, "volumeMode", path, VOLUME_MODES, "Filesystem", "use")
    if volume_mode == "Block":
        checker.add(
            join(path, "volumeMode"),
            "raw block volumes are not emulated",
            "remove volumeMode (Filesystem: the disk is mounted as ext4)",
        )
    volume_name = checker.take(spec, "volumeName", path, "string", default="")
    for key in ("dataSource", "dataSourceRef"):
        if spec.get(key) is not None:
            checker.add(
                join(path, key),
                "the lab's provisioner cannot fill a new disk from a snapshot or another claim",
                f"remove {key}; copy the data in from a pod instead",
            )
    checker.take(spec, "volumeAttributesClassName", path, "string")
    selector = _selector(spec, path, checker)
    if len(checker.problems) > before or modes is None or storage is None:
        return None
    return ClaimSpec(modes, storage, storage_class, "Filesystem", volume_name or "", selector)


def read_claim(manifest, value: Any, checker: Checker) -> ClaimObjectSpec | None:
    """`kind: PersistentVolumeClaim` (v1)."""
    claim = read_claim_spec(value, manifest.prefix + "spec", checker)
    if claim is None:
        return None
    return ClaimObjectSpec(
        manifest.name, manifest.namespace, claim, frozen_map(manifest.labels), manifest.body
    )


def claims_in(found: dict[str, list]) -> list[tuple[str, ClaimSpec]]:
    """Every claim among read manifests, with the path its storageClassName is at: the
    PersistentVolumeClaims' and the StatefulSets' volumeClaimTemplates."""
    claims = [
        (f"PersistentVolumeClaim/{c.name}: spec.storageClassName", c.claim)
        for c in found.get("PersistentVolumeClaim", ())
    ]
    for sts in found.get("StatefulSet", ()):
        for i, template in enumerate(sts.claims):
            if template.claim is not None:
                path = (
                    f"StatefulSet/{sts.name}: spec.volumeClaimTemplates[{i}].spec.storageClassName"
                )
                claims.append((path, template.claim))
    return claims


def check_claim_classes(
    claims: Iterable[tuple[str, ClaimSpec]], known: Collection[str], checker: Checker
) -> None:
    """Each claim's storageClassName names a StorageClass the lab knows (`known`: the
    lab's `standard`, those in the same file or apply, those already stored); "" (no
    class: static volumes only) and an absent one (the default class) always do."""
    names = sorted(known)
    for path, claim in claims:
        wanted = claim.storage_class
        if wanted and wanted not in known:
            hint = did_you_mean(wanted, names, "the lab's StorageClasses are")
            checker.add(
                path,
                f'storageclass.storage.k8s.io "{wanted}" not found',
                f"{hint}; or add a StorageClass {wanted!r} (provisioner {PROVISIONER}), or "
                "leave storageClassName out for the default class",
            )


# ---------------------------------------------------------------- classes


def read_storage_class(manifest, _value: Any, checker: Checker) -> StorageClassSpec | None:
    """`kind: StorageClass` (storage.k8s.io/v1): its fields sit beside metadata, with
    no spec."""
    body, path = manifest.body, manifest.prefix
    before = len(checker.problems)
    provisioner = checker.take(body, "provisioner", path, "string")
    if "provisioner" not in body or provisioner == "":
        checker.add(
            join(path, "provisioner"), "Required value", f"write provisioner: {PROVISIONER}"
        )
    elif provisioner is not None and provisioner != PROVISIONER:
        checker.add(
            join(path, "provisioner"),
            f"the lab has no provisioner {provisioner!r}",
            f"write provisioner: {PROVISIONER} (an ext4 disk image that one node at a time "
            "attaches, as a cloud persistent disk)",
        )
    policy = checker.choice(body, "reclaimPolicy", path, RECLAIM_POLICIES, "Delete", "use")
    mode = checker.choice(body, "volumeBindingMode", path, BINDING_MODES, "Immediate", "use")
    expand = checker.take(body, "allowVolumeExpansion", path, "boolean", default=False)
    parameters = checker.take(body, "parameters", path, "mapping", default={}) or {}
    for key, value in parameters.items():
        here = join(join(path, "parameters"), key)
        if key not in FS_PARAMETERS:
            checker.add(
                here,
                f"{PROVISIONER} takes no parameter {key!r}",
                did_you_mean(key, FS_PARAMETERS, "its parameters are"),
            )
        elif checker.check_type(value, here, "string") and value not in FS_TYPES:
            checker.add(here, f"{value!r} is not a filesystem the lab's disks have", "use ext4")
    checker.str_list(body, "mountOptions", path)
    checker.take(body, "allowedTopologies", path, "list")
    notes = (body.get("metadata") or {}).get("annotations") or {}
    if len(checker.problems) > before:
        return None
    return StorageClassSpec(
        manifest.name,
        PROVISIONER,
        policy,
        mode,
        bool(expand),
        frozen_map(dict(parameters)),
        notes.get(DEFAULT_CLASS_ANNOTATION) == "true",
        _cluster_scoped(body),
    )


# ---------------------------------------------------------------- volumes


def read_volume(manifest, value: Any, checker: Checker) -> VolumeObjectSpec | None:
    """`kind: PersistentVolume` (v1), a static volume: a disk of the lab's own
    (`csi: {driver: netlab.io/loop-disk, volumeHandle: NAME}`)."""
    path = manifest.prefix + "spec"
    known = (*VOLUME_FIELDS, *OTHER_SOURCES)
    spec = checker.mapping(value, path, known, required=("capacity", "accessModes"))
    if spec is None:
        return None
    before = len(checker.problems)
    for source in OTHER_SOURCES:
        if spec.get(source) is not None:
            checker.add(
                join(path, source),
                f"the lab has no {source} volumes",
                f"write csi: {{driver: {PROVISIONER}, volumeHandle: NAME}} (a disk image of "
                "the lab's, made when the volume is), or use a claim of the default class",
            )
    capacity = checker.take(spec, "capacity", path, "mapping", default={}) or {}
    storage = _storage(capacity.get("storage"), join(path, "capacity.storage"), checker, "storage")
    modes = read_access_modes(spec, path, checker)
    policy = checker.take(spec, "persistentVolumeReclaimPolicy", path, "string", default="Retain")
    if policy is not None and policy not in RECLAIM_POLICIES:
        fix = (
            "use Delete or Retain"
            if policy == "Recycle"
            else did_you_mean(policy, RECLAIM_POLICIES, "use")
        )
        checker.add(
            join(path, "persistentVolumeReclaimPolicy"),
            f'Unsupported value: "{policy}": supported values: "Delete", "Retain"',
            fix,
        )
    storage_class = checker.take(spec, "storageClassName", path, "string", default="")
    volume_mode = checker.take(spec, "volumeMode", path, "string", default="Filesystem")
    if volume_mode is not None and volume_mode != "Filesystem":
        checker.add(
            join(path, "volumeMode"),
            f"{volume_mode!r}: the lab's volumes are Filesystem volumes",
            "remove volumeMode",
        )
    handle = _csi(spec, path, checker)
    claim_ref = None
    if spec.get("claimRef") is not None:
        here = join(path, "claimRef")
        ref = checker.mapping(spec["claimRef"], here, CLAIM_REF_FIELDS, required=("name",))
        if ref is not None:
            for key in CLAIM_REF_FIELDS:
                checker.take(ref, key, here, "string")
            claim_ref = frozen_map(dict(ref))
    checker.str_list(spec, "mountOptions", path)
    checker.take(spec, "nodeAffinity", path, "mapping")
    checker.take(spec, "volumeAttributesClassName", path, "string")
    if len(checker.problems) > before or None in (storage, modes, handle, policy):
        return None
    return VolumeObjectSpec(
        manifest.name,
        storage,
        modes,
        policy,
        storage_class or "",
        handle,
        claim_ref,
        frozen_map(manifest.labels),
        _cluster_scoped(manifest.body),
    )


def _csi(spec: dict, path: str, checker: Checker) -> str | None:
    """spec.csi of a volume: the lab's driver and a volumeHandle; the handle."""
    here = join(path, "csi")
    if spec.get("csi") is None:
        if not any(spec.get(source) is not None for source in OTHER_SOURCES):
            checker.add(
                path,
                "Required value: must specify a volume type",
                f"add csi: {{driver: {PROVISIONER}, volumeHandle: NAME}}",
            )
        return None
    csi = checker.mapping(spec["csi"], here, CSI_FIELDS, required=("driver", "volumeHandle"))
    if csi is None:
        return None
    driver = checker.take(csi, "driver", here, "string")
    if driver is not None and driver != PROVISIONER:
        checker.add(
            join(here, "driver"),
            f"the lab has no CSI driver {driver!r}",
            f"write driver: {PROVISIONER}",
        )
    handle = checker.take(csi, "volumeHandle", here, "string")
    fs_type = checker.take(csi, "fsType", here, "string", default="ext4")
    if fs_type is not None and fs_type not in FS_TYPES:
        checker.add(join(here, "fsType"), f"{fs_type!r}: the lab's disks are ext4", "use ext4")
    checker.take(csi, "readOnly", here, "boolean")
    checker.take(csi, "volumeAttributes", here, "mapping")
    if handle is not None and ("\x00" in handle or handle in ("", ".", "..")):
        checker.add(join(here, "volumeHandle"), f"{handle!r} is not a disk name", "use e.g. disk1")
        return None
    return handle


def _cluster_scoped(body: dict) -> dict:
    """A cluster-scoped object's manifest: no namespace (the reader of manifests fills
    one in for every kind)."""
    body = dict(body, metadata=dict(body.get("metadata") or {}))
    body["metadata"].pop("namespace", None)
    return body


def access_modes_text(modes: Iterable[str]) -> str:
    """kubectl's ACCESS MODES cell: RWO,ROX,RWX,RWOP in that order."""
    have = set(modes)
    return ",".join(short for mode, short in MODE_ABBREVIATIONS.items() if mode in have)


def selector_matches(selector: dict | MappingProxyType | None, labels: dict[str, str]) -> bool:
    """A claim's label selector against a volume's labels (no selector: any volume)."""
    if not selector:
        return True
    for key, value in (selector.get("matchLabels") or {}).items():
        if labels.get(key) != value:
            return False
    for expression in selector.get("matchExpressions") or ():
        key, operator = expression.get("key"), expression.get("operator")
        values = expression.get("values") or []
        has = key in labels
        if operator == "In" and (not has or labels[key] not in values):
            return False
        if operator == "NotIn" and has and labels[key] in values:
            return False
        if operator == "Exists" and not has:
            return False
        if operator == "DoesNotExist" and has:
            return False
    return True
