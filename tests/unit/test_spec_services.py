"""The spec layer's Services: `kind: Service`, readinessProbe, lab.serviceNetwork and lab.dns."""

from __future__ import annotations

from dataclasses import replace
from ipaddress import IPv4Address, IPv4Network
from typing import Any

import pytest

from netlab.errors import SpecError
from netlab.spec import (
    DEFAULT_SERVICE_NETWORK,
    ContainerSpec,
    DnsSpec,
    LabBuilder,
    LabSpec,
    ManifestSet,
    ProbeSpec,
    ServicePort,
    ServiceSpec,
    parse_lab,
    parse_manifests,
)

LAB = """\
lab:
  name: t
  racks:
    - {name: rack1, subnet: 192.168.1.0/24, nodes: [n1, n2]}
"""

WEB = """\
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: web}
spec:
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec:
      containers:
        - name: web
          command: [python3, -m, http.server, "80"]
          ports: [{containerPort: 80, name: http}, {containerPort: 53, name: dns, protocol: UDP}]
"""


def lab(extra: str = "") -> str:
    """The lab document with extra lines inside `lab:` (indented by two spaces)."""
    return LAB + "".join(f"  {line}\n" for line in extra.splitlines())


def service(spec: str, name: str = "web", meta: str = "") -> str:
    """A Service document; spec is the YAML inside `spec:` (indented by two spaces)."""
    body = "".join(f"  {line}\n" for line in spec.splitlines()) if spec else "  {}\n"
    return f"---\napiVersion: v1\nkind: Service\nmetadata: {{name: {name}{meta}}}\nspec:\n{body}"


def probed(probe: str, ports: str = "[{containerPort: 80, name: http}]", kind: str = "Pod") -> str:
    """A Pod (or a Deployment) whose container has the readinessProbe given as flow YAML."""
    container = f"{{name: c, command: [sleep, infinity], ports: {ports}, readinessProbe: {probe}}}"
    if kind == "Pod":
        return f"---\napiVersion: v1\nkind: Pod\nmetadata: {{name: c}}\nspec:\n  containers: [{container}]\n"
    return (
        "---\napiVersion: apps/v1\nkind: Deployment\nmetadata: {name: c}\nspec:\n"
        "  selector: {matchLabels: {app: c}}\n"
        "  template:\n    metadata: {labels: {app: c}}\n"
        f"    spec: {{containers: [{container}]}}\n"
    )


def problems(text: str) -> list[str]:
    with pytest.raises(SpecError) as info:
        parse_lab(text, "t.yaml")
    return [p.render(info.value.source) for p in info.value.problems]


def only_service(text: str) -> ServiceSpec:
    (svc,) = parse_lab(text).services
    return svc


def only_probe(text: str) -> ProbeSpec | None:
    spec = parse_lab(text)
    template = (spec.pods or spec.deployments)[0].template
    return template.containers[0].readiness_probe


# ---------------------------------------------------------------- parsing: Services

# (id, spec: YAML, the ServiceSpec fields expected)
SERVICES = [
    (
        "one-port-defaults",
        "selector: {app: web}\nports: [{port: 80}]",
        {
            "ports": (ServicePort(80, 80, "TCP", None),),
            "selector": {"app": "web"},
            "headless": False,
            "cluster_ip": None,
            "session_affinity": "None",
            "affinity_timeout": 10800,
        },
    ),
    (
        "target-port-number",
        "ports: [{port: 80, targetPort: 8080}]",
        {"ports": (ServicePort(80, 8080),), "selector": {}},
    ),
    (
        "target-port-name",
        "ports: [{name: web, port: 80, targetPort: http}]",
        {"ports": (ServicePort(80, "http", "TCP", "web"),)},
    ),
    (
        "udp",
        "ports: [{port: 53, protocol: UDP}]",
        {"ports": (ServicePort(53, 53, "UDP"),)},
    ),
    (
        "same-number-two-protocols",
        "ports: [{name: dns, port: 53, protocol: UDP}, {name: dns-tcp, port: 53}]",
        {"ports": (ServicePort(53, 53, "UDP", "dns"), ServicePort(53, 53, "TCP", "dns-tcp"))},
    ),
    (
        "headless-without-ports",
        "clusterIP: None\nselector: {app: web}",
        {"headless": True, "cluster_ip": None, "ports": ()},
    ),
    (
        "headless-with-ports",
        "clusterIP: None\nports: [{port: 80}]",
        {"headless": True, "ports": (ServicePort(80, 80),)},
    ),
    (
        "cluster-ip-empty-means-allocate",
        "clusterIP: ''\nports: [{port: 80}]",
        {"headless": False, "cluster_ip": None},
    ),
    (
        "cluster-ip-explicit",
        "clusterIP: 10.96.0.20\nports: [{port: 80}]",
        {"cluster_ip": IPv4Address("10.96.0.20")},
    ),
    (
        "type-cluster-ip",
        "type: ClusterIP\nports: [{port: 80}]",
        {"headless": False},
    ),
    (
        "client-ip-affinity-default-timeout",
        "sessionAffinity: ClientIP\nports: [{port: 80}]",
        {"session_affinity": "ClientIP", "affinity_timeout": 10800},
    ),
    (
        "client-ip-affinity-timeout",
        "sessionAffinity: ClientIP\n"
        "sessionAffinityConfig: {clientIP: {timeoutSeconds: 30}}\nports: [{port: 80}]",
        {"session_affinity": "ClientIP", "affinity_timeout": 30},
    ),
    (
        "affinity-none-explicit",
        "sessionAffinity: None\nports: [{port: 80}]",
        {"session_affinity": "None"},
    ),
]


@pytest.mark.parametrize(
    ("spec", "expected"), [c[1:] for c in SERVICES], ids=[c[0] for c in SERVICES]
)
def test_service_fields(spec: str, expected: dict[str, Any]) -> None:
    svc = only_service(LAB + service(spec))
    for field, value in expected.items():
        got = getattr(svc, field)
        assert (dict(got) if field == "selector" else got) == value, field


def test_service_identity_and_manifest() -> None:
    text = LAB + service("ports: [{port: 80}]", meta=", namespace: shop, labels: {tier: front}")
    svc = only_service(text)
    assert (svc.name, svc.namespace, dict(svc.labels)) == ("web", "shop", {"tier": "front"})
    assert svc.manifest["kind"] == "Service"
    assert svc.manifest["metadata"]["namespace"] == "shop"


def test_services_in_the_stream_with_pods_and_deployments() -> None:
    text = (
        LAB
        + service("selector: {app: web}\nports: [{port: 80, targetPort: http}]")
        + WEB
        + service("clusterIP: None", name="db")
    )
    spec = parse_lab(text)
    assert [s.name for s in spec.services] == ["web", "db"]
    assert [d.name for d in spec.deployments] == ["web"]


def test_same_name_in_two_namespaces_is_fine() -> None:
    text = (
        LAB + service("ports: [{port: 80}]") + service("ports: [{port: 80}]", meta=", namespace: b")
    )
    assert [(s.namespace, s.name) for s in parse_lab(text).services] == [
        ("default", "web"),
        ("b", "web"),
    ]


def test_selector_matching_no_pod_and_unknown_target_name_are_allowed() -> None:
    """As in Kubernetes: such Services just have no endpoints (for that port)."""
    text = LAB + WEB + service("selector: {app: nothing}\nports: [{port: 80, targetPort: nope}]")
    assert only_service(text).ports == (ServicePort(80, "nope"),)


def test_kube_dns_allowed_when_dns_disabled() -> None:
    text = lab("dns: {enabled: false}") + service(
        "ports: [{port: 53, protocol: UDP}]", name="kube-dns", meta=", namespace: kube-system"
    )
    svc = only_service(text)
    assert (svc.namespace, svc.name) == ("kube-system", "kube-dns")


def test_dns_address_allowed_when_dns_disabled() -> None:
    text = lab("dns: {enabled: false}") + service("clusterIP: 10.96.0.10\nports: [{port: 80}]")
    assert only_service(text).cluster_ip == IPv4Address("10.96.0.10")


# ---------------------------------------------------------------- parsing: the lab section

# (id, extra lines in lab:, (service_network, DnsSpec))
LAB_SETTINGS = [
    ("defaults", "", (DEFAULT_SERVICE_NETWORK, DnsSpec("cluster.local", 5, 1, True))),
    ("service-network", "serviceNetwork: 172.20.0.0/16", (IPv4Network("172.20.0.0/16"), DnsSpec())),
    (
        "smallest-service-network",
        "serviceNetwork: 172.20.0.0/28",
        (IPv4Network("172.20.0.0/28"), DnsSpec()),
    ),
    (
        "dns-all",
        "dns: {zone: lab.example, ttl: 0, replicas: 0, enabled: false}",
        (DEFAULT_SERVICE_NETWORK, DnsSpec("lab.example", 0, 0, False)),
    ),
    ("dns-zone-one-label", "dns: {zone: lab}", (DEFAULT_SERVICE_NETWORK, DnsSpec(zone="lab"))),
    ("dns-ttl-max", "dns: {ttl: 3600}", (DEFAULT_SERVICE_NETWORK, DnsSpec(ttl=3600))),
    ("dns-replicas-max", "dns: {replicas: 10}", (DEFAULT_SERVICE_NETWORK, DnsSpec(replicas=10))),
    ("dns-empty", "dns: {}", (DEFAULT_SERVICE_NETWORK, DnsSpec())),
]


@pytest.mark.parametrize(
    ("extra", "expected"), [c[1:] for c in LAB_SETTINGS], ids=[c[0] for c in LAB_SETTINGS]
)
def test_lab_service_settings(extra: str, expected: tuple[IPv4Network, DnsSpec]) -> None:
    spec = parse_lab(lab(extra))
    assert (spec.service_network, spec.dns) == expected


def test_lab_spec_defaults_keep_old_callers_working() -> None:
    spec = LabSpec("x", (), ())
    assert (spec.services, spec.service_network, spec.dns) == (
        (),
        DEFAULT_SERVICE_NETWORK,
        DnsSpec(),
    )
    assert ContainerSpec("c").readiness_probe is None


# ---------------------------------------------------------------- parsing: readinessProbe

# (id, probe as flow YAML, container ports as flow YAML, expected ProbeSpec)
PROBES = [
    ("tcp-number", "{tcpSocket: {port: 80}}", None, ProbeSpec("tcpSocket", 80)),
    ("tcp-name", "{tcpSocket: {port: http}}", None, ProbeSpec("tcpSocket", "http")),
    (
        "tcp-undeclared-number",
        "{tcpSocket: {port: 9000}}",
        "[]",
        ProbeSpec("tcpSocket", 9000),
    ),
    ("http-default-path", "{httpGet: {port: 80}}", None, ProbeSpec("httpGet", 80, "/")),
    (
        "http-path",
        "{httpGet: {path: /healthz, port: http}}",
        None,
        ProbeSpec("httpGet", "http", "/healthz"),
    ),
    (
        "exec",
        "{exec: {command: [test, -f, /tmp/ready]}}",
        None,
        ProbeSpec("exec", command=("test", "-f", "/tmp/ready")),
    ),
    (
        "timings",
        "{tcpSocket: {port: 80}, initialDelaySeconds: 2, periodSeconds: 0.5, timeoutSeconds: 3, "
        "successThreshold: 2, failureThreshold: 3}",
        None,
        ProbeSpec(
            "tcpSocket",
            80,
            initial_delay=2.0,
            period=0.5,
            timeout=3.0,
            success_threshold=2,
            failure_threshold=3,
        ),
    ),
    (
        "lab-defaults",
        "{tcpSocket: {port: 80}}",
        None,
        ProbeSpec("tcpSocket", 80, "/", (), 0.0, 1.0, 1.0, 1, 1),
    ),
]


@pytest.mark.parametrize("kind", ["Pod", "Deployment"])
@pytest.mark.parametrize(
    ("probe", "ports", "expected"), [c[1:] for c in PROBES], ids=[c[0] for c in PROBES]
)
def test_probe_fields(probe: str, ports: str | None, expected: ProbeSpec, kind: str) -> None:
    text = LAB + (probed(probe, kind=kind) if ports is None else probed(probe, ports, kind))
    got = only_probe(text)
    assert got == expected
    assert isinstance(got.period, float) and isinstance(got.initial_delay, float)


def test_no_probe_is_none() -> None:
    assert parse_lab(LAB + WEB).deployments[0].template.containers[0].readiness_probe is None


# ---------------------------------------------------------------- errors

S = "Service/web: spec"
P = "Pod/c: spec.containers[0].readinessProbe"

# (id, lab text, path, message fragment, fix fragment)
ERRORS = [
    # --- Service metadata and kind
    (
        "service-name-digit-first",
        LAB + service("ports: [{port: 80}]", name="1web"),
        "Service/1web: metadata.name",
        "Service name '1web' is not a valid name",
        "starting with a letter",
    ),
    (
        "service-name-too-long",
        LAB + service("ports: [{port: 80}]", name="s" * 64),
        "Service/" + "s" * 64 + ": metadata.name",
        "is 64 characters; at most 63",
        "shorter name",
    ),
    (
        "service-wrong-api-version",
        LAB + service("ports: [{port: 80}]").replace("apiVersion: v1", "apiVersion: apps/v1"),
        "Service/web: apiVersion",
        "Service is v1, not 'apps/v1'",
        "write apiVersion: v1",
    ),
    (
        "service-duplicate",
        LAB + service("ports: [{port: 80}]") + service("ports: [{port: 81}]"),
        "Service/web: metadata.name",
        "a second Service 'web' in namespace 'default' (the first is documents[1])",
        "rename one",
    ),
    (
        "service-kind-typo",
        LAB + service("ports: [{port: 80}]").replace("kind: Service", "kind: Servce"),
        "documents[1]: kind",
        "kind 'Servce' is not supported",
        "did you mean 'Service'?",
    ),
    (
        "service-unknown-field",
        LAB + service("ports: [{port: 80}]\nselectr: {app: web}"),
        S + ".selectr",
        "unknown field 'selectr'",
        "did you mean 'selector'?",
    ),
    # --- type
    *[
        (
            f"type-{kind.lower()}",
            LAB + service(f"type: {kind}\nports: [{{port: 80}}]"),
            S + ".type",
            f"type {kind} is not emulated: netlab emulates only ClusterIP Services",
            "remove type (ClusterIP is the default)",
        )
        for kind in ("NodePort", "LoadBalancer", "ExternalName")
    ],
    (
        "type-unknown",
        LAB + service("type: ClusterIp\nports: [{port: 80}]"),
        S + ".type",
        "'ClusterIp' is not a Service type",
        "did you mean 'ClusterIP'?",
    ),
    # --- ports
    (
        "no-ports",
        LAB + service("selector: {app: web}"),
        S + ".ports",
        "a Service needs at least one port",
        "make it headless with clusterIP: None",
    ),
    (
        "empty-ports",
        LAB + service("ports: []"),
        S + ".ports",
        "a Service needs at least one port",
        "add e.g. ports:",
    ),
    (
        "ports-not-a-list",
        LAB + service("ports: {port: 80}"),
        S + ".ports",
        "expected a list, got a mapping",
        "YAML list",
    ),
    (
        "port-missing",
        LAB + service("ports: [{targetPort: 80}]"),
        S + ".ports[0].port",
        "required field is missing",
        "add 'port:'",
    ),
    (
        "port-zero",
        LAB + service("ports: [{port: 0}]"),
        S + ".ports[0].port",
        "0 is out of range",
        "use 1..65535",
    ),
    (
        "port-too-big",
        LAB + service("ports: [{port: 65536}]"),
        S + ".ports[0].port",
        "65536 is out of range",
        "use 1..65535",
    ),
    (
        "port-quoted",
        LAB + service("ports: [{port: '80'}]"),
        S + ".ports[0].port",
        "expected an integer, got the string '80'",
        "write it without quotes: 80",
    ),
    (
        "port-unknown-field",
        LAB + service("ports: [{port: 80, targetport: 8080}]"),
        S + ".ports[0].targetport",
        "unknown field 'targetport'",
        "did you mean 'targetPort'?",
    ),
    (
        "node-port",
        LAB + service("ports: [{port: 80, nodePort: 30080}]"),
        S + ".ports[0].nodePort",
        "nodePort belongs to type NodePort, which is not emulated",
        "remove nodePort",
    ),
    (
        "target-port-out-of-range",
        LAB + service("ports: [{port: 80, targetPort: 70000}]"),
        S + ".ports[0].targetPort",
        "70000 is out of range",
        "use 1..65535",
    ),
    (
        "target-port-quoted-number",
        LAB + service("ports: [{port: 80, targetPort: '8080'}]"),
        S + ".ports[0].targetPort",
        "'8080' is a string, so it would name a port, and names need a letter",
        "write the number without quotes: 8080",
    ),
    (
        "target-port-bad-name",
        LAB + service("ports: [{port: 80, targetPort: Web_Port}]"),
        S + ".ports[0].targetPort",
        "port name 'Web_Port' is not a valid name",
        "at most 15 lowercase letters",
    ),
    (
        "target-port-name-too-long",
        LAB + service("ports: [{port: 80, targetPort: a-very-long-port-name}]"),
        S + ".ports[0].targetPort",
        "port name 'a-very-long-port-name' is not a valid name",
        "at most 15",
    ),
    (
        "target-port-wrong-type",
        LAB + service("ports: [{port: 80, targetPort: [80]}]"),
        S + ".ports[0].targetPort",
        "expected a port number or name, got a list",
        "or a container port name",
    ),
    (
        "port-name-required",
        LAB + service("ports: [{name: http, port: 80}, {port: 443}]"),
        S + ".ports[1].name",
        "required when a Service has more than one port",
        "name each port",
    ),
    (
        "port-name-invalid",
        LAB + service("ports: [{name: Web_UI, port: 80}]"),  # a DNS label ('80-8080' is one)
        S + ".ports[0].name",
        "port name 'Web_UI' is not a valid name",
        "at most 63 lowercase letters",
    ),
    (
        "port-name-duplicate",
        LAB + service("ports: [{name: http, port: 80}, {name: http, port: 81}]"),
        S + ".ports[1].name",
        "port name 'http' is already used by ports[0]",
        "give each port its own name",
    ),
    (
        "port-protocol-duplicate",
        LAB + service("ports: [{name: a, port: 80}, {name: b, port: 80, protocol: TCP}]"),
        S + ".ports[1].port",
        "port 80/TCP is already used by ports[0]",
        "give each port its own number",
    ),
    (
        "protocol-sctp",
        LAB + service("ports: [{port: 80, protocol: SCTP}]"),
        S + ".ports[0].protocol",
        "SCTP is not supported",
        "use TCP or UDP",
    ),
    (
        "protocol-lowercase",
        LAB + service("ports: [{port: 80, protocol: udp}]"),
        S + ".ports[0].protocol",
        "'udp' is not a protocol",
        "did you mean 'UDP'?",
    ),
    # --- selector
    (
        "selector-bad-value",
        LAB + service("selector: {app: 'no way'}\nports: [{port: 80}]"),
        S + ".selector.app",
        "label value 'no way' is not valid",
        "letters, digits",
    ),
    (
        "selector-not-a-mapping",
        LAB + service("selector: [app]\nports: [{port: 80}]"),
        S + ".selector",
        "expected a mapping, got a list",
        "'key: value' lines",
    ),
    # --- clusterIP
    (
        "cluster-ip-lowercase-none",
        LAB + service("clusterIP: none\nports: [{port: 80}]"),
        S + ".clusterIP",
        "'none' is not an IPv4 address",
        "write None (capital N)",
    ),
    (
        "cluster-ip-not-an-address",
        LAB + service("clusterIP: 10.96.0.300\nports: [{port: 80}]"),
        S + ".clusterIP",
        "'10.96.0.300' is not an IPv4 address",
        "leave clusterIP out to get one",
    ),
    (
        "cluster-ip-outside",
        LAB + service("clusterIP: 10.0.0.5\nports: [{port: 80}]"),
        S + ".clusterIP",
        "10.0.0.5 is outside lab.serviceNetwork (10.96.0.0/12)",
        "inside lab.serviceNetwork",
    ),
    (
        "cluster-ip-outside-custom-network",
        lab("serviceNetwork: 172.20.0.0/24") + service("clusterIP: 10.96.0.5\nports: [{port: 80}]"),
        S + ".clusterIP",
        "10.96.0.5 is outside lab.serviceNetwork (172.20.0.0/24)",
        "leave clusterIP out",
    ),
    (
        "cluster-ip-network-address",
        LAB + service("clusterIP: 10.96.0.0\nports: [{port: 80}]"),
        S + ".clusterIP",
        "10.96.0.0 is lab.serviceNetwork's network address",
        "use a host address",
    ),
    (
        "cluster-ip-broadcast-address",
        LAB + service("clusterIP: 10.111.255.255\nports: [{port: 80}]"),
        S + ".clusterIP",
        "10.111.255.255 is lab.serviceNetwork's broadcast address",
        "use a host address",
    ),
    (
        "cluster-ip-dns",
        LAB + service("clusterIP: 10.96.0.10\nports: [{port: 80}]"),
        S + ".clusterIP",
        "10.96.0.10 is reserved for the lab's DNS (kube-system/kube-dns)",
        "use another address",
    ),
    (
        "cluster-ip-twice",
        LAB
        + service("clusterIP: 10.96.0.20\nports: [{port: 80}]", name="a")
        + service("clusterIP: 10.96.0.20\nports: [{port: 80}]", name="web", meta=", namespace: b"),
        S + ".clusterIP",
        "10.96.0.20 is already requested by Service default/a",
        "give each Service its own clusterIP",
    ),
    # --- sessionAffinity
    (
        "affinity-unknown",
        LAB + service("sessionAffinity: ClientIp\nports: [{port: 80}]"),
        S + ".sessionAffinity",
        "'ClientIp' is not a session affinity",
        "did you mean 'ClientIP'?",
    ),
    (
        "affinity-timeout-zero",
        LAB
        + service(
            "sessionAffinity: ClientIP\nsessionAffinityConfig: {clientIP: {timeoutSeconds: 0}}\n"
            "ports: [{port: 80}]"
        ),
        S + ".sessionAffinityConfig.clientIP.timeoutSeconds",
        "0 is out of range",
        "use 1..86400",
    ),
    (
        "affinity-timeout-too-long",
        LAB
        + service(
            "sessionAffinity: ClientIP\nsessionAffinityConfig: {clientIP: {timeoutSeconds: 86401}}\n"
            "ports: [{port: 80}]"
        ),
        S + ".sessionAffinityConfig.clientIP.timeoutSeconds",
        "86401 is out of range",
        "use 1..86400",
    ),
    (
        "affinity-config-without-client-ip",
        LAB
        + service("sessionAffinityConfig: {clientIP: {timeoutSeconds: 60}}\nports: [{port: 80}]"),
        S + ".sessionAffinityConfig",
        "set, but sessionAffinity is None",
        "set sessionAffinity: ClientIP, or remove sessionAffinityConfig",
    ),
    (
        "affinity-config-unknown-field",
        LAB
        + service(
            "sessionAffinity: ClientIP\nsessionAffinityConfig: {clientIP: {timeout: 60}}\n"
            "ports: [{port: 80}]"
        ),
        S + ".sessionAffinityConfig.clientIP.timeout",
        "unknown field 'timeout'",
        "did you mean 'timeoutSeconds'?",
    ),
    # --- the lab's DNS Service
    (
        "kube-dns-reserved",
        LAB
        + service(
            "ports: [{port: 53, protocol: UDP}]", name="kube-dns", meta=", namespace: kube-system"
        ),
        "Service/kube-dns: metadata.name",
        "Service 'kube-dns' in namespace 'kube-system' is the lab's DNS (lab.dns is enabled)",
        "set lab.dns.enabled: false to run your own DNS",
    ),
    # --- lab.serviceNetwork
    (
        "service-network-not-cidr",
        lab("serviceNetwork: 10.96.0.0/33"),
        "lab.serviceNetwork",
        "'10.96.0.0/33' is not an IPv4 CIDR",
        "192.168.1.0/24",
    ),
    (
        "service-network-host-bits",
        lab("serviceNetwork: 10.96.0.1/12"),
        "lab.serviceNetwork",
        "host bits set",
        "use the network address 10.96.0.0/12",
    ),
    (
        "service-network-too-small",
        lab("serviceNetwork: 10.96.0.0/29"),
        "lab.serviceNetwork",
        "10.96.0.0/29 is too small for Services (at most /28)",
        "use a /28 or larger network",
    ),
    (
        "service-network-overlaps-rack",
        lab("serviceNetwork: 192.168.0.0/16"),
        "lab.serviceNetwork",
        "192.168.0.0/16 overlaps rack 'rack1' (192.168.1.0/24)",
        "outside the racks' subnets and lab.overlay.Network",
    ),
    (
        "default-service-network-overlaps-rack",
        LAB.replace("192.168.1.0/24", "10.100.0.0/24"),
        "lab.serviceNetwork",
        "the default serviceNetwork 10.96.0.0/12 overlaps rack 'rack1' (10.100.0.0/24)",
        "set lab.serviceNetwork",
    ),
    (
        "service-network-overlaps-overlay",
        lab("serviceNetwork: 10.244.128.0/20"),
        "lab.serviceNetwork",
        "10.244.128.0/20 overlaps the overlay Network (10.244.0.0/16)",
        "set lab.serviceNetwork to a range outside",
    ),
    (
        "service-network-special",
        lab("serviceNetwork: 127.0.0.0/16"),
        "lab.serviceNetwork",
        "127.0.0.0/16 is a special-purpose range",
        "RFC 1918",
    ),
    (
        "service-network-typo",
        lab("servicenetwork: 10.96.0.0/12"),
        "lab.servicenetwork",
        "unknown field 'servicenetwork'",
        "did you mean 'serviceNetwork'?",
    ),
    # --- lab.dns
    (
        "dns-unknown-field",
        lab("dns: {zones: cluster.local}"),
        "lab.dns.zones",
        "unknown field 'zones'",
        "did you mean 'zone'?",
    ),
    (
        "dns-zone-invalid",
        lab("dns: {zone: Cluster_Local}"),
        "lab.dns.zone",
        "zone 'Cluster_Local' is not a valid DNS name",
        "e.g. cluster.local",
    ),
    (
        "dns-zone-long-label",
        lab("dns: {zone: " + "a" * 64 + ".local}"),
        "lab.dns.zone",
        "is not a valid DNS name",
        "each at most 63",
    ),
    (
        "dns-zone-trailing-dot",
        lab("dns: {zone: cluster.local.}"),
        "lab.dns.zone",
        "'cluster.local.' ends in a dot",
        "write cluster.local",
    ),
    (
        "dns-ttl-negative",
        lab("dns: {ttl: -1}"),
        "lab.dns.ttl",
        "-1 is out of range",
        "use 0..3600",
    ),
    (
        "dns-ttl-too-long",
        lab("dns: {ttl: 3601}"),
        "lab.dns.ttl",
        "3601 is out of range",
        "use 0..3600",
    ),
    (
        "dns-replicas-too-many",
        lab("dns: {replicas: 11}"),
        "lab.dns.replicas",
        "11 is out of range",
        "use 0..10",
    ),
    (
        "dns-enabled-not-boolean",
        lab("dns: {enabled: 'no'}"),
        "lab.dns.enabled",
        "expected a boolean, got the string 'no'",
        "write true or false",
    ),
    (
        "dns-not-a-mapping",
        lab("dns: true"),
        "lab.dns",
        "expected a mapping, got the boolean true",
        "'key: value' lines",
    ),
    # --- readinessProbe
    (
        "probe-no-handler",
        LAB + probed("{periodSeconds: 2}"),
        P,
        "a readinessProbe needs exactly one handler, found none",
        "add tcpSocket: {port: 80}",
    ),
    (
        "probe-two-handlers",
        LAB + probed("{tcpSocket: {port: 80}, httpGet: {port: 80}}"),
        P,
        "a readinessProbe needs exactly one handler, found tcpSocket and httpGet",
        "keep one of tcpSocket, httpGet or exec",
    ),
    (
        "probe-unknown-field",
        LAB + probed("{tcpSocket: {port: 80}, periodSecond: 2}"),
        P + ".periodSecond",
        "unknown field 'periodSecond'",
        "did you mean 'periodSeconds'?",
    ),
    (
        "probe-grpc",
        LAB + probed("{grpc: {port: 80}}"),
        P + ".grpc",
        "grpc probes are not emulated",
        "use tcpSocket or httpGet",
    ),
    (
        "probe-named-port-missing",
        LAB + probed("{tcpSocket: {port: htp}}"),
        P + ".tcpSocket.port",
        "no port named 'htp' in this container",
        "did you mean 'http'?",
    ),
    (
        "probe-named-port-no-ports",
        LAB + probed("{httpGet: {port: http}}", ports="[]"),
        P + ".httpGet.port",
        "no port named 'http' in this container",
        "add it to the container's ports",
    ),
    (
        "probe-named-port-udp",
        LAB
        + probed(
            "{tcpSocket: {port: dns}}", ports="[{containerPort: 53, name: dns, protocol: UDP}]"
        ),
        P + ".tcpSocket.port",
        "port 'dns' is UDP, but a tcpSocket probe connects over TCP",
        "name a TCP port",
    ),
    (
        "probe-port-missing",
        LAB + probed("{tcpSocket: {}}"),
        P + ".tcpSocket.port",
        "required field is missing",
        "add 'port:'",
    ),
    (
        "probe-port-out-of-range",
        LAB + probed("{httpGet: {port: 0}}"),
        P + ".httpGet.port",
        "0 is out of range",
        "use 1..65535",
    ),
    (
        "probe-http-relative-path",
        LAB + probed("{httpGet: {path: healthz, port: 80}}"),
        P + ".httpGet.path",
        "'healthz' is not an absolute path",
        "write /healthz",
    ),
    (
        "probe-http-scheme",
        LAB + probed("{httpGet: {port: 80, scheme: HTTPS}}"),
        P + ".httpGet.scheme",
        "unknown field 'scheme'",
        "known fields: path, port",
    ),
    (
        "probe-exec-no-command",
        LAB + probed("{exec: {}}"),
        P + ".exec.command",
        "required field is missing",
        "add 'command:'",
    ),
    (
        "probe-exec-empty-command",
        LAB + probed("{exec: {command: []}}"),
        P + ".exec.command",
        "an empty command",
        "give it e.g.",
    ),
    (
        "probe-exec-command-string",
        LAB + probed("{exec: {command: 'test -f x'}}"),
        P + ".exec.command",
        "expected a list, got the string 'test -f x'",
        "YAML list",
    ),
    (
        "probe-initial-delay-negative",
        LAB + probed("{tcpSocket: {port: 80}, initialDelaySeconds: -1}"),
        P + ".initialDelaySeconds",
        "-1 is out of range",
        "use 0..3600",
    ),
    (
        "probe-period-zero",
        LAB + probed("{tcpSocket: {port: 80}, periodSeconds: 0}"),
        P + ".periodSeconds",
        "0 is out of range",
        "use 0.1..3600",
    ),
    (
        "probe-timeout-quoted",
        LAB + probed("{tcpSocket: {port: 80}, timeoutSeconds: '2'}"),
        P + ".timeoutSeconds",
        "expected a number, got the string '2'",
        "write it without quotes: 2",
    ),
    (
        "probe-success-threshold-zero",
        LAB + probed("{tcpSocket: {port: 80}, successThreshold: 0}"),
        P + ".successThreshold",
        "0 is out of range",
        "use 1..100",
    ),
    (
        "probe-failure-threshold-fraction",
        LAB + probed("{tcpSocket: {port: 80}, failureThreshold: 1.5}"),
        P + ".failureThreshold",
        "expected an integer, got the number 1.5",
        "write a whole number",
    ),
    (
        "probe-in-deployment",
        LAB + probed("{tcpSocket: {port: htp}}", kind="Deployment"),
        "Deployment/c: spec.template.spec.containers[0].readinessProbe.tcpSocket.port",
        "no port named 'htp' in this container",
        "did you mean 'http'?",
    ),
    (
        "probe-not-a-mapping",
        LAB + probed("[tcpSocket]"),
        P,
        "expected a mapping, got a list",
        "'key: value' lines",
    ),
]


@pytest.mark.parametrize(
    ("text", "path", "message", "fix"), [c[1:] for c in ERRORS], ids=[c[0] for c in ERRORS]
)
def test_error_names_file_path_and_fix(text: str, path: str, message: str, fix: str) -> None:
    found = problems(text)
    matching = [line for line in found if line.startswith(f"t.yaml: {path}: ")]
    assert matching, f"no problem at {path!r} in {found}"
    assert any(message in line and fix in line for line in matching), found


def test_probe_port_named_in_another_container_is_an_error() -> None:
    text = LAB + (
        "---\napiVersion: v1\nkind: Pod\nmetadata: {name: c}\nspec:\n  containers:\n"
        "    - {name: a, command: [sleep, infinity], ports: [{containerPort: 80, name: http}]}\n"
        "    - {name: b, command: [sleep, infinity], readinessProbe: {tcpSocket: {port: http}}}\n"
    )
    assert problems(text) == [
        "t.yaml: Pod/c: spec.containers[1].readinessProbe.tcpSocket.port: no port named 'http' "
        "in this container; add it to the container's ports, or give the port number"
    ]


@pytest.mark.parametrize(
    ("text", "line"),
    [
        (
            LAB + service("ports: [{port: 80, targetPort: '8080'}]"),
            "t.yaml: Service/web: spec.ports[0].targetPort: '8080' is a string, so it would "
            "name a port, and names need a letter; write the number without quotes: 8080",
        ),
        (
            LAB + probed("{grpc: {port: 80}}"),
            f"t.yaml: {P}.grpc: grpc probes are not emulated; use tcpSocket or httpGet",
        ),
    ],
    ids=["target-port", "grpc"],
)
def test_one_error_per_mistake(text: str, line: str) -> None:
    """A bad value is reported once, not again as a knock-on problem."""
    assert problems(text) == [line]


# ---------------------------------------------------------------- parse_manifests


def test_parse_manifests_against_a_lab() -> None:
    spec = parse_lab(lab("serviceNetwork: 172.20.0.0/16"))
    found = parse_manifests(
        WEB + service("clusterIP: 172.20.0.5\nports: [{port: 80, targetPort: http}]"), spec, "x"
    )
    assert isinstance(found, ManifestSet)
    assert [d.name for d in found.deployments] == ["web"] and found.pods == ()
    assert found.services[0].cluster_ip == IPv4Address("172.20.0.5")


# (id, text, path, message)
APPLY_ERRORS = [
    (
        "outside-the-lab-network",
        service("clusterIP: 10.96.0.5\nports: [{port: 80}]"),
        "Service/web: spec.clusterIP",
        "outside lab.serviceNetwork (172.20.0.0/16)",
    ),
    (
        "kube-dns",
        service("ports: [{port: 53}]", name="kube-dns", meta=", namespace: kube-system"),
        "Service/kube-dns: metadata.name",
        "is the lab's DNS",
    ),
    ("lab-section", LAB, "documents[0]", "cannot be applied to a running lab"),
    (
        "unschedulable",
        probed("{tcpSocket: {port: 80}}").replace("  containers:", "  nodeName: n9\n  containers:"),
        "Pod/c: spec.nodeName",
        "no node 'n9' in the lab",
    ),
    ("yaml", "kind: [", "line 1, column 8", "YAML syntax error"),
]


@pytest.mark.parametrize(
    ("text", "path", "message"), [c[1:] for c in APPLY_ERRORS], ids=[c[0] for c in APPLY_ERRORS]
)
def test_parse_manifests_errors(text: str, path: str, message: str) -> None:
    spec = parse_lab(lab("serviceNetwork: 172.20.0.0/16"))
    with pytest.raises(SpecError) as info:
        parse_manifests(text, spec, "apply.yaml")
    lines = [p.render(info.value.source) for p in info.value.problems]
    assert any(line.startswith(f"apply.yaml: {path}: ") and message in line for line in lines), (
        lines
    )


# ---------------------------------------------------------------- the builder


def builder(**options: Any) -> LabBuilder:
    b = LabBuilder("t", **options)
    b.add_rack("rack1", "192.168.1.0/24")
    b.add_node("n1", rack="rack1")
    b.add_node("n2", rack="rack1")
    return b


# (id, add_service keyword arguments, the ServiceSpec fields expected)
BUILT = [
    ("tuple", {"ports": [(80, 8080)]}, {"ports": (ServicePort(80, 8080),)}),
    ("int", {"ports": [80]}, {"ports": (ServicePort(80, 80),)}),
    (
        "named-tuples",
        {"ports": [(80, "http", "web"), (443, 8443, "tls")]},
        {"ports": (ServicePort(80, "http", "TCP", "web"), ServicePort(443, 8443, "TCP", "tls"))},
    ),
    (
        "dict",
        {"ports": [{"port": 80, "targetPort": 8080, "name": "http"}]},
        {"ports": (ServicePort(80, 8080, "TCP", "http"),)},
    ),
    (
        "protocol-default",
        {"ports": [(53, 53)], "protocol": "UDP"},
        {"ports": (ServicePort(53, 53, "UDP"),)},
    ),
    (
        "dict-keeps-its-protocol",
        {"ports": [{"port": 53, "protocol": "TCP"}], "protocol": "UDP"},
        {"ports": (ServicePort(53, 53, "TCP"),)},
    ),
    ("selector", {"ports": [80], "selector": {"app": "web"}}, {"selector": {"app": "web"}}),
    ("headless", {"headless": True, "selector": {"app": "web"}}, {"headless": True, "ports": ()}),
    (
        "cluster-ip",
        {"ports": [80], "cluster_ip": "10.96.1.1"},
        {"cluster_ip": IPv4Address("10.96.1.1")},
    ),
    (
        "affinity",
        {"ports": [80], "session_affinity": "ClientIP", "affinity_timeout": 60},
        {"session_affinity": "ClientIP", "affinity_timeout": 60},
    ),
    ("namespace", {"ports": [80], "namespace": "shop"}, {"namespace": "shop"}),
    ("labels", {"ports": [80], "labels": {"tier": "front"}}, {"labels": {"tier": "front"}}),
]


@pytest.mark.parametrize(("kwargs", "expected"), [c[1:] for c in BUILT], ids=[c[0] for c in BUILT])
def test_builder_add_service(kwargs: dict[str, Any], expected: dict[str, Any]) -> None:
    b = builder()
    assert b.add_service("web", **kwargs) == "web"
    (svc,) = b.build().services
    for field, value in expected.items():
        got = getattr(svc, field)
        assert (dict(got) if field in ("selector", "labels") else got) == value, field


def test_builder_options_reach_the_spec() -> None:
    spec = builder(
        service_network="172.20.0.0/16", dns_zone="lab.local", dns_ttl=30, dns_replicas=2, dns=False
    ).build()
    assert spec.service_network == IPv4Network("172.20.0.0/16")
    assert spec.dns == DnsSpec("lab.local", 30, 2, False)
    assert builder().build().dns == DnsSpec()


def test_builder_probe_and_service_equal_yaml() -> None:
    b = builder()
    b.add_deployment(
        "web",
        command=["python3", "-m", "http.server", "80"],
        ports=[
            {"containerPort": 80, "name": "http"},
            {"containerPort": 53, "name": "dns", "protocol": "UDP"},
        ],
        readiness_probe={"httpGet": {"path": "/", "port": "http"}},
    )
    b.add_service("web", ports=[{"port": 80, "targetPort": "http"}], selector={"app": "web"})
    b.add_pod("c", command=["sleep", "infinity"], readiness_probe={"exec": {"command": ["true"]}})
    built = b.build()
    text = (
        LAB
        + WEB.replace("metadata: {name: web}", "metadata: {name: web, labels: {app: web}}").replace(
            "protocol: UDP}]\n",
            "protocol: UDP}]\n          readinessProbe: {httpGet: {path: /, port: http}}\n",
        )
        + service("ports: [{port: 80, targetPort: http}]\nselector: {app: web}")
        + probed("{exec: {command: ['true']}}", ports="[]")
    )
    loaded = parse_lab(text)
    assert replace(built, source=None) == replace(loaded, source=None)
    assert built.deployments[0].template.containers[0].readiness_probe == ProbeSpec(
        "httpGet", "http"
    )
    assert parse_lab(b.to_yaml()) == replace(built, source=None)


def test_builder_add_manifest_service() -> None:
    b = builder()
    b.add_manifest(
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": "raw", "namespace": "x"},
            "spec": {"clusterIP": "None"},
        }
    )
    (svc,) = b.build().services
    assert (svc.namespace, svc.name, svc.headless) == ("x", "raw", True)


# (id, what to do to the builder, path, message fragment, fix fragment)
BUILDER_ERRORS = [
    (
        "headless-and-cluster-ip",
        lambda b: b.add_service("web", ports=[80], headless=True, cluster_ip="10.96.0.5"),
        "add_service('web')",
        "headless and cluster_ip='10.96.0.5' both given",
        "drop one of them",
    ),
    (
        "two-unnamed-ports",
        lambda b: b.add_service("web", ports=[(80, 8080), (443, 8443)]),
        "Service/web: spec.ports[1].name",
        "required when a Service has more than one port",
        "name each port",
    ),
    (
        "bad-port-shape",
        lambda b: b.add_service("web", ports=["eighty"]),
        "Service/web: spec.ports[0]",
        "expected a mapping, got the string 'eighty'",
        "'key: value' lines",
    ),
    (
        "service-network-overlaps-rack",
        lambda b: setattr(b, "service_network", "192.168.0.0/16"),
        "lab.serviceNetwork",
        "overlaps rack 'rack1'",
        "set lab.serviceNetwork",
    ),
    (
        "bad-ttl",
        lambda b: b.dns.update(ttl=-5),
        "lab.dns.ttl",
        "-5 is out of range",
        "use 0..3600",
    ),
    (
        "bad-probe",
        lambda b: b.add_pod("c", command=["true"], readiness_probe={"tcpSocket": {"port": "x"}}),
        "Pod/c: spec.containers[0].readinessProbe.tcpSocket.port",
        "no port named 'x' in this container",
        "add it to the container's ports",
    ),
]


@pytest.mark.parametrize(
    ("change", "path", "message", "fix"),
    [c[1:] for c in BUILDER_ERRORS],
    ids=[c[0] for c in BUILDER_ERRORS],
)
def test_builder_errors(change, path: str, message: str, fix: str) -> None:
    b = builder()
    change(b)
    with pytest.raises(SpecError) as info:
        b.build()
    lines = [p.render(info.value.source) for p in info.value.problems]
    assert any(
        line.startswith(f"<builder>: {path}: ") and message in line and fix in line
        for line in lines
    ), lines


def test_builder_and_yaml_reject_services_alike() -> None:
    b = builder()
    b.add_service("web", ports=[{"port": 80, "protocol": "SCTP"}], cluster_ip="10.0.0.1")
    with pytest.raises(SpecError) as built:
        b.build()
    with pytest.raises(SpecError) as parsed:
        parse_lab(b.to_yaml(), "same.yaml")
    assert built.value.problems == parsed.value.problems
    assert [p.path for p in built.value.problems] == ["Service/web: spec.ports[0].protocol"]
