"""What the user asked for, validated: plain frozen dataclasses.

The `lab:` section (racks, routers, overlay, links, serviceNetwork, dns) is
emulator-only; pods, Deployments and Services are subsets of the Kubernetes
manifests of those kinds. Every object here has passed validation (see
`netlab.spec.load`); the plan layer relies on that and never re-checks.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from ipaddress import IPv4Address, IPv4Network
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from netlab.spec.security import ContainerSecurity, PodSecurity
    from netlab.spec.volumes import EnvFromSource, EnvRef, VolumeMount, VolumeSpec

DEFAULT_NAMESPACE = "default"
DEFAULT_OVERLAY_NETWORK = IPv4Network("10.244.0.0/16")
DEFAULT_SUBNET_LEN = 24
DEFAULT_VNI = 1
DEFAULT_VXLAN_PORT = 8472
DEFAULT_ROUTER = "spine"
DEFAULT_SERVICE_NETWORK = IPv4Network("10.96.0.0/12")  # kube-apiserver's --service-cluster-ip-range
DEFAULT_DNS_ZONE = "cluster.local"
DEFAULT_DNS_TTL = 5  # seconds, CoreDNS' kubernetes plugin default
DNS_SERVICE_NAMESPACE = "kube-system"
DNS_SERVICE_NAME = "kube-dns"  # the lab's DNS Service, reserved while lab.dns is enabled
DNS_HOST_OFFSET = 10  # its ClusterIP: the service network's address + 10 (10.96.0.10)

# Labels every node carries, as a kubelet sets them.
HOSTNAME_LABEL = "kubernetes.io/hostname"
ZONE_LABEL = "topology.kubernetes.io/zone"  # the node's rack

RESTART_POLICIES = ("Always", "OnFailure", "Never")
SERVICE_PROTOCOLS = ("TCP", "UDP")
SESSION_AFFINITIES = ("None", "ClientIP")
DEFAULT_AFFINITY_TIMEOUT = 10800  # sessionAffinityConfig.clientIP.timeoutSeconds: 3 hours
PROBE_HANDLERS = ("tcpSocket", "httpGet", "exec")
INJECT_LABEL = "netlab.io/inject"  # "true" on a namespace or pod template: a sidecar is injected


def frozen_map(data: dict[str, str] | None = None) -> MappingProxyType:
    """A read-only mapping (labels, selectors, env) for frozen dataclasses."""
    return MappingProxyType(dict(data or {}))


@dataclass(frozen=True)
class ResourceList:
    """A resource list (requests, limits, a node's allocatable): cpu in millicores and
    memory in bytes as the scheduler and the runtime count them (None: not given), and
    every resource given, as (name, quantity text) pairs, names other than cpu and
    memory included (ephemeral-storage, hugepages-2Mi, example.com/gpu: kept, not
    acted on)."""

    cpu: int | None = None
    memory: int | None = None
    written: tuple[tuple[str, str], ...] = ()

    def text(self) -> dict[str, str]:
        return dict(self.written)


@dataclass(frozen=True)
class Resources:
    """A container's `resources`: its requests (a limit given with no request is the
    request too, as kube-apiserver defaults a Pod's containers) and its limits."""

    requests: ResourceList = ResourceList()
    limits: ResourceList = ResourceList()

    def manifest(self) -> dict[str, dict[str, str]]:
        """As a Pod shows it: the quantities as written, the defaulted requests filled in."""
        shown = {"limits": self.limits.text(), "requests": self.requests.text()}
        return {key: value for key, value in shown.items() if value}


@dataclass(frozen=True)
class NodeSpec:
    name: str
    rack: str
    labels: MappingProxyType = field(default_factory=frozen_map)  # user labels only
    max_pods: int | None = None  # capacity: at most this many pods (None: the pod subnet's)
    # lab.racks[].nodes[].allocatable: cpu and memory (None: the host's, less kubelet's
    # eviction threshold); its pods are max_pods
    allocatable: ResourceList = ResourceList()


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
class ProbeSpec:
    """readinessProbe: exactly one of tcpSocket / httpGet / exec.

    periodSeconds and failureThreshold default to 1 here (Kubernetes: 10 and 3)
    so that a Service's endpoints follow a pod's readiness within about a
    second; a manifest that sets them gets what it sets. Durations may be
    fractional (Kubernetes takes whole seconds).
    """

    kind: str  # "tcpSocket" | "httpGet" | "exec"
    port: int | str | None = None  # tcpSocket/httpGet: a number or a container port name
    path: str = "/"  # httpGet
    command: tuple[str, ...] = ()  # exec
    initial_delay: float = 0.0  # initialDelaySeconds
    period: float = 1.0  # periodSeconds (the lab's default; Kubernetes' is 10)
    timeout: float = 1.0  # timeoutSeconds
    success_threshold: int = 1
    failure_threshold: int = 1  # the lab's default (Kubernetes: 3)


@dataclass(frozen=True)
class ContainerSpec:
    name: str
    command: tuple[str, ...] = ()
    args: tuple[str, ...] = ()
    env: tuple[tuple[str, str], ...] = ()
    ports: tuple[ContainerPort, ...] = ()
    image: str | None = None  # None: the default image, a view of the host's root
    readiness_probe: ProbeSpec | None = None  # None: the manifest gives no readinessProbe
    recorded: MappingProxyType = field(default_factory=frozen_map, hash=False)  # kept, not acted on
    security: ContainerSecurity | None = None  # securityContext, read (also kept in recorded)
    resources: Resources = Resources()  # requests and limits (netlab.spec.compute reads them)
    volume_mounts: tuple[VolumeMount, ...] = ()
    env_refs: tuple[EnvRef, ...] = ()  # env entries with valueFrom (after `env`'s values)
    env_from: tuple[EnvFromSource, ...] = ()  # envFrom: before env, which overrides it

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
    recorded: MappingProxyType = field(default_factory=frozen_map, hash=False)  # kept, not acted on
    # read from spec.securityContext, hostname and shareProcessNamespace (also kept in recorded)
    security: PodSecurity | None = None
    hostname: str | None = None  # None: the pod's name
    share_process_namespace: bool = False
    volumes: tuple[VolumeSpec, ...] = ()
    subdomain: str | None = None  # with hostname: <hostname>.<subdomain>.<ns>.svc resolves


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
class ServicePort:
    port: int
    target_port: int | str  # a number, or a container port name
    protocol: str = "TCP"  # TCP | UDP
    name: str | None = None


@dataclass(frozen=True)
class ServiceSpec:
    """A `kind: Service` (type ClusterIP, the only one emulated)."""

    name: str
    namespace: str
    ports: tuple[ServicePort, ...]
    selector: MappingProxyType = field(default_factory=frozen_map)  # empty: no endpoints managed
    headless: bool = False  # spec.clusterIP: None
    cluster_ip: IPv4Address | None = None  # an explicitly requested spec.clusterIP
    session_affinity: str = "None"  # None | ClientIP
    # sessionAffinityConfig.clientIP.timeoutSeconds (used with ClientIP affinity)
    affinity_timeout: int = DEFAULT_AFFINITY_TIMEOUT
    labels: MappingProxyType = field(default_factory=frozen_map)
    manifest: dict[str, Any] = field(compare=False, hash=False, default_factory=dict)


@dataclass(frozen=True)
class DnsSpec:
    """The lab's cluster DNS (`lab.dns`): the kube-dns Service in kube-system."""

    zone: str = DEFAULT_DNS_ZONE
    ttl: int = DEFAULT_DNS_TTL
    replicas: int = 1
    enabled: bool = True


@dataclass(frozen=True)
class MeshSpec:
    """`lab.mesh`: whether the mesh's collector runs (None: when anything is meshed)
    and the share of new traces the sidecars sample, in percent."""

    enabled: bool | None = None
    sampling: float = 100.0


@dataclass(frozen=True)
class PolicySpec:
    """A mesh policy object (VirtualService, DestinationRule, RateLimitPolicy),
    validated; `manifest` is what the store serves and the sidecars compile."""

    kind: str
    name: str
    namespace: str
    manifest: dict[str, Any] = field(compare=True, hash=False, default_factory=dict)


@dataclass(frozen=True)
class NamespaceSpec:
    """A `kind: Namespace`: its labels (netlab.io/inject) matter here."""

    name: str
    labels: MappingProxyType = field(default_factory=frozen_map)
    annotations: MappingProxyType = field(default_factory=frozen_map)  # kept, not acted on


@dataclass(frozen=True)
class ControlPlaneSpec:
    """How fast the lab notices a dead node, and how long a failing Job waits between
    pods. Kubernetes' node defaults are far slower: kubelet renews its Lease every 10 s
    and a node is NotReady after a 40 s grace period."""

    heartbeat: float = 0.2  # seconds between a node agent's Lease renewals
    node_grace: float = 1.0  # seconds without a renewal before a node is NotReady
    # seconds before a failed Job pod is replaced, doubled per failure up to 36 times
    # this (Kubernetes' job controller: 10 s, at most 6 min)
    job_backoff: float = 10.0


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
    services: tuple[ServiceSpec, ...] = ()
    service_network: IPv4Network = DEFAULT_SERVICE_NETWORK  # where ClusterIPs come from
    dns: DnsSpec = DnsSpec()
    mesh: MeshSpec = MeshSpec()
    policies: tuple[PolicySpec, ...] = ()
    namespaces: tuple[NamespaceSpec, ...] = ()
    control_plane: ControlPlaneSpec = ControlPlaneSpec()
    jobs: tuple = ()  # JobSpec (netlab.spec.jobs)
    configmaps: tuple = ()  # ConfigDataSpec (netlab.spec.configdata)
    secrets: tuple = ()  # ConfigDataSpec
    statefulsets: tuple = ()  # StatefulSetSpec (netlab.spec.statefulset)
    store: str = "embedded"  # or "etcd" (a cluster inside the lab), or "etcd://127.0.0.1:2379"
    storage_classes: tuple = ()  # StorageClassSpec (netlab.spec.storage)
    claims: tuple = ()  # ClaimObjectSpec: PersistentVolumeClaims
    volumes: tuple = ()  # VolumeObjectSpec: static PersistentVolumes

    @property
    def nodes(self) -> tuple[NodeSpec, ...]:
        return tuple(node for rack in self.racks for node in rack.nodes)
