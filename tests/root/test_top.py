"""`kubectl top` (1.35 and Debian's 1.20), the `kubernetes` Python client and
`netlab top pods|nodes` against a lab serving metrics.k8s.io/v1beta1: none before
the lab has a metrics source ("metrics not available yet", as with a metrics-server
that has not scraped yet); then real rows, from a sampler reading real cgroups (made
here as runc makes a container's) with a throttled busy loop in pod a's."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from netlab.apiserver.base import ACTIONS
from netlab.lab import Lab
from netlab.node.cgroups import CgroupLayout, cgroups_path, container_dirs, lab_dirs, remove_lab
from netlab.node.metrics import ContainerCgroup, MetricsSampler
from tests.root.conftest import two_rack_builder, wait_for
from tests.root.test_cgroups import JOIN, kill_members
from tests.root.test_kubectl import kubectl

pytestmark = pytest.mark.root

PREFIX = "nl-ttopcg"  # the test's cgroups, beside (not inside) the lab's own
# one process (killed by its PID), ending by itself should the test not end it
LOOP = [
    sys.executable,
    "-c",
    "import time\nend = time.monotonic() + 120\nwhile time.monotonic() < end: pass",
]


@pytest.fixture(scope="module")
def tlab():
    with Lab(two_rack_builder("ttop").build()) as lab:  # pods a on n1, b on n3, c on n2
        lab.settle()
        yield lab


def netlab(lab: Lab, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    result = subprocess.run(
        [sys.executable, "-m", "netlab.cli", "--lab", lab.spec.name, *args],
        capture_output=True,
        text=True,
        timeout=60,
        stdin=subprocess.DEVNULL,
    )
    if check:
        assert result.returncode == 0, result.stdout + result.stderr
    return result


def _rows(text: str) -> list[list[str]]:
    return [line.split() for line in text.splitlines()]


def _milli(cell: str) -> int:
    assert cell.endswith("m"), cell
    return int(cell[:-1])


@pytest.mark.parametrize("version", ["1.35", "1.20"])
def test_before_any_metrics(tlab, version) -> None:
    for what in ("pods", "nodes"):
        result = kubectl(tlab, "top", what, version=version, check=False)
        assert result.returncode != 0
        assert "metrics not available yet" in result.stderr, result.stderr
    result = netlab(tlab, "top", "pods", check=False)
    assert result.returncode != 0 and "metrics not available yet" in result.stderr


@pytest.fixture(scope="module")
def sampled(tlab):
    """Pod a's container in a cgroup with a busy loop held to 0.2 core, pod b's in an
    idle one; a sampler over both, as the lab's metrics source."""
    layout = CgroupLayout.detect()
    if layout.mode == "v2":
        pytest.skip("the test's cgroups are made the cgroup v1 way (this CI)")
    pods = {n: tlab.store.get("pods", "default", n) for n in ("a", "b")}
    containers, loop = [], None
    try:
        for name, pod in pods.items():
            every = container_dirs(layout, cgroups_path(layout, PREFIX, name), os.getpid())
            dirs = {k: every[k] for k in ("cpu", "cpuacct", "memory")}
            for directory in dirs.values():
                directory.mkdir(parents=True, exist_ok=True)
            spec = pod["spec"]
            containers.append(
                ContainerCgroup(
                    "default", name, spec["containers"][0]["name"], spec["nodeName"], dirs
                )
            )
        busy = containers[0].dirs
        (busy["cpu"] / "cpu.cfs_quota_us").write_text("20000")  # of 100000: 0.2 core
        joined = [str(d) for d in dict.fromkeys(busy.values())]
        loop = subprocess.Popen(["sh", "-c", JOIN, "sh", *joined, "--", *LOOP])
        sampler = MetricsSampler(lambda: containers, window=1.0, interval=0.25)
        sampler.start()
        tlab.api.app[ACTIONS].metrics = sampler
        assert wait_for(lambda: len(sampler.pod_metrics()) == 2, 20)
        yield sampler
    finally:
        if tlab.api is not None:
            tlab.api.app[ACTIONS].metrics = None
        if "sampler" in locals():
            sampler.stop()
        if loop is not None:
            loop.kill()
            loop.wait()
        for container in containers:
            kill_members(container.dirs)
        remove_lab(layout, PREFIX)
        assert lab_dirs(layout, PREFIX) == []


@pytest.mark.parametrize("version", ["1.35", "1.20"])
def test_kubectl_top_pods_and_nodes(tlab, sampled, version) -> None:
    pods = _rows(kubectl(tlab, "top", "pods", version=version).stdout)
    assert pods[0] == ["NAME", "CPU(cores)", "MEMORY(bytes)"]
    by_name = {row[0]: row for row in pods[1:]}
    assert set(by_name) == {"a", "b"}  # c has no metrics
    assert _milli(by_name["a"][1]) > 0 and by_name["a"][2].endswith("Mi")
    assert by_name["b"][1:] == ["0m", "0Mi"]
    everywhere = _rows(kubectl(tlab, "top", "pods", "-A", version=version).stdout)
    assert everywhere[0] == ["NAMESPACE", "NAME", "CPU(cores)", "MEMORY(bytes)"]
    assert {(r[0], r[1]) for r in everywhere[1:]} == {("default", "a"), ("default", "b")}
    containers = _rows(kubectl(tlab, "top", "pod", "a", "--containers", version=version).stdout)
    assert containers[0] == ["POD", "NAME", "CPU(cores)", "MEMORY(bytes)"]
    app = tlab.store.get("pods", "default", "a")["spec"]["containers"][0]["name"]
    assert [r[:2] for r in containers[1:]] == [["a", app]]
    nodes = _rows(kubectl(tlab, "top", "nodes", version=version).stdout)
    percent = ["CPU%", "MEMORY%"] if version == "1.20" else ["CPU(%)", "MEMORY(%)"]
    assert nodes[0] == ["NAME", "CPU(cores)", percent[0], "MEMORY(bytes)", percent[1]]
    by_node = {row[0]: row for row in nodes[1:]}
    assert set(by_node) == set(tlab.nodes)
    assert _milli(by_node["n1"][1]) > 0 and by_node["n1"][2].endswith("%")
    assert by_node["n2"][1:] == ["0m", "0%", "0Mi", "0%"]  # no container sampled there
    missing = kubectl(tlab, "top", "pod", "c", version=version, check=False)
    assert missing.returncode != 0
    assert 'podmetrics.metrics.k8s.io "default/c" not found' in missing.stderr


def test_netlab_top_pods_and_nodes(tlab, sampled) -> None:
    pods = _rows(netlab(tlab, "top", "pods", "-A").stdout)
    assert pods[0] == ["NAMESPACE", "NAME", "CPU(cores)", "MEMORY(bytes)"]
    assert {(r[0], r[1]) for r in pods[1:]} == {("default", "a"), ("default", "b")}
    a = next(r for r in pods[1:] if r[1] == "a")
    assert _milli(a[2]) > 0
    nodes = _rows(netlab(tlab, "top", "nodes").stdout)
    assert nodes[0] == ["NAME", "CPU(cores)", "CPU(%)", "MEMORY(bytes)", "MEMORY(%)"]
    assert {r[0] for r in nodes[1:]} == set(tlab.nodes)
    assert netlab(tlab, "top", "pods", "-l", "nosuch=label").stdout == ""


def test_the_kubernetes_python_client_reads_the_metrics(tlab, sampled) -> None:
    from kubernetes import client, config

    api = client.CustomObjectsApi(config.new_client_from_config(str(tlab.run_dir / "kubeconfig")))
    nodes = api.list_cluster_custom_object("metrics.k8s.io", "v1beta1", "nodes")
    assert nodes["kind"] == "NodeMetricsList"
    assert {n["metadata"]["name"] for n in nodes["items"]} == set(tlab.nodes)
    pod = api.get_namespaced_custom_object("metrics.k8s.io", "v1beta1", "default", "pods", "a")
    assert pod["kind"] == "PodMetrics" and pod["window"].endswith("s")
    assert set(pod["containers"][0]["usage"]) == {"cpu", "memory"}
    groups = client.ApisApi(api.api_client).get_api_versions()
    assert "metrics.k8s.io" in {g.name for g in groups.groups}
