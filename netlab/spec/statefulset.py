"""`kind: StatefulSet` (apps/v1): ordered pods with stable names and per-replica claims,
checked as kube-apiserver checks them.

Each entry of `volumeClaimTemplates` becomes one PersistentVolumeClaim per replica
(`<template>-<set>-<ordinal>`), read here lightly (`read_claim_template`: access modes,
the requested storage, the class); the storage part's reader can take its place.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from netlab.spec.model import PodTemplate, frozen_map
from netlab.spec.storage import ClaimSpec, read_claim_spec
from netlab.spec.validate import (
    DNS_LABEL_MAX,
    DNS_LABEL_RE,
    DNS_NAME_MAX,
    DNS_SUBDOMAIN_RE,
    Checker,
    item,
    join,
)

STATEFULSET_FIELDS = (
    "replicas",
    "selector",
    "serviceName",
    "template",
    "volumeClaimTemplates",
    "podManagementPolicy",
    "updateStrategy",
    "persistentVolumeClaimRetentionPolicy",
    "minReadySeconds",
    "revisionHistoryLimit",
)
# the set's name and `-<hash>` (up to 10 characters) are its controller-revision-hash
# label's value, at most 63 characters
STATEFULSET_NAME_MAX = 52
POD_MANAGEMENT_POLICIES = ("OrderedReady", "Parallel")
UPDATE_STRATEGIES = ("RollingUpdate", "OnDelete")
RETENTION_POLICIES = ("Retain", "Delete")
ACCESS_MODES = ("ReadWriteOnce", "ReadOnlyMany", "ReadWriteMany", "ReadWriteOncePod")
VOLUME_MODES = ("Filesystem", "Block")
CLAIM_FIELDS = ("apiVersion", "kind", "metadata", "spec", "status")
CLAIM_METADATA_FIELDS = ("name", "labels", "annotations", "namespace", "creationTimestamp")
CLAIM_SPEC_FIELDS = (
    "accessModes",
    "resources",
    "storageClassName",
    "volumeMode",
    "selector",
    "volumeName",
    "dataSource",
    "dataSourceRef",
    "volumeAttributesClassName",
)
HISTORY_LIMIT = 10  # revisionHistoryLimit's default


@dataclass(frozen=True)
class ClaimTemplate:
    """One of `volumeClaimTemplates`: the claim every replica gets (`spec` as written)."""

    name: str
    spec: MappingProxyType
    labels: MappingProxyType = field(default_factory=frozen_map)
    annotations: MappingProxyType = field(default_factory=frozen_map)
    claim: ClaimSpec | None = None  # the spec read (netlab.spec.storage), for its class check


@dataclass(frozen=True)
class StatefulSetSpec:
    name: str
    namespace: str
    replicas: int
    match_labels: MappingProxyType
    service_name: str | None  # the pods' subdomain (a headless Service of that name)
    template: PodTemplate
    claims: tuple[ClaimTemplate, ...] = ()
    pod_management: str = "OrderedReady"
    update_strategy: str = "RollingUpdate"
    partition: int = 0  # RollingUpdate: ordinals below it keep their revision
    when_deleted: str = "Retain"  # persistentVolumeClaimRetentionPolicy
    when_scaled: str = "Retain"
    min_ready_seconds: int = 0  # recorded
    revision_history_limit: int = HISTORY_LIMIT  # recorded
    labels: MappingProxyType = field(default_factory=frozen_map)
    manifest: dict[str, Any] = field(compare=False, hash=False, default_factory=dict)

    def claim_name(self, claim: str, ordinal: int) -> str:
        """`data-web-0`: the claim of template `claim` for the replica at `ordinal`."""
        return f"{claim}-{self.name}-{ordinal}"


def read_claim_template(value: Any, path: str, checker: Checker) -> ClaimTemplate | None:
    """One volumeClaimTemplates entry, checked lightly: a name, access modes Kubernetes
    knows, a storage request that is a quantity, a class name that is a string."""
    claim = checker.mapping(value, path, CLAIM_FIELDS, required=("metadata",))
    if claim is None:
        return None
    mpath = join(path, "metadata")
    meta = checker.mapping(claim.get("metadata"), mpath, CLAIM_METADATA_FIELDS, ["name"])
    if meta is None:
        return None
    name = meta.get("name")
    if name is not None:
        checker.name(name, join(mpath, "name"), "claim template name", DNS_LABEL_MAX, DNS_LABEL_RE)
    labels = checker.labels(meta, "labels", mpath)
    notes = checker.take(meta, "annotations", mpath, "mapping", default={}) or {}
    spath = join(path, "spec")
    if claim.get("spec") is None:
        checker.add(spath, "required field is missing", "add spec: {accessModes: [ReadWriteOnce], "
                    "resources: {requests: {storage: 1Gi}}}")  # fmt: skip
        return None
    before = len(checker.problems)
    wanted = read_claim_spec(claim["spec"], spath, checker)  # as a PersistentVolumeClaim's
    if not isinstance(name, str) or labels is None:
        return None
    if wanted is None or len(checker.problems) != before:  # refused; its name still mountable
        return ClaimTemplate(name, frozen_map({}), frozen_map(labels))
    written = dict(copy.deepcopy(claim["spec"]), volumeMode=wanted.volume_mode)
    return ClaimTemplate(
        name, frozen_map(written), frozen_map(labels), frozen_map(dict(notes)), wanted
    )


def _claims(spec: dict, path: str, checker: Checker, read=read_claim_template) -> list:
    entries = checker.take(spec, "volumeClaimTemplates", path, "list", default=[]) or []
    claims: list[ClaimTemplate] = []
    seen: dict[str, int] = {}
    for i, entry in enumerate(entries):
        here = item(join(path, "volumeClaimTemplates"), i)
        claim = read(entry, here, checker)
        if claim is None:
            continue
        if claim.name in seen:
            checker.add(
                join(here, "metadata.name"),
                f"Duplicate value: {claim.name!r} (volumeClaimTemplates[{seen[claim.name]}])",
                "give each claim template its own name",
            )
            continue
        seen[claim.name] = i
        claims.append(claim)
    return claims


def _update_strategy(spec: dict, path: str, checker: Checker) -> tuple[str | None, int | None]:
    here = join(path, "updateStrategy")
    strategy = checker.take(spec, "updateStrategy", path, "mapping", default={})
    if strategy is None or checker.mapping(strategy, here, ("type", "rollingUpdate")) is None:
        return None, None
    kind = checker.choice(strategy, "type", here, UPDATE_STRATEGIES, "RollingUpdate")
    rolling = strategy.get("rollingUpdate")
    if rolling is None:
        return kind, 0
    if kind == "OnDelete":
        checker.add(
            join(here, "rollingUpdate"),
            "Invalid value: only allowed for updateStrategy 'RollingUpdate'",
            "remove rollingUpdate, or use type: RollingUpdate",
        )
        return kind, None
    rpath = join(here, "rollingUpdate")
    if checker.mapping(rolling, rpath, ("partition", "maxUnavailable")) is None:
        return kind, None
    if rolling.get("maxUnavailable") not in (None, 1):
        checker.add(
            join(rpath, "maxUnavailable"),
            "the lab replaces a StatefulSet's pods one at a time (maxUnavailable is an "
            "alpha feature of Kubernetes)",
            "remove maxUnavailable (or write 1)",
        )
    partition = checker.int_in(rolling, "partition", rpath, 0, 2**31 - 1, 0)
    return kind, partition


def _retention(spec: dict, path: str, checker: Checker) -> tuple[str | None, str | None]:
    here = join(path, "persistentVolumeClaimRetentionPolicy")
    policy = checker.take(spec, "persistentVolumeClaimRetentionPolicy", path, "mapping", {})
    if policy is None or checker.mapping(policy, here, ("whenDeleted", "whenScaled")) is None:
        return None, None
    deleted = checker.choice(policy, "whenDeleted", here, RETENTION_POLICIES, "Retain")
    scaled = checker.choice(policy, "whenScaled", here, RETENTION_POLICIES, "Retain")
    return deleted, scaled


def read_statefulset(manifest, value: Any, checker: Checker) -> StatefulSetSpec | None:
    from netlab.spec import manifests  # which imports this module for its table of kinds

    path = manifest.prefix + "spec"
    spec = checker.mapping(value, path, STATEFULSET_FIELDS, required=("selector", "template"))
    if spec is None:
        return None
    replicas = manifests.read_replicas(spec, path, checker)
    service = checker.take(spec, "serviceName", path, "string")
    if service:
        checker.name(service, join(path, "serviceName"), "serviceName", DNS_LABEL_MAX, DNS_LABEL_RE)
    policy = checker.choice(
        spec, "podManagementPolicy", path, POD_MANAGEMENT_POLICIES, "OrderedReady"
    )
    strategy, partition = _update_strategy(spec, path, checker)
    when_deleted, when_scaled = _retention(spec, path, checker)
    min_ready = checker.int_in(spec, "minReadySeconds", path, 0, 2**31 - 1, 0)
    history = checker.int_in(spec, "revisionHistoryLimit", path, 0, 2**31 - 1, HISTORY_LIMIT)
    match = manifests.read_selector(spec, path, checker)
    claims = _claims(spec, path, checker)
    for claim in claims:  # the longest claim name there will be, at the highest ordinal
        longest = f"{claim.name}-{manifest.name}-{max(0, (replicas or 1) - 1)}"
        if len(longest) > DNS_NAME_MAX or not DNS_SUBDOMAIN_RE.fullmatch(longest):
            checker.add(
                path + ".volumeClaimTemplates",
                f"claim name {longest!r} would be longer than {DNS_NAME_MAX} characters",
                "use a shorter claim template or StatefulSet name",
            )
    template, labels = manifests.read_template(spec, path, checker, match)
    if template is None:
        return None
    tpath = join(path, "template")
    pod_spec = template.get("spec")
    policy_of_pod = pod_spec.get("restartPolicy", "Always") if isinstance(pod_spec, dict) else None
    if isinstance(pod_spec, dict) and policy_of_pod != "Always":
        checker.add(
            join(tpath, "spec.restartPolicy"),
            f'Unsupported value: "{policy_of_pod}": supported values: "Always"',
            "remove restartPolicy (Always is the default): a StatefulSet's pods run on",
        )
    pod = manifests.pod_template(
        pod_spec, join(tpath, "spec"), labels or {}, checker, claims=[c.name for c in claims]
    )
    if None in (pod, replicas, match, policy, strategy, partition, when_deleted, when_scaled):
        return None
    if None in (min_ready, history):
        return None
    return StatefulSetSpec(
        manifest.name,
        manifest.namespace,
        replicas,
        frozen_map(match),
        service or None,
        pod,
        tuple(claims),
        policy,
        strategy,
        partition,
        when_deleted,
        when_scaled,
        min_ready,
        history,
        frozen_map(manifest.labels),
        manifest.body,
    )
