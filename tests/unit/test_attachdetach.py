"""The attach/detach controller's decisions, the persistentVolumeClaim plugin's and the
ReadWriteOncePod check, against the real Store (the kernel side is a fake here; the
root tests use real loop devices)."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest

from netlab.controllers.attachdetach import RETRY, AttachDetachController, multi_attach
from netlab.controllers.nodelifecycle import UNREACHABLE
from netlab.events import EventRecorder
from netlab.node import claimvolumes, loopdisks
from netlab.node.attachments import DRIVER, RWOP_CONFLICT, rwop_conflicts, va_name
from netlab.node.claimvolumes import ClaimVolumes
from netlab.node.volumeplugin import VolumeContext, VolumeNotReady
from netlab.spec.volumes import ClaimSource, VolumeSpec
from netlab.store import Store

IMAGE = "/var/lib/netlab/labs/t/disks/pvc-1.img"


class FakeDisks:
    """The kernel's side as the controller sees it: which image backs which device."""

    def __init__(self) -> None:
        self.devices: dict[str, str] = {}  # image -> device
        self.calls: list[tuple] = []
        self.serial = 0
        self.fenced: set[str] = set()  # images some other holder still has

    def attached(self, image):
        return self.devices.get(image) or ("/dev/loop99" if image in self.fenced else None)

    def attach(self, image):
        if self.attached(image):
            raise loopdisks.DiskFenced(f"disk image {image} is still attached")
        self.serial += 1
        self.devices[image] = f"/dev/loop{self.serial}"
        self.calls.append(("attach", image))
        return self.devices[image]

    def hold(self, device):
        pass

    def detach(self, node, pv, image):
        self.calls.append(("detach", node, pv))
        self.devices.pop(image, None)


def node(store, name, ready=True, unreachable=False):
    spec = {"taints": [{"key": UNREACHABLE, "effect": "NoExecute"}]} if unreachable else {}
    store.apply(
        {
            "apiVersion": "v1",
            "kind": "Node",
            "metadata": {"name": name},
            "spec": spec,
            "status": {"conditions": [{"type": "Ready", "status": str(ready)}]},
        }
    )


def claim(store, name="data", pv="pvc-1", phase="Bound", modes=("ReadWriteOnce",)):
    return store.apply(
        {
            "apiVersion": "v1",
            "kind": "PersistentVolumeClaim",
            "metadata": {"name": name, "namespace": "default"},
            "spec": {"accessModes": list(modes), "volumeName": pv if phase == "Bound" else ""},
            "status": {"phase": phase},
        }
    )


def volume(store, name="pvc-1", claim_obj=None, driver=DRIVER):
    ref = {}
    if claim_obj is not None:
        meta = claim_obj["metadata"]
        ref = {"kind": "PersistentVolumeClaim", "namespace": meta["namespace"],
               "name": meta["name"], "uid": meta["uid"], "apiVersion": "v1"}  # fmt: skip
    store.apply(
        {
            "apiVersion": "v1",
            "kind": "PersistentVolume",
            "metadata": {"name": name},
            "spec": {
                "accessModes": ["ReadWriteOnce"],
                "claimRef": ref,
                "csi": {"driver": driver, "volumeHandle": IMAGE, "fsType": "ext4"},
            },
            "status": {"phase": "Bound"},
        }
    )


def pod(store, name, node_name="n1", claims=("data",), phase="Running", deleting=False):
    meta = {"name": name, "namespace": "default"}
    if deleting:
        meta["deletionTimestamp"] = "2026-01-01T00:00:00Z"
    volumes = [
        {"name": f"v{i}", "persistentVolumeClaim": {"claimName": c}} for i, c in enumerate(claims)
    ]
    spec = {"volumes": volumes, "containers": []}
    if node_name:
        spec["nodeName"] = node_name
    store.apply(
        {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": meta,
            "spec": spec,
            "status": {"phase": phase},
        }
    )


@pytest.fixture
def lab():
    store = Store()
    for name in ("n1", "n2"):
        node(store, name)
    volume(store, claim_obj=claim(store))
    disks = FakeDisks()
    now = [1000.0]
    ctl = AttachDetachController(store, disks, EventRecorder(store), lambda: now[0])
    return SimpleNamespace(store=store, disks=disks, ctl=ctl, now=now)


def attachments(store):
    return {va["spec"]["nodeName"]: va for va in store.list("volumeattachments")[0]}


def warnings(store, pod_name):
    return [
        e for e in store.list("events", "default")[0]
        if e["involvedObject"]["name"] == pod_name and e["type"] == "Warning"
    ]  # fmt: skip


def test_a_pods_claim_is_attached_to_its_node(lab):
    pod(lab.store, "a", "n1")
    assert lab.ctl.reconcile("pvc-1") is None
    va = attachments(lab.store)["n1"]
    assert va["metadata"]["name"] == va_name("pvc-1", "n1")
    assert va["spec"] == {
        "attacher": DRIVER,
        "nodeName": "n1",
        "source": {"persistentVolumeName": "pvc-1"},
    }
    assert va["status"]["attached"] is True
    assert va["status"]["attachmentMetadata"] == {"devicePath": "/dev/loop1"}
    assert lab.ctl.reconcile("pvc-1") is None  # level: nothing more to do
    assert lab.disks.calls == [("attach", IMAGE)]


def test_pods_of_one_node_share_the_disk(lab):
    pod(lab.store, "a", "n1")
    pod(lab.store, "b", "n1")
    assert lab.ctl.reconcile("pvc-1") is None
    assert list(attachments(lab.store)) == ["n1"]
    assert warnings(lab.store, "b") == []


def test_a_pod_on_another_node_gets_the_multi_attach_event_and_waits(lab):
    pod(lab.store, "a", "n1")
    lab.ctl.reconcile("pvc-1")
    pod(lab.store, "b", "n2")
    again = lab.ctl.reconcile("pvc-1")
    assert again is not None  # looked at again later
    assert list(attachments(lab.store)) == ["n1"]
    [event] = warnings(lab.store, "b")
    assert event["reason"] == "FailedAttachVolume"
    assert event["source"]["component"] == "attachdetach-controller"
    assert event["message"] == (
        'Multi-Attach error for volume "pvc-1" Volume is already exclusively attached to one '
        "node and can't be attached to another"
    )
    assert event["message"] == multi_attach("pvc-1")
    assert warnings(lab.store, "a") == []


def test_the_disk_follows_when_the_first_nodes_pod_is_gone(lab):
    pod(lab.store, "a", "n1")
    lab.ctl.reconcile("pvc-1")
    pod(lab.store, "b", "n2")
    lab.ctl.reconcile("pvc-1")
    lab.store.delete("pods", "default", "a")
    assert lab.ctl.reconcile("pvc-1") is None
    assert list(attachments(lab.store)) == ["n2"]
    assert lab.disks.calls == [("attach", IMAGE), ("detach", "n1", "pvc-1"), ("attach", IMAGE)]


def test_a_terminating_pod_keeps_the_disk_but_attaches_nothing_new(lab):
    pod(lab.store, "a", "n1", deleting=True)
    lab.ctl.reconcile("pvc-1")
    assert attachments(lab.store) == {}  # it is going: nothing is attached for it
    pod(lab.store, "a", "n1")
    lab.ctl.reconcile("pvc-1")
    pod(lab.store, "a", "n1", deleting=True)  # now on its way out, still running
    pod(lab.store, "b", "n2")
    lab.ctl.reconcile("pvc-1")
    assert list(attachments(lab.store)) == ["n1"]
    assert warnings(lab.store, "b")[0]["message"] == multi_attach("pvc-1")


def test_finished_pods_and_unscheduled_pods_need_no_disk(lab):
    pod(lab.store, "done", "n1", phase="Succeeded")
    pod(lab.store, "pending", None)
    lab.ctl.reconcile("pvc-1")
    assert attachments(lab.store) == {}


def test_a_lost_nodes_disk_is_force_detached_and_follows_its_pod(lab):
    pod(lab.store, "a", "n1")
    lab.ctl.reconcile("pvc-1")
    node(lab.store, "n1", ready=False)  # silent, within the grace period: kept
    pod(lab.store, "a2", "n2")
    lab.ctl.reconcile("pvc-1")
    assert list(attachments(lab.store)) == ["n1"]
    node(lab.store, "n1", ready=False, unreachable=True)  # lost; its pod not deleted yet
    assert lab.ctl.reconcile("pvc-1") is None
    assert list(attachments(lab.store)) == ["n2"]
    assert ("detach", "n1", "pvc-1") in lab.disks.calls


def test_a_fenced_attach_is_recorded_and_tried_again(lab):
    lab.disks.fenced.add(IMAGE)  # the old node's container still holds the disk
    pod(lab.store, "a", "n2")
    assert lab.ctl.reconcile("pvc-1") == RETRY
    va = attachments(lab.store)["n2"]
    assert va["status"]["attached"] is False
    assert "still attached" in va["status"]["attachError"]["message"]
    [event] = warnings(lab.store, "a")
    assert event["message"].startswith('AttachVolume.Attach failed for volume "pvc-1" : ')
    lab.disks.fenced.clear()  # its last mount went
    assert lab.ctl.reconcile("pvc-1") is None
    va = attachments(lab.store)["n2"]
    assert va["status"]["attached"] is True and "attachError" not in va["status"]


def test_a_device_gone_meanwhile_is_attached_again(lab):
    pod(lab.store, "a", "n1")
    lab.ctl.reconcile("pvc-1")
    lab.disks.devices.clear()  # a restarted supervisor's unmounted device went with it
    lab.ctl.reconcile("pvc-1")
    assert (
        attachments(lab.store)["n1"]["status"]["attachmentMetadata"]["devicePath"] == "/dev/loop2"
    )


def test_another_drivers_volume_is_left_alone(lab):
    volume(lab.store, "other", claim(lab.store, "c2", "other"), driver="ebs.csi.aws.com")
    pod(lab.store, "a", "n1", claims=("c2",))
    assert lab.ctl.reconcile("other") is None
    assert attachments(lab.store) == {} and lab.disks.calls == []


def test_a_deleted_volumes_attachment_goes(lab):
    pod(lab.store, "a", "n1")
    lab.ctl.reconcile("pvc-1")
    lab.store.delete("persistentvolumes", None, "pvc-1")
    lab.ctl.reconcile("pvc-1")
    assert attachments(lab.store) == {}
    assert lab.disks.calls[-1] == ("detach", "n1", "pvc-1")


def test_events_map_to_the_volume_they_concern(lab):
    seen = []
    lab.store.subscribe(lambda ev: seen.append(set(lab.ctl.keys_for(ev))))
    pod(lab.store, "a", "n1")
    pod(lab.store, "plain", "n1", claims=())
    claim(lab.store)
    lab.ctl.reconcile("pvc-1")
    assert seen[:3] == [{"pvc-1"}, set(), {"pvc-1"}]
    assert {"pvc-1"} in seen[3:]  # the VolumeAttachment's own events
    assert set(lab.ctl.all_keys()) == {"pvc-1"}


def test_the_controller_runs_on_its_own(lab):
    import time

    lab.ctl.start()
    try:
        pod(lab.store, "a", "n1")
        deadline = time.monotonic() + 5
        while not attachments(lab.store).get("n1", {}).get("status", {}).get("attached"):
            assert time.monotonic() < deadline
            time.sleep(0.01)
    finally:
        lab.ctl.stop()


# -- ReadWriteOncePod ------------------------------------------------------------


def test_rwop_refuses_a_second_pod_of_the_claim():
    store = Store()
    claim(store, "solo", modes=("ReadWriteOncePod",))
    claim(store, "shared", "pvc-2")
    assert rwop_conflicts(store, "default", ["solo"]) is None
    pod(store, "pending", None, claims=("solo",))  # not scheduled: holds nothing
    assert rwop_conflicts(store, "default", ["solo"]) is None
    pod(store, "a", "n1", claims=("solo",))
    assert rwop_conflicts(store, "default", ["solo", "shared"]) == RWOP_CONFLICT
    assert rwop_conflicts(store, "default", ["shared"]) is None
    assert rwop_conflicts(store, "other", ["solo"]) is None
    pod(store, "a", "n1", claims=("solo",), phase="Succeeded")
    assert rwop_conflicts(store, "default", ["solo"]) is None


# -- the persistentVolumeClaim plugin ---------------------------------------------


def context(name="a", node_name="n1"):
    plan = SimpleNamespace(
        name=name, namespace="default", node=node_name, netns=f"nl-t:{name}",
        key=("default", name),
    )  # fmt: skip
    return VolumeContext(
        "t", plan, Path("/run/x"), Path("/var/lib/netlab/labs/t/nodes") / node_name
    )


DATA = VolumeSpec("data", ClaimSource("data"))


def test_plugin_waits_for_a_claim_a_binding_and_an_attachment(lab, monkeypatch):
    plugin = ClaimVolumes(lab.store)
    ctx = context()
    with pytest.raises(VolumeNotReady) as missing:
        plugin.setup(ctx, VolumeSpec("x", ClaimSource("nope")))
    assert missing.value.message == 'persistentvolumeclaim "nope" not found'
    claim(lab.store, "pending", phase="Pending")
    with pytest.raises(VolumeNotReady) as unbound:
        plugin.setup(ctx, VolumeSpec("x", ClaimSource("pending")))
    assert unbound.value.message == (
        'PVC default/pending has non-bound phase ("Pending") or empty pvc.Spec.VolumeName ("")'
    )
    with pytest.raises(VolumeNotReady) as unattached:
        plugin.setup(ctx, DATA)
    assert unattached.value.event == "FailedMount"
    assert unattached.value.message == (
        "Unable to attach or mount volumes: unmounted volumes=[data], "
        "unattached volumes=[data]: timed out waiting for the condition"
    )
    pod(lab.store, "a", "n1")
    lab.ctl.reconcile("pvc-1")
    mounted = []
    monkeypatch.setattr(claimvolumes.loopdisks, "backing_file", lambda dev: IMAGE)
    monkeypatch.setattr(claimvolumes.loopdisks, "mount_global", lambda d, t: mounted.append((d, t)))
    target = plugin.setup(ctx, DATA)
    assert target == Path("/var/lib/netlab/labs/t/nodes/n1/plugins/pv/pvc-1/globalmount")
    assert mounted == [("/dev/loop1", target)]
    # the kernel says otherwise (the device backs something else now): not ready
    monkeypatch.setattr(claimvolumes.loopdisks, "backing_file", lambda dev: "/elsewhere.img")
    with pytest.raises(VolumeNotReady):
        plugin.setup(ctx, DATA)


def test_plugin_unmounts_only_when_no_other_pod_of_the_node_uses_the_disk(lab, monkeypatch):
    plugin = ClaimVolumes(lab.store)
    unmounted = []
    monkeypatch.setattr(claimvolumes.loopdisks, "unmount_global", unmounted.append)
    pod(lab.store, "a", "n1")
    pod(lab.store, "b", "n1")
    pod(lab.store, "c", "n2")
    plugin.teardown(context("a"), DATA)
    assert unmounted == []  # b still uses it
    pod(lab.store, "b", "n1", deleting=True)
    plugin.teardown(context("a"), DATA)
    assert unmounted == [Path("/var/lib/netlab/labs/t/nodes/n1/plugins/pv/pvc-1/globalmount")]
    lab.store.delete("persistentvolumeclaims", "default", "data")  # the claim went first
    plugin.teardown(context("c", "n2"), DATA)
    assert unmounted[-1] == Path("/var/lib/netlab/labs/t/nodes/n2/plugins/pv/pvc-1/globalmount")
