"""The running lab: realize a plan, keep it running, change it, tear it down.

`with Lab.from_file("topologies/demo.yaml") as lab:` brings the whole lab up
in-process (as a Mininet script would); `netlab up` wraps the same object in a
supervisor that serves the lab API. Every change is published to the lab's
Store as Kubernetes objects, so watchers see the lab as it is.
"""

from __future__ import annotations

import dataclasses
import os
import subprocess
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from ipaddress import IPv4Address
from pathlib import Path

from netlab import configobjects, objects
from netlab.apiserver.runner import ApiServer
from netlab.controllers import ControllerManager
from netlab.controllers.nodeagent import NodeAgents
from netlab.controllers.nodelifecycle import NodeLifecycleController
from netlab.errors import ApiError, NetlabError, NotFound, RealizeError
from netlab.etcdstore import EtcdStore
from netlab.events import EventRecorder
from netlab.journal import Journal
from netlab.lab_actions import lab_api_server
from netlab.lab_adopt import Adoption, record_store
from netlab.lab_nodes import NodeRuntime
from netlab.lab_statefulsets import StatefulSetSide
from netlab.lab_storage import class_names, store_storage
from netlab.lab_workloads import (
    DeploymentRuntime,
    WorkloadRuntime,
    _result,
    _same_manifest,
    check_autoscaled,
)
from netlab.node import cni
from netlab.node.cri import ContainerRuntimeService
from netlab.node.images import ImageError
from netlab.node.inputs import PodInputs
from netlab.node.metrics import ContainerCgroup, MetricsSampler
from netlab.node.parts import Parts
from netlab.node.podworkers import PodRuntime, PodWorkers, processes_of
from netlab.node.prober import Prober, Target, checks_for
from netlab.node.volumes import kubelet_volumes
from netlab.nodeinfo import host_allocatable
from netlab.paths import RUN_ROOT, socket_path
from netlab.plan import (
    VTEP_DEVICE,
    NodePlan,
    PeerEntry,
    PodPlacer,
    PodPlan,
    peer_entries,
    plan_lab,
)
from netlab.plan.interception import interception_script
from netlab.plan.names import bounded
from netlab.plan.scheduler import pod_name
from netlab.plan.services import DNS_SERVICE, dns_ip
from netlab.realize import (
    cleanup,
    etcd,
    netlink,
    netns,
    nftables,
    overlay,
    preflight,
    ready,
    rtnl_batch,
)
from netlab.realize.checkpoint import Checkpoints, pod_key
from netlab.realize.etcdkeeper import MemberKeeper
from netlab.realize.fabric import Fabric
from netlab.realize.processes import PidRecord, stop_processes
from netlab.services import Candidate, Services, selects
from netlab.spec.load import ManifestSet, load_lab, parse_manifests
from netlab.spec.mesh import MeshContext
from netlab.spec.model import (
    LabSpec,
    PolicySpec,
    ServiceSpec,
)
from netlab.store import Store
from netlab.system import (
    ACTIVATOR_NAME,
    ACTIVATOR_NAMESPACE,
    SIDECAR_CONTAINER,
    inject_all,
    is_meshed,
    with_system_workloads,
)

METRICS_INTERVAL = 2.0  # seconds between two readings of the containers' cgroups


class Lab(WorkloadRuntime, StatefulSetSide, NodeRuntime, Adoption):
    def __init__(self, spec: LabSpec, run_root: Path = RUN_ROOT, store: Store | None = None):
        self.run_dir = run_root / spec.name
        self.spec = with_system_workloads(spec, socket_path(self.run_dir))
        for deployment in self.spec.deployments:  # before anything is built
            check_autoscaled(deployment)
        self.plan = plan_lab(self.spec, host_allocatable())  # pods that fit nowhere: refused
        self.store = store if store is not None else _make_store(self.spec)
        self.etcd_members: list[etcd.EtcdMember] = []  # store: etcd, inside the lab
        self.etcd_keeper: MemberKeeper | None = None  # starts a member that ended again
        self.lock = threading.RLock()
        self.nodes: dict[str, NodePlan] = {}
        self.pods: dict[tuple[str, str], PodRuntime] = {}
        self.deployments: dict[tuple[str, str], DeploymentRuntime] = {}
        self.fabric: Fabric | None = None
        self.pid_record = PidRecord(self.run_dir / "pids")
        self.checkpoints = Checkpoints(self.run_dir / "checkpoints")  # nodes and pod sandboxes
        # CRI's part: sandboxes, images, bundles, and the runtime process (it outlives
        # this one) that runs the lab's containers
        self.cri = ContainerRuntimeService(self.run_dir, self.spec.name, self.pid_record.add)
        self.runtime = self.cri.runtime
        # metrics-server's part: the containers' cgroup usage, for kubectl top
        self.metrics = MetricsSampler(self._container_cgroups, interval=METRICS_INTERVAL)
        # the supervisor's running parts (API, prober, metrics, control plane), one
        # ordered group: stopped in the reverse of the order they started in
        self.parts = Parts()
        # sidecars are forked from one preloaded parent (NETLAB_SIDECAR_FORK=0: started fresh)
        self.fork_sidecars = os.environ.get("NETLAB_SIDECAR_FORK", "1") != "0"
        self.job_rngs: dict[tuple[str, str], object] = {}  # Job pod names, per Job
        self.compiled_statefulsets: dict[tuple[str, str], tuple] = {}  # (manifest, spec)
        self.stopping = False
        self.leaving = False  # the supervisor ends and leaves the lab running
        self.controllers: ControllerManager | None = None
        self.node_agents: NodeAgents | None = None
        self.node_lifecycle: NodeLifecycleController | None = None
        self.api: ApiServer | None = None
        self.prober: Prober | None = None
        self.events = EventRecorder(self.store)  # kubelet's and the scheduler's events
        # kubelet's volume manager: a pod's volumes ready before its containers start
        self.volumes = kubelet_volumes(
            self.spec.name, self.run_dir, self.store, self.events, self._evict
        )
        # kubelet's pod workers: containers started, restarted with back-off, stopped
        self.workers = PodWorkers(
            self.cri,
            self.events,
            self.lock,
            self.log_path,
            self._publish_pod,
            self._not_running,
            lambda: not self.stopping,
            self.fork_sidecars,
            PodInputs(self.volumes, self.store, self._host_ip, self.events),
        )
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
        try:  # every image is here before anything is built
            self.cri.check_images(self.plan.pods)
        except ImageError as exc:
            raise NetlabError(f"{self.spec.source or 'lab'}: {exc}") from exc
        cleanup.refuse_if_running(self.spec.name, self.run_dir.parent)
        report = cleanup.clean_lab(self.spec.name, self.run_dir.parent)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        (self.run_dir / "logs").mkdir(exist_ok=True)
        record_store(self.run_dir, self.spec.store)
        if not isinstance(self.store, EtcdStore):  # etcd keeps its own record
            self.store.persist(Journal(self.run_dir / "store"))
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
        self.api = lab_api_server(self, self._request_shutdown)
        self.parts.start("api", self.api.start, self.api.stop)
        self.prober = Prober(self._readiness_changed)
        self.parts.running("prober", self.prober.close)
        self.cri.start()
        self.parts.start("metrics", self.metrics.start, self.metrics.stop)
        self.parts.start("volumes", self.volumes.start, self.volumes.stop)
        self.fabric = Fabric(self.plan, self.pid_record.add)
        self.fabric.build()
        self.nodes = {node.name: node for node in self.plan.nodes}
        for node in self.plan.nodes:
            self.checkpoints.save("nodes", node.name, node)
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
        spec = self.spec
        store_storage(
            self.store, spec.name, spec.storage_classes, spec.volumes, spec.claims, build=True
        )
        self.services.set(self.spec.services)
        for policy in self.spec.policies:  # before the sidecars start: their first table has them
            self.store.apply(policy.manifest)
        configobjects.apply_all(self.store, self.spec.configmaps + self.spec.secrets)
        self._create_pods(self.plan.pods, announce=False)
        self._wait_ready(self.plan.pods, timeout)
        self._start_pods(self.plan.pods, announced=False)
        self._sync_services()
        for runtime in self.deployments.values():
            self._write_deployment(runtime.spec)
        for job in self.spec.jobs:
            self.store.apply(objects.namespace_object(job.namespace))
            self.store.apply(objects.job_object(job))
        for sts in self.spec.statefulsets:  # its controller starts the pods, in order
            self.store.apply(objects.namespace_object(sts.namespace))
            self._write_statefulset(sts)
        self._start_control_plane()

    def stop(self) -> None:
        """Tear everything down: processes first (by PID), then namespaces."""
        self.stopping = True
        if self.etcd_members:  # the lab's own cluster may have lost its quorum: no more writes
            self.store.close()
        self._stop_supervising()
        with self.lock:
            runtimes = list(self.pods.values())
            procs = [p for rt in runtimes for p in processes_of(rt)]
            for rt in runtimes:
                rt.deleted = True
        stop_processes(procs, grace=0.5)
        self.cri.stop()
        self.store.close(forget=not self.etcd_members)  # a user's etcd: our objects go
        for member in self.etcd_members:
            member.stop()
        self.etcd_members = []
        if self.fabric is not None:
            self.fabric.stop()  # ends the Mininet shells, closes their ptys
            self.fabric = None
        # every namespace, /etc/netns entry and the run directory, in one pass
        cleanup.clean_lab(self.spec.name, self.run_dir.parent)
        self.pods.clear()

    def _stop_supervising(self) -> None:
        """Stop the supervisor's own parts, the last started first: the control plane
        (controllers, heartbeats, the etcd members' keeper), metrics, probes, the API."""
        self.parts.stop()
        self.etcd_keeper = self.node_agents = self.controllers = None
        self.api = self.prober = None

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

    # -- pods -------------------------------------------------------------

    def _create_pods(self, plans: Sequence[PodPlan], announce: bool = True) -> None:
        """Make the pods' network and sandboxes. `announce`: publish them now, as
        ContainerCreating (a lab being built publishes its pods once they run: its
        hundreds of intermediate states would only slow the build)."""
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
                self.checkpoints.save("pods", pod_key(*pod.key), pod)
            cni.create_on_node(
                str(self.fabric.host_path(node_name)),
                node_pods,
                self.nodes[node_name].cni_mac,
                self.plan.overlay_mtu,
                nameserver=self._nameserver(),
                zone=self.spec.dns.zone,
            )
            self.cri.run_sandboxes(node_pods)
            if announce:
                for pod in node_pods:  # scheduled, its sandbox made: ContainerCreating
                    self._publish_pod(self.pods[pod.key])
                    self._scheduled(pod)

    def _run_pods(self, plans: Sequence[PodPlan]) -> None:
        """New pods of a running lab, placed: network, sandboxes, containers, then the
        Services' endpoints."""
        self._create_pods(plans)
        self._wait_ready(plans, timeout=10.0)
        self._start_pods(plans)
        self._sync_services()

    def _scheduled(self, pod: PodPlan) -> None:
        self.events.pod(
            pod.namespace, pod.name, "Scheduled",
            f"Successfully assigned {pod.namespace}/{pod.name} to {pod.node}",
            "default-scheduler",
        )  # fmt: skip

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

    def _start_pods(self, plans: Sequence[PodPlan], announced: bool = True) -> None:
        """Start every container of the pods; the meshed pods' traffic is intercepted
        (all at once) before any app runs, so none of it slips past the sidecar."""
        meshed = [p for p in plans if is_meshed(p.template)]
        runtimes = [self.pods[p.key] for p in plans]

        def intercept() -> None:
            if meshed:
                scripts = {
                    str(netns.netns_path(p.netns)): interception_script(p.gateway) for p in meshed
                }
                nftables.apply_each(scripts)

        started = self.workers.start(runtimes, before_apps=intercept)
        for rt in runtimes:
            self._probe(rt)
            self._publish_pod(rt)
            if not announced:  # in the store only now: its events from the start
                self._scheduled(rt.plan)
        self.workers.started_events(started)  # the pods are in the store: events name them

    def _not_running(self, rt: PodRuntime) -> None:
        """A container of the pod ended: out of the endpoints, probed afresh once it runs."""
        if self.prober is not None:
            self.prober.reset(rt.plan.key)
        rt.status.probes_ready = False
        self._publish_pod(rt)
        self._sync_services()

    # -- readiness and services ------------------------------------------

    def _probe(self, rt: PodRuntime, ready: bool = False) -> None:
        """Hand the pod's readiness checks to the prober (`ready`: they passed already)."""
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
            plan.key,
            plan.address.ip,
            str(self.fabric.host_path(plan.node)),
            plan.netns,
            checks,
            lambda container: self.container_entry(plan.name, plan.namespace, container),
        )
        self.prober.add(target, ready)
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
                rt.labels,
                rt.plan.address.ip,
                rt.plan.node,
                rt.status.ready and not rt.deleted,
                rt.plan.template.containers,
                terminating=rt.deleted,
                hostname=rt.plan.template.hostname,
                subdomain=rt.plan.template.subdomain,
            )
            for rt in self.pods.values()
        ]
        activator = next(
            (c for c in candidates if c.namespace == ACTIVATOR_NAMESPACE and c.ready
             and c.name.startswith(ACTIVATOR_NAME + "-")),
            None,
        )  # fmt: skip
        self.services.sync(
            candidates, activator, self.scaled_to_zero_services() if activator else ()
        )

    def endpoint_ips(self, name: str, namespace: str = "default") -> set[str]:
        """The ready addresses in the Service's Endpoints now."""
        with self.lock:
            return {
                a["ip"]
                for subset in self.services.subsets.get((namespace, name), [])
                for a in subset.get("addresses", [])
            }

    def ready_pods(self, owner: str, namespace: str = "default") -> list[PodPlan]:
        """The pods of a Deployment or Job that are ready now."""
        with self.lock:
            return [
                rt.plan
                for rt in self.pods.values()
                if rt.plan.owner == owner
                and rt.owned
                and rt.plan.namespace == namespace
                and rt.status.ready
            ]

    def wait_endpoints(
        self, namespace: str, name: str, count: int = 1, timeout: float = 20.0
    ) -> list[str]:
        """Wait until the Service has at least `count` ready endpoint addresses."""
        deadline = time.monotonic() + timeout
        while True:
            addresses = self.endpoint_ips(name, namespace)
            if len(addresses) >= count:
                return sorted(addresses)
            if time.monotonic() > deadline:
                raise RealizeError(
                    f"service {namespace}/{name} has {len(addresses)} ready endpoints "
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
        found = parse_manifests(text, self.spec, source, existing, class_names(self.store))
        results = []
        with self.lock:
            configobjects.check_all(self.store, found.configmaps + found.secrets)
            for namespace in found.namespaces:
                old = self.store.list(
                    "namespaces", field_selector=f"metadata.name={namespace.name}"
                )[0]
                labels, notes = dict(namespace.labels), dict(namespace.annotations)
                wanted = objects.namespace_object(namespace.name, labels, notes)
                if old and old[0]["metadata"].get("deletionTimestamp"):  # stays Terminating
                    wanted["metadata"]["deletionTimestamp"] = old[0]["metadata"][
                        "deletionTimestamp"
                    ]
                    wanted["status"] = old[0]["status"]
                action = (
                    "created"
                    if not old
                    else "unchanged"
                    if objects.manifest_of(old[0]) == objects.manifest_of(wanted)
                    else "configured"
                )
                self.namespace_labels[namespace.name] = labels
                self.store.apply(wanted)
                results.append(_result("Namespace", "", namespace.name, action))
            # before the pods that mount them
            results += configobjects.apply_all(self.store, found.configmaps + found.secrets)
            results += store_storage(
                self.store, self.spec.name, found.storage_classes, found.volumes, found.claims
            )
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
            for sts in found.statefulsets:
                results.append(self._apply_statefulset(sts))
            for pod in found.pods:
                if (pod.namespace, pod.name) in self.pods:
                    results.append(_result("Pod", pod.namespace, pod.name, "unchanged"))
                    continue
                self.check_claims_free(pod.template, pod.namespace, waits=False)
                placer = PodPlacer(
                    self.spec.name,
                    list(self.nodes.values()),
                    [rt.plan for rt in self.pods.values()],
                    self.last_pod_address,
                )
                plan = placer.add_bare(pod.name, pod.namespace, pod.template)
                self._create_pods([plan])
                notes = (pod.manifest.get("metadata") or {}).get("annotations") or {}
                if notes:  # kubectl's last-applied among them: kept, as Kubernetes keeps it
                    self.pods[plan.key].meta = objects.PodMeta(dict(plan.labels), dict(notes))
                    self._publish_pod(self.pods[plan.key])
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

    def _request_shutdown(self) -> None:
        if self.on_shutdown is not None:
            self.on_shutdown()

    def _container_cgroups(self) -> list[ContainerCgroup]:
        return self.workers.cgroups(list(self.pods.values()))

    def log_path(self, pod: PodPlan, container: str) -> Path:
        return self.run_dir / "logs" / bounded(f"{pod.namespace}_{pod.name}") / f"{container}.log"

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
        """Delete a pod as a controller stops one (out of the endpoints, drained, its
        processes ended, then its network); its Deployment replaces it."""
        with self.lock:
            rt = self.pods.get((namespace, name))
            if rt is None:
                raise NotFound(f"no pod {namespace}/{name}")
        self.delete_pods(namespace, [name])
        return rt.plan

    def set_pod_metadata(
        self, namespace: str, name: str, labels: Mapping[str, str], annotations: Mapping[str, str]
    ) -> dict:
        """A running pod's new labels and annotations (kubectl label, annotate): the
        Services that select it now, and only those, route to it; a Deployment whose
        selector no longer matches releases it and starts a replacement."""
        with self.lock:
            rt = self.pods.get((namespace, name))
            if rt is None or rt.deleted:
                raise NotFound(f"no pod {namespace}/{name}")
            released = rt.meta is not None and rt.meta.released
            if rt.plan.owner_kind == "Deployment" and not released:
                owner = self.deployments.get((namespace, rt.plan.owner))
                selector = owner.spec.match_labels if owner is not None else {}
                released = any(labels.get(k) != v for k, v in selector.items())
            own = {k: v for k, v in annotations.items() if k not in objects.LAB_ANNOTATIONS}
            rt.meta = objects.PodMeta(dict(labels), own, released)
            self._publish_pod(rt)
            self._sync_services()
            return self.store.get("pods", namespace, name)

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
        self._stop_containers([rt], grace)
        self._remove(rt)

    def _stop_containers(self, runtimes: Sequence[PodRuntime], grace: float) -> None:
        """End the pods' processes (SIGTERM, SIGKILL after `grace`, one deadline for
        all); needs no lock: a deleted pod is never restarted."""
        for rt in runtimes:
            self.volumes.forget(rt.plan)
        self.workers.stop(runtimes, grace)

    def _remove(self, rt: PodRuntime) -> None:
        """What is left of a pod whose processes have ended: volumes, network, sandbox,
        its object."""
        self.volumes.tear_down(rt.plan)  # its containers have ended: nothing holds them
        node = self.nodes.get(rt.plan.node)
        if node is not None and self.fabric.exists(node.name):
            with netlink.iproute(self.fabric.host_path(node.name)) as ipr:
                cni.delete(rt.plan, ipr)
        else:
            cni.delete(rt.plan, None)
        self.cri.remove_sandbox(rt.plan)
        del self.pods[rt.plan.key]
        self.checkpoints.remove("pods", pod_key(*rt.plan.key))
        self.store.delete("pods", rt.plan.namespace, rt.plan.name)
        self._sync_services()  # and out of notReadyAddresses

    def _evict(self, pod: PodPlan, message: str) -> None:
        """kubelet's eviction manager: the pod's containers are stopped, it is Failed
        with reason Evicted (its owner starts a replacement), its volumes go."""
        with self.lock:
            rt = self.pods.get(pod.key)
            if rt is None or rt.plan is not pod or rt.deleted or rt.status.evicted is not None:
                return
            self.workers.evict(rt, message)
            if rt.owned:  # its Deployment or StatefulSet makes another: it goes, as deleted
                self._delete_pod(rt, grace=0.0)
                return
            if self.prober is not None:
                self.prober.remove(pod.key)
            rt.status.probes_ready = False
            self.volumes.tear_down(pod)  # its containers have ended
            self._publish_pod(rt)
            self._sync_services()

    # -- exec -------------------------------------------------------------

    def exec(
        self,
        pod: str,
        argv: Sequence[str],
        namespace: str = "default",
        container: str | None = None,
        **kwargs,
    ) -> subprocess.CompletedProcess:
        """Run a command in a pod's container (all its namespaces and its environment,
        as `kubectl exec`) and wait for it (text output captured)."""
        entry = self.container_entry(pod, namespace, container)
        if "env" not in kwargs:
            kwargs["env"] = self.container_environ(pod, namespace, container) or None
        return _run([*entry, *argv], kwargs)

    def container_environ(
        self, pod: str, namespace: str = "default", container: str | None = None
    ) -> dict[str, str]:
        """The environment a running container of the pod was started with ({}: none
        running), for commands exec'd into it."""
        rt = self.pods.get((namespace, pod))
        return self.workers.environ(rt, container) if rt is not None else {}

    def container_entry(
        self, pod: str, namespace: str = "default", container: str | None = None
    ) -> list[str]:
        """The command prefix that enters a running container of the pod: the one
        named, else the first that is not the sidecar. Without the lab's lock: probes
        ask it while the lab waits for them."""
        rt = self.pods.get((namespace, pod))
        if rt is None:
            raise NotFound(f"no pod {namespace}/{pod}; `netlab get pods` lists them")
        try:
            return self.workers.entry(rt, container)
        except LookupError as exc:
            raise NotFound(str(exc)) from exc
        except ProcessLookupError as exc:
            raise ApiError(400, str(exc), "BadRequest") from exc

    def node_exec(self, node: str, argv: Sequence[str], **kwargs) -> subprocess.CompletedProcess:
        """Run a command in a node's namespace and wait for it."""
        return _run(["ip", "netns", "exec", self.nodes[node].netns, *argv], kwargs)

    # -- publishing -------------------------------------------------------

    def _publish_node(self, node: NodePlan) -> None:
        self.store.apply(objects.node_object(node, self.spec.overlay, self.spec.name))

    def _host_ip(self, node: str) -> str:
        plan = self.nodes.get(node)
        return str(plan.address.ip) if plan else ""

    def _publish_pod(self, rt: PodRuntime) -> None:
        node = self.nodes.get(rt.plan.node)
        host_ip = str(node.address.ip) if node else ""
        rack = node.rack if node else None
        self.store.apply(objects.pod_object(rt.plan, rt.status, host_ip, rack, rt.deleted, rt.meta))


def _make_store(spec: LabSpec) -> Store:
    if spec.store == "embedded":
        return Store()
    return EtcdStore(spec.name)  # connected once its etcd runs (`_connect_store`)


def _run(argv: Sequence[str], kwargs: dict) -> subprocess.CompletedProcess:
    """Run and wait (text output captured, a minute at most, unless told otherwise)."""
    kwargs.setdefault("capture_output", True)
    kwargs.setdefault("text", True)
    kwargs.setdefault("timeout", 60)
    return subprocess.run(list(argv), check=False, **kwargs)
