"""The resource metrics API, metrics.k8s.io/v1beta1, as metrics-server serves it
(through kube-apiserver's aggregation): PodMetrics and NodeMetrics, get and list,
for `kubectl top pods|nodes` and `netlab top pods|nodes`.

The usage comes from the lab (`Actions.pod_metrics()`, `Actions.node_metrics()`: the
node's cgroup sampler, netlab.node.metrics); as metrics-server does, a list is the
selected pods (or nodes) of the store that have metrics, each with its object's labels.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable

from aiohttp import web

from netlab.apiserver import tables
from netlab.apiserver.base import ACTIONS, STORE, flag
from netlab.errors import ApiError
from netlab.node.metrics import cpu_quantity, memory_quantity, parse_quantity

GROUP = "metrics.k8s.io"
VERSION = "v1beta1"
GROUP_VERSION = f"{GROUP}/{VERSION}"
BASE = f"/apis/{GROUP_VERSION}"
_VERSION_ENTRY = {"groupVersion": GROUP_VERSION, "version": VERSION}
API_GROUP = {"name": GROUP, "versions": [_VERSION_ENTRY], "preferredVersion": _VERSION_ENTRY}
RESOURCE_LIST = {
    "kind": "APIResourceList",
    "apiVersion": "v1",
    "groupVersion": GROUP_VERSION,
    "resources": [
        {"name": "nodes", "singularName": "node", "namespaced": False, "kind": "NodeMetrics",
         "verbs": ["get", "list"]},
        {"name": "pods", "singularName": "pod", "namespaced": True, "kind": "PodMetrics",
         "verbs": ["get", "list"]},
    ],
}  # fmt: skip


def add_discovery(docs: dict[str, dict]) -> None:
    """Add the group to the discovery documents (`/apis` and the group's own)."""
    docs["/apis"]["groups"].append(API_GROUP)
    docs[f"/apis/{GROUP}"] = {"kind": "APIGroup", "apiVersion": "v1", **API_GROUP}
    docs[BASE] = RESOURCE_LIST


def add_routes(app: web.Application) -> None:
    app.router.add_get(f"{BASE}/pods", list_pods)
    app.router.add_get(f"{BASE}/namespaces/{{namespace}}/pods", list_pods)
    app.router.add_get(f"{BASE}/namespaces/{{namespace}}/pods/{{name}}", get_pod)
    app.router.add_get(f"{BASE}/nodes", list_nodes)
    app.router.add_get(f"{BASE}/nodes/{{name}}", get_node)


async def _from_lab(request: web.Request, method: str) -> list[dict]:
    call: Callable | None = getattr(request.app[ACTIONS], method, None)
    if call is None:  # a lab without metrics: none yet
        return []
    items = call()
    if inspect.isawaitable(items):
        items = await items
    return list(items)


def _no_watch(request: web.Request) -> None:
    if flag(request, "watch"):  # metrics-server's verbs are get and list
        raise ApiError(
            405,
            "the server does not allow this method on the requested resource",
            "MethodNotAllowed",
        )


def _with_labels(metrics: dict, obj: dict) -> dict:
    labels = obj["metadata"].get("labels")
    if not labels:
        return metrics
    return {**metrics, "metadata": {**metrics["metadata"], "labels": dict(labels)}}


def _not_found(kind: str, name: str) -> ApiError:
    error = ApiError(404, f'{kind}.{GROUP} "{name}" not found', "NotFound")
    error.details = {"name": name, "group": GROUP, "kind": kind}  # type: ignore[attr-defined]
    return error


async def _answer(request: web.Request, kind: str, items: list[dict], one: bool) -> web.Response:
    version = tables.wanted(request.headers.get("Accept", ""))
    if version is not None:  # kubectl get podmetrics: metrics-server's columns
        return web.json_response(_table(kind, items, version))
    if one:
        return web.json_response(items[0])
    body = {"kind": f"{kind}List", "apiVersion": GROUP_VERSION, "metadata": {}, "items": items}
    return web.json_response(body)


async def _pods(request: web.Request, name: str | None) -> list[dict]:
    _no_watch(request)
    namespace = request.match_info.get("namespace")
    labels, fields = request.query.get("labelSelector"), request.query.get("fieldSelector")
    if name is not None:
        fields = f"metadata.name={name}"
    pods, _ = request.app[STORE].list("pods", namespace, labels, fields)
    by_key = {
        (m["metadata"]["namespace"], m["metadata"]["name"]): m
        for m in await _from_lab(request, "pod_metrics")
    }
    items = []
    for pod in pods:
        meta = pod["metadata"]
        found = by_key.get((meta["namespace"], meta["name"]))
        if found is not None:
            items.append(_with_labels(found, pod))
    return items


async def list_pods(request: web.Request) -> web.Response:
    return await _answer(request, "PodMetrics", await _pods(request, None), one=False)


async def get_pod(request: web.Request) -> web.Response:
    name, namespace = request.match_info["name"], request.match_info["namespace"]
    items = await _pods(request, name)
    if not items:
        raise _not_found("podmetrics", f"{namespace}/{name}")
    return await _answer(request, "PodMetrics", items, one=True)


async def _nodes(request: web.Request, name: str | None) -> list[dict]:
    _no_watch(request)
    labels, fields = request.query.get("labelSelector"), request.query.get("fieldSelector")
    if name is not None:
        fields = f"metadata.name={name}"
    nodes, _ = request.app[STORE].list("nodes", None, labels, fields)
    by_name = {m["metadata"]["name"]: m for m in await _from_lab(request, "node_metrics")}
    found = ((by_name.get(n["metadata"]["name"]), n) for n in nodes)
    return [_with_labels(m, node) for m, node in found if m is not None]


async def list_nodes(request: web.Request) -> web.Response:
    return await _answer(request, "NodeMetrics", await _nodes(request, None), one=False)


async def get_node(request: web.Request) -> web.Response:
    name = request.match_info["name"]
    items = await _nodes(request, name)
    if not items:
        raise _not_found("nodemetrics", name)
    return await _answer(request, "NodeMetrics", items, one=True)


# -- kubectl get podmetrics / nodemetrics -------------------------------------------------

_COLUMNS = ("Name", "CPU", "Memory", "Window")


def _table(kind: str, items: list[dict], version: str) -> dict:
    """metrics-server's Table: name, CPU, memory (a pod's containers summed), window."""
    rows = []
    for item in items:
        if kind == "PodMetrics":
            usages = [c["usage"] for c in item["containers"]]
            cpu = cpu_quantity(round(sum(parse_quantity(u["cpu"]) for u in usages) * 10**9))
            memory = memory_quantity(round(sum(parse_quantity(u["memory"]) for u in usages)))
        else:
            cpu, memory = item["usage"]["cpu"], item["usage"]["memory"]
        rows.append(
            {
                "cells": [item["metadata"]["name"], cpu, memory, item["window"]],
                "object": {
                    "kind": "PartialObjectMetadata",
                    "apiVersion": "meta.k8s.io/v1",
                    "metadata": item["metadata"],
                },
            }
        )
    definitions = [
        {"name": n, "type": "string", "format": "name" if i == 0 else "", "description": "",
         "priority": 0}
        for i, n in enumerate(_COLUMNS)
    ]  # fmt: skip
    return {
        "kind": "Table",
        "apiVersion": version,
        "metadata": {},
        "columnDefinitions": definitions,
        "rows": rows,
    }
