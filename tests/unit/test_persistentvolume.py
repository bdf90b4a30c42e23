"""The persistentvolume controller against the real Store, with a disk runtime that
keeps its disks in a dict (the real images are tests/root/test_storage.py's)."""

from __future__ import annotations

import textwrap

import pytest

from netlab import lab_storage
from netlab.controllers.persistentvolume import (
    BUSY_RETRY,
    PROVISIONED_BY,
    PVC_PROTECTION,
    SELECTED_NODE,
    PersistentVolumeController,
)
from netlab.errors import ApiError, SpecError
from netlab.events import EventRecorder
from netlab.node.diskimages import DiskBusy
from netlab.spec.load import parse_lab, parse_manifests
from netlab.store import Store

LAB = parse_lab("lab: {name: t, racks: [{name: r1, subnet: 192.168.1.0/24, nodes: [n1, n2]}]}")


class FakeDisks:
    def __init__(self):
        self.disks: dict[str, int] = {}
        self.busy: set[str] = set()

    def create(self, name, size_bytes):
        handle = name if name.startswith("/") else f"/disks/{name}.img"
        self.disks.setdefault(handle, size_bytes)
        return handle, self.disks[handle]

    def exists(self, handle):
        return handle in self.disks

    def delete(self, handle):
        if handle in self.busy:
            raise DiskBusy(f"{handle} is still attached")
        self.disks.pop(handle, None)


class Harness:
    def __init__(self):
        self.store = Store()
        self.disks = FakeDisks()
        self.ctl = PersistentVolumeController(self.store, self.disks, EventRecorder(self.store))
        self.store.subscribe(self.ctl._on_event, copy_objects=False)
        self.last: dict = {}
        lab_storage.store_storage(self.store, "t", build=True)

    def apply(self, text: str) -> list[dict]:
        found = parse_manifests(
            textwrap.dedent(text), LAB, classes=lab_storage.class_names(self.store)
        )
        return lab_storage.store_storage(
            self.store, "t", found.storage_classes, found.volumes, found.claims
        )

    def run(self) -> None:
        """Reconcile until nothing is queued (delayed keys are reported in `last`)."""
        for key in self.ctl.all_keys():
            self.ctl.queue.add(key)
        for _ in range(500):
            key = self.ctl.queue.get(timeout=0)
            if key is None:
                return
            try:
                self.last[key] = self.ctl.reconcile(key)
            finally:
                self.ctl.queue.done(key)
        raise AssertionError("the controller never settled")

    def get(self, plural, name, namespace="default"):
        return self.store.get(plural, namespace if plural.endswith("claims") else None, name)

    def reasons(self, name: str) -> list[str]:
        return [
            e["reason"]
            for e in self.store.list("events", "default")[0]
            if e["involvedObject"]["name"] == name
        ]

    def pod(self, name: str, claim: str, node: str | None = None, phase="Pending") -> None:
        spec: dict = {
            "containers": [{"name": "c"}],
            "volumes": [{"name": "d", "persistentVolumeClaim": {"claimName": claim}}],
        }
        if node:
            spec["nodeName"] = node
        self.store.apply(
            {
                "apiVersion": "v1",
                "kind": "Pod",
                "metadata": {"name": name, "namespace": "default"},
                "spec": spec,
                "status": {"phase": phase},
            }
        )


def claim(name="data", size="1Gi", extra="") -> str:
    return f"""
        apiVersion: v1
        kind: PersistentVolumeClaim
        metadata: {{name: {name}}}
        spec:
          accessModes: [ReadWriteOnce]
          resources: {{requests: {{storage: {size}}}}}
        {extra}"""


RETAIN = """
        apiVersion: storage.k8s.io/v1
        kind: StorageClass
        metadata: {name: keep}
        provisioner: netlab.io/loop-disk
        reclaimPolicy: Retain
        ---"""


@pytest.fixture
def h() -> Harness:
    return Harness()


def test_a_claim_of_the_default_class_is_provisioned_and_bound(h):
    assert h.apply(claim())[0]["action"] == "created"
    stored = h.get("persistentvolumeclaims", "data")
    assert stored["spec"]["storageClassName"] == "standard"  # the default class, at admission
    assert stored["metadata"]["finalizers"] == [PVC_PROTECTION]
    assert stored["status"]["phase"] == "Pending"
    h.run()
    pvc = h.get("persistentvolumeclaims", "data")
    name = f"pvc-{pvc['metadata']['uid']}"
    assert pvc["spec"]["volumeName"] == name
    assert pvc["status"] == {
        "phase": "Bound",
        "accessModes": ["ReadWriteOnce"],
        "capacity": {"storage": "1Gi"},
    }
    assert pvc["metadata"]["annotations"]["pv.kubernetes.io/bind-completed"] == "yes"
    pv = h.get("persistentvolumes", name)
    assert pv["metadata"]["annotations"][PROVISIONED_BY] == "netlab.io/loop-disk"
    assert pv["spec"]["csi"] == {
        "driver": "netlab.io/loop-disk",
        "volumeHandle": f"/disks/{name}.img",
        "fsType": "ext4",
    }
    assert pv["spec"]["claimRef"]["uid"] == pvc["metadata"]["uid"]
    assert pv["spec"]["persistentVolumeReclaimPolicy"] == "Delete"
    assert pv["status"]["phase"] == "Bound"
    assert h.disks.disks == {f"/disks/{name}.img": 1 << 30}
    assert h.reasons("data") == ["Provisioning", "ProvisioningSucceeded"]
    assert h.apply(claim())[0]["action"] == "unchanged"  # the controller's fields kept


def test_wait_for_first_consumer_provisions_once_a_pod_has_a_node(h):
    lazy = RETAIN.replace("keep", "lazy").replace("Retain", "Delete")
    lazy = lazy.replace("---", "volumeBindingMode: WaitForFirstConsumer\n        ---")
    h.apply(lazy + claim(extra="  storageClassName: lazy"))
    h.run()
    pvc = h.get("persistentvolumeclaims", "data")
    assert pvc["status"]["phase"] == "Pending" and not h.store.list("persistentvolumes")[0]
    assert h.reasons("data") == ["WaitForFirstConsumer"]
    h.pod("user", "data")  # not scheduled yet
    h.run()
    assert not h.store.list("persistentvolumes")[0]
    h.pod("user", "data", node="n2")
    h.run()
    pvc = h.get("persistentvolumeclaims", "data")
    assert pvc["metadata"]["annotations"][SELECTED_NODE] == "n2"
    assert pvc["status"]["phase"] == "Bound"


def test_delete_waits_for_the_pods_then_for_detach_then_removes_the_disk(h):
    h.apply(claim())
    h.run()
    pv = h.get("persistentvolumeclaims", "data")["spec"]["volumeName"]
    handle = h.get("persistentvolumes", pv)["spec"]["csi"]["volumeHandle"]
    h.pod("user", "data", node="n1", phase="Running")
    h.store.apply(
        {
            "apiVersion": "storage.k8s.io/v1",
            "kind": "VolumeAttachment",
            "metadata": {"name": "csi-1"},
            "spec": {"attacher": "netlab.io/loop-disk", "nodeName": "n1",
                     "source": {"persistentVolumeName": pv}},
        }
    )  # fmt: skip
    lab_storage.mark_deleting(h.store, "persistentvolumeclaims", "default", "data")
    h.run()
    assert h.get("persistentvolumeclaims", "data")["metadata"]["deletionTimestamp"]  # in use
    h.store.delete("pods", "default", "user")
    h.run()
    with pytest.raises(ApiError):
        h.get("persistentvolumeclaims", "data")
    assert h.get("persistentvolumes", pv)["status"]["phase"] == "Released"  # still attached
    assert handle in h.disks.disks
    h.disks.busy.add(handle)  # detached in the store, the kernel not yet done
    h.store.delete("volumeattachments", None, "csi-1")
    h.run()
    assert h.last[("volume", pv)] == BUSY_RETRY and handle in h.disks.disks
    h.disks.busy.clear()
    h.run()
    assert handle not in h.disks.disks
    with pytest.raises(ApiError):
        h.get("persistentvolumes", pv)


def test_retain_keeps_a_released_volume_and_its_disk(h):
    h.apply(RETAIN + claim(extra="  storageClassName: keep"))
    h.run()
    pv = h.get("persistentvolumeclaims", "data")["spec"]["volumeName"]
    lab_storage.mark_deleting(h.store, "persistentvolumeclaims", "default", "data")
    h.run()
    volume = h.get("persistentvolumes", pv)
    assert volume["status"]["phase"] == "Released"
    assert volume["spec"]["persistentVolumeReclaimPolicy"] == "Retain"
    assert volume["spec"]["csi"]["volumeHandle"] in h.disks.disks
    h.apply(claim(extra="  storageClassName: keep"))  # a new claim does not take it
    h.run()
    assert h.get("persistentvolumes", pv)["status"]["phase"] == "Released"
    assert h.get("persistentvolumeclaims", "data")["spec"]["volumeName"] != pv


def test_static_volumes_get_their_disk_and_bind_by_size_class_and_name(h):
    h.apply(
        """
        apiVersion: v1
        kind: PersistentVolume
        metadata: {name: small}
        spec:
          capacity: {storage: 100Mi}
          accessModes: [ReadWriteOnce]
          csi: {driver: netlab.io/loop-disk, volumeHandle: small}
        ---
        apiVersion: v1
        kind: PersistentVolume
        metadata: {name: big}
        spec:
          capacity: {storage: 2Gi}
          accessModes: [ReadWriteOnce]
          csi: {driver: netlab.io/loop-disk, volumeHandle: big}
        """
    )
    h.run()
    small = h.get("persistentvolumes", "small")
    assert small["status"]["phase"] == "Available"
    assert small["spec"]["csi"]["volumeHandle"].endswith("/t/disks/small.img")  # made absolute
    assert small["spec"]["csi"]["volumeHandle"] in h.disks.disks  # the admin's disk, made
    h.apply(claim("a", "50Mi", "  storageClassName: ''"))
    h.apply(claim("b", "3Gi", "  storageClassName: ''"))
    h.apply(claim("c", "1Mi", "  volumeName: big"))
    h.run()
    assert h.get("persistentvolumeclaims", "a")["spec"]["volumeName"] == "small"  # the smallest
    assert h.get("persistentvolumeclaims", "b")["status"]["phase"] == "Pending"  # none fits
    assert "FailedBinding" in h.reasons("b")
    c = h.get("persistentvolumeclaims", "c")  # pre-bound: standard class, so it does not fit
    assert c["status"]["phase"] == "Pending" and "FailedBinding" in h.reasons("c")
    assert "storageClassName does not match" in next(
        e["message"] for e in h.store.list("events", "default")[0]
        if e["involvedObject"]["name"] == "c"
    )  # fmt: skip
    assert h.get("persistentvolumes", "big")["status"]["phase"] == "Available"


def test_a_claims_spec_cannot_change_once_made(h):
    h.apply(claim())
    h.run()
    with pytest.raises(SpecError, match="only dynamically provisioned pvc can be resized"):
        h.apply(claim(size="2Gi"))
    with pytest.raises(SpecError, match="spec is immutable after creation"):
        h.apply(claim(extra="  storageClassName: ''"))
    labelled = claim().replace("{name: data}", "{name: data, labels: {app: db}}")
    assert h.apply(labelled)[0]["action"] == "configured"
    assert h.get("persistentvolumeclaims", "data")["status"]["phase"] == "Bound"


def test_a_claim_stored_without_a_class_gets_the_default_one(h):
    h.store.create(
        {
            "apiVersion": "v1",
            "kind": "PersistentVolumeClaim",
            "metadata": {"name": "old", "namespace": "default"},
            "spec": {"accessModes": ["ReadWriteOnce"],
                     "resources": {"requests": {"storage": "10Mi"}}},
        }
    )  # fmt: skip
    h.run()
    pvc = h.get("persistentvolumeclaims", "old")
    assert pvc["spec"]["storageClassName"] == "standard" and pvc["status"]["phase"] == "Bound"


def test_a_storage_class_keeps_its_provisioner_and_parameters(h):
    assert h.apply(RETAIN.removesuffix("---"))[0]["action"] == "created"
    assert h.apply(RETAIN.removesuffix("---"))[0]["action"] == "unchanged"
    with pytest.raises(SpecError, match="updates to reclaimPolicy are forbidden"):
        h.apply(RETAIN.removesuffix("---").replace("Retain", "Delete"))
    assert h.get("storageclasses", "keep")["volumeBindingMode"] == "Immediate"  # defaulted


def test_netlab_get_prints_kubectls_storage_columns(h):
    from netlab.tables import render

    h.apply(claim())
    h.run()
    pvcs = h.store.list("persistentvolumeclaims")[0]
    out = render("persistentvolumeclaims", pvcs, all_namespaces=True).splitlines()
    assert out[0].split()[:3] == ["NAMESPACE", "NAME", "STATUS"]
    assert out[1].split()[:8] == [
        "default", "data", "Bound", pvcs[0]["spec"]["volumeName"], "1Gi", "RWO", "standard",
        "<unset>",
    ]  # fmt: skip
    out = render("persistentvolumes", h.store.list("persistentvolumes")[0], all_namespaces=True)
    assert out.split()[:2] == ["NAME", "CAPACITY"]  # cluster-scoped: no NAMESPACE column
    assert out.splitlines()[1].split()[3:6] == ["Delete", "Bound", "default/data"]
    out = render("storageclasses", h.store.list("storageclasses")[0]).splitlines()
    assert out[1].split()[:6] == [
        "standard", "(default)", "netlab.io/loop-disk", "Delete", "Immediate", "false"
    ]  # fmt: skip
