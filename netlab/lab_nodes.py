"""The Lab's node side (the node agents' part): nodes joining and leaving, failing and
recovering, cordoned and drained; where new pods may go; the control plane's start
(the store's etcd, heartbeats, the controllers)."""

from __future__ import annotations

import signal
import time
from collections.abc import Collection, Sequence

from netlab.controllers import ControllerManager
from netlab.controllers.attachdetach import AttachDetachController
from netlab.controllers.autoscaler import Autoscaler
from netlab.controllers.deployment import DeploymentController
from netlab.controllers.job import JobController
from netlab.controllers.nodeagent import LEASE_NAMESPACE, NodeAgents
from netlab.controllers.nodelifecycle import NodeLifecycleController, node_ready
from netlab.controllers.persistentvolume import PersistentVolumeController
from netlab.controllers.statefulset import StatefulSetController
from netlab.errors import ApiError, NetlabError, NotFound
from netlab.etcdstore import EtcdClient, EtcdStore, endpoints_of
from netlab.node.attachments import rwop_check, volume_claims
from netlab.node.diskimages import DiskImages
from netlab.node.loopdisks import LabDisks
from netlab.nodeinfo import host_allocatable
from netlab.plan import NodePlan, peer_entry, plan_node
from netlab.plan.build import candidates_of
from netlab.plan.scheduler import Unschedulable, eligible
from netlab.realize import etcd, netlink, overlay
from netlab.realize.etcdkeeper import MemberKeeper
from netlab.realize.processes import signal_group
from netlab.spec.model import NodeSpec, PodTemplate, frozen_map

CONTROL_PLANE_LABEL = "node-role.kubernetes.io/control-plane"


class NodeRuntime:
    """Mixed into Lab: nodes and the control plane."""

    def _connect_store(self) -> None:
        """store: etcd: start the lab's own cluster on its control-plane nodes, or use
        the loopback etcd named; either way this lab starts from nothing in it."""
        if not isinstance(self.store, EtcdStore) or self.store.client is not None:
            return
        if self.spec.store == "etcd":
            self.etcd_members = etcd.start_cluster(
                self._member_plans(),
                self.run_dir / "logs",
                lambda pid, name: self.pid_record.add(pid, "etcd", name),
            )
            endpoints = [m.endpoint for m in self.etcd_members]
            self._keep_etcd_members()
        else:
            endpoints = endpoints_of(self.spec.store)
        self.store.connect(EtcdClient(endpoints), fresh=True)

    def _keep_etcd_members(self) -> None:
        """Start a member that ended again, after a back-off (kubelet and its static pod)."""
        plans = self._member_plans()

        def restart(plan: etcd.MemberPlan) -> etcd.EtcdMember:
            log = self.run_dir / "logs" / f"etcd-{plan.name}.log"
            member = etcd.EtcdMember(plan, etcd.cluster_of(plans), None, log)
            self.pid_record.add(member.pid, "etcd", plan.name)
            return member

        def may_run(name: str) -> bool:  # a failed node's member waits for the node
            agents = self.node_agents
            return agents is None or name.removeprefix("etcd-") not in agents.failed

        self.etcd_keeper = MemberKeeper(self.etcd_members, restart, may_run, self.lock)
        self.parts.start("etcd-keeper", self.etcd_keeper.start, self.etcd_keeper.stop)

    def _member_plans(self) -> list[etcd.MemberPlan]:
        """The lab's own etcd members, on its control-plane nodes."""
        return [
            etcd.MemberPlan(
                f"etcd-{node.name}",
                str(node.address.ip),
                node.netns,
                self.run_dir / "etcd" / node.name,
            )
            for node in control_plane_nodes(self.plan.nodes)
        ]

    def _start_control_plane(self) -> None:
        """The node agents' heartbeats, then the controllers that watch the store."""
        timing = self.spec.control_plane
        self.node_agents = NodeAgents(
            self.store, lambda: list(self.nodes), timing.heartbeat, timing.node_grace, time.time
        )
        self.parts.start("node-agents", self.node_agents.start, self.node_agents.stop)
        self.node_lifecycle = NodeLifecycleController(
            self.store, self, timing.node_grace, time.time
        )
        self.disks = LabDisks(self.spec.name)  # the nodes' loop disks, held while the lab runs
        self.parts.start("disks", lambda: None, self.disks.close)
        self.controllers = ControllerManager(
            [
                DeploymentController(self.store, self),
                JobController(self.store, self, time.time, timing.job_backoff, self.events),
                StatefulSetController(self.store, self, self.events),
                Autoscaler(self.store, self),
                PersistentVolumeController(self.store, DiskImages(self.spec.name), self.events),
                self.node_lifecycle,
                AttachDetachController(self.store, self.disks, self.events, time.time),
            ]
        )
        self.parts.start("controllers", self.controllers.start, self.controllers.stop)

    def check_claims_free(
        self,
        template: PodTemplate,
        namespace: str,
        waits: bool = True,
        taken: Collection[str] = (),
    ) -> set[str]:
        """kube-scheduler's VolumeRestrictions PreFilter: Unschedulable if a
        ReadWriteOncePod claim of the pod is another pod's, in the store or placed
        earlier in this batch (`taken`); the pod's own ReadWriteOncePod claims, for the
        next of the batch. `waits`: the pod is queued until it is free (an owned pod); a
        bare pod is refused instead."""
        claims = volume_claims(template.volumes)
        if not claims:
            return set()
        conflict, once = rwop_check(self.store, namespace, claims, taken)
        if conflict:
            fix = (
                "A ReadWriteOncePod claim is one pod's at a time: the pod waits until the "
                "one using it is gone (or give each pod its own claim)"
                if waits
                else "A ReadWriteOncePod claim is one pod's at a time: delete the pod using "
                "it first (a bare pod is not queued in the lab; a StatefulSet's or "
                "Deployment's waits Pending)"
            )
            raise Unschedulable(f"0/{len(self.nodes)} nodes are available: {conflict}.", fix)
        return once

    def schedulable_nodes(
        self,
        template: PodTemplate | None = None,
        excluded: dict[str, int] | None = None,
        namespace: str = "default",
    ) -> list[NodePlan]:
        """The nodes a new pod may go to: Ready and not cordoned (kube-scheduler's filters
        before nodeSelector); Unschedulable, with kube-scheduler's reasons, if none may.
        The others are counted by reason into `excluded` (for the placer's message)."""
        if template is not None:
            self.check_claims_free(template, namespace)
        reasons = excluded if excluded is not None else {}
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
                f"0/{len(self.nodes)} nodes are available: {why or 'the lab has no nodes'}.",
                "`netlab node recover`, `netlab uncordon` or a matching nodeSelector would fix it",
            )
        return fit

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
        by_namespace: dict[str, list[str]] = {}
        for rt in mine:
            by_namespace.setdefault(rt.plan.namespace, []).append(rt.plan.name)
        for namespace, names in by_namespace.items():  # drained, as a scale-down's
            self.delete_pods(namespace, names)
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
                host=host_allocatable(),
            )
            self.fabric.add_node(node)
            self.nodes[name] = node
            self.checkpoints.save("nodes", name, node)
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
            self.checkpoints.remove("nodes", name)
            self.store.delete("nodes", None, name)
            try:
                self.store.delete("leases", LEASE_NAMESPACE, name)
            except ApiError:
                pass


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
