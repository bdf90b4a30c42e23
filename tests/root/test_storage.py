"""The lab's disks and claims on the real kernel: a disk image is ext4 through a real
loop device; claims made by kubectl 1.35 and the kubernetes Python client are bound to
volumes with images of their size; Retain keeps a disk, Delete removes it; claims the
lab cannot serve are refused naming the field; nothing of the lab's state stays."""

from __future__ import annotations

import json
import os
import subprocess
import textwrap
from pathlib import Path

import pytest

from netlab import paths
from netlab.lab import Lab
from netlab.node import diskimages
from netlab.spec.load import parse_lab
from tests.root.conftest import wait_for
from tests.root.test_kubectl import kubectl

pytestmark = pytest.mark.root

LAB = "t-storage"
LAB_FILE = textwrap.dedent(
    f"""\
    lab:
      name: {LAB}
      racks: [{{name: rack1, subnet: 192.168.1.0/24, nodes: [n1]}}]
      dns: {{enabled: false}}
    ---
    apiVersion: storage.k8s.io/v1
    kind: StorageClass
    metadata: {{name: keep}}
    provisioner: netlab.io/loop-disk
    reclaimPolicy: Retain
    ---
    apiVersion: v1
    kind: PersistentVolumeClaim
    metadata: {{name: early}}
    spec:
      accessModes: [ReadWriteOnce]
      resources: {{requests: {{storage: 16Mi}}}}
    """
)


def claim(name: str, size: str = "64Mi", extra: str = "", mode: str = "ReadWriteOnce") -> str:
    return textwrap.dedent(
        f"""\
        apiVersion: v1
        kind: PersistentVolumeClaim
        metadata: {{name: {name}}}
        spec:
          accessModes: [{mode}]
          resources: {{requests: {{storage: {size}}}}}
        """
    ) + (f"  {extra}\n" if extra else "")


def test_a_disk_image_is_sparse_ext4_through_a_loop_device(tmp_path):
    image = tmp_path / "disks" / "pv1.img"
    assert diskimages.create(image, 100 << 20) == 100 << 20
    assert image.stat().st_size == 100 << 20
    assert image.stat().st_blocks * 512 < 4 << 20  # sparse: the lazy mkfs wrote little
    loop = subprocess.run(
        ["losetup", "--find", "--show", str(image)], capture_output=True, text=True, check=True
    ).stdout.strip()
    target = tmp_path / "mnt"
    target.mkdir()
    try:
        assert diskimages.backing_loops(image) == [Path(loop).name]
        subprocess.run(["mount", "-t", "ext4", loop, str(target)], check=True)
        try:
            fstype = subprocess.run(
                ["findmnt", "-no", "FSTYPE", str(target)], capture_output=True, text=True
            ).stdout.strip()
            assert fstype == "ext4"
            (target / "hello").write_text("kept")
        finally:
            subprocess.run(["umount", str(target)], check=True)
        with pytest.raises(diskimages.DiskBusy, match=loop):
            diskimages.delete(image)
    finally:
        subprocess.run(["losetup", "-d", loop], check=True)
    # the kernel lets go once the device's last opener closes it (udev probes it after the
    # unmount: a loaded full run saw it still backed right after `losetup -d`)
    assert wait_for(lambda: diskimages.backing_loops(image) == [], 5.0)
    assert diskimages.create(image, 1 << 20) == 100 << 20  # the same disk, kept as it was
    assert diskimages.delete(image) and not image.exists()
    assert not diskimages.delete(image)


@pytest.fixture(scope="module")
def slab():
    with Lab(parse_lab(LAB_FILE)) as lab:
        lab.settle()
        yield lab
    assert not paths.state_dir(LAB).exists(), list(paths.state_dir(LAB).rglob("*"))


def bound(lab: Lab, name: str) -> dict | None:
    pvc = lab.store.get("persistentvolumeclaims", "default", name)
    return pvc if pvc["status"].get("phase") == "Bound" else None


def image_of(lab: Lab, pv: str) -> Path:
    return Path(lab.store.get("persistentvolumes", None, pv)["spec"]["csi"]["volumeHandle"])


def test_the_lab_file_claim_is_bound_to_a_disk_of_its_size(slab):
    assert wait_for(lambda: bound(slab, "early"), 10)
    pvc = bound(slab, "early")
    assert pvc["spec"]["storageClassName"] == "standard"
    image = image_of(slab, pvc["spec"]["volumeName"])
    assert image == paths.disks_dir(LAB) / f"{pvc['spec']['volumeName']}.img"
    assert image.stat().st_size == 16 << 20


def test_kubectl_get_pvc_pv_sc_print_kubernetes_columns(slab, tmp_path):
    manifest = tmp_path / "claim.yaml"
    manifest.write_text(claim("shown", "32Mi"))
    assert (
        "persistentvolumeclaim/shown created" in kubectl(slab, "apply", "-f", str(manifest)).stdout
    )
    assert wait_for(lambda: bound(slab, "shown"), 10)
    volume = bound(slab, "shown")["spec"]["volumeName"]
    out = kubectl(slab, "get", "pvc", "shown").stdout.splitlines()
    assert out[0].split() == [
        "NAME", "STATUS", "VOLUME", "CAPACITY", "ACCESS", "MODES", "STORAGECLASS",
        "VOLUMEATTRIBUTESCLASS", "AGE",
    ]  # fmt: skip
    assert out[1].split()[:7] == ["shown", "Bound", volume, "32Mi", "RWO", "standard", "<unset>"]
    out = kubectl(slab, "get", "pv", volume).stdout.splitlines()
    assert out[0].split()[:9] == [
        "NAME", "CAPACITY", "ACCESS", "MODES", "RECLAIM", "POLICY", "STATUS", "CLAIM",
        "STORAGECLASS",
    ]  # fmt: skip
    assert out[1].split()[:6] == [volume, "32Mi", "RWO", "Delete", "Bound", "default/shown"]
    out = kubectl(slab, "get", "sc").stdout.splitlines()
    assert out[0].split() == [
        "NAME", "PROVISIONER", "RECLAIMPOLICY", "VOLUMEBINDINGMODE", "ALLOWVOLUMEEXPANSION", "AGE"
    ]  # fmt: skip
    rows = {line.split()[0]: line.split() for line in out[1:]}
    assert rows["standard"][:6] == [
        "standard", "(default)", "netlab.io/loop-disk", "Delete", "Immediate", "false"
    ]  # fmt: skip
    assert rows["keep"][:4] == ["keep", "netlab.io/loop-disk", "Retain", "Immediate"]
    several = kubectl(slab, "get", "pvc,pv,sc").stdout
    assert "persistentvolumeclaim/shown" in several and f"persistentvolume/{volume}" in several
    assert "storageclass.storage.k8s.io/standard (default)" in several
    assert "No resources found" in kubectl(slab, "get", "volumeattachments").stderr
    described = kubectl(slab, "describe", "pvc", "shown").stdout
    assert (
        "ProvisioningSucceeded" in described
        and f"Successfully provisioned volume {volume}" in described
    )


def test_delete_removes_the_disk_and_retain_keeps_it(slab, tmp_path):
    manifest = tmp_path / "claims.yaml"
    manifest.write_text(claim("gone") + "---\n" + claim("kept", extra="storageClassName: keep"))
    kubectl(slab, "apply", "-f", str(manifest))
    assert wait_for(lambda: bound(slab, "gone") and bound(slab, "kept"), 10)
    gone, kept = (bound(slab, n)["spec"]["volumeName"] for n in ("gone", "kept"))
    gone_image, kept_image = image_of(slab, gone), image_of(slab, kept)
    assert gone_image.exists() and kept_image.stat().st_size == 64 << 20
    kubectl(slab, "delete", "pvc", "gone", "kept", "--timeout", "20s")
    assert wait_for(lambda: not gone_image.exists(), 10)
    assert "NotFound" in kubectl(slab, "get", "pv", gone, check=False).stderr
    released = json.loads(kubectl(slab, "get", "pv", kept, "-o", "json").stdout)
    assert released["status"]["phase"] == "Released" and kept_image.exists()
    assert released["spec"]["claimRef"]["name"] == "kept"
    kubectl(slab, "delete", "pv", kept, "--timeout", "20s")  # Retain: the disk stays
    assert kept_image.exists()


@pytest.mark.parametrize(
    ("doc", "field", "fix"),
    [
        (claim("bad", extra="storageClassName: standrd"), "spec.storageClassName",
         "did you mean 'standard'?"),
        (claim("bad", mode="ReadWriteMany"), "spec.accessModes[0]", "ReadWriteOncePod"),
        (claim("bad", mode="ReadWriteOnse"), "spec.accessModes[0]",
         "did you mean 'ReadWriteOnce'?"),
    ],
)  # fmt: skip
def test_a_claim_the_lab_cannot_serve_is_refused_naming_the_field(slab, tmp_path, doc, field, fix):
    manifest = tmp_path / "bad.yaml"
    manifest.write_text(doc)
    result = kubectl(slab, "apply", "-f", str(manifest), check=False)
    assert result.returncode != 0
    assert field in result.stderr and fix in result.stderr, result.stderr
    assert "NotFound" in kubectl(slab, "get", "pvc", "bad", check=False).stderr


def test_the_python_clients_typed_calls(slab):
    from kubernetes import client, config

    api = config.new_client_from_config(str(slab.run_dir / "kubeconfig"))
    core, storage = client.CoreV1Api(api), client.StorageV1Api(api)
    body = client.V1PersistentVolumeClaim(
        metadata=client.V1ObjectMeta(name="typed"),
        spec=client.V1PersistentVolumeClaimSpec(
            access_modes=["ReadWriteOncePod"],
            resources=client.V1VolumeResourceRequirements(requests={"storage": "8Mi"}),
        ),
    )
    core.create_namespaced_persistent_volume_claim("default", body)
    assert wait_for(lambda: bound(slab, "typed"), 10)
    read = core.read_namespaced_persistent_volume_claim("typed", "default")
    assert read.status.phase == "Bound" and read.status.capacity == {"storage": "8Mi"}
    assert read.metadata.finalizers == ["kubernetes.io/pvc-protection"]
    pv = core.read_persistent_volume(read.spec.volume_name)
    assert pv.spec.csi.driver == "netlab.io/loop-disk" and pv.spec.claim_ref.name == "typed"
    classes = {sc.metadata.name: sc for sc in storage.list_storage_class().items}
    assert classes["standard"].provisioner == "netlab.io/loop-disk"
    assert classes["keep"].reclaim_policy == "Retain"
    image = image_of(slab, read.spec.volume_name)
    core.delete_namespaced_persistent_volume_claim("typed", "default")
    assert wait_for(lambda: not image.exists(), 10)
    assert not os.path.exists(image)


def test_stored_objects_fit_kubernetes_schemas_and_take_labels(slab, tmp_path):
    from netlab.apiserver import schema

    manifest = tmp_path / "claim.yaml"
    manifest.write_text(claim("labelled", "8Mi"))
    kubectl(slab, "apply", "-f", str(manifest))
    assert wait_for(lambda: bound(slab, "labelled"), 10)
    assert "unchanged" in kubectl(slab, "apply", "-f", str(manifest)).stdout
    kubectl(slab, "label", "pvc", "labelled", "tier=gold")
    kubectl(slab, "annotate", "sc", "keep", "note=slow")
    labelled = bound(slab, "labelled")
    assert labelled is not None and labelled["metadata"]["labels"] == {"tier": "gold"}
    assert labelled["metadata"]["finalizers"] == ["kubernetes.io/pvc-protection"]
    for kind in ("pvc", "pv", "sc"):
        for obj in json.loads(kubectl(slab, "get", kind, "-A", "-o", "json").stdout)["items"]:
            group, _, version = obj["apiVersion"].rpartition("/")
            kind_schema = schema.for_kind(group, version, obj["kind"])
            assert kind_schema.known, obj["kind"]
            assert schema.unknown_fields(obj, kind_schema) == [], obj["metadata"]["name"]
    refused = kubectl(slab, "patch", "pvc", "labelled", "-p", '{"spec":{"volumeMode":"Block"}}',
                      check=False)  # fmt: skip
    assert refused.returncode != 0 and "volumeMode" in refused.stderr, refused.stderr
    kubectl(slab, "delete", "pvc", "labelled")


def test_deleting_a_namespace_deletes_its_claims_and_their_disks(slab, tmp_path):
    manifest = tmp_path / "claim.yaml"
    manifest.write_text(
        claim("scratch", "8Mi").replace("{name: scratch}", "{name: scratch, namespace: team}")
    )
    kubectl(slab, "apply", "-f", str(manifest))
    pvc = lambda: slab.store.get("persistentvolumeclaims", "team", "scratch")  # noqa: E731
    assert wait_for(lambda: pvc()["status"].get("phase") == "Bound", 10)
    image = image_of(slab, pvc()["spec"]["volumeName"])
    assert image.exists()
    kubectl(slab, "delete", "namespace", "team", "--timeout", "30s")
    assert wait_for(lambda: not image.exists(), 10)
    assert "NotFound" in kubectl(slab, "get", "pvc", "-n", "team", "scratch", check=False).stderr


def test_a_static_volume_gets_its_disk_and_binds_a_claim_of_no_class(slab, tmp_path):
    manifest = tmp_path / "static.yaml"
    manifest.write_text(
        textwrap.dedent(
            """\
            apiVersion: v1
            kind: PersistentVolume
            metadata: {name: disk1}
            spec:
              capacity: {storage: 24Mi}
              accessModes: [ReadWriteOnce]
              csi: {driver: netlab.io/loop-disk, volumeHandle: disk1}
            ---
            """
        )
        + claim("mine", "20Mi", "storageClassName: ''")
    )
    kubectl(slab, "apply", "-f", str(manifest))
    assert wait_for(lambda: bound(slab, "mine"), 10)
    assert bound(slab, "mine")["spec"]["volumeName"] == "disk1"
    image = paths.disks_dir(LAB) / "disk1.img"
    assert image_of(slab, "disk1") == image and image.stat().st_size == 24 << 20
    kubectl(slab, "delete", "pvc", "mine")
    assert wait_for(
        lambda: slab.store.get("persistentvolumes", None, "disk1")["status"]["phase"] == "Released",
        10,
    )
    kubectl(slab, "delete", "pv", "disk1")  # Retain, a static volume's default: the disk stays
    assert image.exists()
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        manifest.read_text().split("---")[0].replace("Handle: disk1", "Handle: /etc/passwd")
    )
    refused = kubectl(slab, "apply", "-f", str(bad), check=False)
    assert "spec.csi.volumeHandle" in refused.stderr and "not a disk of this lab" in refused.stderr


POD = """\
apiVersion: v1
kind: Pod
metadata: {name: user}
spec:
  nodeName: n1
  containers: [{name: app, command: [sleep, infinity]}]
  volumes: [{name: data, persistentVolumeClaim: {claimName: lazy}}]
"""


def test_a_claim_waits_for_its_first_consumer_and_stays_while_a_pod_uses_it(slab, tmp_path):
    manifest = tmp_path / "lazy.yaml"
    manifest.write_text(
        textwrap.dedent(
            """\
            apiVersion: storage.k8s.io/v1
            kind: StorageClass
            metadata: {name: lazy}
            provisioner: netlab.io/loop-disk
            volumeBindingMode: WaitForFirstConsumer
            ---
            """
        )
        + claim("lazy", "8Mi", "storageClassName: lazy")
    )
    kubectl(slab, "apply", "-f", str(manifest))
    events = lambda: kubectl(slab, "describe", "pvc", "lazy").stdout  # noqa: E731
    assert wait_for(
        lambda: "waiting for first consumer to be created before binding" in events(), 10
    )
    assert (
        slab.store.get("persistentvolumeclaims", "default", "lazy")["status"]["phase"] == "Pending"
    )
    pod = tmp_path / "pod.yaml"
    pod.write_text(POD)
    kubectl(slab, "apply", "-f", str(pod), check=False)  # it may wait for its volume
    assert wait_for(lambda: bound(slab, "lazy"), 10)
    pvc = bound(slab, "lazy")
    assert pvc["metadata"]["annotations"]["volume.kubernetes.io/selected-node"] == "n1"
    image = image_of(slab, pvc["spec"]["volumeName"])
    kubectl(slab, "delete", "pvc", "lazy", "--wait=false")
    shown = kubectl(slab, "get", "pvc", "lazy").stdout.splitlines()[1].split()
    assert shown[:2] == ["lazy", "Terminating"]  # kubernetes.io/pvc-protection: a pod uses it
    assert image.exists()
    kubectl(slab, "delete", "pod", "user")
    assert wait_for(lambda: not image.exists(), 15)
    assert "NotFound" in kubectl(slab, "get", "pvc", "lazy", check=False).stderr
