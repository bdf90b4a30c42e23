"""StatefulSets without root: the reader's refusals, the controller's ordering rules
(a pure step, then the controller on the real Store with a runtime that only writes
Pod objects), the replicas' templates and claims, and the endpoints' hostnames."""

from __future__ import annotations

from ipaddress import IPv4Address, IPv4Interface

import pytest
import yaml

from netlab.controllers.statefulset import Member, StatefulSetController, step
from netlab.endpointslices import endpoint_slices
from netlab.errors import SpecError
from netlab.events import EventRecorder
from netlab.node.cni import hosts_file
from netlab.plan import PodPlan
from netlab.services import Candidate, endpoint_subsets
from netlab.spec.load import parse_lab
from netlab.spec.model import ServicePort, ServiceSpec, frozen_map
from netlab.spec.volumes import ClaimSource
from netlab.statefulsets import (
    POD_INDEX_LABEL,
    POD_NAME_LABEL,
    REVISION_LABEL,
    member_template,
    revision_name,
    statefulset_object,
)
from netlab.store import Store

LAB = """\
lab:
  name: t
  racks:
    - {name: r1, subnet: 192.168.1.0/24, nodes: [n1, n2]}
"""


def sts_yaml(**over) -> str:
    doc = {
        "apiVersion": "apps/v1",
        "kind": "StatefulSet",
        "metadata": {"name": "web"},
        "spec": {
            "replicas": 3,
            "serviceName": "web",
            "selector": {"matchLabels": {"app": "web"}},
            "template": {
                "metadata": {"labels": {"app": "web"}},
                "spec": {
                    "containers": [
                        {
                            "name": "c",
                            "command": ["sleep", "infinity"],
                            "volumeMounts": [{"name": "data", "mountPath": "/data"}],
                        }
                    ]
                },
            },
            "volumeClaimTemplates": [
                {
                    "metadata": {"name": "data"},
                    "spec": {
                        "accessModes": ["ReadWriteOnce"],
                        "resources": {"requests": {"storage": "1Gi"}},
                    },
                }
            ],
        },
    }
    for path, value in over.items():
        node = doc
        *parents, last = path.split("__")
        for key in parents:
            node = node[key]
        if value is None:
            node.pop(last, None)
        else:
            node[last] = value
    return LAB + "---\n" + yaml.safe_dump(doc)


def read(**over):
    (sts,) = parse_lab(sts_yaml(**over)).statefulsets
    return sts


def problems(**over) -> list[str]:
    with pytest.raises(SpecError) as info:
        parse_lab(sts_yaml(**over), "t.yaml")
    return [p.render("t.yaml") for p in info.value.problems]


def test_a_statefulset_is_read_with_kubernetes_defaults():
    sts = read()
    assert (sts.name, sts.replicas, sts.service_name) == ("web", 3, "web")
    assert (sts.pod_management, sts.update_strategy, sts.partition) == (
        "OrderedReady",
        "RollingUpdate",
        0,
    )
    assert (sts.when_deleted, sts.when_scaled) == ("Retain", "Retain")
    assert [c.name for c in sts.claims] == ["data"]
    obj = statefulset_object(sts)
    assert obj["spec"]["updateStrategy"] == {
        "type": "RollingUpdate",
        "rollingUpdate": {"partition": 0},
    }
    assert obj["spec"]["persistentVolumeClaimRetentionPolicy"] == {
        "whenDeleted": "Retain",
        "whenScaled": "Retain",
    }
    assert obj["spec"]["volumeClaimTemplates"][0]["kind"] == "PersistentVolumeClaim"
    # what the store keeps is read again the same (a PATCH, the controller's compile)
    again = parse_lab(LAB + "---\n" + yaml.safe_dump(obj)).statefulsets[0]
    assert again.template == sts.template and again.claims == sts.claims


@pytest.mark.parametrize(
    ("over", "field", "words"),
    [
        ({"spec__replicas": -1}, "spec.replicas", "greater than or equal to 0"),
        ({"spec__podManagementPolicy": "Ordered"}, "spec.podManagementPolicy", '"OrderedReady"'),
        (
            {"spec__updateStrategy": {"type": "Rolling"}},
            "spec.updateStrategy.type",
            "RollingUpdate",
        ),
        (
            {"spec__updateStrategy": {"type": "OnDelete", "rollingUpdate": {"partition": 1}}},
            "spec.updateStrategy.rollingUpdate",
            "only allowed",
        ),
        (
            {"spec__updateStrategy": {"rollingUpdate": {"partition": -1}}},
            "spec.updateStrategy.rollingUpdate.partition",
            "out of range",
        ),
        (
            {"spec__persistentVolumeClaimRetentionPolicy": {"whenScaled": "Keep"}},
            "persistentVolumeClaimRetentionPolicy.whenScaled",
            '"Retain"',
        ),
        ({"spec__selector": {"matchLabels": {"app": "db"}}}, "spec.selector.matchLabels", "app=db"),
        ({"spec__selector": None}, "spec.selector", "required field"),
        ({"spec__serviceName": "Web_1"}, "spec.serviceName", "not a valid name"),
        ({"spec__template__spec__restartPolicy": "Never"}, "restartPolicy", '"Always"'),
        ({"spec__ordinals": {"start": 1}}, "spec.ordinals", "unknown field"),
        ({"metadata__name": "w" * 53}, "metadata.name", "at most 52"),
        ({"spec__volumeClaimTemplates": []}, "volumeMounts[0].name", "data"),
    ],
)
def test_refusals_name_the_field_and_the_fix(over, field, words):
    found = problems(**over)
    assert any(field in p and words in p for p in found), found


CLAIM = {
    "metadata": {"name": "data"},
    "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}},
}


@pytest.mark.parametrize(
    ("claims", "field", "words"),
    [
        ([CLAIM, CLAIM], "volumeClaimTemplates[1].metadata.name", "Duplicate value"),
        ([{"spec": CLAIM["spec"]}], "volumeClaimTemplates[0].metadata", "required field"),
        (
            [{**CLAIM, "spec": {**CLAIM["spec"], "accessModes": ["ReadWriteMany"]}}],
            "volumeClaimTemplates[0].spec.accessModes",
            "ReadWriteOnce",
        ),
        (
            [{**CLAIM, "spec": {**CLAIM["spec"], "accessModes": ["ReadWriteOne"]}}],
            "volumeClaimTemplates[0].spec.accessModes[0]",
            "did you mean 'ReadWriteOnce'",
        ),
        (
            [{**CLAIM, "spec": {**CLAIM["spec"], "resources": {"requests": {"storage": "1 GB"}}}}],
            "resources.requests.storage",
            "drop the B",
        ),
        (
            [{**CLAIM, "spec": {"accessModes": ["ReadWriteOnce"]}}],
            "volumeClaimTemplates[0].spec.resources",
            "required field is missing",
        ),
        (
            [{**CLAIM, "spec": {**CLAIM["spec"], "storageClassName": 5}}],
            "spec.storageClassName",
            "expected a string",
        ),
    ],
)
def test_claim_templates_are_checked(claims, field, words):
    found = problems(spec__volumeClaimTemplates=claims)
    assert any(field in p and words in p for p in found), found


def test_a_pod_template_subdomain_is_read():
    text = LAB + (
        "---\napiVersion: v1\nkind: Pod\nmetadata: {name: p}\nspec:\n  hostname: a\n"
        "  subdomain: web\n  containers: [{name: c, command: [sleep, infinity]}]\n"
    )
    (pod,) = parse_lab(text).pods
    assert (pod.template.hostname, pod.template.subdomain) == ("a", "web")


def test_a_replica_has_its_name_hostname_labels_and_own_claim():
    sts = read()
    template = member_template(sts, 2, "web-abc")
    assert (template.hostname, template.subdomain) == ("web-2", "web")
    assert dict(template.labels) == {
        "app": "web",
        REVISION_LABEL: "web-abc",
        POD_NAME_LABEL: "web-2",
        POD_INDEX_LABEL: "2",
    }
    assert [(v.name, v.source) for v in template.volumes] == [("data", ClaimSource("data-web-2"))]
    assert (template.recorded["hostname"], template.recorded["subdomain"]) == ("web-2", "web")


# -- the ordering rules -----------------------------------------------------------------


def members(*states: str, revision: str = "r2") -> list[Member]:
    """One Member per ordinal: R ready, P not ready, T terminating, O ready at revision r1."""
    out = []
    for i, s in enumerate(states):
        if s == "-":
            continue
        out.append(Member(i, f"web-{i}", "r1" if s == "O" else revision, s in "RO", s == "T"))
    return out


@pytest.mark.parametrize(
    ("replicas", "states", "parallel", "create", "delete"),
    [
        (3, "", False, [0], []),  # one at a time, lowest first
        (3, "P", False, [], []),  # web-1 waits for web-0 to be Ready
        (3, "R", False, [1], []),
        (3, "RR", False, [2], []),
        (3, "R-R", False, [1], []),  # a lost web-1 is made again with its name
        (3, "RRR", False, [], []),
        (1, "RRR", False, [], ["web-2"]),  # scale-down: the highest first, one at a time
        (1, "RRT", False, [], []),  # ... each gone before the next
        (1, "RR", False, [], ["web-1"]),
        (1, "PRR", False, [], []),  # and only while the rest are Ready
        (3, "", True, [0, 1, 2], []),  # Parallel: all at once
        (3, "P-P", True, [1], []),
        (1, "RRR", True, [], ["web-2", "web-1"]),
    ],
)
def test_ordered_and_parallel(replicas, states, parallel, create, delete):
    change = step(replicas, members(*states), "r2", parallel)
    assert (change.create, change.delete) == (create, delete)


@pytest.mark.parametrize(
    ("states", "partition", "rolling", "delete"),
    [
        ("OOO", 0, True, ["web-2"]),  # from the highest ordinal down
        ("OOR", 0, True, ["web-1"]),
        ("OOP", 0, True, []),  # each Ready before the next
        ("OOR", 2, True, []),  # the partition keeps 0 and 1
        ("OOO", 2, True, ["web-2"]),
        ("OOO", 0, False, []),  # OnDelete: nothing until someone deletes a pod
    ],
)
def test_rolling_update(states, partition, rolling, delete):
    change = step(3, members(*states), "r2", rolling=rolling, partition=partition)
    assert (change.create, change.delete) == ([], delete)


class Pods:
    """The lab's side, writing Pod objects only: Running, Ready when told."""

    def __init__(self, store: Store):
        self.store, self.started, self.deleted = store, [], []

    def compile_statefulset(self, obj):
        return parse_lab(
            LAB
            + "---\n"
            + yaml.safe_dump(
                {k: obj[k] for k in ("apiVersion", "kind", "metadata", "spec")}
                | {"metadata": {"name": obj["metadata"]["name"]}}
            )
        ).statefulsets[0]

    def run_named_pods(self, namespace, owner, pods):
        for name, template in pods:
            self.started.append(name)
            self.store.create(
                {
                    "apiVersion": "v1",
                    "kind": "Pod",
                    "metadata": {
                        "name": name,
                        "namespace": namespace,
                        "labels": dict(template.labels),
                        "ownerReferences": [
                            {"kind": "StatefulSet", "name": owner, "controller": True}
                        ],
                    },
                    "spec": {"hostname": template.hostname, "subdomain": template.subdomain},
                    "status": {
                        "phase": "Running",
                        "conditions": [{"type": "Ready", "status": "False"}],
                    },
                }
            )

    def ready(self, name):
        pod = self.store.get("pods", "default", name)
        self.store.update(
            dict(
                pod,
                status={"phase": "Running", "conditions": [{"type": "Ready", "status": "True"}]},
            )
        )

    def delete_pods(self, namespace, names):
        for name in names:
            self.deleted.append(name)
            self.store.delete("pods", namespace, name)


def setup(**over):
    store = Store()
    store.apply(statefulset_object(read(**over)))
    pods = Pods(store)
    return store, pods, StatefulSetController(store, pods, EventRecorder(store))


def messages(store: Store) -> list[str]:
    items = sorted(
        store.list("events", "default")[0],
        key=lambda e: int(e["metadata"]["name"].split(".")[1], 16),
    )
    return [e["message"] for e in items if e["involvedObject"]["kind"] == "StatefulSet"]


def test_the_controller_starts_in_order_keeps_claims_and_writes_status():
    store, pods, controller = setup()
    key = ("default", "web")
    controller.reconcile(key)
    assert pods.started == ["web-0"]
    controller.reconcile(key)
    assert pods.started == ["web-0"]  # web-0 is not Ready yet
    pods.ready("web-0")
    controller.reconcile(key)
    pods.ready("web-1")
    controller.reconcile(key)
    pods.ready("web-2")
    controller.reconcile(key)
    assert pods.started == ["web-0", "web-1", "web-2"]
    claims = store.list("persistentvolumeclaims", "default")[0]
    assert sorted(c["metadata"]["name"] for c in claims) == [
        "data-web-0",
        "data-web-1",
        "data-web-2",
    ]
    assert all(
        c["metadata"]["labels"] == {"app": "web"} and "ownerReferences" not in c["metadata"]
        for c in claims
    )
    assert messages(store)[:2] == [
        "create Claim data-web-0 Pod web-0 in StatefulSet web success",
        "create Pod web-0 in StatefulSet web successful",
    ]
    obj = store.get("statefulsets", "default", "web")
    update = revision_name(obj)
    assert obj["status"] == {
        "observedGeneration": 1,
        "replicas": 3,
        "readyReplicas": 3,
        "currentReplicas": 3,
        "updatedReplicas": 3,
        "availableReplicas": 3,
        "currentRevision": update,
        "updateRevision": update,
        "collisionCount": 0,
    }
    assert store.get("controllerrevisions", "default", update)["revision"] == 1
    # scale down to 1: web-2 goes, then web-1; the claims stay
    obj["spec"]["replicas"] = 1
    store.update(obj)
    controller.reconcile(key)
    controller.reconcile(key)
    assert pods.deleted == ["web-2", "web-1"]
    assert len(store.list("persistentvolumeclaims", "default")[0]) == 3
    assert "delete Pod web-2 in StatefulSet web successful" in messages(store)
    # a deleted web-0 comes back as web-0, and a scale-up reuses the claims
    pods.delete_pods("default", ["web-0"])
    controller.reconcile(key)
    assert pods.started[-1] == "web-0"


def test_when_scaled_delete_removes_a_scaled_down_replicas_claims():
    store, pods, controller = setup(
        spec__persistentVolumeClaimRetentionPolicy={
            "whenScaled": "Delete",
            "whenDeleted": "Delete",
        },
        spec__podManagementPolicy="Parallel",
    )
    key = ("default", "web")
    controller.reconcile(key)
    assert pods.started == ["web-0", "web-1", "web-2"]
    claim = store.get("persistentvolumeclaims", "default", "data-web-0")
    assert claim["metadata"]["ownerReferences"][0]["kind"] == "StatefulSet"
    obj = store.get("statefulsets", "default", "web")
    obj["spec"]["replicas"] = 1
    store.update(obj)
    controller.reconcile(key)
    names = sorted(
        c["metadata"]["name"] for c in store.list("persistentvolumeclaims", "default")[0]
    )
    assert names == ["data-web-0"]
    store.delete("statefulsets", "default", "web")  # whenDeleted: Delete: the rest goes too
    controller.reconcile(key)
    assert store.list("persistentvolumeclaims", "default")[0] == []
    assert store.list("pods", "default")[0] == []


def test_a_changed_template_rolls_from_the_highest_ordinal_down():
    store, pods, controller = setup(spec__podManagementPolicy="Parallel")
    key = ("default", "web")
    controller.reconcile(key)
    for i in range(3):
        pods.ready(f"web-{i}")
    controller.reconcile(key)
    obj = store.get("statefulsets", "default", "web")
    old = obj["status"]["currentRevision"]
    obj["spec"]["template"]["metadata"]["labels"]["v"] = "2"
    store.update(obj)
    controller.reconcile(key)
    assert pods.deleted == ["web-2"]
    controller.reconcile(key)  # made again at the new revision
    new = store.get("pods", "default", "web-2")["metadata"]["labels"][REVISION_LABEL]
    assert (
        new != old
        and new == store.get("statefulsets", "default", "web")["status"]["updateRevision"]
    )
    controller.reconcile(key)
    assert pods.deleted == ["web-2"]  # web-1 waits until web-2 is Ready
    pods.ready("web-2")
    controller.reconcile(key)
    assert pods.deleted == ["web-2", "web-1"]


# -- names in DNS -----------------------------------------------------------------------


def candidate(name: str, ip: str, subdomain: str | None) -> Candidate:
    return Candidate(
        "default",
        name,
        {"app": "web"},
        IPv4Address(ip),
        "n1",
        True,
        (),
        hostname=name,
        subdomain=subdomain,
    )


def test_endpoints_carry_the_hostname_of_pods_in_the_services_subdomain():
    service = ServiceSpec(
        "web", "default", (ServicePort(80, 80),), frozen_map({"app": "web"}), headless=True
    )
    pods = [candidate("web-0", "10.244.1.2", "web"), candidate("other", "10.244.1.3", "db")]
    (subset,) = endpoint_subsets(service, pods)
    assert [(a["ip"], a.get("hostname")) for a in subset["addresses"]] == [
        ("10.244.1.2", "web-0"),
        ("10.244.1.3", None),
    ]
    (slice_,) = endpoint_slices("default", "web", [subset])
    assert [e.get("hostname") for e in slice_["endpoints"]] == ["web-0", None]


def test_hosts_file_names_the_fqdn_of_a_pod_with_a_subdomain():
    template = member_template(read(), 0, "web-x")
    plan = PodPlan(
        "web-0", "default", "n1", "ns", IPv4Interface("10.244.1.2/24"), IPv4Address("10.244.1.1"),
        "veth", template.labels, template,
    )  # fmt: skip
    assert "10.244.1.2\tweb-0.web.default.svc.cluster.local\tweb-0\n" in hosts_file(plan)
