"""Containers as real processes in a pod's namespace, and the record of
every process the lab starts (so cleanup ends exactly those, by PID)."""

from __future__ import annotations

import contextlib
import logging
import os
import selectors
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

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


def container_env(pod: PodPlan, container: ContainerSpec) -> dict[str, str]:
    env = {
        "PATH": container_path(),
        "HOME": "/root",
        "HOSTNAME": pod.name,
        "POD_NAME": pod.name,
        "POD_NAMESPACE": pod.namespace,
        "POD_IP": str(pod.address.ip),
        "NODE_NAME": pod.node,
    }
    env.update(dict(container.env))
    return env


def start_container(pod: PodPlan, container: ContainerSpec, log_path: Path) -> subprocess.Popen:
    """Start one container: its command in the pod's namespace through
    `ip netns exec`, which also shows it the pod's /etc/netns files as
    /etc/resolv.conf and /etc/hosts. A session of its own, so the whole
    process group can be signalled; output appended to its log file."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "ab") as log:
        return subprocess.Popen(
            ["ip", "netns", "exec", pod.netns, *container.argv],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=container_env(pod, container),
            cwd="/",
            start_new_session=True,
        )


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


@dataclass
class Watched:
    proc: subprocess.Popen
    on_exit: Callable[[subprocess.Popen], None]


class ExitMonitor:
    """Calls back when a watched process exits, via pidfds in one thread:
    no polling, and no waitpid(-1) that would steal other code's children."""

    def __init__(self) -> None:
        self.selector = selectors.DefaultSelector()
        self.lock = threading.Lock()
        self.wake_r, self.wake_w = os.pipe()
        self.selector.register(self.wake_r, selectors.EVENT_READ, None)
        self.running = True
        self.thread = threading.Thread(target=self._run, name="exit-monitor", daemon=True)
        self.thread.start()

    def watch(self, proc: subprocess.Popen, on_exit: Callable[[subprocess.Popen], None]) -> None:
        try:
            fd = os.pidfd_open(proc.pid)
        except ProcessLookupError:
            on_exit(proc)
            return
        with self.lock:
            self.selector.register(fd, selectors.EVENT_READ, Watched(proc, on_exit))
        os.write(self.wake_w, b"x")

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
        self.running = False
        os.write(self.wake_w, b"x")
        self.thread.join(timeout=2.0)
        with self.lock:
            for key in list(self.selector.get_map().values()):
                if key.data is not None:
                    os.close(key.fd)
            self.selector.close()
        os.close(self.wake_r)
        os.close(self.wake_w)
