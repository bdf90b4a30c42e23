"""`netlab scale` and `netlab rollout status|history|undo`: kubectl's verbs, over the lab API."""

from __future__ import annotations

import time
from typing import Any

from netlab.client import LabClient
from netlab.controllers.deployment import (
    HASH_LABEL,
    REVISION,
    owner_of,
    template_of,
    undo_target,
)
from netlab.errors import NetlabError


def split_target(target: str, name: str | None = None) -> str:
    """`deployment/web`, `deploy/web` or (`deployment`, `web`): the Deployment's name."""
    kind, _, rest = target.partition("/")
    if not rest:
        kind, rest = target, name or ""
    if kind not in ("deployment", "deployments", "deploy"):
        raise NetlabError(f"{target!r}: netlab rolls out Deployments: write deployment/NAME")
    if not rest:
        raise NetlabError("which Deployment? write deployment/NAME")
    return rest


SCALABLE = {  # what `netlab scale` takes, as kubectl names it: plural, kubectl's word
    "deployment": ("deployments", "deployment"),
    "deployments": ("deployments", "deployment"),
    "deploy": ("deployments", "deployment"),
    "statefulset": ("statefulsets", "statefulset"),
    "statefulsets": ("statefulsets", "statefulset"),
    "sts": ("statefulsets", "statefulset"),
}


def scale(client: LabClient, target: str, replicas: int, namespace: str) -> str:
    """`deployment/NAME` or `statefulset/NAME` (`sts/NAME`) to `replicas`, through the
    scale subresource, as kubectl scales them."""
    kind, _, name = target.partition("/")
    if kind not in SCALABLE or not name:
        raise NetlabError(
            f"{target!r}: netlab scales Deployments and StatefulSets: write deployment/NAME "
            "or statefulset/NAME"
        )
    if replicas < 0:
        raise NetlabError(f"--replicas must be 0 or more, got {replicas}")
    plural, word = SCALABLE[kind]
    client.patch(plural, name, {"spec": {"replicas": replicas}}, namespace, subresource="scale")
    return f"{word}.apps/{name} scaled"


def rollout_state(deployment: dict[str, Any]) -> tuple[bool, str]:
    """(done, what kubectl's `rollout status` would print now)."""
    meta, spec, status = (
        deployment["metadata"],
        deployment.get("spec") or {},
        deployment.get("status") or {},
    )
    name, replicas = meta["name"], spec.get("replicas", 1)
    if status.get("observedGeneration", 0) < meta.get("generation", 1):
        return False, "Waiting for deployment spec update to be observed..."
    for condition in status.get("conditions") or ():
        if condition.get("type") == "ReplicaFailure" and condition.get("status") == "True":
            return False, f'Waiting for deployment "{name}" rollout: {condition.get("message")}'
    updated = status.get("updatedReplicas", 0)
    total = status.get("replicas", 0)
    available = status.get("availableReplicas", 0)
    if updated < replicas:
        return False, (
            f'Waiting for deployment "{name}" rollout to finish: {updated} out of {replicas} '
            "new replicas have been updated..."
        )
    if total > updated:
        return False, (
            f'Waiting for deployment "{name}" rollout to finish: {total - updated} old '
            "replicas are pending termination..."
        )
    if available < updated:
        return False, (
            f'Waiting for deployment "{name}" rollout to finish: {available} of {updated} '
            "updated replicas are available..."
        )
    return True, f'deployment "{name}" successfully rolled out'


def status(client: LabClient, name: str, namespace: str, timeout: float, watch: bool = True) -> int:
    """Print progress lines until the rollout is done (0) or `timeout` passes (1)."""
    deadline = time.monotonic() + timeout
    last = None
    while True:
        done, line = rollout_state(client.get("deployments", name, namespace))
        if line != last:
            print(line, flush=True)
            last = line
        if done:
            return 0
        if not watch:
            return 1
        if time.monotonic() > deadline:
            raise NetlabError(f"timed out waiting for the rollout of {name} after {timeout:g} s")
        time.sleep(0.1)


def _replicasets(client: LabClient, name: str, namespace: str) -> list[dict]:
    items = client.list("replicasets", namespace)["items"]
    return [rs for rs in items if owner_of(rs) == name]


def history(client: LabClient, name: str, namespace: str) -> str:
    sets = _replicasets(client, name, namespace)
    lines = [f"deployment.apps/{name}", "REVISION  TEMPLATE-HASH  CHANGE"]
    rows = []
    for rs in sets:
        revision = int(rs["metadata"].get("annotations", {}).get(REVISION, 0))
        labels = rs["spec"]["template"].get("metadata", {}).get("labels", {})
        shown = ",".join(f"{k}={v}" for k, v in sorted(labels.items()) if k != HASH_LABEL)
        rows.append((revision, rs["metadata"]["labels"].get(HASH_LABEL, ""), shown))
    for revision, pod_hash, shown in sorted(rows):
        lines.append(f"{revision:<9} {pod_hash:<14} {shown}")
    return "\n".join(lines)


def undo(client: LabClient, name: str, namespace: str, to_revision: int | None) -> str:
    deployment = client.get("deployments", name, namespace)
    current = int(deployment["metadata"].get("annotations", {}).get(REVISION, 0) or 0)
    target = undo_target(_replicasets(client, name, namespace), current, to_revision)
    template = template_of(target)
    if template == (deployment.get("spec") or {}).get("template"):
        return f"deployment.apps/{name} skipped rollback (current template already matches revision {to_revision or current})"
    ops = [
        {
            "op": "test",
            "path": "/metadata/resourceVersion",
            "value": deployment["metadata"]["resourceVersion"],
        },
        {"op": "replace", "path": "/spec/template", "value": template},
    ]
    client.patch("deployments", name, ops, namespace, patch_type="application/json-patch+json")
    return f"deployment.apps/{name} rolled back"
