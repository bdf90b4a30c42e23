"""The attach/detach controller in a real lab, on real loop devices: a claim's disk
attached to its pod's node and mounted there, Multi-Attach refused with Kubernetes'
event, the disk following its pod to another node with its data, and a failed node's
disk force-detached after the grace period; the scheduler's ReadWriteOncePod check.

The pods here are store objects only (the lab's kubelet does not mount claims yet):
the persistentVolumeClaim plugin is driven as kubelet's volume manager will drive it."""

from __future__ import annotations

import shutil
import subprocess
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

from netlab import paths
from netlab.controllers.attachdetach import multi_attach
from netlab.lab import Lab
from netlab.node import loopdisks
from netlab.node.attachments import DRIVER, va_name
from netlab.node.claimvolumes import ClaimVolumes
from netlab.node.mounts import mounted_under
from netlab.node.volumeplugin import VolumeContext, VolumeNotReady
from netlab.plan.scheduler import Unschedulable
from netlab.spec import LabBuilder
from netlab.spec.model import PodTemplate, frozen_map
from netlab.spec.volumes import ClaimSource, VolumeSpec
from tests.root.conftest import wait_for

pytestmark = pytest.mark.root

LAB = "t-attach"
DATA = VolumeSpec("data", ClaimSource("data"))


@pytest.fixture(scope="module")
def alab():
    b = LabBuilder(LAB)
    b.add_rack("rack1", "192.168.1.0/24")
    b.add_rack("rack2", "192.168.2.0/24")
    b.add_node("n1", rack="rack1")
    b.add_node("n2", rack="rack2")
    state = paths.state_dir(LAB)
    try:
        with Lab(b.build()) as lab:
            yield lab
    finally:
        loopdisks.sweep(state)
        assert mounted_under(state) == []
        shutil.rmtree(state, ignore_errors=True)
    assert loopdisks.loop_devices() == [
        d for d in loopdisks.loop_devices() if not d.backing_file.startswith(str(state))
    ]


def make_disk(lab: Lab, pv: str, claim: str) -> str:
    image = paths.disks_dir(LAB) / f"{pv}.img"
    image.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run(["truncate", "-s", "16M", str(image)], check=True)
    subprocess.run(["mkfs.ext4", "-q", "-F", str(image)], check=True)
    pvc = lab.store.apply(
        {
            "apiVersion": "v1",
            "kind": "PersistentVolumeClaim",
            "metadata": {"name": claim, "namespace": "default"},
            "spec": {"accessModes": ["ReadWriteOnce"], "volumeName": pv},
            "status": {"phase": "Bound"},
        }
    )
    lab.store.apply(
        {
            "apiVersion": "v1",
            "kind": "PersistentVolume",
            "metadata": {"name": pv},
            "spec": {
                "accessModes": ["ReadWriteOnce"],
                "claimRef": {"kind": "PersistentVolumeClaim", "namespace": "default",
                             "name": claim, "uid": pvc["metadata"]["uid"], "apiVersion": "v1"},
                "csi": {"driver": DRIVER, "volumeHandle": str(image), "fsType": "ext4"},
            },
            "status": {"phase": "Bound"},
        }
    )  # fmt: skip
    return str(image)


def claim_pod(lab: Lab, name: str, node: str, claim: str = "data") -> None:
    lab.store.apply(
        {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": name, "namespace": "default"},
            "spec": {
                "nodeName": node,
                "containers": [{"name": "c", "image": "none"}],
                "volumes": [{"name": "data", "persistentVolumeClaim": {"claimName": claim}}],
            },
            "status": {"phase": "Pending"},
        }
    )


def context(name: str, node: str) -> VolumeContext:
    plan = SimpleNamespace(
        name=name, namespace="default", node=node, netns=f"x-{name}", key=("default", name)
    )
    return VolumeContext(LAB, plan, Path("/nonexistent"), paths.node_disk(LAB, node))


def attached_to(lab: Lab, pv: str) -> str | None:
    for va in lab.store.list("volumeattachments")[0]:
        if va["spec"]["source"]["persistentVolumeName"] == pv and va["status"].get("attached"):
            return va["spec"]["nodeName"]
    return None


def setup_when_ready(plugin: ClaimVolumes, ctx: VolumeContext, timeout: float = 5.0) -> Path:
    found: list[Path] = []

    def ready() -> bool:
        try:
            found.append(plugin.setup(ctx, DATA))
        except VolumeNotReady:
            return False
        return True

    assert wait_for(ready, timeout)
    return found[0]


def test_a_claim_follows_its_pod_and_multi_attach_is_refused(alab):
    image = make_disk(alab, "pvc-follow", "data")
    plugin = ClaimVolumes(alab.store)
    claim_pod(alab, "first", "n1")
    assert wait_for(lambda: attached_to(alab, "pvc-follow") == "n1", 5)
    va = alab.store.get("volumeattachments", None, va_name("pvc-follow", "n1"))
    device = va["status"]["attachmentMetadata"]["devicePath"]
    assert loopdisks.attached(image) == device  # the kernel agrees
    target = setup_when_ready(plugin, context("first", "n1"))
    assert target == paths.node_disk(LAB, "n1") / "plugins/pv/pvc-follow/globalmount"
    assert loopdisks.mounted_device(target) == device
    (target / "counter").write_text("7\n")

    claim_pod(alab, "second", "n2")  # RWO, another node: waits, with the event
    event_of = lambda: [  # noqa: E731
        e for e in alab.store.list("events", "default")[0]
        if e["involvedObject"]["name"] == "second" and e["reason"] == "FailedAttachVolume"
    ]  # fmt: skip
    assert wait_for(lambda: event_of(), 5)
    [event] = event_of()
    assert event["type"] == "Warning"
    assert event["source"]["component"] == "attachdetach-controller"
    assert event["message"] == multi_attach("pvc-follow")
    with pytest.raises(VolumeNotReady):
        plugin.setup(context("second", "n2"), DATA)
    assert attached_to(alab, "pvc-follow") == "n1"

    # the first pod goes: its node unmounts, the controller detaches, the disk follows
    alab.store.delete("pods", "default", "first")
    plugin.teardown(context("first", "n1"), DATA)
    assert loopdisks.mounted_device(target) is None
    assert wait_for(lambda: attached_to(alab, "pvc-follow") == "n2", 5)
    moved = setup_when_ready(plugin, context("second", "n2"))
    assert (moved / "counter").read_text() == "7\n"
    assert [d.device for d in loopdisks.loop_devices() if d.backing_file == image] == [
        loopdisks.attached(image)
    ]  # one device, on one node

    alab.store.delete("pods", "default", "second")
    plugin.teardown(context("second", "n2"), DATA)
    assert wait_for(lambda: loopdisks.attached(image) is None, 5)
    assert alab.store.list("volumeattachments")[0] == []


def test_a_failed_nodes_disk_is_force_detached_and_reattached_elsewhere(alab):
    image = make_disk(alab, "pvc-failover", "state")
    plugin = ClaimVolumes(alab.store)
    claim_pod(alab, "db", "n1", "state")
    assert wait_for(lambda: attached_to(alab, "pvc-failover") == "n1", 5)
    volume = VolumeSpec("data", ClaimSource("state"))
    ctx = context("db", "n1")
    assert wait_for(lambda: _try(plugin, ctx, volume), 5)
    target = paths.node_disk(LAB, "n1") / "plugins/pv/pvc-failover/globalmount"
    (target / "counter").write_text("12\n")

    failed = time.monotonic()
    alab.fail_node("n1")  # its kubelet never unmounts: the controller must
    try:
        claim_pod(alab, "db-new", "n2", "state")  # the replacement, elsewhere
        assert wait_for(lambda: attached_to(alab, "pvc-failover") == "n2", 10)
        assert loopdisks.mounted_device(target) is None  # n1's mount went with the detach
        ctx2 = context("db-new", "n2")
        assert wait_for(lambda: _try(plugin, ctx2, volume), 5)
        moved = paths.node_disk(LAB, "n2") / "plugins/pv/pvc-failover/globalmount"
        assert (moved / "counter").read_text() == "12\n"
        grace = alab.spec.control_plane.node_grace
        print(
            f"node failed -> disk mounted on n2: {time.monotonic() - failed:.2f} s (grace {grace} s)"
        )
    finally:
        alab.recover_node("n1")
    alab.store.delete("pods", "default", "db")
    alab.store.delete("pods", "default", "db-new")
    plugin.teardown(context("db-new", "n2"), volume)
    assert wait_for(lambda: loopdisks.attached(image) is None, 5)


def _try(plugin: ClaimVolumes, ctx: VolumeContext, volume: VolumeSpec) -> bool:
    try:
        plugin.setup(ctx, volume)
    except VolumeNotReady:
        return False
    return True


def test_the_lab_scheduler_refuses_a_second_pod_of_a_read_write_once_pod_claim(alab):
    alab.store.apply(
        {
            "apiVersion": "v1",
            "kind": "PersistentVolumeClaim",
            "metadata": {"name": "solo", "namespace": "default"},
            "spec": {"accessModes": ["ReadWriteOncePod"], "volumeName": "pvc-solo"},
            "status": {"phase": "Bound"},
        }
    )
    template = PodTemplate(
        labels=frozen_map({}),
        containers=(),
        volumes=(VolumeSpec("data", ClaimSource("solo")),),
    )
    assert alab.schedulable_nodes(template, namespace="default")  # nobody uses it yet
    claim_pod(alab, "holder", "n1", "solo")
    try:
        with pytest.raises(Unschedulable) as refused:
            alab.schedulable_nodes(template, namespace="default")
        assert refused.value.scheduler_message == (
            "0/2 nodes are available: node has pod using PersistentVolumeClaim with the same "
            "name and ReadWriteOncePod access mode."
        )
        assert alab.schedulable_nodes(template, namespace="other")  # another namespace's claim
    finally:
        alab.store.delete("pods", "default", "holder")
    assert alab.schedulable_nodes(template, namespace="default")
