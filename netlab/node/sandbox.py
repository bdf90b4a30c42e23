"""Pod sandboxes: the namespaces a pod's containers share, as CRI's RunPodSandbox
makes them. The network namespace is the pod's netns (netlab.realize.pods); the
UTS namespace (hostname = the pod's name) and the IPC namespace are kept as bind
mounts of their namespace files, so they outlive every container without a pause
process: `<root>/<sandbox>/uts`, `<root>/<sandbox>/ipc`.

A worker thread makes them: unshare(2) of UTS and IPC changes only the calling
thread, which then names the new namespaces by /proc/thread-self/ns/* and binds
them onto the files. The thread ends with namespaces nobody else uses.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import socket
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from netlab.node import mounts

CLONE_NEWUTS = 0x04000000
CLONE_NEWIPC = 0x08000000
SHARED = ("uts", "ipc")

_libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)


@dataclass(frozen=True)
class SandboxRequest:
    name: str  # the sandbox's directory name (the pod's netns name)
    hostname: str  # the pod's name, cut to the kernel's 64 characters


@dataclass(frozen=True)
class SandboxPaths:
    uts: Path
    ipc: Path


class Sandboxes:
    """The lab's pod sandboxes under one directory of its run directory."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def paths(self, name: str) -> SandboxPaths:
        return SandboxPaths(self.root / name / "uts", self.root / name / "ipc")

    def create(self, requests: Sequence[SandboxRequest]) -> None:
        """Make each sandbox's UTS and IPC namespaces (in one worker thread)."""
        if not requests:
            return
        failure: list[BaseException] = []

        def work() -> None:
            try:
                for request in requests:
                    self._create_one(request)
            except BaseException as exc:  # raised in the caller's thread
                failure.append(exc)

        worker = threading.Thread(target=work, name="sandboxes")
        worker.start()
        worker.join()
        if failure:
            raise failure[0]

    def _create_one(self, request: SandboxRequest) -> None:
        directory = self.root / request.name
        directory.mkdir(parents=True, exist_ok=True)
        mounts.check(_libc.unshare(CLONE_NEWUTS | CLONE_NEWIPC), "unshare uts, ipc")
        socket.sethostname(request.hostname[:64])
        tid = threading.get_native_id()
        for kind in SHARED:
            target = directory / kind
            if os.path.ismount(target):  # a sandbox left by a crash: replace it
                mounts.unmount(target)
            target.touch()
            mounts.bind(f"/proc/self/task/{tid}/ns/{kind}", target)

    def remove(self, name: str) -> None:
        directory = self.root / name
        mounts.unmount_under(directory)
        mounts.remove_tree(directory)

    def exists(self, name: str) -> bool:
        return all(os.path.ismount(p) for p in (self.paths(name).uts, self.paths(name).ipc))
