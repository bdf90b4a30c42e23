"""The StatefulSet controller: pods with stable names (`web-0`, `web-1`, ...), started
in order and stopped in reverse, each with its own claims, as kube-controller-manager's
statefulset controller keeps them.

OrderedReady (the default): ordinal i+1 is created only once 0..i are Running and
Ready; a scale-down removes the highest ordinal first, one at a time, each gone before
the next, and only while the rest are Ready. Parallel: all at once. A missing pod is
made again with its name (and, having the same claims, its own disk). For each
volumeClaimTemplate a claim `<template>-<set>-<ordinal>` is created before its pod if
missing, and kept on scale-down and on the set's deletion unless
persistentVolumeClaimRetentionPolicy says Delete. A changed template is rolled out
(RollingUpdate) from the highest ordinal down to `partition`, one pod at a time, each
Ready before the next; OnDelete leaves old pods until someone deletes them. Each
template is recorded as a ControllerRevision, and the set's status is written as
Kubernetes writes it (kubectl rollout status reads it).

It reads the store and acts through the lab's runtime (`StatefulSetRuntime`), never
the kernel.
"""

from __future__ import annotations

import copy
from collections.abc import Hashable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from netlab.controllers.base import Controller
from netlab.controllers.persistentvolume import PVC_PROTECTION, default_class
from netlab.errors import ApiError, NetlabError
from netlab.events import EventRecorder
from netlab.objects import condition_status, controller_of, unscheduled
from netlab.spec.model import PodTemplate
from netlab.spec.statefulset import StatefulSetSpec
from netlab.statefulsets import (
    KIND,
    REVISION_LABEL,
    claim_object,
    member_template,
    ordinal_of,
    pod_name,
    revision_name,
    revision_object,
    template_of_revision,
)
from netlab.store import Event, Store

COMPONENT = "statefulset-controller"
RETRY = 1.0  # seconds: a pod that fit nowhere may fit now


class StatefulSetRuntime(Protocol):
    """What the controller asks of the lab."""

    def compile_statefulset(self, obj: dict) -> StatefulSetSpec:
        """The stored set, validated against the lab; NetlabError if it cannot run."""
        ...

    def run_named_pods(
        self, namespace: str, owner: str, pods: Sequence[tuple[str, PodTemplate]]
    ) -> None:
        """Place and start these pods (name, template) of the StatefulSet `owner`; one
        that fits nowhere is Pending in the store, and Unschedulable says so."""
        ...

    def delete_pods(self, namespace: str, names: Sequence[str]) -> None:
        """Stop these pods (out of the endpoints first) and remove them."""
        ...


@dataclass(frozen=True)
class Member:
    """One pod of the set, as the controller sees it in the store."""

    ordinal: int
    name: str
    revision: str = ""
    ready: bool = False  # Running and Ready
    terminating: bool = False
    scheduled: bool = True  # False: Pending, in the store only (it fit on no node)
    failed: bool = False


@dataclass
class Step:
    """What to do now: create these ordinals, delete these pods."""

    create: list[int] = field(default_factory=list)
    delete: list[str] = field(default_factory=list)


def step(
    replicas: int,
    members: Sequence[Member],
    update_revision: str,
    parallel: bool = False,
    rolling: bool = True,
    partition: int = 0,
) -> Step:
    """One pass of the controller's rules over the set's pods (pure)."""
    by_ordinal = {m.ordinal: m for m in members}
    out = Step()
    for ordinal in range(replicas):  # the replicas, lowest first
        member = by_ordinal.get(ordinal)
        if member is None:
            out.create.append(ordinal)
            if not parallel:
                return out
            continue
        if member.failed and not member.terminating:  # made again once it is gone
            out.delete.append(member.name)
            if not parallel:
                return out
            continue
        if not parallel and (member.terminating or not member.ready):
            return out  # the next waits for this one
    condemned = sorted((m for m in members if m.ordinal >= replicas), key=lambda m: -m.ordinal)
    for member in condemned:  # highest first
        if member.terminating:
            if not parallel:
                return out
            continue
        out.delete.append(member.name)
        if not parallel:
            return out
    if out.create or condemned or not rolling:
        return out
    for ordinal in range(replicas - 1, partition - 1, -1):  # highest first, one at a time
        member = by_ordinal[ordinal]
        if member.revision != update_revision and not member.terminating:
            out.delete.append(member.name)
            return out
        if member.terminating or not member.ready:
            return out
    return out


def member_of(set_name: str, pod: dict) -> Member | None:
    meta = pod["metadata"]
    ordinal = ordinal_of(set_name, meta["name"])
    if ordinal is None:
        return None
    status = pod.get("status") or {}
    return Member(
        ordinal,
        meta["name"],
        (meta.get("labels") or {}).get(REVISION_LABEL, ""),
        status.get("phase") == "Running" and condition_status(pod, "Ready") == "True",
        bool(meta.get("deletionTimestamp")),
        not unscheduled(pod),
        status.get("phase") == "Failed",
    )


class StatefulSetController(Controller):
    name = COMPONENT
    watches = ("statefulsets", "pods", "nodes")
    resync = 10.0

    def __init__(
        self, store: Store, runtime: StatefulSetRuntime, events: EventRecorder | None = None
    ):
        super().__init__(store)
        self.runtime, self.events = runtime, events

    def keys_for(self, event: Event) -> Iterable[Hashable]:
        meta = event.object["metadata"]
        plural = event.resource.plural
        if plural == "statefulsets":
            return [(meta["namespace"], meta["name"])]
        if plural == "pods":
            return self.owner_key(event.object, KIND)
        if event.type == "MODIFIED":  # a node's heartbeat: nothing new to place
            return []
        return self.all_keys()  # a node joined or left: a Pending pod may fit now

    def all_keys(self) -> Iterable[Hashable]:
        return self.keys_of("statefulsets")

    def _pods(self, namespace: str, name: str) -> list[dict]:
        return self.controlled("pods", namespace, KIND, name)

    def _record(self, obj: dict, reason: str, message: str, type_: str = "Normal") -> None:
        if self.events is None:
            return
        meta = obj["metadata"]
        self.events.record(
            KIND, meta["namespace"], meta["name"], meta.get("uid", ""), reason, message,
            COMPONENT, type_, api_version="apps/v1",
        )  # fmt: skip

    # -- reconcile ------------------------------------------------------------------

    def reconcile(self, key: Hashable) -> float | None:
        namespace, name = key  # type: ignore[misc]
        try:
            obj = self.store.get("statefulsets", namespace, name)
        except ApiError:  # deleted: the garbage collector's part
            self._collect(namespace, name)
            return None
        try:
            spec = self.runtime.compile_statefulset(obj)
        except NetlabError as exc:
            self._record(obj, "FailedCreate", str(exc), "Warning")
            return None
        update = revision_name(obj)
        current = self._revisions(obj, update)
        members = [m for p in self._pods(namespace, name) if (m := member_of(name, p))]
        change = step(
            spec.replicas,
            members,
            update,
            spec.pod_management == "Parallel",
            spec.update_strategy == "RollingUpdate",
            spec.partition,
        )
        if change.delete:
            self.runtime.delete_pods(namespace, change.delete)
            for pod in change.delete:
                self._record(
                    obj, "SuccessfulDelete", f"delete Pod {pod} in StatefulSet {name} successful"
                )
        retry = None
        pending = [m.ordinal for m in members if not m.scheduled and m.ordinal < spec.replicas]
        if change.create or pending:
            retry = self._create(obj, spec, sorted({*change.create, *pending}), current, update)
        self._release_claims(spec, namespace)
        self._write_status(obj, spec, current, update)
        return retry

    def _create(self, obj, spec, ordinals, current: str, update: str) -> float | None:
        """Claims first, then the pods; a pod below the partition keeps the current
        revision's template."""
        name, namespace = spec.name, spec.namespace
        before = {p["metadata"]["name"] for p in self._pods(namespace, name) if not unscheduled(p)}
        old = None
        if current != update and spec.update_strategy == "RollingUpdate":
            old = self._compiled_revision(obj, current)
        pods = []
        for ordinal in ordinals:
            self._claims(obj, spec, ordinal)
            use_old = old is not None and ordinal < spec.partition
            chosen, revision = (old, current) if use_old else (spec, update)
            pods.append((pod_name(name, ordinal), member_template(chosen, ordinal, revision)))
        failure = None
        try:
            self.runtime.run_named_pods(namespace, name, pods)
        except NetlabError as exc:
            failure = str(exc)
        after = {p["metadata"]["name"] for p in self._pods(namespace, name) if not unscheduled(p)}
        for pod, _ in pods:
            if pod in after and pod not in before:
                self._record(
                    obj, "SuccessfulCreate", f"create Pod {pod} in StatefulSet {name} successful"
                )
            elif failure is not None:
                self._record(
                    obj, "FailedCreate",
                    f"create Pod {pod} in StatefulSet {name} failed error: {failure}", "Warning",
                )  # fmt: skip
        return RETRY if failure is not None else None

    def _compiled_revision(self, obj: dict, revision: str) -> StatefulSetSpec | None:
        meta = obj["metadata"]
        try:
            stored = self.store.get("controllerrevisions", meta["namespace"], revision)
        except ApiError:
            return None
        old = copy.deepcopy(obj)
        old["spec"]["template"] = template_of_revision(stored)
        try:
            return self.runtime.compile_statefulset(old)
        except NetlabError:
            return None

    # -- claims ---------------------------------------------------------------------

    def _claims(self, obj: dict, spec: StatefulSetSpec, ordinal: int) -> None:
        for claim in spec.claims:
            wanted = claim_object(obj, spec, claim, ordinal)
            claim_name = wanted["metadata"]["name"]
            try:
                self.store.get("persistentvolumeclaims", spec.namespace, claim_name)
                continue
            except ApiError:
                pass
            self.store.create(_admitted(self.store, wanted))
            self._record(
                obj, "SuccessfulCreate",
                f"create Claim {claim_name} Pod {pod_name(spec.name, ordinal)} "
                f"in StatefulSet {spec.name} success",
            )  # fmt: skip

    def _claims_of(self, spec: StatefulSetSpec, namespace: str) -> list[tuple[int, str]]:
        """(ordinal, name) of the set's claims in the store."""
        found = []
        for pvc in self.store.list("persistentvolumeclaims", namespace)[0]:
            pvc_name = pvc["metadata"]["name"]
            for claim in spec.claims:
                prefix = f"{claim.name}-"
                if pvc_name.startswith(prefix):
                    ordinal = ordinal_of(spec.name, pvc_name[len(prefix) :])
                    if ordinal is not None:
                        found.append((ordinal, pvc_name))
        return found

    def _release_claims(self, spec: StatefulSetSpec, namespace: str) -> None:
        """whenScaled: Delete: a scaled-down replica's claims go once its pod has."""
        if spec.when_scaled != "Delete":
            return
        alive = {
            ordinal_of(spec.name, p["metadata"]["name"]) for p in self._pods(namespace, spec.name)
        }
        for ordinal, claim in self._claims_of(spec, namespace):
            if ordinal >= spec.replicas and ordinal not in alive:
                self._delete_quietly("persistentvolumeclaims", namespace, claim)

    # -- revisions and status -------------------------------------------------------------

    def _revisions(self, obj: dict, update: str) -> str:
        """Record the template as a ControllerRevision (numbered after the newest);
        the current revision: the status', or the update one for a new set."""
        meta = obj["metadata"]
        namespace = meta["namespace"]
        revisions = self.controlled("controllerrevisions", namespace, KIND, meta["name"])
        numbers = {r["metadata"]["name"]: int(r.get("revision") or 0) for r in revisions}
        newest = max(numbers.values(), default=0)
        if update not in numbers or numbers[update] != newest:
            self.store.apply(revision_object(obj, update, newest + 1))
            numbers[update] = newest + 1
        current = (obj.get("status") or {}).get("currentRevision")
        if current not in numbers:
            current = update
        limit = int((obj.get("spec") or {}).get("revisionHistoryLimit", 10))
        pods = self._pods(namespace, meta["name"])
        live = {(p["metadata"].get("labels") or {}).get(REVISION_LABEL) for p in pods}
        idle = sorted(
            (n for n in numbers if n not in (update, current) and n not in live),
            key=lambda n: numbers[n],
        )
        for old in idle[: max(0, len(idle) - limit)]:
            self._delete_quietly("controllerrevisions", namespace, old)
        return current

    def _write_status(self, obj: dict, spec: StatefulSetSpec, current: str, update: str) -> None:
        meta = obj["metadata"]
        pods = self._pods(meta["namespace"], meta["name"])
        members = [m for p in pods if (m := member_of(meta["name"], p))]
        live = [m for m in members if not m.terminating]
        ready = sum(1 for m in members if m.ready)
        status = {
            "observedGeneration": meta.get("generation", 1),
            "replicas": len(members),
            "readyReplicas": ready,
            "currentReplicas": sum(1 for m in live if m.revision == current),
            "updatedReplicas": sum(1 for m in live if m.revision == update),
            "availableReplicas": ready,
            "currentRevision": current,
            "updateRevision": update,
            "collisionCount": 0,
        }
        if status["updatedReplicas"] == status["replicas"] == ready:  # the rollout is done
            status["currentRevision"], status["currentReplicas"] = update, status["updatedReplicas"]
        try:
            latest = self.store.get("statefulsets", meta["namespace"], meta["name"])
        except ApiError:
            return
        if latest.get("status") != status:
            self.store.update(dict(latest, status=status))  # a conflict: reconciled again

    # -- deletion -------------------------------------------------------------------------

    def _collect(self, namespace: str, name: str) -> None:
        """The set is gone: its pods go; its claims stay unless whenDeleted is Delete
        (then the set owned them); its revisions go."""
        pods = [p["metadata"]["name"] for p in self._pods(namespace, name)]
        if pods:
            self.runtime.delete_pods(namespace, pods)
        for pvc in self.store.list("persistentvolumeclaims", namespace)[0]:
            refs = pvc["metadata"].get("ownerReferences") or ()
            if any(r.get("kind") == KIND and r.get("name") == name for r in refs):
                self._delete_quietly("persistentvolumeclaims", namespace, pvc["metadata"]["name"])
        for rev in self.controlled("controllerrevisions", namespace, KIND, name):
            self._delete_quietly("controllerrevisions", namespace, rev["metadata"]["name"])

    def _delete_quietly(self, plural: str, namespace: str, name: str) -> None:
        try:
            self.store.delete(plural, namespace, name)
        except ApiError:
            pass


def owner_of(pod: dict) -> str | None:
    """The StatefulSet that controls a pod, if one does."""
    return controller_of(pod, KIND)


def _admitted(store: Store, claim: dict) -> dict:
    """A new claim as kube-apiserver's admission leaves it: the default StorageClass if
    it names none, volumeMode Filesystem, the pvc-protection finalizer, Pending."""
    spec = claim.setdefault("spec", {})
    spec.setdefault("volumeMode", "Filesystem")
    if "storageClassName" not in spec:
        chosen = default_class(store)
        if chosen is not None:
            spec["storageClassName"] = chosen
    claim["metadata"].setdefault("finalizers", [PVC_PROTECTION])
    claim["status"] = {"phase": "Pending"}
    return claim
