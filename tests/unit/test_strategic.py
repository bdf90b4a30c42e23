"""Strategic merge patch and server-side apply's list merge, keyed by the schema of the
path being merged (Kubernetes' own definitions), as kube-apiserver merges them."""

from __future__ import annotations

import pytest

from netlab.apiserver.schema import OPEN, for_kind
from netlab.apiserver.strategic import apply_merge, strategic_merge
from netlab.errors import ApiError

SERVICE = for_kind("", "v1", "Service")
POD = for_kind("", "v1", "Pod")
DEPLOYMENT = for_kind("apps", "v1", "Deployment")
VIRTUAL_SERVICE = for_kind("networking.istio.io", "v1", "VirtualService")

P80 = {"name": "http", "port": 80, "targetPort": 8080, "protocol": "TCP"}
P443 = {"name": "https", "port": 443, "targetPort": 8443, "protocol": "TCP"}
SVC = {"metadata": {"name": "web"}, "spec": {"ports": [P80, P443], "selector": {"app": "web"}}}


def ports(obj):
    return [(p["port"], p.get("targetPort")) for p in obj["spec"]["ports"]]


@pytest.mark.parametrize(
    "patch,expected",
    [
        # an item names its port: merged into it, the other port stays
        ({"spec": {"ports": [{"port": 443, "targetPort": 9443}]}}, [(80, 8080), (443, 9443)]),
        # kubectl apply's patch: the new item, and the order of the whole list
        (
            {
                "spec": {
                    "$setElementOrder/ports": [{"port": 80}, {"port": 443}, {"port": 9000}],
                    "ports": [{"port": 9000, "targetPort": 9000}],
                }
            },
            [(80, 8080), (443, 8443), (9000, 9000)],
        ),
        # a new item without an order goes first (apimachinery's mergeSortedSlice)
        ({"spec": {"ports": [{"port": 9000}]}}, [(9000, None), (80, 8080), (443, 8443)]),
        # the order alone reorders
        (
            {"spec": {"$setElementOrder/ports": [{"port": 443}, {"port": 80}]}},
            [(443, 8443), (80, 8080)],
        ),
        ({"spec": {"ports": [{"port": 80, "$patch": "delete"}]}}, [(443, 8443)]),
        ({"spec": {"ports": [{"$patch": "replace"}, {"port": 81}]}}, [(81, None)]),
        ({"spec": {"ports": [{"port": 80, "targetPort": None}]}}, [(80, None), (443, 8443)]),
    ],
)
def test_service_ports_merge_by_port(patch, expected):
    assert ports(strategic_merge(SVC, patch, SERVICE)) == expected
    assert SVC["spec"]["ports"] == [P80, P443]  # the target is never changed in place


POD_OBJ = {
    "metadata": {"name": "p", "finalizers": ["a", "b"], "labels": {"app": "p"}},
    "spec": {
        "containers": [
            {
                "name": "web",
                "image": "v1",
                "command": ["serve", "--port=80"],
                "ports": [{"containerPort": 80}, {"containerPort": 81, "name": "admin"}],
                "env": [{"name": "A", "value": "1"}, {"name": "B", "value": "2"}],
            },
            {"name": "log", "image": "busybox"},
        ],
        "volumes": [{"name": "data", "emptyDir": {}}],
    },
}


@pytest.mark.parametrize(
    "patch,path,expected",
    [
        # containers by name, their ports by containerPort, env by name
        (
            {"spec": {"containers": [{"name": "web", "ports": [{"containerPort": 81}]}]}},
            ("spec", "containers", 0, "ports"),
            [{"containerPort": 80}, {"containerPort": 81, "name": "admin"}],
        ),
        (
            {"spec": {"containers": [{"name": "web", "env": [{"name": "B", "value": "3"}]}]}},
            ("spec", "containers", 0, "env"),
            [{"name": "A", "value": "1"}, {"name": "B", "value": "3"}],
        ),
        (
            {"spec": {"containers": [{"name": "log", "image": "alpine"}]}},
            ("spec", "containers", 1),
            {"name": "log", "image": "alpine"},
        ),
        # a list without a patch strategy is replaced whole
        (
            {"spec": {"containers": [{"name": "web", "command": ["serve"]}]}},
            ("spec", "containers", 0, "command"),
            ["serve"],
        ),
        # scalars that merge (finalizers) are a set; deletions name their values
        ({"metadata": {"finalizers": ["c", "a"]}}, ("metadata", "finalizers"), ["c", "a", "b"]),
        (
            {"metadata": {"$deleteFromPrimitiveList/finalizers": ["a"]}},
            ("metadata", "finalizers"),
            ["b"],
        ),
        # maps: null deletes, $patch replace / delete
        ({"metadata": {"labels": {"app": None, "x": "1"}}}, ("metadata", "labels"), {"x": "1"}),
        (
            {"metadata": {"labels": {"$patch": "replace", "y": "2"}}},
            ("metadata", "labels"),
            {"y": "2"},
        ),
        ({"metadata": {"labels": {"$patch": "delete"}}}, ("metadata", "labels"), {}),
        # volumes merge by name with $retainKeys: the volume's source is swapped
        (
            {
                "spec": {
                    "volumes": [
                        {
                            "name": "data",
                            "$retainKeys": ["name", "hostPath"],
                            "hostPath": {"path": "/d"},
                        }
                    ]
                }
            },
            ("spec", "volumes"),
            [{"name": "data", "hostPath": {"path": "/d"}}],
        ),
    ],
)
def test_pod_lists_merge_by_their_keys(patch, path, expected):
    out = strategic_merge(POD_OBJ, patch, POD)
    for part in path:
        out = out[part]
    assert out == expected


def test_deployment_strategy_retain_keys():
    live = {"spec": {"strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1}}}}
    patch = {"spec": {"strategy": {"$retainKeys": ["type"], "type": "Recreate"}}}
    assert strategic_merge(live, patch, DEPLOYMENT)["spec"]["strategy"] == {"type": "Recreate"}


def test_open_schemas_replace_lists():
    live = {"spec": {"http": [{"name": "a"}, {"name": "b"}]}}
    patch = {"spec": {"http": [{"name": "c"}]}}
    assert strategic_merge(live, patch, VIRTUAL_SERVICE) == patch


def test_new_subtrees_lose_directives_and_nulls():
    patch = {"spec": {"containers": [{"name": "web", "resources": {"limits": {"cpu": None}}}]}}
    out = strategic_merge({"spec": {}}, patch, POD)
    assert out == {"spec": {"containers": [{"name": "web", "resources": {"limits": {}}}]}}


@pytest.mark.parametrize(
    "patch",
    [
        {"spec": {"ports": [{"targetPort": 1}]}},  # no merge key
        {"spec": {"ports": [{"$patch": "delete"}]}},
        {"spec": {"ports": [{"port": 80, "$patch": "explode"}]}},
        {"spec": {"$patch": "explode"}},
        {"spec": {"$retainKeys": ["type"], "selector": {"a": "b"}}},
        {"spec": {"ports": [{"$patch": "merge"}]}},
    ],
)
def test_bad_directives_are_400(patch):
    with pytest.raises(ApiError) as err:
        strategic_merge(SVC, patch, SERVICE)
    assert err.value.status == 400


@pytest.mark.parametrize(
    "intent,expected",
    [
        # a port without its protocol is the live port (protocol defaults to TCP)
        ({"spec": {"ports": [{"port": 80}, {"port": 443}]}}, [(80, 8080), (443, 8443)]),
        ({"spec": {"ports": [{"port": 443, "targetPort": 1}]}}, [(443, 1)]),
        ({"spec": {"ports": [{"port": 443}, {"port": 80}]}}, [(443, 8443), (80, 8080)]),
    ],
)
def test_apply_merges_map_lists_by_their_keys(intent, expected):
    assert ports(apply_merge(SVC, intent, SERVICE)) == expected


def test_apply_keeps_what_the_intent_leaves_out():
    intent = {"metadata": {"labels": {"v": "2"}}, "spec": {"containers": [{"name": "web"}]}}
    out = apply_merge(POD_OBJ, intent, POD)
    assert out["metadata"]["finalizers"] == ["a", "b"]
    assert out["metadata"]["labels"] == {"app": "p", "v": "2"}
    assert [c["name"] for c in out["spec"]["containers"]] == ["web"]
    assert out["spec"]["containers"][0]["image"] == "v1"
    assert apply_merge({"a": [1, 2]}, {"a": [3]}, OPEN) == {"a": [3]}
