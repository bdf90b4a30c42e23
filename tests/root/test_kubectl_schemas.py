"""Kubernetes' own schemas through the real kubectl: lists merged by their keys on
apply, re-apply and strategic patch; `kubectl explain`; unknown fields reported in
kube-apiserver's words."""

from __future__ import annotations

import json
import textwrap

import pytest

from netlab.apiserver import schema
from netlab.lab import Lab
from tests.root.conftest import two_rack_builder
from tests.root.test_kubectl import ECHO, kubectl

pytestmark = pytest.mark.root

SERVICE = textwrap.dedent(
    """\
    apiVersion: v1
    kind: Service
    metadata: {name: NAME}
    spec:
      selector: {app: web}
      ports:
        - {name: http, port: 80, targetPort: 8080}
        - {name: metrics, port: 9090, targetPort: METRICS}
    """
)


@pytest.fixture(scope="module")
def slab():
    b = two_rack_builder("tschema")
    b.add_deployment("web", replicas=1, command=ECHO, ports=[8080])
    with Lab(b.build()) as lab:
        lab.settle()
        yield lab


def ports(lab: Lab, name: str) -> list[tuple[int, int]]:
    service = lab.store.get("services", "default", name)
    return [(p["port"], p["targetPort"]) for p in service["spec"]["ports"]]


@pytest.mark.parametrize("version", ["1.35", "1.20"])
def test_a_two_port_service_keeps_both_ports(slab, tmp_path, version):
    name = "two-" + version.replace(".", "")
    manifest = tmp_path / "svc.yaml"
    manifest.write_text(SERVICE.replace("NAME", name).replace("METRICS", "9090"))
    kubectl(slab, "apply", "-f", str(manifest), version=version)
    assert ports(slab, name) == [(80, 8080), (9090, 9090)]
    # re-applied with a change: kubectl's patch names one port, the other stays
    manifest.write_text(SERVICE.replace("NAME", name).replace("METRICS", "9091"))
    out = kubectl(slab, "apply", "-f", str(manifest), version=version).stdout
    assert "configured" in out
    assert ports(slab, name) == [(80, 8080), (9090, 9091)]
    # a strategic merge patch (kubectl patch's default) merges by port
    patch = '{"spec": {"ports": [{"port": 80, "targetPort": 8081}]}}'
    kubectl(slab, "patch", "service", name, "-p", patch, version=version)
    assert ports(slab, name) == [(80, 8081), (9090, 9091)]
    kubectl(
        slab,
        "patch",
        "service",
        name,
        "-p",
        '{"spec":{"ports":[{"port":70,"name":"extra"}]}}',
        version=version,
    )
    assert ports(slab, name) == [(70, 70), (80, 8081), (9090, 9091)]
    # a port left out of the file is deleted by name ($patch: delete), the others stay
    manifest.write_text(
        SERVICE.replace("NAME", name).replace("METRICS", "9091").replace("- {name: http", "#")
    )
    kubectl(slab, "apply", "-f", str(manifest), version=version)
    assert ports(slab, name) == [(70, 70), (9090, 9091)]
    kubectl(slab, "delete", "service", name)


def test_kubectl_explain_prints_kubernetes_field_docs(slab):
    out = kubectl(slab, "explain", "pod.spec.containers").stdout
    assert "FIELD: containers <[]Container>" in out
    assert "List of containers belonging to the pod" in out
    assert "image\t<string>" in out and "Container image name" in out
    out = kubectl(slab, "explain", "deployment.spec.replicas").stdout
    assert "FIELD: replicas <integer>" in out and "Number of desired pods" in out
    out = kubectl(slab, "explain", "svc.spec.ports.port").stdout
    assert "The port that will be exposed by this service" in out
    # kubectl 1.20 reads the same definitions from /openapi/v2 (gnostic's protobuf)
    out = kubectl(slab, "explain", "pod.spec.containers", version="1.20").stdout
    assert "RESOURCE: containers <[]Object>" in out and "Container image name" in out


def test_kubectl_1_20_validates_with_the_served_definitions(slab, tmp_path):
    manifest = tmp_path / "odd.yaml"
    manifest.write_text(DEPLOYMENT.replace("EXTRA", "foo: 1"))
    refused = kubectl(slab, "apply", "-f", str(manifest), version="1.20", check=False)
    assert refused.returncode != 0
    assert 'unknown field "foo" in io.k8s.api.apps.v1.DeploymentSpec' in refused.stderr


DEPLOYMENT = textwrap.dedent(
    """\
    apiVersion: apps/v1
    kind: Deployment
    metadata: {name: odd}
    spec:
      replicas: 1
      EXTRA
      selector: {matchLabels: {app: odd}}
      template:
        metadata: {labels: {app: odd}}
        spec:
          containers:
            - name: odd
              command: [python3, -m, netlab.apps.echo, "8080"]
    """
)


def test_unknown_fields_in_kube_apiservers_words(slab, tmp_path):
    manifest = tmp_path / "odd.yaml"
    manifest.write_text(DEPLOYMENT.replace("EXTRA", "foo: 1"))
    refused = kubectl(slab, "apply", "-f", str(manifest), check=False)
    assert refused.returncode != 0
    assert (
        'Error from server (BadRequest): error when creating "' + str(manifest) + '": '
        'Deployment in version "v1" cannot be handled as a Deployment: '
        'strict decoding error: unknown field "spec.foo"'
    ) in refused.stderr
    # --validate=warn: the field is dropped with the server's warning, the rest applied
    warned = kubectl(slab, "apply", "--validate=warn", "-f", str(manifest))
    assert 'Warning: unknown field "spec.foo"' in warned.stderr
    assert "foo" not in slab.store.get("deployments", "default", "odd")["spec"]
    # the object exists now: kubectl patches it, and the patch is refused the same way
    manifest.write_text(DEPLOYMENT.replace("EXTRA", "bar: 2"))
    refused = kubectl(slab, "apply", "-f", str(manifest), check=False)
    assert refused.returncode != 0
    assert 'strict decoding error: unknown field "spec.bar"' in refused.stderr
    refused = kubectl(slab, "apply", "--server-side", "-f", str(manifest), check=False)
    assert ".spec.bar: field not declared in schema" in refused.stderr
    refused = kubectl(
        slab, "patch", "deploy", "odd", "--type", "merge", "-p", '{"spec":{"baz":1}}', check=False
    )
    assert 'unknown field "spec.baz"' in refused.stderr
    kubectl(slab, "delete", "deployment", "odd")


def test_what_the_lab_serves_fits_kubernetes_schemas(slab):
    for kind in ("pods", "deployments.apps", "replicasets.apps", "services", "endpoints",
                 "nodes", "namespaces", "events", "leases.coordination.k8s.io"):  # fmt: skip
        listed = json.loads(kubectl(slab, "get", kind, "-A", "-o", "json").stdout)
        for obj in listed["items"]:
            group, _, version = obj["apiVersion"].rpartition("/")
            kind_schema = schema.for_kind(group, version, obj["kind"])
            assert kind_schema.known, obj["kind"]
            assert schema.unknown_fields(obj, kind_schema) == [], obj["metadata"]["name"]
