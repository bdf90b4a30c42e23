"""A supervisor restarted, not the lab: `kill -9` of `netlab up`, then `netlab up
--adopt` takes the running lab over, through the real command, with either store."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import textwrap
from pathlib import Path

import pytest

from netlab.realize.processes import PidRecord, alive_as_recorded
from tests.root.conftest import lab_namespaces, wait_for
from tests.root.test_cli import netlab
from tests.root.test_kubectl import KUBECTL

pytestmark = pytest.mark.root

LAB = textwrap.dedent(
    """\
    lab:
      name: {name}
      store: {store}
      racks:
        - {{name: rack1, subnet: 192.168.1.0/24, nodes: [n1, n2]}}
        - {{name: rack2, subnet: 192.168.2.0/24, nodes: [n3]}}
    ---
    apiVersion: apps/v1
    kind: Deployment
    metadata: {{name: web}}
    spec:
      replicas: 3
      selector: {{matchLabels: {{app: web}}}}
      template:
        metadata: {{labels: {{app: web}}}}
        spec:
          containers:
            - name: web
              command: [python3, -m, netlab.apps.echo, "8080"]
              ports: [{{containerPort: 8080}}]
    ---
    apiVersion: v1
    kind: Service
    metadata: {{name: web}}
    spec:
      selector: {{app: web}}
      ports: [{{port: 80, targetPort: 8080}}]
    ---
    apiVersion: v1
    kind: Pod
    metadata: {{name: client}}
    spec:
      containers:
        - name: client
          command: [sleep, infinity]
    """
)

# one GET through the Service's DNS name, from the client pod
GET = (
    "import urllib.request; "
    "print(urllib.request.urlopen('http://web.default.svc.cluster.local/', timeout=2).read().decode())"
)


def pods(name: str) -> dict[str, dict]:
    items = json.loads(netlab("--lab", name, "get", "pods", "-o", "json").stdout)["items"]
    return {p["metadata"]["name"]: p for p in items}


def serving_webs(name: str) -> set[str]:
    """The pods the web Deployment owns (a relabeled one it released is not among them)."""
    return {
        pod
        for pod, obj in pods(name).items()
        if obj["metadata"].get("labels", {}).get("app") == "web"
        and obj["status"].get("phase") == "Running"
    }


def status_of(name: str, pod: str) -> dict:
    return pods(name)[pod]["status"]["containerStatuses"][0]


def containers(name: str) -> dict[str, tuple[int, int]]:
    """Container (namespace/pod/container) -> (pid, start time), as the lab recorded them."""
    found = {}
    for pid, started, role, what in PidRecord.read(Path("/run/netlab") / name / "pids"):
        if role == "container" and what.count("/") == 2 and alive_as_recorded(pid, started):
            found[what] = (pid, started)
    return found


def supervisor(name: str) -> int:
    return int((Path("/run/netlab") / name / "supervisor.pid").read_text().split()[0])


def get_through_service(name: str) -> str:
    result = netlab_exec(name, "client", "python3", "-c", GET)
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


def netlab_exec(name: str, pod: str, *argv: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["ip", "netns", "exec", f"nl-{name}.{pod}", *argv],
        capture_output=True,
        text=True,
        timeout=20,
    )


@pytest.mark.parametrize("store", ["embedded", "etcd"])
def test_a_restarted_supervisor_takes_the_lab_over_without_restarting_pods(tmp_path, store):
    name = "tadopt" if store == "embedded" else "tadopte"
    path = tmp_path / f"{name}.yaml"
    path.write_text(LAB.format(name=name, store=store))
    netlab("up", "-d", str(path))
    try:
        before = pods(name)
        running = containers(name)
        webs = sorted(n for n in before if n.startswith("web-"))
        assert len(webs) == 3 and len(running) >= 5  # 3 web, client, DNS
        assert get_through_service(name).split()[0] in webs
        # the supervisor (forked by `up -d`) hears its containers end: one killed restarts
        first = f"default/{webs[0]}/web"
        os.kill(running[first][0], signal.SIGKILL)
        assert wait_for(lambda: status_of(name, webs[0])["restartCount"] == 1, 10, 0.2)
        assert wait_for(lambda: status_of(name, webs[0])["ready"], 10, 0.2)
        # ready, and then back behind the Service with the others (the rules follow
        # the pods' status), so that all three serve while nobody supervises
        assert wait_for(
            lambda: {get_through_service(name).split()[0] for _ in range(3)} == set(webs), 10
        )
        running = containers(name)

        # the supervisor crashes; the lab runs on: Services, DNS, logs
        os.kill(supervisor(name), signal.SIGKILL)
        assert wait_for(lambda: netlab("--lab", name, "get", "pods", check=False).returncode, 5)
        log = Path("/run/netlab") / name / "logs" / f"default_{webs[0]}" / "web.log"
        logged = log.stat().st_size if log.exists() else 0
        answered = {get_through_service(name).split()[0] for _ in range(9)}
        assert answered == set(webs)  # round-robin over all three, with nobody supervising
        assert log.stat().st_size > logged  # the runtime kept writing the containers' logs
        # a container ends while nobody watches: the runtime keeps its exit for the next one
        crashed = f"default/{webs[1]}/web"
        os.kill(running[crashed][0], signal.SIGKILL)

        adopt = netlab("up", "-d", "--adopt", str(path))
        assert "runs in the background" in adopt.stdout
        after = pods(name)
        assert set(after) == set(before)
        for pod, obj in after.items():
            assert obj["status"]["podIP"] == before[pod]["status"]["podIP"]
        # healthy containers were not restarted: the very same processes
        now = containers(name)
        for ident, process in running.items():
            if ident != crashed:
                assert now[ident] == process, ident

        # the one that ended is restarted, as its restartPolicy says
        assert wait_for(lambda: status_of(name, webs[1])["restartCount"] == 1, 10, 0.2)
        assert wait_for(lambda: status_of(name, webs[1])["ready"], 10, 0.2)
        assert containers(name)[crashed] != running[crashed]
        # what the containers wrote while nobody supervised is in their logs
        assert '"GET / HTTP/1.1" 200' in netlab("--lab", name, "logs", webs[0]).stdout

        # the controllers act again: a deleted pod is replaced, and the client finds it
        netlab("--lab", name, "delete", "pod", webs[2])
        assert wait_for(
            lambda: (
                len([n for n in pods(name) if n.startswith("web-")]) == 3
                and webs[2] not in pods(name)
            ),
            15,
            0.2,
        )
        fresh = next(n for n in pods(name) if n.startswith("web-") and n not in webs)
        assert wait_for(
            lambda: fresh in {get_through_service(name).split()[0] for _ in range(6)}, 10
        )

        if store == "embedded":  # a graceful hand-over: detach, adopt again
            # what clients changed of running pods is taken over too: a released pod
            # stays released, an annotation stays
            kube = [str(KUBECTL["1.35"]), "--kubeconfig", f"/run/netlab/{name}/kubeconfig"]
            released = sorted(n for n in pods(name) if n.startswith("web-"))[0]
            for args in (["label", "pod", released, "app=debug", "--overwrite"],
                         ["annotate", "pod", "client", "note=kept"]):  # fmt: skip
                subprocess.run([*kube, *args], check=True, capture_output=True, timeout=30)
            assert wait_for(lambda: len(serving_webs(name)) == 3, 15, 0.2)
            netlab("--lab", name, "detach")
            kept = containers(name)
            netlab("up", "-d", "--adopt", str(path))
            assert containers(name) == kept
            after = pods(name)
            assert after["client"]["metadata"]["annotations"]["note"] == "kept"
            assert after[released]["metadata"]["labels"]["app"] == "debug"
            assert "ownerReferences" not in after[released]["metadata"]
            assert len(serving_webs(name)) == 3  # no fourth replica after the take-over
            assert get_through_service(name).split()[0] in serving_webs(name)
    finally:
        netlab("--lab", name, "down", check=False)
        if not wait_for(
            lambda: not [n for n in lab_namespaces() if n.startswith(f"nl-{name}")], 10
        ):
            netlab("clean", "--force", "--lab", name, check=False)
    assert not [n for n in lab_namespaces() if n.startswith(f"nl-{name}")]
    assert not (Path("/run/netlab") / name).exists()


def test_adopting_a_lab_that_is_not_running_says_so_and_builds_nothing(tmp_path):
    path = tmp_path / "tnoadopt.yaml"
    path.write_text(LAB.format(name="tnoadopt", store="embedded"))
    result = netlab("up", "-d", "--adopt", str(path), check=False)
    assert result.returncode != 0
    assert "lab tnoadopt is not running" in result.stderr and "netlab up" in result.stderr
    assert not [n for n in lab_namespaces() if n.startswith("nl-tnoadopt")]
    assert not Path("/run/netlab/tnoadopt").exists()
