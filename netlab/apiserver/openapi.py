"""The lab API's OpenAPI documents: Kubernetes' own schemas for the kinds Kubernetes
defines (schema.py), so that `kubectl explain` prints their fields and kubectl apply
computes its patches from them; open schemas for the mesh kinds.

kubectl 1.27 and newer validate what they send: when the server's OpenAPI v3
document shows its write operations taking the `fieldValidation` parameter, kubectl
leaves validation to the server (it sends `fieldValidation=Strict`), which reports
unknown fields as kube-apiserver does (schema.unknown_fields). A patch operation
that takes `application/strategic-merge-patch+json` tells kubectl apply to compute
its three-way strategic merge patch from this document's schema of the kind; the
mesh kinds, like custom resources, take merge patches only.
"""

from __future__ import annotations

import functools
import hashlib
import json

from aiohttp import web

from netlab.apiserver import openapi_v2, schema
from netlab.resources import Resource, ResourceTable


def _query_param(name: str, description: str) -> dict:
    return {
        "name": name,
        "in": "query",
        "description": description,
        "schema": {"type": "string", "uniqueItems": True},
    }


FIELD_VALIDATION = _query_param(
    "fieldValidation",
    "fieldValidation instructs the server on how to handle objects in the request "
    "containing unknown or duplicate fields: Ignore, Warn or Strict",
)
DRY_RUN = _query_param(
    "dryRun",
    "When present, indicates that modifications should not be persisted. "
    "Valid values are: - All: all dry run stages will be processed",
)
WRITES = ("post", "put", "patch")  # they take dryRun and fieldValidation; delete dryRun
PATCH_TYPES = (
    "application/apply-patch+yaml",
    "application/json-patch+json",
    "application/merge-patch+json",
    "application/strategic-merge-patch+json",
)
PATCH_SCHEMA = "io.k8s.apimachinery.pkg.apis.meta.v1.Patch"


def _gvk(res: Resource) -> dict:
    return {"group": res.group, "version": res.version, "kind": res.kind}


def _ref(name: str) -> dict:
    return {"$ref": schema.REF_PREFIX + name}


def _operation(res: Resource, verb: str, body: str | None = None) -> dict:
    op: dict = {
        "operationId": f"{verb}{res.kind}",
        "x-kubernetes-action": verb,
        "x-kubernetes-group-version-kind": _gvk(res),
        "responses": {"200": {"description": "OK"}},
    }
    if body:
        ok = {"application/json": {"schema": _ref(body)}}
        op["responses"]["200"]["content"] = ok
    if verb in WRITES:
        op["parameters"] = [DRY_RUN, FIELD_VALIDATION]
    elif verb == "delete":
        op["parameters"] = [DRY_RUN]
    return op


def _open_schema(res: Resource) -> tuple[str, dict]:
    """A kind Kubernetes does not define: any fields (as a custom resource without a
    structural schema), tagged with its group, version and kind."""
    name = f"io.netlab.{res.group or 'core'}.{res.version}.{res.kind}"
    return name, {
        "type": "object",
        "x-kubernetes-preserve-unknown-fields": True,
        "x-kubernetes-group-version-kind": [_gvk(res)],
    }


def group_version_document(resources: list[Resource]) -> dict:
    """One group-version's document: its paths, and the schemas of its kinds with every
    definition they refer to."""
    paths: dict[str, dict] = {}
    schemas: dict[str, dict] = {}
    wanted: list[str] = []
    for res in resources:
        name = schema.definition_name(res.group, res.version, res.kind)
        if name is None:
            name, schemas[name] = _open_schema(res)
            patch_types = [t for t in PATCH_TYPES if "strategic" not in t]
        else:
            wanted.append(name)
            patch_types = list(PATCH_TYPES)
        list_name = name + "List" if schema.definitions().get(name + "List") else None
        wanted += [list_name] if list_name else []
        base = f"{res.base_path}/namespaces/{{namespace}}" if res.namespaced else res.base_path
        collection, item = f"{base}/{res.plural}", f"{base}/{res.plural}/{{name}}"
        if res.stored:
            paths[collection] = {"get": _operation(res, "list", list_name)}
            paths[item] = {"get": _operation(res, "get", name)}
        else:
            paths[collection] = {}
        if "create" in res.verbs:
            paths[collection]["post"] = _operation(res, "post", name)
        if "patch" in res.verbs:
            patch = _operation(res, "patch", name)
            patch["requestBody"] = {
                "content": {t: {"schema": _ref(PATCH_SCHEMA)} for t in patch_types},
                "required": True,
            }
            paths[item]["patch"] = patch
            paths[item]["put"] = _operation(res, "put", name)
        if "delete" in res.verbs:
            paths[item]["delete"] = _operation(res, "delete")
    if any("patch" in res.verbs for res in resources):
        wanted.append(PATCH_SCHEMA)
    schemas.update(schema.referenced(wanted))
    return {
        "openapi": "3.0.0",
        "info": {"title": "Kubernetes", "version": f"v{schema.RELEASE}.0"},
        "paths": paths,
        "components": {"schemas": dict(sorted(schemas.items()))},
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


class Documents:
    """The documents of a resource table as JSON (or protobuf) bytes, built on first
    request: Kubernetes' definitions are loaded then, not when the lab starts."""

    def __init__(self, table: ResourceTable):
        self._table = table

    @functools.cached_property
    def _documents(self) -> tuple[dict, dict[str, dict]]:
        return documents(self._table)

    @functools.cached_property
    def _v3(self) -> tuple[bytes, dict[str, bytes]]:
        root, by_path = self._documents
        return json.dumps(root).encode(), {p: json.dumps(d).encode() for p, d in by_path.items()}

    @functools.cached_property
    def _v2(self) -> tuple[bytes, bytes]:
        definitions: dict[str, dict] = {}
        paths: dict[str, dict] = {}
        for doc in self._documents[1].values():
            definitions.update(doc["components"]["schemas"])
            paths.update(doc["paths"])
        doc = openapi_v2.document(dict(sorted(definitions.items())), paths)
        return openapi_v2.encode(doc), json.dumps(doc).encode()

    def root(self) -> bytes:
        return self._v3[0]

    def group_version(self, path: str) -> bytes | None:
        """`api/v1`'s or `apis/apps/v1`'s document; None if the table has no such path."""
        return self._v3[1].get(path)

    def v2(self, protobuf: bool) -> bytes:
        """The v2 document, as gnostic's protobuf (what kubectl before 1.27 asks for) or JSON."""
        return self._v2[0 if protobuf else 1]


def add_routes(app: web.Application, table: ResourceTable) -> None:
    """`/openapi/v3`, `/openapi/v3/<group-version>` and `/openapi/v2` on the app."""
    docs = Documents(table)

    async def v3(request: web.Request) -> web.Response:
        path = request.match_info.get("path")
        body = docs.root() if path is None else docs.group_version(path)
        if body is None:
            raise web.HTTPNotFound()
        return web.Response(body=body, content_type="application/json")

    async def v2(request: web.Request) -> web.Response:
        if "protobuf" in request.headers.get("Accept", ""):
            return web.Response(body=docs.v2(True), content_type=openapi_v2.MEDIA_TYPE)
        return web.Response(body=docs.v2(False), content_type="application/json")

    app.router.add_get("/openapi/v3", v3)
    app.router.add_get("/openapi/v3/{path:.+}", v3)
    app.router.add_get("/openapi/v2", v2)
