"""Services of a running lab: VIPs, the endpoints controller and kube-proxy.

Endpoints are the ready pods a Service's selector matches, with each Service
port's targetPort resolved against the pod's containers. Every change is
published to the store (Service and Endpoints objects, which the lab's DNS
server watches, and the EndpointSlices kubectl and kube-proxy read) and programmed into every node as one nftables transaction
(strict round-robin DNAT; see netlab.plan.proxy).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Container, Iterable, Mapping, Sequence
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Network
from typing import Any

from netlab import objects
from netlab.endpointslices import SERVICE_NAME_LABEL, endpoint_slices
from netlab.errors import ApiError, NotFound
from netlab.plan import PodPlan
from netlab.plan.proxy import Endpoint, Ruleset, ServiceRule, render, teardown, transaction
from netlab.plan.services import allocate_cluster_ips, resolve_target_port
from netlab.realize import nftables
from netlab.spec.model import ContainerSpec, ServiceSpec
from netlab.store import Store

log = logging.getLogger(__name__)

Key = tuple[str, str]  # (namespace, name)


@dataclass(frozen=True)
class Candidate:
    """What the endpoints controller needs to know of a pod."""

    namespace: str
    name: str
    labels: Mapping[str, str]
    ip: IPv4Address
    node: str
    ready: bool
    containers: Sequence[ContainerSpec]
    terminating: bool = False  # being deleted (its slice endpoint says so)
    hostname: str | None = None  # spec.hostname and spec.subdomain: a Service named
    subdomain: str | None = None  # as the subdomain gives its address this hostname


def hostname_for(service: ServiceSpec, pod: Candidate) -> str | None:
    """The endpoints controller's rule: a pod with a hostname whose subdomain is the
    Service's name (in its namespace) is named by it in the Service's endpoints, so
    `<hostname>.<service>.<namespace>.svc` resolves (for a headless Service)."""
    if pod.hostname and pod.subdomain == service.name and pod.namespace == service.namespace:
        return pod.hostname
    return None


def selects(service: ServiceSpec, pod: Candidate | PodPlan) -> bool:
    """A Service selects the pods of its namespace whose labels include its selector."""
    if not service.selector or pod.namespace != service.namespace:
        return False
    return all(pod.labels.get(k) == v for k, v in service.selector.items())


def endpoint_subsets(service: ServiceSpec, pods: Iterable[Candidate]) -> list[dict[str, Any]]:
    """Endpoints' subsets: addresses grouped by their resolved port set, as
    the Kubernetes endpoints controller does (pods whose named targetPort
    resolves to nothing are left out of that port)."""
    groups: dict[tuple, dict[str, list]] = {}
    for pod in sorted(pods, key=lambda p: (p.ip, p.name)):
        if not selects(service, pod):
            continue
        ports = []
        for port in service.ports:
            number = resolve_target_port(port, pod.containers)
            if number is not None:
                ports.append((port.name, number, port.protocol))
        if service.ports and not ports:
            continue
        group = groups.setdefault(tuple(ports), {"addresses": [], "notReadyAddresses": []})
        address = {
            "ip": str(pod.ip),
            "nodeName": pod.node,
            "targetRef": {"kind": "Pod", "name": pod.name, "namespace": pod.namespace},
        }
        if hostname := hostname_for(service, pod):
            address["hostname"] = hostname
        group["addresses" if pod.ready else "notReadyAddresses"].append(address)
    subsets = []
    for ports, group in groups.items():
        subset: dict[str, Any] = {k: v for k, v in group.items() if v}
        subset["ports"] = [
            {k: v for k, v in (("name", n), ("port", p), ("protocol", proto)) if v is not None}
            for n, p, proto in ports
        ]
        subsets.append(subset)
    return subsets


def service_rules(service: ServiceSpec, vip: IPv4Address, subsets: list[dict]) -> list[ServiceRule]:
    """The nftables input for one ClusterIP Service: one rule per port, its
    ready endpoints in a stable order."""
    rules = []
    for port in service.ports:
        endpoints = set()
        for subset in subsets:
            match = [
                p
                for p in subset["ports"]
                if p.get("name") == port.name and p["protocol"] == port.protocol
            ]
            for address in subset.get("addresses", []):
                for p in match:
                    endpoints.add(Endpoint(IPv4Address(address["ip"]), p["port"]))
        affinity = service.affinity_timeout if service.session_affinity == "ClientIP" else None
        rules.append(
            ServiceRule(
                namespace=service.namespace,
                name=service.name,
                port_name=port.name,
                vip=vip,
                protocol=port.protocol,
                port=port.port,
                endpoints=tuple(sorted(endpoints, key=lambda e: (e.ip, e.port))),
                affinity_timeout=affinity,
            )
        )
    return rules


def activator_subsets(
    service: ServiceSpec, activator: Candidate, port: int
) -> list[dict[str, Any]]:
    """The Endpoints of a Service scaled to zero: the activator, on its port, for every port."""
    return [
        {
            "addresses": [
                {
                    "ip": str(activator.ip),
                    "nodeName": activator.node,
                    "targetRef": {
                        "kind": "Pod",
                        "name": activator.name,
                        "namespace": activator.namespace,
                    },
                }
            ],
            "ports": [
                {
                    k: v
                    for k, v in (("name", p.name), ("port", port), ("protocol", p.protocol))
                    if v is not None
                }
                for p in service.ports
            ],
        }
    ]


class Services:
    """The lab's Services; `sync` brings Endpoints and the nodes' rules up to date."""

    activator_port = 8012

    def __init__(
        self,
        store: Store,
        network: IPv4Network,
        dns: bool,
        node_paths: Callable[[], list[str]],
    ):
        self.store = store
        self.network = network
        self.dns = dns
        self.node_paths = node_paths
        self.specs: dict[Key, ServiceSpec] = {}
        self.vips: dict[Key, IPv4Address] = {}
        self.subsets: dict[Key, list[dict]] = {}
        self.slices: dict[Key, list[dict]] = {}  # the EndpointSlices last written
        self.ruleset: Ruleset | None = None
        self.last_sync_ms = 0.0

    def set(self, services: Iterable[ServiceSpec]) -> list[Key]:
        """Add or replace Services (VIPs of existing ones are kept); the keys changed."""
        changed = []
        fresh = []
        for service in services:
            key = (service.namespace, service.name)
            old = self.specs.get(key)
            if old == service:
                continue
            keep_vip = (
                old is not None
                and key in self.vips
                and not service.headless
                and service.cluster_ip in (None, self.vips[key])
            )
            if not keep_vip:
                self.vips.pop(key, None)
                if not service.headless:
                    fresh.append(service)
            self.specs[key] = service
            changed.append(key)
        if fresh:
            taken = list(self.vips.values())
            self.vips.update(allocate_cluster_ips(fresh, self.network, taken, dns=self.dns))
        for key in changed:
            service = self.specs[key]
            self.store.apply(objects.service_object(service, _text(self.vips.get(key))))
        return changed

    def adopt(self, services: Iterable[ServiceSpec], vips: dict[Key, str]) -> None:
        """The Services a running lab has (the store's), with the VIPs they have; the
        nodes' rules are unknown, so the next sync replaces them in one transaction."""
        for service in services:
            key = (service.namespace, service.name)
            self.specs[key] = service
            if key in vips:
                self.vips[key] = IPv4Address(vips[key])
        self.ruleset = None
        self.slices = {}
        for obj in self.store.list("endpointslices")[0]:  # the next sync replaces them
            meta = obj["metadata"]
            key = (meta["namespace"], meta["labels"].get(SERVICE_NAME_LABEL, ""))
            self.slices.setdefault(key, []).append({"metadata": {"name": meta["name"]}})

    def remove(self, namespace: str, name: str) -> None:
        key = (namespace, name)
        if key not in self.specs:
            raise NotFound(f"no service {namespace}/{name}")
        del self.specs[key]
        self.vips.pop(key, None)
        self.subsets.pop(key, None)
        self._write_slices(key, [])
        self.store.delete("endpoints", namespace, name)
        self.store.delete("services", namespace, name)

    def vip(self, namespace: str, name: str) -> IPv4Address | None:
        return self.vips.get((namespace, name))

    def sync(
        self,
        pods: Sequence[Candidate],
        activator: Candidate | None = None,
        activated: Container[tuple[str, str]] = (),
    ) -> None:
        """Recompute every Service's endpoints from the pods, publish what
        changed, and program the nodes in one transaction each. A Service in
        `activated` (its pods scale to zero) that has no ready pod gets the
        activator as its endpoint, on `activator_port`, as Knative's do."""
        started = time.perf_counter()
        rules: list[ServiceRule] = []
        terminating = {(p.namespace, p.name) for p in pods if p.terminating}
        for key, service in self.specs.items():
            subsets = endpoint_subsets(service, pods)
            if (
                activator is not None
                and key in activated
                and not any(s.get("addresses") for s in subsets)
            ):
                subsets = activator_subsets(service, activator, self.activator_port)
            if key not in self.subsets or self.subsets[key] != subsets:
                self.subsets[key] = subsets
                self.store.apply(objects.endpoints_object(service, subsets))
            slices = endpoint_slices(*key, subsets, service.labels, terminating)
            if self.slices.get(key) != slices:
                self._write_slices(key, slices)
            if key in self.vips:
                rules += service_rules(service, self.vips[key], subsets)
        desired = render(rules)
        script = transaction(self.ruleset, desired)
        if script:
            try:
                nftables.apply_many(self.node_paths(), script)
            except nftables.ApplyFailures as exc:  # rebuild those nodes from scratch
                log.warning("nftables update failed on %d node(s); rebuilding", len(exc.failures))
                full = transaction(None, desired)
                for path in exc.failures:
                    nftables.apply(path, full)
        self.ruleset = desired
        self.last_sync_ms = (time.perf_counter() - started) * 1000

    def _write_slices(self, key: Key, slices: list[dict]) -> None:
        """Write a Service's EndpointSlices (the store skips unchanged ones) and
        delete those it no longer has."""
        for obj in slices:
            self.store.apply(obj)
        kept = {obj["metadata"]["name"] for obj in slices}
        for old in self.slices.get(key, []):
            name = old["metadata"]["name"]
            if name not in kept:
                try:
                    self.store.delete("endpointslices", key[0], name)
                except ApiError as exc:  # gone already (a namespace deleted under it)
                    if exc.status != 404:
                        raise
        if slices:
            self.slices[key] = slices
        else:
            self.slices.pop(key, None)

    def program_node(self, path: str) -> None:
        """A node that joined gets the whole current state."""
        if self.ruleset is not None:
            script = transaction(None, self.ruleset)
            if script:
                nftables.apply(path, script)

    def unprogram_node(self, path: str) -> None:
        nftables.apply(path, teardown())


def _text(value: Any) -> str | None:
    return None if value is None else str(value)
