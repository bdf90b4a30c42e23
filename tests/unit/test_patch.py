"""PATCH bodies: merge (RFC 7386), strategic merge, JSON patch (RFC 6902)."""

from __future__ import annotations

import json

import pytest

from netlab.apiserver.patch import JSON_PATCH, MERGE, STRATEGIC, apply_patch
from netlab.apiserver.schema import for_kind
from netlab.errors import ApiError

DEPLOYMENT = for_kind("apps", "v1", "Deployment")

BASE = {
    "metadata": {"name": "web", "labels": {"app": "web", "tier": "front"}},
    "spec": {
        "replicas": 2,
        "template": {
            "spec": {
                "containers": [
                    {"name": "web", "image": "v1", "env": [{"name": "A", "value": "1"}]},
                    {"name": "log", "image": "busybox"},
                ]
            }
        },
    },
}


def patch(body, kind):
    return apply_patch(BASE, json.dumps(body).encode(), kind, DEPLOYMENT)


def test_merge_patch_sets_deletes_and_replaces_lists():
    out = patch({"spec": {"replicas": 5}, "metadata": {"labels": {"tier": None}}}, MERGE)
    assert out["spec"]["replicas"] == 5 and out["metadata"]["labels"] == {"app": "web"}
    out = patch({"spec": {"template": {"spec": {"containers": [{"name": "web"}]}}}}, MERGE)
    assert out["spec"]["template"]["spec"]["containers"] == [{"name": "web"}]
    assert BASE["spec"]["replicas"] == 2  # the target is never changed in place


def test_strategic_merge_merges_containers_by_name():
    body = {"spec": {"template": {"spec": {"containers": [{"name": "web", "image": "v2"}]}}}}
    containers = patch(body, STRATEGIC)["spec"]["template"]["spec"]["containers"]
    assert [c["name"] for c in containers] == ["web", "log"]
    assert containers[0] == {"name": "web", "image": "v2", "env": [{"name": "A", "value": "1"}]}
    body = {"spec": {"template": {"spec": {"containers": [{"name": "log", "$patch": "delete"}]}}}}
    containers = patch(body, STRATEGIC)["spec"]["template"]["spec"]["containers"]
    assert [c["name"] for c in containers] == ["web"]


def test_json_patch_operations():
    ops = [
        {"op": "test", "path": "/spec/replicas", "value": 2},
        {"op": "replace", "path": "/spec/replicas", "value": 3},
        {"op": "add", "path": "/metadata/labels/version", "value": "v2"},
        {"op": "remove", "path": "/metadata/labels/tier"},
        {"op": "add", "path": "/spec/template/spec/containers/-", "value": {"name": "x"}},
        {"op": "copy", "from": "/metadata/name", "path": "/metadata/labels/copied"},
    ]
    out = patch(ops, JSON_PATCH)
    assert out["spec"]["replicas"] == 3
    assert out["metadata"]["labels"] == {"app": "web", "version": "v2", "copied": "web"}
    assert out["spec"]["template"]["spec"]["containers"][-1] == {"name": "x"}


@pytest.mark.parametrize(
    "body,kind,status",
    [
        ([{"op": "test", "path": "/spec/replicas", "value": 9}], JSON_PATCH, 422),
        ([{"op": "replace", "path": "/spec/nothing", "value": 1}], JSON_PATCH, 422),
        ([{"op": "remove", "path": "/spec/template/spec/containers/7"}], JSON_PATCH, 422),
        ([{"op": "jump", "path": "/spec"}], JSON_PATCH, 400),
        ([{"op": "add", "path": "spec"}], JSON_PATCH, 400),
        ({"op": "add"}, JSON_PATCH, 400),
        ([1, 2], MERGE, 400),
        ({"spec": {}}, "text/plain", 415),
        ([{"op": "replace", "path": "", "value": 7}], JSON_PATCH, 422),
    ],
)
def test_bad_patches_are_refused(body, kind, status):
    with pytest.raises(ApiError) as err:
        patch(body, kind)
    assert err.value.status == status


def test_malformed_json_is_a_400():
    with pytest.raises(ApiError) as err:
        apply_patch(BASE, b"{not json", MERGE)
    assert err.value.status == 400
