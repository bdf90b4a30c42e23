"""metrics.k8s.io/v1beta1 served by the lab API as metrics-server serves it: in
discovery, listed and got for pods (all namespaces, one, by label) and nodes, with
the objects' labels, a NotFound Status for a missing one, and kubectl's Table."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

from aiohttp.test_utils import TestClient, TestServer

from netlab.apiserver.app import make_app
from netlab.node.metrics import node_metrics_object, pod_metrics_object
from netlab.store import Store

CREATED = "2026-12-06T10:00:05Z"
T0 = datetime(2026, 12, 6, 10, 0, 0, tzinfo=UTC)


def _pod(namespace: str, name: str, labels: dict[str, str]) -> dict:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": namespace, "labels": labels},
        "spec": {"containers": [{"name": "app", "image": "busybox"}], "nodeName": "n1"},
    }


def _node(name: str, labels: dict[str, str]) -> dict:
    return {"apiVersion": "v1", "kind": "Node", "metadata": {"name": name, "labels": labels}}


class Actions:
    """The lab's side: metrics for web-1, web-2 and db-0, none yet for the new pod."""

    def __init__(self) -> None:
        self.pods = [
            pod_metrics_object(ns, name, CREATED, T0, 10.0, [("app", cpu, 4 << 20)])
            for ns, name, cpu in (
                ("default", "web-1", 5_000_000),
                ("default", "web-2", 7_000_000),
                ("shop", "db-0", 1_000_000_000),
                ("default", "deleted", 1),  # sampled, gone from the store since
            )
        ]
        self.nodes = [
            node_metrics_object("n1", CREATED, T0, 10.0, 12_000_000, 8 << 20),
            node_metrics_object("n2", CREATED, T0, 10.0, 0, 0),
        ]

    def pod_metrics(self) -> list[dict]:
        return self.pods

    async def node_metrics(self) -> list[dict]:  # the API takes either kind of call
        return self.nodes

    async def shutdown(self, leave: bool = False) -> None:
        pass


def _store() -> Store:
    store = Store()
    for ns in ("default", "shop"):
        store.apply({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}})
    store.apply(_pod("default", "web-1", {"app": "web"}))
    store.apply(_pod("default", "web-2", {"app": "web", "track": "canary"}))
    store.apply(_pod("default", "new", {"app": "new"}))
    store.apply(_pod("shop", "db-0", {}))
    store.apply(_node("n1", {"rack": "r1"}))
    store.apply(_node("n2", {"rack": "r2"}))
    store.apply(_node("n3", {"rack": "r2"}))  # no metrics for it
    return store


async def _calls(actions: object, calls: list[tuple[str, dict]]) -> list[tuple[int, object]]:
    out = []
    async with TestClient(TestServer(make_app(_store(), actions))) as client:
        for path, headers in calls:
            response = await client.get(path, headers=headers)
            out.append((response.status, await response.json()))
    return out


def _run(calls: list[tuple[str, dict]], actions: object | None = None):
    return asyncio.run(_calls(actions or Actions(), calls))


BASE = "/apis/metrics.k8s.io/v1beta1"


def test_discovery_has_the_group_and_its_resources() -> None:
    (groups, group, resources, legacy, slashed) = _run(
        [("/apis", {}), ("/apis/metrics.k8s.io", {}), (BASE, {}), ("/api", {}), ("/apis/", {})]
    )
    assert groups[0] == 200
    assert slashed == groups  # the Python client's ApisApi asks for /apis/
    entry = {"groupVersion": "metrics.k8s.io/v1beta1", "version": "v1beta1"}
    listed = {g["name"]: g for g in groups[1]["groups"]}
    assert listed["metrics.k8s.io"] == {
        "name": "metrics.k8s.io",
        "versions": [entry],
        "preferredVersion": entry,
    }
    assert "apps" in listed  # the store's groups stay
    assert group[1]["kind"] == "APIGroup" and group[1]["preferredVersion"] == entry
    assert resources[1]["kind"] == "APIResourceList"
    assert resources[1]["groupVersion"] == "metrics.k8s.io/v1beta1"
    assert {(r["name"], r["kind"], r["namespaced"], tuple(r["verbs"])) for r in resources[1]["resources"]} == {
        ("pods", "PodMetrics", True, ("get", "list")),
        ("nodes", "NodeMetrics", False, ("get", "list")),
    }  # fmt: skip
    assert legacy[0] == 200


def _names(answer) -> list[str]:
    status, body = answer
    assert status == 200, body
    assert body["kind"] in ("PodMetricsList", "NodeMetricsList")
    assert body["apiVersion"] == "metrics.k8s.io/v1beta1"
    return [f"{i['metadata'].get('namespace', '')}/{i['metadata']['name']}" for i in body["items"]]


def test_pod_metrics_lists_and_gets() -> None:
    everywhere, default, selected, one, missing, no_metrics = _run(
        [
            (f"{BASE}/pods", {}),
            (f"{BASE}/namespaces/default/pods", {}),
            (f"{BASE}/namespaces/default/pods?labelSelector=app%3Dweb,track", {}),
            (f"{BASE}/namespaces/default/pods/web-1", {}),
            (f"{BASE}/namespaces/default/pods/nosuch", {}),
            (f"{BASE}/namespaces/default/pods/new", {}),
        ]
    )
    # store pods that have metrics: not the new one, not the deleted one
    assert _names(everywhere) == ["default/web-1", "default/web-2", "shop/db-0"]
    assert _names(default) == ["default/web-1", "default/web-2"]
    assert _names(selected) == ["default/web-2"]
    assert one[0] == 200
    assert one[1] == {
        "kind": "PodMetrics",
        "apiVersion": "metrics.k8s.io/v1beta1",
        "metadata": {
            "name": "web-1",
            "namespace": "default",
            "creationTimestamp": CREATED,
            "labels": {"app": "web"},
        },
        "timestamp": "2026-12-06T10:00:00Z",
        "window": "10s",
        "containers": [{"name": "app", "usage": {"cpu": "5m", "memory": "4Mi"}}],
    }
    for answer, name in ((missing, "nosuch"), (no_metrics, "new")):
        assert answer == (
            404,
            {
                "kind": "Status",
                "apiVersion": "v1",
                "metadata": {},
                "status": "Failure",
                "message": f'podmetrics.metrics.k8s.io "default/{name}" not found',
                "reason": "NotFound",
                "details": {"name": f"default/{name}", "group": "metrics.k8s.io", "kind": "podmetrics"},
                "code": 404,
            },
        )  # fmt: skip


def test_node_metrics_lists_and_gets() -> None:
    listed, selected, one, missing, watch = _run(
        [
            (f"{BASE}/nodes", {}),
            (f"{BASE}/nodes?labelSelector=rack%3Dr2", {}),
            (f"{BASE}/nodes/n1", {}),
            (f"{BASE}/nodes/n3", {}),
            (f"{BASE}/nodes?watch=true", {}),
        ]
    )
    assert _names(listed) == ["/n1", "/n2"]
    assert _names(selected) == ["/n2"]
    assert one[1]["kind"] == "NodeMetrics"
    assert one[1]["metadata"]["labels"] == {"rack": "r1"}
    assert one[1]["usage"] == {"cpu": "12m", "memory": "8Mi"}
    assert missing[0] == 404
    assert missing[1]["message"] == 'nodemetrics.metrics.k8s.io "n3" not found'
    assert watch[0] == 405 and watch[1]["reason"] == "MethodNotAllowed"


def test_a_lab_without_metrics_lists_none() -> None:
    class Bare:
        async def shutdown(self, leave: bool = False) -> None:
            pass

    pods, nodes, one = _run(
        [(f"{BASE}/pods", {}), (f"{BASE}/nodes", {}), (f"{BASE}/nodes/n1", {})], Bare()
    )
    assert _names(pods) == [] and _names(nodes) == []
    assert one[0] == 404


def test_kubectl_get_podmetrics_as_a_table() -> None:
    accept = {"Accept": "application/json;as=Table;v=v1;g=meta.k8s.io,application/json"}
    ((status, table),) = _run([(f"{BASE}/namespaces/default/pods", accept)])
    assert status == 200 and table["kind"] == "Table"
    assert [c["name"] for c in table["columnDefinitions"]] == ["Name", "CPU", "Memory", "Window"]
    assert [r["cells"] for r in table["rows"]] == [
        ["web-1", "5m", "4Mi", "10s"],
        ["web-2", "7m", "4Mi", "10s"],
    ]
