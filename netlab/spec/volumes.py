"""A pod's volumes, its containers' volumeMounts and the env they take from ConfigMaps,
Secrets and the pod's own fields: Kubernetes' shapes, read into frozen dataclasses.

The kinds of volume the lab mounts: `emptyDir` (scratch per pod, on the node's disk or
in memory), `hostPath` (a path on the node's own disk), `configMap` and `secret` (keys
as files), `persistentVolumeClaim` (a disk that follows the pod).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from netlab.spec.quantity import QuantityError, bytes_, fix_for, format_memory
from netlab.spec.validate import DNS_LABEL_MAX, DNS_LABEL_RE, Checker

VOLUME_KINDS = ("emptyDir", "hostPath", "configMap", "secret", "persistentVolumeClaim")
HOST_PATH_TYPES = (
    "",
    "DirectoryOrCreate",
    "Directory",
    "FileOrCreate",
    "File",
    "Socket",
    "CharDevice",
    "BlockDevice",
)
STORAGE_MEDIA = ("", "Memory")
DEFAULT_MODE = 0o644  # configMap and secret files, as kube-apiserver defaults defaultMode
# the pod's own fields env may read (downward API's fieldRef), as kubelet resolves them
FIELD_PATHS = (
    "metadata.name",
    "metadata.namespace",
    "metadata.uid",
    "spec.nodeName",
    "spec.serviceAccountName",
    "status.hostIP",
    "status.podIP",
    "status.podIPs",
)


@dataclass(frozen=True)
class KeyToPath:
    """One key of a ConfigMap or Secret, as a file at `path` in the volume."""

    key: str
    path: str
    mode: int | None = None  # None: the volume's defaultMode


@dataclass(frozen=True)
class EmptyDirSource:
    medium: str = ""  # "": on the node's disk; "Memory": a tmpfs
    size_limit: int | None = None  # bytes; None: no limit


@dataclass(frozen=True)
class HostPathSource:
    path: str
    type: str = ""  # "": no check


@dataclass(frozen=True)
class ObjectSource:
    """A configMap or secret volume: the object's keys (or `items` of them) as files."""

    kind: str  # "configMap" | "secret"
    name: str  # the ConfigMap's or Secret's name (`secretName` for a secret)
    items: tuple[KeyToPath, ...] = ()  # empty: every key, as a file named by its key
    default_mode: int = DEFAULT_MODE
    optional: bool = False


@dataclass(frozen=True)
class ClaimSource:
    claim_name: str
    read_only: bool = False


VolumeSource = EmptyDirSource | HostPathSource | ObjectSource | ClaimSource


@dataclass(frozen=True)
class VolumeSpec:
    name: str
    source: VolumeSource

    @property
    def kind(self) -> str:
        """Its key in the manifest: emptyDir, hostPath, configMap, secret, persistentVolumeClaim."""
        if isinstance(self.source, EmptyDirSource):
            return "emptyDir"
        if isinstance(self.source, HostPathSource):
            return "hostPath"
        if isinstance(self.source, ClaimSource):
            return "persistentVolumeClaim"
        return self.source.kind


@dataclass(frozen=True)
class VolumeMount:
    name: str
    mount_path: str
    sub_path: str = ""
    read_only: bool = False


@dataclass(frozen=True)
class KeyRef:
    """env[].valueFrom.configMapKeyRef or secretKeyRef."""

    kind: str  # "configMap" | "secret"
    name: str
    key: str
    optional: bool = False


@dataclass(frozen=True)
class FieldRef:
    """env[].valueFrom.fieldRef: one of the pod's own fields (FIELD_PATHS)."""

    field_path: str


@dataclass(frozen=True)
class EnvRef:
    """An env variable whose value comes from elsewhere (valueFrom)."""

    name: str
    source: KeyRef | FieldRef


@dataclass(frozen=True)
class EnvFromSource:
    """envFrom[]: every key of a ConfigMap or Secret as a variable, `prefix` before it."""

    kind: str  # "configMap" | "secret"
    name: str
    prefix: str = ""
    optional: bool = False


# -- reading manifests --------------------------------------------------------------

VOLUME_FIELDS = ("name", *VOLUME_KINDS)
OTHER_SOURCES = (
    "projected", "downwardAPI", "nfs", "csi", "ephemeral", "iscsi", "gcePersistentDisk",
    "awsElasticBlockStore", "azureDisk", "azureFile", "cephfs", "rbd", "fc", "flexVolume",
    "glusterfs", "image", "gitRepo", "cinder", "portworxVolume", "vsphereVolume",
)  # fmt: skip
SOURCE_FIELDS = {
    "emptyDir": ("medium", "sizeLimit"),
    "hostPath": ("path", "type"),
    "configMap": ("name", "items", "defaultMode", "optional"),
    "secret": ("secretName", "items", "defaultMode", "optional"),
    "persistentVolumeClaim": ("claimName", "readOnly"),
}
ITEM_FIELDS = ("key", "path", "mode")
MOUNT_FIELDS = ("name", "mountPath", "subPath", "readOnly", "mountPropagation", "recursiveReadOnly")
ENV_FIELDS = ("name", "value", "valueFrom")
VALUE_FROM = ("configMapKeyRef", "secretKeyRef", "fieldRef")
KEY_REF_FIELDS = ("name", "key", "optional")
FIELD_REF_FIELDS = ("fieldPath", "apiVersion")
ENV_FROM_FIELDS = ("configMapRef", "secretRef", "prefix")
MODE_MAX = 0o777
_SUPPORTED = "emptyDir, hostPath, configMap, secret or persistentVolumeClaim"


def _relative(value: str, path: str, checker: Checker, what: str) -> bool:
    """kube-apiserver's validateLocalDescendingPath: relative, no '..' element."""
    if value.startswith("/"):
        checker.add(path, f"{what} {value!r} must be a relative path", "remove the leading '/'")
        return False
    if ".." in value.split("/"):
        checker.add(
            path, f"{what} {value!r} must not contain '..'", "name a path inside the volume"
        )
        return False
    return True


def _mode(obj: dict, key: str, path: str, checker: Checker) -> int | None:
    value = checker.take(obj, key, path, "integer")
    if value is not None and not 0 <= value <= MODE_MAX:
        checker.add(
            f"{path}.{key}",
            f"Invalid value: {value}: must be a number between 0 and 0777 (octal), both inclusive",
            "write it in octal as YAML does, e.g. 0644, or as decimal 420",
        )
        return None
    return value


def _items(obj: dict, path: str, checker: Checker) -> tuple[KeyToPath, ...]:
    out = []
    for i, entry in enumerate(checker.take(obj, "items", path, "list", default=[]) or []):
        here = f"{path}.items[{i}]"
        spec = checker.mapping(entry, here, ITEM_FIELDS, required=("key", "path"))
        if spec is None:
            continue
        key = checker.take(spec, "key", here, "string")
        target = checker.take(spec, "path", here, "string")
        mode = _mode(spec, "mode", here, checker)
        if isinstance(target, str) and _relative(target, f"{here}.path", checker, "path"):
            if isinstance(key, str):
                out.append(KeyToPath(key, target, mode))
    return tuple(out)


def _source(kind: str, spec: dict, path: str, checker: Checker) -> VolumeSource | None:
    here = f"{path}.{kind}"
    fields = SOURCE_FIELDS[kind]
    required = {"hostPath": ("path",), "persistentVolumeClaim": ("claimName",)}.get(kind, ())
    if kind == "secret":
        required = ("secretName",)
    if kind == "configMap":
        required = ("name",)
    body = checker.mapping(spec if spec is not None else {}, here, fields, required=required)
    if body is None:
        return None
    if kind == "emptyDir":
        medium = checker.choice(
            body, "medium", here, STORAGE_MEDIA, "",
            fix="leave it out for the node's disk, or write medium: Memory for a tmpfs",
        )  # fmt: skip
        size = body.get("sizeLimit")
        limit = None
        if size is not None:
            try:
                limit = bytes_(size)
            except QuantityError as exc:
                checker.add(f"{here}.sizeLimit", f"Invalid value: {size!r}: {exc}", fix_for(size))
                return None
            if limit <= 0:
                checker.add(
                    f"{here}.sizeLimit", f"Invalid value: {size!r}: must be greater than 0",
                    "give a size such as 64Mi, or leave sizeLimit out",
                )  # fmt: skip
                return None
        return EmptyDirSource(medium or "", limit)
    if kind == "hostPath":
        where = checker.take(body, "path", here, "string")
        type_ = checker.choice(
            body, "type", here, HOST_PATH_TYPES, "", fix="use one of them, e.g. DirectoryOrCreate"
        )
        if type_ is None:
            return None
        if isinstance(where, str) and not where.startswith("/"):
            checker.add(f"{here}.path", f"{where!r} must be an absolute path", "start it with '/'")
            return None
        if isinstance(where, str) and ".." in where.split("/"):
            checker.add(f"{here}.path", f"{where!r} must not contain '..'", "write it without '..'")
            return None
        return HostPathSource(where, type_ or "") if isinstance(where, str) else None
    if kind == "persistentVolumeClaim":
        claim = checker.take(body, "claimName", here, "string")
        read_only = checker.take(body, "readOnly", here, "boolean", default=False)
        return ClaimSource(claim, bool(read_only)) if isinstance(claim, str) and claim else None
    name = checker.take(body, "secretName" if kind == "secret" else "name", here, "string")
    items = _items(body, here, checker)
    mode = _mode(body, "defaultMode", here, checker)
    optional = checker.take(body, "optional", here, "boolean", default=False)
    if not isinstance(name, str) or not name:
        return None
    return ObjectSource(kind, name, items, DEFAULT_MODE if mode is None else mode, bool(optional))


def read_volumes(value: Any, path: str, checker: Checker) -> tuple[VolumeSpec, ...]:
    """A pod spec's `volumes`: each named once, with exactly one source the lab mounts."""
    if value is None or not checker.check_type(value, path, "list"):
        return ()
    volumes: list[VolumeSpec] = []
    seen: dict[str, int] = {}
    for i, entry in enumerate(value):
        here = f"{path}[{i}]"
        if not isinstance(entry, dict):
            checker.check_type(entry, here, "mapping")
            continue
        others = [k for k in entry if k in OTHER_SOURCES]
        for key in others:
            checker.add(
                f"{here}.{key}",
                f"{key} volumes are not supported by netlab",
                f"use an {_SUPPORTED} volume",
            )
        spec = checker.mapping(
            {k: v for k, v in entry.items() if k not in others}, here, VOLUME_FIELDS, ["name"]
        )
        if spec is None or others:
            continue
        name = spec.get("name")
        if name is not None and checker.name(
            name, f"{here}.name", "volume name", DNS_LABEL_MAX, DNS_LABEL_RE
        ):
            if name in seen:
                checker.add(
                    f"{here}.name",
                    f'Duplicate value: "{name}" (volumes[{seen[name]}] has it)',
                    "give each volume its own name",
                )
                continue
            seen[name] = i
        kinds = [k for k in VOLUME_KINDS if k in spec]
        if len(kinds) != 1:
            checker.add(
                here,
                "must specify exactly one volume type" if kinds else "must specify a volume type",
                f"give it one of {_SUPPORTED}",
            )
            continue
        source = _source(kinds[0], spec[kinds[0]], here, checker)
        if source is not None and isinstance(name, str):
            volumes.append(VolumeSpec(name, source))
    return tuple(volumes)


def read_mounts(
    container: dict, path: str, volumes: dict[str, VolumeSpec] | None, checker: Checker
) -> tuple[VolumeMount, ...]:
    """A container's `volumeMounts`: each names a volume of the pod (`volumes`; None: the
    pod's volumes could not be read, so names are not checked), at its own mountPath."""
    here_list = f"{path}.volumeMounts"
    entries = checker.take(container, "volumeMounts", path, "list", default=[]) or []
    mounts: list[VolumeMount] = []
    paths: dict[str, int] = {}
    for i, entry in enumerate(entries):
        here = f"{here_list}[{i}]"
        spec = checker.mapping(entry, here, MOUNT_FIELDS, required=("name", "mountPath"))
        if spec is None:
            continue
        name = checker.take(spec, "name", here, "string")
        target = checker.take(spec, "mountPath", here, "string")
        sub = checker.take(spec, "subPath", here, "string", default="")
        read_only = checker.take(spec, "readOnly", here, "boolean", default=False)
        propagation = checker.take(spec, "mountPropagation", here, "string", default="None")
        checker.take(spec, "recursiveReadOnly", here, "string")
        ok = isinstance(name, str) and isinstance(target, str)
        if isinstance(name, str) and volumes is not None and name not in volumes:
            checker.add(
                f"{here}.name",
                f'Not found: "{name}"',
                f"declare a volume named {name!r} in the pod's spec.volumes"
                + (f" (it has {', '.join(sorted(volumes))})" if volumes else ""),
            )
            ok = False
        if isinstance(target, str):
            target = target.rstrip("/") or "/"
            if not target.startswith("/"):
                checker.add(
                    f"{here}.mountPath",
                    f"{target!r} must be an absolute path",
                    "start it with '/'",
                )
                ok = False
            elif target == "/":
                checker.add(
                    f"{here}.mountPath", "a volume cannot be mounted over the container's root",
                    "mount it at a directory such as /data",
                )  # fmt: skip
                ok = False
            elif target in paths:
                checker.add(
                    f"{here}.mountPath",
                    f'Invalid value: "{target}": must be unique '
                    f"(volumeMounts[{paths[target]}] mounts there too)",
                    "mount each volume at its own path, or use subPath to mount parts of one",
                )
                ok = False
            else:
                paths[target] = i
        if (
            isinstance(sub, str)
            and sub
            and not _relative(sub, f"{here}.subPath", checker, "subPath")
        ):
            ok = False
        if propagation not in (None, "None"):
            checker.add(
                f"{here}.mountPropagation",
                f'Unsupported value: "{propagation}": netlab mounts volumes private ("None")',
                "leave mountPropagation out",
            )
            ok = False
        if ok:
            mounts.append(VolumeMount(name, target, sub or "", bool(read_only)))
    return tuple(mounts)


def _key_ref(kind: str, value: Any, here: str, checker: Checker) -> KeyRef | None:
    spec = checker.mapping(value, here, KEY_REF_FIELDS, required=("name", "key"))
    if spec is None:
        return None
    name = checker.take(spec, "name", here, "string")
    key = checker.take(spec, "key", here, "string")
    optional = checker.take(spec, "optional", here, "boolean", default=False)
    if isinstance(name, str) and isinstance(key, str):
        return KeyRef(kind, name, key, bool(optional))
    return None


def read_env(
    container: dict, path: str, checker: Checker
) -> tuple[tuple[tuple[str, str], ...], tuple[EnvRef, ...]]:
    """A container's `env`: (name, value) pairs, and the entries whose value comes from a
    ConfigMap, a Secret or the pod's own fields (valueFrom)."""
    entries = checker.take(container, "env", path, "list", default=[]) or []
    values: list[tuple[str, str]] = []
    refs: list[EnvRef] = []
    for i, entry in enumerate(entries):
        here = f"{path}.env[{i}]"
        var = checker.mapping(entry, here, ENV_FIELDS, required=("name",))
        if var is None:
            continue
        name = checker.take(var, "name", here, "string")
        if name is not None and "=" in name:
            checker.add(f"{here}.name", f"{name!r} contains '='", "remove the '='")
            continue
        source = var.get("valueFrom")
        if source is None:
            value = checker.take(var, "value", here, "string", default="")
            if name and value is not None:
                values.append((name, value))
            continue
        if var.get("value") not in (None, ""):
            checker.add(
                f"{here}.valueFrom",
                "may not be specified when `value` is not empty",
                "give either value or valueFrom",
            )
            continue
        sub = f"{here}.valueFrom"
        spec = checker.mapping(source, sub, VALUE_FROM)
        if spec is None:
            continue
        given = [k for k in VALUE_FROM if spec.get(k) is not None]
        if len(given) != 1:
            checker.add(
                sub,
                "may not have more than one field specified at a time"
                if given
                else "must specify one of: `configMapKeyRef`, `secretKeyRef` or `fieldRef`",
                "give exactly one source",
            )
            continue
        ref: KeyRef | FieldRef | None
        if given[0] == "fieldRef":
            field_spec = checker.mapping(
                spec["fieldRef"], f"{sub}.fieldRef", FIELD_REF_FIELDS, required=("fieldPath",)
            )
            field_path = (field_spec or {}).get("fieldPath")
            ref = None
            if isinstance(field_path, str):
                if field_path in FIELD_PATHS or _label_path(field_path):
                    ref = FieldRef(field_path)
                else:
                    checker.add(
                        f"{sub}.fieldRef.fieldPath",
                        f'Unsupported value: "{field_path}"',
                        "use one of "
                        + ", ".join(FIELD_PATHS)
                        + ", metadata.labels['KEY'] or metadata.annotations['KEY']",
                    )
        else:
            kind = "configMap" if given[0] == "configMapKeyRef" else "secret"
            ref = _key_ref(kind, spec[given[0]], f"{sub}.{given[0]}", checker)
        if ref is not None and name:
            refs.append(EnvRef(name, ref))
    return tuple(values), tuple(refs)


def _label_path(field_path: str) -> bool:
    """metadata.labels['key'] or metadata.annotations['key']."""
    for prefix in ("metadata.labels['", "metadata.annotations['"):
        if field_path.startswith(prefix) and field_path.endswith("']"):
            return len(field_path) > len(prefix) + 2
    return False


def read_env_from(container: dict, path: str, checker: Checker) -> tuple[EnvFromSource, ...]:
    """A container's `envFrom`: every key of a ConfigMap or Secret, with a prefix."""
    out: list[EnvFromSource] = []
    for i, entry in enumerate(checker.take(container, "envFrom", path, "list", default=[]) or []):
        here = f"{path}.envFrom[{i}]"
        spec = checker.mapping(entry, here, ENV_FROM_FIELDS)
        if spec is None:
            continue
        prefix = checker.take(spec, "prefix", here, "string", default="")
        given = [k for k in ("configMapRef", "secretRef") if spec.get(k) is not None]
        if len(given) != 1:
            checker.add(
                here,
                "may not have more than one field specified at a time"
                if given
                else "must specify one of: `configMapRef` or `secretRef`",
                "give exactly one of configMapRef or secretRef",
            )
            continue
        ref = checker.mapping(spec[given[0]], f"{here}.{given[0]}", ("name", "optional"), ["name"])
        if ref is None:
            continue
        name = checker.take(ref, "name", f"{here}.{given[0]}", "string")
        optional = checker.take(ref, "optional", f"{here}.{given[0]}", "boolean", default=False)
        if isinstance(name, str) and name and prefix is not None:
            kind = "configMap" if given[0] == "configMapRef" else "secret"
            out.append(EnvFromSource(kind, name, prefix, bool(optional)))
    return tuple(out)


# -- writing manifests (the Pod as the API shows it) -------------------------------


def volume_manifest(volume: VolumeSpec) -> dict[str, Any]:
    source = volume.source
    body: dict[str, Any]
    if isinstance(source, EmptyDirSource):
        body = {}
        if source.medium:
            body["medium"] = source.medium
        if source.size_limit is not None:
            body["sizeLimit"] = format_memory(source.size_limit)
    elif isinstance(source, HostPathSource):
        body = {"path": source.path, "type": source.type}
    elif isinstance(source, ClaimSource):
        body = {"claimName": source.claim_name}
        if source.read_only:
            body["readOnly"] = True
    else:
        body = {"secretName" if source.kind == "secret" else "name": source.name}
        if source.items:
            body["items"] = [
                {"key": i.key, "path": i.path, **({"mode": i.mode} if i.mode is not None else {})}
                for i in source.items
            ]
        body["defaultMode"] = source.default_mode
        if source.optional:
            body["optional"] = True
    return {"name": volume.name, volume.kind: body}


def mount_manifest(mount: VolumeMount) -> dict[str, Any]:
    out: dict[str, Any] = {"name": mount.name, "mountPath": mount.mount_path}
    if mount.sub_path:
        out["subPath"] = mount.sub_path
    if mount.read_only:
        out["readOnly"] = True
    return out


def env_ref_manifest(ref: EnvRef) -> dict[str, Any]:
    source = ref.source
    if isinstance(source, FieldRef):
        value = {"fieldRef": {"apiVersion": "v1", "fieldPath": source.field_path}}
    else:
        key = "configMapKeyRef" if source.kind == "configMap" else "secretKeyRef"
        body: dict[str, Any] = {"name": source.name, "key": source.key}
        if source.optional:
            body["optional"] = True
        value = {key: body}
    return {"name": ref.name, "valueFrom": value}


def env_from_manifest(source: EnvFromSource) -> dict[str, Any]:
    key = "configMapRef" if source.kind == "configMap" else "secretRef"
    out: dict[str, Any] = {key: {"name": source.name}}
    if source.optional:
        out[key]["optional"] = True
    if source.prefix:
        out["prefix"] = source.prefix
    return out
