"""plan_lab(): the whole LabPlan from a LabSpec, and the pieces a running lab
uses to add a node or a pod later."""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Iterable, Iterator, Sequence
from ipaddress import IPv4Address, IPv4Network
from types import MappingProxyType

from netlab.plan import addressing, names, scheduler
from netlab.plan.model import LabPlan, NodePlan, PodPlan, RackPlan, RouterPlan, RouterPort
from netlab.spec.compute import pod_requests
from netlab.spec.model import (
    HOSTNAME_LABEL,
    ZONE_LABEL,
    DeploymentSpec,
    LabSpec,
    NodeSpec,
    PodTemplate,
    ResourceList,
)


def node_labels(node: NodeSpec) -> MappingProxyType:
    """User labels plus the ones a kubelet sets: hostname, and the rack as zone."""
    labels = {HOSTNAME_LABEL: node.name, ZONE_LABEL: node.rack}
    labels.update(node.labels)
    return MappingProxyType(labels)


def plan_node(
    spec: LabSpec,
    node: NodeSpec,
    taken_addresses: Iterable[IPv4Address],
    taken_leases: Iterable[IPv4Network],
    host: tuple[int, int] | None = None,
) -> NodePlan:
    """A node's plan: its underlay address, routes to the other racks, and overlay lease;
    its allocatable cpu and memory, the lab file's or else the `host`'s (millicores,
    bytes; None: unbounded)."""
    rack = next(r for r in spec.racks if r.name == node.rack)
    gateways = addressing.gateway_addresses(spec.racks, spec.routers)
    rack_hop, _ = addressing.next_hops(spec.racks, spec.routers, gateways)
    prefix = names.lab_prefix(spec.name)
    return NodePlan(
        name=node.name,
        rack=node.rack,
        netns=names.infra_netns(prefix, node.name),
        address=addressing.node_address(rack, spec.routers, taken_addresses),
        lab_ifname=names.node_port(node.name),
        routes=addressing.node_routes(node.rack, spec.racks, rack_hop),
        pod_cidr=addressing.allocate_lease(spec.overlay, taken_leases),
        vtep_mac=names.vtep_mac(spec.name, node.name),
        labels=node_labels(node),
        max_pods=node.max_pods,
        allocatable=allocatable_of(node.allocatable, host),
    )


def allocatable_of(declared: ResourceList, host: tuple[int, int] | None) -> ResourceList:
    """A node's allocatable: what the lab file declares (kept as written, so the Node
    shows it), the host's cpu and memory for what it does not."""
    cpu, memory = host if host is not None else (None, None)
    return ResourceList(
        cpu=declared.cpu if declared.cpu is not None else cpu,
        memory=declared.memory if declared.memory is not None else memory,
        written=declared.written,
    )


def plan_routers(spec: LabSpec) -> tuple[RouterPlan, ...]:
    gateways = addressing.gateway_addresses(spec.racks, spec.routers)
    _, router_hop = addressing.next_hops(spec.racks, spec.routers, gateways)
    prefix = names.lab_prefix(spec.name)
    plans = []
    for router in spec.routers:
        ports = []
        for index, rack in enumerate(router.racks):
            inner, outer = names.router_ports(router.name, index)
            ports.append(RouterPort(rack, inner, outer, gateways[(router.name, rack)]))
        plans.append(
            RouterPlan(
                name=router.name,
                netns=names.infra_netns(prefix, router.name),
                ports=tuple(ports),
                routes=addressing.router_routes(router, spec.racks, router_hop),
            )
        )
    return tuple(plans)


def candidates_of(nodes: Sequence[NodePlan]) -> list[scheduler.Candidate]:
    return [
        scheduler.Candidate(
            n.name, n.rack, n.labels, n.max_pods, n.allocatable.cpu, n.allocatable.memory
        )
        for n in nodes
    ]


def plan_pod(
    prefix: str,
    name: str,
    namespace: str,
    template: PodTemplate,
    node: NodePlan,
    taken_addresses: Iterable[IPv4Address],
    owner: str | None = None,
    pod_hash: str | None = None,
    last_address: IPv4Address | None = None,
) -> PodPlan:
    netns = names.pod_netns(prefix, namespace, name)
    labels = dict(template.labels)
    if pod_hash:
        labels["pod-template-hash"] = pod_hash
    return PodPlan(
        name=name,
        namespace=namespace,
        node=node.name,
        netns=netns,
        address=addressing.allocate_pod_address(node.pod_cidr, taken_addresses, last_address),
        gateway=node.pod_gateway,
        host_ifname=names.host_veth(netns),
        labels=MappingProxyType(labels),
        template=template,
        owner=owner,
        template_hash=pod_hash,
    )


@contextlib.contextmanager
def _naming(what: str) -> Iterator[None]:
    """An Unschedulable raised inside says which pod it is about."""
    try:
        yield
    except scheduler.Unschedulable as exc:
        raise scheduler.Unschedulable(
            f"{what} fits on no node: {exc.scheduler_message}", exc.fix
        ) from None


def deployment_hash(deployment: DeploymentSpec) -> str:
    template = deployment.manifest.get("spec", {}).get("template") or repr(deployment.template)
    return scheduler.template_hash(template)


class PodPlacer:
    """Places pods one at a time on a set of nodes, tracking names, addresses
    and load, so that a running lab places replacements the way the first
    plan placed the originals."""

    def __init__(
        self,
        lab: str,
        nodes: Sequence[NodePlan],
        pods: Iterable[PodPlan] = (),
        last_addresses: dict[str, IPv4Address] | None = None,
    ):
        self.lab = lab
        self.prefix = names.lab_prefix(lab)
        self.nodes = list(nodes)
        self.pods: list[PodPlan] = list(pods)
        # per node, the address handed out last (updated in place: a running
        # lab keeps this map, so addresses advance across placers)
        self.last = last_addresses if last_addresses is not None else {}
        self.reserved: set[str] = set()  # names taken by pods that exist only in the store
        # nodes left out before placing (not ready, cordoned), by reason: for messages
        self.excluded: dict[str, int] = {}

    def _taken_on(self, node: str) -> set[IPv4Address]:
        return {p.address.ip for p in self.pods if p.node == node}

    def _load(self) -> dict[str, int]:
        load: dict[str, int] = {}
        for pod in self.pods:
            load[pod.node] = load.get(pod.node, 0) + 1
        return load

    def _place(self, template: PodTemplate, group: Iterable[str]) -> str:
        """A node for the pod, counting the requests of the pods on each node."""
        used: dict[str, tuple[int, int]] = {}
        for pod in self.pods:
            cpu, memory = pod_requests(pod.template.containers)
            before = used.get(pod.node, (0, 0))
            used[pod.node] = (before[0] + cpu, before[1] + memory)
        return scheduler.place(
            template, candidates_of(self.nodes), group, self._load(), used, self.excluded
        )

    def add_bare(self, name: str, namespace: str, template: PodTemplate) -> PodPlan:
        node_name = self._place(template, [])
        return self._add(name, namespace, template, node_name, None, None)

    def add_replica(
        self, deployment: DeploymentSpec, pod_hash: str, rng, name: str | None = None
    ) -> PodPlan:
        """One more pod of a Deployment: spread over racks and nodes; named afresh, or
        `name` (a Pending pod that now fits)."""
        group = [
            p.node
            for p in self.pods
            if p.owner == deployment.name and p.namespace == deployment.namespace
        ]
        node_name = self._place(deployment.template, group)
        taken = {p.name for p in self.pods if p.namespace == deployment.namespace} | self.reserved
        name = name or scheduler.pod_name(deployment.name, pod_hash, rng, taken)
        return self._add(
            name, deployment.namespace, deployment.template, node_name, deployment.name, pod_hash
        )

    def add_job_pod(self, job: str, namespace: str, template: PodTemplate, rng) -> PodPlan:
        """One more pod of a Job, named JOB-xxxxx as the Job controller names them."""
        group = [p.node for p in self.pods if p.owner == job and p.namespace == namespace]
        node_name = self._place(template, group)
        taken = {p.name for p in self.pods if p.namespace == namespace}
        name = scheduler.job_pod_name(job, rng, taken)
        pod = self._add(name, namespace, template, node_name, job, None)
        self.pods[-1] = pod = dataclasses.replace(pod, owner_kind="Job")
        return pod

    def add_owned(
        self, name: str, namespace: str, template: PodTemplate, owner: str, owner_kind: str
    ) -> PodPlan:
        """A named pod of a controller (a StatefulSet's `web-0`), spread over racks and
        nodes like its siblings."""
        group = [
            p.node
            for p in self.pods
            if p.owner == owner and p.owner_kind == owner_kind and p.namespace == namespace
        ]
        node_name = self._place(template, group)
        pod = self._add(name, namespace, template, node_name, owner, None)
        self.pods[-1] = pod = dataclasses.replace(pod, owner_kind=owner_kind)
        return pod

    def _add(self, name, namespace, template, node_name, owner, pod_hash) -> PodPlan:
        node = next(n for n in self.nodes if n.name == node_name)
        pod = plan_pod(
            self.prefix,
            name,
            namespace,
            template,
            node,
            self._taken_on(node_name),
            owner,
            pod_hash,
            self.last.get(node_name),
        )
        self.last[node_name] = pod.address.ip
        self.pods.append(pod)
        return pod


def plan_lab(spec: LabSpec, host: tuple[int, int] | None = None) -> LabPlan:
    """The whole plan: racks, routers, nodes with leases, and every pod placed.
    `host`: the allocatable cpu (millicores) and memory (bytes) of a node whose lab
    file entry gives none (None: unbounded). Unschedulable, naming the pod, if one
    fits on no node."""
    prefix = names.lab_prefix(spec.name)
    nodes: list[NodePlan] = []
    for node in spec.nodes:
        nodes.append(
            plan_node(
                spec,
                node,
                taken_addresses=[n.address.ip for n in nodes],
                taken_leases=[n.pod_cidr for n in nodes],
                host=host,
            )
        )
    placer = PodPlacer(spec.name, nodes)
    for deployment in spec.deployments:
        pod_hash = deployment_hash(deployment)
        rng = scheduler.name_rng(spec.name, deployment.namespace, deployment.name, pod_hash)
        for index in range(deployment.replicas):
            where = f"Deployment {deployment.namespace}/{deployment.name}: pod {index + 1} of "
            with _naming(f"{where}{deployment.replicas}"):
                placer.add_replica(deployment, pod_hash, rng)
    for pod in spec.pods:
        with _naming(f"Pod {pod.namespace}/{pod.name}"):
            placer.add_bare(pod.name, pod.namespace, pod.template)
    return LabPlan(
        name=spec.name,
        prefix=prefix,
        netns=prefix,
        overlay=spec.overlay,
        links=spec.links,
        racks=tuple(RackPlan(r.name, r.subnet) for r in spec.racks),
        routers=plan_routers(spec),
        nodes=tuple(nodes),
        pods=tuple(placer.pods),
    )
