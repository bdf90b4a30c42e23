"""The OCI runtime binary (runc by default, crun where the host is pure cgroup v2),
as containerd's shim drives it: `run -d` a bundle and learn the container's PID. The
caller is a child subreaper, so a detached container's process becomes its child when
runc exits, and its exit status is the caller's to wait for, as a shim's is; once it
has ended, the shim removes its state (netlab.node.shim.remove).

Every container's state lives under the lab's own state root (`--root`), so the
host's runc state (/run/runc) never holds anything of a lab.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import json
import os
import shutil
import signal
import subprocess
import threading
from pathlib import Path

from netlab.errors import RealizeError

PR_SET_CHILD_SUBREAPER = 36
RUNTIMES = ("runc", "crun")
DEFAULT_RUNTIME = "runc"
RUN_TIMEOUT = 30.0


class OciRuntimeError(RealizeError):
    """The OCI runtime refused to create or start a container."""


def become_subreaper() -> None:
    """Orphaned descendants (detached containers) become this process's children."""
    libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
    if libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"prctl(PR_SET_CHILD_SUBREAPER): {os.strerror(err)}")


def runtime_name() -> str:
    """The OCI runtime this lab uses: $NETLAB_OCI_RUNTIME, else runc."""
    name = os.environ.get("NETLAB_OCI_RUNTIME", DEFAULT_RUNTIME)
    if name not in RUNTIMES:
        raise RealizeError(
            f"NETLAB_OCI_RUNTIME={name!r} is not an OCI runtime netlab drives; "
            f"use one of {', '.join(RUNTIMES)}"
        )
    return name


def version(name: str) -> str:
    """`runc://1.1.5`, as kubelet shows `containerd://1.7.2` for a node's runtime."""
    try:
        out = subprocess.run([name, "--version"], capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.TimeoutExpired):
        return f"{name}://unknown"
    words = out.stdout.split()
    number = words[2] if len(words) > 2 and words[1] == "version" else "unknown"
    return f"{name}://{number}"


class Runc:
    """One lab's containers under one runtime and one state root."""

    def __init__(self, state_root: Path, binary: str = DEFAULT_RUNTIME) -> None:
        self.state_root = state_root
        self.binary = binary

    def _base(self) -> list[str]:
        return [self.binary, "--root", str(self.state_root)]

    def run(self, container_id: str, bundle: Path, output_fd: int) -> int:
        """Create and start the container detached; its stdout and stderr are
        `output_fd` (runc passes its own stdio through). Returns its PID."""
        self.state_root.mkdir(parents=True, exist_ok=True)
        self.forget(container_id)  # the state of an earlier run of this container
        pid_file = bundle / "pid"
        log_file = bundle / "runtime.log"
        with contextlib.suppress(FileNotFoundError):
            pid_file.unlink()
        argv = [
            *self._base(),
            "--log",
            str(log_file),
            "run",
            "--detach",
            "--pid-file",
            str(pid_file),
            "--bundle",
            str(bundle),
            container_id,
        ]
        proc = subprocess.Popen(
            argv, stdin=subprocess.DEVNULL, stdout=output_fd, stderr=output_fd, close_fds=True
        )
        # a blocking wait, with a timer for the timeout: a wait with a timeout polls, at
        # 1, 3, 7, 15, 31, 63 ms..., so a runc that ends at 32 ms would be seen at 63
        timer = threading.Timer(RUN_TIMEOUT, proc.kill)
        timer.start()
        try:
            code = proc.wait()
        finally:
            timer.cancel()
        if code != 0:
            if code == -signal.SIGKILL:
                raise OciRuntimeError(f"{self.binary} run {container_id} did not end in time")
            raise OciRuntimeError(f"{self.binary} run: {last_error(log_file)}")
        try:
            return int(pid_file.read_text().strip())
        except (OSError, ValueError) as exc:
            raise OciRuntimeError(f"{self.binary} run {container_id} left no PID: {exc}") from exc

    def forget(self, container_id: str) -> None:
        """Drop the state directory only (its cgroup is reused by the next run)."""
        shutil.rmtree(self.state_root / container_id, ignore_errors=True)


def last_error(log_file: Path) -> str:
    """The runtime's last error message from its log (JSON or text lines)."""
    try:
        lines = log_file.read_text(errors="replace").splitlines()
    except OSError:
        return "failed (no log)"
    for line in reversed(lines):
        line = line.strip()
        if not line:
            continue
        with contextlib.suppress(ValueError, AttributeError):
            record = json.loads(line)
            if record.get("level") in ("error", "fatal"):
                return record.get("msg", line)
            continue
        if "level=error" in line or "level=fatal" in line:
            _, _, msg = line.partition("msg=")
            return msg.strip('"') or line
    return lines[-1] if lines else "failed"
