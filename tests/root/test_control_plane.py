"""The control plane on a real lab: controllers heal it under a steady client load.

A client pod asks the Service's VIP every 50 ms (bounded: it stops by itself) and
records each answer; the error window is the longest run of failed requests."""

from __future__ import annotations

import dataclasses
import json
import socket
import time

import pytest

from netlab import loadgen, objects, rollouts
from netlab.client import LabClient
from netlab.controllers.nodelifecycle import node_ready
from netlab.journal import Journal
from netlab.lab import Lab
from netlab.lab_workloads import DRAIN_MAX_SECONDS, DRAIN_SECONDS, STOP_GRACE_SECONDS
from netlab.paths import socket_path
from netlab.realize import netns
from netlab.store import Store
from tests.root.conftest import two_rack_builder, wait_for

pytestmark = pytest.mark.root

ZONE = "cluster.local"
SERVE = [
    "python3",
    "-c",
    "import http.server, os, signal, socketserver\n"
    "signal.signal(signal.SIGTERM, lambda *_: os._exit(0))\n"  # as most servers: gone at once
    "class H(http.server.BaseHTTPRequestHandler):\n"
    "    def do_GET(self):\n"
    "        body = (os.environ['HOSTNAME'] + ' ' + os.environ.get('VERSION', 'v1') + '\\n').encode()\n"
    "        self.send_response(200); self.send_header('Content-Length', str(len(body)))\n"
    "        self.end_headers(); self.wfile.write(body)\n"
    "    def log_message(self, *a): pass\n"
    "socketserver.ThreadingTCPServer.allow_reuse_address = True\n"
    "http.server.ThreadingHTTPServer(('', 8080), H).serve_forever()\n",
]


def Load(lab: Lab, url: str) -> loadgen.Load:  # noqa: N802 (reads like the class)
    """The bounded client in pod `a` (on n1)."""
    return loadgen.Load(lab.pod("a").netns, url, seconds=30.0)


def error_window(answers) -> float:
    return loadgen.error_window(answers)


def dig(lab: Lab, name: str) -> set[str]:
    out = lab.exec("a", ["dig", "+short", "+time=1", "+tries=1", name]).stdout
    return {line for line in out.split() if line[:1].isdigit()}


@pytest.fixture(scope="module", params=["embedded", "etcd"])
def clab(request):
    """The same lab twice: objects in the supervisor's memory, then in a 3-member etcd
    cluster that runs inside the lab (on n1, n3, n2)."""
    b = two_rack_builder("tctl" if request.param == "embedded" else "tctle")
    b.add_deployment("web", replicas=3, command=SERVE, ports=[8080])
    b.add_service("web", selector={"app": "web"}, ports=[(80, 8080)])
    b.add_service("web-headless", selector={"app": "web"}, ports=[(8080, 8080)], headless=True)
    spec = b.build()
    timing = dataclasses.replace(spec.control_plane, job_backoff=0.2)  # Kubernetes: 10 s
    with Lab(dataclasses.replace(spec, store=request.param, control_plane=timing)) as lab:
        lab.settle()
        yield lab


def wait_converged(lab: Lab, replicas: int = 3, timeout: float = 20.0) -> None:
    def done() -> bool:
        dep = lab.store.get("deployments", "default", "web")
        ready, line = rollouts.rollout_state(dep)
        return (
            ready
            and len(lab.ready_pods("web")) == replicas
            and len(lab.endpoint_ips("web")) == replicas
        )

    assert wait_for(done, timeout), lab.store.get("deployments", "default", "web")["status"]


def test_a_deleted_pod_is_replaced_and_in_dns_within_2s(clab):
    wait_converged(clab)
    vip = clab.service_vip("web")
    load = Load(clab, f"http://{vip}/")
    time.sleep(0.5)
    victim = sorted(clab.ready_pods("web"), key=lambda p: p.name)[0]
    started = time.monotonic()
    clab.delete_pod(victim.name)
    # a replacement is Running, ready, in the Endpoints and in DNS within 2 s
    assert wait_for(
        lambda: (
            len(ready := {str(p.address.ip) for p in clab.ready_pods("web")}) == 3
            and clab.endpoint_ips("web") == ready
            and dig(clab, f"web-headless.default.svc.{ZONE}") == ready
        ),
        2.0,
    )
    healed = time.monotonic() - started
    replacement = {p.name for p in clab.ready_pods("web")} - {victim.name}
    results = load.stop()
    window = error_window(results)
    print(
        f"\npod deletion: replacement serving after {healed:.2f} s; client error window {window:.2f} s"
    )
    assert victim.name not in replacement and len(replacement) == 3
    assert window <= 2.0, [r for r in results if not r.ok]
    if clab.spec.store == "embedded":  # what the store knows is on disk, and reads back
        restored = Store.restore(Journal(clab.run_dir / "store"))
        names = {p["metadata"]["name"] for p in restored.list("pods")[0]}
        assert names == {p["metadata"]["name"] for p in clab.store.list("pods")[0]}
        assert victim.name not in names


def test_node_failure_moves_pods_and_drops_its_endpoints(clab):
    wait_converged(clab)
    vip = clab.service_vip("web")
    victim_node = next(p.node for p in clab.ready_pods("web") if p.node != "n1")
    doomed = {str(p.address.ip) for p in clab.ready_pods("web") if p.node == victim_node}
    load = Load(clab, f"http://{vip}/")
    time.sleep(0.5)
    failed_at = time.monotonic()
    clab.fail_node(victim_node)
    # NotReady after the grace period; pods evicted and started on other nodes
    assert wait_for(lambda: not node_ready(clab.store.get("nodes", None, victim_node)), 5.0)
    assert wait_for(
        lambda: (
            len(clab.ready_pods("web")) == 3
            and all(p.node != victim_node for p in clab.ready_pods("web"))
            and not doomed & clab.endpoint_ips("web")
        ),
        10.0,
    )
    healed = time.monotonic() - failed_at
    assert wait_for(
        lambda: (
            (answer := dig(clab, f"web-headless.default.svc.{ZONE}")) == clab.endpoint_ips("web")
            and len(answer) == 3
            and not doomed & answer
        ),
        3.0,
    )
    results = load.stop()
    window = error_window(results)
    print(
        f"\nnode {victim_node} failed: all pods serving elsewhere after {healed:.2f} s; "
        f"client error window {window:.2f} s (grace period {clab.spec.control_plane.node_grace} s)"
    )
    assert window < 5.0
    assert any(r.ok for r in results[-5:])  # serving again at the end
    node = clab.store.get("nodes", None, victim_node)
    assert any(t["key"] == "node.kubernetes.io/unreachable" for t in node["spec"]["taints"])
    lease = clab.nodes[victim_node].pod_cidr
    for other in clab.nodes:
        if other != victim_node:  # its overlay lease is withdrawn everywhere
            assert str(lease) not in clab.node_exec(other, ["ip", "route"]).stdout
    # recovered: Ready again, the lease comes back, and it takes new pods
    clab.recover_node(victim_node)
    assert wait_for(lambda: node_ready(clab.store.get("nodes", None, victim_node)), 3.0)
    assert wait_for(lambda: str(lease) in clab.node_exec("n1", ["ip", "route"]).stdout, 3.0)
    assert "taints" not in clab.store.get("nodes", None, victim_node)["spec"]
    wait_converged(clab)


def test_rolling_update_under_load_keeps_enough_ready_and_fails_nothing(clab):
    wait_converged(clab)
    vip = clab.service_vip("web")
    dep = clab.store.get("deployments", "default", "web")
    manifest = objects.manifest_of(dep)
    template = manifest["spec"]["template"]
    template["metadata"]["labels"]["version"] = "v2"
    template["spec"]["containers"][0]["env"] = [{"name": "VERSION", "value": "v2"}]
    manifest["spec"]["strategy"] = {
        "type": "RollingUpdate",
        "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0},
    }
    load = Load(clab, f"http://{vip}/")
    time.sleep(0.5)
    fewest = [3]
    timeline: list[tuple[float, set[str]]] = [(time.time(), clab.endpoint_ips("web"))]
    assert clab.apply_text(json.dumps(manifest))[0]["action"] == "configured"
    applied = time.time()

    def done() -> bool:
        ips = clab.endpoint_ips("web")
        if ips != timeline[-1][1]:
            timeline.append((time.time(), ips))
        fewest[0] = min(fewest[0], len(ips))
        ok, _ = rollouts.rollout_state(clab.store.get("deployments", "default", "web"))
        return ok

    assert wait_for(done, 30.0, interval=0.01)
    time.sleep(0.5)
    results = load.stop()
    failed = [r for r in results if not r.ok]
    versions = [r.body.split()[-1] for r in results if r.ok]
    print(
        f"\nrolling update: {len(results)} requests, {len(failed)} failed, fewest ready {fewest[0]}"
    )
    # what failed, and the endpoints around it, in seconds from the apply
    assert not failed, (
        [(round(r.at - applied, 3), r.body) for r in failed],
        [(round(at - applied, 3), sorted(ips)) for at, ips in timeline],
    )
    assert fewest[0] >= 3  # replicas - maxUnavailable
    assert versions[0] == "v1" and versions[-1] == "v2"
    assert {p.labels.get("version") for p in clab.ready_pods("web")} == {"v2"}
    # the history has both templates; undo goes back to v1 through the API (JSON patch)
    client = LabClient(socket_path(clab.run_dir))
    assert "rolled back" in rollouts.undo(client, "web", "default", None)
    wait_converged(clab, timeout=30)
    assert {p.labels.get("version") for p in clab.ready_pods("web")} == {None}
    revisions = rollouts.history(client, "web", "default")
    assert revisions.count("\n") >= 3, revisions


def test_a_connection_made_before_its_pod_was_scaled_away_is_answered(clab):
    """A client that connected through the VIP but had not sent its request yet when the
    Deployment scaled down (a client the CPU did not run for a moment) is answered by
    the draining pod, not reset; the pods then stop without waiting for the limit."""
    wait_converged(clab)
    vip = str(clab.service_vip("web"))
    with netns.entered(netns.netns_path(clab.pod("a").netns)):
        sock = socket.create_connection((vip, 80), timeout=5)
    try:
        clab.scale("web", 0)
        assert wait_for(lambda: not clab.endpoint_ips("web"), 5.0)
        time.sleep(DRAIN_SECONDS + 0.15)  # past the time a pod used to be given
        sock.sendall(b"GET / HTTP/1.0\r\n\r\n")
        answer = b""
        while chunk := sock.recv(4096):
            answer += chunk
        answered = time.monotonic()
    finally:
        sock.close()
    assert answer.startswith(b"HTTP/1.0 200"), answer
    assert answer.split(b"\r\n\r\n", 1)[1].startswith(b"web-"), answer  # from a web pod
    assert wait_for(lambda: not [p for p in clab.pod_list() if p.owner == "web"], 5.0)
    assert time.monotonic() - answered < DRAIN_MAX_SECONDS + 1.0
    clab.scale("web", 3)
    wait_converged(clab)


def test_pods_that_ignore_sigterm_get_one_grace_period_and_the_lab_answers_meanwhile(clab):
    """A shell as a container's PID 1 ignores SIGTERM: each pod is killed after the grace
    period. Three such pods scaled away share one grace period, and the lab is not held
    while they wait: a call that needs it answers long before the period ends."""
    manifest = objects.manifest_of(clab.store.get("deployments", "default", "web"))
    manifest["metadata"] = {"name": "stubborn", "namespace": "default"}
    manifest["spec"]["selector"] = {"matchLabels": {"app": "stubborn"}}
    template = manifest["spec"]["template"]
    template["metadata"]["labels"] = {"app": "stubborn"}
    (container,) = template["spec"]["containers"]
    container.update(command=["sleep", "3600"], args=[], ports=[])
    clab.apply_text(json.dumps(manifest))
    try:
        assert wait_for(lambda: len(clab.ready_pods("stubborn")) == 3, 20)
        started = time.monotonic()
        clab.scale("stubborn", 0)
        waits = []

        def gone() -> bool:
            asked = time.monotonic()
            clab.node_list()  # needs the lab's lock
            waits.append(time.monotonic() - asked)
            return not [p for p in clab.pod_list() if p.owner == "stubborn"]

        assert wait_for(gone, 15, interval=0.05)
        took = time.monotonic() - started
    finally:
        clab.delete_deployment("stubborn")
    grace = STOP_GRACE_SECONDS  # SIGTERM to SIGKILL, for a pod a controller stops
    assert grace <= took < 2 * grace + DRAIN_MAX_SECONDS, took  # one period, not three
    assert max(waits) < grace, sorted(waits)[-3:]  # held a period per pod, it waited more


def test_scale_through_the_api_and_unschedulable_pods_say_why(clab):
    wait_converged(clab)
    client = LabClient(socket_path(clab.run_dir))
    for node in clab.nodes:
        clab.cordon(node)
    try:
        assert "scaled" in rollouts.scale(client, "deployment/web", 4, "default")
        reason = [""]

        def unschedulable() -> bool:
            conditions = clab.store.get("deployments", "default", "web")["status"]["conditions"]
            reason[0] = next(
                (c["message"] for c in conditions if c["type"] == "ReplicaFailure"), ""
            )
            return "0/4 nodes are available: 4 node(s) were unschedulable" in reason[0]

        assert wait_for(unschedulable, 5.0), reason
        assert len(clab.ready_pods("web")) == 3
        # the pod that fits nowhere is in the store, Pending, with the scheduler's reason
        pending = [
            p
            for p in clab.store.list("pods", "default")[0]
            if p["metadata"]["name"].startswith("web-") and p["status"].get("phase") == "Pending"
        ]
        assert len(pending) == 1
        scheduled = pending[0]["status"]["conditions"][0]
        assert (scheduled["type"], scheduled["status"], scheduled["reason"]) == (
            "PodScheduled",
            "False",
            "Unschedulable",
        )
        assert "4 node(s) were unschedulable" in scheduled["message"]
        waiting = pending[0]["metadata"]["name"]
    finally:
        for node in clab.nodes:
            clab.cordon(node, False)
    wait_converged(clab, replicas=4)
    # uncordoned: that very pod was placed and runs (no Pending object is left)
    assert waiting in {p.name for p in clab.ready_pods("web")}
    assert not [
        p for p in clab.store.list("pods", "default")[0] if p["status"].get("phase") == "Pending"
    ]
    scale = client._json("GET", "/apis/apps/v1/namespaces/default/deployments/web/scale")
    assert scale["kind"] == "Scale" and scale["spec"]["replicas"] == 4
    rollouts.scale(client, "deployment/web", 3, "default")
    wait_converged(clab, replicas=3)


def _job(name: str, command: str, **spec) -> str:
    return json.dumps(
        {
            "apiVersion": "batch/v1",
            "kind": "Job",
            "metadata": {"name": name},
            "spec": {
                **spec,
                "template": {
                    "spec": {
                        "restartPolicy": "Never",
                        "containers": [{"name": "run", "command": ["sh", "-c", command]}],
                    }
                },
            },
        }
    )


def test_jobs_complete_fail_on_backoff_and_die_at_their_deadline(clab):
    from netlab import tables

    clab.apply_text(_job("count", "echo counted", completions=3, parallelism=2))
    clab.apply_text(_job("broken", "exit 3", backoffLimit=2))
    clab.apply_text(_job("slow", "sleep 60", activeDeadlineSeconds=1))

    def condition(name: str) -> dict:
        status = clab.store.get("jobs", "default", name)["status"]
        done = [c for c in status.get("conditions", []) if c["type"] in ("Complete", "Failed")]
        return done[0] if done else {}

    assert wait_for(lambda: all(condition(n) for n in ("count", "broken", "slow")), 20)
    assert condition("count")["type"] == "Complete"
    assert clab.store.get("jobs", "default", "count")["status"]["succeeded"] == 3
    counted = [p for p in clab.pod_list() if p.owner == "count" and p.owner_kind == "Job"]
    assert len(counted) == 3
    assert all(clab.pods[p.key].status.phase == "Succeeded" for p in counted)
    assert "counted" in clab.log_path(counted[0], "run").read_text()
    assert condition("broken")["reason"] == "BackoffLimitExceeded"
    assert clab.store.get("jobs", "default", "broken")["status"]["failed"] == 3  # backoffLimit + 1
    assert condition("slow")["reason"] == "DeadlineExceeded"
    assert not [p for p in clab.pod_list() if p.owner == "slow"]  # killed
    shown = tables.render("jobs", clab.store.list("jobs")[0])
    assert "count    Complete" in shown and "broken   Failed" in shown
    # a Job's spec is immutable; deleting one takes its pods along
    with pytest.raises(Exception, match="immutable"):
        clab.apply_text(_job("count", "echo other", completions=3, parallelism=2))
    for name in ("count", "broken", "slow"):
        clab.delete_job(name)
    assert wait_for(lambda: not [p for p in clab.pod_list() if p.owner_kind == "Job"], 10)
