"""The lab's state as Kubernetes objects (Node, Pod, Deployment, Namespace),
rendered from the plan and what is running. The store versions them; the API
serves them; watchers (DNS, sidecars, controllers) consume them."""

from __future__ import annotations

import copy
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from ipaddress import IPv4Network
from typing import Any

from netlab import nodeinfo
from netlab.nodeinfo import Machine
from netlab.plan import LabPlan, NodePlan, PodPlan
from netlab.plan.model import CNI_BRIDGE, NODE_UPLINK, VTEP_DEVICE
from netlab.spec import volumes
from netlab.spec.compute import qos_class
from netlab.spec.configdata import CONFIG_MAP_FIELDS, SECRET_FIELDS
from netlab.spec.model import (
    ContainerSpec,
    DeploymentSpec,
    OverlaySpec,
    PodTemplate,
    ProbeSpec,
    ServiceSpec,
)
from netlab.spec.storage import CLASS_FIELDS

NETNS_ANNOTATION = "netlab.io/netns"
RACK_ANNOTATION = "netlab.io/rack"


def now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def timestamp(seconds: float, micro: bool = False) -> str:
    """Kubernetes' Time (whole seconds) or MicroTime (micro=True), in UTC."""
    layout = "%Y-%m-%dT%H:%M:%S.%fZ" if micro else "%Y-%m-%dT%H:%M:%SZ"
    return datetime.fromtimestamp(seconds, UTC).strftime(layout)


def parse_time(text: str | None) -> float | None:
    """Seconds since the epoch of a Time or MicroTime; None if absent or malformed."""
    for layout in ("%Y-%m-%dT%H:%M:%S.%fZ", "%Y-%m-%dT%H:%M:%SZ"):
        try:
            return datetime.strptime(text or "", layout).replace(tzinfo=UTC).timestamp()
        except ValueError:
            continue
    return None


def condition_status(obj: dict[str, Any], type_: str) -> str | None:
    """The status ("True", "False", "Unknown") of the object's condition of this type."""
    for condition in (obj.get("status") or {}).get("conditions") or ():
        if condition.get("type") == type_:
            return condition.get("status")
    return None


def controller_of(obj: dict[str, Any], kind: str) -> str | None:
    """The name of the object of `kind` that controls `obj` (its ownerReferences)."""
    for ref in obj["metadata"].get("ownerReferences") or ():
        if ref.get("kind") == kind and ref.get("controller"):
            return ref.get("name")
    return None


@dataclass
class ContainerState:
    """What a container is doing, for the Pod's status."""

    name: str
    state: str = "waiting"  # waiting | running | terminated
    reason: str = "ContainerCreating"
    exit_code: int | None = None
    restarts: int = 0
    started_at: str | None = None
    pid: int | None = None
    finished_at: str | None = None  # when it ended (terminated)
    last: dict[str, Any] | None = None  # its previous run's end, once restarted (lastState)
    image: str = ""  # as the manifest names it ("" : the default image, the host's root)
    image_id: str = ""
    container_id: str = ""  # the runtime's id of its current (or last) run: runc://<id>
    message: str | None = None  # why it waits (ErrImagePull, ...)
    oom_killed: bool = False  # its last end was the kernel's OOM killer
    holds: int = 0  # times it could not be created (its image, its configuration)

    def end(self, code: int | None, at: str, oom_killed: bool = False) -> None:
        """It exited with `code` (None: killed, no code known) at `at`."""
        self.state, self.exit_code, self.finished_at = "terminated", code, at
        self.oom_killed = oom_killed

    def terminated(self) -> dict[str, Any]:
        """The `terminated` state of its last run, as kubelet reports it."""
        code = -1 if self.exit_code is None else self.exit_code
        if code < -1:  # killed by a signal (Popen's -N): the shell's 128 + N, as kubelet shows
            code = 128 - code
        reason = "OOMKilled" if self.oom_killed else "Completed" if code == 0 else "Error"
        out: dict[str, Any] = {"exitCode": code, "reason": reason}
        if self.container_id:
            out["containerID"] = self.container_id
        if self.started_at:
            out["startedAt"] = self.started_at
        if self.finished_at:
            out["finishedAt"] = self.finished_at
        return out

    def status(self, ready: bool = True) -> dict[str, Any]:
        """Its containerStatuses entry; `ready`: the pod's readiness checks pass (a
        running container is ready only then, as the pod's Ready condition says)."""
        if self.state == "running":
            state = {"running": {"startedAt": self.started_at}}
        elif self.state == "terminated":
            state = {"terminated": self.terminated()}
        else:
            waiting = {"reason": self.reason}
            if self.message:
                waiting["message"] = self.message
            state = {"waiting": waiting}
        out = {
            "name": self.name,
            "ready": self.state == "running" and ready,
            "restartCount": self.restarts,
            "started": self.state == "running",
            "state": state,
            "lastState": {"terminated": dict(self.last)} if self.last else {},
            "image": self.image or "host",
            "imageID": self.image_id,
        }
        if self.container_id:
            out["containerID"] = self.container_id
        return out


@dataclass(frozen=True)
class PodMeta:
    """A running pod's labels and annotations as a client last set them (kubectl label,
    annotate, apply); `released`: its owner no longer selects it."""

    labels: Mapping[str, str]
    annotations: Mapping[str, str]
    released: bool = False


POD_DEFAULTS = {
    "dnsPolicy": "ClusterFirst",
    "schedulerName": "default-scheduler",
    "securityContext": {},
    "terminationGracePeriodSeconds": 1,  # the lab's: a deleted pod's processes get 1 s
}
LAB_ANNOTATIONS = (NETNS_ANNOTATION, RACK_ANNOTATION)  # the lab's own: set by the lab alone


def pod_meta_of(obj: dict[str, Any], plan: PodPlan) -> PodMeta | None:
    """A stored pod's client-set labels and annotations (a supervisor taking the lab
    over); None if they are still what the pod was made with."""
    meta = obj["metadata"]
    labels = dict(meta.get("labels") or {})
    annotations = {
        k: v for k, v in (meta.get("annotations") or {}).items() if k not in LAB_ANNOTATIONS
    }
    released = bool(plan.owner) and not meta.get("ownerReferences")
    if labels == dict(plan.labels) and not annotations and not released:
        return None
    return PodMeta(labels, annotations, released)


@dataclass
class PodStatus:
    containers: list[ContainerState] = field(default_factory=list)
    start_time: str | None = None
    network_ready: bool = False
    probes_ready: bool = False  # readiness probes (or the implicit port checks) pass
    evicted: str | None = None  # why kubelet evicted the pod (its containers are stopped)

    @property
    def phase(self) -> str:
        if self.evicted is not None:
            return "Failed"
        states = {c.state for c in self.containers}
        if states == {"terminated"}:
            failed = any(c.exit_code for c in self.containers)
            return "Failed" if failed else "Succeeded"
        if "running" in states and self.network_ready:
            return "Running"
        return "Pending"

    @property
    def ready(self) -> bool:
        running = all(c.state == "running" for c in self.containers)
        return self.network_ready and running and self.probes_ready and self.evicted is None


def pod_status_of(obj: dict, template: PodTemplate) -> PodStatus:
    """The status a stored Pod says its pod had (restarts, start times, readiness):
    what a supervisor that takes the pod over carries on from."""
    status = obj.get("status") or {}
    by_name = {c.get("name"): c for c in status.get("containerStatuses") or ()}
    containers = []
    for spec in template.containers:
        seen = by_name.get(spec.name) or {}
        state = ContainerState(spec.name, restarts=int(seen.get("restartCount") or 0))
        state.image, state.image_id = seen.get("image", ""), seen.get("imageID", "")
        state.container_id = seen.get("containerID", "")
        shown = seen.get("state") or {}
        if "running" in shown:
            state.state, state.started_at = "running", shown["running"].get("startedAt")
        elif "terminated" in shown:
            ended = shown["terminated"]
            state.started_at = ended.get("startedAt")
            oom = ended.get("reason") == "OOMKilled"
            state.end(ended.get("exitCode"), ended.get("finishedAt"), oom)
        else:
            waiting = shown.get("waiting") or {}
            state.reason = waiting.get("reason", state.reason)
            state.message = waiting.get("message")
        state.last = (seen.get("lastState") or {}).get("terminated")
        containers.append(state)
    return PodStatus(
        containers=containers,
        start_time=status.get("startTime"),
        probes_ready=condition_status(obj, "Ready") == "True",
    )


def node_object(
    node: NodePlan, overlay: OverlaySpec, lab: str = "", machine: Machine | None = None
) -> dict[str, Any]:
    """A Node as Flannel leaves it (the lease in spec.podCIDR, the VTEP in annotations)
    and as kubelet reports it (its machine, capacity and conditions, posted now)."""
    backend = {"VNI": overlay.vni, "VtepMAC": node.vtep_mac}
    machine = machine or Machine.of_host()
    capacity, allocatable = nodeinfo.resources(
        machine, node.max_pods or node.pod_cidr.num_addresses - 3, node.allocatable.text()
    )
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "name": node.name,
            "labels": dict(node.labels),
            "annotations": {
                "flannel.alpha.coreos.com/backend-type": overlay.backend_type,
                "flannel.alpha.coreos.com/backend-data": json.dumps(backend),
                "flannel.alpha.coreos.com/public-ip": str(node.address.ip),
                RACK_ANNOTATION: node.rack,
                NETNS_ANNOTATION: node.netns,
            },
        },
        "spec": {"podCIDR": str(node.pod_cidr), "podCIDRs": [str(node.pod_cidr)]},
        "status": {
            "addresses": [
                {"type": "InternalIP", "address": str(node.address.ip)},
                {"type": "Hostname", "address": node.name},
            ],
            "conditions": nodeinfo.conditions(True, now()),
            "nodeInfo": nodeinfo.node_info(lab, node.name, machine),
            "capacity": capacity,
            "allocatable": allocatable,
        },
    }


def container_manifest(c: ContainerSpec) -> dict[str, Any]:
    """A container as a manifest writes it."""
    item: dict[str, Any] = {"name": c.name, "image": c.image or "host"}
    if c.command:
        item["command"] = list(c.command)
    if c.args:
        item["args"] = list(c.args)
    if c.env or c.env_refs:
        item["env"] = [{"name": k, "value": v} for k, v in c.env]
        item["env"] += [volumes.env_ref_manifest(ref) for ref in c.env_refs]
    if c.env_from:
        item["envFrom"] = [volumes.env_from_manifest(source) for source in c.env_from]
    if c.volume_mounts:
        item["volumeMounts"] = [volumes.mount_manifest(m) for m in c.volume_mounts]
    if c.ports:
        item["ports"] = [
            {
                k: v
                for k, v in (
                    ("name", p.name),
                    ("containerPort", p.container_port),
                    ("protocol", p.protocol),
                )
                if v is not None
            }
            for p in c.ports
        ]
    item.update(c.recorded)
    # as written, requests defaulted to limits as kube-apiserver does ({} if none)
    item["resources"] = c.resources.manifest()
    if c.readiness_probe is not None:
        item["readinessProbe"] = probe_manifest(c.readiness_probe)
    return item


def _seconds(value: float) -> int | float:
    return int(value) if float(value).is_integer() else value


def probe_manifest(probe: ProbeSpec) -> dict[str, Any]:
    """A readinessProbe as a manifest writes it, its defaults filled in (as the API
    server shows them: here, the lab's defaults, which are the ones in force)."""
    if probe.kind == "exec":
        handler: dict[str, Any] = {"command": list(probe.command)}
    else:
        handler = {"port": probe.port}
        if probe.kind == "httpGet":
            handler = {"path": probe.path, **handler}
    return {
        probe.kind: handler,
        "initialDelaySeconds": _seconds(probe.initial_delay),
        "periodSeconds": _seconds(probe.period),
        "timeoutSeconds": _seconds(probe.timeout),
        "successThreshold": probe.success_threshold,
        "failureThreshold": probe.failure_threshold,
    }


def pod_object(
    pod: PodPlan,
    status: PodStatus,
    host_ip: str,
    rack: str | None = None,
    deleting: bool = False,
    meta: PodMeta | None = None,
) -> dict[str, Any]:
    """A Pod as kubelet reports it (`deleting`: on its way out, Terminating), with the
    labels and annotations a client gave it since (`meta`)."""
    template = pod.template
    containers = [container_manifest(c) for c in template.containers]
    metadata: dict[str, Any] = {
        "name": pod.name,
        "namespace": pod.namespace,
        "labels": dict(meta.labels if meta is not None else pod.labels),
        "annotations": {
            **(meta.annotations if meta is not None else {}),
            NETNS_ANNOTATION: pod.netns,
        },
    }
    if rack:
        metadata["annotations"][RACK_ANNOTATION] = rack
    if deleting:
        metadata["deletionTimestamp"] = now()
        metadata["deletionGracePeriodSeconds"] = 1
    if pod.owner and not (meta is not None and meta.released):
        api = "batch/v1" if pod.owner_kind == "Job" else "apps/v1"
        metadata["ownerReferences"] = [
            {"apiVersion": api, "kind": pod.owner_kind, "name": pod.owner, "controller": True}
        ]
    spec: dict[str, Any] = {
        "nodeName": pod.node,
        "containers": containers,
        "restartPolicy": template.restart_policy,
    }
    if template.node_selector:
        spec["nodeSelector"] = dict(template.node_selector)
    if template.volumes:
        spec["volumes"] = [volumes.volume_manifest(v) for v in template.volumes]
    spec.update(template.recorded)
    for key, value in POD_DEFAULTS.items():  # kube-apiserver's defaults (kubectl reads them)
        spec.setdefault(key, copy.deepcopy(value))
    ready = status.ready and not deleting  # a pod on its way out is not ready
    ready_text = "True" if ready else "False"
    shown: dict[str, Any] = {}
    if status.evicted is not None:  # as kubelet's eviction manager leaves the pod
        shown = {"reason": "Evicted", "message": status.evicted}
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": metadata,
        "spec": spec,
        "status": {
            **shown,
            "phase": status.phase,
            "podIP": str(pod.address.ip),
            "podIPs": [{"ip": str(pod.address.ip)}],
            "hostIP": host_ip,
            "startTime": status.start_time,
            "conditions": [
                {"type": "PodScheduled", "status": "True"},
                {"type": "Ready", "status": ready_text},
                {"type": "ContainersReady", "status": ready_text},
            ],
            "containerStatuses": [c.status(ready) for c in status.containers],
            "qosClass": qos_class(template.containers),
        },
    }


def unschedulable_pod_object(
    namespace: str,
    name: str,
    template: PodTemplate,
    labels: Mapping[str, str],
    owner: dict[str, Any],
    message: str,
) -> dict[str, Any]:
    """A controller's pod that fits on no node (`owner`: its ownerReference): in the
    store, Pending, with the scheduler's reason (as kube-scheduler leaves it), until a
    node has room."""
    spec: dict[str, Any] = {
        "containers": [container_manifest(c) for c in template.containers],
        "restartPolicy": template.restart_policy,
    }
    if template.volumes:
        spec["volumes"] = [volumes.volume_manifest(v) for v in template.volumes]
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": name,
            "namespace": namespace,
            "labels": dict(labels),
            "ownerReferences": [{**owner, "controller": True}],
        },
        "spec": spec,
        "status": {
            "phase": "Pending",
            "qosClass": qos_class(template.containers),
            "conditions": [
                {
                    "type": "PodScheduled",
                    "status": "False",
                    "reason": "Unschedulable",
                    "message": message,
                }
            ],
        },
    }


def pending_pod_object(
    deployment: DeploymentSpec, name: str, pod_hash: str, message: str
) -> dict[str, Any]:
    """A Deployment's pod that fits on no node, Pending until a node has room."""
    labels = dict(deployment.template.labels, **{"pod-template-hash": pod_hash})
    owner = {"apiVersion": "apps/v1", "kind": "Deployment", "name": deployment.name}
    return unschedulable_pod_object(
        deployment.namespace, name, deployment.template, labels, owner, message
    )


def unscheduled(pod: dict[str, Any]) -> bool:
    """A Pending pod no node was found for (a pending_pod_object)."""
    return condition_status(pod, "PodScheduled") == "False"


def deployment_object(deployment: DeploymentSpec) -> dict[str, Any]:
    """A Deployment's desired state as written (its controller fills in the status)."""
    manifest = json.loads(json.dumps(deployment.manifest)) if deployment.manifest else {}
    metadata = manifest.get("metadata", {})
    metadata.setdefault("name", deployment.name)
    metadata["namespace"] = deployment.namespace
    spec = manifest.get("spec", {})
    spec["replicas"] = deployment.replicas
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": metadata,
        "spec": spec,
        "status": {},
    }


def job_object(job) -> dict[str, Any]:
    """A Job as written (its controller fills in the status)."""
    manifest = json.loads(json.dumps(job.manifest))
    manifest.setdefault("metadata", {})["namespace"] = job.namespace
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": manifest["metadata"],
        "spec": manifest.get("spec", {}),
        "status": {},
    }


MANIFEST_METADATA = ("name", "namespace", "labels", "annotations")
DATA_FIELDS = {  # kinds without a spec
    "ConfigMap": CONFIG_MAP_FIELDS,
    "Secret": SECRET_FIELDS,
    "StorageClass": CLASS_FIELDS,
}
LAST_APPLIED = "kubectl.kubernetes.io/last-applied-configuration"


def manifest_of(obj: dict[str, Any]) -> dict[str, Any]:
    """A stored object as its author wrote it: no status, no store-managed metadata,
    and none of the annotations controllers add."""
    meta = {k: copy.deepcopy(v) for k, v in obj["metadata"].items() if k in MANIFEST_METADATA}
    annotations = {
        k: v
        for k, v in (meta.get("annotations") or {}).items()
        if not k.startswith("deployment.kubernetes.io/") and k != LAST_APPLIED
    }
    if annotations:
        meta["annotations"] = annotations
    else:
        meta.pop("annotations", None)
    if not meta.get("labels"):
        meta.pop("labels", None)
    manifest = {"apiVersion": obj["apiVersion"], "kind": obj["kind"], "metadata": meta}
    if obj["kind"] in DATA_FIELDS:  # no spec: the data is the manifest
        manifest.update({k: copy.deepcopy(obj[k]) for k in DATA_FIELDS[obj["kind"]] if k in obj})
    else:
        manifest["spec"] = copy.deepcopy(obj.get("spec") or {})
    return manifest


def applyable(obj: dict[str, Any]) -> dict[str, Any]:
    """A stored object as a manifest the lab takes again (a PATCH, a supervisor taking
    the lab over): what its author wrote, with kubectl's last-applied annotation, and
    without the fields the API fills in (a Service's clusterIPs)."""
    manifest = manifest_of(obj)
    applied = (obj["metadata"].get("annotations") or {}).get(LAST_APPLIED)
    if applied is not None:
        manifest["metadata"].setdefault("annotations", {})[LAST_APPLIED] = applied
    if obj.get("kind") == "Service":
        manifest["spec"].pop("clusterIPs", None)
    return manifest


def namespace_object(
    name: str, labels: dict[str, str] | None = None, annotations: dict[str, str] | None = None
) -> dict[str, Any]:
    metadata: dict[str, Any] = {"name": name}
    if labels:
        metadata["labels"] = dict(labels)
    if annotations:
        metadata["annotations"] = dict(annotations)
    return {
        "apiVersion": "v1",
        "kind": "Namespace",
        "metadata": metadata,
        "spec": {"finalizers": ["kubernetes"]},
        "status": {"phase": "Active"},
    }


def service_object(service: ServiceSpec, vip: str | None) -> dict[str, Any]:
    """A Service as the API server shows it: the manifest with its clusterIP filled in."""
    manifest = json.loads(json.dumps(service.manifest)) if service.manifest else {}
    metadata = manifest.get("metadata", {})
    metadata["name"] = service.name
    metadata["namespace"] = service.namespace
    if service.labels:
        metadata["labels"] = dict(service.labels)
    ports = []
    for port in service.ports:
        item: dict[str, Any] = {
            "protocol": port.protocol,
            "port": port.port,
            "targetPort": port.target_port,
        }
        if port.name:
            item["name"] = port.name
        ports.append(item)
    cluster_ip = "None" if service.headless else vip
    spec: dict[str, Any] = {
        "type": "ClusterIP",
        "clusterIP": cluster_ip,
        "clusterIPs": [cluster_ip],
        "ports": ports,
        "sessionAffinity": service.session_affinity,
    }
    if service.selector:
        spec["selector"] = dict(service.selector)
    if service.session_affinity == "ClientIP":
        spec["sessionAffinityConfig"] = {"clientIP": {"timeoutSeconds": service.affinity_timeout}}
    return {"apiVersion": "v1", "kind": "Service", "metadata": metadata, "spec": spec}


def endpoints_object(service: ServiceSpec, subsets: list[dict[str, Any]]) -> dict[str, Any]:
    """Endpoints v1: the Service's name, addresses grouped by their port set."""
    metadata: dict[str, Any] = {"name": service.name, "namespace": service.namespace}
    if service.labels:
        metadata["labels"] = dict(service.labels)
    return {"apiVersion": "v1", "kind": "Endpoints", "metadata": metadata, "subsets": subsets}


def topology_object(
    plan: LabPlan, nodes: Iterable[NodePlan], service_network: IPv4Network
) -> dict[str, Any]:
    """The lab's machine room as data (racks, routers, nodes and their namespaces):
    what `netlab capture` needs to find interfaces and `netlab draw` to draw them.
    Not a Kubernetes kind; served at /netlab/v1/topology."""
    overlay = plan.overlay
    return {
        "apiVersion": "netlab.io/v1",
        "kind": "Topology",
        "metadata": {"name": plan.name},
        "prefix": plan.prefix,
        "netns": plan.netns,
        "overlay": {
            "backend": overlay.backend_type,
            "vni": overlay.vni,
            "port": overlay.port,
            "network": str(overlay.network),
            "directRouting": overlay.direct_routing,
            "device": VTEP_DEVICE,
            "bridge": CNI_BRIDGE,
            "mtu": plan.overlay_mtu,
        },
        "serviceNetwork": str(service_network),
        "racks": [
            {"name": r.name, "subnet": str(r.subnet), "bridge": r.bridge} for r in plan.racks
        ],
        "routers": [
            {
                "name": router.name,
                "netns": router.netns,
                "ports": [
                    {
                        "rack": port.rack,
                        "ifname": port.ifname,
                        "labIfname": port.lab_ifname,
                        "address": str(port.address),
                    }
                    for port in router.ports
                ],
            }
            for router in plan.routers
        ],
        "nodes": [
            {
                "name": node.name,
                "rack": node.rack,
                "netns": node.netns,
                "address": str(node.address),
                "uplink": NODE_UPLINK,
                "labIfname": node.lab_ifname,
                "podCIDR": str(node.pod_cidr),
                "vtepIP": str(node.vtep_ip),
                "vtepMAC": node.vtep_mac,
                "cniAddress": str(node.cni_address),
                "cniMAC": node.cni_mac,
            }
            for node in nodes
        ],
    }
