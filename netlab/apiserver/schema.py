"""Kubernetes' own API schemas, as a Kubernetes release defines them.

The definitions (every kind's fields, their docs, and the extensions that say how a
list merges: `x-kubernetes-patch-strategy`, `x-kubernetes-patch-merge-key`,
`x-kubernetes-list-type`, `x-kubernetes-list-map-keys`) come from the
kubernetes-validate package, which ships them per Kubernetes release, generated
from Kubernetes' OpenAPI document. They are loaded once, on first use, and put back
in OpenAPI v3's form (`$ref: #/components/schemas/NAME`, one type per schema), which
is what the lab serves and what the patch code reads.

Kinds Kubernetes does not define (Istio's VirtualService and DestinationRule,
netlab's RateLimitPolicy) have open schemas: any field, lists replaced whole.
"""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Collection, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from netlab.apiserver.version import MAJOR, MINOR

RELEASE = f"{MAJOR}.{MINOR}"  # the schemas of the release the server says it is (version.py)
"""The Kubernetes release whose schemas the lab serves (the one kubectl 1.35 knows);
the newest one shipped if the package no longer has it."""

REF_PREFIX = "#/components/schemas/"


def _schema_dir() -> Path:
    import kubernetes_validate  # noqa: PLC0415 (large data beside it: imported on first use)

    root = Path(kubernetes_validate.__file__).parent / "kubernetes-json-schema"
    wanted = root / f"v{RELEASE}.0-local"
    if wanted.is_dir():
        return wanted
    shipped = sorted(
        (p for p in root.glob("v*-local") if re.fullmatch(r"v\d+\.\d+\.\d+-local", p.name)),
        key=lambda p: tuple(int(x) for x in p.name[1:-6].split(".")),
    )
    if not shipped:
        raise RuntimeError(f"kubernetes-validate ships no schemas under {root}")
    return shipped[-1]


def _convert(node: Any) -> Any:
    """One schema from the package's JSON Schema form back into OpenAPI v3's."""
    if isinstance(node, list):
        return [_convert(n) for n in node]
    if not isinstance(node, dict):
        return node
    out: dict = {}
    for key, value in node.items():
        if key == "type" and isinstance(value, list):  # ["string", "null"]: optional
            types = [t for t in value if t != "null"]
            out[key] = types[0] if len(types) == 1 else types
        elif key == "$ref":
            out[key] = REF_PREFIX + value.rsplit("/", 1)[-1]
        elif key == "properties":
            out[key] = {name: _convert(prop) for name, prop in value.items()}
        elif key in ("x-kubernetes-group-version-kind", "enum", "required"):
            out[key] = value
        else:
            out[key] = _convert(value)
    if "$ref" in out and len(out) > 1:  # OpenAPI 3.0 ignores a $ref's siblings: wrap it
        out["allOf"] = [{"$ref": out.pop("$ref")}]
    return out


# Kubernetes' OpenAPI describes these two as strings with a format; the package turns
# them into JSON Schema's oneOf (number or string), which kubectl does not read.
_SCALARS = {
    "io.k8s.apimachinery.pkg.util.intstr.IntOrString": {
        "type": "string",
        "format": "int-or-string",
        "description": "IntOrString is a type that can hold an int32 or a string.",
    },
    "io.k8s.apimachinery.pkg.api.resource.Quantity": {
        "type": "string",
        "description": "Quantity is a fixed-point representation of a number "
        "(for example 100m, 1Gi).",
    },
}


@functools.cache
def definitions() -> Mapping[str, dict]:
    """Every definition of the release, by name (`io.k8s.api.core.v1.Pod`)."""
    raw = json.loads((_schema_dir() / "_definitions.json").read_text())
    defs = {name: _convert(schema) for name, schema in raw["$defs"].items()}
    defs.update(_SCALARS)
    for schema in defs.values():  # the package pins apiVersion and kind: Kubernetes does not
        if "x-kubernetes-group-version-kind" in schema:
            for field in ("apiVersion", "kind"):
                schema.get("properties", {}).get(field, {}).pop("enum", None)
    return defs


@functools.cache
def _by_kind() -> Mapping[tuple[str, str, str], str]:
    out: dict[tuple[str, str, str], str] = {}
    for name, schema in definitions().items():
        for gvk in schema.get("x-kubernetes-group-version-kind", ()):
            out.setdefault((gvk["group"], gvk["version"], gvk["kind"]), name)
    return out


def definition_name(group: str, version: str, kind: str) -> str | None:
    """The definition of a kind (`io.k8s.api.apps.v1.Deployment`); None if Kubernetes
    does not define it (the mesh kinds)."""
    return _by_kind().get((group, version, kind))


def referenced(names: list[str]) -> dict[str, dict]:
    """The named definitions and every definition they reach through `$ref`."""
    defs, out = definitions(), {}
    todo = list(names)
    while todo:
        name = todo.pop()
        if name in out or name not in defs:
            continue
        out[name] = defs[name]
        todo.extend(_refs(defs[name]))
    return out


def _refs(node: Any) -> Iterator[str]:
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "$ref" and isinstance(value, str):
                yield value.removeprefix(REF_PREFIX)
            else:
                yield from _refs(value)
    elif isinstance(node, list):
        for value in node:
            yield from _refs(value)


@dataclass(frozen=True)
class Schema:
    """A place in a kind's schema: a field's own schema (`raw`, where a list's patch
    strategy is written) and the type it refers to. `Schema.OPEN` knows nothing: any
    field, lists replaced whole."""

    raw: Mapping[str, Any]

    @functools.cached_property
    def resolved(self) -> Mapping[str, Any]:
        node, defs = self.raw, None
        for _ in range(8):  # a field refers to a type, at most through allOf
            if node.get("allOf"):
                node = node["allOf"][0]
            elif "$ref" in node:
                defs = defs or definitions()
                node = defs.get(node["$ref"].removeprefix(REF_PREFIX), {})
            else:
                break
        return node

    def _ext(self, name: str) -> Any:
        return self.raw.get(name, self.resolved.get(name))

    @property
    def known(self) -> bool:
        """True if the schema lists its fields (unknown ones are then errors)."""
        return "properties" in self.resolved

    def field(self, name: str) -> Schema:
        """A field of an object, or a value of a map; OPEN if not known."""
        node = self.resolved
        if name in node.get("properties", {}):
            return Schema(node["properties"][name])
        extra = node.get("additionalProperties")
        return Schema(extra) if isinstance(extra, dict) else OPEN

    def items(self) -> Schema:
        """The schema of a list's items; OPEN if not known."""
        items = self.resolved.get("items")
        return Schema(items) if isinstance(items, dict) else OPEN

    @property
    def patch_strategies(self) -> tuple[str, ...]:
        """`("merge",)`, `("merge", "retainKeys")`, `("replace",)`, or ()."""
        value = self._ext("x-kubernetes-patch-strategy") or ""
        return tuple(s for s in value.split(",") if s)

    @property
    def merge_key(self) -> str | None:
        return self._ext("x-kubernetes-patch-merge-key")

    @property
    def list_type(self) -> str:
        """`map`, `set` or `atomic` (Kubernetes' default for a list)."""
        return self._ext("x-kubernetes-list-type") or "atomic"

    @property
    def map_keys(self) -> tuple[str, ...]:
        return tuple(self._ext("x-kubernetes-list-map-keys") or ())


OPEN = Schema({})


def for_kind(group: str, version: str, kind: str) -> Schema:
    """The schema of a kind's objects; OPEN for kinds Kubernetes does not define."""
    name = definition_name(group, version, kind)
    return Schema({"$ref": REF_PREFIX + name}) if name else OPEN


def unknown_fields(obj: Any, schema: Schema, apply_paths: bool = False) -> list[str]:
    """The paths of `obj`'s fields that the schema does not define, in order, as
    kube-apiserver's strict decoding names them (`spec.template.spec.containers[0].foo`),
    or with `apply_paths` as server-side apply does (`.spec.containers[name="web"].foo`)."""
    out: list[str] = []
    _walk(obj, schema, "", out, None, apply_paths)
    return out


def prune_unknown(obj: Any, schema: Schema, keep: Collection[str] = ()) -> tuple[Any, list[str]]:
    """`obj` without the fields the schema does not define (a copy), as kube-apiserver
    drops them when not validating strictly, and their paths; the paths in `keep` stay."""
    out: list[str] = []
    return _walk(obj, schema, "", out, set(keep), False), out


def _item_path(path: str, index: int, item: Any, schema: Schema, apply_paths: bool) -> str:
    if apply_paths and schema.list_type == "map" and isinstance(item, dict):
        keys = [k for k in schema.map_keys if k in item]
        if keys:
            return path + "[" + ",".join(f"{k}={json.dumps(item[k])}" for k in keys) + "]"
    return f"{path}[{index}]"


def _walk(
    value: Any, schema: Schema, path: str, out: list[str], keep: set | None, apply_paths: bool
) -> Any:
    """Collect unknown paths into `out`; with `keep` (a set), return a pruned copy."""
    node = schema.resolved
    if isinstance(value, dict):
        props = node.get("properties")
        extra = node.get("additionalProperties")
        kept = {}
        for key, item in value.items():
            where = f"{path}.{key}" if path or apply_paths else key
            if props is not None and key in props:
                kept[key] = _walk(item, Schema(props[key]), where, out, keep, apply_paths)
            elif isinstance(extra, dict):
                kept[key] = _walk(item, Schema(extra), where, out, keep, apply_paths)
            elif props is not None and extra is not True:
                out.append(where)
                if keep is not None and where in keep:
                    kept[key] = item
            else:
                kept[key] = item
        return kept if keep is not None else value
    if isinstance(value, list) and isinstance(node.get("items"), dict):
        items = Schema(node["items"])
        walked = [
            _walk(v, items, _item_path(path, i, v, schema, apply_paths), out, keep, apply_paths)
            for i, v in enumerate(value)
        ]
        return walked if keep is not None else value
    return value
