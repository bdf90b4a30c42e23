"""The store's shapes that attaching a PersistentVolume to a node turns on, shared by
the attach/detach controller, the persistentVolumeClaim volume plugin and the
scheduler's ReadWriteOncePod check: which claims a pod uses, which PV a claim is bound
to, a VolumeAttachment's name, a node's global mount of a PV. Reads only.
"""

from __future__ import annotations

import hashlib
from collections.abc import Collection, Iterable
from pathlib import Path
from typing import TYPE_CHECKING

from netlab.errors import ApiError
from netlab.spec.volumes import ClaimSource, VolumeSpec

if TYPE_CHECKING:
    from netlab.store import Store

DRIVER = "netlab.io/loop-disk"  # the lab's CSI-like driver: PVs of it are disk images
READ_WRITE_ONCE_POD = "ReadWriteOncePod"
RWOP_CONFLICT = (
    "node has pod using PersistentVolumeClaim with the same name and ReadWriteOncePod access mode"
)


def va_name(pv: str, node: str, driver: str = DRIVER) -> str:
    """A VolumeAttachment's name, as Kubernetes' CSI attacher makes it."""
    return "csi-" + hashlib.sha256(f"{pv}{driver}{node}".encode()).hexdigest()


def global_mount(node_disk: Path, pv: str) -> Path:
    """Where a node mounts an attached PV once, for all its pods (kubelet's
    plugins/kubernetes.io/csi/pv/<pv>/globalmount)."""
    return node_disk / "plugins" / "pv" / pv / "globalmount"


def claims_of(pod: dict) -> list[str]:
    """The PersistentVolumeClaims a Pod object's volumes name."""
    names = []
    for volume in (pod.get("spec") or {}).get("volumes") or ():
        claim = (volume.get("persistentVolumeClaim") or {}).get("claimName")
        if claim and claim not in names:
            names.append(claim)
    return names


def volume_claims(volumes: Iterable[VolumeSpec]) -> list[str]:
    """The claims a pod template's volumes name."""
    return [v.source.claim_name for v in volumes if isinstance(v.source, ClaimSource)]


def finished(pod: dict) -> bool:
    return (pod.get("status") or {}).get("phase") in ("Succeeded", "Failed")


def terminating(pod: dict) -> bool:
    return bool(pod["metadata"].get("deletionTimestamp"))


def image_of(pv: dict) -> str | None:
    """The disk image of a PV of the lab's driver (its CSI volumeHandle), else None."""
    csi = (pv.get("spec") or {}).get("csi") or {}
    if csi.get("driver") != DRIVER or not csi.get("volumeHandle"):
        return None
    return str(csi["volumeHandle"])


def bound_claim(store: Store, pv: dict) -> dict | None:
    """The PVC a PV is bound to, both ways (its claimRef names the claim, the claim's
    volumeName names the PV), or None."""
    ref = (pv.get("spec") or {}).get("claimRef") or {}
    if not ref.get("name"):
        return None
    try:
        claim = store.get("persistentvolumeclaims", ref.get("namespace") or "default", ref["name"])
    except ApiError:
        return None
    if (claim.get("spec") or {}).get("volumeName") != pv["metadata"]["name"]:
        return None
    if ref.get("uid") and ref["uid"] != claim["metadata"]["uid"]:
        return None  # a claim of the same name made again: not this PV's
    return claim


def pods_using(store: Store, claim: dict) -> list[dict]:
    """The Pods scheduled to a node that use `claim` and have not finished (terminating
    ones too), oldest first."""
    meta = claim["metadata"]
    pods = [
        p
        for p in store.list("pods", meta["namespace"])[0]
        if (p.get("spec") or {}).get("nodeName")
        and not finished(p)
        and meta["name"] in claims_of(p)
    ]
    return sorted(
        pods, key=lambda p: (p["metadata"].get("creationTimestamp", ""), p["metadata"]["name"])
    )


def rwop_claims(store: Store, namespace: str, claim_names: Iterable[str]) -> list[dict]:
    """Those of these claims whose access mode is ReadWriteOncePod."""
    found = []
    for name in dict.fromkeys(claim_names):
        try:
            claim = store.get("persistentvolumeclaims", namespace, name)
        except ApiError:
            continue
        if READ_WRITE_ONCE_POD in ((claim.get("spec") or {}).get("accessModes") or ()):
            found.append(claim)
    return found


def rwop_check(
    store: Store, namespace: str, claim_names: Iterable[str], taken: Collection[str] = ()
) -> tuple[str | None, set[str]]:
    """(kube-scheduler's reason (VolumeRestrictions) when a new pod may not be scheduled
    because a scheduled pod, or one of `taken` (the ReadWriteOncePod claims of pods
    placed earlier in the same batch, not in the store yet), already uses one of its
    ReadWriteOncePod claims, else None; the names of its ReadWriteOncePod claims)."""
    once = rwop_claims(store, namespace, claim_names)
    names = {claim["metadata"]["name"] for claim in once}
    if names & set(taken) or any(pods_using(store, claim) for claim in once):
        return RWOP_CONFLICT, names
    return None, names


def rwop_conflicts(store: Store, namespace: str, claim_names: Iterable[str]) -> str | None:
    """kube-scheduler's reason when a scheduled pod already uses one of these
    ReadWriteOncePod claims; None if none does."""
    return rwop_check(store, namespace, claim_names)[0]
