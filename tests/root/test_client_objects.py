"""The objects real clients read, from a running lab: every kind it serves listed and
read through the kubernetes Python client's typed API (whose models refuse an object
missing a required field), Nodes as `kubectl describe node` shows them, Pod status as
clients read it, and Jobs' back-off, counts and Events."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest

from netlab.lab import Lab
from netlab.resources import DEFAULT_TABLE
from tests.root.conftest import two_rack_builder, wait_for

pytestmark = pytest.mark.root

KUBECTL = Path(__file__).resolve().parents[2] / ".tools" / "kubectl-1.35" / "kubectl"
ECHO = ["python3", "-m", "netlab.apps.echo", "8080"]
JOB_BACKOFF = 2.0  # the lab's first back-off step (Kubernetes: 10 s)


def _job(name: str, command: str, **spec) -> str:
    template = {"restartPolicy": "Never", "containers": [{"name": "run", "command": ["sh", "-c", command]}]}  # fmt: skip
    body = {"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": name}}
    return json.dumps(dict(body, spec={**spec, "template": {"spec": template}}))


POLICIES = """
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: web}
spec:
  host: web
  subsets: [{name: v1, labels: {app: web}}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: web}
spec:
  hosts: [web]
  http: [{route: [{destination: {host: web, subset: v1}}]}]
---
apiVersion: netlab.io/v1alpha1
kind: RateLimitPolicy
metadata: {name: web}
spec:
  targetRef: {kind: Service, name: web}
  tokenBucket: {maxTokens: 10, tokensPerFill: 5, fillInterval: 2s}
"""
CONFIG = """
apiVersion: v1
kind: ConfigMap
metadata: {name: web}
data: {app.conf: "port = 8080"}
---
apiVersion: v1
kind: Secret
metadata: {name: web}
stringData: {token: abc}
"""

CLAIM = """
apiVersion: v1
kind: PersistentVolumeClaim
metadata: {name: data}
spec: {accessModes: [ReadWriteOnce], resources: {requests: {storage: 8Mi}}}
"""

STATEFULSET = """
apiVersion: apps/v1
kind: StatefulSet
metadata: {name: db}
spec:
  replicas: 1
  serviceName: db
  selector: {matchLabels: {app: db}}
  template:
    metadata: {labels: {app: db}}
    spec: {containers: [{name: db, command: [sleep, infinity]}]}
  volumeClaimTemplates:
    - metadata: {name: data}
      spec: {accessModes: [ReadWriteOnce], resources: {requests: {storage: 16Mi}}}
"""


@pytest.fixture(scope="module")
def olab():
    b = two_rack_builder("tobj")
    probe = {"tcpSocket": {"port": 8080}}
    b.add_deployment("web", replicas=2, command=ECHO, ports=[8080], readiness_probe=probe)
    b.add_service("web", selector={"app": "web"}, ports=[(80, 8080)])
    spec = b.build()
    timing = dataclasses.replace(spec.control_plane, job_backoff=JOB_BACKOFF)
    with Lab(dataclasses.replace(spec, control_plane=timing)) as lab:
        lab.settle()
        lab.apply_text(_job("done", "echo done"))
        lab.apply_text(_job("broken", "exit 3", backoffLimit=2))
        lab.apply_text(_job("slow", "sleep 60", activeDeadlineSeconds=2))
        lab.apply_text(POLICIES)
        lab.apply_text(CONFIG)
        lab.apply_text(CLAIM)  # and the volume bound to it
        lab.apply_text(STATEFULSET)
        yield lab


@pytest.fixture(scope="module")
def api(olab):
    from kubernetes import config

    return config.new_client_from_config(str(olab.run_dir / "kubeconfig"))


def kubectl(lab: Lab, *args: str) -> str:
    assert KUBECTL.exists(), f"{KUBECTL} is missing: scripts/kubectl.sh fetches it"
    result = subprocess.run(
        [str(KUBECTL), "--kubeconfig", str(lab.run_dir / "kubeconfig"), *args],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


def job_ended(lab: Lab, name: str) -> dict:
    status = lab.store.get("jobs", "default", name).get("status") or {}
    done = [c for c in status.get("conditions") or () if c["type"] in ("Complete", "Failed")]
    return done[0] if done else {}


def test_every_kind_lists_and_reads_through_the_typed_api(olab, api):
    from kubernetes import client

    core, apps, batch = client.CoreV1Api(api), client.AppsV1Api(api), client.BatchV1Api(api)
    leases, custom = client.CoordinationV1Api(api), client.CustomObjectsApi(api)
    slices, storage = client.DiscoveryV1Api(api), client.StorageV1Api(api)
    authn, authz = client.AuthenticationV1Api(api), client.AuthorizationV1Api(api)
    typed = {
        "namespaces": (core.list_namespace, core.read_namespace),
        "nodes": (core.list_node, core.read_node),
        "pods": (core.list_pod_for_all_namespaces, core.read_namespaced_pod),
        "deployments": (apps.list_deployment_for_all_namespaces, apps.read_namespaced_deployment),
        "replicasets": (apps.list_replica_set_for_all_namespaces, apps.read_namespaced_replica_set),
        "jobs": (batch.list_job_for_all_namespaces, batch.read_namespaced_job),
        "statefulsets": (apps.list_stateful_set_for_all_namespaces, apps.read_namespaced_stateful_set),
        "controllerrevisions": (apps.list_controller_revision_for_all_namespaces, apps.read_namespaced_controller_revision),
        "services": (core.list_service_for_all_namespaces, core.read_namespaced_service),
        "endpoints": (core.list_endpoints_for_all_namespaces, core.read_namespaced_endpoints),
        "endpointslices": (slices.list_endpoint_slice_for_all_namespaces, slices.read_namespaced_endpoint_slice),
        "events": (core.list_event_for_all_namespaces, core.read_namespaced_event),
        "leases": (leases.list_lease_for_all_namespaces, leases.read_namespaced_lease),
        "configmaps": (core.list_config_map_for_all_namespaces, core.read_namespaced_config_map),
        "secrets": (core.list_secret_for_all_namespaces, core.read_namespaced_secret),
        "persistentvolumeclaims": (core.list_persistent_volume_claim_for_all_namespaces,
                                   core.read_namespaced_persistent_volume_claim),
        "persistentvolumes": (core.list_persistent_volume, core.read_persistent_volume),
        "storageclasses": (storage.list_storage_class, storage.read_storage_class),
        "volumeattachments": (storage.list_volume_attachment, storage.read_volume_attachment),
    }  # fmt: skip
    unattached = ("volumeattachments",)  # none until a pod mounts a claim
    assert wait_for(lambda: job_ended(olab, "done"), 20)
    assert wait_for(lambda: olab.store.list("persistentvolumeclaims")[0], 20)
    served = {res.plural: res for res in DEFAULT_TABLE}
    for plural, (list_all, read) in typed.items():
        res = served.pop(plural)
        items = list_all().items
        assert items or plural in unattached, f"the lab serves no {plural}"
        for item in items:  # each one read on its own, through the same models
            meta = item.metadata
            one = read(meta.name, meta.namespace) if res.namespaced else read(meta.name)
            assert one.metadata.uid == meta.uid and one.kind == res.kind
    access = client.V1SelfSubjectAccessReviewSpec(
        resource_attributes=client.V1ResourceAttributes(verb="list", resource="pods")
    )
    rules = client.V1SelfSubjectRulesReviewSpec(namespace="default")
    reviews = {  # kinds that are only created, and answered
        "selfsubjectreviews": lambda: (
            authn.create_self_subject_review(client.V1SelfSubjectReview()).status.user_info.username
        ),
        "selfsubjectaccessreviews": lambda: (
            authz.create_self_subject_access_review(
                client.V1SelfSubjectAccessReview(spec=access)
            ).status.allowed
        ),
        "selfsubjectrulesreviews": lambda: (
            authz.create_self_subject_rules_review(
                client.V1SelfSubjectRulesReview(spec=rules)
            ).status.resource_rules
        ),
    }
    for plural, create in reviews.items():
        assert served.pop(plural).verbs == ("create",)
        assert create(), plural
    for plural, res in served.items():  # the mesh's kinds: through the custom objects API
        listed = custom.list_cluster_custom_object(res.group, res.version, plural)["items"]
        assert [o["metadata"]["name"] for o in listed] == ["web"], plural
        one = custom.get_namespaced_custom_object(res.group, res.version, "default", plural, "web")
        assert one["kind"] == res.kind
    scale = apps.read_namespaced_deployment_scale("web", "default")
    assert scale.spec.replicas == 2
    scale = apps.read_namespaced_stateful_set_scale("db", "default")
    assert (scale.spec.replicas, scale.status.selector) == (1, "app=db")


def test_nodes_report_the_machine_and_kubectl_describe_divides_by_it(olab, api):
    from kubernetes import client

    node = client.CoreV1Api(api).read_node("n1")
    info = node.status.node_info
    assert info.kernel_version == os.uname().release
    assert info.machine_id != client.CoreV1Api(api).read_node("n2").status.node_info.machine_id
    assert node.status.capacity["cpu"] == str(len(os.sched_getaffinity(0)))
    assert int(node.status.allocatable["memory"].removesuffix("Ki")) > 0
    for condition in node.status.conditions:  # posted while this lab ran, not in year 1
        age = datetime.now(UTC) - condition.last_heartbeat_time
        assert 0 <= age.total_seconds() < 3600, condition
    described = kubectl(olab, "describe", "node", "n1")
    assert "-9223372036854775808" not in described and "0001" not in described
    assert f"Kernel Version:             {os.uname().release}" in described
    allocated = described[described.index("Allocated resources:") :]
    assert "cpu                0 (0%)" in allocated and "memory             0 (0%)" in allocated
    assert "KubeletReady" in described and "MemoryPressure" in described


def test_pod_status_agrees_with_itself_and_a_terminating_pod_is_not_ready(olab, api):
    from kubernetes import client, watch

    core = client.CoreV1Api(api)
    pods = core.list_namespaced_pod("default", label_selector="app=web")
    for pod in pods.items:
        (probe,) = [c.readiness_probe for c in pod.spec.containers]
        assert probe.tcp_socket.port == 8080
        ready = next(c.status for c in pod.status.conditions if c.type == "Ready")
        assert [c.ready for c in pod.status.container_statuses] == [ready == "True"]
    victim = pods.items[0].metadata.name
    seen = []
    events = watch.Watch()

    def follow() -> None:
        for event in events.stream(
            core.list_namespaced_pod, "default",
            resource_version=pods.metadata.resource_version, timeout_seconds=15,
        ):  # fmt: skip
            pod = event["object"]
            if pod.metadata.name == victim:
                seen.append(pod)
                if event["type"] == "DELETED":
                    events.stop()

    watcher = threading.Thread(target=follow)
    watcher.start()
    time.sleep(0.5)
    core.delete_namespaced_pod(victim, "default")
    watcher.join(20)
    terminating = [p for p in seen if p.metadata.deletion_timestamp is not None]
    assert terminating, [p.metadata for p in seen]
    for pod in terminating:  # Terminating: 0/1, its containers not ready, as Ready says
        assert [c.ready for c in pod.status.container_statuses] == [False]
        assert next(c.status for c in pod.status.conditions if c.type == "Ready") == "False"


def test_jobs_back_off_count_their_killed_pods_and_record_events(olab, api):
    from kubernetes import client

    assert wait_for(lambda: all(job_ended(olab, n) for n in ("done", "broken", "slow")), 40)
    batch, core = client.BatchV1Api(api), client.CoreV1Api(api)
    slow = batch.read_namespaced_job("slow", "default").status
    assert slow.failed == 1  # the pod the deadline killed
    assert [c.reason for c in slow.conditions] == ["DeadlineExceeded"]
    broken = batch.read_namespaced_job("broken", "default").status
    assert broken.failed == 3 and [c.reason for c in broken.conditions] == ["BackoffLimitExceeded"]
    pods = [
        p for p in core.list_namespaced_pod("default").items
        if p.metadata.owner_references and p.metadata.owner_references[0].name == "broken"
    ]  # fmt: skip
    ended = [p.status.container_statuses[0].state.terminated for p in pods]
    runs = sorted((t.started_at, t.finished_at) for t in ended)
    assert len(runs) == 3 and all(start <= end for start, end in runs)
    # each replacement waited its back-off after the failure before it (whole seconds: -1)
    gaps = [(runs[i + 1][0] - runs[i][1]).total_seconds() for i in range(2)]
    assert gaps[0] >= JOB_BACKOFF - 1 and gaps[1] >= 2 * JOB_BACKOFF - 1, gaps
    described = kubectl(olab, "describe", "job", "broken")
    events = described[described.index("Events:") :]
    assert events.count("SuccessfulCreate") == 3 and "BackoffLimitExceeded" in events
    assert "job-controller" in events
    slow_events = kubectl(olab, "describe", "job", "slow")
    assert "DeadlineExceeded" in slow_events and "SuccessfulDelete" in slow_events
    done = kubectl(olab, "get", "events", "--field-selector", "involvedObject.name=done")
    assert "Completed" in done and "job/done" in done


def _typed_objects(client) -> dict:
    """A new object of every kind the lab takes writes for, as the typed models build it
    (no kind, no apiVersion: the client's typed objects usually leave them unset)."""
    meta = client.V1ObjectMeta
    labels = {"app": "typed"}
    container = client.V1Container(name="c", image="busybox", command=["sleep", "infinity"])
    template = client.V1PodTemplateSpec(
        metadata=meta(labels=labels), spec=client.V1PodSpec(containers=[container])
    )
    return {
        "namespaces": client.V1Namespace(metadata=meta(name="typed")),
        "pods": client.V1Pod(
            metadata=meta(name="typed", labels=labels),
            spec=client.V1PodSpec(containers=[container]),
        ),
        "deployments": client.V1Deployment(
            metadata=meta(name="typed"),
            spec=client.V1DeploymentSpec(
                replicas=1, selector=client.V1LabelSelector(match_labels=labels), template=template
            ),
        ),
        "services": client.V1Service(
            metadata=meta(name="typed"),
            spec=client.V1ServiceSpec(
                selector=labels, ports=[client.V1ServicePort(port=80, target_port=8080)]
            ),
        ),
        "configmaps": client.V1ConfigMap(metadata=meta(name="typed"), data={"k": "v"}),
        "secrets": client.V1Secret(metadata=meta(name="typed"), string_data={"k": "v"}),
        "jobs": client.V1Job(
            metadata=meta(name="typed"),
            spec=client.V1JobSpec(
                template=client.V1PodTemplateSpec(
                    spec=client.V1PodSpec(
                        restart_policy="Never",
                        containers=[client.V1Container(name="c", command=["true"])],
                    )
                )
            ),
        ),
    }


def test_every_writable_kind_is_created_patched_watched_and_deleted_typed(olab, api):
    """Through the typed API: create (models without kind/apiVersion), watch the ADDED and
    the MODIFIED of a patch, read the patch back, delete. The mesh kinds, which have no
    typed models, through CustomObjectsApi."""
    from kubernetes import client, watch

    core, apps, batch = client.CoreV1Api(api), client.AppsV1Api(api), client.BatchV1Api(api)
    calls = {
        "namespaces": (core.create_namespace, core.patch_namespace, core.list_namespace,
                       core.read_namespace, core.delete_namespace, False),
        "pods": (core.create_namespaced_pod, core.patch_namespaced_pod,
                 core.list_namespaced_pod, core.read_namespaced_pod,
                 core.delete_namespaced_pod, True),
        "deployments": (apps.create_namespaced_deployment, apps.patch_namespaced_deployment,
                        apps.list_namespaced_deployment, apps.read_namespaced_deployment,
                        apps.delete_namespaced_deployment, True),
        "services": (core.create_namespaced_service, core.patch_namespaced_service,
                     core.list_namespaced_service, core.read_namespaced_service,
                     core.delete_namespaced_service, True),
        "configmaps": (core.create_namespaced_config_map, core.patch_namespaced_config_map,
                       core.list_namespaced_config_map, core.read_namespaced_config_map,
                       core.delete_namespaced_config_map, True),
        "secrets": (core.create_namespaced_secret, core.patch_namespaced_secret,
                    core.list_namespaced_secret, core.read_namespaced_secret,
                    core.delete_namespaced_secret, True),
        "jobs": (batch.create_namespaced_job, batch.patch_namespaced_job,
                 batch.list_namespaced_job, batch.read_namespaced_job,
                 batch.delete_namespaced_job, True),
    }  # fmt: skip
    for plural, body in _typed_objects(client).items():
        create, patch, lister, read, delete, namespaced = calls[plural]
        where = ("default",) if namespaced else ()
        start = lister(*where).metadata.resource_version
        made = create(*where, body)
        assert made.metadata.name == "typed" and made.metadata.uid, plural
        patch("typed", *where, {"metadata": {"labels": {"patched": "yes"}}})
        assert read("typed", *where).metadata.labels["patched"] == "yes", plural
        seen = []
        for event in watch.Watch().stream(
            lister, *where, resource_version=start, timeout_seconds=5,
            field_selector="metadata.name=typed",
        ):  # fmt: skip
            labels = event["object"].metadata.labels or {}
            seen.append((event["type"], labels.get("patched")))
            if ("MODIFIED", "yes") in seen:
                break
        assert seen[0][0] == "ADDED" and ("MODIFIED", "yes") in seen, (plural, seen)
        if plural != "namespaces":
            delete("typed", *where)
    custom = client.CustomObjectsApi(api)
    for group, version, plural in (
        ("networking.istio.io", "v1", "virtualservices"),
        ("networking.istio.io", "v1", "destinationrules"),
        ("netlab.io", "v1alpha1", "ratelimitpolicies"),
    ):
        patched = custom.patch_namespaced_custom_object(
            group, version, "default", plural, "web", {"metadata": {"labels": {"patched": "yes"}}}
        )
        assert patched["metadata"]["labels"]["patched"] == "yes", plural
        listed = custom.list_namespaced_custom_object(group, version, "default", plural)
        assert "web" in {o["metadata"]["name"] for o in listed["items"]}
    core.delete_namespace("typed")
    assert wait_for(
        lambda: not olab.store.list("namespaces", field_selector="metadata.name=typed")[0], 20
    )
    assert wait_for(lambda: "typed" not in {p.name for p in olab.pod_list()}, 15)
