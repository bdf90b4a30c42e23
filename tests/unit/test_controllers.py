"""Controllers against the real Store, with a runtime that only writes Pod objects
(the node agents' side is covered by the root tests)."""

from __future__ import annotations

import logging
import threading
import time

from netlab.controllers.base import Controller, WorkQueue
from netlab.controllers.deployment import REVISION, DeploymentController, undo_target
from netlab.controllers.nodeagent import LEASE_NAMESPACE, lease_object
from netlab.controllers.nodelifecycle import NodeLifecycleController, node_ready
from netlab.errors import ApiError
from netlab.plan.scheduler import template_hash
from netlab.store import Store


def test_work_queue_dedupes_and_requeues_a_key_added_while_active():
    q = WorkQueue()
    q.add("a")
    q.add("a")
    q.add("b")
    assert len(q) == 2
    key = q.get(timeout=0)
    assert key == "a"
    q.add("a")  # while "a" is being reconciled
    assert q.get(timeout=0) == "b"
    q.done("b")
    assert q.get(timeout=0) is None  # "a" waits until its reconcile is done
    q.done("a")
    assert q.get(timeout=0) == "a"


def test_work_queue_add_after_waits():
    now = [0.0]
    q = WorkQueue(clock=lambda: now[0])
    q.add_after("x", 5.0)
    assert q.get(timeout=0) is None
    now[0] = 5.0
    assert q.get(timeout=0) == "x"


class FakeRuntime:
    """Writes the Pod objects a node agent would, ready at once (or when told)."""

    def __init__(self, store: Store, ready: bool = True):
        self.store, self.ready, self.serial = store, ready, 0

    class Compiled:
        def __init__(self, obj):
            self.obj = obj
            self.pod_hash = template_hash(obj["spec"]["template"])

    def compile_deployment(self, obj):
        return self.Compiled(obj)

    def run_replicas(self, compiled, count, pending=()):
        meta = compiled.obj["metadata"]
        for _ in range(count):
            self.serial += 1
            self.store.create(
                {
                    "apiVersion": "v1",
                    "kind": "Pod",
                    "metadata": {
                        "name": f"{meta['name']}-{compiled.pod_hash}-{self.serial}",
                        "namespace": meta["namespace"],
                        "labels": {"pod-template-hash": compiled.pod_hash},
                        "ownerReferences": [
                            {"kind": "Deployment", "name": meta["name"], "controller": True}
                        ],
                    },
                    "spec": {},
                    "status": {
                        "conditions": [{"type": "Ready", "status": str(self.ready)}],
                    },
                }
            )

    def delete_pods(self, namespace, names):
        for name in names:
            self.store.delete("pods", namespace, name)


def deployment(replicas: int, version: str) -> dict:
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "web", "namespace": "default"},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": "web"}},
            "template": {"metadata": {"labels": {"app": "web", "v": version}}, "spec": {}},
            "strategy": {"rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}},
        },
    }


def wait(predicate, timeout=5.0) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if predicate():
            return True
        time.sleep(0.01)
    return predicate()


def test_deployment_controller_scales_rolls_out_and_keeps_history():
    store = Store()
    controller = DeploymentController(store, FakeRuntime(store))
    controller.start()
    try:
        store.apply(deployment(3, "v1"))

        def status():
            return store.get("deployments", "default", "web")["status"]

        assert wait(lambda: status().get("readyReplicas") == 3)
        obj = store.get("deployments", "default", "web")
        assert obj["metadata"]["annotations"][REVISION] == "1"
        store.apply(deployment(3, "v2"))
        v2 = template_hash(deployment(3, "v2")["spec"]["template"])
        assert wait(
            lambda: (
                status().get("updatedReplicas") == 3
                and status().get("replicas") == 3
                and status().get("observedGeneration") == 2
            )
        )
        pods, _ = store.list("pods")
        assert {p["metadata"]["labels"]["pod-template-hash"] for p in pods} == {v2}
        sets, _ = store.list("replicasets")
        assert sorted(rs["metadata"]["annotations"][REVISION] for rs in sets) == ["1", "2"]
        target = undo_target(sets, 2, None)
        assert target["metadata"]["annotations"][REVISION] == "1"
        # deleting the Deployment takes its pods and history along
        store.delete("deployments", "default", "web")
        assert wait(lambda: not store.list("pods")[0] and not store.list("replicasets")[0])
    finally:
        controller.stop()


class RecordingNodes:
    def __init__(self):
        self.calls = []
        self.event = threading.Event()

    def node_lost(self, name):
        self.calls.append(("lost", name))
        self.event.set()

    def node_back(self, name):
        self.calls.append(("back", name))
        self.event.set()


def test_node_lifecycle_marks_a_silent_node_not_ready_and_back():
    store = Store()
    now = [1000.0]
    store.apply(
        {
            "apiVersion": "v1",
            "kind": "Node",
            "metadata": {"name": "n1"},
            "spec": {},
            "status": {"conditions": [{"type": "Ready", "status": "True"}]},
        }
    )
    store.apply(lease_object("n1", now[0], 1.0))
    nodes = RecordingNodes()
    controller = NodeLifecycleController(store, nodes, grace=1.0, clock=lambda: now[0])
    controller.start()
    try:
        time.sleep(0.1)
        assert nodes.calls == []
        now[0] += 1.5  # silence past the grace period
        controller.queue.add("n1")
        assert wait(lambda: ("lost", "n1") in nodes.calls)
        node = store.get("nodes", None, "n1")
        assert not node_ready(node)
        assert node["spec"]["taints"][0]["key"] == "node.kubernetes.io/unreachable"
        store.apply(lease_object("n1", now[0], 1.0))  # it heartbeats again
        assert wait(lambda: ("back", "n1") in nodes.calls)
        assert node_ready(store.get("nodes", None, "n1"))
        assert "taints" not in store.get("nodes", None, "n1")["spec"]
        assert store.get("leases", LEASE_NAMESPACE, "n1")["spec"]["holderIdentity"] == "n1"
    finally:
        controller.stop()


def test_no_eviction_while_the_store_was_refusing_writes():
    """Heartbeats lost in the control plane (etcd electing a leader) are not a dead node."""
    store = Store()
    now = [1000.0]
    for name in ("n1", "n2"):
        store.apply(
            {
                "apiVersion": "v1",
                "kind": "Node",
                "metadata": {"name": name},
                "spec": {},
                "status": {"conditions": [{"type": "Ready", "status": "True"}]},
            }
        )
    store.apply(lease_object("n1", now[0], 1.0))
    store.apply(lease_object("n2", now[0] + 1.5, 1.0))  # n2 renewed again, n1 not yet
    nodes = RecordingNodes()
    controller = NodeLifecycleController(store, nodes, grace=1.0, clock=lambda: now[0])
    now[0] += 1.5
    store.last_write_failure = now[0] - 0.5  # a write failed half a second ago
    assert controller.reconcile("n1") == 1.0  # looked at again later, nothing done
    assert nodes.calls == [] and node_ready(store.get("nodes", None, "n1"))
    store.last_write_failure = now[0] - 5.0  # long enough ago: n1 really is silent
    controller.reconcile("n1")
    assert nodes.calls == [("lost", "n1")]


def test_node_agents_post_a_ready_nodes_status_every_5_minutes():
    from netlab import nodeinfo
    from netlab.controllers.nodeagent import STATUS_REPORT, NodeAgents
    from netlab.objects import timestamp

    store, now = Store(), [1000.0]
    for name, ready in (("n1", True), ("n2", False)):
        conditions = nodeinfo.conditions(ready, timestamp(now[0]), timestamp(now[0]))
        store.apply(
            {"apiVersion": "v1", "kind": "Node", "metadata": {"name": name},
             "spec": {}, "status": {"conditions": conditions}}
        )  # fmt: skip
    agents = NodeAgents(store, lambda: ["n1", "n2"], 0.2, 1.0, lambda: now[0])

    def heartbeats(name):
        return {
            c["lastHeartbeatTime"] for c in store.get("nodes", None, name)["status"]["conditions"]
        }

    agents.beat()
    now[0] += STATUS_REPORT - 1
    agents.beat()
    assert heartbeats("n1") == {timestamp(1000.0)}  # nothing to post yet
    now[0] += 1
    agents.beat()
    assert heartbeats("n1") == {timestamp(now[0])}
    assert heartbeats("n2") == {timestamp(1000.0)}  # NotReady: the lifecycle controller's to mend


def test_an_object_deleted_during_a_reconcile_is_looked_at_again_without_an_error(caplog):
    """A 404 from the store means the object went meanwhile: the key is reconciled again
    (and then sees it gone), logged as information, not as a failure with a traceback."""
    calls: list[str] = []

    class Racing(Controller):
        name = "racing"

        def all_keys(self):
            return ["web"]

        def reconcile(self, key):
            calls.append(key)
            if len(calls) == 1:
                raise ApiError(404, 'deployments.apps "web" not found')
            return None

    controller = Racing(Store())
    with caplog.at_level(logging.INFO, logger="netlab.controllers.base"):
        controller.start()
        try:
            deadline = time.monotonic() + 5
            while len(calls) < 2 and time.monotonic() < deadline:
                time.sleep(0.01)
        finally:
            controller.stop()
    assert calls == ["web", "web"]
    assert [r.levelno for r in caplog.records] == [logging.INFO]
    assert "not found" in caplog.records[0].getMessage()
