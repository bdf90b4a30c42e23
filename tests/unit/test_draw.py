"""`netlab draw` without root: DOT from dict fixtures, laid out by the real `dot`."""

from __future__ import annotations

import argparse
import io
import os
import shutil
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from netlab import draw
from netlab.client import LabClient
from netlab.draw import picture
from netlab.draw import render as draw_render
from netlab.errors import NetlabError

needs_dot = pytest.mark.skipif(shutil.which("dot") is None, reason="graphviz `dot` missing")


def fake_lab(
    racks: int,
    nodes_per_rack: int,
    pods_per_node: int,
    direct_routing: bool = False,
    pod_name=lambda r, n, p: f"web-{r}{n}-{p:02d}",
) -> tuple[dict, list[dict], list[dict], list[dict]]:
    """(topology, pods, services, endpoints) as the lab API serves them."""
    topology = {
        "kind": "Topology",
        "apiVersion": "netlab.io/v1",
        "metadata": {"name": "demo"},
        "netns": "nl-demo",
        "overlay": {
            "backend": "vxlan",
            "vni": 1,
            "port": 8472,
            "network": "10.244.0.0/16",
            "directRouting": direct_routing,
            "device": "flannel.1",
            "mtu": 1450,
        },
        "serviceNetwork": "10.96.0.0/12",
        "racks": [],
        "routers": [{"name": "spine", "netns": "nl-demo-spine", "ports": []}],
        "nodes": [],
    }
    pods: list[dict] = []
    index = 0
    for r in range(1, racks + 1):
        rack = f"rack{r}"
        topology["racks"].append({"name": rack, "subnet": f"192.168.{r}.0/24", "bridge": rack})
        topology["routers"][0]["ports"].append(
            {"rack": rack, "ifname": f"spine-eth{r - 1}", "address": f"192.168.{r}.1/24"}
        )
        for n in range(1, nodes_per_rack + 1):
            index += 1
            node = f"n{r}{n}"
            topology["nodes"].append(
                {
                    "name": node,
                    "rack": rack,
                    "netns": f"nl-demo-{node}",
                    "address": f"192.168.{r}.{10 + n}/24",
                    "uplink": "eth0",
                    "podCIDR": f"10.244.{index}.0/24",
                    "vtepIP": f"10.244.{index}.0",
                    "vtepMAC": f"0e:00:00:00:00:{index:02x}",
                    "cniAddress": f"10.244.{index}.1/24",
                }
            )
            for p in range(pods_per_node):
                pods.append(
                    {
                        "kind": "Pod",
                        "metadata": {
                            "name": pod_name(r, n, p),
                            "namespace": "default",
                            "labels": {"app": "web" if p % 2 == 0 else "db"},
                        },
                        "spec": {"nodeName": node},
                        "status": {
                            "phase": "Running",
                            "podIP": f"10.244.{index}.{p + 2}",
                            "conditions": [{"type": "Ready", "status": "True"}],
                        },
                    }
                )
    services = [
        {
            "kind": "Service",
            "metadata": {"name": "web", "namespace": "default"},
            "spec": {
                "clusterIP": "10.96.0.20",
                "ports": [{"name": "http", "port": 80, "targetPort": 8080, "protocol": "TCP"}],
            },
        },
        {
            "kind": "Service",
            "metadata": {"name": "db", "namespace": "default"},
            "spec": {"clusterIP": "None", "ports": []},
        },
    ]

    def subsets(app: str) -> list[dict]:
        chosen = [p for p in pods if p["metadata"]["labels"]["app"] == app]
        addresses = [
            {
                "ip": p["status"]["podIP"],
                "nodeName": p["spec"]["nodeName"],
                "targetRef": {"kind": "Pod", "name": p["metadata"]["name"], "namespace": "default"},
            }
            for p in chosen
        ]
        return (
            [{"addresses": addresses, "ports": [{"name": "http", "port": 8080}]}] if chosen else []
        )

    endpoints = [
        {
            "kind": "Endpoints",
            "metadata": {"name": "web", "namespace": "default"},
            "subsets": subsets("web"),
        },
        {
            "kind": "Endpoints",
            "metadata": {"name": "db", "namespace": "default"},
            "subsets": subsets("db"),
        },
    ]
    return topology, pods, services, endpoints


def svg_text(dot_text: str) -> str:
    """Lay out with the real `dot`, parse the SVG, return all its text."""
    svg = draw_render.render(dot_text, "svg")
    root = ET.fromstring(svg)
    return "\n".join("".join(el.itertext()) for el in root.iter() if el.tag.endswith("text"))


@needs_dot
@pytest.mark.parametrize("shape", [(2, 2, 3), (4, 4, 8)], ids=["2-rack", "4x4x8"])
def test_picture_shows_every_pod_node_rack_router_service(shape):
    topology, pods, services, endpoints = fake_lab(*shape)
    text = svg_text(draw.build_dot(topology, pods, services, endpoints))
    for pod in pods:
        assert pod["metadata"]["name"] in text
        assert pod["status"]["podIP"] in text
    for node in topology["nodes"]:
        assert node["name"] in text and node["address"] in text and node["podCIDR"] in text
    for rack in topology["racks"]:
        assert rack["name"] in text and rack["subnet"] in text
    assert "spine" in text and "192.168.2.1/24" in text
    assert "web" in text and "10.96.0.20" in text and "headless" in text


def test_overlay_hub_lists_few_tunnels_and_counts_many():
    small = draw.build_dot(*fake_lab(2, 2, 1))
    assert "6 tunnels (every pair of nodes)" in small  # vxlan without directRouting: all pairs
    assert "n11 \u21c4 n21" in small and "n21 \u21c4 n22" in small
    assert small.count("overlay -> b") == 2 and "VXLAN VNI 1" in small
    big = draw.build_dot(*fake_lab(4, 4, 8))
    assert "120 tunnels (every pair of nodes)" in big and "\u21c4" not in big
    assert big.count("overlay -> b") == 4  # one edge per rack, not per node
    alone = draw.build_dot(*fake_lab(1, 1, 1))  # one node: no tunnel, no hub
    assert "overlay -> " not in alone and "overlay [" not in alone


def test_direct_routing_draws_direct_routes_within_a_rack():
    dot = draw.build_dot(*fake_lab(2, 2, 1, direct_routing=True))
    assert dot.count('label="direct"') == 2
    assert "4 tunnels (nodes on different racks)" in dot and "2 direct routes" in dot
    assert "n11 \u21c4 n12" not in dot and "n11 \u21c4 n21" in dot
    hub = draw.build_dot(*fake_lab(4, 4, 1, direct_routing=True))
    assert "96 tunnels" in hub and "24 direct routes (same rack)" in hub
    assert 'label="direct"' not in hub  # too many to draw


def test_endpoint_edges_per_pod_per_node_or_per_rack():
    topology, pods, services, endpoints = fake_lab(2, 2, 4)
    dot = draw.build_dot(topology, pods, services, endpoints)
    assert dot.count(":e -> s") == 16  # 8 web + 8 db endpoints, each to its pod's row
    assert "\u25a0" not in dot.split("\n", 2)[2]  # no marks needed (the legend has one)
    topology, pods, services, endpoints = fake_lab(2, 2, 8)
    dot = draw.build_dot(topology, pods, services, endpoints)
    assert ":e -> s" not in dot  # 16 endpoints per Service: counted, one edge per node
    assert dot.count('label="\u00d74"') == 8 and "ltail" not in dot
    assert dot.count("<font color='#2e7d32'>\u25a0</font>") == 16  # db's pods marked
    topology, pods, services, endpoints = fake_lab(4, 4, 8)
    dot = draw.build_dot(topology, pods, services, endpoints)
    assert dot.count('label="\u00d716"') == 8  # on 16 nodes: one edge per rack
    assert dot.count('ltail="cluster_k') == 8
    no_pods = draw.build_dot(topology, pods, services, endpoints, show_pods=False)
    assert "web-11-00" not in no_pods and "<i>8 pods</i>" in no_pods
    assert no_pods.count('label="\u00d716"') == 8 and "\u25a0</font>" not in no_pods
    few = draw.build_dot(*fake_lab(2, 2, 8), show_pods=False)
    assert few.count('label="\u00d74"') == 8 and "-> s0 " in few


def test_services_on_the_bottom_row_and_racks_as_stacked_columns():
    dot = draw.build_dot(*fake_lab(4, 4, 2))
    assert "{ rank=sink; s0 s1 }" in dot
    # 16 nodes: each rack a column of 4, each node under the previous one's pod table
    assert dot.count('style="invis"') == 12 and "p0 -> n1 " in dot and "p3 -> n4" not in dot
    assert dot.count('headport="e"') == 12  # stacked nodes are cabled from the side
    wide = draw.build_dot(*fake_lab(1, 9, 1))  # 9 nodes on one rack: columns of 3
    assert wide.count('style="invis"') == 6 and "p2 -> n3" not in wide


def test_not_ready_pods_and_endpoints():
    topology, pods, services, endpoints = fake_lab(1, 2, 2)
    pods[0]["status"]["conditions"] = [{"type": "Ready", "status": "False"}]
    pods[1]["status"]["phase"] = "Failed"
    subset = endpoints[0]["subsets"][0]
    subset["notReadyAddresses"] = [subset["addresses"].pop(0)]
    dot = draw.build_dot(topology, pods, services, endpoints)
    assert picture.COLORS["pending"] in dot and picture.COLORS["failed"] in dot
    service_edges = [line for line in dot.splitlines() if ":e -> s" in line]
    assert len(service_edges) == 4
    dashed = [line for line in service_edges if 'style="dashed"' in line]
    assert len(dashed) == 1 and dashed[0].startswith("  p0:r0:e -> s1 ")  # web-11-00 to web


@needs_dot
def test_odd_names_are_escaped():
    odd = [
        "a&b<c>\"d'e",
        "back\\slash",
        "uni\u00e9\u2192code",
        "ctl\x01x",
        "brace{}[];,=",
        "x" * 80,
        "new\nline",
        "]]></text><x/>",
        "&amp;&#92;",
        "\\N\\G\\L\\\\",
    ]
    names = iter(odd + [f"p{i}" for i in range(10)])
    topology, pods, services, endpoints = fake_lab(1, 2, 5, pod_name=lambda r, n, p: next(names))
    topology["racks"][0]["name"] = topology["nodes"][0]["rack"] = 'r<1>&"'
    topology["nodes"][1]["rack"] = 'r<1>&"'
    topology["routers"][0]["ports"][0]["rack"] = 'r<1>&"'
    topology["routers"][0]["name"] = "sp]ne\\N"
    services[0]["metadata"]["name"] = "<svc>"
    text = svg_text(draw.build_dot(topology, pods, services, endpoints))
    for name in odd:
        assert name.replace("\x01", "\ufffd").replace("\n", "") in text.replace("\n", "")
    assert 'r<1>&"' in text and "sp]ne\\N" in text and "<svc>" in text


def test_pods_off_any_node_and_pods_in_other_namespaces():
    topology, pods, services, endpoints = fake_lab(1, 1, 1)
    pods.append(
        {
            "metadata": {"name": "lost", "namespace": "kube-system"},
            "spec": {},
            "status": {"phase": "Pending"},
        }
    )
    dot = draw.build_dot(topology, pods, services, endpoints, show_namespace=True)
    assert "pods on no node" in dot and "kube-system/lost" in dot
    assert "web-11-00" in dot and "default/" not in dot  # only other namespaces are named


class FakeClient:
    def __init__(self, lab):
        self.lab = lab
        self.calls: list[tuple] = []

    def topology(self) -> dict:
        return self.lab[0]

    def list(self, resource, namespace=None, all_namespaces=False, **_):
        self.calls.append((resource, namespace, all_namespaces))
        items = {"pods": self.lab[1], "services": self.lab[2], "endpoints": self.lab[3]}[resource]
        return {"items": items}

    view = LabClient.view  # the real fetch, over the fake list() and topology()


def args(*argv: str) -> argparse.Namespace:
    p = argparse.ArgumentParser()
    draw.configure_parser(p)
    return p.parse_args(list(argv))


@needs_dot
@pytest.mark.parametrize("suffix", ["svg", "png", "dot"])
def test_run_writes_the_file_by_suffix(tmp_path, capsys, suffix):
    out = tmp_path / f"lab.{suffix}"
    client = FakeClient(fake_lab(2, 2, 2))
    assert draw.run(args("-o", str(out), "-n", "team"), client) == 0
    assert capsys.readouterr().out.strip() == f"wrote {out} (8 pods, 4 nodes)"
    data = out.read_bytes()
    magic = {"svg": b"<?xml", "png": b"\x89PNG", "dot": b"digraph"}[suffix]
    assert data.startswith(magic)
    assert [c[1] for c in client.calls] == ["team"] * 3
    assert os.listdir(tmp_path) == [out.name]


@needs_dot
def test_run_to_stdout_and_all_namespaces(capsys):
    client = FakeClient(fake_lab(1, 1, 1))
    buffer = io.BytesIO()
    assert draw.run(args("-o", "-", "-A"), client, stdout=buffer) == 0
    assert buffer.getvalue().startswith(b"<?xml")
    assert "web-11-00" in "".join(ET.fromstring(buffer.getvalue()).itertext())
    assert capsys.readouterr().out == ""
    assert all(c[2] for c in client.calls)


def test_run_defaults_to_the_default_namespace_and_lab_svg():
    parsed = args()
    assert parsed.output == "lab.svg" and not parsed.no_pods and not parsed.all_namespaces
    client = FakeClient(fake_lab(1, 1, 1))
    with pytest.raises(NetlabError, match="format"):
        draw.run(args("-o", "lab.jpg"), client)
    assert client.calls == []  # a bad name is refused before asking the lab


def test_failed_dot_leaves_nothing(tmp_path, monkeypatch):
    out = tmp_path / "lab.svg"
    out.write_bytes(b"old picture")
    monkeypatch.setattr(
        draw_render, "render", lambda text, fmt: (_ for _ in ()).throw(NetlabError("boom"))
    )
    with pytest.raises(NetlabError, match="boom"):
        draw.run(args("-o", str(out)), FakeClient(fake_lab(1, 1, 1)))
    assert out.read_bytes() == b"old picture" and os.listdir(tmp_path) == ["lab.svg"]


@needs_dot
def test_dot_errors_are_netlab_errors(tmp_path):
    with pytest.raises(NetlabError, match="dot -Tsvg. failed"):
        draw_render.render("digraph { a -> }", "svg")


def test_missing_dot_says_how_to_install(monkeypatch):
    monkeypatch.setattr(shutil, "which", lambda name: None)
    with pytest.raises(NetlabError, match="apt-get install graphviz"):
        draw_render.render("digraph {}", "svg")
    assert draw_render.render("digraph {}", "dot") == b"digraph {}"


def test_write_atomic_cleans_up_when_the_write_fails(tmp_path, monkeypatch):
    out = tmp_path / "lab.png"

    def fail(*_):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", fail)
    with pytest.raises(NetlabError, match="cannot write .*lab.png: disk full"):
        draw_render.write_atomic(out, b"data")
    assert os.listdir(tmp_path) == []
    monkeypatch.undo()
    with pytest.raises(NetlabError, match="cannot write"):
        draw_render.write_atomic(tmp_path / "no-such-dir" / "lab.svg", b"data")


def test_output_target():
    assert draw_render.output_target("-") == ("svg", None)
    assert draw_render.output_target("x/LAB.PNG") == ("png", Path("x/LAB.PNG"))
    assert draw_render.output_target("lab.gv")[0] == "dot"
