"""Server-side printing (`meta.k8s.io/v1` Table), as kube-apiserver does it for
`kubectl get`: the client asks with `Accept: application/json;as=Table;...` and
prints the columns the server chose, so kubectl shows the lab's own columns (a
pod's IP, node, rack and namespace path) with the layout `netlab get` uses.
Columns of priority 1 are the ones `-o wide` adds.
"""

from __future__ import annotations

import json
from typing import Any

from netlab.resources import Resource
from netlab.tables import COLUMNS, age

TABLE_VERSIONS = ("meta.k8s.io/v1", "meta.k8s.io/v1beta1")


def wanted(accept: str) -> str | None:
    """The Table apiVersion the client asks for first, or None (plain objects)."""
    for part in accept.split(","):
        params = dict(p.strip().split("=", 1) for p in part.split(";")[1:] if "=" in p)
        if params.get("as") == "Table" and params.get("g") == "meta.k8s.io":
            version = f"meta.k8s.io/{params.get('v', 'v1')}"
            if version in TABLE_VERSIONS:
                return version
        elif part.strip().split(";")[0] in ("application/json", "*/*"):
            return None
    return None


def _definitions(resource: Resource) -> tuple[list[dict], Any]:
    header, extra, row_of = COLUMNS.get(resource.plural, (["NAME", "AGE"], [], None))
    columns = [
        {
            "name": name.title() if name.isupper() else name,
            "type": "string",
            "format": "name" if index == 0 else "",
            "description": "",
            "priority": 0 if index < len(header) else 1,
        }
        for index, name in enumerate([*header, *extra])
    ]
    return columns, row_of


def _row(obj: dict, row_of, include: str) -> dict:
    cells = (
        row_of(obj, True)
        if row_of is not None
        else [obj["metadata"]["name"], age(obj["metadata"].get("creationTimestamp"))]
    )
    row: dict[str, Any] = {"cells": cells}
    if include == "Object":
        row["object"] = obj
    elif include != "None":
        row["object"] = {
            "kind": "PartialObjectMetadata",
            "apiVersion": "meta.k8s.io/v1",
            "metadata": obj["metadata"],
        }
    return row


def table(
    resource: Resource,
    objs: list[dict],
    version: str,
    revision: int | str | None = None,
    include: str = "Metadata",
    columns: bool = True,
) -> dict:
    """The objects as a Table (`columns=False`: rows only, as in later watch events)."""
    definitions, row_of = _definitions(resource)
    body: dict[str, Any] = {"kind": "Table", "apiVersion": version, "metadata": {}}
    if revision is not None:
        body["metadata"]["resourceVersion"] = str(revision)
    body["columnDefinitions"] = definitions if columns else None
    body["rows"] = [_row(obj, row_of, include) for obj in objs]
    return body


def event_object_json(resource: Resource, obj_json: str, version: str, first: bool) -> str:
    """A watch event's object as a one-row Table (the first one with the columns)."""
    obj = json.loads(obj_json)
    revision = obj.get("metadata", {}).get("resourceVersion")
    return json.dumps(table(resource, [obj], version, revision, columns=first))
