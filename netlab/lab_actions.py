"""The lab's side of its API (`apiserver.base.Actions`): deletes, updates, exec entry,
logs, node actions and shutdown, done by the lab. Lab calls run on worker threads;
the lab's lock serializes them. The API server knows the lab only through this."""

from __future__ import annotations

import asyncio
import json
import socket
from collections.abc import Awaitable, Callable, Iterable
from pathlib import Path
from typing import Any, Protocol

from netlab import configobjects, lab_storage, namespaces, objects
from netlab.apiserver.app import make_app
from netlab.apiserver.auth import auth_middleware, endpoint_for
from netlab.apiserver.base import invalid
from netlab.apiserver.runner import ApiServer
from netlab.errors import ApiError, NetlabError, NotFound, Problem, SpecError
from netlab.lab_workloads import check_autoscaled
from netlab.paths import socket_path
from netlab.realize import netns
from netlab.realize.netns import netns_path
from netlab.realize.processes import container_env
from netlab.resources import Resource
from netlab.spec.load import parse_manifests
from netlab.spec.manifests import KINDS
from netlab.store import stale
from netlab.system import SIDECAR_CONTAINER


class MetricsSource(Protocol):
    """Where the resource metrics come from (netlab.node.metrics.MetricsSampler)."""

    def pod_metrics(self) -> list[dict]: ...

    def node_metrics(self, nodes: Iterable[str] = ()) -> list[dict]: ...


class LabActions:
    """What the API may ask of the lab (netlab.apiserver.base.Actions). Lab calls run on
    worker threads; the lab's lock serializes them."""

    def __init__(
        self, lab: Any, on_shutdown: Callable[[], None], metrics: MetricsSource | None = None
    ):
        self.lab = lab
        self.on_shutdown = on_shutdown
        self.metrics = metrics  # kubectl top's source; None: no metrics yet
        self._tasks: set[asyncio.Task] = set()  # namespaces being emptied

    async def _run(self, call: Callable, *args):
        try:
            return await asyncio.to_thread(call, *args)
        except NotFound as exc:
            raise ApiError(404, str(exc)) from exc
        except ApiError:
            raise
        except SpecError as exc:
            err = ApiError(422, str(exc))
            err.reason = "Invalid"  # type: ignore[attr-defined]
            raise err from exc
        except NetlabError as exc:
            raise ApiError(400, str(exc)) from exc

    async def delete_pod(self, namespace: str, name: str) -> dict:
        obj = self.lab.store.get("pods", namespace, name)
        await self._run(self.lab.delete_pod, name, namespace)
        return obj

    async def delete_deployment(self, namespace: str, name: str) -> dict:
        obj = self.lab.store.get("deployments", namespace, name)
        await self._run(self.lab.delete_deployment, name, namespace)
        return obj

    async def delete_namespace(self, _namespace: str | None, name: str) -> dict:
        """`kubectl delete ns`: Terminating now, emptied and removed in the background."""
        obj = await self._run(namespaces.mark_terminating, self.lab.store, name)
        task = asyncio.create_task(self._run(namespaces.empty_and_delete, self.lab, name))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return obj

    async def delete_job(self, namespace: str, name: str) -> dict:
        return await self._run(self.lab.delete_job, name, namespace)

    async def delete_statefulset(self, namespace: str, name: str) -> dict:
        return await self._run(self.lab.delete_statefulset, name, namespace)

    async def update_deployment(self, obj: dict) -> dict:
        """A changed Deployment (PATCH, scale): validated against the lab, then stored."""
        return await self._run(self.lab.update_deployment, obj)

    async def node_action(self, name: str, verb: str, force: bool) -> list[str]:
        """Fail, recover, cordon, uncordon or drain a node; the pods a drain evicted."""
        lab = self.lab
        calls = {
            "fail": lambda: lab.fail_node(name),
            "recover": lambda: lab.recover_node(name),
            "cordon": lambda: lab.cordon(name),
            "uncordon": lambda: lab.cordon(name, False),
            "drain": lambda: lab.drain(name, force),
        }
        return await self._run(calls[verb]) or []

    async def update_pod(self, obj: dict) -> dict:
        """A pod's labels and annotations change (kubectl label, annotate, apply); its
        spec stays as it was made, as Kubernetes keeps all but a few fields of it."""
        meta = obj["metadata"]
        stored = self.lab.store.get("pods", meta.get("namespace"), meta["name"])
        if stored.get("spec") != obj.get("spec"):
            raise ApiError(
                422,
                f'Pod "{meta["name"]}" is invalid: spec: Forbidden: pod updates may not change '
                "fields other than metadata.labels and metadata.annotations (delete the pod "
                "and create it again, or let its Deployment roll a new template out)",
                "Invalid",
            )
        if meta.get("resourceVersion") not in (None, stored["metadata"]["resourceVersion"]):
            raise stale("pods", meta["name"])
        if (meta.get("labels") or {}) == stored["metadata"].get("labels", {}) and (
            meta.get("annotations") or {}
        ) == stored["metadata"].get("annotations", {}):
            return stored
        return await self._run(
            self.lab.set_pod_metadata,
            stored["metadata"]["namespace"],
            meta["name"],
            dict(meta.get("labels") or {}),
            dict(meta.get("annotations") or {}),
        )

    async def update_node(self, obj: dict) -> dict:
        """kubectl cordon, uncordon and drain patch a node's spec.unschedulable; that is
        all of a lab node that changes through the API."""
        name = obj["metadata"]["name"]
        stored = self.lab.store.get("nodes", None, name)
        before, after = dict(stored.get("spec") or {}), dict(obj.get("spec") or {})
        unschedulable = bool(after.pop("unschedulable", False))
        before.pop("unschedulable", None)
        changed = [
            what
            for what, old, new in (
                ("spec", before, after),
                ("metadata.labels", stored["metadata"].get("labels") or {},
                 obj["metadata"].get("labels") or {}),
                ("metadata.annotations", stored["metadata"].get("annotations") or {},
                 obj["metadata"].get("annotations") or {}),
            )
            if old != new
        ]  # fmt: skip
        if changed:
            raise ApiError(
                422,
                f'Node "{name}" is invalid: {", ".join(changed)}: Forbidden: a lab node takes '
                "no taints and its labels are the lab file's (lab.racks[].nodes[].labels); "
                "only spec.unschedulable changes (kubectl cordon, uncordon, drain)",
                "Invalid",
            )
        await self._run(self.lab.cordon, name, unschedulable)
        return self.lab.store.get("nodes", None, name)

    async def validate(self, res: Resource, obj: dict) -> None:
        """An object as a write would store it, checked as creating it is checked
        (`netlab apply`'s readers against this lab): 422 naming every field at fault."""
        await self._run(self._validate, res, obj)

    def _validate(self, res: Resource, obj: dict) -> None:
        if res.kind not in KINDS:
            return
        lab = self.lab
        namespace = obj["metadata"].get("namespace")
        if res.namespaced and namespace and namespaces.terminating(lab.store, namespace):
            try:
                lab.store.get(res, namespace, obj["metadata"].get("name"))
            except ApiError:
                raise namespaces.refuse_new_content(namespace) from None
        # not under the lab's lock, which a controller may hold across I/O: the mesh
        # context is copies (a dict copied whole under the GIL, the store's own lock)
        existing = lab._mesh_context()
        name = str(obj["metadata"].get("name"))
        full_kind = f"{res.kind}.{res.group}" if res.group else res.kind
        try:
            text, classes = json.dumps(objects.applyable(obj)), lab_storage.class_names(lab.store)
            found = parse_manifests(text, lab.spec, None, existing, classes)
            for deployment in found.deployments:
                check_autoscaled(deployment)
            configobjects.check_all(lab.store, found.configmaps + found.secrets)
        except SpecError as exc:
            raise invalid(full_kind, name, exc.problems) from exc
        except NetlabError as exc:
            raise invalid(full_kind, name, [Problem("metadata.annotations", str(exc))]) from exc

    async def exec_entry(
        self, namespace: str, pod: str, container: str | None
    ) -> tuple[list[str], dict[str, str]]:
        """How a command enters a pod's container (kubectl exec): the pod's network
        namespace and the container's environment."""
        try:
            plan = self.lab.pod(pod, namespace)
        except NotFound as exc:
            raise ApiError(404, f'pods "{pod}" not found', "NotFound") from exc
        containers = [c for c in plan.template.containers if c.name != SIDECAR_CONTAINER]
        chosen = next((c for c in plan.template.containers if c.name == container), None)
        if container and chosen is None:  # kube-apiserver's words
            raise ApiError(400, f"container {container} is not valid for pod {pod}", "BadRequest")
        spec = chosen or (containers or list(plan.template.containers))[0]
        try:
            entry = self.lab.container_entry(pod, namespace, spec.name)
        except NotFound as exc:
            raise ApiError(404, str(exc), "NotFound") from exc
        # the environment the container was started with (ConfigMaps', Secrets' too)
        started = self.lab.container_environ(pod, namespace, spec.name)
        return entry, started or container_env(plan, spec)

    async def port_dialer(
        self, namespace: str, pod: str
    ) -> Callable[[int], Awaitable[socket.socket]]:
        """How port-forward reaches a pod's port (kubectl port-forward): a connection to
        127.0.0.1:PORT made from a socket created inside the pod's network namespace, as
        kubelet's runtime does; never a connection from the host to a lab address."""
        try:
            plan = self.lab.pod(pod, namespace)
        except NotFound as exc:
            raise ApiError(404, f'pods "{pod}" not found', "NotFound") from exc
        path = netns_path(plan.netns)

        def connect(port: int) -> socket.socket:
            with netns.entered(path):
                sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            try:
                sock.settimeout(5)
                sock.connect(("127.0.0.1", port))
            except OSError:
                sock.close()
                raise
            sock.setblocking(False)
            return sock

        async def dial(port: int) -> socket.socket:
            try:
                return await asyncio.to_thread(connect, port)
            except OSError as exc:
                reason = exc.strerror or str(exc)
                raise ConnectionError(
                    f"failed to connect to localhost:{port} inside namespace {plan.netns!r}: "
                    f"dial tcp4 127.0.0.1:{port}: connect: {reason.lower()}"
                ) from exc

        return dial

    async def delete_service(self, namespace: str, name: str) -> dict:
        obj = self.lab.store.get("services", namespace, name)
        await self._run(self.lab.delete_service, name, namespace)
        return obj

    async def _delete_policy(self, plural: str, namespace: str, name: str) -> dict:
        obj = self.lab.store.get(plural, namespace, name)
        await self._run(self.lab.delete_policy, plural, name, namespace)
        return obj

    async def delete_virtualservice(self, namespace: str, name: str) -> dict:
        return await self._delete_policy("virtualservices", namespace, name)

    async def delete_destinationrule(self, namespace: str, name: str) -> dict:
        return await self._delete_policy("destinationrules", namespace, name)

    async def delete_ratelimitpolicy(self, namespace: str, name: str) -> dict:
        return await self._delete_policy("ratelimitpolicies", namespace, name)

    async def delete_configmap(self, namespace: str, name: str) -> dict:
        return await self._run(self.lab.store.delete, "configmaps", namespace, name)

    async def delete_secret(self, namespace: str, name: str) -> dict:
        return await self._run(self.lab.store.delete, "secrets", namespace, name)

    async def delete_persistentvolumeclaim(self, namespace: str, name: str) -> dict:
        """Terminating until no pod uses the claim (kubernetes.io/pvc-protection)."""
        store = self.lab.store
        return await self._run(
            lab_storage.mark_deleting, store, "persistentvolumeclaims", namespace, name
        )

    async def delete_persistentvolume(self, _namespace: str | None, name: str) -> dict:
        """Terminating until no claim is bound to it (kubernetes.io/pv-protection)."""
        store = self.lab.store
        return await self._run(lab_storage.mark_deleting, store, "persistentvolumes", None, name)

    async def delete_storageclass(self, _namespace: str | None, name: str) -> dict:
        return await self._run(lab_storage.delete_class, self.lab.store, name)

    async def apply(self, text: str) -> list[dict]:
        return await self._run(self.lab.apply_text, text)

    async def shutdown(self, leave: bool = False) -> None:
        self.lab.leaving = leave
        self.on_shutdown()

    def log_path(self, namespace: str, pod: str, container: str | None) -> Path:
        runtime = self.lab.pods.get((namespace, pod))
        if runtime is None:
            raise ApiError(404, f'pods "{pod}" not found')
        names = [c.name for c in runtime.plan.template.containers]
        if container is None:
            apps = [n for n in names if n != SIDECAR_CONTAINER]
            if len(apps) == 1:  # kubectl's default-container: the app, not its sidecar
                container = apps[0]
            elif len(names) > 1:
                raise ApiError(
                    400,
                    f"a container name must be specified for pod {pod}, choose one of: {names}",
                )
            else:
                container = names[0]
        if container not in names:
            raise ApiError(400, f"container {container} is not valid for pod {pod}")
        return self.lab.log_path(runtime.plan, container)

    def ready(self) -> bool:
        """Built and not stopping: its controllers run (/readyz)."""
        return self.lab.controllers is not None and not self.lab.stopping

    def pod_metrics(self) -> list[dict]:
        """metrics.k8s.io PodMetrics from the metrics source ([] without one)."""
        return self.metrics.pod_metrics() if self.metrics is not None else []

    def node_metrics(self) -> list[dict]:
        """NodeMetrics of the lab's nodes (each one, once the source has a window)."""
        if self.metrics is None:
            return []
        return self.metrics.node_metrics(list(self.lab.nodes))

    def topology(self) -> dict:
        lab = self.lab
        with lab.lock:
            nodes = list(lab.nodes.values())
        return objects.topology_object(lab.plan, nodes, lab.spec.service_network)


def lab_api_server(lab: Any, on_shutdown: Callable[[], None]) -> ApiServer:
    """The API server of a lab: its application over the lab's store and actions, on
    the unix socket in the run directory and TLS on the lab's loopback port."""
    kube = endpoint_for(lab.spec.name, lab.run_dir)
    actions = LabActions(lab, on_shutdown, metrics=lab.metrics)
    app = make_app(lab.store, actions, [auth_middleware(kube.token)])
    return ApiServer(app, socket_path(lab.run_dir), kube)
