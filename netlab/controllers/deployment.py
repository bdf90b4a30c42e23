"""The Deployment controller: keeps `replicas` pods of a Deployment's current template
running, rolls a changed template out by its strategy, records each template as a
ReplicaSet (the rollout history `netlab rollout undo` goes back through), and writes
the Deployment's status.

It reads Deployments and Pods from the store and acts through the lab's runtime
(`DeploymentRuntime`): start pods of a template, stop pods. It never touches the kernel.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Hashable, Iterable, Sequence
from typing import Any, Protocol

from netlab.controllers.base import Controller
from netlab.controllers.rollout import Replica, RolloutError, complete, parse_strategy, step
from netlab.errors import ApiError, NetlabError
from netlab.objects import condition_status, controller_of, parse_time, unscheduled
from netlab.store import Event, Store

log = logging.getLogger(__name__)

HASH_LABEL = "pod-template-hash"
REVISION = "deployment.kubernetes.io/revision"
HISTORY_LIMIT = 10  # Kubernetes' default revisionHistoryLimit
UNSCHEDULABLE_RETRY = 1.0  # seconds: a node may have come back or been uncordoned


class Compiled(Protocol):
    """A Deployment's template as the runtime understands it."""

    pod_hash: str


class DeploymentRuntime(Protocol):
    """What the controller asks of the lab (the node agents' side)."""

    def compile_deployment(self, obj: dict) -> Compiled:
        """The template of a stored Deployment, validated; NetlabError if it cannot run."""
        ...

    def run_replicas(self, compiled: Compiled, count: int, pending: Sequence[str] = ()) -> None:
        """Place the `pending` pods and `count` more of this template; those that fit
        nowhere are Pending in the store, and Unschedulable says so."""
        ...

    def delete_pods(self, namespace: str, names: Sequence[str]) -> None:
        """Stop these pods (out of the endpoints first) and remove them."""
        ...


def owner_of(obj: dict) -> str | None:
    """The name of the Deployment that controls a pod or ReplicaSet, if any."""
    return controller_of(obj, "Deployment")


def is_ready(pod: dict) -> bool:
    return condition_status(pod, "Ready") == "True"


def replica_of(pod: dict) -> Replica:
    meta = pod["metadata"]
    return Replica(
        meta["name"],
        meta.get("labels", {}).get(HASH_LABEL, ""),
        is_ready(pod),
        int(parse_time(meta.get("creationTimestamp")) or 0),
    )


class DeploymentController(Controller):
    name = "deployment-controller"
    watches = ("deployments", "pods", "nodes")
    resync = 10.0

    def __init__(self, store: Store, runtime: DeploymentRuntime):
        super().__init__(store)
        self.runtime = runtime

    def keys_for(self, event: Event) -> Iterable[Hashable]:
        meta = event.object["metadata"]
        plural = event.resource.plural
        if plural == "deployments":
            return [(meta["namespace"], meta["name"])]
        if plural == "pods":  # and its former owner, if it was released (relabeled)
            keys = self.owner_key(event.object, "Deployment")
            if event.old is not None:
                keys += [k for k in self.owner_key(event.old, "Deployment") if k not in keys]
            return keys
        # a node joined, left, recovered or was cordoned: a pod that fit nowhere may fit now
        if event.type == "MODIFIED" and _schedulable(event.object) == _schedulable(event.old):
            return []
        return self.all_keys()

    def all_keys(self) -> Iterable[Hashable]:
        return self.keys_of("deployments")

    def owned_pods(self, namespace: str, name: str) -> list[dict]:
        return self.controlled("pods", namespace, "Deployment", name)

    def reconcile(self, key: Hashable) -> float | None:
        namespace, name = key  # type: ignore[misc]
        try:
            deployment = self.store.get("deployments", namespace, name)
        except ApiError:  # deleted: its pods and history go with it (the garbage collector)
            self._collect(namespace, name)
            return None
        spec = deployment.get("spec") or {}
        replicas = int(spec.get("replicas", 1))
        try:
            compiled = self.runtime.compile_deployment(deployment)
        except NetlabError as exc:
            self._set_condition(deployment, "Progressing", "False", "InvalidTemplate", str(exc))
            return None
        revision = self._record_template(deployment, compiled.pod_hash)
        pods = [replica_of(p) for p in self.owned_pods(namespace, name)]
        change = step(replicas, parse_strategy(spec.get("strategy")), compiled.pod_hash, pods)
        if change.delete:
            self.runtime.delete_pods(namespace, change.delete)
        failure = None
        pending = [
            p["metadata"]["name"]
            for p in self.owned_pods(namespace, name)
            if unscheduled(p)
            and p["metadata"]["name"] not in change.delete
            and p["metadata"].get("labels", {}).get(HASH_LABEL) == compiled.pod_hash
        ]
        if change.create or pending:
            try:
                self.runtime.run_replicas(compiled, change.create, pending)
            except NetlabError as exc:  # Unschedulable: Pending pods say why; tried again
                failure = str(exc)
        pods = [replica_of(p) for p in self.owned_pods(namespace, name)]
        self._write_status(deployment, compiled.pod_hash, revision, pods, failure)
        self._sync_replicasets(deployment, compiled.pod_hash, pods)
        return UNSCHEDULABLE_RETRY if failure else None

    # -- status --------------------------------------------------------------------

    def _write_status(self, deployment, pod_hash, revision, pods, failure) -> None:
        meta, spec = deployment["metadata"], deployment.get("spec") or {}
        replicas = int(spec.get("replicas", 1))
        updated = [p for p in pods if p.template_hash == pod_hash]
        ready = sum(1 for p in pods if p.ready)
        done = complete(replicas, pod_hash, pods)
        available = ready >= replicas - parse_strategy(spec.get("strategy")).bounds(replicas)[1]
        conditions = [
            _condition(
                "Available",
                "True" if available else "False",
                "MinimumReplicasAvailable" if available else "MinimumReplicasUnavailable",
                "Deployment has minimum availability."
                if available
                else "Deployment does not have minimum availability.",
            ),
            _condition(
                "Progressing",
                "True",
                "NewReplicaSetAvailable" if done else "ReplicaSetUpdated",
                f'ReplicaSet "{meta["name"]}-{pod_hash}" '
                + ("has successfully progressed." if done else "is progressing."),
            ),
        ]
        if failure:
            conditions.append(_condition("ReplicaFailure", "True", "FailedCreate", failure))
        status = {
            "observedGeneration": meta.get("generation", 1),
            "replicas": len(pods),
            "updatedReplicas": len(updated),
            "readyReplicas": ready,
            "availableReplicas": ready,
            "unavailableReplicas": max(0, replicas - ready),
            "conditions": conditions,
        }
        if meta.get("annotations", {}).get(REVISION) != str(revision):
            self._annotate(deployment, revision)
        current = self.store.get("deployments", meta["namespace"], meta["name"])
        if current.get("status") != status:  # replace, not merge: old conditions go
            updated_obj = dict(current, status=status)
            self.store.update(updated_obj)

    def _annotate(self, deployment: dict, revision: int) -> None:
        current = self.store.get(
            "deployments", deployment["metadata"]["namespace"], deployment["metadata"]["name"]
        )
        current["metadata"]["annotations"][REVISION] = str(revision)
        self.store.update(current)  # a conflict raises: retried with the newer object

    def _set_condition(self, deployment, type_, status, reason, message) -> None:
        current = copy.deepcopy(deployment.get("status") or {})
        conditions = [c for c in current.get("conditions", []) if c.get("type") != type_]
        conditions.append(_condition(type_, status, reason, message))
        current["conditions"] = conditions
        self.store.update(dict(deployment, status=current))

    # -- history (ReplicaSets) --------------------------------------------------------

    def _replicasets(self, namespace: str, name: str) -> list[dict]:
        return self.controlled("replicasets", namespace, "Deployment", name)

    def _record_template(self, deployment: dict, pod_hash: str) -> int:
        """The revision of the current template: its ReplicaSet's, made (or brought back
        to the front of the history, as after an undo) if it is not the newest."""
        meta = deployment["metadata"]
        sets = self._replicasets(meta["namespace"], meta["name"])
        revisions = {rs["metadata"]["name"]: _revision(rs) for rs in sets}
        newest = max(revisions.values(), default=0)
        rs_name = f"{meta['name']}-{pod_hash}"
        if rs_name in revisions and revisions[rs_name] == newest:
            return newest
        revision = newest + 1
        template = copy.deepcopy((deployment.get("spec") or {}).get("template") or {})
        template.setdefault("metadata", {}).setdefault("labels", {})[HASH_LABEL] = pod_hash
        selector = copy.deepcopy((deployment.get("spec") or {}).get("selector") or {})
        selector.setdefault("matchLabels", {})[HASH_LABEL] = pod_hash
        self.store.apply(
            {
                "apiVersion": "apps/v1",
                "kind": "ReplicaSet",
                "metadata": {
                    "name": rs_name,
                    "namespace": meta["namespace"],
                    "labels": dict(template["metadata"]["labels"]),
                    "annotations": {REVISION: str(revision)},
                    "ownerReferences": [_owner_reference(deployment)],
                },
                "spec": {"replicas": 0, "selector": selector, "template": template},
                "status": {"replicas": 0},
            }
        )
        return revision

    def _sync_replicasets(self, deployment: dict, pod_hash: str, pods: list[Replica]) -> None:
        meta, spec = deployment["metadata"], deployment.get("spec") or {}
        sets = sorted(self._replicasets(meta["namespace"], meta["name"]), key=_revision)
        limit = spec.get("revisionHistoryLimit", HISTORY_LIMIT)
        idle_old = [
            rs
            for rs in sets
            if rs["metadata"]["labels"].get(HASH_LABEL) != pod_hash
            and not any(p.template_hash == rs["metadata"]["labels"].get(HASH_LABEL) for p in pods)
        ]
        for rs in idle_old[: max(0, len(idle_old) - limit)]:
            self.store.delete("replicasets", meta["namespace"], rs["metadata"]["name"])
            sets.remove(rs)
        for rs in sets:
            rs_hash = rs["metadata"]["labels"].get(HASH_LABEL)
            mine = [p for p in pods if p.template_hash == rs_hash]
            want = int(spec.get("replicas", 1)) if rs_hash == pod_hash else len(mine)
            ready = sum(1 for p in mine if p.ready)
            status = {"replicas": len(mine), "readyReplicas": ready, "availableReplicas": ready}
            if rs["spec"].get("replicas") != want or rs.get("status") != status:
                rs["spec"]["replicas"] = want
                rs["status"] = status
                self.store.apply(rs)

    def _collect(self, namespace: str, name: str) -> None:
        pods = [p["metadata"]["name"] for p in self.owned_pods(namespace, name)]
        if pods:
            self.runtime.delete_pods(namespace, pods)
        for rs in self._replicasets(namespace, name):
            try:
                self.store.delete("replicasets", namespace, rs["metadata"]["name"])
            except ApiError:
                pass


def _revision(rs: dict) -> int:
    try:
        return int(rs["metadata"].get("annotations", {}).get(REVISION, 0))
    except ValueError:
        return 0


def _owner_reference(deployment: dict) -> dict[str, Any]:
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "name": deployment["metadata"]["name"],
        "uid": deployment["metadata"].get("uid", ""),
        "controller": True,
        "blockOwnerDeletion": True,
    }


def _condition(type_: str, status: str, reason: str, message: str) -> dict[str, str]:
    return {"type": type_, "status": status, "reason": reason, "message": message}


def _schedulable(node: dict | None) -> tuple:
    if node is None:
        return ()
    ready = condition_status(node, "Ready")
    return (ready, bool((node.get("spec") or {}).get("unschedulable")))


def undo_target(replicasets: list[dict], current: int, to_revision: int | None) -> dict:
    """The ReplicaSet `rollout undo` goes back to: the given revision, or the newest
    one before the current; RolloutError (a NetlabError) if there is none."""
    by_revision = {_revision(rs): rs for rs in replicasets}
    if to_revision:
        if to_revision not in by_revision:
            known = ", ".join(str(r) for r in sorted(by_revision)) or "none"
            raise RolloutError(
                f"unable to find the specified revision {to_revision} (revisions: {known}); "
                "`netlab rollout history` lists them"
            )
        return by_revision[to_revision]
    older = [r for r in by_revision if r < current]
    if not older:
        raise RolloutError("no rollout history found: there is no previous revision to undo to")
    return by_revision[max(older)]


def template_of(replicaset: dict) -> dict:
    """A ReplicaSet's pod template as its Deployment wrote it (without the hash label)."""
    template = copy.deepcopy(replicaset["spec"]["template"])
    template.get("metadata", {}).get("labels", {}).pop(HASH_LABEL, None)
    return template
