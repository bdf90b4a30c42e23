"""Pods' QoS classes by Kubernetes' rules (pkg/apis/core/helper/qos and its tests),
from containers as a manifest gives them (requests defaulted to limits), and the
class as a Pod's status publishes it."""

from __future__ import annotations

import json

import pytest

from netlab.objects import PodStatus, pending_pod_object, pod_object
from netlab.plan import plan_lab
from netlab.spec.compute import BEST_EFFORT, BURSTABLE, GUARANTEED, pod_requests, qos_class
from netlab.spec.load import parse_lab, parse_manifests
from tests.unit.test_spec import TWO_RACKS


def containers(*resources: dict | None):
    """A Pod's containers, one per `resources` mapping (None: none given), parsed."""
    items = [
        {"name": f"c{i}", "command": ["sleep", "1"], **({"resources": r} if r else {})}
        for i, r in enumerate(resources)
    ]
    manifest = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "p"},
        "spec": {"containers": items},
    }
    (pod,) = parse_manifests(json.dumps(manifest), parse_lab(TWO_RACKS)).pods
    return pod.template.containers


def both(cpu: str, memory: str) -> dict:
    return {"cpu": cpu, "memory": memory}


GUARANTEED_C = {"requests": both("100m", "100Mi"), "limits": both("100m", "100Mi")}
BURSTABLE_C = {"requests": both("10m", "100Mi"), "limits": both("100m", "200Mi")}


@pytest.mark.parametrize(
    "resources, expected",
    [
        ([GUARANTEED_C], GUARANTEED),
        ([GUARANTEED_C, GUARANTEED_C], GUARANTEED),
        ([None], BEST_EFFORT),
        ([None, None], BEST_EFFORT),
        ([None, BURSTABLE_C], BURSTABLE),
        ([None, GUARANTEED_C], BURSTABLE),
        ([BURSTABLE_C], BURSTABLE),
        ([BURSTABLE_C, GUARANTEED_C], BURSTABLE),
        # requests and no limits
        ([{"requests": both("100m", "100Mi")}], BURSTABLE),
        # a limit alone is the request too (kube-apiserver's default): Guaranteed
        ([{"limits": both("700m", "200Mi")}], GUARANTEED),
        # only memory guaranteed
        ([{"requests": {"memory": "100Mi"}, "limits": {"memory": "100Mi"}}], BURSTABLE),
        # the pod's requests equal its limits in sum, but one container has no limit
        (
            [
                {"requests": both("100m", "100Mi"), "limits": both("200m", "200Mi")},
                {"requests": both("100m", "100Mi")},
            ],
            BURSTABLE,
        ),
        # zero counts as not given
        ([{"requests": both("0", "0")}], BEST_EFFORT),
        ([{"limits": both("0", "0")}], BEST_EFFORT),
        # other resources play no part
        (
            [
                {
                    "requests": {"hugepages-2Mi": "2Mi", "cpu": "0"},
                    "limits": {"hugepages-2Mi": "2Mi"},
                }
            ],
            BEST_EFFORT,
        ),
        ([{"limits": {"example.com/gpu": "1"}}], BEST_EFFORT),
        (
            [
                {
                    "requests": both("100m", "100Mi"),
                    "limits": {**both("100m", "100Mi"), "example.com/gpu": "1"},
                }
            ],
            GUARANTEED,
        ),
        ([{"limits": {**both("1", "1Gi"), "hugepages-2Mi": "4Mi"}}], GUARANTEED),
        # the same amounts written differently are equal
        ([{"requests": both("0.5", "1Gi"), "limits": both("500m", "1024Mi")}], GUARANTEED),
    ],
)
def test_qos_class(resources, expected):
    assert qos_class(containers(*resources)) == expected


def test_requests_sum_over_containers():
    found = containers(GUARANTEED_C, BURSTABLE_C, None, {"limits": both("1", "1Gi")})
    assert pod_requests(found) == (100 + 10 + 1000, (100 + 100 + 1024) * 2**20)


LAB = (
    TWO_RACKS
    + """\
---
apiVersion: v1
kind: Pod
metadata: {name: sized}
spec:
  containers:
    - name: app
      command: [sleep, infinity]
      resources:
        limits: {cpu: 500m, memory: 128Mi, ephemeral-storage: 1Gi}
        requests: {cpu: "0.25"}
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: web}
spec:
  replicas: 1
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec:
      containers:
        - name: web
          command: [sleep, infinity]
          resources: {limits: {cpu: "1", memory: 1Gi}}
"""
)


def test_pods_publish_their_class_and_resources_as_written():
    spec = parse_lab(LAB)
    plan = plan_lab(spec)
    sized = next(p for p in plan.pods if p.name == "sized")
    obj = pod_object(sized, PodStatus(), "192.168.1.2")
    assert obj["status"]["qosClass"] == BURSTABLE
    (container,) = obj["spec"]["containers"]
    # the manifest's own text; the request it lacked is its limit's, as kube-apiserver
    # defaults it
    assert container["resources"] == {
        "limits": {"cpu": "500m", "memory": "128Mi", "ephemeral-storage": "1Gi"},
        "requests": {"cpu": "0.25", "memory": "128Mi", "ephemeral-storage": "1Gi"},
    }
    (deployment,) = spec.deployments
    pending = pending_pod_object(deployment, "web-x", "hash", "0/3 nodes are available")
    assert pending["status"]["qosClass"] == GUARANTEED
