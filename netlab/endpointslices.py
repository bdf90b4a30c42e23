"""EndpointSlices (`discovery.k8s.io/v1`) from a Service's Endpoints, as Kubernetes'
EndpointSlice controller writes them beside the Endpoints controller's object.

kubectl 1.33 and newer (`describe svc`) and kube-proxy read slices, not Endpoints.
The lab computes a Service's endpoints once (`services.endpoint_subsets`, or the
activator's); this module turns those subsets into slices, so both views always say
the same thing. It is pure: the lab's Services write what it returns.

One slice per port set (the subsets group addresses by the ports they resolve to), of
at most `MAX_ENDPOINTS` endpoints each, as the controller's default. The first slice
of a Service is named `<service>-<5 characters of its identity>` and keeps that name
while pods come and go (an empty Service has it too, with no endpoints, as Kubernetes'
placeholder slice); any further slice is named from its port set and chunk.
"""

from __future__ import annotations

import hashlib
from collections.abc import Collection, Mapping
from typing import Any

SERVICE_NAME_LABEL = "kubernetes.io/service-name"
MANAGED_BY_LABEL = "endpointslice.kubernetes.io/managed-by"
MANAGED_BY = "endpointslice-controller.k8s.io"
MAX_ENDPOINTS = 100  # kube-controller-manager's --max-endpoints-per-slice default
_ALPHABET = "bcdfghjklmnpqrstvwxz2456789"  # the characters of Kubernetes' generated names

Key = tuple[str, str]  # (namespace, pod name)


def slice_name(service: str, *identity: object) -> str:
    """`<service>-xxxxx`: a generated name's shape, but stable for the same identity."""
    digest = hashlib.sha256(repr((service, *identity)).encode()).digest()
    return f"{service}-" + "".join(_ALPHABET[b % len(_ALPHABET)] for b in digest[:5])


def _endpoint(address: dict[str, Any], ready: bool, terminating: bool) -> dict[str, Any]:
    endpoint: dict[str, Any] = {
        "addresses": [address["ip"]],
        "conditions": {"ready": ready, "serving": ready, "terminating": terminating},
    }
    if address.get("hostname"):
        endpoint["hostname"] = address["hostname"]
    if address.get("nodeName"):
        endpoint["nodeName"] = address["nodeName"]
    if address.get("targetRef"):
        endpoint["targetRef"] = dict(address["targetRef"])
    return endpoint


def _ports(subset: dict[str, Any]) -> list[dict[str, Any]]:
    """Slice ports always carry a name ("" when the Service port has none): kubectl
    reads `*port.Name` without checking it."""
    return [
        {"name": p.get("name") or "", "port": p["port"], "protocol": p.get("protocol", "TCP")}
        for p in subset.get("ports") or []
    ]


def endpoint_slices(
    namespace: str,
    service: str,
    subsets: list[dict[str, Any]],
    labels: Mapping[str, str] | None = None,
    terminating: Collection[Key] = (),
) -> list[dict[str, Any]]:
    """The slices of one Service, from its Endpoints' `subsets`.

    Ready addresses are ready and serving; not-ready ones neither, and `terminating`
    if their pod (namespace, name) is being deleted. The Service's labels are copied,
    as the controller does, under the two labels that tie a slice to its Service.
    """
    meta_labels = dict(labels or {})
    meta_labels[SERVICE_NAME_LABEL] = service
    meta_labels[MANAGED_BY_LABEL] = MANAGED_BY
    chunks: list[tuple[tuple, list[dict[str, Any]], list[dict[str, Any]]]] = []
    for subset in subsets:
        ports = _ports(subset)
        endpoints = [_endpoint(a, True, False) for a in subset.get("addresses") or []]
        for address in subset.get("notReadyAddresses") or []:
            ref = address.get("targetRef") or {}
            gone = (ref.get("namespace", namespace), ref.get("name")) in terminating
            endpoints.append(_endpoint(address, False, gone))
        identity = tuple((p["name"], p["port"], p["protocol"]) for p in ports)
        for start in range(0, max(len(endpoints), 1), MAX_ENDPOINTS):
            chunks.append(((identity, start), ports, endpoints[start : start + MAX_ENDPOINTS]))
    if not chunks:  # no endpoints at all: one empty slice, as Kubernetes' placeholder
        chunks.append(((), [], []))
    slices = []
    for index, (identity, ports, endpoints) in enumerate(chunks):
        name = slice_name(service, namespace) if index == 0 else slice_name(service, *identity)
        metadata = {
            "name": name,
            "namespace": namespace,
            "generateName": f"{service}-",
            "labels": dict(meta_labels),
            "ownerReferences": [
                {
                    "apiVersion": "v1",
                    "kind": "Service",
                    "name": service,
                    "controller": True,
                    "blockOwnerDeletion": True,
                }
            ],
        }
        slices.append(
            {
                "apiVersion": "discovery.k8s.io/v1",
                "kind": "EndpointSlice",
                "metadata": metadata,
                "addressType": "IPv4",
                "endpoints": endpoints,
                "ports": ports,
            }
        )
    return slices
