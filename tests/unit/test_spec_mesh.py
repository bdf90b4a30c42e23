"""The spec layer's mesh: VirtualService, DestinationRule, RateLimitPolicy,
Namespace labels, lab.mesh, sidecar injection and the interception rules."""

from __future__ import annotations

from pathlib import Path

import pytest

from netlab.errors import SpecError
from netlab.plan.interception import interception_script
from netlab.spec import parse_lab, parse_manifests
from netlab.spec.mesh import MeshContext, parse_duration, resolve_host
from netlab.system import SIDECAR_CONTAINER, mesh_enabled, with_system_workloads

LAB = """\
lab:
  name: t
  racks:
    - {name: rack1, subnet: 192.168.1.0/24, nodes: [n1, n2]}
"""

APPS = """\
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: reviews}
spec:
  selector: {matchLabels: {app: reviews}}
  template:
    metadata: {labels: {app: reviews, version: v1}}
    spec:
      containers: [{name: r, command: [sleep, "1"], ports: [{containerPort: 9080, name: http}]}]
---
apiVersion: v1
kind: Service
metadata: {name: reviews}
spec: {selector: {app: reviews}, ports: [{name: http, port: 9080, targetPort: http}]}
---
apiVersion: v1
kind: Service
metadata: {name: ratings}
spec: {selector: {app: ratings}, ports: [{name: http, port: 9080}]}
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: reviews}
spec:
  host: reviews
  subsets: [{name: v1, labels: {version: v1}}, {name: v2, labels: {version: v2}}]
"""


def vs(http: str, hosts: str = "[reviews]", api: str = "networking.istio.io/v1") -> str:
    body = "".join(f"    {line}\n" for line in http.splitlines())
    return (
        f"---\napiVersion: {api}\nkind: VirtualService\nmetadata: {{name: reviews}}\n"
        f"spec:\n  hosts: {hosts}\n  http:\n{body}"
    )


def rlp(spec: str) -> str:
    body = "".join(f"  {line}\n" for line in spec.splitlines())
    return f"---\napiVersion: netlab.io/v1alpha1\nkind: RateLimitPolicy\nmetadata: {{name: rl}}\nspec:\n{body}"


SPLIT = """\
- name: split
  route:
    - {destination: {host: reviews, subset: v1}, weight: 90}
    - {destination: {host: reviews, subset: v2}, weight: 10}
"""


def problems(text: str) -> list[str]:
    with pytest.raises(SpecError) as err:
        parse_lab(text, "f.yaml")
    return [f"{p.path}: {p.message}" for p in err.value.problems]


def test_a_valid_mesh_lab_keeps_its_policies_normalized():
    spec = parse_lab(
        LAB
        + APPS
        + vs(SPLIT, api="networking.istio.io/v1beta1")
        + rlp("targetRef: {kind: Service, name: ratings}\nrequestsPerSecond: 5")
    )
    kinds = sorted((p.kind, p.name) for p in spec.policies)
    assert kinds == [
        ("DestinationRule", "reviews"),
        ("RateLimitPolicy", "rl"),
        ("VirtualService", "reviews"),
    ]
    vs_policy = next(p for p in spec.policies if p.kind == "VirtualService")
    assert vs_policy.manifest["apiVersion"] == "networking.istio.io/v1"  # served as v1
    assert vs_policy.manifest["metadata"]["namespace"] == "default"


@pytest.mark.parametrize(
    "doc, expected",
    [
        (
            vs(SPLIT.replace("weight: 10", "weight: 20")),
            "VirtualService/reviews: spec.http[0].route: weights sum to 110, not 100 (90 + 20)",
        ),
        (
            vs(SPLIT.replace(", weight: 10", "")),
            "VirtualService/reviews: spec.http[0].route: with several destinations every one needs a weight",
        ),
        (
            vs(SPLIT, hosts="[reviewz]"),
            "VirtualService/reviews: spec.hosts[0]: no Service 'reviewz' in namespace 'default'",
        ),
        (
            vs(SPLIT.replace("subset: v2", "subset: v7")),
            "VirtualService/reviews: spec.http[0].route[1].destination.subset: "
            "no DestinationRule for 'reviews' defines subset 'v7' (defined: v1, v2)",
        ),
        (
            vs(SPLIT.replace("host: reviews, subset: v2", "host: nowhere")),
            "VirtualService/reviews: spec.http[0].route[1].destination.host: "
            "no Service 'nowhere' in namespace 'default'",
        ),
        (
            vs("- route: [{destination: {host: reviews, port: {number: 81}}}]"),
            "VirtualService/reviews: spec.http[0].route[0].destination.port.number: "
            "Service 'reviews' has no port 81",
        ),
        (
            vs("- route: [{destination: {host: reviews}}]\n  timeout: soon"),
            "VirtualService/reviews: spec.http[0].timeout: 'soon' is not a duration",
        ),
        (
            vs(
                "- match: [{uri: {prefix: /a, exact: /b}}]\n  route: [{destination: {host: reviews}}]"
            ),
            "VirtualService/reviews: spec.http[0].match[0].uri: give exactly one of exact, prefix, regex",
        ),
        (
            vs(
                "- match: [{headers: {x: {regex: '('}}}]\n  route: [{destination: {host: reviews}}]"
            ),
            "VirtualService/reviews: spec.http[0].match[0].headers.x.regex: regex '(' does not compile",
        ),
        (
            vs(
                "- route: [{destination: {host: reviews}}]\n  retries: {attempts: 2, retryOn: 'bogus'}"
            ),
            "VirtualService/reviews: spec.http[0].retries.retryOn: unknown retry condition 'bogus'",
        ),
        (
            vs("- route: [{destination: {host: reviews}}]\n  fault: {abort: {httpStatus: 99}}"),
            "VirtualService/reviews: spec.http[0].fault.abort.httpStatus: 99 is out of range",
        ),
        (
            vs("- route: [{destination: {host: reviews}}]\n  mirror: {host: reviews}"),
            "VirtualService/reviews: spec.http[0].mirror: unknown field 'mirror'",
        ),
        (
            vs("- route: [{destination: {host: reviews}}]").replace(
                "  http:", "  gateways: [ingress]\n  http:"
            ),
            "VirtualService/reviews: spec.gateways[0]: gateway 'ingress': the lab has no ingress gateways",
        ),
        (
            rlp("targetRef: {name: ratings}\ntokenBucket: {maxTokens: -3}"),
            "RateLimitPolicy/rl: spec.tokenBucket.maxTokens: -3 is out of range",
        ),
        (
            rlp("targetRef: {name: ratings}\nrequestsPerSecond: 0"),
            "RateLimitPolicy/rl: spec.requestsPerSecond: 0 is out of range",
        ),
        (
            rlp("targetRef: {name: ratings}"),
            "RateLimitPolicy/rl: spec: give exactly one of tokenBucket and requestsPerSecond",
        ),
        (
            rlp("targetRef: {name: ratingz}\nrequestsPerSecond: 5"),
            "RateLimitPolicy/rl: spec.targetRef.name: no Service 'ratingz' in namespace 'default'",
        ),
        (
            rlp("targetRef: {name: reviews}\nroute: nope\nrequestsPerSecond: 5"),
            "RateLimitPolicy/rl: spec.route: no VirtualService route named 'nope' for Service 'reviews'",
        ),
        (
            rlp("targetRef: {name: ratings}\nsource: {service: ghost}\nrequestsPerSecond: 5"),
            "RateLimitPolicy/rl: spec.source.service: no Service 'ghost' in namespace 'default'",
        ),
        (
            rlp("targetRef: {name: ratings}\ntokenBucket: {maxTokens: 5, fillInterval: 0s}"),
            "RateLimitPolicy/rl: spec.tokenBucket.fillInterval: '0s' must be longer than 0.001 s",
        ),
        (
            "---\napiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {name: d}\n"
            "spec: {host: reviews, trafficPolicy: {loadBalancer: {simple: FASTEST}}}\n",
            "DestinationRule/d: spec.trafficPolicy.loadBalancer.simple: load balancer 'FASTEST' is not supported",
        ),
        (
            "---\napiVersion: networking.istio.io/v2\nkind: DestinationRule\nmetadata: {name: d}\n"
            "spec: {host: reviews}\n",
            "DestinationRule/d: apiVersion: DestinationRule is networking.istio.io/v1, not 'networking.istio.io/v2'",
        ),
    ],
)
def test_bad_policies_are_refused_with_their_path(doc: str, expected: str):
    found = problems(LAB + APPS + doc)
    assert any(line.startswith(expected) for line in found), found


def test_a_good_rate_limit_may_name_a_route_of_the_services_virtual_service():
    text = (
        LAB
        + APPS
        + vs(SPLIT)
        + rlp("targetRef: {name: reviews}\nroute: split\nrequestsPerSecond: 5")
    )
    assert len(parse_lab(text).policies) == 3


def test_apply_checks_against_the_running_labs_services_and_rules():
    spec = parse_lab(LAB + APPS)
    ctx = MeshContext(
        {(s.namespace, s.name): s for s in spec.services},
        [p for p in spec.policies if p.kind == "DestinationRule"],
        [],
    )
    found = parse_manifests(vs(SPLIT), spec, "apply", ctx)  # subsets come from the running DR
    assert [p.kind for p in found.policies] == ["VirtualService"]
    with pytest.raises(SpecError):
        parse_manifests(vs(SPLIT), spec, "apply", MeshContext(ctx.services))  # no DR: no subsets


@pytest.mark.parametrize(
    "host, namespace, expected",
    [
        ("reviews", "default", ("default", "reviews")),
        ("reviews.shop", "default", ("shop", "reviews")),
        ("reviews.shop.svc", "default", ("shop", "reviews")),
        ("reviews.shop.svc.cluster.local", "default", ("shop", "reviews")),
        ("reviews.shop.svc.other.zone", "default", None),
        ("www.example.com", "default", None),
    ],
)
def test_hosts_resolve_like_istio_short_names(host, namespace, expected):
    assert resolve_host(host, namespace, "cluster.local") == expected


@pytest.mark.parametrize(
    "text, seconds",
    [
        ("1s", 1.0),
        ("0.5s", 0.5),
        ("250ms", 0.25),
        ("1m", 60.0),
        ("100us", 1e-4),
        ("1h", 3600.0),
        ("1m30s", 90.0),  # Go's compound form, as Istio reads it
        ("1", None),
        ("s", None),
        ("-1s", None),
        (5, None),
    ],
)
def test_durations(text, seconds):
    assert parse_duration(text) == (None if seconds is None else pytest.approx(seconds))


INJECTED = """\
---
apiVersion: v1
kind: Namespace
metadata: {name: shop, labels: {netlab.io/inject: "true"}}
---
apiVersion: v1
kind: Pod
metadata: {name: a, namespace: shop}
spec: {containers: [{name: c, command: [sleep, "1"]}]}
---
apiVersion: v1
kind: Pod
metadata: {name: b, namespace: shop, labels: {netlab.io/inject: "false"}}
spec: {containers: [{name: c, command: [sleep, "1"]}]}
---
apiVersion: v1
kind: Pod
metadata: {name: c, labels: {sidecar.istio.io/inject: "true"}}
spec: {containers: [{name: c, command: [sleep, "1"]}]}
---
apiVersion: v1
kind: Pod
metadata: {name: d}
spec: {containers: [{name: c, command: [sleep, "1"]}]}
"""


def test_injection_follows_namespace_and_pod_labels_as_istio_does():
    spec = parse_lab(LAB + INJECTED)
    assert mesh_enabled(spec)
    full = with_system_workloads(spec, Path("/run/netlab/t/api.sock"))
    meshed = {p.name: [c.name for c in p.template.containers] for p in full.pods}
    assert meshed == {
        "a": ["c", SIDECAR_CONTAINER],
        "b": ["c"],
        "c": ["c", SIDECAR_CONTAINER],
        "d": ["c"],
    }
    sidecar = full.pods[0].template.containers[1]
    assert sidecar.argv[1:3] == ("-m", "mesh") and "/run/netlab/t/api.sock" in sidecar.argv
    assert [(d.namespace, d.name) for d in full.deployments][-1] == ("kube-system", "zipkin")
    assert ("kube-system", "zipkin") in {(s.namespace, s.name) for s in full.services}


def test_a_lab_without_meshed_pods_runs_no_collector():
    spec = parse_lab(LAB + APPS.split("kind: DestinationRule")[0].rsplit("---", 1)[0])
    assert not spec.policies and not mesh_enabled(spec)
    full = with_system_workloads(spec, Path("/x"))
    assert "zipkin" not in {d.name for d in full.deployments}
    forced = parse_lab(LAB.replace("  racks:", "  mesh: {enabled: true}\n  racks:") + APPS)
    assert mesh_enabled(forced)


@pytest.mark.parametrize(
    "extra, expected",
    [
        ("mesh: {tracing: {sampling: 101}}", "lab.mesh.tracing.sampling: 101 is out of range"),
        ("mesh: {enabled: maybe}", "lab.mesh.enabled: 'maybe' is not true, false or auto"),
        ("mesh: {tracer: {}}", "lab.mesh.tracer: unknown field 'tracer'"),
    ],
)
def test_bad_lab_mesh_sections(extra, expected):
    text = LAB.replace("  racks:", f"  {extra}\n  racks:")
    assert any(line.startswith(expected) for line in problems(text)), problems(text)


def test_interception_leaves_probes_dns_loopback_and_the_sidecar_alone():
    script = interception_script("10.244.1.1")
    assert script.startswith("table ip netlab_mesh\ndelete table ip netlab_mesh\n")
    assert "ip saddr 10.244.1.1 return" in script  # kubelet's probes come from cni0
    assert "meta mark 0x4e4c return" in script
    assert "tcp dport 53 return" in script
    assert script.index('oifname "lo" return') < script.index("redirect to :15001")
    assert "redirect to :15006" in script
