"""StorageClass, PersistentVolumeClaim and PersistentVolume readers: what they take,
and each refusal naming its field and fix."""

from __future__ import annotations

import textwrap

import pytest

from netlab.errors import SpecError
from netlab.spec.load import parse_lab, parse_manifests
from netlab.spec.storage import access_modes_text, read_claim_spec, selector_matches
from netlab.spec.validate import Checker

LAB = "lab: {name: t, racks: [{name: r1, subnet: 192.168.1.0/24, nodes: [n1]}]}\n"
CLAIM = """\
apiVersion: v1
kind: PersistentVolumeClaim
metadata: {name: data}
spec:
  accessModes: [ReadWriteOnce]
  resources: {requests: {storage: 1Gi}}
"""


def lab_of(*docs: str):
    return parse_lab("---\n".join([LAB, *docs]))


def problems(*docs: str, classes=()) -> list[tuple[str, str, str]]:
    lab = lab_of()
    with pytest.raises(SpecError) as err:
        parse_manifests("---\n".join(docs), lab, classes=classes)
    return [(p.path, p.message, p.fix) for p in err.value.problems]


def test_a_claim_a_class_and_a_static_volume_are_read():
    spec = lab_of(
        CLAIM.replace("[ReadWriteOnce]", "[ReadWriteOncePod]").replace(
            "1Gi}}", "1Gi}}\n  storageClassName: fast"
        ),
        textwrap.dedent(
            """\
            apiVersion: storage.k8s.io/v1
            kind: StorageClass
            metadata: {name: fast, annotations: {storageclass.kubernetes.io/is-default-class: "true"}}
            provisioner: netlab.io/loop-disk
            parameters: {fsType: ext4}
            reclaimPolicy: Retain
            volumeBindingMode: WaitForFirstConsumer
            allowVolumeExpansion: true
            """
        ),
        textwrap.dedent(
            """\
            apiVersion: v1
            kind: PersistentVolume
            metadata: {name: disk1, labels: {tier: gold}}
            spec:
              capacity: {storage: 2Gi}
              accessModes: [ReadWriteOnce]
              csi: {driver: netlab.io/loop-disk, volumeHandle: disk1}
            """
        ),
    )
    (claim,) = spec.claims
    assert claim.claim.access_modes == ("ReadWriteOncePod",)
    assert claim.claim.storage == 1 << 30 and claim.claim.storage_class == "fast"
    (sc,) = spec.storage_classes
    assert (sc.reclaim_policy, sc.binding_mode, sc.allow_expansion, sc.is_default) == (
        "Retain",
        "WaitForFirstConsumer",
        True,
        True,
    )
    assert "namespace" not in sc.manifest["metadata"]
    (pv,) = spec.volumes
    assert (pv.storage, pv.reclaim_policy, pv.volume_handle) == (2 << 30, "Retain", "disk1")


@pytest.mark.parametrize(
    ("old", "new", "path", "message", "fix"),
    [
        (
            "[ReadWriteOnce]",
            "[ReadWriteMany]",
            "spec.accessModes[0]",
            "ReadWriteMany is not supported",
            "ReadWriteOncePod",
        ),
        ("[ReadWriteOnce]", "[ReadOnlyMany]", "spec.accessModes[0]", "ReadOnlyMany", "one node"),
        (
            "[ReadWriteOnce]",
            "[ReadWriteOnse]",
            "spec.accessModes[0]",
            'Unsupported value: "ReadWriteOnse"',
            "did you mean 'ReadWriteOnce'?",
        ),
        ("[ReadWriteOnce]", "[]", "spec.accessModes", "at least 1 access mode", "ReadWriteOnce"),
        (
            "[ReadWriteOnce]",
            "[ReadWriteOncePod, ReadWriteOnce]",
            "spec.accessModes",
            "may not use ReadWriteOncePod with other access modes",
            "alone",
        ),
        ("storage: 1Gi", "storage: 1GB", "spec.resources.requests.storage", "1GB", "drop the B"),
        ("storage: 1Gi", "storage: 0", "spec.resources.requests.storage", "greater than zero", ""),
        ("{storage: 1Gi}", "{}", "spec.resources.requests.storage", "Required value", "1Gi"),
        (
            "1Gi}}",
            "1Gi}}\n  volumeMode: Block",
            "spec.volumeMode",
            "raw block volumes are not emulated",
            "Filesystem",
        ),
        (
            "1Gi}}",
            "1Gi}}\n  dataSource: {kind: VolumeSnapshot, name: s}",
            "spec.dataSource",
            "snapshot",
            "remove dataSource",
        ),
        ("1Gi}}", "1Gi}}\n  storgeClassName: x", "spec.storgeClassName", "unknown field", "storageClassName"),
    ],
)  # fmt: skip
def test_a_claim_the_lab_cannot_serve_is_refused_naming_the_field(old, new, path, message, fix):
    found = problems(CLAIM.replace(old, new))
    assert any(
        p == f"PersistentVolumeClaim/data: {path}" and message in m and fix in f
        for p, m, f in found
    ), found


def test_an_unknown_storage_class_is_refused_with_did_you_mean():
    found = problems(CLAIM.replace("1Gi}}", "1Gi}}\n  storageClassName: standrd"))
    assert found == [
        (
            "PersistentVolumeClaim/data: spec.storageClassName",
            'storageclass.storage.k8s.io "standrd" not found',
            "did you mean 'standard'?; or add a StorageClass 'standrd' (provisioner "
            "netlab.io/loop-disk), or leave storageClassName out for the default class",
        )
    ]


def test_a_class_from_the_same_apply_or_the_running_lab_is_known():
    sc = "apiVersion: storage.k8s.io/v1\nkind: StorageClass\nmetadata: {name: slow}\n"
    sc += "provisioner: netlab.io/loop-disk\n"
    claim = CLAIM.replace("1Gi}}", "1Gi}}\n  storageClassName: slow")
    assert parse_manifests("---\n".join([sc, claim]), lab_of()).claims
    assert parse_manifests(claim, lab_of(), classes=["slow"]).claims
    assert parse_manifests(CLAIM.replace("1Gi}}", "1Gi}}\n  storageClassName: ''"), lab_of())


@pytest.mark.parametrize(
    ("line", "path", "message", "fix"),
    [
        ("provisioner: kubernetes.io/gce-pd", "provisioner", "no provisioner", "netlab.io/loop-disk"),
        ("reclaimPolicy: Recycle", "reclaimPolicy", 'Unsupported value: "Recycle"', "Retain"),
        ("volumeBindingMode: Lazy", "volumeBindingMode", "Unsupported value", "Immediate"),
        ("parameters: {type: pd-ssd}", "parameters.type", "takes no parameter", "fsType"),
        ("parameters: {fsType: xfs}", "parameters.fsType", "'xfs'", "ext4"),
        ("provisionr: x", "provisionr", "unknown field", "provisioner"),
    ],
)  # fmt: skip
def test_a_storage_class_the_lab_cannot_serve_is_refused(line, path, message, fix):
    doc = "apiVersion: storage.k8s.io/v1\nkind: StorageClass\nmetadata: {name: x}\n"
    if not line.startswith("provision"):
        doc += "provisioner: netlab.io/loop-disk\n"
    found = problems(doc + line + "\n")
    assert any(p == f"StorageClass/x: {path}" and message in m and fix in f for p, m, f in found), (
        found
    )


@pytest.mark.parametrize(
    ("source", "path", "message", "fix"),
    [
        ("hostPath: {path: /data}", "spec.hostPath", "no hostPath volumes", "netlab.io/loop-disk"),
        ("csi: {driver: pd.csi.storage.gke.io, volumeHandle: d}", "spec.csi.driver",
         "no CSI driver", "netlab.io/loop-disk"),
        ("nfs: {server: x, path: /}", "spec.nfs", "no nfs volumes", "csi"),
        ("", "spec", "must specify a volume type", "csi"),
    ],
)  # fmt: skip
def test_a_volume_of_another_source_is_refused(source, path, message, fix):
    doc = textwrap.dedent(
        """\
        apiVersion: v1
        kind: PersistentVolume
        metadata: {name: pv1}
        spec:
          capacity: {storage: 1Gi}
          accessModes: [ReadWriteOnce]
        """
    )
    found = problems(doc + (f"  {source}\n" if source else ""))
    assert any(
        p == f"PersistentVolume/pv1: {path}" and message in m and fix in f for p, m, f in found
    ), found


def test_read_claim_spec_reads_a_template_at_its_own_path():
    checker = Checker()
    value = {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "100Mi"}}}
    claim = read_claim_spec(value, "StatefulSet/db: spec.volumeClaimTemplates[0].spec", checker)
    assert claim is not None and claim.storage == 100 << 20 and not checker.problems
    assert read_claim_spec({"accessModes": ["Nope"]}, "X: spec", checker) is None
    assert {p.path for p in checker.problems} == {"X: spec.accessModes[0]", "X: spec.resources"}


def test_access_modes_print_in_kubectls_order_and_selectors_match():
    assert access_modes_text(["ReadWriteOncePod", "ReadWriteOnce"]) == "RWO,RWOP"
    selector = {"matchLabels": {"tier": "gold"}, "matchExpressions": [
        {"key": "zone", "operator": "In", "values": ["a", "b"]},
        {"key": "old", "operator": "DoesNotExist"},
    ]}  # fmt: skip
    assert selector_matches(selector, {"tier": "gold", "zone": "b"})
    assert not selector_matches(selector, {"tier": "gold", "zone": "c"})
    assert not selector_matches(selector, {"tier": "gold", "zone": "a", "old": "1"})
    assert selector_matches(None, {})
