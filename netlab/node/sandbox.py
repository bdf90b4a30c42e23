"""Pod sandboxes: the namespaces a pod's containers share, as CRI's RunPodSandbox
makes them. The network namespace is the pod's netns (netlab.node.cni); the
UTS namespace (hostname = the pod's name) and the IPC namespace are held by a
thread of the lab's runtime process (netlab.realize.runtimed), one per pod: it
unshares them (unshare(2) of UTS and IPC changes only the calling thread), sets
the hostname and waits. Containers join them by /proc/<runtime>/task/<thread>/ns/*.

So a sandbox is no pause process and no mount: nothing in the host's mount table
grows with the pods (runc copies that table into every container it starts), and
the sandboxes outlive a supervisor restart with the runtime that holds them.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import os
import queue
import socket
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from netlab.errors import RealizeError

CLONE_NEWUTS = 0x04000000
CLONE_NEWIPC = 0x08000000
HOSTNAME_MAX = 64  # the kernel's limit
START_TIMEOUT = 5.0

_libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)


@dataclass(frozen=True)
class SandboxRequest:
    name: str  # the sandbox's name (the pod's netns name)
    hostname: str  # the pod's name

    def message(self) -> dict:
        return {"name": self.name, "hostname": self.hostname[:HOSTNAME_MAX]}


@dataclass(frozen=True)
class SandboxPaths:
    uts: Path
    ipc: Path


def paths_of(holder_pid: int, tid: int) -> SandboxPaths:
    task = Path(f"/proc/{holder_pid}/task/{tid}/ns")
    return SandboxPaths(task / "uts", task / "ipc")


class Holders:
    """In the runtime process: one thread per sandbox, holding its namespaces."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.held: dict[str, tuple[int, threading.Event]] = {}

    def create(self, items: Sequence[Mapping]) -> list[dict]:
        out = []
        for item in items:
            name = item["name"]
            with self.lock:
                existing = self.held.get(name)
            if existing is not None:
                out.append({"name": name, "tid": existing[0]})
                continue
            ready: queue.SimpleQueue = queue.SimpleQueue()
            done = threading.Event()
            threading.Thread(
                target=self._hold, args=(item["hostname"], ready, done), daemon=True
            ).start()
            try:
                result = ready.get(timeout=START_TIMEOUT)
            except queue.Empty:
                result = "the sandbox's thread did not start"
            if isinstance(result, str):
                out.append({"name": name, "error": result})
                continue
            with self.lock:
                self.held[name] = (result, done)
            out.append({"name": name, "tid": result})
        return out

    @staticmethod
    def _hold(hostname: str, ready: queue.SimpleQueue, done: threading.Event) -> None:
        if _libc.unshare(CLONE_NEWUTS | CLONE_NEWIPC) != 0:
            err = ctypes.get_errno()
            ready.put(f"unshare uts, ipc: {os.strerror(err)}")
            return
        try:
            socket.sethostname(hostname)
        except OSError as exc:
            ready.put(f"sethostname {hostname!r}: {exc.strerror}")
            return
        ready.put(threading.get_native_id())
        done.wait()  # the namespaces live as long as this thread

    def remove(self, names: Sequence[str]) -> None:
        with self.lock:
            ended = [self.held.pop(n, None) for n in names]
        for entry in ended:
            if entry is not None:
                entry[1].set()

    def listing(self) -> dict[str, int]:
        with self.lock:
            return {name: tid for name, (tid, _) in self.held.items()}


class Sandboxes:
    """The supervisor's side: asks the runtime for sandboxes, knows where they are."""

    def __init__(self, runtime) -> None:  # a netlab.realize.runtime.Runtime
        self.runtime = runtime
        self.tids: dict[str, int] = {}

    def create(self, requests: Sequence[SandboxRequest]) -> None:
        if not requests:
            return
        reply = self.runtime.request("sandboxes", items=[r.message() for r in requests])
        refused = [a for a in reply["sandboxes"] if "tid" not in a]
        for answer in reply["sandboxes"]:
            if "tid" in answer:
                self.tids[answer["name"]] = answer["tid"]
        if refused:
            raise RealizeError(f"pod sandbox {refused[0]['name']}: {refused[0]['error']}")

    def adopt(self, held: Mapping[str, int]) -> None:
        """The sandboxes a running runtime holds (a supervisor taking the lab over)."""
        self.tids.update(held)

    def paths(self, name: str) -> SandboxPaths:
        return paths_of(self.runtime.daemon_pid or 0, self.tids.get(name, 0))

    def remove(self, name: str) -> None:
        self.tids.pop(name, None)
        with contextlib.suppress(Exception):  # the runtime may be gone: so are they
            self.runtime.request("remove_sandboxes", names=[name])
