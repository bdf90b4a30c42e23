"""A container's environment from ConfigMaps, Secrets and the pod's own fields, as
kubelet's makeEnvironmentVariables resolves `envFrom` and `env[].valueFrom`.

`resolve_env` returns the two parts apart, for the caller to merge as kubelet does:
`envFrom` first (in order: a later source overrides an earlier one), then `env` in the
order it is written, literal values and `valueFrom` alike, each overriding what came
before. A missing object or key that is not optional stops the container:
ContainerConfigError("CreateContainerConfigError", kubelet's text).

Kubernetes 1.35's kubelet takes every key of an `envFrom` source (with its prefix) as
a variable: RelaxedEnvironmentVariableValidation is GA since 1.34 and kubelet no
longer skips keys such as `1st` (nor records InvalidEnvironmentVariableNames). Keys
the runtime cannot set at all (an `=` or a NUL in the name, possible only through a
prefix) are skipped and listed in `ResolvedEnv.skipped`; `skipped_event` words them
as kubelet's older InvalidEnvironmentVariableNames event did.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any

from netlab.errors import ApiError
from netlab.node.containers import ContainerConfigError
from netlab.plan import PodPlan
from netlab.spec.configdata import decoded
from netlab.spec.model import ContainerSpec
from netlab.spec.volumes import EnvFromSource, FieldRef, KeyRef

REASON = "CreateContainerConfigError"
SKIPPED_REASON = "InvalidEnvironmentVariableNames"
DEFAULT_SERVICE_ACCOUNT = "default"
_PLURAL = {"configMap": "configmaps", "secret": "secrets"}
_WORD = {"configMap": "configmap", "secret": "secret"}  # `configmap "x" not found`
_KIND = {"configMap": "ConfigMap", "secret": "Secret"}  # `... in ConfigMap default/x`
_MAP_FIELD = re.compile(r"^metadata\.(labels|annotations)\['(.*)'\]$")


@dataclass(frozen=True)
class SkippedKeys:
    """Keys of one envFrom source that cannot be variables."""

    kind: str  # "configMap" | "secret"
    namespace: str
    name: str
    keys: tuple[str, ...]

    @property
    def message(self) -> str:
        """kubelet's InvalidEnvironmentVariableNames text."""
        return (
            f"Keys [{', '.join(self.keys)}] from the EnvFrom {self.kind.lower()} "
            f"{self.namespace}/{self.name} were skipped since they are considered invalid "
            "environment variable names."
        )


@dataclass
class ResolvedEnv:
    """What `resolve_env` found: `env_from` (envFrom's variables, merged in order),
    `refs` (each env[].valueFrom variable by name; an optional one whose object or key
    is missing is absent), `skipped` (keys that cannot be variables)."""

    env_from: dict[str, str] = field(default_factory=dict)
    refs: dict[str, str] = field(default_factory=dict)
    skipped: list[SkippedKeys] = field(default_factory=list)


def usable_name(name: str) -> bool:
    """A name the runtime can set (`NAME=value`): not empty, no `=`, no NUL."""
    return bool(name) and "=" not in name and "\0" not in name


class _Objects:
    """The ConfigMaps and Secrets of one resolution, each read once (kubelet's maps)."""

    def __init__(self, store: Any, namespace: str) -> None:
        self.store, self.namespace = store, namespace
        self._seen: dict[tuple[str, str], dict[str, str] | None] = {}

    def data(self, kind: str, name: str, optional: bool) -> dict[str, str] | None:
        """The object's keys as text (a ConfigMap's data; a Secret's data decoded);
        None if it is missing and optional; ContainerConfigError if missing."""
        if (kind, name) not in self._seen:
            try:
                obj = self.store.get(_PLURAL[kind], self.namespace, name)
            except ApiError as exc:
                if exc.status != 404:
                    raise
                obj = None
            self._seen[(kind, name)] = None if obj is None else _text(kind, obj)
        found = self._seen[(kind, name)]
        if found is None and not optional:
            raise ContainerConfigError(REASON, f'{_WORD[kind]} "{name}" not found')
        return found


def _text(kind: str, obj: dict) -> dict[str, str]:
    if kind == "secret":
        return {k: v.decode("utf-8", "replace") for k, v in decoded(obj).items()}
    return dict(obj.get("data") or {})  # env takes data only, not binaryData


def resolve_env(
    store: Any, pod: PodPlan, container: ContainerSpec, pod_ip: str, host_ip: str
) -> ResolvedEnv:
    """The variables of `container.env_from` and `container.env_refs`, read from the
    store (ConfigMaps, Secrets, the pod's own object for its uid and annotations)."""
    objects = _Objects(store, pod.namespace)
    out = ResolvedEnv()
    for source in container.env_from:
        _env_from(objects, source, out)
    pod_obj: dict | None = None
    for ref in container.env_refs:
        src = ref.source
        if isinstance(src, KeyRef):
            data = objects.data(src.kind, src.name, src.optional)
            if data is None:
                continue
            if src.key not in data:
                if src.optional:
                    continue
                raise ContainerConfigError(
                    REASON,
                    f"couldn't find key {src.key} in {_KIND[src.kind]} {pod.namespace}/{src.name}",
                )
            out.refs[ref.name] = data[src.key]
        elif isinstance(src, FieldRef):
            if pod_obj is None:
                pod_obj = _pod_object(store, pod)
            out.refs[ref.name] = field_value(src.field_path, pod, pod_obj, pod_ip, host_ip)
    return out


def _env_from(objects: _Objects, source: EnvFromSource, out: ResolvedEnv) -> None:
    data = objects.data(source.kind, source.name, source.optional)
    if data is None:
        return
    skipped = []
    for key, value in data.items():
        name = source.prefix + key
        if usable_name(name):
            out.env_from[name] = value
        else:
            skipped.append(name)
    if skipped:
        keys = tuple(sorted(skipped))
        out.skipped.append(SkippedKeys(source.kind, objects.namespace, source.name, keys))


def _pod_object(store: Any, pod: PodPlan) -> dict:
    try:
        return store.get("pods", pod.namespace, pod.name)
    except ApiError:
        return {"metadata": {}}


def field_value(path: str, pod: PodPlan, obj: dict, pod_ip: str, host_ip: str) -> str:
    """A downward-API fieldRef's value, as kubelet's podFieldSelectorRuntimeValue
    gives it (`obj`: the pod as stored, for its uid, labels and annotations)."""
    meta = obj.get("metadata") or {}
    simple = {
        "metadata.name": pod.name,
        "metadata.namespace": pod.namespace,
        "metadata.uid": meta.get("uid", ""),
        "spec.nodeName": pod.node,
        "spec.serviceAccountName": pod.template.recorded.get("serviceAccountName")
        or DEFAULT_SERVICE_ACCOUNT,
        "status.podIP": pod_ip,
        "status.podIPs": pod_ip,
        "status.hostIP": host_ip,
        "status.hostIPs": host_ip,
    }
    if path in simple:
        return simple[path]
    if path in ("metadata.labels", "metadata.annotations"):
        values = dict(pod.labels) if path == "metadata.labels" else meta.get("annotations") or {}
        return "\n".join(f"{k}={json.dumps(v)}" for k, v in sorted(values.items()))
    match = _MAP_FIELD.match(path)
    if match:
        values = dict(pod.labels) if match[1] == "labels" else meta.get("annotations") or {}
        return values.get(match[2], "")
    raise ContainerConfigError(REASON, f"unsupported fieldPath: {path}")
