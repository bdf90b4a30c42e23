"""ConfigMaps and Secrets into and out of the lab's store, which is all there is of
them: kubelet's configMap/secret volumes and env read them from the store.

`apply_all` stores what a lab file or `netlab apply` (and so every API write) brings,
after checking all of it against what is stored (an immutable object keeps its data,
a Secret its type: kube-apiserver's 422, nothing written). A delete is the store's own:
pods that mount the object keep their files, as in Kubernetes; new ones wait for it."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from netlab import objects
from netlab.apiserver.base import invalid
from netlab.errors import ApiError, Problem
from netlab.spec.configdata import ConfigDataSpec, immutable_problems

PLURALS = {"ConfigMap": "configmaps", "Secret": "secrets"}


def _stored(store: Any, spec: ConfigDataSpec) -> dict | None:
    try:
        return store.get(spec.plural, spec.namespace, spec.name)
    except ApiError:
        return None


def check_update(old: dict, new: dict) -> None:
    """422 (kube-apiserver's words) if `new` may not replace `old`."""
    problems = immutable_problems(old, new)
    if problems:
        kind, name = old["kind"], old["metadata"]["name"]
        fix = (
            f"an immutable {kind} cannot change: delete it and create it again"
            if any(field != "type" for field, _ in problems)
            else "a Secret's type cannot change: delete it and create it again"
        )
        raise invalid(kind, name, [Problem(field, text, fix) for field, text in problems])


def check_all(store: Any, specs: Iterable[ConfigDataSpec]) -> None:
    """Every change allowed against what is stored (before anything is written)."""
    for spec in specs:
        old = _stored(store, spec)
        if old is not None:
            check_update(old, spec.manifest)


def apply_all(store: Any, specs: Iterable[ConfigDataSpec]) -> list[dict]:
    """Store each ConfigMap and Secret (its namespace made if missing); what happened
    to each, as `netlab apply` reports it. Checked as a whole first."""
    specs = list(specs)
    check_all(store, specs)
    results = []
    for spec in specs:
        old = _stored(store, spec)
        if old is None:
            try:
                store.get("namespaces", None, spec.namespace)
            except ApiError:
                store.apply(objects.namespace_object(spec.namespace))
        store.apply(spec.manifest)  # no write if nothing changed
        if old is None:
            action = "created"
        elif objects.manifest_of(old) == objects.manifest_of(spec.manifest):
            action = "unchanged"
        else:
            action = "configured"
        results.append(
            {"kind": spec.kind, "namespace": spec.namespace, "name": spec.name, "action": action}
        )
    return results
