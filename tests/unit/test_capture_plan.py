"""What a capture covers, decided before any socket opens: targets resolved to
interfaces, filters compiled by libpcap, and the address book stored beside
each capture."""

from __future__ import annotations

import pytest

from netlab.capture import bpf, targets
from netlab.capture.addressbook import AddressBook, Entry
from netlab.capture.sockets import Interface
from netlab.errors import NetlabError

TOPOLOGY = {
    "apiVersion": "netlab.io/v1",
    "kind": "Topology",
    "metadata": {"name": "demo"},
    "netns": "nl-demo",
    "overlay": {"port": 8472, "vni": 1},
    "racks": [
        {"name": "rack1", "subnet": "192.168.1.0/24", "bridge": "rack1"},
        {"name": "rack2", "subnet": "192.168.2.0/24", "bridge": "rack2"},
    ],
    "routers": [
        {
            "name": "spine",
            "netns": "nl-demo-spine",
            "ports": [
                {"rack": "rack1", "ifname": "eth0", "address": "192.168.1.1/24"},
                {"rack": "rack2", "ifname": "eth1", "address": "192.168.2.1/24"},
            ],
        }
    ],
    "nodes": [
        {
            "name": "n1",
            "rack": "rack1",
            "netns": "nl-demo-n1",
            "address": "192.168.1.11/24",
            "vtepIP": "10.244.1.0",
            "vtepMAC": "AA:00:00:00:00:01",
            "cniAddress": "10.244.1.1/24",
            "cniMAC": "0a:58:0a:f4:01:01",
        },
        {
            "name": "n3",
            "rack": "rack2",
            "netns": "nl-demo-n3",
            "address": "192.168.2.11/24",
            "vtepIP": "10.244.3.0",
            "vtepMAC": "aa:00:00:00:00:03",
            "cniAddress": "10.244.3.1/24",
            "cniMAC": "0a:58:0a:f4:03:01",
        },
    ],
}


def pod(name: str, ip: str, node: str, namespace: str = "default") -> dict:
    return {
        "metadata": {
            "name": name,
            "namespace": namespace,
            "annotations": {"netlab.io/netns": f"nl-demo-{namespace}-{name}"},
        },
        "spec": {"nodeName": node},
        "status": {"podIP": ip},
    }


PODS = [
    pod("client", "10.244.1.2", "n1"),
    pod("web-1", "10.244.3.2", "n3"),
    pod("dns-1", "10.244.3.3", "n3", "kube-system"),
]
SERVICES = [
    {"metadata": {"name": "web", "namespace": "default"},
     "spec": {"clusterIP": "10.96.0.20", "ports": [{"port": 80}]}},
    {"metadata": {"name": "web-pods", "namespace": "default"},
     "spec": {"clusterIP": "None", "ports": [{"port": 8080}]}},
    {"metadata": {"name": "kube-dns", "namespace": "kube-system"},
     "spec": {"clusterIP": "10.96.0.10", "ports": [{"port": 53}]}},
]  # fmt: skip
ENDPOINTS = [
    {"metadata": {"name": "web", "namespace": "default"},
     "subsets": [{"addresses": [{"ip": "10.244.3.2"}], "ports": [{"port": 8080}]}]},
    {"metadata": {"name": "kube-dns", "namespace": "kube-system"},
     "subsets": [{"addresses": [{"ip": "10.244.3.3"}], "ports": [{"port": 53}]}]},
]  # fmt: skip


def resolve(*args: str, interfaces=(), namespace: str = "default") -> list[Interface]:
    return targets.resolve(list(args), list(interfaces), TOPOLOGY, PODS, ENDPOINTS, namespace)


@pytest.mark.parametrize(
    ("args", "interfaces", "namespace", "expected"),
    [
        (["pod/client"], [], "default", [("pod/client:eth0", "nl-demo-default-client", "eth0")]),
        (["client"], [], "default", [("pod/client:eth0", "nl-demo-default-client", "eth0")]),
        (["po/dns-1"], [], "kube-system",
         [("pod/kube-system/dns-1:eth0", "nl-demo-kube-system-dns-1", "eth0")]),
        (["node/n1"], [], "default", [("node/n1:eth0", "nl-demo-n1", "eth0")]),
        (["node/n1"], ["flannel.1,cni0"], "default",
         [("node/n1:flannel.1", "nl-demo-n1", "flannel.1"), ("node/n1:cni0", "nl-demo-n1", "cni0")]),
        (["router/spine"], [], "default",
         [("router/spine:eth0", "nl-demo-spine", "eth0"), ("router/spine:eth1", "nl-demo-spine", "eth1")]),
        (["router/spine"], ["eth1"], "default", [("router/spine:eth1", "nl-demo-spine", "eth1")]),
        (["rack/rack2"], [], "default", [("rack/rack2:rack2", "nl-demo", "rack2")]),
        (["svc/web"], [], "default", [("pod/web-1:eth0", "nl-demo-default-web-1", "eth0")]),
        (["all"], [], "default",
         [("node/n1:eth0", "nl-demo-n1", "eth0"), ("node/n3:eth0", "nl-demo-n3", "eth0"),
          ("router/spine:eth0", "nl-demo-spine", "eth0"), ("router/spine:eth1", "nl-demo-spine", "eth1")]),
        (["all"], ["flannel.1"], "default",
         [("node/n1:flannel.1", "nl-demo-n1", "flannel.1"), ("node/n3:flannel.1", "nl-demo-n3", "flannel.1")]),
        (["node/n1", "pod/client", "node/n1"], [], "default",
         [("node/n1:eth0", "nl-demo-n1", "eth0"), ("pod/client:eth0", "nl-demo-default-client", "eth0")]),
    ],
)  # fmt: skip
def test_targets_resolve_to_interfaces(args, interfaces, namespace, expected):
    found = resolve(*args, interfaces=interfaces, namespace=namespace)
    assert [(i.label, i.netns, i.ifname) for i in found] == expected


def test_only_rack_bridges_are_captured_promiscuously():
    assert [i.promiscuous for i in resolve("rack/rack1", "node/n1", "router/spine")] == [
        True,
        False,
        False,
        False,
    ]


@pytest.mark.parametrize(
    ("args", "interfaces", "message"),
    [
        (["pod/nope"], [], 'pod "nope" not found in namespace default; pods in default: client'),
        (["node/n9"], [], 'node "n9" not found; the lab has n1, n3'),
        (["router/leaf"], [], 'router "leaf" not found; the lab has spine'),
        (["rack/rack9"], [], 'rack "rack9" not found; the lab has rack1, rack2'),
        (["router/spine"], ["eth7"], "router/spine has no port eth7; it has eth0, eth1"),
        (["rack/rack1"], ["eth0"], "rack/rack1 is one bridge; -i does not apply"),
        (["pod/client"], ["cni0"], "pod/client has one interface, eth0"),
        (["svc/nothing"], [], 'service "nothing" not found'),
        (["gizmo/x"], [], "unknown kind 'gizmo'"),
        ([], [], "nothing to capture"),
    ],
)
def test_bad_targets_are_named_with_the_fix(args, interfaces, message):
    with pytest.raises(NetlabError, match=None) as err:
        resolve(*args, interfaces=interfaces)
    assert message in str(err.value)


def test_filters_compile_like_tcpdump_and_errors_name_the_expression():
    program = bpf.compile_filter("udp port 8472")
    assert program[-1][0] == 0x06 and len(program) > 4  # ends in a return
    assert bpf.compile_filter("") != []  # accept everything is still a program
    with pytest.raises(NetlabError, match="'udp prt 53'.*syntax error"):
        bpf.compile_filter("udp prt 53")


@pytest.fixture
def book() -> AddressBook:
    return AddressBook.from_objects(TOPOLOGY, PODS, SERVICES, ENDPOINTS)


@pytest.mark.parametrize(
    ("ip", "label", "kind", "rack"),
    [
        ("10.244.1.2", "client", "pod", "rack1"),
        ("10.244.3.3", "kube-system/dns-1", "pod", "rack2"),
        ("10.96.0.20", "svc/web", "service", None),
        ("10.96.0.10", "svc/kube-system/kube-dns", "service", None),
        ("192.168.1.11", "node/n1", "node", "rack1"),
        ("10.244.3.0", "n3:flannel.1", "vtep", "rack2"),
        ("10.244.1.1", "n1:cni0", "cni", "rack1"),
        ("192.168.2.1", "router/spine", "router", "rack2"),
    ],
)
def test_address_book_names_every_kind_of_address(book, ip, label, kind, rack):
    assert book.label(ip) == label
    assert book.lookup(ip).kind == kind and book.rack_of(ip) == rack


def test_address_book_services_macs_and_round_trip(book, tmp_path):
    assert book.label("10.1.2.3") == "10.1.2.3" and book.lookup("10.1.2.3") is None
    assert book.service_for("10.96.0.20", 80) == "svc/web"
    assert book.service_for("10.244.3.2", 8080) == "svc/web"  # after DNAT: an endpoint
    assert book.service_for("10.244.3.2", 9999) is None
    assert book.mac_label("0A:58:0A:F4:01:02") == "client"
    assert book.lookup_mac("aa:00:00:00:00:01") == Entry("vtep", "n1", None, "n1", "rack1")
    assert book.overlay_ports == {8472, 4789}
    capture = tmp_path / "x.pcapng"
    book.save(AddressBook.beside(capture))
    assert AddressBook.beside(capture).name == "x.pcapng.names.json"
    again = AddressBook.load(AddressBook.beside(capture))
    assert again.to_dict() == book.to_dict() and again.lab == "demo"


def test_a_broken_address_book_says_what_it_is(tmp_path):
    path = tmp_path / "x.names.json"
    path.write_text('{"format": "something else"}')
    with pytest.raises(NetlabError, match="not a netlab address book"):
        AddressBook.load(path)
    with pytest.raises(NetlabError, match="cannot read"):
        AddressBook.load(tmp_path / "missing.json")


def test_the_labs_topology_object_is_what_capture_resolves():
    from ipaddress import IPv4Network

    from netlab.objects import topology_object
    from netlab.plan import plan_lab
    from netlab.spec import LabBuilder

    b = LabBuilder("tp")
    b.add_rack("rack1", "192.168.1.0/24")
    b.add_rack("rack2", "192.168.2.0/24")
    b.add_node("n1", rack="rack1")
    b.add_node("n2", rack="rack2")
    plan = plan_lab(b.build())
    topology = topology_object(plan, plan.nodes, IPv4Network("10.96.0.0/12"))
    n1 = plan.node("n1")
    assert topology["nodes"][0] == {
        "name": "n1",
        "rack": "rack1",
        "netns": n1.netns,
        "address": str(n1.address),
        "uplink": "eth0",
        "labIfname": n1.lab_ifname,
        "podCIDR": str(n1.pod_cidr),
        "vtepIP": str(n1.vtep_ip),
        "vtepMAC": n1.vtep_mac,
        "cniAddress": str(n1.cni_address),
        "cniMAC": n1.cni_mac,
    }
    assert topology["overlay"]["port"] == 8472 and topology["overlay"]["device"] == "flannel.1"
    found = targets.resolve(["all", "rack/rack2"], [], topology, [], [])
    router = plan.routers[0]
    assert [i.label for i in found] == [
        "node/n1:eth0",
        "node/n2:eth0",
        *(f"router/{router.name}:{p.ifname}" for p in router.ports),
        "rack/rack2:rack2",
    ]
    book = AddressBook.from_objects(topology, [], [], [])
    assert book.label(str(n1.address.ip)) == "node/n1" and book.lab == "tp"
