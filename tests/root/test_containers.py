"""Pods are containers: runc runs each from an OCI bundle, in the pod's shared
network, UTS and IPC namespaces, with its own mount and PID namespaces and its own
writable layer over the image (here the default image, the host's root)."""

from __future__ import annotations

import json
import os
import subprocess

import pytest

from netlab.lab import Lab
from netlab.node.mounts import mounted_under
from netlab.realize.runtime import STATE_DIR
from tests.root.conftest import two_rack_builder
from tests.root.leftovers import leftovers

pytestmark = pytest.mark.root


@pytest.fixture(scope="module")
def clab():
    b = two_rack_builder("tctr")
    b.add_deployment(
        "web", replicas=2, command=["python3", "-m", "http.server", "8080"], ports=[8080]
    )
    b.add_pod("bb", command=["sleep", "3600"], image="busybox", node_name="n4")
    with Lab(b.build()) as running:
        yield running
    assert not leftovers("tctr")


def test_a_pod_sees_its_own_hostname_and_only_its_own_processes(clab):
    assert clab.exec("a", ["hostname"]).stdout.strip() == "a"
    assert clab.exec("b", ["cat", "/etc/hostname"]).stdout.strip() == "b"
    ps = clab.exec("a", ["ps", "-eo", "pid=,args="]).stdout.splitlines()
    first = ps[0].split(None, 1)
    assert first == ["1", "sleep infinity"], ps
    # only the app and what the exec itself runs; nothing of the host's
    assert len(ps) <= 3, ps
    assert str(os.getpid()) not in [line.split()[0] for line in ps]


def test_a_file_written_in_a_pod_stays_in_its_container(clab):
    name = f"/netlab-test-{os.getpid()}"
    assert clab.exec("a", ["sh", "-c", f"echo hi > {name} && cat {name}"]).stdout == "hi\n"
    assert not os.path.exists(name)  # not on the host
    assert clab.exec("b", ["test", "-e", name]).returncode == 1  # nor in its neighbour
    # the host's own files are there to read, not to change
    assert clab.exec("a", ["test", "-r", "/etc/os-release"]).returncode == 0


def test_the_pods_resolver_and_hosts_are_kubelets(clab):
    resolv = clab.exec("a", ["cat", "/etc/resolv.conf"]).stdout
    assert "search default.svc.cluster.local" in resolv
    hosts = clab.exec("a", ["cat", "/etc/hosts"]).stdout
    assert f"{clab.pod('a').address.ip}\ta" in hosts


def test_pods_talk_across_the_overlay(clab):
    web = next(p for p in clab.pod_list() if p.name.startswith("web-"))
    out = clab.exec(
        "a",
        ["curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", f"http://{web.address.ip}:8080/"],
    )
    assert out.stdout == "200"


def test_status_names_the_container_and_runc_holds_its_state(clab):
    pod = clab.store.get("pods", "default", "a")
    (status,) = pod["status"]["containerStatuses"]
    assert status["containerID"].startswith("runc://nl-tctr.a+")
    assert status["started"] is True and status["image"] == "host"
    runc_id = status["containerID"].removeprefix("runc://")
    state = subprocess.run(
        ["runc", "--root", str(clab.run_dir / STATE_DIR), "state", runc_id],
        capture_output=True,
        text=True,
        check=True,
    )
    assert json.loads(state.stdout)["status"] == "running"
    events = [
        e["reason"] for e in clab.store.list("events")[0] if e["involvedObject"]["name"] == "a"
    ]
    assert {"Pulled", "Created", "Started"} <= set(events)


def test_nothing_of_the_pods_is_mounted_on_the_host(clab):
    """Each root is the container's own mount; the sandboxes' namespaces are held by
    the runtime's threads, not bind mounts."""
    assert not mounted_under(clab.run_dir)
    paths = clab.cri.sandboxes.paths(clab.pod("a").netns)
    assert os.readlink(paths.uts) == os.readlink(
        f"/proc/{clab.pods[('default', 'a')].procs['a'].pid}/ns/uts"
    )
    assert os.readlink(paths.uts) != os.readlink("/proc/self/ns/uts")


def test_a_restarted_container_gets_a_fresh_writable_layer(clab):
    clab.exec("c", ["sh", "-c", "echo x > /scratch"])
    before = clab.pods[("default", "c")].procs["c"].pid
    os.kill(before, 9)
    from tests.root.conftest import wait_for

    def restarted() -> bool:
        proc = clab.pods[("default", "c")].procs["c"]
        return proc.pid != before and proc.poll() is None

    assert wait_for(restarted, 10)
    assert clab.exec("c", ["test", "-e", "/scratch"]).returncode == 1
    assert clab.exec("c", ["hostname"]).stdout.strip() == "c"


LOCKED = """
apiVersion: v1
kind: Pod
metadata: {name: locked}
spec:
  nodeName: n2
  securityContext: {runAsUser: 1000, runAsGroup: 1000}
  containers:
  - name: app
    command: [sh, -c, "touch /f 2>/dev/null && echo wrote || echo read-only; sleep infinity"]
    securityContext:
      readOnlyRootFilesystem: true
      allowPrivilegeEscalation: false
      capabilities: {drop: [ALL], add: [NET_BIND_SERVICE]}
---
apiVersion: v1
kind: Pod
metadata: {name: nochown}
spec:
  nodeName: n2
  containers:
  - name: app
    command: [sh, -c, "touch /f; chown 1 /f && echo chowned || echo refused; sleep infinity"]
    securityContext:
      capabilities: {drop: [CHOWN]}
"""


def _status_field(text: str, name: str) -> str:
    return next(
        line.split(":", 1)[1].strip() for line in text.splitlines() if line.startswith(name)
    )


def test_security_context_user_read_only_root_and_capabilities(clab):
    from tests.root.conftest import wait_for

    clab.apply_text(LOCKED)
    try:
        logs = {pod: clab.log_path(clab.pod(pod), "app") for pod in ("locked", "nochown")}
        outcomes = {"locked": ("wrote", "read-only"), "nochown": ("chowned", "refused")}

        def last_word(pod: str) -> str:
            text = logs[pod].read_text() if logs[pod].exists() else ""
            return text.rstrip().rsplit(" ", 1)[-1] if text else ""

        # each app prints its verdict last (chown's own complaint may come first)
        assert wait_for(lambda: all(last_word(p) in outcomes[p] for p in outcomes), 10)
        assert last_word("locked") == "read-only"
        assert last_word("nochown") == "refused"
        status = clab.exec("locked", ["cat", "/proc/1/status"]).stdout
        assert _status_field(status, "Uid:").split()[0] == "1000"
        assert _status_field(status, "Gid:").split()[0] == "1000"
        assert _status_field(status, "NoNewPrivs:") == "1"
        assert int(_status_field(status, "CapBnd:"), 16) == 1 << 10  # CAP_NET_BIND_SERVICE
        # the default set: a root container has no CAP_SYS_ADMIN (bit 21)
        default = clab.exec("a", ["cat", "/proc/1/status"]).stdout
        assert not int(_status_field(default, "CapBnd:"), 16) & (1 << 21)
        assert int(_status_field(default, "CapBnd:"), 16) & (1 << 0)  # CAP_CHOWN
    finally:
        for pod in ("locked", "nochown"):
            clab.delete_pod(pod)


def test_a_busybox_pod_runs_in_its_own_image(clab):
    assert "python3" not in clab.exec("bb", ["ls", "/usr/lib"]).stdout  # not the host's root
    assert clab.exec("bb", ["readlink", "/bin/sh"]).stdout.strip().endswith("busybox")
    ps = clab.exec("bb", ["ps"]).stdout.splitlines()
    assert ps[1].split()[0] == "1" and "sleep 3600" in ps[1]
    (status,) = clab.store.get("pods", "default", "bb")["status"]["containerStatuses"]
    assert status["image"] == "busybox"
    assert status["imageID"].startswith("docker.io/library/busybox@sha256:")
    # the pod's network is the same overlay
    web = next(p for p in clab.pod_list() if p.name.startswith("web-"))
    out = clab.exec("bb", ["wget", "-q", "-O", "-", f"http://{web.address.ip}:8080/"])
    assert "Directory listing" in out.stdout


MISSING = """
apiVersion: v1
kind: Pod
metadata: {name: nopull}
spec:
  nodeName: n1
  containers:
  - {name: app, image: "nginx:1.25", imagePullPolicy: IfNotPresent}
"""


def test_a_missing_image_is_err_image_pull_then_back_off(clab):
    from tests.root.conftest import wait_for

    clab.apply_text(MISSING)
    try:

        def waiting() -> dict:
            pod = clab.store.get("pods", "default", "nopull")
            return pod["status"]["containerStatuses"][0]["state"].get("waiting") or {}

        assert wait_for(lambda: waiting().get("reason") == "ErrImagePull", 5)
        assert "netlab image import" in waiting()["message"]
        assert wait_for(lambda: waiting().get("reason") == "ImagePullBackOff", 10)
        pod = clab.store.get("pods", "default", "nopull")
        assert pod["status"]["phase"] == "Pending"
        events = [
            e["message"]
            for e in clab.store.list("events")[0]
            if e["involvedObject"]["name"] == "nopull"
        ]
        assert any("Failed to pull image" in m for m in events), events
        # the rest of the lab goes on
        assert clab.exec("a", ["true"]).returncode == 0
    finally:
        clab.delete_pod("nopull")


HOG = """
apiVersion: v1
kind: Pod
metadata: {name: hog}
spec:
  nodeName: n3
  containers:
  - name: app
    command: [python3, -c, "import time; time.sleep(0.3); b = bytearray(96 << 20); time.sleep(60)"]
    resources:
      limits: {memory: 48Mi}
"""


def test_a_container_over_its_memory_limit_is_oom_killed_and_restarted(clab):
    from tests.root.conftest import wait_for

    clab.apply_text(HOG)
    try:

        def last() -> dict:
            pod = clab.store.get("pods", "default", "hog")
            return pod["status"]["containerStatuses"][0]

        assert wait_for(lambda: last()["restartCount"] >= 1, 15), last()
        terminated = last()["lastState"]["terminated"]
        assert terminated["reason"] == "OOMKilled", terminated
        assert terminated["exitCode"] == 137
        pod = clab.store.get("pods", "default", "hog")
        assert pod["status"]["qosClass"] == "Burstable"
        events = [e for e in clab.store.list("events")[0] if e["involvedObject"]["name"] == "hog"]
        assert any(e["reason"] == "OOMKilled" for e in events)
    finally:
        clab.delete_pod("hog")


def test_kubectl_top_style_metrics_from_the_containers_cgroups(clab):
    from tests.root.conftest import wait_for

    assert wait_for(
        lambda: any(m["metadata"]["name"] == "a" for m in clab.metrics.pod_metrics()), 10
    )
    (a,) = [m for m in clab.metrics.pod_metrics() if m["metadata"]["name"] == "a"]
    assert a["containers"][0]["name"] == "a"
    assert a["containers"][0]["usage"]["memory"].endswith("Ki")
    from tests.root.test_kubectl import kubectl

    rows = kubectl(clab, "top", "pod", "a", "--containers").stdout.splitlines()
    assert rows[0].split() == ["POD", "NAME", "CPU(cores)", "MEMORY(bytes)"], rows
    assert rows[1].split()[:2] == ["a", "a"]
    nodes = kubectl(clab, "top", "nodes").stdout.splitlines()
    assert {line.split()[0] for line in nodes[1:]} == set(clab.nodes)


SHARED = """
apiVersion: v1
kind: Pod
metadata: {name: shared}
spec:
  nodeName: n4
  shareProcessNamespace: true
  containers:
  - {name: app, command: [sleep, "3601"]}
  - {name: helper, image: busybox, command: [sleep, "3602"]}
"""


def test_share_process_namespace_puts_the_pods_containers_in_one_pid_namespace(clab):
    from tests.root.conftest import wait_for

    clab.apply_text(SHARED)
    try:
        assert wait_for(lambda: len(clab.pods[("default", "shared")].procs) == 2, 10)

        def processes() -> str:
            return clab.exec("shared", ["ps", "-eo", "pid=,args="], container="helper").stdout

        # runc returns once it has let the container's init go: it execs a moment later
        assert wait_for(lambda: "sleep 3602" in processes(), 5)
        seen = processes()
        lines = [line.split(None, 1) for line in seen.splitlines()]
        assert lines[0][0] == "1" and "sleep 3600" in seen  # the pause is PID 1
        assert "sleep 3601" in seen and "sleep 3602" in seen  # both containers' apps
        # each still has its own root: the busybox one sees busybox's files
        assert "busybox" in clab.exec("shared", ["readlink", "/bin/sh"], container="helper").stdout
    finally:
        clab.delete_pod("shared")
    assert not [p for p in mounted_under(clab.run_dir) if "shared" in p]


def test_kubectl_exec_and_cp_work_inside_the_container(clab, tmp_path):
    from tests.root.test_kubectl import kubectl

    assert kubectl(clab, "exec", "bb", "--", "hostname").stdout.strip() == "bb"
    source = tmp_path / "note.txt"
    source.write_text("from the host\n")
    kubectl(clab, "cp", str(source), "bb:/tmp/note.txt")
    assert clab.exec("bb", ["cat", "/tmp/note.txt"]).stdout == "from the host\n"
    assert not os.path.exists("/tmp/note.txt") or open("/tmp/note.txt").read() != "from the host\n"
    clab.exec("bb", ["sh", "-c", "echo from the pod > /tmp/back.txt"])
    back = tmp_path / "back.txt"
    kubectl(clab, "cp", "bb:/tmp/back.txt", str(back))
    assert back.read_text() == "from the pod\n"


def test_pod_status_goes_pending_creating_running_ready_as_the_client_reads_it(clab):
    """The typed client's watch sees kubelet's sequence for a new pod."""
    from kubernetes import client, config, watch

    api = client.CoreV1Api(config.new_client_from_config(str(clab.run_dir / "kubeconfig")))
    pod = client.V1Pod(
        metadata=client.V1ObjectMeta(name="phases"),
        spec=client.V1PodSpec(
            node_name="n3",
            containers=[
                client.V1Container(
                    name="app",
                    image="busybox",
                    command=["sh", "-c", "sleep 1; touch /tmp/ready; exec sleep 3600"],
                    readiness_probe=client.V1Probe(
                        _exec=client.V1ExecAction(command=["test", "-e", "/tmp/ready"]),
                        period_seconds=1,
                    ),
                )
            ],
        ),
    )
    seen: list[tuple] = []
    stream = watch.Watch()
    rv = api.list_namespaced_pod("default").metadata.resource_version
    api.create_namespaced_pod("default", pod)
    try:
        for event in stream.stream(
            api.list_namespaced_pod,
            "default",
            field_selector="metadata.name=phases",
            resource_version=rv,
            timeout_seconds=20,
        ):
            obj = event["object"]
            (status,) = obj.status.container_statuses or [None]
            waiting = status.state.waiting.reason if status and status.state.waiting else None
            step = (
                obj.status.phase,
                waiting,
                bool(status and status.started),
                bool(status and status.ready),
            )
            if not seen or seen[-1] != step:
                seen.append(step)
            if status is not None and status.ready:
                stream.stop()
        assert seen[0] == ("Pending", "ContainerCreating", False, False), seen
        assert ("Running", None, True, False) in seen, seen
        assert seen[-1] == ("Running", None, True, True), seen
        final = api.read_namespaced_pod("phases", "default").status.container_statuses[0]
        assert final.container_id.startswith("runc://") and final.image == "busybox"
        assert final.image_id.startswith("docker.io/library/busybox@sha256:")
        assert final.state.running.started_at is not None
    finally:
        clab.delete_pod("phases")


BUSY = """
apiVersion: v1
kind: Pod
metadata: {name: busy}
spec:
  nodeName: n1
  containers:
  - name: app
    image: busybox
    command: [sh, -c, "end=$(($(date +%s) + 20)); while [ $(date +%s) -lt $end ]; do :; done"]
    resources: {limits: {cpu: 100m}, requests: {cpu: 100m, memory: 16Mi}}
"""


def test_a_cpu_limit_throttles_the_container(clab):
    from netlab.node.cgroups import usage
    from tests.root.conftest import wait_for

    clab.apply_text(BUSY)
    try:
        (cgroup,) = clab.cri.container_cgroups([(clab.pod("busy"), "app")])

        def throttled() -> bool:
            found = usage(cgroup.dirs)
            return bool(found and found.nr_throttled > 2)

        assert wait_for(throttled, 10)
        used = usage(cgroup.dirs)
        assert used.cpu_ns > 0 and used.memory_limit is None  # a cpu limit only
        pod = clab.store.get("pods", "default", "busy")
        assert pod["status"]["qosClass"] == "Burstable"
    finally:
        clab.delete_pod("busy")
