"""The lab API's OpenAPI v3 documents, as much of them as kubectl reads.

kubectl 1.27 and newer validate what they send: when the server's OpenAPI v3
document shows its write operations taking the `fieldValidation` parameter, kubectl
leaves validation to the server (it sends `fieldValidation=Strict`); the lab
validates every manifest completely anyway (unknown fields are errors, with their
path). The schemas are open objects tagged with their group, version and kind, so
kubectl falls back to its own built-in types for strategic merge patches.
"""

from __future__ import annotations

import hashlib
import json

from netlab.resources import Resource, ResourceTable

FIELD_VALIDATION = {
    "name": "fieldValidation",
    "in": "query",
    "description": "the lab validates strictly (unknown fields are errors), whatever is asked",
    "schema": {"type": "string", "uniqueItems": True},
}


def _gvk(res: Resource) -> dict:
    return {"group": res.group, "version": res.version, "kind": res.kind}


def _operation(res: Resource, verb: str, write: bool) -> dict:
    op: dict = {
        "operationId": f"{verb}{res.kind}",
        "x-kubernetes-action": verb,
        "x-kubernetes-group-version-kind": _gvk(res),
        "responses": {"200": {"description": "OK"}},
    }
    if write:
        op["parameters"] = [FIELD_VALIDATION]
    return op


def group_version_document(resources: list[Resource]) -> dict:
    """One group-version's document: its paths, and a schema per kind."""
    paths: dict[str, dict] = {}
    schemas: dict[str, dict] = {}
    for res in resources:
        base = f"{res.base_path}/namespaces/{{namespace}}" if res.namespaced else res.base_path
        collection, item = f"{base}/{res.plural}", f"{base}/{res.plural}/{{name}}"
        paths[collection] = {"get": _operation(res, "list", False)} if res.stored else {}
        if "create" in res.verbs:
            paths[collection]["post"] = _operation(res, "post", True)
        if res.stored:
            paths[item] = {"get": _operation(res, "get", False)}
        if "patch" in res.verbs:
            paths[item]["patch"] = _operation(res, "patch", True)
            paths[item]["put"] = _operation(res, "put", True)
        if "delete" in res.verbs:
            paths[item]["delete"] = _operation(res, "delete", False)
        group = res.group or "core"
        schemas[f"io.netlab.{group}.{res.version}.{res.kind}"] = {
            "type": "object",
            "x-kubernetes-group-version-kind": [_gvk(res)],
        }
    return {
        "openapi": "3.0.0",
        "info": {"title": "netlab", "version": "v1"},
        "paths": paths,
        "components": {"schemas": schemas},
    }


def documents(table: ResourceTable) -> tuple[dict, dict[str, dict]]:
    """The root document (`/openapi/v3`) and each group-version's, by its path."""
    by_path: dict[str, dict] = {}
    for group_version, resources in table.group_versions().items():
        path = "api/v1" if group_version == "v1" else f"apis/{group_version}"
        by_path[path] = group_version_document(resources)
    root = {
        "paths": {
            path: {
                "serverRelativeURL": f"/openapi/v3/{path}?hash="
                + hashlib.sha256(json.dumps(doc, sort_keys=True).encode()).hexdigest()[:32].upper()
            }
            for path, doc in by_path.items()
        }
    }
    return root, by_path


V2_PROTOBUF = (
    "application/com.github.proto-openapi.spec.v2.v1.0+protobuf"  # as kube-apiserver says it
)


def _field(number: int, payload: bytes) -> bytes:
    """One length-delimited protobuf field (lengths here are all under 128)."""
    assert len(payload) < 128
    return bytes([number << 3 | 2, len(payload)]) + payload


def v2_document(protobuf: bool) -> bytes:
    """An OpenAPI v2 document with no definitions, for kubectl before 1.27, which
    fetches v2 (as gnostic's protobuf) to validate what it sends: a kind it finds no
    schema for it does not validate, and leaves to the server."""
    if not protobuf:
        return json.dumps(
            {"swagger": "2.0", "info": {"title": "netlab", "version": "v1"}, "paths": {}}
        ).encode()
    info = _field(1, b"netlab") + _field(2, b"v1")
    # Document: swagger (1), info (2), paths (8, empty)
    return _field(1, b"2.0") + _field(2, info) + _field(8, b"")
