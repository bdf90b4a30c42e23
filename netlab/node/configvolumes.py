"""The configMap and secret volume plugin: an object's keys as files, written as
kubelet's AtomicWriter writes them, so that a reader never sees half an update.

The volume directory holds a timestamped directory `..2026_01_02_15_04_05.123456`
with the files, a symlink `..data` to it, and for each top-level entry a symlink
`<name> -> ..data/<name>`. An update writes a new timestamped directory, points a new
symlink `..data_tmp` at it and renames that over `..data` (atomic), then removes the
old directory: a file of the old one is never rewritten in place, so a subPath mount
(bound to the old file's real path) keeps the content it started with, as in Kubernetes.

The plugin reads the lab's store and never writes to it.
"""

from __future__ import annotations

import os
import secrets
import shutil
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from netlab.errors import ApiError, NetlabError
from netlab.node import mounts
from netlab.node.volumeplugin import VolumeContext, VolumeNotReady
from netlab.spec.configdata import decoded
from netlab.spec.volumes import ObjectSource, VolumeSpec

DATA_DIR = "..data"
DATA_TMP = "..data_tmp"
DIR_MODE = 0o755
PATH_MAX = 4096


@dataclass(frozen=True)
class FileProjection:
    data: bytes
    mode: int


Payload = Mapping[str, FileProjection]  # relative path in the volume -> file


@dataclass(frozen=True)
class ObjectKind:
    """How kubelet names one kind of object in its texts."""

    plural: str  # in the store
    word: str  # `configmap "x" not found`
    missing_key: str  # `configmap references non-existent config key: k`


KINDS = {
    "configMap": ObjectKind(
        "configmaps", "configmap", "configmap references non-existent config key"
    ),
    "secret": ObjectKind("secrets", "secret", "references non-existent secret key"),
}


def not_found(kind: str, name: str) -> str:
    """kubelet's text for a missing object: `configmap "x" not found`."""
    return f'{KINDS[kind].word} "{name}" not found'


def payload_of(obj: dict | None, source: ObjectSource) -> dict[str, FileProjection]:
    """The files of a configMap or secret volume (kubelet's MakePayload): every key, or
    the `items` asked for; None `obj` (missing, optional): no files. ValueError with
    kubelet's text for a key named in items that the object lacks (not optional)."""
    if obj is None:
        return {}
    data = decoded(obj)
    if not source.items:
        return {key: FileProjection(value, source.default_mode) for key, value in data.items()}
    files = {}
    for item in source.items:
        if item.key not in data:
            if source.optional:
                continue
            raise ValueError(f"{KINDS[source.kind].missing_key}: {item.key}")
        mode = source.default_mode if item.mode is None else item.mode
        files[item.path or item.key] = FileProjection(data[item.key], mode)
    return files


def check_path(path: str) -> None:
    """A payload path must stay inside the volume (kubelet's validatePath)."""
    parts = path.split("/")
    if not path or len(path) > PATH_MAX or path.startswith("/") or ".." in parts:
        raise ValueError(f"invalid path {path!r}: a relative path without '..' elements")
    if path.startswith(".."):
        raise ValueError(f"invalid path {path!r}: must not start with '..'")


class AtomicWriter:
    """kubelet's AtomicWriter over one volume directory."""

    def __init__(self, target: Path, clock=time.time) -> None:
        self.target = target
        self._clock = clock

    def current(self) -> dict[str, FileProjection] | None:
        """The files `..data` points at now; None if nothing was written yet."""
        data = self.target / DATA_DIR
        if not data.is_symlink():
            return None
        root = self.target / os.readlink(data)
        files = {}
        for dirpath, _dirs, names in os.walk(root):
            for name in names:
                path = Path(dirpath) / name
                info = path.lstat()
                rel = path.relative_to(root).as_posix()
                files[rel] = FileProjection(path.read_bytes(), info.st_mode & 0o7777)
        return files

    def write(self, payload: Payload) -> bool:
        """Make the volume hold exactly `payload`; False (nothing touched) if it does."""
        for path in payload:
            check_path(path)
        self.target.mkdir(parents=True, exist_ok=True, mode=DIR_MODE)
        if self.current() == dict(payload):
            return False
        old = self._data_dir()
        fresh = self._new_dir()
        try:
            for rel, file in payload.items():
                path = fresh / rel
                path.parent.mkdir(parents=True, exist_ok=True, mode=DIR_MODE)
                path.write_bytes(file.data)
                os.chmod(path, file.mode)
            tmp = self.target / DATA_TMP
            if tmp.is_symlink() or tmp.exists():
                tmp.unlink()
            os.symlink(fresh.name, tmp)
            os.rename(tmp, self.target / DATA_DIR)  # the switch: atomic
        except BaseException:
            shutil.rmtree(fresh, ignore_errors=True)
            raise
        visible = {rel.split("/", 1)[0] for rel in payload}
        for name in visible:
            link = self.target / name
            if not link.is_symlink():
                os.symlink(f"{DATA_DIR}/{name}", link)
        for entry in self.target.iterdir():
            if entry.name.startswith(".."):
                if entry.name not in (DATA_DIR, fresh.name) and entry.is_dir():
                    shutil.rmtree(entry)  # the old one, and any a crash left
            elif entry.name not in visible and entry.is_symlink():
                entry.unlink()
        if old is not None and old.exists():
            shutil.rmtree(old)
        return True

    def _data_dir(self) -> Path | None:
        data = self.target / DATA_DIR
        return self.target / os.readlink(data) if data.is_symlink() else None

    def _new_dir(self) -> Path:
        stamp = time.strftime("..%Y_%m_%d_%H_%M_%S.", time.gmtime(self._clock()))
        while True:  # os.MkdirTemp's way: the pattern and a random number
            path = self.target / f"{stamp}{secrets.randbelow(2**32)}"
            try:
                path.mkdir(mode=DIR_MODE)
            except FileExistsError:
                continue
            os.chmod(path, DIR_MODE)
            return path


def remove_volume_dir(path: Path) -> None:
    """Remove a volume directory, never across a mount (NetlabError if one is below)."""
    if not path.exists() and not path.is_symlink():
        return
    mounted = mounts.mounted_under(path)
    if mounted:
        raise NetlabError(f"{path} still has {mounted[0]} mounted; unmount it first")
    shutil.rmtree(path)


class ConfigVolumes:
    """The volume plugin of `configMap` and `secret` volumes (netlab.node.volumeplugin).

    setup: VolumeNotReady with kubelet's text (`MountVolume.SetUp failed for volume
    "cfg" : configmap "x" not found`) while the object, or a key named in `items`, is
    missing and the volume is not optional. resync: the same, leaving the files as they
    were (kubelet's FailedMount of a periodic remount; the pod keeps running)."""

    kinds = ("configMap", "secret")

    def __init__(self, store: Any) -> None:
        self.store = store  # read only
        # each volume's object version its files were last written from (None: none)
        self._written: dict[Path, str | None] = {}

    def _object(self, ctx: VolumeContext, volume: VolumeSpec) -> dict | None:
        """The volume's ConfigMap or Secret (None: missing, and the volume optional)."""
        source = volume.source
        assert isinstance(source, ObjectSource), volume
        try:
            return self.store.get(KINDS[source.kind].plural, ctx.pod.namespace, source.name)
        except ApiError as exc:
            if exc.status != 404:
                raise
            if not source.optional:
                raise _failed(volume, not_found(source.kind, source.name)) from None
            return None

    def setup(self, ctx: VolumeContext, volume: VolumeSpec) -> Path:
        target = ctx.volume_dir(volume.kind, volume.name)
        obj = self._object(ctx, volume)
        version = obj["metadata"].get("resourceVersion") if obj is not None else None
        if target in self._written and self._written[target] == version:
            return target  # written from this very version already: nothing to compare
        try:
            AtomicWriter(target).write(payload_of(obj, volume.source))
        except ValueError as exc:  # a missing key in items, a path that leaves the volume
            raise _failed(volume, str(exc)) from None
        self._written[target] = version
        return target

    def resync(self, ctx: VolumeContext, volume: VolumeSpec) -> None:
        self.setup(ctx, volume)

    def teardown(self, ctx: VolumeContext, volume: VolumeSpec) -> None:
        target = ctx.volume_dir(volume.kind, volume.name)
        self._written.pop(target, None)
        remove_volume_dir(target)


def _failed(volume: VolumeSpec, reason: str) -> VolumeNotReady:
    return VolumeNotReady(f'MountVolume.SetUp failed for volume "{volume.name}" : {reason}')
