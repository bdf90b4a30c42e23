"""A pod's volumes, its containers' volumeMounts and the env they take from ConfigMaps,
Secrets and the pod's own fields: Kubernetes' shapes, read into frozen dataclasses.

The kinds of volume the lab mounts: `emptyDir` (scratch per pod, on the node's disk or
in memory), `hostPath` (a path on the node's own disk), `configMap` and `secret` (keys
as files), `persistentVolumeClaim` (a disk that follows the pod).
"""

from __future__ import annotations

from dataclasses import dataclass

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
