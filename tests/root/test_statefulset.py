"""StatefulSets on a real lab: pods started in order with stable names, a headless
Service naming each pod in DNS, scale down and up keeping names, a deleted pod back
with its name; per-replica claims created and kept (the objects: until the storage
parts bind and mount them, a pod with a claim waits in ContainerCreating, as kubelet
holds it); driven by kubectl 1.35 and the `kubernetes` Python client."""

from __future__ import annotations

import copy
import json
import threading

import pytest

from netlab.lab import Lab
from tests.root.conftest import two_rack_builder, wait_for
from tests.root.test_kubectl import kubectl

pytestmark = pytest.mark.root

ZONE = "cluster.local"
ECHO = ["python3", "-m", "netlab.apps.echo", "8080"]


def statefulset(name: str, replicas: int, claims: bool = False, **spec) -> dict:
    claim = {
        "metadata": {"name": "data"},
        "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "16Mi"}}},
    }
    return {
        "apiVersion": "apps/v1",
        "kind": "StatefulSet",
        "metadata": {"name": name, "namespace": "default"},
        "spec": {
            "replicas": replicas,
            "serviceName": name,
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {
                    "containers": [
                        {
                            "name": "app",
                            "command": ECHO,
                            "ports": [{"containerPort": 8080}],
                            "readinessProbe": {"tcpSocket": {"port": 8080}},
                        }
                    ]
                },
            },
            "volumeClaimTemplates": [claim] if claims else [],
            **spec,
        },
    }


@pytest.fixture(scope="module")
def slab():
    b = two_rack_builder("t-sts")
    for name in ("web", "db"):
        b.add_service(name, selector={"app": name}, ports=[(80, 8080)], headless=True)
    b.add_manifest(statefulset("db", 2, True, podManagementPolicy="Parallel"))  # in the lab file
    with Lab(b.build()) as lab:
        lab.settle()
        yield lab


def client(lab: Lab):
    from kubernetes import client as kube
    from kubernetes import config

    return kube.AppsV1Api(config.new_client_from_config(str(lab.run_dir / "kubeconfig")))


def pods_of(lab: Lab, app: str) -> dict[str, dict]:
    items = lab.store.list("pods", "default", label_selector=f"app={app}")[0]
    return {p["metadata"]["name"]: p for p in items}


def ready(pod: dict) -> bool:
    conditions = (pod.get("status") or {}).get("conditions") or ()
    return any(c["type"] == "Ready" and c["status"] == "True" for c in conditions) and not pod[
        "metadata"
    ].get("deletionTimestamp")


def ready_names(lab: Lab, app: str) -> set[str]:
    return {name for name, pod in pods_of(lab, app).items() if ready(pod)}


def claims(lab: Lab) -> set[str]:
    return {c["metadata"]["name"] for c in lab.store.list("persistentvolumeclaims", "default")[0]}


def test_a_lab_file_statefulset_gets_a_claim_per_replica_kept_on_scale_down(slab):
    """db (Parallel): both pods at once, each with its claim; until the storage parts
    bind claims its pods wait in ContainerCreating, so Parallel scales it regardless."""
    assert wait_for(lambda: set(pods_of(slab, "db")) == {"db-0", "db-1"}, 30)
    assert wait_for(lambda: claims(slab) >= {"data-db-0", "data-db-1"}, 10)
    claim = slab.store.get("persistentvolumeclaims", "default", "data-db-0")
    assert claim["metadata"]["labels"] == {"app": "db"}
    assert "ownerReferences" not in claim["metadata"]  # Retain: the set does not own it
    assert claim["spec"]["resources"] == {"requests": {"storage": "16Mi"}}
    for i in (0, 1):
        pod = pods_of(slab, "db")[f"db-{i}"]
        assert {"name": "data", "persistentVolumeClaim": {"claimName": f"data-db-{i}"}} in pod[
            "spec"
        ]["volumes"]
    events = kubectl(slab, "get", "events", "--field-selector", "involvedObject.name=db").stdout
    assert "create Claim data-db-1 Pod db-1 in StatefulSet db success" in events
    out = kubectl(slab, "get", "sts", "db").stdout.splitlines()
    assert out[0].split() == ["NAME", "READY", "AGE"] and out[1].split()[0] == "db"
    kubectl(slab, "scale", "sts", "db", "--replicas=1")
    assert wait_for(lambda: set(pods_of(slab, "db")) == {"db-0"}, 30)
    assert claims(slab) >= {"data-db-0", "data-db-1"}  # kept
    kubectl(slab, "scale", "sts", "db", "--replicas=2")
    assert wait_for(lambda: set(pods_of(slab, "db")) == {"db-0", "db-1"}, 30)
    assert sorted(c for c in claims(slab) if c.startswith("data-db-")) == ["data-db-0", "data-db-1"]


def test_ordered_start_stable_names_and_dns(slab):
    """Created by the Python client; a watch of the store sees web-1 created only once
    web-0 is Ready, and web-2 once web-1 is."""
    seen: list[tuple[str, str, bool]] = []
    lock = threading.Lock()

    def record(event) -> None:
        if event.resource.plural == "pods" and event.object["metadata"]["name"].startswith("web-"):
            with lock:
                seen.append((event.type, event.object["metadata"]["name"], ready(event.object)))

    unsubscribe = slab.store.subscribe(record)
    try:
        created = client(slab).create_namespaced_stateful_set("default", statefulset("web", 3))
        assert created.metadata.name == "web"
        assert wait_for(lambda: ready_names(slab, "web") == {"web-0", "web-1", "web-2"}, 60)
    finally:
        unsubscribe()
    with lock:
        events = list(seen)
    for i in (1, 2):
        added = next(
            n for n, (t, name, _) in enumerate(events) if t == "ADDED" and name == f"web-{i}"
        )
        before_ready = next(
            n for n, (_, name, r) in enumerate(events) if name == f"web-{i - 1}" and r
        )
        assert before_ready < added, events
    pods = pods_of(slab, "web")
    for i in range(3):
        pod = pods[f"web-{i}"]
        labels = pod["metadata"]["labels"]
        assert labels["statefulset.kubernetes.io/pod-name"] == f"web-{i}"
        assert labels["apps.kubernetes.io/pod-index"] == str(i)
        assert labels["controller-revision-hash"].startswith("web-")
        assert (pod["spec"]["hostname"], pod["spec"]["subdomain"]) == (f"web-{i}", "web")
        (ref,) = pod["metadata"]["ownerReferences"]
        assert (ref["kind"], ref["name"], ref["controller"]) == ("StatefulSet", "web", True)
    # the headless Service names each pod: web-0.web.default.svc resolves inside the lab
    ip = pods["web-0"]["status"]["podIP"]
    answer = slab.exec(
        "a", ["dig", "+time=2", "+tries=1", "+short", f"web-0.web.default.svc.{ZONE}"]
    )
    assert answer.returncode == 0 and answer.stdout.split() == [ip], answer.stdout + answer.stderr
    hosts = slab.exec("web-0", ["cat", "/etc/hosts"]).stdout
    assert f"{ip}\tweb-0.web.default.svc.{ZONE}\tweb-0" in hosts
    assert slab.exec("web-1", ["hostname"]).stdout.strip() == "web-1"
    events = kubectl(slab, "get", "events", "--field-selector", "involvedObject.name=web").stdout
    assert "create Pod web-0 in StatefulSet web successful" in events
    out = kubectl(slab, "rollout", "status", "sts/web", "--timeout", "20s").stdout
    assert "roll out complete" in out
    status = client(slab).read_namespaced_stateful_set("web", "default").status
    assert (status.replicas, status.ready_replicas, status.updated_replicas) == (3, 3, 3)
    assert status.current_revision == status.update_revision


def test_scale_down_and_up_keeps_names_and_claims(slab):
    assert wait_for(lambda: len(ready_names(slab, "web")) == 3, 30)
    kubectl(slab, "scale", "sts", "web", "--replicas=1")
    assert wait_for(lambda: set(pods_of(slab, "web")) == {"web-0"}, 30)
    deletes = kubectl(slab, "get", "events", "--field-selector", "reason=SuccessfulDelete").stdout
    assert deletes.index("delete Pod web-2 in StatefulSet web") < deletes.index(
        "delete Pod web-1 in StatefulSet web"
    )
    client(slab).patch_namespaced_stateful_set("web", "default", {"spec": {"replicas": 3}})
    assert wait_for(lambda: ready_names(slab, "web") == {"web-0", "web-1", "web-2"}, 60)
    assert kubectl(slab, "get", "sts", "web").stdout.splitlines()[1].split()[:2] == ["web", "3/3"]


def test_a_deleted_pod_comes_back_with_its_name(slab):
    assert wait_for(lambda: "web-0" in ready_names(slab, "web"), 30)
    old = pods_of(slab, "web")["web-0"]["metadata"]["uid"]
    kubectl(slab, "delete", "pod", "web-0")

    def back() -> bool:
        pod = pods_of(slab, "web").get("web-0")
        return pod is not None and pod["metadata"]["uid"] != old and ready(pod)

    assert wait_for(back, 30)


def test_delete_and_apply_again(slab):
    api = client(slab)
    assert api.read_namespaced_stateful_set("web", "default").spec.replicas == 3
    kubectl(slab, "delete", "sts", "web")
    assert wait_for(lambda: not pods_of(slab, "web"), 30)
    # its history goes too (the garbage collector's pass may come after the pods')
    assert wait_for(
        lambda: not slab.store.list("controllerrevisions", "default", label_selector="app=web")[0],
        10,
    )
    # and applied again from a manifest
    manifest = copy.deepcopy(statefulset("web", 1))
    out = kubectl(slab, "apply", "-f", "-", stdin=json.dumps(manifest)).stdout
    assert "statefulset.apps/web created" in out
    assert wait_for(lambda: ready_names(slab, "web") == {"web-0"}, 30)
    api.delete_namespaced_stateful_set("web", "default")
    assert wait_for(lambda: not pods_of(slab, "web"), 30)


def test_a_pod_on_a_lost_node_comes_back_elsewhere_with_its_name(slab):
    client(slab).create_namespaced_stateful_set("default", statefulset("lost", 2))
    assert wait_for(lambda: ready_names(slab, "lost") == {"lost-0", "lost-1"}, 30)
    node = slab.pod("lost-0").node
    described = kubectl(slab, "describe", "sts", "lost").stdout
    assert "Pods Status:" in described and "2 Running" in described
    slab.fail_node(node)
    try:

        def moved() -> bool:
            pod = pods_of(slab, "lost").get("lost-0")
            return pod is not None and pod["spec"]["nodeName"] != node and ready(pod)

        assert wait_for(moved, 30)
    finally:
        slab.recover_node(node)
    kubectl(slab, "delete", "sts", "lost")


def test_what_the_lab_serves_fits_kubernetes_schemas(slab):
    from netlab.apiserver import schema

    assert wait_for(lambda: claims(slab) >= {"data-db-0"}, 30)
    for kind in ("statefulsets.apps", "controllerrevisions.apps", "persistentvolumeclaims", "pods"):
        listed = json.loads(kubectl(slab, "get", kind, "-o", "json").stdout)["items"]
        assert listed, kind
        for obj in listed:
            group, _, version = obj["apiVersion"].rpartition("/")
            kind_schema = schema.for_kind(group, version, obj["kind"])
            assert kind_schema.known, obj["kind"]
            assert schema.unknown_fields(obj, kind_schema) == [], obj["metadata"]["name"]
    history = kubectl(slab, "rollout", "history", "sts/db").stdout
    assert "REVISION" in history and "1" in history.split()
