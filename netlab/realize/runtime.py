"""The supervisor's side of the lab's container runtime (netlab.realize.runtimed):
start the daemon or find it running, start containers through it, hear how they
end. `RuntimeProcess` stands for a container wherever the lab handles one (stop,
restart, signals by PID): like a Popen, but its exit code comes from the runtime,
which is its parent.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import logging
import os
import queue
import socket
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from netlab.errors import RealizeError
from netlab.realize.processes import alive_as_recorded, raise_fd_limit

log = logging.getLogger(__name__)

SOCKET_NAME = "runtime.sock"
STATE_DIR = "runc"  # the OCI runtime's state root, in the lab's run directory
START_TIMEOUT = 10.0  # seconds for the daemon to listen, or to answer a request
BATCH = 48  # containers per start request (a SOCK_SEQPACKET message has a size limit)


@dataclass(frozen=True)
class ContainerRequest:
    id: str  # namespace/pod/container
    argv: Sequence[str]
    env: Mapping[str, str]
    netns: str  # the pod's netns: its name (runc), or its path (a forked sidecar)
    log: Path
    fork: bool = False  # a sidecar from the preloaded zygote
    bundle: Path | None = None  # an OCI bundle: runc runs the container
    runc_id: str = ""
    lower: str = ""  # the image's root filesystem, under the container's writable layer
    cgroups_path: str = ""
    sandbox: Mapping | None = None  # a forked sidecar's pod namespaces and /etc files

    def message(self) -> dict:
        message = {
            "id": self.id,
            "argv": list(self.argv),
            "env": dict(self.env),
            "netns": self.netns,
            "log": str(self.log),
            "fork": self.fork,
        }
        if self.sandbox is not None:
            message["sandbox"] = dict(self.sandbox)
        if self.bundle is not None:
            message.update(
                bundle=str(self.bundle),
                runc_id=self.runc_id,
                lower=self.lower,
                cgroups_path=self.cgroups_path,
            )
        return message


class RuntimeProcess:
    """A container the runtime started (or was running when the supervisor came back)."""

    def __init__(self, runtime: Runtime, ident: str, pid: int, started: int | None) -> None:
        self.runtime, self.id, self.pid, self.started = runtime, ident, pid, started
        self.returncode: int | None = None
        self.args = [ident]

    @property
    def oom_killed(self) -> bool:
        """The kernel's OOM killer ended it (the runtime read its cgroup)."""
        return self.pid in self.runtime.ooms

    def poll(self) -> int | None:
        if self.returncode is None:
            code = self.runtime.exit_code(self.pid)
            if code is not None:
                self.returncode = code
            elif not self.runtime.connected and not alive_as_recorded(self.pid, self.started):
                self.returncode = -1  # the runtime is gone: nobody will say how it ended
        return self.returncode

    def wait(self, timeout: float | None = None) -> int:
        deadline = None if timeout is None else time.monotonic() + timeout
        while self.poll() is None:
            left = None if deadline is None else deadline - time.monotonic()
            if left is not None and left <= 0:
                raise subprocess.TimeoutExpired(self.args, timeout or 0)
            self.runtime.wait_exit(self.pid, 0.1 if left is None else min(left, 0.1))
        return self.returncode  # type: ignore[return-value]

    def send_signal(self, sig: int) -> None:
        if self.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, sig)

    def kill(self) -> None:
        self.send_signal(9)


class Runtime:
    """A connection to the lab's runtime daemon, started on first use."""

    def __init__(self, run_dir: Path, record_pid: Callable[[int, str, str], None]) -> None:
        self.run_dir = run_dir
        self.socket_path = run_dir / SOCKET_NAME
        self.record_pid = record_pid
        self.sock: socket.socket | None = None
        self.seq = itertools.count(1)
        self.changed = threading.Condition()
        self.replies: dict[int, dict] = {}
        self.codes: dict[int, int] = {}
        self.ooms: set[int] = set()  # containers the OOM killer ended
        self.callbacks: dict[int, Callable[[RuntimeProcess], None]] = {}
        self.procs: dict[int, RuntimeProcess] = {}
        self.connected = False
        self.daemon_pid: int | None = None
        self.sandboxes: dict[str, int] = {}  # as the last listing found them: name -> thread
        self.send_lock = threading.Lock()
        self.exits: queue.SimpleQueue = queue.SimpleQueue()
        self.caller: threading.Thread | None = None  # started on connecting: after any fork

    # -- the daemon -------------------------------------------------------

    def start_daemon(self) -> None:
        """Start the lab's runtime (its own session: it outlives this process)."""
        raise_fd_limit()
        logs = self.run_dir / "logs"
        logs.mkdir(parents=True, exist_ok=True)
        with open(logs / "runtime.log", "ab") as out:
            proc = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "netlab.realize.runtimed",
                    "--socket",
                    str(self.socket_path),
                    "--zygote-log",
                    str(logs / "zygote.log"),
                    "--pids",
                    str(self.run_dir / "pids"),
                    "--state-root",
                    str(self.run_dir / STATE_DIR),
                ],
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                cwd="/",
            )
        self.record_pid(proc.pid, "runtime", "netlab.realize.runtimed")
        deadline = time.monotonic() + START_TIMEOUT
        while not self._try_connect():
            if proc.poll() is not None:
                raise RealizeError(
                    f"the lab's container runtime ended at start; see {logs / 'runtime.log'}"
                )
            if time.monotonic() > deadline:
                raise RealizeError(
                    f"the lab's container runtime did not listen in time; see {logs}"
                )
            time.sleep(0.01)
        threading.Thread(target=proc.wait, daemon=True).start()  # reap it when it ends

    def connect(self) -> bool:
        """Connect to a runtime that is running already (a supervisor adopting its lab)."""
        return self._try_connect()

    def _try_connect(self) -> bool:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        try:
            sock.connect(str(self.socket_path))
        except OSError:
            sock.close()
            return False
        self.sock, self.connected = sock, True
        creds = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
        self.daemon_pid = struct.unpack("3i", creds)[0]  # the containers' cgroups are under its
        if self.caller is None:  # `netlab up -d` forks after the Lab is made: threads don't follow
            self.caller = threading.Thread(
                target=self._call_back, name="runtime-exits", daemon=True
            )
            self.caller.start()
        threading.Thread(target=self._read, args=(sock,), name="runtime", daemon=True).start()
        return True

    def _read(self, sock: socket.socket) -> None:
        while True:
            try:
                data = sock.recv(1 << 20)
            except OSError:
                data = b""
            if not data:
                with self.changed:
                    if sock is self.sock or self.sock is None:
                        self.connected = False
                    self.changed.notify_all()
                return
            message = json.loads(data)
            callback = None
            with self.changed:
                if "exit" in message:
                    pid = message["exit"]
                    self.codes[pid] = message["code"]
                    if message.get("oom"):
                        self.ooms.add(pid)
                    callback = self.callbacks.pop(pid, None)
                    proc = self.procs.pop(pid, None)
                else:
                    self.replies[message["seq"]] = message
                self.changed.notify_all()
            if callback is not None and proc is not None:
                self.exits.put((callback, proc))

    def _call_back(self) -> None:
        """Exit callbacks, in a thread of their own: one may take a lock that a thread
        waiting on an answer from the reader holds."""
        while True:
            callback, proc = self.exits.get()
            proc.poll()
            try:
                callback(proc)
            except Exception:  # a callback must not end the others
                log.exception("exit callback failed")

    def request(self, op: str, timeout: float = START_TIMEOUT, **fields) -> dict:
        seq = next(self.seq)
        if self.sock is None:
            raise RealizeError("not connected to the lab's container runtime")
        with self.send_lock:
            try:
                self.sock.send(json.dumps({"seq": seq, "op": op, **fields}).encode())
            except OSError as exc:
                raise RealizeError(f"the lab's container runtime is gone: {exc}") from exc
        deadline = time.monotonic() + timeout
        with self.changed:
            while seq not in self.replies:
                left = deadline - time.monotonic()
                if not self.connected or left <= 0:
                    raise RealizeError(
                        f"the lab's container runtime did not answer {op!r}; "
                        f"see {self.run_dir / 'logs' / 'runtime.log'}"
                    )
                self.changed.wait(min(left, 0.5))
            reply = self.replies.pop(seq)
        if "error" in reply:
            raise RealizeError(f"the lab's container runtime refused {op!r}: {reply['error']}")
        return reply

    # -- containers -------------------------------------------------------

    def start(self, requests: Sequence[ContainerRequest]) -> list[RuntimeProcess]:
        """Start these containers (all, or none: on any refusal the started ones are
        killed and RealizeError says why)."""
        started: list[RuntimeProcess] = []
        refused = None
        for first in range(0, len(requests), BATCH):
            batch = requests[first : first + BATCH]
            reply = self.request("start", items=[r.message() for r in batch])
            for answer in reply["started"]:
                if "pid" in answer:
                    started.append(self.adopt(answer["id"], answer["pid"], answer["started"]))
                else:
                    refused = refused or f"{answer['id']}: {answer['error']}"
        if refused is not None:
            for proc in started:
                proc.kill()
            raise RealizeError(f"cannot start container {refused}")
        return started

    def adopt(self, ident: str, pid: int, started: int | None) -> RuntimeProcess:
        proc = RuntimeProcess(self, ident, pid, started)
        with self.changed:
            self.procs[pid] = proc
        return proc

    def listing(self) -> tuple[list[dict], list[dict]]:
        """The containers running now, and those that ended while nobody listened."""
        reply = self.request("list")
        self.sandboxes = reply.get("sandboxes") or {}
        return reply["running"], reply["exited"]

    def on_exit(self, proc: RuntimeProcess, callback: Callable[[RuntimeProcess], None]) -> None:
        """Call back (from the reader thread) once the container has ended."""
        with self.changed:
            if proc.pid not in self.codes:
                self.callbacks[proc.pid] = callback
                self.procs[proc.pid] = proc
                return
        self.exits.put((callback, proc))  # it ended already: called back like the others

    def forget(self, proc: RuntimeProcess) -> None:
        with self.changed:
            self.callbacks.pop(proc.pid, None)

    def exit_code(self, pid: int) -> int | None:
        with self.changed:
            return self.codes.get(pid)

    def wait_exit(self, pid: int, timeout: float) -> None:
        with self.changed:
            if pid not in self.codes and self.connected:
                self.changed.wait(timeout)
                return
        time.sleep(min(timeout, 0.01))  # nobody to tell us: look at /proc again soon

    def shutdown(self) -> None:
        """End the daemon (and its zygote): the lab has stopped the containers."""
        if self.sock is None:
            return
        with contextlib.suppress(RealizeError):
            self.request("shutdown", timeout=5.0)
        self.disconnect()

    def disconnect(self) -> None:
        """Leave the daemon running (the supervisor goes, the lab stays)."""
        if self.sock is not None:
            with contextlib.suppress(OSError):
                self.sock.shutdown(socket.SHUT_RDWR)
            self.sock.close()
            self.sock = None
