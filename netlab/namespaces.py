"""Deleting a namespace, as Kubernetes' namespace controller does: the namespace is
marked Terminating at once (new content in it is refused), then everything it holds
is deleted (workloads, Services, mesh policy, bare pods, events, ConfigMaps and
Secrets), and then the namespace itself. The lab's own namespaces cannot be deleted."""

from __future__ import annotations

import logging
import time
from typing import Any

from netlab import objects
from netlab.errors import ApiError, NotFound
from netlab.lab_storage import mark_deleting
from netlab.resources import MESH_RESOURCES

log = logging.getLogger(__name__)

PROTECTED = ("default", "kube-system", "kube-public", "kube-node-lease")


def forbidden(name: str) -> ApiError:
    return ApiError(
        403,
        f'namespaces "{name}" is forbidden: this namespace may not be deleted',
        "Forbidden",
    )


def terminating(store: Any, name: str) -> bool:
    """The namespace is being deleted (new objects in it are refused)."""
    try:
        return bool(store.get("namespaces", None, name)["metadata"].get("deletionTimestamp"))
    except ApiError:
        return False


def refuse_new_content(name: str) -> ApiError:
    return ApiError(
        403,
        f'namespaces "{name}" is forbidden: unable to create new content in namespace {name} '
        "because it is being terminated",
        "Forbidden",
    )


def mark_terminating(store: Any, name: str) -> dict:
    """The namespace, Terminating (as `kubectl delete ns` first sees it); 403 for the
    lab's own namespaces."""
    if name in PROTECTED:
        raise forbidden(name)
    current = store.get("namespaces", None, name)
    if current["metadata"].get("deletionTimestamp"):
        return current
    current["metadata"]["deletionTimestamp"] = objects.now()
    current["status"] = {"phase": "Terminating"}
    return store.update(current)


EMPTY_WAIT = 30.0  # seconds the namespace waits for its last objects to go
CONFIG_DATA = ("configmaps", "secrets")
KINDS = (
    "deployments", "statefulsets", "jobs", "services", *MESH_RESOURCES, "pods", "replicasets",
    "controllerrevisions", "events", *CONFIG_DATA, "persistentvolumeclaims",
)  # fmt: skip


def empty_and_delete(lab: Any, name: str) -> None:
    """Delete what the namespace holds, through the lab (pods stop, rules go), again
    while controllers still finish what they were doing (a pod started just before its
    Deployment went), then the namespace. Runs on a worker thread after the API answered."""
    deadline = time.monotonic() + EMPTY_WAIT
    while True:
        _empty(lab, name)
        if not any(lab.store.list(plural, name)[0] for plural in KINDS):
            break
        if time.monotonic() > deadline:
            log.warning("namespace %s: objects remain after %.0f s; deleting it", name, EMPTY_WAIT)
            break
        time.sleep(0.2)
    lab.namespace_labels.pop(name, None)
    _quietly(lab.store.delete, "namespaces", None, name)


def _empty(lab: Any, name: str) -> None:
    store = lab.store
    for dep in store.list("deployments", name)[0]:
        _quietly(lab.delete_deployment, dep["metadata"]["name"], name)
    for job in store.list("jobs", name)[0]:
        _quietly(lab.delete_job, job["metadata"]["name"], name)
    for sts in store.list("statefulsets", name)[0]:
        _quietly(lab.delete_statefulset, sts["metadata"]["name"], name)
    for svc in store.list("services", name)[0]:
        _quietly(lab.delete_service, svc["metadata"]["name"], name)
    for plural in MESH_RESOURCES:
        for policy in store.list(plural, name)[0]:
            _quietly(lab.delete_policy, plural, policy["metadata"]["name"], name)
    for pod in store.list("pods", name)[0]:
        _quietly(lab.delete_pod, pod["metadata"]["name"], name)
    for claim in store.list("persistentvolumeclaims", name)[0]:  # go once their pods have
        _quietly(mark_deleting, store, "persistentvolumeclaims", name, claim["metadata"]["name"])
    for plural in ("replicasets", "controllerrevisions", "events", "endpoints", "endpointslices",
                   *CONFIG_DATA):  # fmt: skip
        for obj in store.list(plural, name)[0]:
            _quietly(store.delete, plural, name, obj["metadata"]["name"])


def _quietly(call, *args) -> None:
    """Gone already (a controller got there first) is fine; anything else is logged."""
    try:
        call(*args)
    except (ApiError, NotFound):
        pass
    except Exception:  # one object that would not go must not keep the rest
        log.exception("deleting %s in a namespace failed", args)
