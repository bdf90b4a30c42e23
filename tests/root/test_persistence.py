"""State that outlives its pod, with real pods on the real kernel: a StatefulSet
replica's disk follows it through a node failure to another rack with its data; a
ReadWriteOnce disk is refused to a second node with Kubernetes' Multi-Attach event and
shared on one node; ReadWriteOncePod keeps a second pod Pending; a replica's disk is
kept on scale-down and comes back on scale-up."""

from __future__ import annotations

import pytest

from netlab.lab import Lab
from netlab.node import loopdisks
from netlab.paths import disks_dir
from netlab.plan.scheduler import Unschedulable
from tests.root.conftest import module_lab_name, two_rack_builder, wait_for
from tests.root.leftovers import leftovers
from tests.root.test_cli import netlab

pytestmark = pytest.mark.root

# each start adds one to the counter on its disk, then serves it
COUNTER = (
    "n=$(cat /data/count 2>/dev/null || echo 0); echo $((n+1)) > /data/count; sync; exec sleep 3600"
)


def statefulset(name: str, replicas: int, selector: str = "") -> str:
    return f"""
apiVersion: v1
kind: Service
metadata: {{name: {name}}}
spec: {{clusterIP: None, selector: {{app: {name}}}}}
---
apiVersion: apps/v1
kind: StatefulSet
metadata: {{name: {name}}}
spec:
  replicas: {replicas}
  serviceName: {name}
  selector: {{matchLabels: {{app: {name}}}}}
  template:
    metadata: {{labels: {{app: {name}}}}}
    spec:
      {selector}
      containers:
      - name: db
        image: busybox
        command: [sh, -c, "{COUNTER}"]
        volumeMounts: [{{name: data, mountPath: /data}}]
  volumeClaimTemplates:
  - metadata: {{name: data}}
    spec: {{accessModes: [ReadWriteOnce], resources: {{requests: {{storage: 32Mi}}}}}}
"""


@pytest.fixture(scope="module")
def plab(request):
    name = module_lab_name(request, "tpst")
    with Lab(two_rack_builder(name).build()) as running:
        yield running
    assert not leftovers(name)
    assert not [d for d in loopdisks.loop_devices() if f"/{name}/" in d.backing_file]


def pod_obj(lab: Lab, name: str) -> dict | None:
    found = lab.store.list("pods", "default", field_selector=f"metadata.name={name}")[0]
    return found[0] if found else None


def running_on(lab: Lab, name: str) -> str | None:
    """The node the pod's containers all run on, if they do."""
    obj = pod_obj(lab, name)
    if obj is None or obj["metadata"].get("deletionTimestamp"):
        return None
    states = obj["status"].get("containerStatuses") or []
    if states and all("running" in s["state"] for s in states):
        return obj["spec"]["nodeName"]
    return None


def count(lab: Lab, pod: str) -> str:
    return lab.exec(pod, ["cat", "/data/count"]).stdout.strip()


def attachments(lab: Lab) -> dict[str, str]:
    """PV -> node, of the attached VolumeAttachments."""
    return {
        va["spec"]["source"]["persistentVolumeName"]: va["spec"]["nodeName"]
        for va in lab.store.list("volumeattachments")[0]
        if (va.get("status") or {}).get("attached")
    }


def volume_of(lab: Lab, claim: str) -> str:
    return lab.store.get("persistentvolumeclaims", "default", claim)["spec"]["volumeName"]


def test_a_replicas_disk_follows_it_through_a_node_failure_to_another_rack(plab):
    rack2 = [n.name for n in plab.node_list() if n.rack == "rack2"]
    for node in rack2:  # db-0 starts on rack1
        plab.cordon(node)
    plab.apply_text(statefulset("db", 1))
    assert wait_for(lambda: running_on(plab, "db-0"), 20)
    first = running_on(plab, "db-0")
    assert wait_for(lambda: count(plab, "db-0") == "1", 5, 0.1)  # the app writes it as it starts
    pv = volume_of(plab, "data-db-0")
    assert attachments(plab)[pv] == first
    assert (disks_dir(plab.spec.name) / f"{pv}.img").exists()
    # now only rack2 may take it: its rack1 sibling is cordoned
    sibling = next(n.name for n in plab.node_list() if n.rack == "rack1" and n.name != first)
    plab.cordon(sibling)
    for node in rack2:
        plab.cordon(node, False)
    plab.fail_node(first)
    try:
        assert wait_for(lambda: running_on(plab, "db-0") in rack2, 20)
        landed = running_on(plab, "db-0")
        assert wait_for(lambda: count(plab, "db-0") == "2", 5, 0.1)  # its data, intact, elsewhere
        assert attachments(plab)[pv] == landed
        # one loop device on the image: the failed node's was detached
        image = str(disks_dir(plab.spec.name) / f"{pv}.img")
        assert len([d for d in loopdisks.loop_devices() if d.backing_file == image]) == 1
    finally:
        plab.recover_node(first)
        plab.cordon(sibling, False)
    plab.store.delete("statefulsets", "default", "db")
    assert wait_for(lambda: pod_obj(plab, "db-0") is None, 20)


def claim(name: str, mode: str = "ReadWriteOnce") -> str:
    return f"""
apiVersion: v1
kind: PersistentVolumeClaim
metadata: {{name: {name}}}
spec: {{accessModes: [{mode}], resources: {{requests: {{storage: 16Mi}}}}}}
"""


def claim_pod(name: str, node: str, claim_name: str) -> str:
    return f"""
apiVersion: v1
kind: Pod
metadata: {{name: {name}}}
spec:
  nodeName: {node}
  volumes: [{{name: data, persistentVolumeClaim: {{claimName: {claim_name}}}}}]
  containers:
  - name: app
    image: busybox
    command: [sh, -c, "{COUNTER}"]
    volumeMounts: [{{name: data, mountPath: /data}}]
"""


def test_a_read_write_once_disk_is_refused_to_a_second_node_and_shared_on_one(plab):
    plab.apply_text(claim("shared"))
    plab.apply_text(claim_pod("w1", "n1", "shared"))
    assert wait_for(lambda: running_on(plab, "w1") == "n1", 10)
    plab.apply_text(claim_pod("w2", "n3", "shared"))
    pv = volume_of(plab, "shared")
    expected = (
        f'Multi-Attach error for volume "{pv}" Volume is already exclusively attached to '
        "one node and can't be attached to another"
    )

    def refused() -> bool:
        return any(
            e["reason"] == "FailedAttachVolume" and e["message"] == expected
            and e["type"] == "Warning" and e["source"]["component"] == "attachdetach-controller"
            for e in plab.store.list("events", "default")[0]
            if e["involvedObject"]["name"] == "w2"
        )  # fmt: skip

    assert wait_for(refused, 10)
    (state,) = pod_obj(plab, "w2")["status"]["containerStatuses"]
    assert state["state"] == {"waiting": {"reason": "ContainerCreating"}}
    # a second pod on the same node shares it (ReadWriteOnce is one node)
    plab.apply_text(claim_pod("w3", "n1", "shared"))
    assert wait_for(lambda: running_on(plab, "w3") == "n1", 10)
    assert wait_for(lambda: count(plab, "w3") == "2" and count(plab, "w1") == "2", 5, 0.1)
    # the node lets go of it: the waiting pod gets it, with the data
    plab.delete_pod("w1")
    plab.delete_pod("w3")
    assert wait_for(lambda: running_on(plab, "w2") == "n3", 15)
    assert wait_for(lambda: count(plab, "w2") == "3", 5, 0.1)
    assert attachments(plab)[pv] == "n3"
    plab.delete_pod("w2")
    assert wait_for(lambda: pv not in attachments(plab), 10)


def test_read_write_once_pod_keeps_a_second_pod_pending(plab):
    plab.apply_text(claim("solo", "ReadWriteOncePod"))
    plab.apply_text(claim_pod("s1", "n2", "solo"))
    assert wait_for(lambda: running_on(plab, "s1") == "n2", 10)
    with pytest.raises(Unschedulable) as info:  # a bare pod is refused, not queued
        plab.apply_text(claim_pod("s2", "n2", "solo").replace("  nodeName: n2\n", ""))
    assert "node has pod using PersistentVolumeClaim with the same name and ReadWriteOncePod" in (
        str(info.value)
    )
    assert pod_obj(plab, "s2") is None
    # a StatefulSet's pod of the claim waits Pending, as kube-scheduler leaves it
    plab.apply_text(rwop_set("solo"))
    assert wait_for(lambda: pod_obj(plab, "one-0") is not None, 10)
    obj = pod_obj(plab, "one-0")
    assert obj["status"]["phase"] == "Pending"
    (condition,) = [c for c in obj["status"]["conditions"] if c["type"] == "PodScheduled"]
    assert condition["reason"] == "Unschedulable"
    assert "ReadWriteOncePod access mode" in condition["message"]
    plab.delete_pod("s1")
    assert wait_for(lambda: running_on(plab, "one-0"), 20)  # its turn now
    plab.store.delete("statefulsets", "default", "one")
    assert wait_for(lambda: pod_obj(plab, "one-0") is None, 20)


def rwop_set(claim_name: str) -> str:
    """A set whose pod mounts an existing claim (not a template's)."""
    return f"""
apiVersion: apps/v1
kind: StatefulSet
metadata: {{name: one}}
spec:
  replicas: 1
  serviceName: one
  selector: {{matchLabels: {{app: one}}}}
  template:
    metadata: {{labels: {{app: one}}}}
    spec:
      volumes: [{{name: data, persistentVolumeClaim: {{claimName: {claim_name}}}}}]
      containers:
      - name: app
        image: busybox
        command: [sleep, "3600"]
        volumeMounts: [{{name: data, mountPath: /data}}]
"""


def test_a_replicas_disk_is_kept_on_scale_down_and_comes_back_on_scale_up(plab):
    plab.apply_text(statefulset("web", 2))
    assert wait_for(lambda: running_on(plab, "web-1"), 20)
    pv = volume_of(plab, "data-web-1")
    plab.exec("web-1", ["sh", "-c", "echo mine > /data/note"])
    scaled = netlab("--lab", plab.spec.name, "scale", "sts/web", "--replicas", "1")
    assert scaled.stdout.strip() == "statefulset.apps/web scaled"
    assert wait_for(lambda: pod_obj(plab, "web-1") is None, 20)
    assert wait_for(lambda: pv not in attachments(plab), 10)  # detached, not deleted
    kept = plab.store.get("persistentvolumeclaims", "default", "data-web-1")
    assert kept["status"]["phase"] == "Bound" and kept["spec"]["volumeName"] == pv
    _scale(plab, 2)
    assert wait_for(lambda: running_on(plab, "web-1"), 20)
    assert plab.exec("web-1", ["cat", "/data/note"]).stdout == "mine\n"
    assert wait_for(lambda: count(plab, "web-1") == "2", 5, 0.1)
    plab.store.delete("statefulsets", "default", "web")
    assert wait_for(lambda: pod_obj(plab, "web-0") is None and pod_obj(plab, "web-1") is None, 20)


def _scale(lab: Lab, replicas: int) -> None:
    sts = lab.store.get("statefulsets", "default", "web")
    sts["spec"]["replicas"] = replicas
    lab.store.update(sts)


def test_two_replicas_of_one_batch_do_not_share_a_read_write_once_pod_claim(plab):
    plab.apply_text(claim("pair", "ReadWriteOncePod"))
    plab.apply_text(
        """
apiVersion: apps/v1
kind: Deployment
metadata: {name: pair}
spec:
  replicas: 2
  selector: {matchLabels: {app: pair}}
  template:
    metadata: {labels: {app: pair}}
    spec:
      volumes: [{name: data, persistentVolumeClaim: {claimName: pair}}]
      containers:
      - {name: app, image: busybox, command: [sleep, "3600"],
         volumeMounts: [{name: data, mountPath: /data}]}
"""
    )

    def phases() -> list[str]:
        pods = plab.store.list("pods", "default", label_selector="app=pair")[0]
        return sorted(p["status"]["phase"] for p in pods)

    assert wait_for(lambda: phases() == ["Pending", "Running"], 20), phases()
    (waiting,) = [
        p
        for p in plab.store.list("pods", "default", label_selector="app=pair")[0]
        if p["status"]["phase"] == "Pending"
    ]
    (condition,) = [c for c in waiting["status"]["conditions"] if c["type"] == "PodScheduled"]
    assert "ReadWriteOncePod access mode" in condition["message"]
    plab.delete_deployment("pair")
    assert wait_for(lambda: phases() == [], 20)
