"""`netlab get` as kubectl get, through the real `netlab` command against a supervised
lab: several kinds (`get deploy,pods`), label and field selectors, a watch on a
selector, and a reader that leaves early (`| head`) ending it quietly."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import pytest

from tests.root.conftest import wait_for
from tests.root.test_cli import netlab

pytestmark = pytest.mark.root
NAME = "tcget"
KUBECTL = Path(__file__).resolve().parents[2] / ".tools" / "kubectl-1.35" / "kubectl"

LAB = textwrap.dedent(
    """\
    lab:
      name: tcget
      racks:
        - {name: rack1, subnet: 192.168.1.0/24, nodes: [n1, n2]}
        - {name: rack2, subnet: 192.168.2.0/24, nodes: [n3]}
    ---
    apiVersion: apps/v1
    kind: Deployment
    metadata: {name: web, labels: {app: web}}
    spec:
      replicas: 3
      selector: {matchLabels: {app: web}}
      template:
        metadata: {labels: {app: web}}
        spec:
          containers: [{name: web, command: [sleep, infinity]}]
    ---
    apiVersion: apps/v1
    kind: Deployment
    metadata: {name: db, labels: {app: db}}
    spec:
      replicas: 1
      selector: {matchLabels: {app: db}}
      template:
        metadata: {labels: {app: db}}
        spec:
          containers: [{name: db, command: [sleep, infinity]}]
    """
)


def get(*args: str) -> str:
    return netlab("--lab", NAME, "get", *args).stdout


def names(text: str) -> list[str]:
    """The NAME column of every table (several kinds: blank lines between tables)."""
    out = []
    for table in text.strip().split("\n\n"):
        header, *rows = table.splitlines()
        at = header.split().index("NAME")
        out += [row.split()[at] for row in rows]
    return out


def shell(command: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["bash", "-c", command],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])},
    )


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    path = tmp_path_factory.mktemp("get") / f"{NAME}.yaml"
    path.write_text(LAB)
    netlab("up", "-d", str(path))
    try:
        yield
    finally:
        netlab("down", "--lab", NAME)


def test_several_kinds_each_its_own_table_as_kubectl_prints_them(lab):
    pods = json.loads(get("pods", "-o", "json"))["items"]
    both = get("deploy,pods")
    deployments, pod_table = both.strip().split("\n\n")
    assert deployments.split()[:2] == ["NAME", "READY"] and pod_table.split()[:2] == [
        "NAME",
        "READY",
    ]
    expected = ["deployment.apps/db", "deployment.apps/web"] + sorted(
        f"pod/{p['metadata']['name']}" for p in pods
    )
    assert sorted(names(deployments)) + sorted(names(pod_table)) == expected
    if KUBECTL.exists():  # the same names, kinds and tables from kubectl 1.35 itself
        kubectl = subprocess.run(
            [str(KUBECTL), "--kubeconfig", f"/run/netlab/{NAME}/kubeconfig", "get", "deploy,pods"],
            capture_output=True,
            text=True,
            timeout=30,
            check=True,
        ).stdout
        assert sorted(names(kubectl)) == sorted(names(both))
        assert kubectl.count("\n\n") == both.count("\n\n") == 1
    listed = json.loads(get("deploy,pods", "-o", "json"))
    assert listed["kind"] == "List" and len(listed["items"]) == 2 + len(pods)
    shown = get("deploy,pods", "-o", "name").split()
    assert sorted(shown[:2]) == expected[:2] and sorted(shown[2:]) == expected[2:]
    all_ns = get("deploy,pods", "-A")
    assert "deployment.apps/netlab-dns" in all_ns  # the lab's own, in kube-system
    assert all(t.startswith("NAMESPACE") for t in all_ns.strip().split("\n\n"))


def test_label_and_field_selectors(lab):
    pods = json.loads(get("pods", "-o", "json"))["items"]
    web = sorted(p["metadata"]["name"] for p in pods if p["metadata"]["labels"]["app"] == "web")
    assert sorted(names(get("pods", "-l", "app=web"))) == web
    assert names(get("deploy,pods", "-l", "app in (db)")) == [
        "deployment.apps/db",
        *[f"pod/{p['metadata']['name']}" for p in pods if p["metadata"]["labels"]["app"] == "db"],
    ]
    node = pods[0]["spec"]["nodeName"]
    on_node = sorted(p["metadata"]["name"] for p in pods if p["spec"]["nodeName"] == node)
    assert sorted(names(get("pods", "--field-selector", f"spec.nodeName={node}"))) == on_node
    assert get("pods", "-l", "app=nothing").strip() == "No resources found."
    refused = netlab("--lab", NAME, "get", "pods", web[0], "-l", "app=web", check=False)
    assert refused.returncode == 1 and "name cannot be provided" in refused.stderr
    refused = netlab("--lab", NAME, "get", "pods", "--field-selector", "spec.bogus=1", check=False)
    assert refused.returncode == 1 and "field label not supported" in refused.stderr


def test_a_watch_on_a_selector_shows_only_what_it_selects(lab):
    pods = json.loads(get("pods", "-o", "json"))["items"]
    db = next(p["metadata"]["name"] for p in pods if p["metadata"]["labels"]["app"] == "db")
    web = next(p["metadata"]["name"] for p in pods if p["metadata"]["labels"]["app"] == "web")
    watch = subprocess.Popen(
        [sys.executable, "-m", "netlab.cli", "--lab", NAME, "get", "pods", "-w", "-l", "app=web"],
        stdout=subprocess.PIPE,
        text=True,
    )
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(watch.stdout), daemon=True)
    reader.start()
    try:
        assert wait_for(lambda: any(web in line for line in lines), 10)  # the first table
        netlab("--lab", NAME, "delete", "pod", db)  # before the web pod: its event comes first
        netlab("--lab", NAME, "delete", "pod", web)
        assert wait_for(lambda: any(web in ln and "(deleted)" in ln for ln in lines), 20)
    finally:
        watch.terminate()
        watch.wait(5)
    reader.join(5)
    assert lines[0].split()[:3] == ["NAME", "READY", "STATUS"]
    assert not any(db in line or line.startswith("db-") for line in lines), lines
    kinds = netlab("--lab", NAME, "get", "deploy,pods", "-w", check=False)
    assert kinds.returncode == 1 and "single resource type" in kinds.stderr


def test_a_reader_that_leaves_early_ends_get_quietly(lab):
    # `| true` has gone before netlab writes: every write meets a closed pipe
    for command in ("get pods -A -o yaml | true", "get deploy,pods -o json | head -n 1"):
        done = shell(f"{sys.executable} -m netlab.cli --lab {NAME} {command}")
        assert done.returncode == 0 and done.stderr == "", done.stderr
