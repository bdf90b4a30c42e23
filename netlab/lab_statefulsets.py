"""The Lab's side of StatefulSets: the set's desired state written to the store (a lab
file, `netlab apply`, the API), and what the StatefulSet controller acts through:
compile a stored set, place and start named pods of it, delete the set."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Sequence

from netlab import objects
from netlab.errors import ApiError, NotFound
from netlab.paths import socket_path
from netlab.plan import PodPlacer
from netlab.plan.scheduler import Unschedulable
from netlab.spec.load import parse_manifests
from netlab.spec.model import PodTemplate
from netlab.spec.statefulset import StatefulSetSpec
from netlab.statefulsets import KIND, pending_pod_object, statefulset_object
from netlab.system import inject


class StatefulSetSide:
    """Mixed into Lab: StatefulSets (the controller is controllers.statefulset)."""

    def _apply_statefulset(self, sts: StatefulSetSpec) -> dict:
        """Write the set's desired state; its controller makes the pods from there."""
        key = (sts.namespace, sts.name)
        try:
            stored = self.store.get("statefulsets", *key)
        except ApiError:
            stored = None
        wanted = statefulset_object(sts)
        if stored is not None and objects.manifest_of(stored) == objects.manifest_of(wanted):
            return _result(*key, "unchanged")
        self.store.apply(objects.namespace_object(sts.namespace))
        self._write_statefulset(sts)
        return _result(*key, "created" if stored is None else "configured")

    def _write_statefulset(self, sts: StatefulSetSpec) -> None:
        """The set's metadata and spec into the store, keeping the controller's status."""
        obj = statefulset_object(sts)
        try:
            stored = self.store.get("statefulsets", sts.namespace, sts.name)
        except ApiError:
            self.store.apply(obj)
            return
        obj["status"] = stored.get("status", {})
        self.store.apply(obj)

    def compile_statefulset(self, obj: dict) -> StatefulSetSpec:
        """A stored set, parsed and checked against the lab (SpecError says why not)."""
        manifest = objects.manifest_of(obj)
        text = json.dumps(manifest, sort_keys=True)
        key = (obj["metadata"]["namespace"], obj["metadata"]["name"])
        cache = self.compiled_statefulsets
        if key in cache and cache[key][0] == text:
            return cache[key][1]
        (sts,) = parse_manifests(text, self.spec, f"statefulset {key[1]}").statefulsets
        # the sidecar, when the template or its namespace asks for one (as a Deployment's)
        labels = self.namespace_labels.get(sts.namespace, {})
        template = inject(sts.template, labels, self.spec, socket_path(self.run_dir))
        sts = dataclasses.replace(sts, template=template)
        cache[key] = (text, sts)
        return sts

    def run_named_pods(
        self, namespace: str, owner: str, pods: Sequence[tuple[str, PodTemplate]]
    ) -> None:
        """Place and start these pods of the StatefulSet `owner` (a pod of that name
        still being torn down is left for the next pass). Those that fit nowhere are
        written to the store as Pending with the scheduler's reason; Unschedulable
        says so."""
        with self.lock:
            if self.stopping or not pods:
                return
            try:  # deleted while its controller was deciding: start nothing for it
                self.store.get("statefulsets", namespace, owner)
            except ApiError:
                return
            excluded: dict[str, int] = {}
            try:
                nodes, nowhere = self.schedulable_nodes(pods[0][1], excluded, namespace), None
            except Unschedulable as exc:
                nodes, nowhere = [], exc
            placer = PodPlacer(
                self.spec.name, nodes, [rt.plan for rt in self.pods.values()], self.last_pod_address
            )
            placer.excluded = excluded
            created, full = [], None
            taken: set[str] = set()  # ReadWriteOncePod claims a pod of this batch has
            for name, template in pods:
                if (namespace, name) in self.pods:
                    continue
                try:
                    if nowhere is not None:
                        raise nowhere
                    once = self.check_claims_free(template, namespace, taken=taken)
                    plan = placer.add_owned(name, namespace, template, owner, KIND)
                    taken |= once
                except Unschedulable as exc:
                    full = exc
                    self.store.apply(pending_pod_object(namespace, name, template, owner, str(exc)))
                    self.events.pod(
                        namespace, name, "FailedScheduling", exc.scheduler_message,
                        "default-scheduler", "Warning",
                    )  # fmt: skip
                    continue
                try:  # it fits now: the Pending object gives way to the pod
                    self.store.delete("pods", namespace, name)
                except ApiError:
                    pass
                created.append(plan)
            if created:
                self._run_pods(created)
            if full is not None:
                raise full

    def delete_statefulset(self, name: str, namespace: str = "default") -> dict:
        """Delete a StatefulSet; its controller removes its pods (its claims stay,
        unless its retention policy says Delete)."""
        with self.lock:
            try:
                return self.store.delete("statefulsets", namespace, name)
            except ApiError as exc:
                raise NotFound(f"no statefulset {namespace}/{name}") from exc


def _result(namespace: str, name: str, action: str) -> dict:
    return {"kind": KIND, "namespace": namespace, "name": name, "action": action}
