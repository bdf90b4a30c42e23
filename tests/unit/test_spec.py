"""The spec layer: lab files load into LabSpecs, and every mistake is named with a fix."""

from __future__ import annotations

from ipaddress import IPv4Network
from pathlib import Path

import pytest

from netlab.errors import SpecError
from netlab.spec import (
    DEFAULT_ROUTER,
    ContainerPort,
    LabSpec,
    LinkSpec,
    OverlaySpec,
    RouterSpec,
    lab_from_documents,
    load_lab,
    parse_lab,
)

TOPOLOGIES = Path(__file__).resolve().parents[2] / "topologies"

TWO_RACKS = """\
lab:
  name: t
  racks:
    - name: rack1
      subnet: 192.168.1.0/24
      nodes: [n1, {name: n2, labels: {disk: ssd}}]
    - name: rack2
      subnet: 192.168.2.0/24
      nodes: [n3]
"""

WEB = """\
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: web}
spec:
  replicas: 2
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec:
      containers:
        - name: web
          command: [python3, -m, http.server, "80"]
          ports: [{containerPort: 80, name: http}]
"""


def racks_yaml(*racks: tuple[str, str, str], extra: str = "") -> str:
    """A lab document with racks given as (name, subnet, nodes-list-text)."""
    lines = ["lab:", "  name: t", extra, "  racks:"]
    for name, subnet, nodes in racks:
        lines.append(f"    - {{name: {name}, subnet: {subnet}, nodes: {nodes}}}")
    return "\n".join(line for line in lines if line) + "\n"


def pod(name: str, spec: str, kind: str = "Pod", api: str = "v1") -> str:
    return f"---\napiVersion: {api}\nkind: {kind}\nmetadata: {{name: {name}}}\nspec:\n{spec}"


def problems(text: str) -> list[str]:
    """The rendered problems of an invalid lab text."""
    with pytest.raises(SpecError) as info:
        parse_lab(text, "t.yaml")
    assert info.value.source == "t.yaml"
    return [p.render(info.value.source) for p in info.value.problems]


HUNDRED = "[" + ", ".join(f"n{{r}}x{i}" for i in range(100)) + "]"
POD_CIDR = (
    racks_yaml(*[(f"r{r}", f"192.168.{r}.0/25", HUNDRED.format(r=r)) for r in range(3)])
    + "  overlay: {Network: 10.244.0.0/16, SubnetLen: 24}\n"
)

# (id, lab text, path, message fragment, fix fragment)
ERRORS = [
    (
        "unknown-field-lab",
        TWO_RACKS.replace("subnet: 192.168.2.0/24", "subnett: 192.168.2.0/24"),
        "lab.racks[1].subnett",
        "unknown field 'subnett'",
        "did you mean 'subnet'?",
    ),
    (
        "unknown-field-manifest",
        TWO_RACKS + WEB.replace("replicas: 2", "replica: 2"),
        "Deployment/web: spec.replica",
        "unknown field 'replica'",
        "did you mean 'replicas'?",
    ),
    (
        "unknown-field-flannel-case",
        TWO_RACKS + "  overlay: {network: 10.244.0.0/16}\n",
        "lab.overlay.network",
        "unknown field",
        "did you mean 'Network'?",
    ),
    (
        "duplicate-node",
        TWO_RACKS.replace("nodes: [n3]", "nodes: [n1]"),
        "lab.racks[1].nodes[0]",
        "'n1' is already used by the node at lab.racks[0].nodes[0]",
        "rename this node or that node",
    ),
    (
        "router-named-like-rack",
        TWO_RACKS + "  routers: [{name: rack1, racks: [rack1, rack2]}]\n",
        "lab.routers[0].name",
        "'rack1' is already used by the rack at lab.racks[0].name",
        "rename this router or that rack",
    ),
    (
        "rack-named-like-default-router",
        racks_yaml(("spine", "192.168.1.0/24", "[n1]")),
        "lab.racks[0].name",
        "taken by the default router",
        "list lab.routers yourself",
    ),
    (
        "overlap-rack-rack",
        racks_yaml(("rack1", "10.0.0.0/24", "[n1]"), ("rack2", "10.0.0.0/16", "[n2]")),
        "lab.racks[1].subnet",
        "10.0.0.0/16 overlaps rack 'rack1' (10.0.0.0/24)",
        "give each rack its own subnet",
    ),
    (
        "overlap-rack-overlay",
        racks_yaml(("rack1", "10.244.3.0/24", "[n1]")),
        "lab.racks[0].subnet",
        "10.244.3.0/24 overlaps the overlay Network (10.244.0.0/16)",
        "outside lab.overlay.Network",
    ),
    (
        "host-bits",
        racks_yaml(("rack1", "192.168.1.7/24", "[n1]")),
        "lab.racks[0].subnet",
        "host bits set",
        "use the network address 192.168.1.0/24",
    ),
    (
        "rack-subnet-too-small",
        racks_yaml(("rack1", "192.168.1.0/29", "[a, b, c, d, e, f]")),
        "lab.racks[0].subnet",
        "has 6 host addresses but rack 'rack1' needs 7 (6 nodes + 1 router gateway)",
        "use a /28 or larger subnet",
    ),
    (
        "pod-cidr-too-small",
        POD_CIDR,
        "lab.overlay",
        "pod CIDR too small for the nodes: /16 with SubnetLen 24 gives 255 node subnets (Flannel skips the first) for 300 nodes",
        "use a larger Network or a longer SubnetLen",
    ),
    (
        "node-name-too-long",
        racks_yaml(("rack1", "192.168.1.0/24", "[node-eleven]")),
        "lab.racks[0].nodes[0]",
        "node name 'node-eleven' is 11 characters; a node name can be at most 10, since its "
        "interface 'node-eleven-eth0' must fit Linux's 15-character interface-name limit",
        "shorten it to 10 characters or fewer",
    ),
    (
        "rack-name-too-long",
        racks_yaml(("rack-sixteen-chr", "192.168.1.0/24", "[n1]")),
        "lab.racks[0].name",
        "at most 15, since its interface 'rack-sixteen-chr' must fit Linux's 15-character",
        "shorten it",
    ),
    (
        "router-name-too-long",
        TWO_RACKS + "  routers: [{name: router-eleven, racks: [rack1, rack2]}]\n",
        "lab.routers[0].name",
        "a router name can be at most 10, since its interface 'router-eleven-eth1' must fit "
        "Linux's 15-character interface-name limit",
        "shorten it",
    ),
    (
        "bad-name",
        racks_yaml(("Rack_1", "192.168.1.0/24", "[n1]")),
        "lab.racks[0].name",
        "rack name 'Rack_1' is not a valid name",
        "lowercase letters",
    ),
    (
        "lab-name-too-long",
        TWO_RACKS.replace("name: t\n", "name: thirteen-char\n"),
        "lab.name",
        "is 13 characters; at most 12",
        "shorter name",
    ),
    (
        "bad-vni",
        TWO_RACKS + "  overlay: {Backend: {VNI: 16777216}}\n",
        "lab.overlay.Backend.VNI",
        "16777216 is out of range",
        "use 1..16777215",
    ),
    (
        "backend-not-vxlan",
        TWO_RACKS + "  overlay: {Backend: {Type: host-gw}}\n",
        "lab.overlay.Backend.Type",
        "'host-gw' is not emulated",
        "vxlan",
    ),
    (
        "subnet-len",
        TWO_RACKS + "  overlay: {Network: 10.244.0.0/16, SubnetLen: 30}\n",
        "lab.overlay.SubnetLen",
        "at most 28",
        "use 17..28",
    ),
    (
        "unreachable-rack",
        racks_yaml(*[(f"rack{i}", f"192.168.{i}.0/24", f"[n{i}]") for i in range(1, 5)])
        + "  routers:\n    - {name: r1, racks: [rack1, rack2]}\n"
        "    - {name: r2, racks: [rack3, rack4]}\n",
        "lab.routers",
        "rack 'rack3' cannot reach rack 'rack1'",
        "add it to a router's racks",
    ),
    (
        "rack-on-no-router",
        racks_yaml(*[(f"rack{i}", f"192.168.{i}.0/24", f"[n{i}]") for i in range(1, 4)])
        + "  routers: [{name: r1, racks: [rack1, rack2]}]\n",
        "lab.routers",
        "rack 'rack3' is on no router",
        "add it to a router's racks",
    ),
    (
        "router-one-rack",
        TWO_RACKS + "  routers: [{name: r1, racks: [rack1]}, {name: r2, racks: [rack1, rack2]}]\n",
        "lab.routers[0].racks",
        "a router joins at least 2 rack(s); this one lists 1",
        "add racks to it",
    ),
    (
        "router-unknown-rack",
        TWO_RACKS + "  routers: [{name: r1, racks: [rack1, rack2, rakc2]}]\n",
        "lab.routers[0].racks[2]",
        "rack 'rakc2' does not exist",
        "did you mean 'rack2'?",
    ),
    (
        "selector-mismatch",
        TWO_RACKS + WEB.replace("{matchLabels: {app: web}}", "{matchLabels: {app: www}}"),
        "Deployment/web: spec.selector.matchLabels",
        "selector does not match template labels: app=www",
        "include every matchLabels entry",
    ),
    (
        "node-selector-unsatisfiable",
        TWO_RACKS
        + WEB.replace("      containers:", "      nodeSelector: {disk: nvme}\n      containers:"),
        "Deployment/web: spec.template.spec.nodeSelector",
        "nodeSelector disk=nvme matches no node",
        "label a node with it",
    ),
    (
        "node-selector-vs-node-name",
        TWO_RACKS
        + pod(
            "c",
            "  nodeName: n1\n  nodeSelector: {disk: ssd}\n  containers: [{name: c, command: [sleep, infinity]}]\n",
        ),
        "Pod/c: spec.nodeSelector",
        "pinned to node 'n1' by nodeName",
        "change the selector",
    ),
    (
        "node-name-unknown",
        TWO_RACKS
        + pod("c", "  nodeName: n4\n  containers: [{name: c, command: [sleep, infinity]}]\n"),
        "Pod/c: spec.nodeName",
        "no node 'n4' in the lab",
        "n1, n2, n3",
    ),
    (
        "wrong-type",
        TWO_RACKS + WEB.replace("replicas: 2", "replicas: three"),
        "Deployment/web: spec.replicas",
        "expected an integer, got the string 'three'",
        "write a whole number",
    ),
    (
        "wrong-type-number-in-command",
        TWO_RACKS + WEB.replace('"80"]', "80]"),
        "Deployment/web: spec.template.spec.containers[0].command[3]",
        "expected a string, got the number 80",
        "quote it: '80'",
    ),
    (
        "wrong-type-boolean-label",
        TWO_RACKS.replace("disk: ssd", "fast: yes"),
        "lab.racks[0].nodes[1].labels.fast",
        "expected a string, got the boolean true",
        "quote it",
    ),
    (
        "no-command",
        TWO_RACKS + pod("c", "  containers: [{name: c}]\n"),
        "Pod/c: spec.containers[0].command",
        "the default image (a view of the host's root) has no entrypoint",
        "give the container a command",
    ),
    (
        "bad-image-name",
        TWO_RACKS + pod("c", "  containers: [{name: c, image: 'Busy Box', command: [sh]}]\n"),
        "Pod/c: spec.containers[0].image",
        "Busy Box",
        "name an image as Docker does",
    ),
    (
        "bad-pull-policy",
        TWO_RACKS
        + pod("c", "  containers: [{name: c, imagePullPolicy: Sometimes, command: [sh]}]\n"),
        "Pod/c: spec.containers[0].imagePullPolicy",
        'Unsupported value: "Sometimes"',
        "use one of",
    ),
    (
        "duplicate-port-name",
        TWO_RACKS
        + WEB.replace(
            "[{containerPort: 80, name: http}]",
            "[{containerPort: 80, name: http}, {containerPort: 81, name: http}]",
        ),
        "Deployment/web: spec.template.spec.containers[0].ports[1].name",
        "port name 'http' is already used in this pod at containers[0].ports[0]",
        "give each port its own name",
    ),
    (
        "bad-port-name",
        TWO_RACKS + WEB.replace("name: http}", "name: http-web-frontend}"),
        "Deployment/web: spec.template.spec.containers[0].ports[0].name",
        "not a valid IANA service name",
        "at most 15",
    ),
    (
        "deployment-restart-policy",
        TWO_RACKS
        + WEB.replace("      containers:", "      restartPolicy: Never\n      containers:"),
        "Deployment/web: spec.template.spec.restartPolicy",
        "must use restartPolicy Always",
        "remove restartPolicy",
    ),
    (
        "deployment-name-too-long",
        TWO_RACKS + WEB.replace("name: web}", "name: " + "w" * 254 + "}"),
        "Deployment/" + "w" * 254 + ": metadata.name",
        "is 254 characters; at most 253",
        "shorter name",
    ),
    (
        "duplicate-manifest",
        TWO_RACKS + WEB + WEB,
        "Deployment/web: metadata.name",
        "a second Deployment 'web' in namespace 'default' (the first is documents[1])",
        "rename one",
    ),
    (
        "unsupported-kind",
        TWO_RACKS + "---\napiVersion: v1\nkind: ReplicationController\nmetadata: {name: x}\n",
        "documents[1]: kind",
        "kind 'ReplicationController' is not supported",
        "netlab supports Pod (v1), Deployment (apps/v1)",
    ),
    (
        "wrong-api-version",
        TWO_RACKS + WEB.replace("apps/v1", "v1"),
        "Deployment/web: apiVersion",
        "Deployment is apps/v1, not 'v1'",
        "write apiVersion: apps/v1",
    ),
    (
        "yaml-syntax",
        "lab:\n  name: t\n   racks: []\n",
        "line 3, column 9",
        "YAML syntax error",
        "indentation",
    ),
    (
        "yaml-duplicate-key",
        TWO_RACKS.replace("  name: t\n", "  name: t\n  name: u\n"),
        "line 3",
        "duplicate key 'name'",
        "remove one of them",
    ),
    (
        "no-lab",
        WEB,
        "lab",
        "no document has a 'lab:' section",
        "add one",
    ),
    (
        "second-lab",
        TWO_RACKS + "---\n" + TWO_RACKS,
        "documents[1]",
        "a second 'lab:' section (the first is documents[0])",
        "keep one",
    ),
    (
        "rack-prefix-too-long",
        racks_yaml(("rack1", "192.168.1.0/30", "[n1]")),
        "lab.racks[0].subnet",
        "too small for a rack (at most /29)",
        "use a /29 or larger subnet",
    ),
    (
        "pods-do-not-fit",
        TWO_RACKS + WEB.replace("replicas: 2", "replicas: 800"),
        "lab.overlay.SubnetLen",
        "800 pods do not fit: 3 nodes with a /24 pod subnet each hold at most 759",
        "fewer replicas",
    ),
    (
        "missing-required",
        "lab:\n  name: t\n",
        "lab.racks",
        "required field is missing",
        "add 'racks:'",
    ),
]


@pytest.mark.parametrize(
    ("text", "path", "message", "fix"),
    [case[1:] for case in ERRORS],
    ids=[case[0] for case in ERRORS],
)
def test_error_names_path_and_fix(text: str, path: str, message: str, fix: str) -> None:
    found = problems(text)
    matching = [line for line in found if line.startswith(f"t.yaml: {path}: ")]
    assert matching, f"no problem at {path!r} in {found}"
    assert any(message in line and fix in line for line in matching), found


@pytest.mark.parametrize(
    ("name", "racks", "nodes", "replicas", "pods"),
    [("demo", 2, 4, 4, 1), ("four", 4, 16, 128, 0), ("eight", 8, 64, 512, 0)],
)
def test_topologies_load(name: str, racks: int, nodes: int, replicas: int, pods: int) -> None:
    file = {"demo": "demo", "four": "four-racks", "eight": "eight-racks"}[name]
    spec = load_lab(TOPOLOGIES / f"{file}.yaml")
    assert spec.name == name
    assert (len(spec.racks), len(spec.nodes), len(spec.pods)) == (racks, nodes, pods)
    assert sum(d.replicas for d in spec.deployments) == replicas
    assert spec.routers == (RouterSpec(DEFAULT_ROUTER, tuple(r.name for r in spec.racks)),)
    assert spec.source == str(TOPOLOGIES / f"{file}.yaml")


def test_demo_contents() -> None:
    spec = load_lab(TOPOLOGIES / "demo.yaml")
    assert [(r.name, str(r.subnet), [n.name for n in r.nodes]) for r in spec.racks] == [
        ("rack1", "192.168.1.0/24", ["n1", "n2"]),
        ("rack2", "192.168.2.0/24", ["n3", "n4"]),
    ]
    web, frontend = spec.deployments
    (container,) = web.template.containers
    assert container.argv == ("python3", "-m", "netlab.apps.echo", "80")
    assert container.ports == (ContainerPort(80, "http", "TCP"),)
    assert container.readiness_probe.kind == "tcpSocket"
    assert container.readiness_probe.port == "http"
    assert dict(web.match_labels) == {"app": "web"}
    (upstream,) = frontend.template.containers
    assert dict(upstream.env) == {"UPSTREAM": "http://web/"} and frontend.replicas == 1
    assert upstream.readiness_probe.kind == "tcpSocket"
    assert dict(frontend.match_labels) == {"app": "frontend"}
    assert [(s.name, s.headless) for s in spec.services] == [
        ("web", False),
        ("web-pods", True),
        ("frontend", False),
    ]
    (client,) = spec.pods
    assert client.template.containers[0].argv == ("sleep", "infinity")


def test_defaults_applied() -> None:
    spec = parse_lab(
        TWO_RACKS
        + WEB.replace("  replicas: 2\n", "")
        + pod("c", "  containers: [{name: c, args: [sleep, '1']}]\n")
    )
    assert spec.overlay == OverlaySpec()
    assert spec.overlay.network == IPv4Network("10.244.0.0/16")
    assert (spec.overlay.subnet_len, spec.overlay.vni, spec.overlay.port) == (24, 1, 8472)
    assert spec.links == LinkSpec()
    assert spec.routers == (RouterSpec("spine", ("rack1", "rack2")),)
    (web,) = spec.deployments
    assert (web.replicas, web.namespace, web.template.restart_policy) == (1, "default", "Always")
    assert web.template.containers[0].ports[0].protocol == "TCP"
    assert web.manifest["metadata"]["namespace"] == "default"
    assert spec.pods[0].template.containers[0].argv == ("sleep", "1")
    assert spec.source is None
    assert dict(spec.racks[0].nodes[1].labels) == {"disk": "ssd"}


def test_explicit_values() -> None:
    text = (
        TWO_RACKS
        + "  routers: [{name: r1, racks: [rack1, rack2]}]\n"
        + "  overlay: {Network: 10.10.0.0/16, SubnetLen: 26, Backend: {Type: vxlan, VNI: 42, "
        "Port: 4789, DirectRouting: true}}\n" + "  links: {bandwidth: 100, delay: 5ms, loss: 0.5}\n"
    )
    spec = parse_lab(text, "x.yaml")
    assert spec.overlay == OverlaySpec(IPv4Network("10.10.0.0/16"), 26, "vxlan", 42, 4789, True)
    assert spec.links == LinkSpec(100.0, "5ms", 0.5)
    assert spec.routers == (RouterSpec("r1", ("rack1", "rack2")),)
    assert spec.source == "x.yaml"


def test_scheduling_sees_hostname_and_zone_labels() -> None:
    spec = parse_lab(
        TWO_RACKS
        + WEB.replace(
            "      containers:",
            "      nodeSelector: {topology.kubernetes.io/zone: rack1, disk: ssd}\n      containers:",
        )
        + pod(
            "c",
            "  nodeSelector: {kubernetes.io/hostname: n3}\n"
            "  containers: [{name: c, command: [sleep, infinity]}]\n",
        )
    )
    assert dict(spec.deployments[0].template.node_selector) == {
        "topology.kubernetes.io/zone": "rack1",
        "disk": "ssd",
    }
    assert spec.pods[0].template.node_selector["kubernetes.io/hostname"] == "n3"


def test_single_rack_needs_no_router() -> None:
    spec = parse_lab(racks_yaml(("rack1", "192.168.1.0/24", "[n1]"), extra="  routers: []"))
    assert spec.routers == ()


def test_all_problems_collected_in_one_error() -> None:
    text = (
        racks_yaml(("rack1", "10.0.0.0/24", "[n1]"), ("rack2", "10.0.0.0/16", "[n1]"))
        + "  overlay: {Backend: {VNI: 0}}\n"
        + WEB.replace("replicas: 2", "replicas: three").replace(
            "app: web}}\n  template", "app: x}}\n  template"
        )
    )
    with pytest.raises(SpecError) as info:
        parse_lab(text, "all.yaml")
    paths = [p.path for p in info.value.problems]
    assert paths == [
        "lab.racks[1].nodes[0]",
        "lab.overlay.Backend.VNI",
        "lab.racks[1].subnet",
        "Deployment/web: spec.replicas",
        "Deployment/web: spec.selector.matchLabels",
    ]
    assert str(info.value).startswith("5 problems:\n  all.yaml: lab.racks[1].nodes[0]: ")


def test_lab_from_documents_ignores_empty_documents() -> None:
    lab = {"lab": {"name": "d", "racks": [{"name": "r", "subnet": "10.1.0.0/24", "nodes": ["n"]}]}}
    spec = lab_from_documents([None, lab, None], source="docs")
    assert isinstance(spec, LabSpec) and spec.source == "docs"
    with pytest.raises(SpecError, match=r"documents\[1\]: expected a mapping, got a list"):
        lab_from_documents([lab, ["x"]])


def test_missing_file() -> None:
    with pytest.raises(SpecError, match="nope.yaml: file: cannot read it"):
        load_lab("/nonexistent/nope.yaml")
