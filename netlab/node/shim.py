"""The shim's side of a runc container (used by netlab.realize.runtimed): mount its
root, run it detached, hold its output pipe, wait for it as its subreaper, and
remove what it leaves once it has ended.

The root filesystem is an overlay of the image's unpacked root (read-only, shared
by every container of that image) and the container's own writable layer. The
host's copy of that mount is detached as soon as runc has started the container:
the container's mount namespace keeps its own, which goes when the container
ends. So a running lab leaves no root filesystem mounted on the host.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path
from typing import IO

from netlab.node import cgroups, mounts
from netlab.node.runc import Runc
from netlab.realize.processes import PolledProcess


class DetachedContainer(PolledProcess):
    """A container's first process, our child once runc has exited (we are its
    subreaper): poll() and wait() reap it; returncode as subprocess gives it
    (-N for a signal)."""

    def __init__(self, runc_id: str, pid: int, stdout: IO[bytes], log_path: Path) -> None:
        self.runc_id, self.pid, self.stdout, self.log_path = runc_id, pid, stdout, log_path
        self.returncode: int | None = None
        self.args = [runc_id]

    def poll(self) -> int | None:
        if self.returncode is None:
            try:
                pid, status = os.waitpid(self.pid, os.WNOHANG)
            except ChildProcessError:
                self.returncode = -1  # reaped elsewhere: nobody can say how it ended
                return self.returncode
            if pid == self.pid:
                self.returncode = os.waitstatus_to_exitcode(status)
        return self.returncode


def mount_root(bundle: Path, lower: str) -> Path:
    """The container's root: `lower` (read-only) under its own writable layer."""
    rootfs, upper, work = bundle / "rootfs", bundle / "upper", bundle / "work"
    for directory in (rootfs, upper, work):
        directory.mkdir(parents=True, exist_ok=True)
    options = f"lowerdir={lower},upperdir={upper},workdir={work}"
    mounts.mount("overlay", rootfs, "overlay", options)
    return rootfs


def start(runc: Runc, runc_id: str, bundle: Path, lower: str, log_path: Path) -> DetachedContainer:
    """Start the bundle's container; its output comes out of a pipe."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    rootfs = mount_root(bundle, lower)
    read_end, write_end = os.pipe()
    try:
        pid = runc.run(runc_id, bundle, write_end)
    except BaseException:
        os.close(read_end)
        raise
    finally:
        os.close(write_end)
        mounts.unmount(rootfs)  # the container keeps its own copy
    return DetachedContainer(runc_id, pid, os.fdopen(read_end, "rb", buffering=0), log_path)


def remove(runc: Runc, runc_id: str, bundle: Path, cgroup_dirs: Iterable[Path] = ()) -> None:
    """After the container ended: its runtime state, cgroup and writable layer. What
    `runc delete` would do for a container whose processes are gone (no hooks run
    here), without starting a runc process for it: a lab's teardown ends hundreds."""
    runc.forget(runc_id)
    cgroups.remove_dirs(cgroup_dirs, wait=0.5)
    mounts.unmount_under(bundle)
    mounts.remove_tree(bundle / "upper")
    mounts.remove_tree(bundle / "work")
