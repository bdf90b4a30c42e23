"""Removing what a lab left behind (after a crash, `kill -9`, or `netlab clean`),
and nothing else.

What is ours: the namespaces named `nl-<lab>`, `nl-<lab>.*` and `nl-<lab>:*`
(see netlab.plan.names), their /etc/netns directories, the run directory
/run/netlab/<lab> (with any container root still mounted there, unmounted first,
and the OCI runtime's state), the
cgroups named `nl-<lab>` in every hierarchy, and processes that either run inside one of those
namespaces or are recorded in the run directory's `pids` file with the same
start time (a reused PID is left alone). Processes are ended by PID, never by
name; Mininet's own cleanup (`mn -c`) is never called. Interfaces need no
separate step: they all live inside the lab's namespaces and go with them.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path

from netlab import paths
from netlab.errors import NetlabError
from netlab.node import cgroups, loopdisks, mounts
from netlab.node.cni import ETC_NETNS
from netlab.plan.names import PREFIX_ROOT, lab_prefix
from netlab.realize import netns
from netlab.realize.processes import PidRecord, alive_as_recorded, start_time

SUPERVISOR_FILE = "supervisor.pid"


class LabRunning(NetlabError):
    """A live supervisor owns that lab."""


@dataclass
class CleanReport:
    lab: str
    processes: list[int] = field(default_factory=list)
    namespaces: list[str] = field(default_factory=list)
    files: list[str] = field(default_factory=list)

    @property
    def empty(self) -> bool:
        return not (self.processes or self.namespaces or self.files)


def owned(name: str, prefix: str) -> bool:
    return name == prefix or name.startswith(prefix + ".") or name.startswith(prefix + ":")


def write_supervisor(run_dir: Path) -> None:
    pid = os.getpid()
    (run_dir / SUPERVISOR_FILE).write_text(f"{pid} {start_time(pid)}\n")


def supervisor_pid(run_dir: Path) -> int | None:
    """The live supervisor's PID, or None (no file, dead, or PID reused)."""
    try:
        pid_text, started = (run_dir / SUPERVISOR_FILE).read_text().split()
        pid = int(pid_text)
    except (OSError, ValueError):
        return None
    return pid if alive_as_recorded(pid, int(started)) else None


def refuse_if_running(lab: str, run_root: Path) -> None:
    pid = supervisor_pid(run_root / lab)
    if pid is not None and pid != os.getpid():
        raise LabRunning(
            f"lab {lab} is already running (supervisor pid {pid}); "
            f"stop it with `netlab down --lab {lab}` or pick another lab name"
        )


def _processes_in(inodes: set[int]) -> list[int]:
    me = os.getpid()
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == me:
            continue
        ino = netns.inode(f"/proc/{entry}/ns/net")
        if ino is not None and ino in inodes:
            found.append(int(entry))
    return found


def _kill_and_wait(pids: list[int], timeout: float = 3.0) -> None:
    started = {pid: start_time(pid) for pid in pids}
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + timeout
    for pid in pids:
        while alive_as_recorded(pid, started[pid]):
            with contextlib.suppress(ChildProcessError):
                os.waitpid(pid, os.WNOHANG)  # reap it if it is our child
            if time.monotonic() > deadline:
                break
            time.sleep(0.005)


def clean_lab(lab: str, run_root: Path) -> CleanReport:
    """Remove every leftover of one lab. Safe to call when nothing is left."""
    report = CleanReport(lab)
    prefix = lab_prefix(lab)
    run_dir = run_root / lab
    names = [n for n in netns.listed(prefix) if owned(n, prefix)]
    inodes = {ino for n in names if (ino := netns.inode(netns.netns_path(n))) is not None}
    pids = set(_processes_in(inodes))
    for pid, started, _role, _name in PidRecord.read(run_dir / "pids"):
        if pid != os.getpid() and alive_as_recorded(pid, started):
            pids.add(pid)
    report.processes = sorted(pids)
    _kill_and_wait(report.processes)
    # pods and nodes first, the lab's own namespace (bridges, rack ports) last
    for name in sorted(names, key=lambda n: n == prefix):
        netns.remove(name)
        report.namespaces.append(name)
    if ETC_NETNS.is_dir():
        for entry in ETC_NETNS.iterdir():
            if owned(entry.name, prefix):
                shutil.rmtree(entry, ignore_errors=True)
                report.files.append(str(entry))
    # the lab's disks: every loop device backed by an image under its state dir, unmounted;
    # then the nodes' disks and the images, and the cgroups. All before the run
    # directory, whose pid file going is what `netlab down` waits for: an `up` right
    # after finds nothing of the lab left
    state = paths.state_dir(lab)
    report.files.extend(loopdisks.sweep(state))
    if state.exists():
        report.files.extend(mounts.unmount_under(state))
        mounts.remove_tree(state)
        report.files.append(str(state))
    report.files.extend(str(p) for p in remove_cgroups(prefix))
    if run_dir.exists():
        report.files.extend(mounts.unmount_under(run_dir))
        mounts.remove_tree(run_dir)
        report.files.append(str(run_dir))
    return report


def remove_cgroups(prefix: str) -> list[Path]:
    """The lab's cgroups, children first; a cgroup empties a moment after its last
    process ends, so a busy one is tried again for a while."""
    try:
        layout = cgroups.CgroupLayout.detect()
    except cgroups.CgroupError:
        return []
    return cgroups.remove_lab(layout, prefix, wait=2.0)


def known_labs(run_root: Path) -> list[str]:
    """Labs with a run directory or a namespace of ours."""
    labs = set()
    if run_root.is_dir():
        labs.update(p.name for p in run_root.iterdir() if p.is_dir())
    for name in netns.listed(PREFIX_ROOT):
        lab = name[len(PREFIX_ROOT) :].split(".")[0].split(":")[0]
        if lab:
            labs.add(lab)
    return sorted(labs)
