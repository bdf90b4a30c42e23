"""The Lab's workload side (kubelet's and the API's part of Deployments and Jobs): the
desired state written to the store, and the runtime the Deployment and Job
controllers act through (compile a template, start pods of it, stop pods)."""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from dataclasses import dataclass

from netlab import objects
from netlab.errors import ApiError, NetlabError, NotFound, RealizeError
from netlab.meshview import pod_get
from netlab.node import drain
from netlab.node.podworkers import PodRuntime
from netlab.plan import PodPlacer
from netlab.plan.build import deployment_hash
from netlab.plan.interception import ADMIN_PORT
from netlab.plan.scheduler import Unschedulable, name_rng, pod_name, template_hash
from netlab.realize.netns import netns_path
from netlab.spec.autoscale import settings_of
from netlab.spec.load import parse_manifests
from netlab.spec.model import DeploymentSpec
from netlab.system import ACTIVATOR_NAME, ACTIVATOR_NAMESPACE, is_meshed, scales_to_zero

# a pod a controller stops has left the endpoints this long before its processes end,
# longer while clients that connected before still hold connections to it (node/drain.py)
DRAIN_SECONDS = 0.2
STOP_GRACE_SECONDS = 1.0  # then SIGTERM, and SIGKILL to what still runs this long after
DRAIN_MAX_SECONDS = STOP_GRACE_SECONDS


@dataclass
class DeploymentRuntime:
    spec: DeploymentSpec
    pod_hash: str
    rng: object


def check_autoscaled(deployment: DeploymentSpec) -> None:
    """An autoscaled Deployment must be meshed: its sidecars report the requests in flight."""
    annotations = (deployment.manifest.get("metadata") or {}).get("annotations") or {}
    settings = settings_of(annotations)
    if settings is not None and not is_meshed(deployment.template):
        raise NetlabError(
            f"Deployment {deployment.namespace}/{deployment.name}: autoscaling reads the "
            "requests in flight from its pods' sidecars, and it has none; mesh it (label its "
            'namespace or template netlab.io/inject: "true")'
        )


def _selects_template(service, deployment: DeploymentSpec) -> bool:
    labels = deployment.template.labels
    return bool(service.selector) and all(labels.get(k) == v for k, v in service.selector.items())


class WorkloadRuntime:
    """Mixed into Lab: Deployments and Jobs."""

    # -- the autoscaler's scrape (controllers.autoscaler.Scrape) --------------------

    def in_flight(self, pod: dict) -> float | None:
        """Requests the pod's sidecar is serving now (its /stats), or None."""
        netns = pod["metadata"].get("annotations", {}).get("netlab.io/netns")
        if not netns:
            return None
        try:
            status, body = pod_get(netns, ADMIN_PORT, "/stats", timeout=0.5)
            return float(json.loads(body)["proxy"]["inbound_in_flight"]) if status == 200 else None
        except (NetlabError, ValueError, KeyError, TypeError):
            return None

    def waiting(self, namespace: str, deployment: str) -> int:
        """Requests the activator holds for the Services of a Deployment at zero pods."""
        runtime = self.deployments.get((namespace, deployment))
        activator = next(
            (
                rt
                for rt in self.pods.values()
                if rt.plan.owner == ACTIVATOR_NAME and rt.status.ready
            ),
            None,
        )
        if runtime is None or activator is None:
            return 0
        try:
            status, body = pod_get(activator.plan.netns, ADMIN_PORT, "/stats", timeout=0.5)
            held = json.loads(body).get("waiting", {}) if status == 200 else {}
        except (NetlabError, ValueError):
            return 0
        return sum(
            held.get(f"{ns}/{name}", 0)
            for (ns, name), service in self.services.specs.items()
            if ns == namespace and _selects_template(service, runtime.spec)
        )

    def scaled_to_zero_services(self) -> set[tuple[str, str]]:
        """Services selecting the pods of a Deployment that may scale to zero: the
        activator stands in for them while they have no ready pod."""
        zero = [r.spec for r in self.deployments.values() if scales_to_zero(r.spec)]
        return {
            key
            for key, service in self.services.specs.items()
            if any(key[0] == d.namespace and _selects_template(service, d) for d in zero)
        }

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
        check_autoscaled(deployment)
        if (
            scales_to_zero(deployment)
            and (ACTIVATOR_NAMESPACE, ACTIVATOR_NAME) not in self.deployments
        ):
            raise NetlabError(
                f"Deployment {key[0]}/{key[1]}: minScale 0 needs the activator to hold the first "
                "request, and this lab runs none; a lab starts it when its lab file has a "
                "Deployment with minScale 0 (or use minScale 1 here)"
            )
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
            check_autoscaled(deployment)
            return self._deployment_runtime(deployment)

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
        if objects.manifest_of(stored)["spec"] == objects.manifest_of(wanted)["spec"]:
            meta = wanted["metadata"]  # labels and annotations change, as in Kubernetes
            relabeled = dict(stored, metadata=dict(stored["metadata"]))
            relabeled["metadata"]["labels"] = dict(meta.get("labels") or {})
            relabeled["metadata"]["annotations"] = dict(meta.get("annotations") or {})
            self.store.apply(relabeled)
            return _result("Job", *key, "configured")
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
            excluded: dict[str, int] = {}
            placer = PodPlacer(
                self.spec.name,
                self.schedulable_nodes(job.template, excluded, job.namespace),
                [rt.plan for rt in self.pods.values()],
                self.last_pod_address,
            )
            placer.excluded = excluded
            created = [
                placer.add_job_pod(job.name, job.namespace, job.template, rng) for _ in range(count)
            ]
            self._run_pods(created)

    def delete_job(self, name: str, namespace: str = "default") -> dict:
        """Delete a Job; its controller removes its pods."""
        with self.lock:
            try:
                return self.store.delete("jobs", namespace, name)
            except ApiError as exc:
                raise NotFound(f"no job {namespace}/{name}") from exc

    def run_replicas(
        self, runtime: DeploymentRuntime, count: int, pending: Sequence[str] = ()
    ) -> None:
        """Place and start the `pending` pods (named, in the store only) and `count` more
        of a Deployment's template. Those that fit nowhere stay (or are written) in the
        store as Pending with the scheduler's reason; Unschedulable says so."""
        with self.lock:
            if self.stopping:
                return
            try:  # deleted while its controller was deciding: start nothing for it
                self.store.get("deployments", runtime.spec.namespace, runtime.spec.name)
            except ApiError:
                return
            excluded: dict[str, int] = {}
            try:
                nodes = self.schedulable_nodes(
                    runtime.spec.template, excluded, runtime.spec.namespace
                )
                nowhere = None
            except Unschedulable as exc:  # no node at all: every pod waits, Pending
                nodes, nowhere = [], exc
            placer = PodPlacer(
                self.spec.name,
                nodes,
                [rt.plan for rt in self.pods.values()],
                self.last_pod_address,
            )
            placer.excluded = excluded  # counted in the message of a pod that fits nowhere
            spec, pod_hash = runtime.spec, runtime.pod_hash
            placer.reserved = {
                p["metadata"]["name"] for p in self.store.list("pods", spec.namespace)[0]
            }
            created, full = [], None
            taken: set[str] = set()  # ReadWriteOncePod claims a pod of this batch holds
            for name in [*pending, *[None] * count]:  # as many as fit: the rest wait, Pending
                try:
                    if nowhere is not None:
                        raise nowhere
                    once = self.check_claims_free(spec.template, spec.namespace, taken=taken)
                    plan = placer.add_replica(spec, pod_hash, runtime.rng, name)
                    taken |= once
                except Unschedulable as exc:
                    full = exc
                    if name is None:
                        taken = placer.reserved | {p.name for p in placer.pods}
                        name = pod_name(spec.name, pod_hash, runtime.rng, taken)
                    placer.reserved.add(name)
                    self.store.apply(objects.pending_pod_object(spec, name, pod_hash, str(exc)))
                    self.events.pod(
                        spec.namespace, name, "FailedScheduling", exc.scheduler_message,
                        "default-scheduler", "Warning",
                    )  # fmt: skip
                    continue
                if name is not None:  # it fits now: the Pending object gives way to the pod
                    self.store.delete("pods", spec.namespace, name)
                created.append(plan)
            if created:
                self._run_pods(created)
            if full is not None:
                raise full

    def delete_pods(self, namespace: str, names: Sequence[str]) -> None:
        """Stop and remove these pods (those still there): all leave the endpoints, then
        requests already on their way get DRAIN_SECONDS to finish, and connections clients
        opened before get up to DRAIN_MAX_SECONDS to close, then they stop."""
        with self.lock:
            for name in names:  # Pending ones were never anywhere but in the store
                if (namespace, name) not in self.pods:
                    try:
                        self.store.delete("pods", namespace, name)
                    except ApiError:
                        pass
            runtimes = [
                rt
                for name in names
                if (rt := self.pods.get((namespace, name))) is not None and not rt.deleted
            ]
            if not runtimes:
                return
            self._withdraw(runtimes)
        drain.wait_drained(
            [str(netns_path(rt.plan.netns)) for rt in runtimes], DRAIN_SECONDS, DRAIN_MAX_SECONDS
        )

        def still_ours() -> list[PodRuntime]:  # not taken meanwhile (delete pod, the lab's down)
            return [rt for rt in runtimes if rt.plan.key in self.pods and not self.stopping]

        with self.lock:
            runtimes = still_ours()
        self._stop_containers(runtimes, STOP_GRACE_SECONDS)  # unlocked: the lab goes on
        with self.lock:
            for rt in still_ours():
                self._remove(rt)

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

    def delete_deployment(self, name: str, namespace: str = "default") -> DeploymentSpec:
        """Delete a Deployment, then its pods (drained and stopped as a scale-down's)."""
        with self.lock:
            dep = self.deployments.pop((namespace, name), None)
            if dep is None:
                raise NotFound(f"no deployment {namespace}/{name}")
            pods = [rt.plan.name for rt in self._owned_by(namespace, name)]
            self.store.delete("deployments", namespace, name)
        self.delete_pods(namespace, pods)
        return dep.spec

    def _owned_by(self, namespace: str, deployment: str) -> list[PodRuntime]:
        return [
            rt
            for rt in self.pods.values()
            if rt.plan.owner == deployment
            and rt.owned
            and rt.plan.namespace == namespace
            and rt.plan.owner_kind == "Deployment"
        ]

    def _deployment_runtime(self, deployment: DeploymentSpec) -> DeploymentRuntime:
        pod_hash = deployment_hash(deployment)
        rng = name_rng(self.spec.name, deployment.namespace, deployment.name, pod_hash)
        runtime = DeploymentRuntime(deployment, pod_hash, rng)
        self.deployments[(deployment.namespace, deployment.name)] = runtime
        return runtime


def _same_manifest(stored: dict, manifest: dict) -> bool:
    """The stored object says what the manifest says (the store and the controllers
    add their own metadata)."""
    return objects.manifest_of(stored) == objects.manifest_of(manifest)


def _result(kind: str, namespace: str, name: str, action: str) -> dict:
    return {"kind": kind, "namespace": namespace, "name": name, "action": action}
