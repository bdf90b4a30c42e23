"""Nodes join and leave a running lab; pods are replaced; containers restart."""

from __future__ import annotations

import time

import pytest

from netlab.lab import Lab
from tests.root.conftest import two_rack_builder, wait_for

pytestmark = pytest.mark.root


def vxlan_state(lab, node: str) -> tuple[str, str, str]:
    neigh = lab.node_exec(node, ["ip", "neigh", "show", "dev", "flannel.1"]).stdout
    fdb = lab.node_exec(node, ["bridge", "fdb", "show", "dev", "flannel.1"]).stdout
    routes = lab.node_exec(node, ["ip", "route"]).stdout
    return neigh, fdb, routes


def test_node_join_and_leave_update_every_node():
    b = two_rack_builder("tjoin")
    b.add_deployment("web", replicas=4, command=["sleep", "infinity"])
    with Lab(b.build()) as lab:
        new = lab.add_node("n5", rack="rack2")
        assert str(new.pod_cidr) == "10.244.5.0/24"
        for other in ("n1", "n2", "n3", "n4"):
            neigh, fdb, routes = vxlan_state(lab, other)
            assert f"{new.vtep_ip} lladdr {new.vtep_mac} PERMANENT" in neigh
            assert f"{new.vtep_mac} dst {new.address.ip} self permanent" in fdb
            assert f"{new.pod_cidr} via {new.vtep_ip} dev flannel.1" in routes
        # traffic follows: a pod on n1 reaches the new node's cni0 through the overlay
        result = lab.exec("a", ["ping", "-c", "2", "-i", "0.2", "-W", "2", str(new.pod_gateway)])
        assert result.returncode == 0, result.stdout
        assert lab.store.get("nodes", None, "n5")["spec"]["podCIDR"] == "10.244.5.0/24"

        # n3 hosts pod b and some web replicas: leaving takes them along
        victims = [p.name for p in lab.pod_list() if p.node == "n3" and p.owner == "web"]
        old = lab.nodes["n3"]
        lab.remove_node("n3")
        for other in ("n1", "n2", "n4", "n5"):
            neigh, fdb, routes = vxlan_state(lab, other)
            assert old.vtep_mac not in neigh and old.vtep_mac not in fdb
            assert str(old.pod_cidr) not in routes
        # the Deployment controller sees them gone and starts replacements elsewhere
        assert wait_for(lambda: len(lab.ready_pods("web")) == 4, 15)
        webs = [p for p in lab.pod_list() if p.owner == "web"]
        assert len(webs) == 4 and all(p.node != "n3" for p in webs)
        assert not set(victims) & {p.name for p in webs}
        for pod in webs:  # replacements are reachable
            assert (
                lab.exec("a", ["ping", "-c", "1", "-W", "2", str(pod.address.ip)]).returncode == 0
            )
        assert "nl-tjoin:n3" not in lab.node_exec("n1", ["ip", "netns", "list"]).stdout


def test_deleted_pod_is_replaced_and_its_processes_end():
    b = two_rack_builder("tdel")
    b.add_deployment("web", replicas=2, command=["sleep", "infinity"])
    with Lab(b.build()) as lab:
        victim = next(p for p in lab.pod_list() if p.owner == "web")
        pid = lab.pods[victim.key].procs["web"].pid
        lab.delete_pod(victim.name)
        assert not wait_for(lambda: _alive(pid), 0.1)
        assert wait_for(lambda: len(lab.ready_pods("web")) == 2, 15)
        webs = [p for p in lab.pod_list() if p.owner == "web"]
        assert len(webs) == 2 and victim.name not in {p.name for p in webs}
        assert all(p.name.startswith("web-") for p in webs)


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(")")[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


@pytest.mark.parametrize(
    "policy,exit_code,restarts",
    [("Always", 0, True), ("OnFailure", 1, True), ("OnFailure", 0, False), ("Never", 1, False)],
)
def test_restart_policy(policy, exit_code, restarts):
    b = LabBuilderOne(f"trs{policy[:2].lower()}{exit_code}")
    b.add_pod("job", command=["sh", "-c", f"echo run; exit {exit_code}"], restart_policy=policy)
    with Lab(b.build()) as lab:
        rt = lab.pods[("default", "job")]
        if restarts:
            assert wait_for(lambda: rt.status.containers[0].restarts >= 2, 5.0)
            assert lab.log_path(rt.plan, "job").read_text().count("run") >= 2
        else:
            time.sleep(1.0)
            assert rt.status.containers[0].restarts == 0
            phase = lab.store.get("pods", "default", "job")["status"]["phase"]
            assert phase == ("Succeeded" if exit_code == 0 else "Failed")


def LabBuilderOne(name: str):  # noqa: N802 (reads like a class)
    from netlab.spec import LabBuilder

    b = LabBuilder(name)
    b.add_rack("rack1", "192.168.1.0/24")
    b.add_node("n1", rack="rack1")
    return b


def test_direct_routing_same_rack_is_plain_route():
    b = two_rack_builder("tdirect", direct_routing=True)
    with Lab(b.build()) as lab:
        routes = lab.node_exec("n1", ["ip", "route"]).stdout
        n2, n3 = lab.nodes["n2"], lab.nodes["n3"]
        assert f"{n2.pod_cidr} via {n2.address.ip} dev eth0" in routes
        assert f"{n3.pod_cidr} via {n3.vtep_ip} dev flannel.1" in routes
        result = lab.exec(
            "a", ["ping", "-c", "2", "-i", "0.2", "-W", "2", str(lab.pod("c").address.ip)]
        )
        assert result.returncode == 0, result.stdout
