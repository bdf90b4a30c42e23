"""The volumes that live on the pod's own node: `emptyDir` (scratch per pod, on the
node's disk or, with `medium: Memory`, a tmpfs) and `hostPath` (a path on the node's
own disk: each lab node has a directory standing for its disk, so two nodes never
share a hostPath, as two machines would not)."""

from __future__ import annotations

import os
import stat
from pathlib import Path

from netlab.node import mounts
from netlab.node.volumeplugin import VolumeContext, VolumeNotReady
from netlab.spec.volumes import EmptyDirSource, HostPathSource, VolumeSpec

EMPTY_DIR = "empty-dir"
HOST_PATH_DIR = "hostpath"  # under the node's disk: a hostPath /data is <node disk>/hostpath/data


class EmptyDirPlugin:
    """kubernetes.io~empty-dir: a directory made for the pod, world-writable as kubelet
    makes it, removed with the pod. On disk it is a plain directory (no mount: runc
    copies the host's mount table into each container start); in memory a tmpfs whose
    pages count against the memory of the container that writes them."""

    kinds = ("emptyDir",)

    def path(self, ctx: VolumeContext, volume: VolumeSpec) -> Path:
        source = volume.source
        assert isinstance(source, EmptyDirSource)
        if source.medium == "Memory":
            return ctx.volume_dir(EMPTY_DIR, volume.name)
        return ctx.disk_dir(EMPTY_DIR, volume.name)

    def setup(self, ctx: VolumeContext, volume: VolumeSpec) -> Path:
        target = self.path(ctx, volume)
        target.mkdir(parents=True, exist_ok=True)
        source = volume.source
        assert isinstance(source, EmptyDirSource)
        if source.medium == "Memory" and not os.path.ismount(target):
            size = f",size={source.size_limit}" if source.size_limit else ""
            mounts.mount("tmpfs", target, "tmpfs", f"mode=0777{size}")
        os.chmod(target, 0o777)
        return target

    def resync(self, ctx: VolumeContext, volume: VolumeSpec) -> None:
        return None

    def teardown(self, ctx: VolumeContext, volume: VolumeSpec) -> None:
        target = self.path(ctx, volume)
        if not target.exists():
            return
        mounts.unmount_under(target)
        mounts.remove_tree(target)

    def usage(self, ctx: VolumeContext, volume: VolumeSpec) -> int:
        """Bytes the volume holds now (as du counts them), for its sizeLimit."""
        return disk_usage(self.path(ctx, volume))


class HostPathPlugin:
    """kubernetes.io~host-path: a path on the node's disk, checked as its `type` says;
    it outlives the pod (the next pod on that node finds the files)."""

    kinds = ("hostPath",)

    def path(self, ctx: VolumeContext, volume: VolumeSpec) -> Path:
        source = volume.source
        assert isinstance(source, HostPathSource)
        return ctx.node_disk / HOST_PATH_DIR / source.path.lstrip("/")

    def setup(self, ctx: VolumeContext, volume: VolumeSpec) -> Path:
        source = volume.source
        assert isinstance(source, HostPathSource)
        target = self.path(ctx, volume)
        (ctx.node_disk / HOST_PATH_DIR).mkdir(parents=True, exist_ok=True)
        kind = source.type
        if kind in ("", "DirectoryOrCreate") and not target.exists():
            target.mkdir(parents=True, mode=0o755, exist_ok=True)
        elif kind == "FileOrCreate" and not target.exists():
            target.parent.mkdir(parents=True, exist_ok=True)
            target.touch(mode=0o644)
        wanted = {
            "Directory": (stat.S_ISDIR, "a directory"),
            "DirectoryOrCreate": (stat.S_ISDIR, "a directory"),
            "File": (stat.S_ISREG, "a file"),
            "FileOrCreate": (stat.S_ISREG, "a file"),
            "Socket": (stat.S_ISSOCK, "a socket"),
            "CharDevice": (stat.S_ISCHR, "a character device"),
            "BlockDevice": (stat.S_ISBLK, "a block device"),
        }.get(kind)
        if wanted is not None:
            test, what = wanted
            try:
                mode = os.lstat(target).st_mode
            except FileNotFoundError:
                mode = None
            if mode is None or not test(mode):
                raise VolumeNotReady(
                    f'MountVolume.SetUp failed for volume "{volume.name}" : hostPath type '
                    f"check failed: {source.path} is not {what} (on node {ctx.pod.node}: "
                    f"{target})",
                    retry=2.0,
                )
        return target

    def resync(self, ctx: VolumeContext, volume: VolumeSpec) -> None:
        return None

    def teardown(self, ctx: VolumeContext, volume: VolumeSpec) -> None:
        return None  # the node's files stay, as a machine's would


def disk_usage(root: Path) -> int:
    """Bytes allocated under root (st_blocks, as du), never crossing into another mount."""
    total = 0
    try:
        device = os.lstat(root).st_dev
    except OSError:
        return 0
    stack = [str(root)]
    while stack:
        here = stack.pop()
        try:
            entries = list(os.scandir(here))
        except OSError:
            continue
        for entry in entries:
            try:
                info = entry.stat(follow_symlinks=False)
            except OSError:
                continue
            if info.st_dev != device:
                continue
            total += info.st_blocks * 512
            if stat.S_ISDIR(info.st_mode):
                stack.append(entry.path)
    return total
