"""PATCH bodies as the Kubernetes API takes them: JSON merge patch (RFC 7386), JSON
patch (RFC 6902), and strategic merge patch (a merge patch whose lists merge as the
kind's schema says: a Service's ports by port, a pod's containers by name; see
strategic.py)."""

from __future__ import annotations

import copy
import json
from typing import Any

from netlab.apiserver.schema import OPEN, Schema
from netlab.apiserver.strategic import strategic_merge
from netlab.errors import ApiError

MERGE = "application/merge-patch+json"
STRATEGIC = "application/strategic-merge-patch+json"
JSON_PATCH = "application/json-patch+json"
TYPES = (MERGE, STRATEGIC, JSON_PATCH)


def apply_patch(target: dict, body: bytes, content_type: str, schema: Schema = OPEN) -> dict:
    """`target` with the patch applied (a new dict); ApiError 400/415/422 if it cannot be.
    `schema` is the kind's (`schema.for_kind`): a strategic merge patch needs it to know
    how each list merges (with OPEN, every list is replaced, as in a merge patch)."""
    kind = content_type.split(";")[0].strip().lower()
    if kind not in TYPES:
        raise ApiError(
            415, f"unsupported patch type {content_type!r}; use one of {', '.join(TYPES)}"
        )
    try:
        patch = json.loads(body or b"null")
    except ValueError as exc:
        raise ApiError(400, f"the patch is not valid JSON: {exc}") from None
    if kind == JSON_PATCH:
        if not isinstance(patch, list):
            raise ApiError(400, "a JSON patch is a list of operations")
        return json_patch(target, patch)
    if not isinstance(patch, dict):
        raise ApiError(400, "a merge patch is a JSON object")
    if kind == STRATEGIC:
        return strategic_merge(target, patch, schema)
    return merge(target, patch)


def merge(target: Any, patch: Any) -> Any:
    """RFC 7386: objects merge, null deletes, anything else (lists too) replaces."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    out = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            out.pop(key, None)
        else:
            out[key] = merge(out.get(key), value)
    return out


def json_patch(target: dict, operations: list) -> dict:
    """RFC 6902: add, remove, replace, move, copy, test, in order; all or nothing."""
    doc = copy.deepcopy(target)
    for index, op in enumerate(operations):
        where = f"operation {index}"
        if not isinstance(op, dict) or not isinstance(op.get("op"), str):
            raise ApiError(400, f"{where}: each operation is an object with an 'op'")
        name, path = op["op"], _path(op, "path", where)
        if name in ("add", "replace", "test") and "value" not in op:
            raise ApiError(400, f"{where}: {name} needs a 'value'")
        if name == "add":
            doc = _put(doc, path, copy.deepcopy(op["value"]), where, insert=True)
        elif name == "replace":
            _get(doc, path, where)
            doc = _put(doc, path, copy.deepcopy(op["value"]), where, insert=False)
        elif name == "remove":
            doc = _remove(doc, path, where)
        elif name in ("move", "copy"):
            source = _path(op, "from", where)
            value = copy.deepcopy(_get(doc, source, where))
            if name == "move":
                doc = _remove(doc, source, where)
            doc = _put(doc, path, value, where, insert=True)
        elif name == "test":
            if _get(doc, path, where) != op["value"]:
                raise ApiError(422, f"{where}: test failed at {op['path']}")
        else:
            raise ApiError(400, f"{where}: unknown op {name!r}")
    if not isinstance(doc, dict):
        raise ApiError(422, "the patch replaced the whole object with something else")
    return doc


def _path(op: dict, field: str, where: str) -> list[str]:
    value = op.get(field)
    if not isinstance(value, str) or (value and not value.startswith("/")):
        raise ApiError(400, f"{where}: {field!r} must be a JSON pointer such as /spec/replicas")
    if value == "":
        return []
    return [p.replace("~1", "/").replace("~0", "~") for p in value[1:].split("/")]


def _step(node: Any, part: str, where: str, *, end_ok: bool = False) -> Any:
    if isinstance(node, dict):
        return part
    if isinstance(node, list):
        if part == "-" and end_ok:
            return len(node)
        if not part.isdigit() or int(part) > len(node) - (0 if end_ok else 1):
            raise ApiError(422, f"{where}: no list index {part!r}")
        return int(part)
    raise ApiError(422, f"{where}: cannot go into {type(node).__name__} at {part!r}")


def _get(doc: Any, path: list[str], where: str) -> Any:
    node = doc
    for part in path:
        key = _step(node, part, where)
        if isinstance(node, dict) and key not in node:
            raise ApiError(422, f"{where}: no field {part!r}")
        node = node[key]
    return node


def _put(doc: Any, path: list[str], value: Any, where: str, insert: bool) -> Any:
    if not path:
        return value
    parent = _get(doc, path[:-1], where)
    key = _step(parent, path[-1], where, end_ok=insert)
    if isinstance(parent, list) and insert:
        parent.insert(key, value)
    else:
        parent[key] = value
    return doc


def _remove(doc: Any, path: list[str], where: str) -> Any:
    if not path:
        raise ApiError(422, f"{where}: cannot remove the whole object")
    parent = _get(doc, path[:-1], where)
    key = _step(parent, path[-1], where)
    if isinstance(parent, dict) and key not in parent:
        raise ApiError(422, f"{where}: no field {path[-1]!r} to remove")
    del parent[key]
    return doc
