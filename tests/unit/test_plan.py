"""The plan layer, without root: addresses, routes, leases, placement, overlay entries."""

from __future__ import annotations

import importlib.util
from ipaddress import IPv4Address, IPv4Network
from pathlib import Path

import pytest

from netlab.plan import addressing, names, peer_entries, plan_lab, scheduler
from netlab.plan.addressing import AddressExhausted
from netlab.spec import LabBuilder, load_lab
from netlab.spec.model import OverlaySpec


def chain_spec():
    """The lab of topologies/leaf_spine.py: rack1 -r12- rack2 -r23- rack3."""
    path = Path(__file__).resolve().parents[2] / "topologies" / "leaf_spine.py"
    module_spec = importlib.util.spec_from_file_location("leaf_spine", path)
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
    return module.build()


def test_demo_plan_addresses_and_leases():
    plan = plan_lab(load_lab("topologies/demo.yaml"))
    nodes = {n.name: n for n in plan.nodes}
    assert [str(nodes[n].address) for n in ("n1", "n2", "n3", "n4")] == [
        "192.168.1.2/24",
        "192.168.1.3/24",
        "192.168.2.2/24",
        "192.168.2.3/24",
    ]
    assert [str(nodes[n].pod_cidr) for n in ("n1", "n2", "n3", "n4")] == [
        "10.244.1.0/24",
        "10.244.2.0/24",
        "10.244.3.0/24",
        "10.244.4.0/24",
    ]
    assert (
        str(nodes["n1"].vtep_ip) == "10.244.1.0" and str(nodes["n1"].cni_address) == "10.244.1.1/24"
    )
    spine = plan.routers[0]
    assert [(p.rack, str(p.address)) for p in spine.ports] == [
        ("rack1", "192.168.1.1/24"),
        ("rack2", "192.168.2.1/24"),
    ]
    assert [(str(r.dst), str(r.via)) for r in nodes["n1"].routes] == [
        ("192.168.2.0/24", "192.168.1.1")
    ]
    assert plan.overlay_mtu == 1450


def test_plan_is_deterministic():
    spec = load_lab("topologies/demo.yaml")
    assert plan_lab(spec) == plan_lab(spec)


@pytest.mark.parametrize(
    "node,dst,via",
    [
        ("n1", "192.168.2.0/24", "192.168.1.1"),
        ("n1", "192.168.3.0/24", "192.168.1.1"),
        ("n3", "192.168.1.0/24", "192.168.3.1"),
        ("n2", "192.168.1.0/24", "192.168.2.1"),
        ("n2", "192.168.3.0/24", "192.168.2.2"),
    ],
)
def test_routes_through_a_chain_of_routers(node, dst, via):
    plan = plan_lab(chain_spec())
    routes = {str(r.dst): str(r.via) for r in plan.node(node).routes}
    assert routes[dst] == via


def test_router_routes_reach_racks_it_is_not_on():
    plan = plan_lab(chain_spec())
    r12 = next(r for r in plan.routers if r.name == "r12")
    assert [(str(r.dst), str(r.via)) for r in r12.routes] == [("192.168.3.0/24", "192.168.2.2")]


@pytest.mark.parametrize(
    "network,subnet_len,taken,expected",
    [
        ("10.244.0.0/16", 24, [], "10.244.1.0/24"),  # Flannel skips the first subnet
        ("10.244.0.0/16", 24, ["10.244.1.0/24"], "10.244.2.0/24"),
        ("10.244.0.0/16", 24, ["10.244.2.0/24"], "10.244.1.0/24"),  # a freed lease is reused
        ("10.0.0.0/8", 16, [], "10.1.0.0/16"),
    ],
)
def test_allocate_lease(network, subnet_len, taken, expected):
    overlay = OverlaySpec(network=IPv4Network(network), subnet_len=subnet_len)
    assert str(addressing.allocate_lease(overlay, [IPv4Network(t) for t in taken])) == expected


def test_lease_exhaustion():
    overlay = OverlaySpec(network=IPv4Network("10.244.0.0/23"), subnet_len=24)
    with pytest.raises(AddressExhausted):
        addressing.allocate_lease(overlay, [IPv4Network("10.244.1.0/24")])


@pytest.mark.parametrize(
    "taken,expected",
    [([], "10.244.1.2/24"), (["10.244.1.2"], "10.244.1.3/24"), (["10.244.1.3"], "10.244.1.2/24")],
)
def test_allocate_pod_address(taken, expected):
    cidr = IPv4Network("10.244.1.0/24")
    assert str(addressing.allocate_pod_address(cidr, [IPv4Address(t) for t in taken])) == expected


def test_pod_addresses_run_out():
    cidr = IPv4Network("10.244.1.0/30")  # .1 cni0, .2 the only pod
    with pytest.raises(AddressExhausted):
        addressing.allocate_pod_address(cidr, [IPv4Address("10.244.1.2")])


def test_replicas_spread_over_racks_then_nodes():
    plan = plan_lab(load_lab("topologies/four-racks.yaml"))
    per_node: dict[str, int] = {}
    per_rack: dict[str, int] = {}
    for pod in plan.pods:
        per_node[pod.node] = per_node.get(pod.node, 0) + 1
        rack = plan.node(pod.node).rack
        per_rack[rack] = per_rack.get(rack, 0) + 1
    assert set(per_node.values()) == {8} and len(per_node) == 16
    assert set(per_rack.values()) == {32}


def test_first_replicas_land_on_different_racks():
    b = LabBuilder("spread")
    for rack in (1, 2):
        b.add_rack(f"rack{rack}", f"192.168.{rack}.0/24")
        for n in (1, 2):
            b.add_node(f"n{rack}{n}", rack=f"rack{rack}")
    b.add_deployment("web", replicas=2, command=["sleep", "infinity"])
    plan = plan_lab(b.build())
    assert {plan.node(p.node).rack for p in plan.pods} == {"rack1", "rack2"}


def test_node_selector_is_respected():
    b = LabBuilder("sel")
    b.add_rack("rack1", "192.168.1.0/24")
    b.add_node("n1", rack="rack1")
    b.add_node("n2", rack="rack1", labels={"disk": "ssd"})
    b.add_deployment("db", replicas=3, command=["sleep", "infinity"], node_selector={"disk": "ssd"})
    assert {p.node for p in plan_lab(b.build()).pods} == {"n2"}


def test_unschedulable():
    candidates = [scheduler.Candidate("n1", "rack1", {"a": "b"})]
    template = plan_lab(load_lab("topologies/demo.yaml")).pods[0].template
    from dataclasses import replace
    from types import MappingProxyType

    pinned = replace(template, node_selector=MappingProxyType({"a": "c"}))
    with pytest.raises(scheduler.Unschedulable):
        scheduler.place(pinned, candidates, [], {})


def test_pod_names_look_like_kubernetes_and_are_stable():
    plan = plan_lab(load_lab("topologies/demo.yaml"))
    web = [p for p in plan.pods if p.owner == "web"]
    assert len(web) == 3 and len({p.name for p in web}) == 3
    for pod in web:
        deployment, pod_hash, suffix = pod.name.split("-")
        assert deployment == "web" and len(pod_hash) == 10 and len(suffix) == 5
        assert set(pod_hash + suffix) <= set(scheduler.SAFE_ALPHABET)
        assert pod.labels["pod-template-hash"] == pod_hash
    assert next(p for p in plan.pods if p.name == "client").owner is None


@pytest.mark.parametrize(
    "direct,expected",
    [
        (False, {"n2": "vxlan", "n3": "vxlan", "n4": "vxlan"}),
        (True, {"n2": "direct", "n3": "vxlan", "n4": "vxlan"}),
    ],
)
def test_peer_entries(direct, expected):
    plan = plan_lab(load_lab("topologies/demo.yaml"))
    entries = peer_entries(plan.node("n1"), plan.nodes, direct)
    assert {e.peer: e.kind for e in entries} == expected
    n3 = next(e for e in entries if e.peer == "n3")
    assert (str(n3.pod_cidr), str(n3.vtep_ip), str(n3.underlay_ip)) == (
        "10.244.3.0/24",
        "10.244.3.0",
        "192.168.2.2",
    )
    assert n3.vtep_mac == plan.node("n3").vtep_mac


@pytest.mark.parametrize(
    "namespace,pod,expected",
    [("default", "web-0", "nl-demo.web-0"), ("kube-system", "dns", "nl-demo.kube-system_dns")],
)
def test_pod_netns_names(namespace, pod, expected):
    assert names.pod_netns("nl-demo", namespace, pod) == expected


def test_names_are_valid_interface_names():
    plan = plan_lab(load_lab("topologies/eight-racks.yaml"))
    ifnames = [n.lab_ifname for n in plan.nodes] + [p.host_ifname for p in plan.pods]
    ifnames += [port.lab_ifname for r in plan.routers for port in r.ports]
    assert all(len(name) <= 15 for name in ifnames)
    assert len(set(p.host_ifname for p in plan.pods)) == len(plan.pods)
    macs = [n.vtep_mac for n in plan.nodes]
    assert len(set(macs)) == len(macs) and all(int(m[:2], 16) & 0b11 == 0b10 for m in macs)


def test_pod_addresses_advance_like_host_local_ipam():
    """A new pod does not take the address a deleted pod just gave up."""
    from ipaddress import IPv4Address, IPv4Network

    from netlab.plan.addressing import allocate_pod_address

    cidr = IPv4Network("10.244.1.0/24")
    taken = [IPv4Address("10.244.1.2"), IPv4Address("10.244.1.4")]
    assert str(allocate_pod_address(cidr, taken).ip) == "10.244.1.3"
    # .3 was handed out and deleted since: the next one goes after it
    assert str(allocate_pod_address(cidr, taken, IPv4Address("10.244.1.3")).ip) == "10.244.1.5"
    # wraps around to the lowest free address after the end of the subnet
    assert str(allocate_pod_address(cidr, taken, IPv4Address("10.244.1.254")).ip) == "10.244.1.3"


# ---------------------------------------------------------------- requests against allocatable


def sized_lab(
    replicas: int, cpu: str = "600m", memory: str = "64Mi", nodes: str = ""
) -> LabBuilder:
    """Two racks of one node each, 1 cpu and 1Gi allocatable, and a Deployment whose pods
    request `cpu` and `memory`."""
    b = LabBuilder("fit")
    for rack in (1, 2):
        b.add_rack(f"rack{rack}", f"192.168.{rack}.0/24")
        b.add_node(f"n{rack}", rack=f"rack{rack}", allocatable={"cpu": "1", "memory": "1Gi"})
    b.add_manifest(
        {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": "web"},
            "spec": {
                "replicas": replicas,
                "selector": {"matchLabels": {"app": "web"}},
                "template": {
                    "metadata": {"labels": {"app": "web"}},
                    "spec": {
                        "containers": [
                            {
                                "name": "web",
                                "command": ["sleep", "infinity"],
                                "resources": {"requests": {"cpu": cpu, "memory": memory}},
                            }
                        ]
                    },
                },
            },
        }
    )
    return b


def test_requests_fill_nodes_up_to_their_allocatable():
    plan = plan_lab(sized_lab(2).build())
    assert sorted(p.node for p in plan.pods if p.owner == "web") == ["n1", "n2"]


def test_a_lab_file_whose_pods_do_not_fit_is_refused_naming_pod_resource_and_fix():
    with pytest.raises(scheduler.Unschedulable) as info:
        plan_lab(sized_lab(3).build())
    assert info.value.scheduler_message == (
        "Deployment default/web: pod 3 of 3 fits on no node: "
        "0/2 nodes are available: 2 Insufficient cpu."
    )
    assert info.value.fix == (
        "The pod requests 600m cpu: lower its containers' resources.requests, raise cpu in "
        "the nodes' allocatable (lab.racks[].nodes[].allocatable) or add a node"
    )
    assert str(info.value).startswith("Deployment default/web: pod 3 of 3 fits on no node: 0/2")


def test_every_reason_is_counted_as_kube_scheduler_counts_them():
    spec = sized_lab(1, cpu="2", memory="2Gi").build()
    (deployment,) = [d for d in spec.deployments if d.name == "web"]
    nodes = [
        scheduler.Candidate("n1", "rack1", {}, None, 1000, 2**30),
        scheduler.Candidate("n2", "rack2", {}, 1, 4000, 2**30),
        scheduler.Candidate("n3", "rack2", {}, None, 4000, 4 * 2**30),
    ]
    with pytest.raises(scheduler.Unschedulable) as info:
        scheduler.place(
            deployment.template,
            nodes,
            [],
            {"n2": 1},
            {"n3": (3000, 0)},
            {"node(s) were unschedulable": 1},
        )
    assert info.value.scheduler_message == (
        "0/4 nodes are available: 1 Too many pods, 1 node(s) were unschedulable, "
        "2 Insufficient cpu, 2 Insufficient memory."
    )
    assert info.value.fix.startswith("Raise the nodes' allocatable.pods (maxPods)")
    assert "the pod requests 2 cpu and 2Gi memory" in info.value.fix
    assert "allocatable.pods" in info.value.fix


def test_pods_without_requests_fit_anywhere_and_requests_prefer_the_emptier_node():
    b = sized_lab(0)
    b.add_deployment("idle", replicas=4, command=["sleep", "infinity"])
    spec = b.build()
    nodes = [scheduler.Candidate("n1", "r", {}, None, 1000, 2**30)]
    (idle,) = [d for d in spec.deployments if d.name == "idle"]
    assert scheduler.place(idle.template, nodes, [], {}, {"n1": (1000, 2**30)}) == "n1"
    (web,) = [d for d in spec.deployments if d.name == "web"]
    both = [nodes[0], scheduler.Candidate("n2", "r", {}, None, 1000, 2**30)]
    # same rack, no pods of the group: the node whose allocatable would be less used
    assert scheduler.place(web.template, both, [], {}, {"n1": (300, 0)}) == "n2"
    assert scheduler.place(web.template, both, [], {}, {"n2": (300, 0)}) == "n1"


def test_a_running_lab_counts_the_pods_already_on_each_node():
    from netlab.plan import PodPlacer

    spec = sized_lab(2).build()
    plan = plan_lab(spec)
    (web,) = [d for d in spec.deployments if d.name == "web"]
    placer = PodPlacer(spec.name, plan.nodes, plan.pods)
    placer.excluded = {"node(s) were unschedulable": 1}
    rng = scheduler.name_rng(spec.name, "default", "web", "h")
    with pytest.raises(scheduler.Unschedulable) as info:
        placer.add_replica(web, "h", rng)
    assert info.value.scheduler_message == (
        "0/3 nodes are available: 1 node(s) were unschedulable, 2 Insufficient cpu."
    )
    smaller = PodPlacer(spec.name, plan.nodes, [p for p in plan.pods if p.node != "n2"])
    assert smaller.add_replica(web, "h", rng).node == "n2"
