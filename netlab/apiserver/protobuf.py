"""Kubernetes' protobuf encoding, read for the objects kubectl's generators send
(`kubectl create namespace|deployment|service|job|configmap|secret NAME ...`) and the reviews of
`kubectl auth`: client-go's typed clients write protobuf, and kubectl has no flag to
ask for JSON.

A body is the 4 bytes `k8s\\0` and a `runtime.Unknown` (typeMeta = 1 {apiVersion = 1,
kind = 2}, raw = 2, contentEncoding = 3, contentType = 4); `raw` is the object, in the
field numbers of k8s.io/api's generated.proto. Only the messages and fields below are
known: a body that sets any other field is refused (415, with what to do instead)
rather than applied without it.
"""

from __future__ import annotations

import base64
from typing import Any

from netlab.errors import ApiError

MAGIC = b"k8s\x00"
MEDIA_TYPE = "application/vnd.kubernetes.protobuf"

# A schema: field number -> (JSON name, type); a type is "string", "int", "bool",
# "map" (string to string), "bytesmap" (string to bytes, base64 in JSON), a nested
# schema (dict), or a one-item list of those (repeated).
MAP_ENTRY = {1: ("key", "string"), 2: ("value", "string")}
BYTES_ENTRY = {1: ("key", "string"), 2: ("value", "bytes")}
MAPS = ("map", "bytesmap")
OBJECT_META = {
    1: ("name", "string"),
    2: ("generateName", "string"),
    3: ("namespace", "string"),
    11: ("labels", "map"),
    12: ("annotations", "map"),
}
LABEL_SELECTOR = {1: ("matchLabels", "map")}
INT_OR_STRING = {1: ("type", "int"), 2: ("intVal", "int"), 3: ("strVal", "string")}
CONTAINER_PORT = {
    1: ("name", "string"),
    3: ("containerPort", "int"),
    4: ("protocol", "string"),
}
ENV_VAR = {1: ("name", "string"), 2: ("value", "string")}
RESOURCES: dict = {}  # ResourceRequirements: the generators send it empty
CONTAINER = {
    1: ("name", "string"),
    2: ("image", "string"),
    3: ("command", ["string"]),
    4: ("args", ["string"]),
    6: ("ports", [CONTAINER_PORT]),
    7: ("env", [ENV_VAR]),
    8: ("resources", RESOURCES),
}
POD_SPEC = {
    2: ("containers", [CONTAINER]),
    3: ("restartPolicy", "string"),
    7: ("nodeSelector", "map"),
}
POD_TEMPLATE = {1: ("metadata", OBJECT_META), 2: ("spec", POD_SPEC)}
STRATEGY: dict = {}  # DeploymentStrategy: the generator sends it empty
DEPLOYMENT_SPEC = {
    1: ("replicas", "int"),
    2: ("selector", LABEL_SELECTOR),
    3: ("template", POD_TEMPLATE),
    4: ("strategy", STRATEGY),
}
SERVICE_PORT = {
    1: ("name", "string"),
    2: ("protocol", "string"),
    3: ("port", "int"),
    4: ("targetPort", INT_OR_STRING),
}
SERVICE_SPEC = {
    1: ("ports", [SERVICE_PORT]),
    2: ("selector", "map"),
    3: ("clusterIP", "string"),
    4: ("type", "string"),
}
JOB_SPEC = {
    1: ("parallelism", "int"),
    2: ("completions", "int"),
    3: ("activeDeadlineSeconds", "int"),
    7: ("backoffLimit", "int"),
    6: ("template", POD_TEMPLATE),
}
RESOURCE_ATTRIBUTES = {
    1: ("namespace", "string"),
    2: ("verb", "string"),
    3: ("group", "string"),
    4: ("version", "string"),
    5: ("resource", "string"),
    6: ("subresource", "string"),
    7: ("name", "string"),
}
ACCESS_REVIEW_SPEC = {
    1: ("resourceAttributes", RESOURCE_ATTRIBUTES),
    2: ("nonResourceAttributes", {1: ("path", "string"), 2: ("verb", "string")}),
}
USER_INFO = {1: ("username", "string"), 2: ("uid", "string"), 3: ("groups", ["string"])}
EMPTY: dict = {}
DELETE_OPTIONS = {  # meta/v1 DeleteOptions, whole: client-go's typed deletes send it
    1: ("gracePeriodSeconds", "int"),
    2: ("preconditions", {1: ("uid", "string"), 2: ("resourceVersion", "string")}),
    3: ("orphanDependents", "bool"),
    4: ("propagationPolicy", "string"),
    5: ("dryRun", ["string"]),
    6: ("ignoreStoreReadErrorWithClusterBreakingPotential", "bool"),
}
KINDS = {
    "DeleteOptions": DELETE_OPTIONS,
    "Namespace": {1: ("metadata", OBJECT_META), 2: ("spec", EMPTY), 3: ("status", EMPTY)},
    "Deployment": {
        1: ("metadata", OBJECT_META),
        2: ("spec", DEPLOYMENT_SPEC),
        3: ("status", EMPTY),
    },
    "Service": {1: ("metadata", OBJECT_META), 2: ("spec", SERVICE_SPEC), 3: ("status", EMPTY)},
    "Job": {1: ("metadata", OBJECT_META), 2: ("spec", JOB_SPEC), 3: ("status", EMPTY)},
    # kubectl create configmap|secret (k8s.io/api/core/v1 generated.proto)
    "ConfigMap": {
        1: ("metadata", OBJECT_META),
        2: ("data", "map"),
        3: ("binaryData", "bytesmap"),
        4: ("immutable", "bool"),
    },
    "Secret": {
        1: ("metadata", OBJECT_META),
        2: ("data", "bytesmap"),
        3: ("type", "string"),
        4: ("stringData", "map"),
        5: ("immutable", "bool"),
    },
    # the reviews kubectl auth posts (apiserver/reviews.py); a status sent is not read
    "SelfSubjectReview": {
        1: ("metadata", OBJECT_META),
        2: ("status", {1: ("userInfo", USER_INFO)}),
    },
    "SelfSubjectAccessReview": {
        1: ("metadata", OBJECT_META),
        2: ("spec", ACCESS_REVIEW_SPEC),
        3: ("status", EMPTY),
    },
    "SelfSubjectRulesReview": {
        1: ("metadata", OBJECT_META),
        2: ("spec", {1: ("namespace", "string")}),
        3: ("status", EMPTY),
    },
}
UNKNOWN = {
    1: ("typeMeta", {1: ("apiVersion", "string"), 2: ("kind", "string")}),
    2: ("raw", "bytes"),
}


def _varint(data: bytes, at: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        if at >= len(data) or shift > 63:
            raise ValueError("a varint runs past the end")
        byte = data[at]
        at += 1
        value |= (byte & 0x7F) << shift
        shift += 7
        if not byte & 0x80:
            return value, at


def fields(data: bytes) -> list[tuple[int, int | bytes]]:
    """(field number, value) in order: an int for varints, bytes for length-delimited."""
    out, at = [], 0
    while at < len(data):
        key, at = _varint(data, at)
        number, wire = key >> 3, key & 7
        if wire == 0:
            value, at = _varint(data, at)
        elif wire == 2:
            length, at = _varint(data, at)
            if at + length > len(data):
                raise ValueError("a field runs past the end")
            value, at = data[at : at + length], at + length
        elif wire == 1:
            value, at = int.from_bytes(data[at : at + 8], "little"), at + 8
        elif wire == 5:
            value, at = int.from_bytes(data[at : at + 4], "little"), at + 4
        else:
            raise ValueError(f"wire type {wire} is not protobuf's")
        out.append((number, value))
    return out


def decode(data: bytes, schema: dict, where: str) -> dict[str, Any]:
    """A message as JSON-shaped data, after `schema`."""
    obj: dict[str, Any] = {}
    for number, value in fields(data):
        if value == b"":
            continue  # Go writes its empty strings and messages: absent, in JSON's terms
        if number not in schema:
            if value == 0:
                continue  # a zero says nothing either
            raise ApiError(
                415,
                f"{where}: field {number} of the protobuf body is one the lab does not read; "
                "write the object to a file and use `kubectl create -f` or `kubectl apply -f`",
                "UnsupportedMediaType",
            )
        name, kind = schema[number]
        repeated = isinstance(kind, list)
        item_kind = kind[0] if repeated else kind
        item = _value(value, item_kind, f"{where}.{name}")
        if item_kind in MAPS:
            obj.setdefault(name, {}).update(item)
        elif repeated:
            obj.setdefault(name, []).append(item)
        else:
            obj[name] = item
    return obj


def _value(value: int | bytes, kind: Any, where: str) -> Any:
    if kind == "int":
        return _signed(value) if isinstance(value, int) else _bad(where)
    if kind == "bool":
        return bool(value)
    if not isinstance(value, bytes):
        return _bad(where)
    if kind == "bytes":
        return value
    if kind == "string":
        return value.decode("utf-8")
    if kind == "map":
        entry = decode(value, MAP_ENTRY, where)
        return {entry.get("key", ""): entry.get("value", "")}
    if kind == "bytesmap":
        entry = decode(value, BYTES_ENTRY, where)
        return {entry.get("key", ""): base64.b64encode(entry.get("value", b"")).decode()}
    return decode(value, kind, where)


def _signed(value: int) -> int:
    return value - (1 << 64) if value >= 1 << 63 else value


def _bad(where: str):
    raise ValueError(f"{where} has the wrong wire type")


def to_object(body: bytes) -> dict[str, Any]:
    """The object a protobuf body holds, as the JSON API would have it."""
    if not body.startswith(MAGIC):
        raise ApiError(400, "a protobuf body starts with the bytes k8s\\0", "BadRequest")
    try:
        unknown = decode(body[len(MAGIC) :], UNKNOWN, "body")
        meta = unknown.get("typeMeta") or {}
        kind = meta.get("kind", "")
        if kind not in KINDS:
            raise ApiError(
                415,
                f"the lab reads protobuf bodies of {', '.join(KINDS)} only, not {kind or 'this'}; "
                "use `kubectl create -f` or `kubectl apply -f`",
                "UnsupportedMediaType",
            )
        obj = decode(unknown.get("raw", b""), KINDS[kind], kind)
    except ValueError as exc:
        raise ApiError(400, f"the protobuf body is malformed: {exc}", "BadRequest") from None
    obj = {"apiVersion": meta.get("apiVersion", "v1"), "kind": kind, **obj}
    _int_or_string(obj)
    return obj


def _int_or_string(obj: dict) -> None:
    """IntOrString as JSON writes it: the number or the name."""
    for port in (obj.get("spec") or {}).get("ports") or ():
        target = port.get("targetPort")
        if isinstance(target, dict):
            port["targetPort"] = (
                target.get("strVal") if target.get("type") == 1 else target.get("intVal", 0)
            )
