"""LabBuilder: the Python route to a LabSpec, through the same validator as lab files."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from netlab.errors import SpecError
from netlab.spec import LabBuilder, LabSpec, RouterSpec, load_lab, parse_lab

TOPOLOGIES = Path(__file__).resolve().parents[2] / "topologies"


def demo_builder() -> LabBuilder:
    b = LabBuilder("demo")
    b.add_rack("rack1", "192.168.1.0/24")
    b.add_rack("rack2", "192.168.2.0/24")
    for node, rack in [("n1", "rack1"), ("n2", "rack1"), ("n3", "rack2"), ("n4", "rack2")]:
        b.add_node(node, rack=rack)
    b.add_deployment(
        "web",
        replicas=3,
        command=["python3", "-m", "netlab.apps.echo", "80"],
        ports=[{"containerPort": 80, "name": "http"}],
        labels={"app": "web"},
        readiness_probe={"tcpSocket": {"port": "http"}},
    )
    b.add_service(
        "web", ports=[{"name": "http", "port": 80, "targetPort": "http"}], selector={"app": "web"}
    )
    b.add_service(
        "web-pods", ports=[{"name": "http", "port": 80}], selector={"app": "web"}, headless=True
    )
    b.add_deployment(
        "frontend",
        command=["python3", "-m", "netlab.apps.echo", "80"],
        ports=[{"containerPort": 80, "name": "http"}],
        labels={"app": "frontend"},
        env={"UPSTREAM": "http://web/"},
        readiness_probe={"tcpSocket": {"port": "http"}},
    )
    b.add_service(
        "frontend",
        ports=[{"name": "http", "port": 80, "targetPort": "http"}],
        selector={"app": "frontend"},
    )
    b.add_pod("client", command=["sleep", "infinity"], labels={"app": "client"})
    return b


def same_lab(a: LabSpec, b: LabSpec) -> bool:
    """Equal apart from where they came from."""
    return replace(a, source=None) == replace(b, source=None)


def test_builder_equals_demo_yaml() -> None:
    built = demo_builder().build()
    loaded = load_lab(TOPOLOGIES / "demo.yaml")
    assert built.source == "<builder>"
    assert same_lab(built, loaded)
    assert built.deployments[0].manifest["metadata"]["namespace"] == "default"


@pytest.mark.parametrize(
    ("racks", "per_rack", "replicas", "file"),
    [(4, 4, 128, "four-racks"), (8, 8, 512, "eight-racks")],
)
def test_builder_equals_benchmark_topologies(
    racks: int, per_rack: int, replicas: int, file: str
) -> None:
    b = LabBuilder({4: "four", 8: "eight"}[racks])
    for r in range(1, racks + 1):
        b.add_rack(f"rack{r}", f"192.168.{r}.0/24")
        for n in range(1, per_rack + 1):
            b.add_node(f"n{r}{n}", rack=f"rack{r}")
    b.add_deployment(
        "pause", replicas=replicas, command=["sleep", "infinity"], labels={"app": "pause"}
    )
    assert same_lab(b.build(), load_lab(TOPOLOGIES / f"{file}.yaml"))


def test_to_yaml_round_trips() -> None:
    b = demo_builder()
    b.add_router("spine", racks=["rack1", "rack2"])
    assert same_lab(parse_lab(b.to_yaml(), "rt.yaml"), b.build())


def test_options_reach_the_spec() -> None:
    b = LabBuilder(
        "opts",
        overlay_network="10.50.0.0/16",
        subnet_len=26,
        vni=7,
        port=4789,
        direct_routing=True,
        bandwidth=100,
    )
    b.add_node("n1", rack="rack1", labels={"disk": "ssd"})  # before its rack: resolved at build()
    b.add_rack("rack1", "192.168.1.0/24")
    b.add_rack("rack2", "192.168.2.0/24")
    b.add_node("n2", rack="rack2")
    assert b.add_router("core", racks=["rack1", "rack2"]) == "core"
    b.add_pod("db", command=["sleep", "infinity"], node_selector={"disk": "ssd"}, env={"A": "1"})
    b.add_pod(
        "pinned", command=["sleep"], args=["infinity"], node_name="n2", restart_policy="Never"
    )
    b.add_manifest(
        {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": "raw", "namespace": "lab"},
            "spec": {"containers": [{"name": "c", "command": ["true"]}]},
        }
    )
    spec = b.build()
    assert (str(spec.overlay.network), spec.overlay.subnet_len, spec.overlay.vni) == (
        "10.50.0.0/16",
        26,
        7,
    )
    assert (spec.overlay.port, spec.overlay.direct_routing, spec.links.bandwidth_mbit) == (
        4789,
        True,
        100.0,
    )
    assert spec.routers == (RouterSpec("core", ("rack1", "rack2")),)
    assert dict(spec.racks[0].nodes[0].labels) == {"disk": "ssd"}
    db, pinned, raw = spec.pods
    assert dict(db.template.node_selector) == {"disk": "ssd"}
    assert db.template.containers[0].env == (("A", "1"),)
    assert (pinned.template.node_name, pinned.template.restart_policy) == ("n2", "Never")
    assert pinned.template.containers[0].argv == ("sleep", "infinity")
    assert (raw.namespace, raw.name) == ("lab", "raw")


def test_documents_are_copies() -> None:
    b = demo_builder()
    docs = b.documents()
    docs[1]["spec"]["replicas"] = 99
    assert b.build().deployments[0].replicas == 3


def racks_and_nodes(b: LabBuilder) -> LabBuilder:
    b.add_rack("rack1", "192.168.1.0/24")
    b.add_node("n1", rack="rack1")
    return b


# (id, what to do to a builder with rack1/n1, path, message fragment, fix fragment)
ERRORS = [
    (
        "node-on-no-rack",
        lambda b: b.add_node("x", rack="r9"),
        "add_node('x')",
        "node 'x' is on no rack ('r9' does not exist)",
        "add_rack('r9', <subnet>) first",
    ),
    (
        "node-on-misspelt-rack",
        lambda b: b.add_node("x", rack="rakc1"),
        "add_node('x')",
        "node 'x' is on no rack ('rakc1' does not exist)",
        "did you mean 'rack1'?",
    ),
    (
        "duplicate-rack",
        lambda b: b.add_rack("rack1", "192.168.2.0/24"),
        "lab.racks[1].name",
        "'rack1' is already used by the rack at lab.racks[0].name",
        "rename",
    ),
    (
        "rack-without-nodes",
        lambda b: b.add_rack("rack2", "192.168.2.0/24"),
        "lab.racks[1].nodes",
        "a rack needs at least one node",
        "list its nodes",
    ),
    (
        "command-as-string",
        lambda b: b.add_pod("c", command="sleep infinity"),
        "Pod/c: spec.containers[0].command",
        "expected a list, got the string 'sleep infinity'",
        "YAML list",
    ),
    (
        "unsatisfiable-selector",
        lambda b: b.add_deployment("w", command=["true"], node_selector={"disk": "ssd"}),
        "Deployment/w: spec.template.spec.nodeSelector",
        "disk=ssd matches no node",
        "label a node",
    ),
    (
        "bad-vni",
        lambda b: setattr(b, "overlay", {**b.overlay, "Backend": {"VNI": -1}}),
        "lab.overlay.Backend.VNI",
        "-1 is out of range",
        "use 1..16777215",
    ),
]


@pytest.mark.parametrize(
    ("change", "path", "message", "fix"), [c[1:] for c in ERRORS], ids=[c[0] for c in ERRORS]
)
def test_builder_errors(change, path: str, message: str, fix: str) -> None:
    b = racks_and_nodes(LabBuilder("bad"))
    change(b)
    with pytest.raises(SpecError) as info:
        b.build()
    assert info.value.source == "<builder>"
    lines = [p.render(info.value.source) for p in info.value.problems]
    assert any(
        line.startswith(f"<builder>: {path}: ") and message in line and fix in line
        for line in lines
    ), lines


def test_builder_and_yaml_reject_alike() -> None:
    """The same mistake gives the same problems through either route (one validator)."""
    b = racks_and_nodes(LabBuilder("same"))
    b.add_rack("rack2", "192.168.1.0/25")
    b.add_node("n2", rack="rack2")
    with pytest.raises(SpecError) as built:
        b.build()
    with pytest.raises(SpecError) as parsed:
        parse_lab(b.to_yaml(), "same.yaml")
    assert built.value.problems == parsed.value.problems
    assert [p.path for p in built.value.problems] == ["lab.racks[1].subnet"]
