"""Strategic merge patch, as kube-apiserver applies it (apimachinery's strategicpatch),
and the list merging of server-side apply; both read how each list merges from the
schema of the path being merged (`schema.Schema`), never from a field's name alone.

A strategic merge patch is a JSON merge patch in which lists whose schema says
`x-kubernetes-patch-strategy: merge` merge item by item: maps by their
`x-kubernetes-patch-merge-key` (a Service's ports by `port`, a pod's containers by
`name`, a container's ports by `containerPort`), scalars as a set. Other lists are
replaced whole. The directives kubectl sends are honoured: `$patch: replace|delete|
merge` (in a map, or as an item of a list), `$setElementOrder/<field>`,
`$deleteFromPrimitiveList/<field>` and `$retainKeys`.
"""

from __future__ import annotations

import copy
import json
from typing import Any

from netlab.apiserver.schema import Schema
from netlab.errors import ApiError

DIRECTIVE = "$patch"
RETAIN_KEYS = "$retainKeys"
SET_ORDER = "$setElementOrder/"
DELETE_PRIMITIVE = "$deleteFromPrimitiveList/"


def _bad(message: str) -> ApiError:
    return ApiError(400, message, "BadRequest")


def strategic_merge(target: Any, patch: Any, schema: Schema) -> Any:
    """`target` with the strategic merge patch applied (a new value; `target` unchanged)."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    return _merge_map(target if isinstance(target, dict) else {}, patch, schema)


def _merge_map(original: dict, patch: dict, schema: Schema) -> dict:
    patch = dict(patch)
    directive = patch.pop(DIRECTIVE, None)
    if directive == "replace":
        return _merge_map({}, patch, schema)
    if directive == "delete":
        return {}
    if directive not in (None, "merge"):
        raise _bad(f"Unknown patch type: {directive} in map: {json.dumps(patch)}")
    out = dict(original)
    if RETAIN_KEYS in patch:
        retain = patch.pop(RETAIN_KEYS)
        if not isinstance(retain, list):
            raise _bad("invalid patch: $retainKeys must be a list")
        for key, value in patch.items():
            directive_key = key.startswith((SET_ORDER, DELETE_PRIMITIVE))
            if value is not None and not directive_key and key not in retain:
                raise _bad(f"doesn't satisfy retainKeys directive: {key!r} is not in {retain}")
        out = {k: v for k, v in out.items() if k in retain}
    orders = {k[len(SET_ORDER) :]: patch.pop(k) for k in list(patch) if k.startswith(SET_ORDER)}
    deletions = {
        k[len(DELETE_PRIMITIVE) :]: patch.pop(k)
        for k in list(patch)
        if k.startswith(DELETE_PRIMITIVE)
    }
    for key, order in orders.items():  # these lists merge first, then take the order given
        field = schema.field(key)
        if not isinstance(order, list):
            raise _bad(f"invalid patch: {SET_ORDER}{key} must be a list")
        before = out.get(key) if isinstance(out.get(key), list) else []
        if key in patch:
            value = patch.pop(key)
            if value is None:
                out.pop(key, None)
                continue
            merged = _merge_field(before, value, field)
        else:
            merged = before
        if isinstance(merged, list) and "merge" in field.patch_strategies:
            merged = _reorder(merged, order, before, field.merge_key)
        if merged == []:
            out.pop(key, None)
        else:
            out[key] = merged
    for key, value in patch.items():
        if value is None:
            out.pop(key, None)
        else:
            out[key] = _merge_field(out.get(key), value, schema.field(key))
    for key, values in deletions.items():
        field = schema.field(key)
        if not isinstance(values, list):
            raise _bad(f"invalid patch: {DELETE_PRIMITIVE}{key} must be a list")
        if isinstance(out.get(key), list) and "merge" in field.patch_strategies:
            out[key] = [v for v in out[key] if v not in values]
    return out


def _merge_field(old: Any, value: Any, field: Schema) -> Any:
    """One field's new value: merged where both are maps, or lists that merge."""
    if isinstance(value, dict):
        if isinstance(old, dict) and "replace" not in field.patch_strategies:
            return _merge_map(old, value, field)
        return _merge_map({}, value, field)
    if isinstance(value, list):
        if "merge" in field.patch_strategies:
            return _merge_list(old if isinstance(old, list) else [], value, field)
        items = field.items()
        return [_merge_map({}, v, items) if isinstance(v, dict) else v for v in value]
    return value


def _merge_list(original: list, patch: list, field: Schema) -> list:
    key, items = field.merge_key, field.items()
    if not any(isinstance(v, dict) for v in [*original, *patch]):  # scalars: a set
        merged = []
        for v in [*original, *patch]:
            if v not in merged:
                merged.append(v)
        return _reorder(merged, patch, original, None)
    if not key:
        raise ApiError(422, f"cannot merge lists without merge key for {field.raw}")
    adds, replace = [], False
    for item in patch:
        if not isinstance(item, dict):
            raise _bad(f"invalid patch: a list merged by {key!r} holds maps, not {item!r}")
        directive = item.get(DIRECTIVE)
        if directive is None:
            adds.append(item)
        elif directive == "delete":
            if key not in item:
                raise _bad(f"map: {json.dumps(item)} does not contain declared merge key: {key}")
            original = [o for o in original if not _same(o, item, key)]
        elif directive == "replace":
            replace = True
        elif directive == "merge":
            raise _bad("merging lists cannot yet be specified in the patch")
        else:
            raise _bad(f"Unknown patch type: {directive} in map: {json.dumps(item)}")
    if replace:
        return [_merge_map({}, item, items) for item in adds]
    merged = list(original)
    for item in adds:
        if key not in item:
            raise _bad(f"map: {json.dumps(item)} does not contain declared merge key: {key}")
        at = next((i for i, old in enumerate(merged) if _same(old, item, key)), None)
        if at is None:
            merged.append(_merge_map({}, item, items))
        else:
            merged[at] = _merge_map(merged[at], item, items)
    return _reorder(merged, adds, original, key)


def _same(a: Any, b: Any, key: str | None) -> bool:
    if key is None:
        return a == b
    return isinstance(a, dict) and isinstance(b, dict) and key in a and a[key] == b.get(key)


def _index(order: list, item: Any, key: str | None) -> int:
    return next((i for i, o in enumerate(order) if _same(o, item, key)), -1)


def _reorder(merged: list, order: list, server_order: list, key: str | None) -> list:
    """kubectl's order for a merged list: the items named in `order` (the patch, or its
    $setElementOrder) in that order, the others in the live object's order, the two
    interleaved by where they stood in the live object."""
    named = [v for v in merged if _index(order, v, key) >= 0]
    named.sort(key=lambda v: _index(order, v, key))
    rest = [v for v in merged if _index(order, v, key) < 0]
    rest.sort(key=lambda v: _index(server_order, v, key))
    return _interleave(rest, named, server_order, key)


def _interleave(left: list, right: list, server_order: list, key: str | None) -> list:
    """apimachinery's mergeSortedSlice: an item of `left` goes before the next of `right`
    only if both are in the live list and it stood before it there."""
    out, i, j = [], 0, 0
    while i < len(left) or j < len(right):
        if j >= len(right):
            out.append(left[i])
            i += 1
        elif i >= len(left):
            out.append(right[j])
            j += 1
        else:
            li, ri = _index(server_order, left[i], key), _index(server_order, right[j], key)
            if li >= 0 and ri >= 0 and li < ri:
                out.append(left[i])
                i += 1
            else:
                out.append(right[j])
                j += 1
    return out


def apply_merge(current: Any, intent: Any, schema: Schema) -> Any:
    """Server-side apply's merge of an applied configuration (`intent`) into the live
    object, without field ownership: maps merge (what the intent does not name stays),
    lists of type map merge item by item on their `x-kubernetes-list-map-keys` (items
    the intent does not list are gone, the others keep what the intent does not set),
    other lists and scalars are the intent's."""
    if isinstance(intent, dict):
        out = dict(current) if isinstance(current, dict) else {}
        for key, value in intent.items():
            if value is None:
                out.pop(key, None)
            else:
                out[key] = apply_merge(out.get(key), value, schema.field(key))
        return out
    if isinstance(intent, list) and schema.list_type == "map" and schema.map_keys:
        live = current if isinstance(current, list) else []
        items, out = schema.items(), []
        for item in intent:
            match = next((old for old in live if _keys_match(old, item, schema.map_keys)), None)
            out.append(apply_merge(match, item, items))
        return out
    return copy.deepcopy(intent)


def _keys_match(old: Any, new: Any, keys: tuple[str, ...]) -> bool:
    """Same item of a map list: equal on every key the applied item sets (a key it
    leaves out, such as a port's protocol, is the live one's default)."""
    if not isinstance(old, dict) or not isinstance(new, dict):
        return False
    named = [k for k in keys if k in new]
    return bool(named) and all(old.get(k) == new[k] for k in named)
