"""Kubernetes' own schemas (from the kubernetes-validate package): how lists merge,
unknown fields as kube-apiserver names them, and the OpenAPI v3 documents served."""

from __future__ import annotations

import pytest

from netlab.apiserver import openapi, schema
from netlab.resources import DEFAULT_TABLE

DEPLOYMENT = {
    "apiVersion": "apps/v1",
    "kind": "Deployment",
    "metadata": {"name": "web", "labels": {"app": "web"}, "annotations": {"a": "b"}},
    "spec": {
        "replicas": 2,
        "foo": 1,
        "selector": {"matchLabels": {"app": "web"}},
        "template": {
            "metadata": {"labels": {"app": "web"}},
            "spec": {
                "containers": [
                    {
                        "name": "web",
                        "image": "busybox",
                        "resources": {"limits": {"cpu": "1"}},
                        "ports": [{"containerPort": 80, "bogus": True}],
                    }
                ]
            },
        },
    },
    "status": {"replicas": 2},
}


@pytest.mark.parametrize(
    "group,version,kind,path,strategy,key,list_type,map_keys",
    [
        ("", "v1", "Service", ["spec", "ports"], ("merge",), "port", "map", ("port", "protocol")),
        ("", "v1", "Pod", ["spec", "containers"], ("merge",), "name", "map", ("name",)),
        (
            "",
            "v1",
            "Pod",
            ["spec", "volumes"],
            ("merge", "retainKeys"),
            "name",
            "map",
            ("name",),
        ),
        ("", "v1", "Pod", ["metadata", "finalizers"], ("merge",), None, "set", ()),
        ("", "v1", "Service", ["spec", "externalIPs"], (), None, "atomic", ()),
        ("apps", "v1", "Deployment", ["spec", "strategy"], ("retainKeys",), None, "atomic", ()),
    ],
)
def test_lists_say_how_they_merge(group, version, kind, path, strategy, key, list_type, map_keys):
    node = schema.for_kind(group, version, kind)
    for part in path:
        node = node.field(part)
    assert (node.patch_strategies, node.merge_key) == (strategy, key)
    assert (node.list_type, node.map_keys) == (list_type, map_keys)


def test_container_ports_merge_by_container_port():
    pod = schema.for_kind("", "v1", "Pod")
    ports = pod.field("spec").field("containers").items().field("ports")
    assert ports.merge_key == "containerPort" and ports.map_keys == ("containerPort", "protocol")


def test_unknown_fields_are_named_as_strict_decoding_names_them():
    dep = schema.for_kind("apps", "v1", "Deployment")
    assert schema.unknown_fields(DEPLOYMENT, dep) == [
        "spec.foo",
        "spec.template.spec.containers[0].ports[0].bogus",
    ]
    assert schema.unknown_fields(DEPLOYMENT, dep, apply_paths=True) == [
        ".spec.foo",
        '.spec.template.spec.containers[name="web"].ports[containerPort=80].bogus',
    ]
    pruned, found = schema.prune_unknown(DEPLOYMENT, dep, keep={"spec.foo"})
    assert len(found) == 2 and pruned["spec"]["foo"] == 1
    assert pruned["spec"]["template"]["spec"]["containers"][0]["ports"] == [{"containerPort": 80}]
    assert schema.unknown_fields(pruned, dep) == ["spec.foo"]
    assert "bogus" in DEPLOYMENT["spec"]["template"]["spec"]["containers"][0]["ports"][0]


def test_kinds_kubernetes_does_not_define_are_open():
    vs = schema.for_kind("networking.istio.io", "v1", "VirtualService")
    assert not vs.known and schema.unknown_fields({"spec": {"anything": 1}}, vs) == []


def test_openapi_v3_serves_the_real_schemas():
    _, docs = openapi.documents(DEFAULT_TABLE)
    core = docs["api/v1"]["components"]["schemas"]
    pod = core["io.k8s.api.core.v1.Pod"]
    assert pod["x-kubernetes-group-version-kind"] == [{"group": "", "kind": "Pod", "version": "v1"}]
    assert pod["properties"]["spec"]["allOf"] == [
        {"$ref": "#/components/schemas/io.k8s.api.core.v1.PodSpec"}
    ]
    containers = core["io.k8s.api.core.v1.PodSpec"]["properties"]["containers"]
    assert containers["x-kubernetes-patch-merge-key"] == "name" and containers["type"] == "array"
    assert "Container image name" in str(
        core["io.k8s.api.core.v1.Container"]["properties"]["image"]
    )
    # every $ref resolves inside its own document
    for doc in docs.values():
        names = doc["components"]["schemas"]
        assert all(ref in names for ref in schema._refs(doc)), doc["info"]
    item = "/api/v1/namespaces/{namespace}/services/{name}"
    patch = docs["api/v1"]["paths"][item]["patch"]
    assert "application/strategic-merge-patch+json" in patch["requestBody"]["content"]
    mesh = docs["apis/networking.istio.io/v1"]
    vs = mesh["paths"]["/apis/networking.istio.io/v1/namespaces/{namespace}/virtualservices/{name}"]
    assert "application/strategic-merge-patch+json" not in vs["patch"]["requestBody"]["content"]
    open_schemas = [
        s
        for s in mesh["components"]["schemas"].values()
        if "x-kubernetes-preserve-unknown-fields" in s
    ]
    assert len(open_schemas) == 2
