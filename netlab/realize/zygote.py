"""Sidecar containers forked from the lab's zygote (`mesh.zygote`).

`Zygote` starts the preloaded parent once per lab and asks it for one child
per sidecar container; `ForkedProcess` stands for such a child wherever the
lab handles a container process (exit monitor, stop, restart, cleanup by
PID): it has a pid, an output pipe and a log path like a runc container's,
and learns its exit code from the zygote, which is its parent and reaps it.
"""

from __future__ import annotations

import array
import json
import os
import select
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import IO

from netlab.errors import RealizeError

START_TIMEOUT = 10.0  # seconds for the zygote to import the mesh and answer


class ForkedProcess:
    """A container process forked by the zygote (not our child: no waitpid)."""

    def __init__(self, zygote: Zygote, pid: int, stdout: IO[bytes], log_path: Path) -> None:
        self.zygote, self.pid, self.stdout, self.log_path = zygote, pid, stdout, log_path
        self.returncode: int | None = None
        self.args = ["netlab-proxy"]

    def _gone(self) -> bool:
        try:
            with open(f"/proc/{self.pid}/stat", "rb") as f:
                stat = f.read()
        except OSError:
            return True
        return stat[stat.rindex(b")") + 2 :].split()[0] in (b"Z", b"X")

    def poll(self) -> int | None:
        if self.returncode is None:
            # gone: the zygote reaps it and says how at once, but give a loaded machine time
            code = self.zygote.exit_code(self.pid, wait=2.0 if self._gone() else 0.0)
            if code is not None:
                self.returncode = code
            elif self._gone():
                self.returncode = -1  # ended, but the zygote did not say how
        return self.returncode

    def wait(self, timeout: float | None = None) -> int:
        deadline = None if timeout is None else time.monotonic() + timeout
        try:
            fd = os.pidfd_open(self.pid)
        except ProcessLookupError:
            fd = None
        try:
            while self.poll() is None:
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    raise subprocess.TimeoutExpired(self.args, timeout or 0)
                if fd is not None:
                    select.select([fd], [], [], 0.05 if left is None else min(left, 0.05))
                else:
                    time.sleep(0.01)
        finally:
            if fd is not None:
                os.close(fd)
        return self.returncode  # type: ignore[return-value]

    def send_signal(self, sig: int) -> None:
        if self.poll() is None:
            os.kill(self.pid, sig)


class Zygote:
    """The lab's one preloaded sidecar parent, started on first use."""

    def __init__(self, log_path: Path, on_start=None, on_fork=None) -> None:
        self.log_path = log_path
        self.on_start = on_start  # called with the zygote's pid (the lab records it)
        # called with each child's pid as soon as the zygote reports it (from the reader
        # thread), so that a lab that dies before it takes the child still has it on record
        self.on_fork = on_fork
        self.lock = threading.Lock()
        self.proc: subprocess.Popen | None = None
        self.control: socket.socket | None = None
        self.codes: dict[int, int] = {}
        self.replies: list[dict] = []
        self.changed = threading.Condition()
        self.reader: threading.Thread | None = None

    def _start(self) -> None:
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "mesh.zygote", "--control-fd", str(theirs.fileno())],
                pass_fds=(theirs.fileno(),),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                cwd="/",
            )
        theirs.close()
        self.control = ours
        if self.on_start is not None:
            self.on_start(self.proc.pid)
        self.reader = threading.Thread(target=self._read, name="zygote", daemon=True)
        self.reader.start()

    def _read(self) -> None:
        control = self.control
        while True:
            try:
                data = control.recv(1 << 16)
            except OSError:
                data = b""
            if not data:
                with self.changed:
                    self.replies.append({"error": "the zygote ended"})
                    self.changed.notify_all()
                return
            message = json.loads(data)
            with self.changed:
                if "exit" in message:
                    self.codes[message["exit"]] = message["code"]
                else:
                    if "pid" in message and self.on_fork is not None:
                        self.on_fork(message["pid"])
                    self.replies.append(message)
                self.changed.notify_all()

    def spawn(
        self, netns_path: str, argv: Sequence[str], env: Mapping[str, str], log_path: Path
    ) -> ForkedProcess:
        """Fork one sidecar into the namespace; its output comes out of a pipe."""
        return self.spawn_many([(netns_path, argv, env, log_path)])[0]

    def spawn_many(
        self,
        requests: Sequence[tuple[str, Sequence[str], Mapping[str, str], Path]],
        while_waiting: Callable[[], None] | None = None,
        sandboxes: Sequence[Mapping | None] | None = None,
    ) -> list[ForkedProcess]:
        """Fork several sidecars: every request is sent before the first answer is
        awaited, and `while_waiting` runs meanwhile (the lab starts the apps while
        the zygote forks); the answers come in order. `sandboxes`, one per request:
        the pod's UTS and IPC namespace files and its /etc files (see mesh.zygote)."""
        with self.lock:
            if self.proc is None or self.proc.poll() is not None:
                self._start()
            pipes = []
            try:
                for i, (netns_path, argv, env, _log) in enumerate(requests):
                    read_end, write_end = os.pipe()
                    pipes.append(read_end)
                    message = {"argv": list(argv), "env": dict(env), "netns": netns_path}
                    if sandboxes is not None and sandboxes[i] is not None:
                        message["sandbox"] = dict(sandboxes[i])
                    request = json.dumps(message)
                    fds = array.array("i", [write_end])
                    try:
                        self.control.sendmsg(
                            [request.encode()], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, fds)]
                        )
                    except OSError as exc:
                        raise RealizeError(f"the sidecar zygote is gone: {exc}") from exc
                    finally:
                        os.close(write_end)
                failure: BaseException | None = None
                if while_waiting is not None:
                    try:
                        while_waiting()
                    except BaseException as exc:  # collect the answers first: the order holds
                        failure = exc
                replies = [self._reply() for _ in pipes]
            except BaseException:
                for fd in pipes:
                    os.close(fd)
                raise
            out, refused = [], None
            for (_ns, _argv, _env, log_path), read_end, reply in zip(
                requests, pipes, replies, strict=True
            ):
                if "pid" not in reply:
                    os.close(read_end)
                    refused = refused or reply.get("error")
                    continue
                log_path.parent.mkdir(parents=True, exist_ok=True)
                out.append(ForkedProcess(self, reply["pid"], os.fdopen(read_end, "rb"), log_path))
            if refused is not None or failure is not None:
                for proc in out:  # all or nothing: the caller tears the lab down anyway
                    proc.send_signal(signal.SIGKILL)
                if failure is not None:
                    raise failure
                raise RealizeError(f"the sidecar zygote refused: {refused}")
            return out

    def _reply(self) -> dict:
        deadline = time.monotonic() + START_TIMEOUT
        with self.changed:
            while not self.replies:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise RealizeError(
                        f"the sidecar zygote did not answer in {START_TIMEOUT:.0f} s; "
                        f"see {self.log_path}"
                    )
                self.changed.wait(left)
            return self.replies.pop(0)

    def exit_code(self, pid: int, wait: float = 0.0) -> int | None:
        deadline = time.monotonic() + wait
        with self.changed:
            while pid not in self.codes:
                left = deadline - time.monotonic()
                if left <= 0:
                    return None
                self.changed.wait(left)
            return self.codes[pid]

    def close(self) -> None:
        """End the zygote (its children are containers: the lab stops them by PID)."""
        with self.lock:
            if self.control is not None:
                try:
                    self.control.shutdown(socket.SHUT_RDWR)  # the reader and the zygote see EOF
                except OSError:
                    pass
                self.control.close()
            if self.proc is not None:
                try:
                    self.proc.wait(timeout=2.0)
                except subprocess.TimeoutExpired:
                    self.proc.kill()
                    self.proc.wait(timeout=2.0)
            self.proc = self.control = None
