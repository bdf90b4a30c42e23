"""The objects the lab serves, read through the kubernetes Python client's typed models
(which refuse an object that lacks a required field); the root tests read them from a
running lab. Also what a Node says of its machine, and a Pod's status as clients read it."""

from __future__ import annotations

import json
import os
import uuid

import kubernetes
import pytest

from netlab import nodeinfo, objects
from netlab.nodeinfo import Machine
from netlab.plan import plan_lab
from netlab.spec import LabBuilder

MACHINE = Machine(
    "6.1.0-18-amd64", "Debian GNU/Linux 12 (bookworm)", "amd64", 2, 4_000_000, 50_000_000, "b0"
)


def typed(obj: dict, model: str):
    """The object as the client's typed API returns it (ValueError if it would refuse)."""
    client = kubernetes.client.ApiClient()
    return client.deserialize(json.dumps(obj), model, "application/json")


@pytest.fixture(scope="module")
def plan():
    b = LabBuilder("models")
    b.add_rack("r1", "192.168.1.0/24")
    b.add_node("n1", rack="r1")
    b.add_pod(
        "web", command=["sleep", "infinity"], ports=[8080],
        readiness_probe={"httpGet": {"path": "/healthz", "port": 8080}, "periodSeconds": 2},
    )  # fmt: skip
    return plan_lab(b.build())


def test_a_node_has_every_field_the_client_requires_and_real_resources(plan):
    node = plan.nodes[0]
    obj = objects.node_object(node, plan.overlay, "models", MACHINE)
    typed_node = typed(obj, "V1Node")
    info = typed_node.status.node_info
    assert (info.kernel_version, info.os_image, info.architecture) == (
        "6.1.0-18-amd64", "Debian GNU/Linux 12 (bookworm)", "amd64",
    )  # fmt: skip
    assert info.container_runtime_version.startswith(("runc://", "crun://"))
    assert len(info.machine_id) == 32 and uuid.UUID(info.system_uuid) and uuid.UUID(info.boot_id)
    assert typed_node.status.capacity["cpu"] == "2"
    assert typed_node.status.capacity["memory"] == "4000000Ki"
    assert typed_node.status.allocatable["memory"] == f"{4_000_000 - 102_400}Ki"
    assert typed_node.status.capacity["pods"] == typed_node.status.allocatable["pods"]
    conditions = {c.type: c for c in typed_node.status.conditions}
    assert set(conditions) == {"Ready", "MemoryPressure", "DiskPressure", "PIDPressure"}
    assert conditions["Ready"].status == "True"
    assert all(c.last_heartbeat_time.year >= 2024 for c in conditions.values())


def test_node_ids_are_the_nodes_own_and_stable():
    one = nodeinfo.node_ids("lab", "n1", "boot-a")
    assert one == nodeinfo.node_ids("lab", "n1", "boot-a")
    assert one["machineID"] != nodeinfo.node_ids("lab", "n2", "boot-a")["machineID"]
    assert one["machineID"] != nodeinfo.node_ids("other", "n1", "boot-a")["machineID"]
    rebooted = nodeinfo.node_ids("lab", "n1", "boot-b")
    assert rebooted["machineID"] == one["machineID"] and rebooted["bootID"] != one["bootID"]


def test_the_host_machine_is_read_from_the_kernel():
    host = Machine.of_host()
    assert host.kernel == os.uname().release
    assert host.cpus >= 1 and host.memory_kib > 0 and host.storage_kib > 0
    assert host.architecture not in ("x86_64", "aarch64")  # Go's names: amd64, arm64


def test_a_silent_node_has_every_condition_unknown_since_its_last_heartbeat():
    lost = nodeinfo.conditions(False, "2026-01-02T03:04:05Z", "2026-01-02T03:03:00Z")
    assert {c["status"] for c in lost} == {"Unknown"}
    assert {c["lastHeartbeatTime"] for c in lost} == {"2026-01-02T03:03:00Z"}
    assert {c["lastTransitionTime"] for c in lost} == {"2026-01-02T03:04:05Z"}


def pod(plan, status: objects.PodStatus, deleting: bool = False):
    web = next(p for p in plan.pods if p.name == "web")  # bare: the store adds owners' uids
    return objects.pod_object(web, status, "192.168.1.2", "r1", deleting)


def test_a_pods_containers_are_ready_only_as_its_ready_condition_says(plan):
    running = objects.ContainerState("web", "running", started_at="2026-01-02T03:04:05Z")
    ready = objects.PodStatus([running], "2026-01-02T03:04:05Z", True, True)
    for status, deleting, expected in (
        (ready, False, True),
        (objects.PodStatus([running], None, True, False), False, False),  # probe not passing
        (ready, True, False),  # Terminating: not 1/1
    ):
        obj = typed(pod(plan, status, deleting), "V1Pod")
        (condition,) = [c for c in obj.status.conditions if c.type == "Ready"]
        assert condition.status == str(expected)
        assert [c.ready for c in obj.status.container_statuses] == [expected]


def test_a_pod_keeps_its_templates_readiness_probe(plan):
    obj = typed(pod(plan, objects.PodStatus([objects.ContainerState("web")])), "V1Pod")
    probe = obj.spec.containers[0].readiness_probe
    assert (probe.http_get.path, probe.http_get.port, probe.period_seconds) == ("/healthz", 8080, 2)


def test_a_terminated_container_says_when_it_ran_and_its_last_run_survives_a_restart(plan):
    state = objects.ContainerState("web", "running", started_at="2026-01-02T03:04:05Z")
    state.end(-9, "2026-01-02T03:04:09Z")
    ended = typed(pod(plan, objects.PodStatus([state], None, True)), "V1Pod")
    terminated = ended.status.container_statuses[0].state.terminated
    assert (terminated.exit_code, terminated.reason) == (137, "Error")
    assert (terminated.started_at.second, terminated.finished_at.second) == (5, 9)
    assert ended.status.phase == "Failed"
    state.last, state.state, state.reason = state.terminated(), "waiting", "CrashLoopBackOff"
    waiting = typed(pod(plan, objects.PodStatus([state], None, True)), "V1Pod")
    last = waiting.status.container_statuses[0].last_state.terminated
    assert last.exit_code == 137 and last.finished_at.second == 9
    # and a supervisor taking the pod over reads it all back
    template = next(p for p in plan.pods if p.name == "web").template
    back = objects.pod_status_of(pod(plan, objects.PodStatus([state], None, True)), template)
    assert back.containers[0].last == state.last


@pytest.mark.parametrize(
    ("states", "deleting", "expected"),
    [
        ([("running", True)], False, ("Running", 1)),
        ([("running", True)], True, ("Terminating", 0)),  # not 1/1 once Terminating
        ([("running", False)], False, ("Running", 0)),  # probe not passing yet
        ([("waiting", False)], False, ("ContainerCreating", 0)),
        ([("crash", False)], False, ("CrashLoopBackOff", 0)),
        ([("crash", False)], True, ("Terminating", 0)),
        ([("exit0", False)], False, ("Completed", 0)),
        ([("exit3", False)], False, ("Error", 0)),
        ([("exit0", False), ("running", True)], False, ("Running", 1)),
    ],
)
def test_kubectls_status_column_as_its_printer_works_it_out(plan, states, deleting, expected):
    from netlab.tables import pod_status_text

    containers = []
    for i, (kind, _) in enumerate(states):
        state = objects.ContainerState(f"c{i}", started_at="2026-01-02T03:04:05Z")
        if kind == "running":
            state.state = "running"
        elif kind == "crash":
            state.reason = "CrashLoopBackOff"
        elif kind.startswith("exit"):
            state.end(int(kind[4:]), "2026-01-02T03:04:09Z")
        containers.append(state)
    probes = all(ready for kind, ready in states if kind == "running")
    obj = pod(plan, objects.PodStatus(containers, None, True, probes), deleting)
    if len(states) > 1:  # containers ready on their own (the lab's pods are ready as one)
        for entry, (_, ready) in zip(obj["status"]["containerStatuses"], states, strict=True):
            entry["ready"] = ready
    assert pod_status_text(obj) == expected


def test_a_node_the_lifecycle_controller_found_silent_still_reads(plan):
    from netlab.controllers.nodelifecycle import NodeLifecycleController
    from netlab.store import Store

    store = Store()
    store.apply(objects.node_object(plan.nodes[0], plan.overlay, "models", MACHINE))
    controller = NodeLifecycleController(store, None, 1.0, lambda: 2_000_000_000.0)
    controller._set_ready(store.get("nodes", None, "n1"), False, 2_000_000_000.0)
    node = typed(store.get("nodes", None, "n1"), "V1Node")
    assert {c.status for c in node.status.conditions} == {"Unknown"}
    assert [t.key for t in node.spec.taints] == ["node.kubernetes.io/unreachable"]
    assert node.spec.taints[0].time_added.year == 2033
