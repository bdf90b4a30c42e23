"""`netlab draw` against a real lab: 2 racks x 2 nodes, a Deployment behind a
ClusterIP and a headless Service; the picture names every pod, node, rack,
router and Service the lab API lists."""

from __future__ import annotations

import os
import shutil
import xml.etree.ElementTree as ET

import pytest

from netlab import cli
from netlab.client import LabClient
from netlab.lab import Lab
from tests.root.conftest import lab_namespaces, two_rack_builder

pytestmark = [
    pytest.mark.root,
    pytest.mark.skipif(shutil.which("dot") is None, reason="graphviz `dot` missing"),
]

NAME = "tdraw"


@pytest.fixture(scope="module")
def lab():
    b = two_rack_builder(NAME)
    b.add_deployment(
        "web", replicas=3, command=["python3", "-m", "http.server", "8080"], ports=[8080]
    )
    b.add_service("web", ports=[(80, 8080, "http")], selector={"app": "web"})
    b.add_service("web-pods", headless=True, selector={"app": "web"})
    with Lab(b.build()) as running:
        running.wait_endpoints("default", "web", count=3)
        yield running
    assert not [n for n in lab_namespaces() if n.startswith(f"nl-{NAME}")]


def svg_text(data: bytes) -> str:
    root = ET.fromstring(data)
    return "\n".join("".join(el.itertext()) for el in root.iter() if el.tag.endswith("text"))


def draw(capsys, *args: str) -> tuple[int, str, str]:
    capsys.readouterr()
    status = cli.main(["--lab", NAME, "draw", *args])
    out, err = capsys.readouterr()
    return status, out, err


def test_the_picture_names_everything_the_api_lists(lab, capsys, tmp_path):
    client = LabClient(lab.run_dir / "api.sock")
    topology = client.topology()
    pods = client.list("pods")["items"]
    out = tmp_path / "lab.svg"
    status, stdout, _ = draw(capsys, "-o", str(out))
    assert status == 0
    assert stdout.strip() == f"wrote {out} ({len(pods)} pods, 4 nodes)"
    assert os.listdir(tmp_path) == ["lab.svg"]
    text = svg_text(out.read_bytes())
    for pod in pods:
        assert pod["metadata"]["name"] in text and pod["status"]["podIP"] in text
    for node in topology["nodes"]:
        assert node["name"] in text and node["address"] in text and node["vtepIP"] in text
    for rack in topology["racks"]:
        assert rack["name"] in text and rack["subnet"] in text
    for router in topology["routers"]:
        assert router["name"] in text
        assert all(port["address"] in text for port in router["ports"])
    vip = client.get("services", "web")["spec"]["clusterIP"]
    assert vip in text and "web-pods" in text and "headless" in text
    assert "VXLAN VNI 1" in text


def test_png_dot_stdout_all_namespaces_and_no_pods(lab, capsys, tmp_path):
    png, dot = tmp_path / "lab.png", tmp_path / "lab.dot"
    assert draw(capsys, "-o", str(png))[0] == 0
    assert png.read_bytes().startswith(b"\x89PNG")
    assert draw(capsys, "-o", str(dot), "--no-pods")[0] == 0
    assert dot.read_text().startswith("digraph") and "pods on" not in dot.read_text()
    status, stdout, _ = draw(capsys, "-o", "-", "-A")
    assert status == 0 and stdout.startswith("<?xml")
    client = LabClient(lab.run_dir / "api.sock")
    system = client.list("pods", namespace="kube-system")["items"]
    assert system, "the lab's DNS pod runs in kube-system"
    text = svg_text(stdout.encode())
    assert all(f"kube-system/{p['metadata']['name']}" in text for p in system)
    assert "kube-system/kube-dns" in text
    assert sorted(os.listdir(tmp_path)) == ["lab.dot", "lab.png"]


def test_without_dot_the_error_says_how_to_install_it(lab, capsys, tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    out = tmp_path / "lab.svg"
    status, _, stderr = draw(capsys, "-o", str(out))
    assert status == 1 and "apt-get install graphviz" in stderr
    assert not out.exists() and os.listdir(tmp_path) == []
