"""The plan: every kernel object the lab will make, as plain data.

Computed from a LabSpec by pure functions (`netlab.plan.plan_lab`); the
realize layer turns it into namespaces, links, addresses and routes without
deciding anything itself.
"""

from __future__ import annotations

from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Interface, IPv4Network
from types import MappingProxyType

from netlab.plan.names import ip_mac
from netlab.spec.model import LinkSpec, OverlaySpec, PodTemplate, ResourceList

UNDERLAY_MTU = 1500
VXLAN_OVERHEAD = 50  # outer Ethernet 14 + IP 20 + UDP 8 + VXLAN 8
VTEP_DEVICE = "flannel.1"
CNI_BRIDGE = "cni0"
NODE_UPLINK = "eth0"
POD_INTERFACE = "eth0"


@dataclass(frozen=True)
class Route:
    dst: IPv4Network
    via: IPv4Address


@dataclass(frozen=True)
class RackPlan:
    name: str
    subnet: IPv4Network

    @property
    def bridge(self) -> str:
        """The rack switch: a Linux bridge in the lab namespace."""
        return self.name


@dataclass(frozen=True)
class RouterPort:
    rack: str
    ifname: str  # inside the router's namespace
    lab_ifname: str  # the peer end, a port of the rack bridge
    address: IPv4Interface  # the rack's gateway address on this router


@dataclass(frozen=True)
class RouterPlan:
    name: str
    netns: str
    ports: tuple[RouterPort, ...]
    routes: tuple[Route, ...]  # to racks it has no port on


@dataclass(frozen=True)
class NodePlan:
    name: str
    rack: str
    netns: str
    address: IPv4Interface  # underlay address on eth0
    lab_ifname: str  # the rack-bridge port of its uplink
    routes: tuple[Route, ...]  # other racks, via this rack's gateway
    pod_cidr: IPv4Network  # the node's overlay lease
    vtep_mac: str
    labels: MappingProxyType
    max_pods: int | None = None  # the node's capacity in pods (lab file maxPods)
    # cpu and memory the scheduler may give out (None: no bound): the lab file's
    # `allocatable` (its text in `written`), else the host's
    allocatable: ResourceList = ResourceList()

    @property
    def vtep_ip(self) -> IPv4Address:
        """flannel.1's address: the lease's .0, as Flannel does."""
        return self.pod_cidr.network_address

    @property
    def pod_gateway(self) -> IPv4Address:
        return self.pod_cidr.network_address + 1

    @property
    def cni_address(self) -> IPv4Interface:
        return IPv4Interface(f"{self.pod_gateway}/{self.pod_cidr.prefixlen}")

    @property
    def cni_mac(self) -> str:
        return ip_mac(self.pod_gateway)


@dataclass(frozen=True)
class PeerEntry:
    """How one node reaches another node's pods.

    kind "vxlan": Flannel's three entries on flannel.1, in order: neighbour
    (vtep_ip -> vtep_mac, permanent), FDB (vtep_mac -> underlay_ip, self
    permanent), route (pod_cidr via vtep_ip onlink).
    kind "direct": DirectRouting between nodes on one rack: pod_cidr via the
    peer's underlay address, no encapsulation.
    """

    kind: str
    peer: str
    pod_cidr: IPv4Network
    vtep_ip: IPv4Address
    vtep_mac: str
    underlay_ip: IPv4Address


@dataclass(frozen=True)
class PodPlan:
    name: str
    namespace: str
    node: str
    netns: str
    address: IPv4Interface  # on the pod's eth0
    gateway: IPv4Address  # cni0 of its node
    host_ifname: str  # the node-side veth, a port of cni0
    labels: MappingProxyType
    template: PodTemplate
    owner: str | None = None  # the controlling Deployment's (or Job's) name, if any
    template_hash: str | None = None
    owner_kind: str = "Deployment"  # or "Job"

    @property
    def key(self) -> tuple[str, str]:
        return (self.namespace, self.name)

    @property
    def mac(self) -> str:
        """The MAC of the pod's eth0."""
        return ip_mac(self.address.ip)


@dataclass(frozen=True)
class LabPlan:
    name: str
    prefix: str  # every namespace of the lab starts with it
    netns: str  # the lab's own namespace: rack bridges and their ports
    overlay: OverlaySpec
    links: LinkSpec
    racks: tuple[RackPlan, ...]
    routers: tuple[RouterPlan, ...]
    nodes: tuple[NodePlan, ...]
    pods: tuple[PodPlan, ...]

    @property
    def overlay_mtu(self) -> int:
        return UNDERLAY_MTU - VXLAN_OVERHEAD

    def node(self, name: str) -> NodePlan:
        for node in self.nodes:
            if node.name == name:
                return node
        raise KeyError(name)

    def rack(self, name: str) -> RackPlan:
        for rack in self.racks:
            if rack.name == name:
                return rack
        raise KeyError(name)
