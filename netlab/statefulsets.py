"""A StatefulSet's objects as Kubernetes writes them: the set with kube-apiserver's
defaults, each replica's pod template (`web-0`: its hostname, subdomain, labels and
claim volumes), each replica's PersistentVolumeClaims and the ControllerRevisions
that record the set's templates. Pure: the controller and the lab store what this
returns."""

from __future__ import annotations

import copy
import dataclasses
import json
import re
from typing import Any

from netlab.objects import unschedulable_pod_object
from netlab.plan.scheduler import template_hash
from netlab.spec.model import PodTemplate, frozen_map
from netlab.spec.statefulset import ClaimTemplate, StatefulSetSpec
from netlab.spec.volumes import ClaimSource, VolumeSpec

POD_NAME_LABEL = "statefulset.kubernetes.io/pod-name"
POD_INDEX_LABEL = "apps.kubernetes.io/pod-index"
REVISION_LABEL = "controller-revision-hash"
KIND = "StatefulSet"
API_VERSION = "apps/v1"


def ordinal_of(set_name: str, pod_name: str) -> int | None:
    """`web-3` of set `web` -> 3; None if the name is not one of the set's."""
    match = re.fullmatch(re.escape(set_name) + r"-(0|[1-9][0-9]*)", pod_name)
    return int(match[1]) if match else None


def pod_name(set_name: str, ordinal: int) -> str:
    return f"{set_name}-{ordinal}"


def revision_name(obj: dict) -> str:
    """`web-6c9f7b5d8x`: the name of the ControllerRevision of the set's template, also
    its pods' controller-revision-hash label."""
    template = (obj.get("spec") or {}).get("template") or {}
    return f"{obj['metadata']['name']}-{template_hash(template)}"


def owner_reference(obj: dict, controller: bool = True) -> dict[str, Any]:
    ref: dict[str, Any] = {
        "apiVersion": API_VERSION,
        "kind": KIND,
        "name": obj["metadata"]["name"],
        "uid": obj["metadata"].get("uid", ""),
    }
    if controller:
        ref.update(controller=True, blockOwnerDeletion=True)
    return ref


def statefulset_object(spec: StatefulSetSpec) -> dict[str, Any]:
    """The set as written, with the defaults kube-apiserver fills in (kubectl rollout
    status reads updateStrategy; the controller reads the rest)."""
    manifest = json.loads(json.dumps(spec.manifest)) if spec.manifest else {}
    metadata = manifest.get("metadata", {})
    metadata.setdefault("name", spec.name)
    metadata["namespace"] = spec.namespace
    body = manifest.get("spec", {})
    body["replicas"] = spec.replicas
    body.setdefault("podManagementPolicy", spec.pod_management)
    strategy = body.setdefault("updateStrategy", {})
    strategy.setdefault("type", spec.update_strategy)
    if spec.update_strategy == "RollingUpdate":
        strategy.setdefault("rollingUpdate", {}).setdefault("partition", spec.partition)
    body.setdefault("revisionHistoryLimit", spec.revision_history_limit)
    body.setdefault(
        "persistentVolumeClaimRetentionPolicy",
        {"whenDeleted": spec.when_deleted, "whenScaled": spec.when_scaled},
    )
    if spec.min_ready_seconds:
        body.setdefault("minReadySeconds", spec.min_ready_seconds)
    for claim in body.get("volumeClaimTemplates") or ():
        claim.setdefault("apiVersion", "v1")
        claim.setdefault("kind", "PersistentVolumeClaim")
        claim.setdefault("spec", {}).setdefault("volumeMode", "Filesystem")
    status = {"replicas": 0, "availableReplicas": 0}  # required fields, as a new set has them
    return {
        "apiVersion": API_VERSION,
        "kind": KIND,
        "metadata": metadata,
        "spec": body,
        "status": status,
    }


def member_template(spec: StatefulSetSpec, ordinal: int, revision: str) -> PodTemplate:
    """The pod at `ordinal`: named and hostnamed `<set>-<ordinal>`, in the subdomain of
    the set's Service, labeled as the statefulset controller labels it, and each
    volume of a claim template (added, or in place of the template's volume of that
    name) its own claim, `<template>-<set>-<ordinal>`."""
    template = spec.template
    name = pod_name(spec.name, ordinal)
    labels = dict(template.labels)
    labels.update({REVISION_LABEL: revision, POD_NAME_LABEL: name, POD_INDEX_LABEL: str(ordinal)})
    recorded = dict(template.recorded, hostname=name)
    if spec.service_name:
        recorded["subdomain"] = spec.service_name
    claims = {
        c.name: VolumeSpec(c.name, ClaimSource(spec.claim_name(c.name, ordinal)))
        for c in spec.claims
    }
    volumes = [claims.pop(v.name, v) for v in template.volumes]
    volumes += [claims[c.name] for c in spec.claims if c.name in claims]
    return dataclasses.replace(
        template,
        labels=frozen_map(labels),
        recorded=frozen_map(recorded),
        hostname=name,
        subdomain=spec.service_name,
        volumes=tuple(volumes),
    )


def claim_object(
    set_obj: dict, spec: StatefulSetSpec, claim: ClaimTemplate, ordinal: int
) -> dict[str, Any]:
    """A replica's claim, as the controller creates it: the template's labels and the
    set's selector, no owner while both retention policies are Retain (with
    whenDeleted: Delete the set owns it, and goes with it)."""
    labels = dict(claim.labels)
    labels.update(spec.match_labels)
    metadata: dict[str, Any] = {
        "name": spec.claim_name(claim.name, ordinal),
        "namespace": spec.namespace,
        "labels": labels,
    }
    if claim.annotations:
        metadata["annotations"] = dict(claim.annotations)
    if spec.when_deleted == "Delete":
        metadata["ownerReferences"] = [owner_reference(set_obj, controller=False)]
    body = copy.deepcopy(dict(claim.spec))
    body.setdefault("volumeMode", "Filesystem")
    return {
        "apiVersion": "v1",
        "kind": "PersistentVolumeClaim",
        "metadata": metadata,
        "spec": body,
        "status": {"phase": "Pending"},
    }


def revision_object(set_obj: dict, name: str, number: int) -> dict[str, Any]:
    """The ControllerRevision of the set's template (`kubectl rollout history sts`)."""
    spec = set_obj.get("spec") or {}
    template = copy.deepcopy(spec.get("template") or {})
    labels = dict((spec.get("selector") or {}).get("matchLabels") or {})
    labels[REVISION_LABEL] = name
    return {
        "apiVersion": API_VERSION,
        "kind": "ControllerRevision",
        "metadata": {
            "name": name,
            "namespace": set_obj["metadata"]["namespace"],
            "labels": labels,
            "ownerReferences": [owner_reference(set_obj)],
        },
        "data": {"spec": {"template": dict(template, **{"$patch": "replace"})}},
        "revision": number,
    }


def template_of_revision(revision: dict) -> dict:
    """The pod template a ControllerRevision recorded."""
    template = copy.deepcopy(((revision.get("data") or {}).get("spec") or {}).get("template"))
    template.pop("$patch", None)
    return template


def pending_pod_object(
    namespace: str, name: str, template: PodTemplate, owner: str, message: str
) -> dict[str, Any]:
    """A replica that fits on no node, Pending until a node has room (its template's
    recorded fields kept, as the pods of the set show them)."""
    ref = {"apiVersion": API_VERSION, "kind": KIND, "name": owner}
    obj = unschedulable_pod_object(namespace, name, template, template.labels, ref, message)
    obj["spec"].update(template.recorded)
    return obj
