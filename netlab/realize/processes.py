"""What the lab's containers share as processes: their environment, their logs
(timestamped CRI records, written by one thread for the whole lab), how they are
stopped, and the record of every process the lab starts (so cleanup ends exactly
those, by PID)."""

from __future__ import annotations

import contextlib
import logging
import os
import resource
import selectors
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from netlab import crilog
from netlab.plan import PodPlan
from netlab.spec.model import ContainerSpec

log = logging.getLogger(__name__)

BASE_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


def container_path() -> str:
    """Containers run from the host: the standard PATH, behind netlab's own
    venv when it runs from one, so that `python3 -m netlab.apps.echo` works."""
    if sys.prefix != sys.base_prefix:
        return f"{Path(sys.executable).parent}:{BASE_PATH}"
    return BASE_PATH


def start_time(pid: int) -> int | None:
    """The process's start time in clock ticks (field 22 of /proc/<pid>/stat):
    with the PID, it names one process even after PIDs are reused."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
    except OSError:
        return None
    return int(stat[stat.rindex(b")") + 2 :].split()[19])


class PidRecord:
    """An append-only file of `pid starttime role name` lines in the run directory."""

    def __init__(self, path: Path):
        self.path = path
        self.lock = threading.Lock()

    def add(self, pid: int, role: str, name: str) -> None:
        started = start_time(pid)
        if started is None:
            return
        with self.lock, open(self.path, "a") as f:
            f.write(f"{pid} {started} {role} {name}\n")

    @staticmethod
    def read(path: Path) -> list[tuple[int, int, str, str]]:
        entries = []
        with contextlib.suppress(FileNotFoundError), open(path) as f:
            for line in f:
                parts = line.split(maxsplit=3)
                if len(parts) == 4 and parts[0].isdigit() and parts[1].isdigit():
                    entries.append((int(parts[0]), int(parts[1]), parts[2], parts[3].strip()))
        return entries


def alive_as_recorded(pid: int, started: int | None) -> bool:
    """The same process is still there and not a zombie (which holds nothing)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
    except OSError:
        return False
    rest = stat[stat.rindex(b")") + 2 :].split()
    return started is not None and int(rest[19]) == started and rest[0] != b"Z"


def container_env(pod: PodPlan, container: ContainerSpec, host_path: bool = True) -> dict[str, str]:
    """The environment kubelet gives a container, over its image's; `host_path`: with
    the host's PATH (the default image's, or an image that sets none)."""
    env = {
        "HOME": "/root",
        "HOSTNAME": pod.name,
        "POD_NAME": pod.name,
        "POD_NAMESPACE": pod.namespace,
        "POD_IP": str(pod.address.ip),
        "NODE_NAME": pod.node,
    }
    if host_path:
        env = {"PATH": container_path(), **env}
    env.update(dict(container.env))
    return env


@dataclass
class _Pipe:
    path: Path
    stream: bytes
    pending: bytes = b""  # an unfinished line
    waiting_since: float = 0.0  # monotonic time the unfinished line started to wait


class _SelectorThread:
    """One thread waiting on a selector. Other threads register descriptors
    under `lock` (data: anything but None) and call `_wake()`; the wake pipe's
    own key has data None. Subclasses set their state before calling this
    __init__, which starts the thread on their `_run`."""

    def __init__(self, name: str) -> None:
        self.selector = selectors.DefaultSelector()
        self.lock = threading.Lock()
        self.wake_r, self.wake_w = os.pipe()
        self.selector.register(self.wake_r, selectors.EVENT_READ, None)
        self.running = True
        self.thread = threading.Thread(target=self._run, name=name, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        raise NotImplementedError

    def _wake(self) -> None:
        os.write(self.wake_w, b"x")

    def _stop_thread(self) -> None:
        with self.lock:
            self.running = False
        self._wake()
        self.thread.join(timeout=2.0)

    def _close_all(self) -> None:
        """Close every registered descriptor, the selector and the wake pipe."""
        with self.lock:
            for key in list(self.selector.get_map().values()):
                if key.data is not None:
                    os.close(key.fd)
            self.selector.close()
        os.close(self.wake_r)
        os.close(self.wake_w)


class OutputWriter(_SelectorThread):
    """Every container's output, for a whole lab, from one thread: reads the pipes
    as they become readable and appends CRI records (netlab.crilog) to their log
    files, each line stamped with the time it was read (as containerd's shim
    does). A line waits for its newline, at most `hold` seconds (a prompt still
    shows). A process that restarts gets a new pipe and appends to the same file.
    The log file is opened per batch, so a container costs one descriptor here."""

    def __init__(self, clock: Callable[[], int] = time.time_ns, hold: float = 0.5) -> None:
        self.clock, self.hold = clock, hold
        super().__init__("container-output")

    def add(self, pipe: IO[bytes], path: Path, stream: bytes = crilog.STDOUT) -> None:
        """Take over `pipe` (closed at its end of file) and log what comes out of it."""
        fd = os.dup(pipe.fileno())
        pipe.close()  # the Popen keeps no reader of its own
        os.set_blocking(fd, False)
        with self.lock:
            if not self.running:
                os.close(fd)
                return
            self.selector.register(fd, selectors.EVENT_READ, _Pipe(path, stream))
        self._wake()

    def _run(self) -> None:
        while self.running:
            with self.lock:
                waiting = [k for k in self.selector.get_map().values() if k.data and k.data.pending]
            events = self.selector.select(timeout=self.hold / 2 if waiting else 1.0)
            for key, _ in events:
                if key.data is None:
                    os.read(self.wake_r, 4096)
                else:
                    self._pump(key.fd, key.data)
            now = time.monotonic()
            for key in waiting:
                pipe: _Pipe = key.data
                if pipe.pending and now - pipe.waiting_since >= self.hold:
                    self._write(pipe, b"", flush=True)

    def _pump(self, fd: int, pipe: _Pipe) -> None:
        """Read what the pipe has now; at its end of file, forget it."""
        try:
            data = os.read(fd, 65536)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if not data:
            self._write(pipe, b"", flush=True)
            with self.lock:
                with contextlib.suppress(KeyError, ValueError):
                    self.selector.unregister(fd)
                os.close(fd)
            return
        self._write(pipe, data)

    def _write(self, pipe: _Pipe, data: bytes, flush: bool = False) -> None:
        had = pipe.pending
        records, pipe.pending = crilog.split(self.clock(), pipe.stream, pipe.pending, data, flush)
        if pipe.pending and (not had or records):
            pipe.waiting_since = time.monotonic()
        if not records:
            return
        try:
            out = os.open(pipe.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o644)
            try:
                os.write(out, records)
            finally:
                os.close(out)
        except OSError as exc:  # e.g. the run directory is being removed
            log.debug("cannot write %s: %s", pipe.path, exc)

    def close(self) -> None:
        """Stop, after writing what the pipes hold right now."""
        self._stop_thread()
        with self.lock:
            keys = [k for k in self.selector.get_map().values() if k.data is not None]
        for key in keys:
            self._pump(key.fd, key.data)  # one last read each
            if key.data.pending:
                self._write(key.data, b"", flush=True)
        self._close_all()


def signal_group(pid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, sig)
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, sig)


def stop_processes(procs: Iterable[subprocess.Popen], grace: float = 1.0) -> None:
    """SIGTERM every process group, wait up to `grace` seconds, then SIGKILL."""
    procs = [p for p in procs if p.poll() is None]
    for proc in procs:
        signal_group(proc.pid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    for proc in procs:
        remaining = max(0.0, deadline - time.monotonic())
        try:
            proc.wait(timeout=remaining)
        except subprocess.TimeoutExpired:
            signal_group(proc.pid, signal.SIGKILL)
    for proc in procs:
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=2.0)


class PolledProcess:
    """A process handled as a Popen is (poll, wait, signals) that is not a Popen of
    ours: subclasses say how `poll` learns that it ended."""

    pid: int
    returncode: int | None
    args: list[str]

    def poll(self) -> int | None:
        raise NotImplementedError

    def wait(self, timeout: float | None = None) -> int:
        deadline = None if timeout is None else time.monotonic() + timeout
        while self.poll() is None:
            if deadline is not None and time.monotonic() > deadline:
                raise subprocess.TimeoutExpired(self.args, timeout or 0)
            time.sleep(0.01)
        return self.returncode  # type: ignore[return-value]

    def send_signal(self, sig: int) -> None:
        if self.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, sig)

    def terminate(self) -> None:
        self.send_signal(signal.SIGTERM)

    def kill(self) -> None:
        self.send_signal(signal.SIGKILL)


class Orphan(PolledProcess):
    """A process started by an earlier supervisor (not our child: no exit code), as
    far as stopping it goes: poll, wait, signals. `returncode` is -1 once it ended."""

    def __init__(self, pid: int, started: int | None) -> None:
        self.pid, self.started = pid, started
        self.returncode: int | None = None
        self.args = [str(pid)]

    def poll(self) -> int | None:
        if self.returncode is None and not alive_as_recorded(self.pid, self.started):
            self.returncode = -1
        return self.returncode


@dataclass
class Watched:
    proc: subprocess.Popen
    on_exit: Callable[[subprocess.Popen], None]


class ExitMonitor(_SelectorThread):
    """Calls back when a watched process exits, via pidfds in one thread:
    no polling, and no waitpid(-1) that would steal other code's children.
    Like a container monitor (conmon, containerd's shim) it also keeps the
    containers' logs: the output of a watched container (a runc one or a forked
    sidecar) goes to its log file through one `OutputWriter` (a thread of its own, so that a slow
    exit callback never holds up the output of other containers)."""

    def __init__(self) -> None:
        raise_fd_limit()  # a pidfd and a pipe per container
        self.output = OutputWriter()
        super().__init__("exit-monitor")

    def watch(self, proc: subprocess.Popen, on_exit: Callable[[subprocess.Popen], None]) -> None:
        log_path = getattr(proc, "log_path", None)  # a runc container or a forked sidecar
        if log_path is not None and proc.stdout is not None:
            self.output.add(proc.stdout, log_path)
        try:
            fd = os.pidfd_open(proc.pid)
        except ProcessLookupError:
            on_exit(proc)
            return
        with self.lock:
            self.selector.register(fd, selectors.EVENT_READ, Watched(proc, on_exit))
        self._wake()

    def forget(self, proc: subprocess.Popen) -> None:
        with self.lock:
            for key in list(self.selector.get_map().values()):
                if isinstance(key.data, Watched) and key.data.proc is proc:
                    self.selector.unregister(key.fd)
                    os.close(key.fd)

    def _run(self) -> None:
        while self.running:
            events = self.selector.select(timeout=1.0)
            for key, _ in events:
                if key.data is None:
                    os.read(self.wake_r, 4096)
                    continue
                with self.lock:
                    try:
                        self.selector.unregister(key.fd)
                    except (KeyError, ValueError):
                        continue  # forgotten meanwhile
                    os.close(key.fd)
                watched: Watched = key.data
                watched.proc.poll()
                try:
                    watched.on_exit(watched.proc)
                except Exception:  # a callback must not kill the monitor
                    log.exception("exit callback failed")

    def close(self) -> None:
        self._stop_thread()
        self._close_all()
        self.output.close()


def raise_fd_limit() -> None:
    """Let this process open as many descriptors as its hard limit allows (as Go
    programs do at start): a 512-pod lab holds two per container. Only this process's
    own limit changes, nothing machine-wide."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = 1 << 20 if hard == resource.RLIM_INFINITY else hard
    if soft != resource.RLIM_INFINITY and soft < wanted:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
