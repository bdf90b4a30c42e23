"""The running lab: realize a plan, keep it running, change it, tear it down.

`with Lab.from_file("topologies/demo.yaml") as lab:` brings the whole lab up
in-process (as a Mininet script would); `netlab up` wraps the same object in a
supervisor that serves the lab API. Every change is published to the lab's
Store as Kubernetes objects, so watchers see the lab as it is.
"""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Container, Sequence
from dataclasses import dataclass, field
from ipaddress import IPv4Address
from pathlib import Path

from netlab import objects
from netlab.api_server import ApiServer
from netlab.controllers import ControllerManager
from netlab.controllers.deployment import DeploymentController
from netlab.controllers.job import JobController
from netlab.controllers.nodeagent import LEASE_NAMESPACE, NodeAgents
from netlab.controllers.nodelifecycle import NodeLifecycleController, node_ready
from netlab.errors import ApiError, NetlabError, NotFound, RealizeError
from netlab.etcdstore import EtcdClient, EtcdStore, endpoints_of
from netlab.paths import RUN_ROOT, socket_path
from netlab.plan import (
    VTEP_DEVICE,
    NodePlan,
    PeerEntry,
    PodPlacer,
    PodPlan,
    peer_entries,
    peer_entry,
    plan_lab,
    plan_node,
)
from netlab.plan.build import candidates_of, deployment_hash
from netlab.plan.interception import interception_script
from netlab.plan.scheduler import Unschedulable, eligible, name_rng, pod_name, template_hash
from netlab.plan.services import DNS_SERVICE, dns_ip
from netlab.readiness import Prober, Target, checks_for
from netlab.realize import (
    cleanup,
    etcd,
    netlink,
    netns,
    nftables,
    overlay,
    pods,
    preflight,
    ready,
    rtnl_batch,
)
from netlab.realize.fabric import Fabric
from netlab.realize.processes import (
    ExitMonitor,
    PidRecord,
    container_env,
    signal_group,
    start_container,
    stop_processes,
)
from netlab.realize.zygote import ForkedProcess, Zygote
from netlab.services import Candidate, Services, selects
from netlab.spec.load import ManifestSet, load_lab, parse_manifests
from netlab.spec.mesh import MeshContext
from netlab.spec.model import (
    DeploymentSpec,
    LabSpec,
    NodeSpec,
    PodTemplate,
    PolicySpec,
    ServiceSpec,
    frozen_map,
)
from netlab.store import Store
from netlab.system import SIDECAR_CONTAINER, inject_all, is_meshed, with_system_workloads

BACKOFF_START = 0.5  # seconds before the first restart; doubles up to BACKOFF_MAX
BACKOFF_MAX = 30.0
DRAIN_SECONDS = 0.2  # a pod a controller stops has left the endpoints this long before


@dataclass
class PodRuntime:
    plan: PodPlan
    status: objects.PodStatus
    procs: dict[str, subprocess.Popen] = field(default_factory=dict)
    deleted: bool = False


@dataclass
class DeploymentRuntime:
    spec: DeploymentSpec
    pod_hash: str
    rng: object


class Lab:
    def __init__(self, spec: LabSpec, run_root: Path = RUN_ROOT, store: Store | None = None):
        self.run_dir = run_root / spec.name
        self.spec = with_system_workloads(spec, socket_path(self.run_dir))
        self.plan = plan_lab(self.spec)
        self.store = store if store is not None else _make_store(self.spec)
        self.etcd_members: list[etcd.EtcdMember] = []  # store: etcd, inside the lab
        self.lock = threading.RLock()
        self.nodes: dict[str, NodePlan] = {}
        self.pods: dict[tuple[str, str], PodRuntime] = {}
        self.deployments: dict[tuple[str, str], DeploymentRuntime] = {}
        self.fabric: Fabric | None = None
        self.monitor: ExitMonitor | None = None
        self.pid_record = PidRecord(self.run_dir / "pids")
        # sidecars are forked from one preloaded parent (NETLAB_SIDECAR_FORK=0: started fresh)
        self.zygote = (
            Zygote(self.run_dir / "logs" / "zygote.log", self._record_zygote, self._record_fork)
            if os.environ.get("NETLAB_SIDECAR_FORK", "1") != "0"
            else None
        )
        self.forked: dict[tuple[str, str], ForkedProcess] = {}  # forked ahead, by pod key
        self.job_rngs: dict[tuple[str, str], object] = {}  # Job pod names, per Job
        self.stopping = False
        self.controllers: ControllerManager | None = None
        self.node_agents: NodeAgents | None = None
        self.node_lifecycle: NodeLifecycleController | None = None
        self.api: ApiServer | None = None
        self.prober: Prober | None = None
        self.services = Services(
            self.store,
            self.spec.service_network,
            self.spec.dns.enabled,
            lambda: [str(self.fabric.host_path(n)) for n in self.nodes] if self.fabric else [],
        )
        self.namespace_labels: dict[str, dict[str, str]] = {
            ns.name: dict(ns.labels) for ns in spec.namespaces
        }
        self.on_shutdown: Callable[[], None] | None = None  # an API client asked to stop
        self.last_pod_address: dict[str, IPv4Address] = {}  # per node: host-local IPAM

    @classmethod
    def from_file(cls, path: str | os.PathLike, **kwargs) -> Lab:
        return cls(load_lab(path), **kwargs)

    # -- lifecycle --------------------------------------------------------

    def __enter__(self) -> Lab:
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def start(self, timeout: float = 20.0) -> None:
        """Build everything, wait until every link is up and every pod answers."""
        self.prepare()
        self.build(timeout)

    def prepare(self) -> cleanup.CleanReport:
        """Check the machine, refuse a lab of this name that is running, remove
        the leftovers of one that crashed, and make the run directory."""
        preflight.check(self.spec)
        cleanup.refuse_if_running(self.spec.name, self.run_dir.parent)
        report = cleanup.clean_lab(self.spec.name, self.run_dir.parent)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        (self.run_dir / "logs").mkdir(exist_ok=True)
        return report

    def build(self, timeout: float = 20.0) -> None:
        """Realize the plan; on any failure, tear down what was built."""
        try:
            with self.lock:
                self._build(timeout)
            if self.spec.dns.enabled:
                self.wait_endpoints(*DNS_SERVICE, timeout=timeout)
        except BaseException as exc:
            self.stop()
            if isinstance(exc, NetlabError):
                raise
            raise RealizeError(f"building lab {self.spec.name} failed: {exc}") from exc

    def _build(self, timeout: float) -> None:
        netns.create(self.plan.netns)
        self.api = ApiServer.for_lab(self, self._request_shutdown)
        self.api.start()
        self.prober = Prober(self._readiness_changed)
        self.monitor = ExitMonitor()
        self.fabric = Fabric(self.plan, self.pid_record.add)
        self.fabric.build()
        self.nodes = {node.name: node for node in self.plan.nodes}
        self._connect_store()
        for pod in self.plan.pods:  # the plan handed addresses out in this order
            self.last_pod_address[pod.node] = pod.address.ip
        for node in self.plan.nodes:
            self._setup_overlay(node)
        for deployment in self.spec.deployments:
            runtime = self._deployment_runtime(deployment)
            # replay the names the plan drew, so replacements continue the sequence
            drawn: set[str] = set()
            for pod in self.plan.pods:
                if pod.owner == deployment.name and pod.namespace == deployment.namespace:
                    drawn.add(pod_name(deployment.name, runtime.pod_hash, runtime.rng, drawn))
        namespaces = (
            {p.namespace for p in self.plan.pods} | {"default"} | set(self.namespace_labels)
        )
        for namespace in sorted(namespaces):
            labels = self.namespace_labels.get(namespace)
            self.store.apply(objects.namespace_object(namespace, labels))
        for node in self.nodes.values():
            self._publish_node(node)
        self.services.set(self.spec.services)
        for policy in self.spec.policies:  # before the sidecars start: their first table has them
            self.store.apply(policy.manifest)
        self._create_pods(self.plan.pods)
        self._wait_ready(self.plan.pods, timeout)
        self._start_pods(self.plan.pods)
        self._sync_services()
        for runtime in self.deployments.values():
            self._write_deployment(runtime.spec)
        for job in self.spec.jobs:
            self.store.apply(objects.namespace_object(job.namespace))
            self.store.apply(objects.job_object(job))
        self._start_control_plane()

    def _start_control_plane(self) -> None:
        """The node agents' heartbeats, then the controllers that watch the store."""
        timing = self.spec.control_plane
        self.node_agents = NodeAgents(
            self.store, lambda: list(self.nodes), timing.heartbeat, timing.node_grace, time.time
        )
        self.node_agents.start()
        self.node_lifecycle = NodeLifecycleController(
            self.store, self, timing.node_grace, time.time
        )
        self.controllers = ControllerManager(
            [
                DeploymentController(self.store, self),
                JobController(self.store, self),
                self.node_lifecycle,
            ]
        )
        self.controllers.start()

    def _connect_store(self) -> None:
        """store: etcd: start the lab's own cluster on its control-plane nodes, or use
        the loopback etcd named; either way this lab starts from nothing in it."""
        if not isinstance(self.store, EtcdStore) or self.store.client is not None:
            return
        if self.spec.store == "etcd":
            hosts = control_plane_nodes(self.plan.nodes)
            plans = [
                etcd.MemberPlan(
                    f"etcd-{node.name}",
                    str(node.address.ip),
                    node.netns,
                    self.run_dir / "etcd" / node.name,
                )
                for node in hosts
            ]
            self.etcd_members = etcd.start_cluster(
                plans,
                self.run_dir / "logs",
                lambda pid, name: self.pid_record.add(pid, "etcd", name),
            )
            endpoints = [m.endpoint for m in self.etcd_members]
        else:
            endpoints = endpoints_of(self.spec.store)
        self.store.connect(EtcdClient(endpoints), fresh=True)

    def _deployment_runtime(self, deployment: DeploymentSpec) -> DeploymentRuntime:
        pod_hash = deployment_hash(deployment)
        rng = name_rng(self.spec.name, deployment.namespace, deployment.name, pod_hash)
        runtime = DeploymentRuntime(deployment, pod_hash, rng)
        self.deployments[(deployment.namespace, deployment.name)] = runtime
        return runtime

    def stop(self) -> None:
        """Tear everything down: processes first (by PID), then namespaces."""
        self.stopping = True
        if self.node_agents is not None:
            self.node_agents.stop()
            self.node_agents = None
        if self.controllers is not None:
            self.controllers.stop()
            self.controllers = None
        if self.api is not None:
            self.api.stop()
            self.api = None
        if self.prober is not None:
            self.prober.close()
            self.prober = None
        with self.lock:
            runtimes = list(self.pods.values())
            procs = [p for rt in runtimes for p in rt.procs.values()]
            procs += self.forked.values()  # forked ahead, not yet taken by their pod
            self.forked.clear()
            for rt in runtimes:
                rt.deleted = True
        if self.monitor is not None:
            self.monitor.close()
            self.monitor = None
        stop_processes(procs, grace=0.5)
        if self.zygote is not None:
            self.zygote.close()
        if isinstance(self.store, EtcdStore) and self.store.client is not None:
            if not self.etcd_members:  # a user's etcd: take this lab's objects out of it
                try:
                    self.store.clear()
                except NetlabError:
                    pass
            self.store.client.close()
        for member in self.etcd_members:
            member.stop()
        self.etcd_members = []
        if self.fabric is not None:
            self.fabric.stop()  # ends the Mininet shells, closes their ptys
            self.fabric = None
        # every namespace, /etc/netns entry and the run directory, in one pass
        cleanup.clean_lab(self.spec.name, self.run_dir.parent)
        self.pods.clear()

    # -- overlay ----------------------------------------------------------

    def _setup_overlay(self, node: NodePlan) -> None:
        path = self.fabric.host_path(node.name)
        with netlink.iproute(path) as ipr:
            overlay.setup_node(ipr, node, self.spec.overlay, self.plan.overlay_mtu)
            overlay.route_services(ipr, self.spec.service_network)
        entries = peer_entries(node, list(self.nodes.values()), self.spec.overlay.direct_routing)
        self._program_peers(node.name, entries)

    def _program_peers(self, node: str, entries: Sequence[PeerEntry]) -> None:
        path = self.fabric.host_path(node)
        with netlink.iproute(path) as ipr:
            vtep = netlink.index(ipr, VTEP_DEVICE)
        rtnl_batch.send(path, rtnl_batch.peer_messages(entries, vtep))

    def add_node(self, name: str, rack: str, labels: dict[str, str] | None = None) -> NodePlan:
        """A node joins the running lab: it gets a lease, and every other
        node learns its VTEP (neighbour, FDB, route)."""
        with self.lock:
            if name in self.nodes or self.fabric.exists(name):
                raise NetlabError(f"node {name} already exists; pick another name")
            if rack not in {r.name for r in self.plan.racks}:
                raise NetlabError(f"node {name}: rack {rack!r} does not exist")
            spec = NodeSpec(name, rack, frozen_map(labels))
            node = plan_node(
                self.spec,
                spec,
                taken_addresses=[n.address.ip for n in self.nodes.values()],
                taken_leases=[n.pod_cidr for n in self.nodes.values()],
            )
            self.fabric.add_node(node)
            self.nodes[name] = node
            self._setup_overlay(node)
            self.services.program_node(str(self.fabric.host_path(name)))
            for other in self.nodes.values():
                if other.name != name:
                    entry = peer_entry(other, node, self.spec.overlay.direct_routing)
                    self._program_peers(other.name, [entry])
            if self.node_agents is not None:  # its lease first: the node is not silent
                self.node_agents.beat([name])
            self._publish_node(node)
            return node

    def remove_node(self, name: str) -> None:
        """A node leaves: its pods go (Deployments replace them elsewhere) and
        every other node forgets its VTEP."""
        with self.lock:
            node = self.nodes.get(name)
            if node is None:
                raise NotFound(f"no node {name}")
            for rt in [rt for rt in self.pods.values() if rt.plan.node == name]:
                self._delete_pod(rt)
            del self.nodes[name]
            for other in self.nodes.values():
                with netlink.iproute(self.fabric.host_path(other.name)) as ipr:
                    overlay.remove_peer(
                        ipr, peer_entry(other, node, self.spec.overlay.direct_routing)
                    )
            self.fabric.remove_node(node)
            self.store.delete("nodes", None, name)
            try:
                self.store.delete("leases", LEASE_NAMESPACE, name)
            except ApiError:
                pass

    # -- pods -------------------------------------------------------------

    def _create_pods(self, plans: Sequence[PodPlan]) -> None:
        by_node: dict[str, list[PodPlan]] = {}
        for pod in plans:
            by_node.setdefault(pod.node, []).append(pod)
        for node_name, node_pods in by_node.items():
            # known before the kernel is asked, so a failure halfway cleans them up
            for pod in node_pods:
                status = objects.PodStatus(
                    containers=[objects.ContainerState(c.name) for c in pod.template.containers],
                    start_time=objects.now(),
                )
                self.pods[pod.key] = PodRuntime(pod, status)
            pods.create_on_node(
                str(self.fabric.host_path(node_name)),
                node_pods,
                self.nodes[node_name].cni_mac,
                self.plan.overlay_mtu,
                nameserver=self._nameserver(),
                zone=self.spec.dns.zone,
            )

    def _nameserver(self) -> str | None:
        return str(dns_ip(self.spec.service_network)) if self.spec.dns.enabled else None

    def _wait_ready(self, plans: Sequence[PodPlan], timeout: float) -> None:
        """Every pod answers ICMP from the first node (across the overlay for
        pods on other nodes): links are up and every path is programmed."""
        if not plans:
            return
        failed = self.node_agents.failed if self.node_agents is not None else set()
        prober = next((n for n in self.nodes.values() if n.name not in failed), None)
        if prober is None:
            raise RealizeError("every node has failed: no node can reach the new pods")
        missing = ready.unreachable(
            self.fabric.host_path(prober.name), [p.address.ip for p in plans], timeout
        )
        if missing:
            names = sorted(p.name for p in plans if p.address.ip in missing)
            raise RealizeError(
                f"pods not reachable from node {prober.name} after {timeout:.0f} s: {', '.join(names[:10])}"
            )
        for pod in plans:
            self.pods[pod.key].status.network_ready = True

    def _start_pods(self, plans: Sequence[PodPlan]) -> None:
        """Intercept the meshed pods' traffic (all at once), then start every container.
        The zygote forks the sidecars meanwhile: their requests go out first."""
        meshed = [p for p in plans if is_meshed(p.template)]
        started: set[tuple[tuple[str, str], int]] = set()

        def intercept_then_apps() -> None:
            if meshed:  # before any app runs: none of its traffic slips past the sidecar
                nftables.apply_each(
                    {str(netns.netns_path(p.netns)): interception_script(p.gateway) for p in meshed}
                )
            for pod in plans:
                rt = self.pods[pod.key]
                for index, container in enumerate(rt.plan.template.containers):
                    if container.name != SIDECAR_CONTAINER:
                        self._start_container(rt, index)
                        started.add((pod.key, index))

        if meshed and self.zygote is not None:
            self._fork_sidecars(meshed, while_waiting=intercept_then_apps)
        else:
            intercept_then_apps()
        for pod in plans:
            self._start_containers(self.pods[pod.key], started)

    def _fork_sidecars(
        self, plans: Sequence[PodPlan], while_waiting: Callable[[], None] | None = None
    ) -> None:
        """Ask the zygote for all these pods' sidecars at once, running `while_waiting`
        while it forks; `_start_container` takes them from `self.forked`."""
        wanted = []
        for plan in plans:
            container = next(c for c in plan.template.containers if c.name == SIDECAR_CONTAINER)
            wanted.append((plan, container))
        procs = self.zygote.spawn_many(
            [
                (
                    str(netns.netns_path(plan.netns)),
                    container.argv[3:],  # after `python -m mesh`
                    container_env(plan, container),
                    self.log_path(plan, container.name),
                )
                for plan, container in wanted
            ],
            while_waiting,
        )
        for plan, proc in zip(plans, procs, strict=True):
            self.forked[plan.key] = proc  # recorded by pid already (`_record_fork`)

    def _start_containers(
        self, rt: PodRuntime, started: Container[tuple[tuple[str, str], int]] = ()
    ) -> None:
        """Start the pod's containers (those not in `started`: (pod key, index)), then
        hand it to the prober and publish it."""
        for index in range(len(rt.plan.template.containers)):
            if (rt.plan.key, index) not in started:
                self._start_container(rt, index)
        self._probe(rt)
        self._publish_pod(rt)

    # -- readiness and services ------------------------------------------

    def _probe(self, rt: PodRuntime) -> None:
        """Hand the pod's readiness checks to the prober."""
        plan = rt.plan
        extra = tuple(
            sorted(
                {
                    port.target_port
                    for service in self.services.specs.values()
                    if selects(service, plan)
                    for port in service.ports
                    if port.protocol == "TCP" and isinstance(port.target_port, int)
                }
            )
        )
        checks = checks_for(
            plan.template.containers, extra, time.monotonic(), frozenset((SIDECAR_CONTAINER,))
        )
        target = Target(
            plan.key, plan.address.ip, str(self.fabric.host_path(plan.node)), plan.netns, checks
        )
        self.prober.add(target)
        rt.status.probes_ready = self.prober.ready(plan.key)

    def _readiness_changed(self, key: tuple[str, str], _ready: bool) -> None:
        with self.lock:
            rt = self.pods.get(key)
            if rt is None or rt.deleted or self.stopping or self.prober is None:
                return
            rt.status.probes_ready = self.prober.ready(key)
            self._publish_pod(rt)
            self._sync_services()

    def _sync_services(self) -> None:
        """Endpoints and every node's rules from the pods as they are now."""
        candidates = [
            Candidate(
                rt.plan.namespace,
                rt.plan.name,
                rt.plan.labels,
                rt.plan.address.ip,
                rt.plan.node,
                rt.status.ready and not rt.deleted,
                rt.plan.template.containers,
            )
            for rt in self.pods.values()
        ]
        self.services.sync(candidates)

    def wait_endpoints(
        self, namespace: str, name: str, count: int = 1, timeout: float = 20.0
    ) -> list[str]:
        """Wait until the Service has at least `count` ready endpoint addresses."""
        deadline = time.monotonic() + timeout
        while True:
            with self.lock:
                addresses = [
                    a["ip"]
                    for subset in self.services.subsets.get((namespace, name), [])
                    for a in subset.get("addresses", [])
                ]
            if len(set(addresses)) >= count:
                return sorted(set(addresses))
            if time.monotonic() > deadline:
                raise RealizeError(
                    f"service {namespace}/{name} has {len(set(addresses))} ready endpoints "
                    f"after {timeout:.0f} s, wanted {count}; `netlab get pods -n {namespace}` "
                    "and the pods' logs tell why"
                )
            time.sleep(0.05)

    def apply_services(self, services: Sequence[ServiceSpec]) -> None:
        """Add or change Services on the running lab."""
        with self.lock:
            self.services.set(services)
            for rt in self.pods.values():  # implicit readiness ports may have changed
                if not rt.deleted:
                    self._probe(rt)
            self._sync_services()

    def apply_text(self, text: str, source: str = "apply") -> list[dict]:
        """`netlab apply`: Services, Deployments and Pods from a YAML stream,
        validated as a whole against this lab before anything changes."""
        with self.lock:
            existing = self._mesh_context()
        found = parse_manifests(text, self.spec, source, existing)
        results = []
        with self.lock:
            for namespace in found.namespaces:
                old = self.store.list(
                    "namespaces", field_selector=f"metadata.name={namespace.name}"
                )[0]
                labels = dict(namespace.labels)
                action = (
                    "created"
                    if not old
                    else "unchanged"
                    if old[0]["metadata"].get("labels", {}) == labels
                    else "configured"
                )
                self.namespace_labels[namespace.name] = labels
                self.store.apply(objects.namespace_object(namespace.name, labels))
                results.append(_result("Namespace", "", namespace.name, action))
            found = self._injected(found)
            for service in found.services:
                key = (service.namespace, service.name)
                if key == DNS_SERVICE and self.spec.dns.enabled:
                    raise NetlabError("kube-system/kube-dns is the lab's DNS; pick another name")
                old = self.services.specs.get(key)
                action = (
                    "created" if old is None else "unchanged" if old == service else "configured"
                )
                results.append(_result("Service", service.namespace, service.name, action))
            for deployment in found.deployments:
                results.append(self._apply_deployment(deployment))
            for job in found.jobs:
                results.append(self._apply_job(job))
            for pod in found.pods:
                if (pod.namespace, pod.name) in self.pods:
                    results.append(_result("Pod", pod.namespace, pod.name, "unchanged"))
                    continue
                placer = PodPlacer(
                    self.spec.name,
                    list(self.nodes.values()),
                    [rt.plan for rt in self.pods.values()],
                    self.last_pod_address,
                )
                plan = placer.add_bare(pod.name, pod.namespace, pod.template)
                self._create_pods([plan])
                self._wait_ready([plan], timeout=10.0)
                self._start_pods([plan])
                results.append(_result("Pod", pod.namespace, pod.name, "created"))
            if found.services:
                self.apply_services(found.services)
            for policy in found.policies:  # the sidecars watch these
                results.append(self._apply_policy(policy))
            self._sync_services()
        return results

    def _injected(self, found: ManifestSet) -> ManifestSet:
        deployments, pods = inject_all(
            self.spec,
            socket_path(self.run_dir),
            found.deployments,
            found.pods,
            self.namespace_labels,
        )
        return dataclasses.replace(found, deployments=deployments, pods=pods)

    def _mesh_context(self) -> MeshContext:
        """The running lab's Services and policies, that applied policies may name."""
        policies = {}
        for plural in ("virtualservices", "destinationrules"):
            policies[plural] = [
                PolicySpec(o["kind"], o["metadata"]["name"], o["metadata"]["namespace"], o)
                for o in self.store.list(plural)[0]
            ]
        return MeshContext(
            dict(self.services.specs),
            policies["destinationrules"],
            policies["virtualservices"],
            self.spec.dns.zone,
        )

    def _apply_policy(self, policy: PolicySpec) -> dict:
        plural = {
            "VirtualService": "virtualservices",
            "DestinationRule": "destinationrules",
            "RateLimitPolicy": "ratelimitpolicies",
        }[policy.kind]
        try:
            old = self.store.get(plural, policy.namespace, policy.name)
        except ApiError:
            old = None
        if old is not None and _same_manifest(old, policy.manifest):
            return _result(policy.kind, policy.namespace, policy.name, "unchanged")
        self.store.apply(policy.manifest)
        action = "created" if old is None else "configured"
        return _result(policy.kind, policy.namespace, policy.name, action)

    def delete_policy(self, plural: str, name: str, namespace: str = "default") -> None:
        """Delete a VirtualService, DestinationRule or RateLimitPolicy: the
        sidecars see it go and recompile their tables."""
        with self.lock:
            try:
                self.store.delete(plural, namespace, name)
            except ApiError as exc:
                raise NotFound(f"no {plural} {namespace}/{name}") from exc

    def _apply_deployment(self, deployment: DeploymentSpec) -> dict:
        """Write the Deployment's desired state; its controller scales it or rolls the
        new template out (by its strategy) from there."""
        key = (deployment.namespace, deployment.name)
        try:
            stored = self.store.get("deployments", *key)
        except ApiError:
            stored = None
        wanted = objects.deployment_object(deployment)
        if stored is not None and _same_manifest(stored, wanted):
            return _result("Deployment", *key, "unchanged")
        self.store.apply(objects.namespace_object(deployment.namespace))
        self._deployment_runtime(deployment)
        self._write_deployment(deployment)
        return _result("Deployment", *key, "created" if stored is None else "configured")

    def _write_deployment(self, deployment: DeploymentSpec) -> None:
        """The Deployment's metadata and spec into the store, keeping what the
        controller wrote (status, revision annotation)."""
        obj = objects.deployment_object(deployment)
        try:
            stored = self.store.get("deployments", deployment.namespace, deployment.name)
        except ApiError:
            self.store.apply(obj)
            return
        annotations = dict(obj["metadata"].get("annotations") or {})
        for key, value in stored["metadata"].get("annotations", {}).items():
            if key.startswith("deployment.kubernetes.io/"):
                annotations.setdefault(key, value)
        obj["metadata"]["annotations"] = annotations
        obj["status"] = stored.get("status", {})
        self.store.apply(obj)

    # -- the Deployment controller's runtime (controllers.deployment.DeploymentRuntime) --

    def compile_deployment(self, obj: dict) -> DeploymentRuntime:
        """The runnable template of a stored Deployment: the cached one if its template
        is unchanged, else parsed, checked against the lab and injected afresh."""
        key = (obj["metadata"]["namespace"], obj["metadata"]["name"])
        manifest = objects.manifest_of(obj)
        pod_hash = template_hash((manifest.get("spec") or {}).get("template") or {})
        with self.lock:
            cached = self.deployments.get(key)
            if cached is not None and cached.pod_hash == pod_hash:
                return cached
            found = parse_manifests(json.dumps(manifest), self.spec, f"deployment {key[1]}")
            (deployment,) = self._injected(found).deployments
            return self._deployment_runtime(deployment)

    # -- Jobs (controllers.job.JobRuntime) ------------------------------------------

    def _apply_job(self, job) -> dict:
        """A Job's spec is immutable once it runs (as in Kubernetes): a changed one is
        refused; delete the Job and apply it again."""
        key = (job.namespace, job.name)
        wanted = objects.job_object(job)
        try:
            stored = self.store.get("jobs", *key)
        except ApiError:
            self.store.apply(objects.namespace_object(job.namespace))
            self.store.apply(wanted)
            return _result("Job", *key, "created")
        if _same_manifest(stored, wanted):
            return _result("Job", *key, "unchanged")
        raise NetlabError(
            f"Job {key[0]}/{key[1]}: spec is immutable once the Job runs; "
            f"`netlab delete job {key[1]}` first, then apply it again"
        )

    def compile_job(self, obj: dict):
        """A stored Job's template, parsed and checked against the lab."""
        manifest = objects.manifest_of(obj)
        found = parse_manifests(
            json.dumps(manifest), self.spec, f"job {manifest['metadata']['name']}"
        )
        (job,) = found.jobs
        return job

    def run_job_pods(self, job, count: int) -> None:
        """Place and start `count` more pods of a Job."""
        with self.lock:
            if self.stopping:
                return
            rng = self.job_rngs.setdefault(
                (job.namespace, job.name), name_rng(self.spec.name, job.namespace, job.name, "job")
            )
            placer = PodPlacer(
                self.spec.name,
                self.schedulable_nodes(job.template),
                [rt.plan for rt in self.pods.values()],
                self.last_pod_address,
            )
            created = [
                placer.add_job_pod(job.name, job.namespace, job.template, rng) for _ in range(count)
            ]
            self._create_pods(created)
            self._wait_ready(created, timeout=10.0)
            self._start_pods(created)
            self._sync_services()

    def delete_job(self, name: str, namespace: str = "default") -> dict:
        """Delete a Job; its controller removes its pods."""
        with self.lock:
            try:
                return self.store.delete("jobs", namespace, name)
            except ApiError as exc:
                raise NotFound(f"no job {namespace}/{name}") from exc

    def run_replicas(self, runtime: DeploymentRuntime, count: int) -> None:
        """Place and start `count` more pods of a Deployment's template."""
        with self.lock:
            if self.stopping:
                return
            nodes = self.schedulable_nodes(runtime.spec.template)
            placer = PodPlacer(
                self.spec.name,
                nodes,
                [rt.plan for rt in self.pods.values()],
                self.last_pod_address,
            )
            created = [
                placer.add_replica(runtime.spec, runtime.pod_hash, runtime.rng)
                for _ in range(count)
            ]
            self._create_pods(created)
            self._wait_ready(created, timeout=10.0)
            self._start_pods(created)
            self._sync_services()

    def schedulable_nodes(self, template: PodTemplate | None = None) -> list[NodePlan]:
        """The nodes a new pod may go to: Ready and not cordoned (kube-scheduler's filters
        before nodeSelector); Unschedulable, with kube-scheduler's reasons, if none may."""
        reasons: dict[str, int] = {}
        fit = []
        for node in self.nodes.values():
            try:
                obj = self.store.get("nodes", None, node.name)
            except ApiError:
                continue
            if not node_ready(obj):
                reason = "node(s) had untolerated taint {node.kubernetes.io/unreachable: }"
            elif (obj.get("spec") or {}).get("unschedulable"):
                reason = "node(s) were unschedulable"
            elif template is not None and not eligible(template, candidates_of([node])):
                reason = "node(s) didn't match Pod's node affinity/selector"
            else:
                fit.append(node)
                continue
            reasons[reason] = reasons.get(reason, 0) + 1
        if not fit:
            why = ", ".join(f"{count} {reason}" for reason, count in sorted(reasons.items()))
            raise Unschedulable(
                f"0/{len(self.nodes)} nodes are available: {why or 'the lab has no nodes'}. "
                "`netlab node recover`, `netlab uncordon` or a matching nodeSelector would fix it"
            )
        return fit

    # -- nodes failing and recovering (the node agents' side) ----------------------

    def fail_node(self, name: str) -> None:
        """`netlab node fail`: the node stops: its uplink loses carrier (the rack-bridge
        port goes down), its pods' processes are frozen, its agent stops heartbeating."""
        with self.lock:
            node = self._node(name)
            self.node_agents.fail(name)
            with netlink.iproute(self.fabric.lab_path) as ipr:
                ipr.link("set", index=netlink.index(ipr, node.lab_ifname), state="down")
            for rt in self.pods.values():
                if rt.plan.node == name:
                    for proc in rt.procs.values():
                        signal_group(proc.pid, signal.SIGSTOP)
            for member in self.etcd_members:  # the node's etcd member freezes with it
                if member.plan.name == f"etcd-{name}" and member.alive():
                    signal_group(member.pid, signal.SIGSTOP)

    def recover_node(self, name: str) -> None:
        """`netlab node recover`: carrier back, processes thawed, heartbeats again."""
        with self.lock:
            node = self._node(name)
            with netlink.iproute(self.fabric.lab_path) as ipr:
                ipr.link("set", index=netlink.index(ipr, node.lab_ifname), state="up")
                netlink.wait_oper_up(ipr, [node.lab_ifname])
            for rt in self.pods.values():
                if rt.plan.node == name:
                    for proc in rt.procs.values():
                        signal_group(proc.pid, signal.SIGCONT)
            for member in self.etcd_members:
                if member.plan.name == f"etcd-{name}" and member.alive():
                    signal_group(member.pid, signal.SIGCONT)
            self.node_agents.recover(name)

    def cordon(self, name: str, unschedulable: bool = True) -> None:
        """`netlab cordon` (or uncordon): new pods go elsewhere; running ones stay."""
        self._node(name)
        node = self.store.get("nodes", None, name)
        node.setdefault("spec", {})["unschedulable"] = unschedulable
        if not unschedulable:
            node["spec"].pop("unschedulable")
        self.store.update(node)

    def drain(self, name: str, force: bool = False) -> list[str]:
        """`netlab drain`: cordon, then evict every pod (their Deployments start them
        elsewhere). Bare pods would be lost: refused unless `force`."""
        with self.lock:
            self._node(name)
            mine = [rt for rt in self.pods.values() if rt.plan.node == name and not rt.deleted]
            bare = sorted(rt.plan.name for rt in mine if not rt.plan.owner)
            if bare and not force:
                raise NetlabError(
                    f"cannot drain {name}: pods not managed by a Deployment would be lost: "
                    f"{', '.join(bare)}; use --force to delete them anyway"
                )
            self.cordon(name)
            for rt in mine:
                self._delete_pod(rt)
            return sorted(rt.plan.name for rt in mine)

    def node_lost(self, name: str) -> None:
        """The lifecycle controller found the node silent: its pods are evicted (their
        processes killed at once: the node is gone) and every other node drops its lease."""
        with self.lock:
            node = self.nodes.get(name)
            if node is None or self.stopping:
                return
            for rt in [rt for rt in self.pods.values() if rt.plan.node == name]:
                self._delete_pod(rt, grace=0.0)
            for other in self.nodes.values():
                if other.name != name:
                    with netlink.iproute(self.fabric.host_path(other.name)) as ipr:
                        overlay.remove_peer(
                            ipr, peer_entry(other, node, self.spec.overlay.direct_routing)
                        )

    def node_back(self, name: str) -> None:
        """The node heartbeats again: every other node learns its lease again."""
        with self.lock:
            node = self.nodes.get(name)
            if node is None or self.stopping:
                return
            for other in self.nodes.values():
                if other.name != name:
                    entry = peer_entry(other, node, self.spec.overlay.direct_routing)
                    self._program_peers(other.name, [entry])

    def _node(self, name: str) -> NodePlan:
        node = self.nodes.get(name)
        if node is None:
            raise NotFound(f"no node {name}; `netlab get nodes` lists them")
        return node

    def delete_pods(self, namespace: str, names: Sequence[str]) -> None:
        """Stop and remove these pods (those still there): all leave the endpoints, then
        requests already on their way get DRAIN_SECONDS to finish, then they stop."""
        with self.lock:
            runtimes = [
                rt
                for name in names
                if (rt := self.pods.get((namespace, name))) is not None and not rt.deleted
            ]
            if not runtimes:
                return
            self._withdraw(runtimes)
        time.sleep(DRAIN_SECONDS)
        with self.lock:
            for rt in runtimes:
                if rt.plan.key in self.pods and not self.stopping:
                    self._teardown(rt, grace=1.0)

    def update_deployment(self, obj: dict) -> dict:
        """Store a changed Deployment (a PATCH, a scale, an undo) once it is known to run
        here; 409 if the stored one changed since `obj` was read from it."""
        compiled = self.compile_deployment(obj)  # SpecError names what is wrong
        with self.lock:
            stored = self.store.update(obj)
            self.deployments[(compiled.spec.namespace, compiled.spec.name)] = compiled
            return stored

    def scale(self, name: str, replicas: int, namespace: str = "default") -> dict:
        """`netlab scale`: the Deployment's new replica count (its controller acts on it)."""
        if replicas < 0:
            raise NetlabError(f"--replicas must be 0 or more, got {replicas}")
        for _ in range(5):  # the controller may write its status in between: read again
            obj = self.store.get("deployments", namespace, name)
            obj["spec"]["replicas"] = replicas
            try:
                return self.update_deployment(obj)
            except ApiError as exc:
                if exc.status != 409:
                    raise
        raise NetlabError(f"deployment {name} kept changing; try `netlab scale` again")

    def settle(self, timeout: float = 20.0) -> None:
        """Wait until the controllers have nothing left to do (tests and scripts)."""
        deadline = time.monotonic() + timeout
        while self.controllers is not None and not self.controllers.idle():
            if time.monotonic() > deadline:
                raise RealizeError(f"the controllers still had work after {timeout:.0f} s")
            time.sleep(0.02)

    def delete_service(self, name: str, namespace: str = "default") -> None:
        with self.lock:
            if (namespace, name) == DNS_SERVICE and self.spec.dns.enabled:
                raise NetlabError("kube-system/kube-dns is the lab's DNS; it cannot be deleted")
            self.services.remove(namespace, name)
            self._sync_services()

    def service_vip(self, name: str, namespace: str = "default") -> str:
        vip = self.services.vip(namespace, name)
        if vip is None:
            raise NotFound(f"no ClusterIP service {namespace}/{name}")
        return str(vip)

    def _record_zygote(self, pid: int) -> None:
        self.pid_record.add(pid, "zygote", "mesh.zygote")

    def _record_fork(self, pid: int) -> None:
        """A sidecar the zygote just forked, before its pod takes it (a crash in between
        must not leave it behind): `netlab clean` ends what the record holds."""
        self.pid_record.add(pid, "container", "netlab-proxy (forked)")

    def _request_shutdown(self) -> None:
        if self.on_shutdown is not None:
            self.on_shutdown()

    def _start_container(self, rt: PodRuntime, index: int) -> None:
        container = rt.plan.template.containers[index]
        log_path = self.log_path(rt.plan, container.name)
        if container.name != SIDECAR_CONTAINER or self.zygote is None:
            proc = start_container(rt.plan, container, log_path)
        else:
            proc = self.forked.pop(rt.plan.key, None) or self.zygote.spawn(
                str(netns.netns_path(rt.plan.netns)),
                container.argv[3:],  # after `python -m mesh`
                container_env(rt.plan, container),
                log_path,
            )
        self.pid_record.add(
            proc.pid, "container", f"{rt.plan.namespace}/{rt.plan.name}/{container.name}"
        )
        state = rt.status.containers[index]
        state.state, state.started_at, state.pid = "running", objects.now(), proc.pid
        rt.procs[container.name] = proc
        self.monitor.watch(proc, lambda p, rt=rt, i=index: self._container_exited(rt, i, p))

    def _container_exited(self, rt: PodRuntime, index: int, proc: subprocess.Popen) -> None:
        with self.lock:
            if rt.deleted or self.stopping:
                return
            state = rt.status.containers[index]
            state.state, state.exit_code = "terminated", proc.returncode
            policy = rt.plan.template.restart_policy
            restart = policy == "Always" or (policy == "OnFailure" and proc.returncode != 0)
            if restart:
                state.state, state.reason = "waiting", "CrashLoopBackOff"
                delay = min(BACKOFF_MAX, BACKOFF_START * 2**state.restarts)
                timer = threading.Timer(delay, self._restart_container, (rt, index))
                timer.daemon = True
                timer.start()
            # not running: out of the endpoints now, and probed afresh once restarted
            if self.prober is not None:
                self.prober.reset(rt.plan.key)
            rt.status.probes_ready = False
            self._publish_pod(rt)
            self._sync_services()

    def _restart_container(self, rt: PodRuntime, index: int) -> None:
        with self.lock:
            if rt.deleted or self.stopping:
                return
            rt.status.containers[index].restarts += 1
            self._start_container(rt, index)
            self._publish_pod(rt)

    def log_path(self, pod: PodPlan, container: str) -> Path:
        return self.run_dir / "logs" / f"{pod.namespace}_{pod.name}" / f"{container}.log"

    def pod(self, name: str, namespace: str = "default") -> PodPlan:
        rt = self.pods.get((namespace, name))
        if rt is None:
            raise NotFound(f"no pod {namespace}/{name}; `netlab get pods` lists them")
        return rt.plan

    def pod_list(self) -> list[PodPlan]:
        with self.lock:
            return [rt.plan for rt in self.pods.values()]

    def node_list(self) -> list[NodePlan]:
        with self.lock:
            return list(self.nodes.values())

    def delete_pod(self, name: str, namespace: str = "default") -> PodPlan:
        """Delete a pod (all its processes, then its network); its Deployment replaces it."""
        with self.lock:
            rt = self.pods.get((namespace, name))
            if rt is None:
                raise NotFound(f"no pod {namespace}/{name}")
            self._delete_pod(rt)
            return rt.plan

    def delete_deployment(self, name: str, namespace: str = "default") -> DeploymentSpec:
        """Delete a Deployment and all its pods."""
        with self.lock:
            dep = self.deployments.pop((namespace, name), None)
            if dep is None:
                raise NotFound(f"no deployment {namespace}/{name}")
            for rt in self._owned_by(namespace, name):
                self._delete_pod(rt)
            self.store.delete("deployments", namespace, name)
            return dep.spec

    def _owned_by(self, namespace: str, deployment: str) -> list[PodRuntime]:
        return [
            rt
            for rt in self.pods.values()
            if rt.plan.owner == deployment
            and rt.plan.namespace == namespace
            and rt.plan.owner_kind == "Deployment"
        ]

    def _delete_pod(self, rt: PodRuntime, grace: float = 1.0) -> None:
        self._withdraw([rt])
        self._teardown(rt, grace)

    def _withdraw(self, runtimes: Sequence[PodRuntime]) -> None:
        """Out of the endpoints (DNS, VIP rules, sidecars) before any process ends."""
        for rt in runtimes:
            rt.deleted = True
            if self.prober is not None:
                self.prober.remove(rt.plan.key)
            rt.status.probes_ready = False  # terminating: not ready, as the store says
            self._publish_pod(rt)
        self._sync_services()

    def _teardown(self, rt: PodRuntime, grace: float) -> None:
        for proc in rt.procs.values():
            self.monitor.forget(proc)
        stop_processes(rt.procs.values(), grace=grace)
        node = self.nodes.get(rt.plan.node)
        if node is not None and self.fabric.exists(node.name):
            with netlink.iproute(self.fabric.host_path(node.name)) as ipr:
                pods.delete(rt.plan, ipr)
        else:
            pods.delete(rt.plan, None)
        del self.pods[rt.plan.key]
        self.store.delete("pods", rt.plan.namespace, rt.plan.name)
        self._sync_services()  # and out of notReadyAddresses

    # -- exec -------------------------------------------------------------

    def exec(
        self, pod: str, argv: Sequence[str], namespace: str = "default", **kwargs
    ) -> subprocess.CompletedProcess:
        """Run a command in a pod's namespace and wait for it (text output captured)."""
        return _run_in(self.pod(pod, namespace).netns, argv, kwargs)

    def node_exec(self, node: str, argv: Sequence[str], **kwargs) -> subprocess.CompletedProcess:
        """Run a command in a node's namespace and wait for it."""
        return _run_in(self.nodes[node].netns, argv, kwargs)

    # -- publishing -------------------------------------------------------

    def _publish_node(self, node: NodePlan) -> None:
        self.store.apply(objects.node_object(node, self.spec.overlay))

    def _publish_pod(self, rt: PodRuntime) -> None:
        node = self.nodes.get(rt.plan.node)
        host_ip = str(node.address.ip) if node else ""
        self.store.apply(objects.pod_object(rt.plan, rt.status, host_ip))


def _make_store(spec: LabSpec) -> Store:
    if spec.store == "embedded":
        return Store()
    return EtcdStore(spec.name)  # connected once its etcd runs (`_connect_store`)


CONTROL_PLANE_LABEL = "node-role.kubernetes.io/control-plane"


def control_plane_nodes(nodes: Sequence[NodePlan]) -> list[NodePlan]:
    """Where the lab's etcd members run: the nodes labeled control-plane, or else the
    first three (one per rack first, so that losing a rack keeps a quorum where it can)."""
    labeled = [n for n in nodes if CONTROL_PLANE_LABEL in n.labels]
    if labeled:
        return labeled
    by_rack: dict[str, list[NodePlan]] = {}
    for node in nodes:
        by_rack.setdefault(node.rack, []).append(node)
    order = []
    for index in range(max((len(v) for v in by_rack.values()), default=0)):
        order += [rack[index] for rack in by_rack.values() if index < len(rack)]
    return order[: min(3, len(order))]


def _run_in(netns_name: str, argv: Sequence[str], kwargs: dict) -> subprocess.CompletedProcess:
    kwargs.setdefault("capture_output", True)
    kwargs.setdefault("text", True)
    kwargs.setdefault("timeout", 60)
    return subprocess.run(["ip", "netns", "exec", netns_name, *argv], check=False, **kwargs)


def _same_manifest(stored: dict, manifest: dict) -> bool:
    """The stored object says what the manifest says (the store and the controllers
    add their own metadata)."""
    return objects.manifest_of(stored) == objects.manifest_of(manifest)


def _result(kind: str, namespace: str, name: str, action: str) -> dict:
    return {"kind": kind, "namespace": namespace, "name": name, "action": action}
