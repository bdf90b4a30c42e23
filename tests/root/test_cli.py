"""The `netlab` command and the supervisor: up -d, get, logs, exec, delete,
watch through the API, kill -9 then clean, and invalid lab files."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from netlab.client import LabClient
from netlab.realize import cleanup
from netlab.realize.processes import PidRecord
from tests.root.conftest import lab_namespaces
from tests.root.leftovers import leftovers

pytestmark = pytest.mark.root

LAB = textwrap.dedent(
    """\
    lab:
      name: {name}
      racks:
        - {{name: rack1, subnet: 192.168.1.0/24, nodes: [n1, n2]}}
        - {{name: rack2, subnet: 192.168.2.0/24, nodes: [n3]}}
    ---
    apiVersion: apps/v1
    kind: Deployment
    metadata: {{name: web}}
    spec:
      replicas: 2
      selector: {{matchLabels: {{app: web}}}}
      template:
        metadata: {{labels: {{app: web}}}}
        spec:
          containers:
            - name: web
              command: [sh, -c, 'echo hello from $HOSTNAME; exec sleep infinity']
    """
)


def netlab(*args: str, check: bool = True, timeout: float = 60) -> subprocess.CompletedProcess:
    result = subprocess.run(
        [sys.executable, "-m", "netlab.cli", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
    )
    if check:
        assert result.returncode == 0, result.stdout + result.stderr
    return result


@pytest.fixture
def lab_file(tmp_path):
    def make(name: str) -> str:
        path = tmp_path / f"{name}.yaml"
        path.write_text(LAB.format(name=name))
        return str(path)

    return make


def test_up_detached_get_logs_exec_delete_down(lab_file):
    up = netlab("up", "-d", lab_file("tcli"))
    try:
        assert "n1" in up.stdout and "10.244.1.0/24" in up.stdout
        pods = json.loads(netlab("--lab", "tcli", "get", "pods", "-o", "json").stdout)["items"]
        assert len(pods) == 2 and all(p["status"]["phase"] == "Running" for p in pods)
        wide = netlab("--lab", "tcli", "get", "pods", "-o", "wide").stdout
        assert "NODE" in wide and pods[0]["status"]["podIP"] in wide
        nodes = netlab("--lab", "tcli", "get", "nodes").stdout
        assert "rack2" in nodes and "10.244.3.0/24" in nodes
        name = pods[0]["metadata"]["name"]
        assert f"hello from {name}" in netlab("--lab", "tcli", "logs", name).stdout
        other_ip = pods[1]["status"]["podIP"]
        ping = netlab("--lab", "tcli", "exec", name, "--", "ping", "-c", "1", "-W", "2", other_ip)
        assert "1 received" in ping.stdout

        client = LabClient("/run/netlab/tcli/api.sock")
        listing = client.list("pods", namespace="default")
        events = client.watch(
            "pods",
            namespace="default",
            resource_version=listing["metadata"]["resourceVersion"],
            timeout=10,
        )
        netlab("--lab", "tcli", "delete", "pod", name)
        seen = []
        for event in events:
            seen.append((event["type"], event["object"]["metadata"]["name"]))
            if ("DELETED", name) in seen and any(t == "ADDED" for t, _ in seen):
                break
        assert ("DELETED", name) in seen
        replacement = [n for t, n in seen if t == "ADDED"][0]
        assert replacement != name and replacement.startswith("web-")
    finally:
        netlab("down", "--lab", "tcli")
    assert not [n for n in lab_namespaces() if n.startswith("nl-tcli")]
    assert not os.path.exists("/run/netlab/tcli")


def test_kill_9_then_clean_leaves_nothing_and_up_works_again(lab_file):
    path = lab_file("tkill")
    netlab("up", "-d", path)
    pid = cleanup.supervisor_pid(Path("/run/netlab/tkill"))
    assert pid
    records = PidRecord.read(Path("/run/netlab/tkill/pids"))
    recorded = [p for p, *_ in records]
    runtime = [p for p, _, role, _ in records if role == "runtime"]
    os.kill(pid, signal.SIGKILL)
    for p in runtime:  # the containers' runtime too: nobody is left to stop them
        os.kill(p, signal.SIGKILL)
    time.sleep(0.2)
    assert [n for n in lab_namespaces() if n.startswith("nl-tkill")], (
        "the crash should leave namespaces"
    )
    left = leftovers("tkill")  # what the host snapshot looks for is there to find
    assert any(x.startswith("cgroup ") for x in left) and any(x.startswith("runc ") for x in left)
    out = netlab("clean", "--lab", "tkill").stdout
    assert "lab tkill" in out
    assert not [n for n in lab_namespaces() if n.startswith("nl-tkill")]
    assert not os.path.exists("/run/netlab/tkill")
    assert not leftovers("tkill")
    assert (
        not [d for d in os.listdir("/etc/netns") if d.startswith("nl-tkill")]
        if os.path.isdir("/etc/netns")
        else True
    )
    for p in recorded:
        assert (
            not os.path.exists(f"/proc/{p}")
            or open(f"/proc/{p}/stat").read().split(")")[1].split()[0] == "Z"
        )
    netlab("up", "-d", path)
    netlab("down", "--lab", "tkill")
    assert not [n for n in lab_namespaces() if n.startswith("nl-tkill")]


def test_up_refuses_a_second_lab_of_the_same_name(lab_file):
    path = lab_file("ttwice")
    netlab("up", "-d", path)
    try:
        again = netlab("up", "-d", path, check=False)
        assert again.returncode == 1
        assert "already running" in again.stderr
    finally:
        netlab("down", "--lab", "ttwice")


POD = (
    "lab:\n  name: tbad\n  racks:\n    - {{name: r1, subnet: 10.0.0.0/24, nodes: [n1]}}\n"
    "---\napiVersion: v1\nkind: Pod\nmetadata: {{name: p}}\nspec:\n  containers: [{container}]\n"
)
INVALID = {
    "unknown field": ("lab:\n  name: tbad\n  rackz: []\n", "lab.rackz"),
    "overlapping subnets": (
        "lab:\n  name: tbad\n  racks:\n"
        "    - {name: r1, subnet: 10.0.0.0/16, nodes: [n1]}\n"
        "    - {name: r2, subnet: 10.0.1.0/24, nodes: [n2]}\n",
        "overlaps",
    ),
    "rack inside the overlay": (
        "lab:\n  name: tbad\n  racks:\n    - {name: r1, subnet: 10.244.7.0/24, nodes: [n1]}\n",
        "overlaps",
    ),
    "unknown image": (
        POD.format(container="{name: c, image: 'nginx:1.25', imagePullPolicy: IfNotPresent}"),
        "netlab image import",
    ),
    "bad quantity": (
        POD.format(container="{name: c, command: [sh], resources: {limits: {memory: 1QB}}}"),
        "spec.containers[0].resources.limits.memory",
    ),
    "unknown capability": (
        POD.format(
            container="{name: c, command: [sh], securityContext: {capabilities: {add: [FLY]}}}"
        ),
        "spec.containers[0].securityContext.capabilities.add[0]",
    ),
    "name too long": (
        "lab:\n  name: tbad\n  racks:\n    - {name: r1, subnet: 10.0.0.0/24, nodes: [averylongnodename]}\n",
        "15",
    ),
}


@pytest.mark.parametrize("case", sorted(INVALID))
def test_invalid_lab_file_builds_nothing(tmp_path, case):
    text, expected = INVALID[case]
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    result = netlab("up", "-d", str(path), check=False)
    assert result.returncode == 1
    assert str(path) in result.stderr and expected in result.stderr, result.stderr
    assert not leftovers("tbad") and not os.path.exists("/run/netlab/tbad")
    assert not [n for n in lab_namespaces() if n.startswith("nl-tbad")]
    assert not os.path.exists("/run/netlab/tbad")


def test_down_leaves_no_files(lab_file):
    netlab("up", "-d", lab_file("tfiles"))
    assert os.path.exists("/run/netlab/tfiles/supervisor.log")
    netlab("down", "--lab", "tfiles")
    leftovers = (
        [p for p in os.listdir("/run/netlab") if p.startswith("tfiles")]
        if os.path.isdir("/run/netlab")
        else []
    )
    assert not leftovers


SERVICE = textwrap.dedent(
    """\
    apiVersion: v1
    kind: Service
    metadata: {name: web}
    spec:
      selector: {app: web}
      ports: [{name: http, port: 80, targetPort: 8080}]
    ---
    apiVersion: v1
    kind: Service
    metadata: {name: web-pods}
    spec:
      clusterIP: None
      selector: {app: web}
    """
)


def test_apply_then_get_services_and_endpoints(lab_file, tmp_path):
    netlab("up", "-d", lab_file("tapply"))
    try:
        manifests = tmp_path / "svc.yaml"
        manifests.write_text(SERVICE)
        out = netlab("--lab", "tapply", "apply", str(manifests)).stdout
        assert out.split("\n")[:2] == ["service/web created", "service/web-pods created"]
        assert (
            "service/web unchanged"
            in netlab("--lab", "tapply", "apply", "-f", str(manifests)).stdout
        )
        services = netlab("--lab", "tapply", "get", "services").stdout
        assert "CLUSTER-IP" in services and "80/TCP" in services and "None" in services
        vip = json.loads(netlab("--lab", "tapply", "get", "svc", "web", "-o", "json").stdout)
        assert vip["spec"]["clusterIP"].startswith("10.")
        pods = json.loads(netlab("--lab", "tapply", "get", "pods", "-o", "json").stdout)["items"]
        ips = sorted(p["status"]["podIP"] for p in pods)
        # nothing listens on the target port 8080 in these pods: known, but not ready
        ep = json.loads(netlab("--lab", "tapply", "get", "ep", "web-pods", "-o", "json").stdout)
        assert sorted(a["ip"] for s in ep["subsets"] for a in s["notReadyAddresses"]) == ips
        assert all("addresses" not in s for s in ep["subsets"])
        assert ips[0] in netlab("--lab", "tapply", "get", "endpoints", "-o", "wide").stdout
        system = netlab("--lab", "tapply", "get", "svc", "-n", "kube-system").stdout
        assert "kube-dns" in system and "10.96.0.10" in system
        bad = tmp_path / "bad.yaml"
        bad.write_text(SERVICE.replace("port: 80,", "port: 80000,"))
        refused = netlab("--lab", "tapply", "apply", str(bad), check=False)
        assert refused.returncode != 0 and "ports[0].port" in refused.stderr
        netlab("--lab", "tapply", "delete", "service", "web")
        assert "web-pods" in netlab("--lab", "tapply", "get", "svc").stdout
        assert " web " not in netlab("--lab", "tapply", "get", "svc").stdout
    finally:
        netlab("down", "--lab", "tapply")
    assert not [n for n in lab_namespaces() if n.startswith("nl-tapply")]
