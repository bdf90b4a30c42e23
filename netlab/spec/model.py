"""What the user asked for, validated: plain frozen dataclasses.

The `lab:` section (racks, routers, overlay, links) is emulator-only; pods and
Deployments are subsets of the Kubernetes manifests of those kinds. Every
object here has passed validation (see `netlab.spec.load`); the plan layer
relies on that and never re-checks.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from ipaddress import IPv4Network
from types import MappingProxyType
from typing import Any

DEFAULT_NAMESPACE = "default"
DEFAULT_OVERLAY_NETWORK = IPv4Network("10.244.0.0/16")
DEFAULT_SUBNET_LEN = 24
DEFAULT_VNI = 1
DEFAULT_VXLAN_PORT = 8472
DEFAULT_ROUTER = "spine"

# Labels every node carries, as a kubelet sets them.
HOSTNAME_LABEL = "kubernetes.io/hostname"
ZONE_LABEL = "topology.kubernetes.io/zone"  # the node's rack

RESTART_POLICIES = ("Always", "OnFailure", "Never")


def frozen_map(data: dict[str, str] | None = None) -> MappingProxyType:
    """A read-only mapping (labels, selectors, env) for frozen dataclasses."""
    return MappingProxyType(dict(data or {}))


@dataclass(frozen=True)
class NodeSpec:
    name: str
    rack: str
    labels: MappingProxyType = field(default_factory=frozen_map)  # user labels only


@dataclass(frozen=True)
class RackSpec:
    name: str
    subnet: IPv4Network
    nodes: tuple[NodeSpec, ...]


@dataclass(frozen=True)
class RouterSpec:
    name: str
    racks: tuple[str, ...]  # the racks this router has a gateway on


@dataclass(frozen=True)
class OverlaySpec:
    """Flannel's net-conf.json: Network, SubnetLen, Backend."""

    network: IPv4Network = DEFAULT_OVERLAY_NETWORK
    subnet_len: int = DEFAULT_SUBNET_LEN
    backend_type: str = "vxlan"
    vni: int = DEFAULT_VNI
    port: int = DEFAULT_VXLAN_PORT
    direct_routing: bool = False


@dataclass(frozen=True)
class LinkSpec:
    """Shaping of node-to-rack links. Delay and loss need netem (checked before building)."""

    bandwidth_mbit: float | None = None
    delay: str | None = None  # e.g. "5ms"
    loss_percent: float | None = None


@dataclass(frozen=True)
class ContainerPort:
    container_port: int
    name: str | None = None
    protocol: str = "TCP"


@dataclass(frozen=True)
class ContainerSpec:
    name: str
    command: tuple[str, ...] = ()
    args: tuple[str, ...] = ()
    env: tuple[tuple[str, str], ...] = ()
    ports: tuple[ContainerPort, ...] = ()
    image: str | None = None  # accepted and shown, not pulled: processes run from the host

    @property
    def argv(self) -> tuple[str, ...]:
        """What runs: command + args (Kubernetes' entrypoint + arguments)."""
        return self.command + self.args


@dataclass(frozen=True)
class PodTemplate:
    """The pod part shared by bare Pods and Deployments' templates."""

    labels: MappingProxyType
    containers: tuple[ContainerSpec, ...]
    node_selector: MappingProxyType = field(default_factory=frozen_map)
    node_name: str | None = None
    restart_policy: str = "Always"


@dataclass(frozen=True)
class PodSpec:
    """A bare `kind: Pod`."""

    name: str
    namespace: str
    template: PodTemplate
    manifest: dict[str, Any] = field(compare=False, hash=False, default_factory=dict)


@dataclass(frozen=True)
class DeploymentSpec:
    name: str
    namespace: str
    replicas: int
    match_labels: MappingProxyType
    template: PodTemplate
    labels: MappingProxyType = field(default_factory=frozen_map)
    manifest: dict[str, Any] = field(compare=False, hash=False, default_factory=dict)


@dataclass(frozen=True)
class LabSpec:
    name: str
    racks: tuple[RackSpec, ...]
    routers: tuple[RouterSpec, ...]
    overlay: OverlaySpec = OverlaySpec()
    links: LinkSpec = LinkSpec()
    pods: tuple[PodSpec, ...] = ()
    deployments: tuple[DeploymentSpec, ...] = ()
    source: str | None = None  # the file it came from, for messages

    @property
    def nodes(self) -> tuple[NodeSpec, ...]:
        return tuple(node for rack in self.racks for node in rack.nodes)
