"""The OpenAPI v2 document, for kubectl before 1.27: its `explain`, its client-side
validation (`--validate`, on by default) and its apply read the definitions from
`/openapi/v2`, which it fetches as gnostic's protobuf (openapiv2/OpenAPIv2.proto).

The definitions are the v3 documents' (schema.py), in v2's form: a `$ref` is
`#/definitions/NAME` beside its description, and extensions are YAML in gnostic's
`Any`. The paths carry each operation's group-version-kind and query parameters
only: kubectl 1.20 looks for `dryRun` on a kind's PATCH before it sends a server dry
run, and computes apply's patches from its built-in types, which carry the same patch
strategies and merge keys.
"""

from __future__ import annotations

from typing import Any

import yaml

from netlab.apiserver.schema import REF_PREFIX

MEDIA_TYPE = "application/com.github.proto-openapi.spec.v2.v1.0+protobuf"  # kube-apiserver's
V2_REF = "#/definitions/"


PATH_ITEM_FIELDS = {"get": 2, "put": 3, "post": 4, "delete": 5, "patch": 8}  # PathItem's


def document(definitions: dict[str, dict], paths: dict[str, dict] | None = None) -> dict:
    """The swagger 2.0 document (JSON form) with these definitions and paths (v3's form)."""
    return {
        "swagger": "2.0",
        "info": {"title": "Kubernetes", "version": "v1"},
        "paths": {path: _path_to_v2(item) for path, item in (paths or {}).items()},
        "definitions": {name: _to_v2(schema) for name, schema in definitions.items()},
    }


def _path_to_v2(item: dict) -> dict:
    """An operation's id, its x-kubernetes-* extensions and its query parameters."""
    out = {}
    for verb, op in item.items():
        if verb not in PATH_ITEM_FIELDS:
            continue
        v2 = {k: v for k, v in op.items() if k == "operationId" or k.startswith("x-")}
        v2["parameters"] = [
            {"name": p["name"], "in": "query", "type": "string", "uniqueItems": True}
            for p in op.get("parameters", ())
        ]
        v2["responses"] = {"200": {"description": "OK"}}
        out[verb] = v2
    return out


def _to_v2(node: Any) -> Any:
    if isinstance(node, list):
        return [_to_v2(n) for n in node]
    if not isinstance(node, dict):
        return node
    out = {k: _to_v2(v) for k, v in node.items() if k not in ("allOf", "$ref", "properties")}
    if node.get("allOf"):
        out.update(_to_v2(node["allOf"][0]))
    if "$ref" in node:
        out["$ref"] = V2_REF + node["$ref"].removeprefix(REF_PREFIX)
    if "properties" in node:
        out["properties"] = {name: _to_v2(p) for name, p in node["properties"].items()}
    return out


# -- gnostic's protobuf (field numbers from openapiv2/OpenAPIv2.proto) ------------


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        byte, n = n & 0x7F, n >> 7
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _bytes(number: int, payload: bytes | str) -> bytes:
    data = payload.encode() if isinstance(payload, str) else payload
    return _varint(number << 3 | 2) + _varint(len(data)) + data


def _any(value: Any) -> bytes:
    """gnostic's Any: the value as YAML (field 2)."""
    return _bytes(2, yaml.safe_dump(value, default_flow_style=False))


def _named(number: int, name: str, value: bytes) -> bytes:
    """A NamedSchema / NamedAny pair: name (1), value (2)."""
    return _bytes(number, _bytes(1, name) + _bytes(2, value))


def _schema(node: dict) -> bytes:
    out = b""
    if "$ref" in node:
        out += _bytes(1, node["$ref"])
    if "format" in node:
        out += _bytes(2, node["format"])
    if "description" in node:
        out += _bytes(4, node["description"])
    for name in node.get("required", ()):
        out += _bytes(19, name)
    for value in node.get("enum", ()):
        out += _bytes(20, _any(value))
    extra = node.get("additionalProperties")
    if isinstance(extra, dict):
        out += _bytes(21, _bytes(1, _schema(extra)))
    elif isinstance(extra, bool):
        out += _bytes(21, _varint(2 << 3) + _varint(int(extra)))
    if "type" in node:
        types = node["type"] if isinstance(node["type"], list) else [node["type"]]
        out += _bytes(22, b"".join(_bytes(1, t) for t in types))
    if isinstance(node.get("items"), dict):
        out += _bytes(23, _bytes(1, _schema(node["items"])))
    if "properties" in node:
        props = b"".join(_named(1, k, _schema(v)) for k, v in node["properties"].items())
        out += _bytes(25, props)
    for key, value in node.items():
        if key.startswith("x-"):
            out += _named(31, key, _any(value))
    return out


def _operation(op: dict) -> bytes:
    """Operation: operation_id (5), parameters (8), responses (9), vendor extensions (13)."""
    out = _bytes(5, op.get("operationId", ""))
    for param in op.get("parameters", ()):
        # ParametersItem.parameter (1) -> Parameter.non_body_parameter (2) ->
        # NonBodyParameter.query_parameter_sub_schema (3): in (2), name (4), type (6)
        query = _bytes(2, "query") + _bytes(4, param["name"]) + _bytes(6, param["type"])
        out += _bytes(8, _bytes(1, _bytes(2, _bytes(3, query))))
    # Responses: response_code (1) NamedResponseValue{name "200", value{response{description}}}
    ok = _bytes(1, _bytes(1, "200") + _bytes(2, _bytes(1, _bytes(1, "OK"))))
    out += _bytes(9, ok)
    for key, value in op.items():
        if key.startswith("x-"):
            out += _named(13, key, _any(value))
    return out


def _paths(paths: dict[str, dict]) -> bytes:
    """Paths: NamedPathItem (2) per path: name (1), PathItem (2) with its operations."""
    out = b""
    for path, item in paths.items():
        body = b"".join(_bytes(PATH_ITEM_FIELDS[verb], _operation(op)) for verb, op in item.items())
        out += _bytes(2, _bytes(1, path) + _bytes(2, body))
    return out


def encode(doc: dict) -> bytes:
    """The document as gnostic's openapi.v2.Document protobuf."""
    info = _bytes(1, doc["info"]["title"]) + _bytes(2, doc["info"]["version"])
    definitions = b"".join(
        _named(1, name, _schema(schema)) for name, schema in doc["definitions"].items()
    )
    paths = _paths(doc.get("paths") or {})
    return _bytes(1, doc["swagger"]) + _bytes(2, info) + _bytes(8, paths) + _bytes(9, definitions)
