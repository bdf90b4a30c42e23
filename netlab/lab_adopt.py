"""A supervisor taking over a running lab (`netlab up --adopt`): the one before it
ended (a crash, `kill -9`, `netlab detach`) while the lab kept running.

Nothing is rebuilt and no healthy pod restarts. The state comes from where it
lives: objects from the store (the embedded store's journal, or etcd), nodes and
pod sandboxes from the node agents' checkpoints, containers from the lab's
runtime (which kept them running and logged, and kept the exits nobody heard),
the fabric and overlay from the kernel. Then the usual loops take over: node
agents heartbeat, controllers reconcile, Services are programmed afresh in one
transaction per node. As after a kube-controller-manager restart, what changed
meanwhile (a container that ended, a pod gone from the store) is reconciled, not
replayed.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

from netlab import objects
from netlab.errors import NetlabError
from netlab.etcdstore import EtcdClient, EtcdStore, endpoints_of
from netlab.journal import Journal
from netlab.node import cni
from netlab.node.podworkers import PodRuntime
from netlab.plan import NodePlan, PodPlan
from netlab.plan.scheduler import name_rng
from netlab.realize import cleanup, etcd, netlink, netns, preflight
from netlab.realize.checkpoint import pod_key
from netlab.realize.processes import PidRecord, alive_as_recorded
from netlab.spec.load import parse_manifests

log = logging.getLogger(__name__)


STORE_FILE = "store.kind"


def record_store(run_dir: Path, store: str) -> None:
    """Which store the lab uses (`up --store` may have chosen it): its adopter needs it."""
    (run_dir / STORE_FILE).write_text(store + "\n")


def recorded_store(run_dir: Path, default: str) -> str:
    try:
        return (run_dir / STORE_FILE).read_text().strip() or default
    except OSError:
        return default


class NothingToAdopt(NetlabError):
    """No running lab of that name is left to take over."""


class Adoption:
    """Mixed into Lab: `adopt` is `start` for a lab that runs already."""

    def adopt(self, timeout: float = 20.0) -> None:
        """Take the running lab over. On failure the lab is left as it was found."""
        self.check_adoptable()
        try:
            with self.lock:
                self._adopt(timeout)
        except BaseException:
            self.leave()
            raise

    def check_adoptable(self) -> None:
        """NothingToAdopt (or LabRunning) says why this lab cannot be taken over."""
        preflight.check(self.spec)
        cleanup.refuse_if_running(self.spec.name, self.run_dir.parent)
        fix = (
            f"`netlab clean --lab {self.spec.name}` removes what is left of it and "
            "`netlab up` builds it anew"
        )
        if not netns.netns_path(self.plan.netns).exists():
            raise NothingToAdopt(
                f"lab {self.spec.name} is not running (no {self.plan.netns}); {fix}"
            )
        if not (self.run_dir / "checkpoints").is_dir():
            raise NothingToAdopt(
                f"lab {self.spec.name} left no checkpoints in {self.run_dir} (is it from an "
                f"older netlab, or another lab file?); {fix}"
            )
        if not isinstance(self.store, EtcdStore) and not (self.run_dir / "store").is_dir():
            raise NothingToAdopt(f"lab {self.spec.name} left no store in {self.run_dir}; {fix}")
        if self.runtime.sock is None and not self.runtime.connect():
            raise NothingToAdopt(
                f"lab {self.spec.name}'s container runtime is not running, so its containers "
                f"are gone; {fix}"
            )

    def leave(self) -> None:
        """Stop this supervisor's part (API, loops, probes) and leave the lab running:
        kernel objects, containers, the runtime and the store's files stay."""
        self.stopping = True
        self._stop_supervising()
        if isinstance(self.store, EtcdStore):
            self.store.close(forget=False)
        else:
            self.store.close()
        self.runtime.disconnect()

    # -- taking over ------------------------------------------------------

    def _adopt(self, timeout: float) -> None:
        from netlab.lab_actions import lab_api_server
        from netlab.node.prober import Prober
        from netlab.realize.fabric import Fabric

        nodes: list[NodePlan] = self.checkpoints.load("nodes")
        self.nodes = {node.name: node for node in nodes}
        self.fabric = Fabric.adopt(self.plan, nodes, self.pid_record.add)
        self._adopt_store()
        self.api = lab_api_server(self, self._request_shutdown)
        self.parts.start("api", self.api.start, self.api.stop)
        self.prober = Prober(self._readiness_changed)
        self.parts.running("prober", self.prober.close)
        self.parts.start("metrics", self.metrics.start, self.metrics.stop)
        self.parts.start("volumes", self.volumes.start, self.volumes.stop)
        failed = [n.name for n in nodes if self.fabric.link_down(n)]
        self._adopt_pods()
        revision = self.store.list("deployments")[1]
        for obj in self.store.list("deployments")[0]:
            try:
                runtime = self.compile_deployment(obj)
            except NetlabError as exc:  # its controller reports it as it would anyway
                log.warning("deployment %s: %s", obj["metadata"]["name"], exc)
                continue
            # new names from a fresh sequence: a deleted pod's name is not drawn again
            spec = runtime.spec
            runtime.rng = name_rng(
                self.spec.name, spec.namespace, spec.name, f"{runtime.pod_hash}@{revision}"
            )
        self._adopt_services()
        for rt in list(self.pods.values()):
            self._probe(rt, ready=rt.status.probes_ready)
        self._sync_services()  # the rules made afresh, in one transaction per node
        for rt in self.pods.values():
            self._publish_pod(rt)
        self._start_control_plane()
        for name in failed:  # failed before: it stays failed until `netlab node recover`
            self.node_agents.fail(name)

    def _adopt_store(self) -> None:
        if not isinstance(self.store, EtcdStore):
            journal = Journal(self.run_dir / "store")
            self.store.load(journal)  # the one every part was given
            self.store.persist(journal)
            return
        if self.spec.store == "etcd":  # the lab's own members kept running: find them
            recorded = {
                name: (pid, started)
                for pid, started, role, name in PidRecord.read(self.run_dir / "pids")
                if role == "etcd"
            }
            for plan in self._member_plans():  # a dead one is started again by the keeper
                pid, started = recorded.get(plan.name, (0, 0))
                self.etcd_members.append(etcd.EtcdMember.adopted(plan, pid, started))
            if not any(m.alive() for m in self.etcd_members):
                raise NothingToAdopt(f"lab {self.spec.name}: none of its etcd members runs")
            endpoints = [m.endpoint for m in self.etcd_members]
            self._keep_etcd_members()
        else:
            endpoints = endpoints_of(self.spec.store)
        self.store.connect(EtcdClient(endpoints), fresh=False)

    def _adopt_pods(self) -> None:
        """Pods from their checkpoints, their status from the store, their containers
        from the runtime (a container that ended meanwhile is handled as its exit)."""
        running, exited = self.runtime.listing()
        self.cri.sandboxes.adopt(self.runtime.sandboxes)
        running_by_id = {r["id"]: r for r in running}
        exited_by_id = {e["id"]: e for e in exited}
        stored = {
            (p["metadata"]["namespace"], p["metadata"]["name"]): p
            for p in self.store.list("pods")[0]
        }
        plans: list[PodPlan] = self.checkpoints.load("pods")
        for plan in plans:
            obj = stored.get(plan.key)
            if obj is None or not netns.netns_path(plan.netns).exists():
                self._remove_sandbox(plan, running_by_id)  # half made, or gone from the store
                continue
            rt = PodRuntime(plan, objects.pod_status_of(obj, plan.template))
            rt.meta = objects.pod_meta_of(obj, plan)
            rt.status.network_ready = True
            self.pods[plan.key] = rt
            address = self.last_pod_address.get(plan.node)
            if address is None or plan.address.ip > address:
                self.last_pod_address[plan.node] = plan.address.ip
        for key, obj in stored.items():  # in the store, never built: the controllers see to it
            if key not in self.pods and not objects.unscheduled(obj):
                self.store.delete("pods", *key)
        # their volumes' mounts outlived the old supervisor: known again, refreshed
        self.volumes.adopt([rt.plan for rt in self.pods.values()])
        for rt in self.pods.values():
            self._adopt_containers(rt, running_by_id, exited_by_id)

    def _adopt_containers(self, rt: PodRuntime, running: dict, exited: dict) -> None:
        from netlab.node.containers import pause_ident

        pause = running.get(pause_ident(rt.plan))
        if pause is not None and alive_as_recorded(pause["pid"], pause["started"]):
            rt.pause = self.runtime.adopt(pause_ident(rt.plan), pause["pid"], pause["started"])
        for index, container in enumerate(rt.plan.template.containers):
            ident = f"{rt.plan.namespace}/{rt.plan.name}/{container.name}"
            found = running.get(ident)
            if found is not None and alive_as_recorded(found["pid"], found["started"]):
                proc = self.runtime.adopt(ident, found["pid"], found["started"])
                self.workers.attach(rt, index, proc, fresh=False)
                continue
            state = rt.status.containers[index]
            if ident in exited:
                self.workers.ended(rt, index, exited[ident]["code"], bool(exited[ident].get("oom")))
            elif state.state != "terminated":  # gone without a word: as if it crashed
                self.workers.ended(
                    rt, index, state.exit_code if state.exit_code is not None else -1
                )

    def _remove_sandbox(self, plan: PodPlan, running: dict) -> None:
        from netlab.realize.processes import stop_processes

        procs = [
            self.runtime.adopt(ident, r["pid"], r["started"])
            for ident, r in running.items()
            if ident.startswith(f"{plan.namespace}/{plan.name}/")
        ]
        stop_processes(procs, grace=0.5)
        node = self.nodes.get(plan.node)
        if node is not None and self.fabric.exists(node.name):
            with netlink.iproute(self.fabric.host_path(node.name)) as ipr:
                cni.delete(plan, ipr)
        else:
            cni.delete(plan, None)
        self.cri.remove_sandbox(plan)
        self.checkpoints.remove("pods", pod_key(*plan.key))

    def _adopt_services(self) -> None:
        """The stored Services, parsed again; the lab's own (its DNS), which no user
        may write, from the lab's spec."""
        own = {(s.namespace, s.name): s for s in self.spec.services}
        specs, vips = [], {}
        for obj in self.store.list("services")[0]:
            meta = obj["metadata"]
            key = (meta["namespace"], meta["name"])
            try:
                (service,) = parse_manifests(
                    json.dumps(objects.applyable(obj)), self.spec, f"service {key[1]}"
                ).services
            except (NetlabError, ValueError) as exc:
                service = own.get(key)
                if service is None:
                    log.warning("service %s/%s not adopted: %s", *key, exc)
                    continue
            specs.append(service)
            cluster_ip = (obj.get("spec") or {}).get("clusterIP")
            if cluster_ip and cluster_ip != "None":
                vips[key] = cluster_ip
        self.services.adopt(specs, vips)
