"""The host's cgroups as the lab's containers use them: where each hierarchy is
mounted, which `cgroupsPath` a container's OCI config gets, where its directories
are, what it used (CPU, memory working set, throttling, OOM kills), and removing a
lab's directories once its processes are gone.

Two layouts are met: cgroup v1 (one hierarchy per controller, or a few co-mounted,
under /sys/fs/cgroup/<controller>; "hybrid" when an empty cgroup2 is mounted beside
them, as on this CI machine) and pure cgroup v2 (one hierarchy at /sys/fs/cgroup,
Debian 12's default). On v1 a container's path is relative, so runc puts it under
the cgroup of the process that runs runc in each hierarchy, and that process's own
limits stay over the lab; on v2 it is absolute, because a v2 cgroup that holds
processes cannot have children with controllers enabled (the "no internal
processes" rule), so it cannot nest under the runtime's own cgroup.
"""

from __future__ import annotations

import errno
import os
import posixpath
import time
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

from netlab.errors import NetlabError
from netlab.node.mounts import unescape
from netlab.plan.names import PREFIX_ROOT

MOUNTINFO = Path("/proc/self/mountinfo")
PROC = Path("/proc")
UNIFIED = "unified"  # the key of the cgroup2 hierarchy in every mapping here
WALK_DEPTH = 6  # how deep lab_dirs looks for a lab's directories in each hierarchy
UNLIMITED = 1 << 62  # v1 reports "no limit" as a number near 2**63


class CgroupError(NetlabError):
    """The host's cgroups are not what a container needs (none mounted, a process gone)."""


@dataclass(frozen=True)
class Hierarchy:
    """One mounted cgroup hierarchy."""

    mount: Path
    root: str  # the hierarchy's own path that is mounted there ("/" unless a namespace cut it)
    controllers: tuple[str, ...]  # ("cpu", "cpuacct"), ("name=systemd",); () for cgroup2

    @property
    def v2(self) -> bool:
        return not self.controllers

    @property
    def keys(self) -> tuple[str, ...]:
        """The names this hierarchy goes by in a `dirs` mapping."""
        return self.controllers or (UNIFIED,)

    def directory(self, path: str) -> Path | None:
        """The directory of the cgroup at `path` (a path in the hierarchy), or None if
        it is outside what this mount shows."""
        path = posixpath.normpath(path)
        rel = posixpath.relpath(path, self.root)
        if rel == ".":
            return self.mount
        if rel.startswith(".."):
            return None
        return self.mount / rel


@dataclass(frozen=True)
class CgroupLayout:
    """The cgroup hierarchies of this host: mode "v1", "hybrid" or "v2"."""

    mode: str
    hierarchies: tuple[Hierarchy, ...]

    @classmethod
    def detect(cls, mountinfo: Path = MOUNTINFO) -> CgroupLayout:
        """Read the layout from /proc/self/mountinfo; CgroupError if no cgroup is mounted."""
        try:
            text = mountinfo.read_text()
        except OSError as exc:
            raise CgroupError(f"cannot read {mountinfo}: {exc.strerror}") from exc
        return cls.parse(text)

    @classmethod
    def parse(cls, text: str) -> CgroupLayout:
        """The layout from the text of a mountinfo file."""
        found: dict[tuple[str, ...], Hierarchy] = {}
        for line in text.splitlines():
            pre, _, post = line.partition(" - ")  # optional fields end at " - "
            pre_fields, post_fields = pre.split(), post.split()
            if len(pre_fields) < 5 or len(post_fields) < 3:
                continue
            if post_fields[0] not in ("cgroup", "cgroup2"):
                continue
            root, mount = unescape(pre_fields[3]), Path(unescape(pre_fields[4]))
            controllers: tuple[str, ...] = ()
            if post_fields[0] == "cgroup":
                options = post_fields[2].split(",")
                controllers = tuple(o for o in options if o not in _MOUNT_OPTIONS)
                if not controllers:
                    continue
            seen = found.get(controllers)  # mounted twice: the mount of the whole hierarchy
            if seen is None or (seen.root != "/" and root == "/"):
                found[controllers] = Hierarchy(mount, root, controllers)
        hierarchies = tuple(found.values())
        v1 = [h for h in hierarchies if not h.v2 and not _named_only(h)]
        has_v2 = any(h.v2 for h in hierarchies)
        if v1:
            mode = "hybrid" if has_v2 else "v1"
        elif has_v2:
            mode = "v2"
        else:
            raise CgroupError("no cgroup hierarchy is mounted (see /proc/self/mountinfo)")
        return cls(mode, hierarchies)

    @property
    def mounts(self) -> dict[str, Path]:
        """Controller (or "unified", or "name=systemd") -> the mount point of its hierarchy."""
        return {key: h.mount for h in self.hierarchies for key in h.keys}

    @property
    def container_hierarchies(self) -> tuple[Hierarchy, ...]:
        """The hierarchies runc puts a container in: every v1 one (runc's cgroupfs
        driver leaves hybrid's cgroup2 alone), or the one cgroup2."""
        if self.mode == "v2":
            return tuple(h for h in self.hierarchies if h.v2)
        return tuple(h for h in self.hierarchies if not h.v2)


_MOUNT_OPTIONS = {"rw", "ro", "relatime", "noatime", "nosuid", "nodev", "noexec", "clone_children",
                  "xattr", "nsdelegate", "memory_recursiveprot", "memory_localevents",
                  "favordynmods", "cpuset_v2_mode", "noprefix"}  # fmt: skip


def _named_only(h: Hierarchy) -> bool:
    """A v1 hierarchy with no controller, only a name (systemd's name=systemd)."""
    return all(c.startswith("name=") for c in h.controllers)


# -- a container's cgroup ------------------------------------------------------------


def cgroups_path(layout: CgroupLayout, lab_prefix: str, container_id: str) -> str:
    """The OCI `linux.cgroupsPath` of a container: "<lab_prefix>/<container_id>" on
    v1 and hybrid (runc nests it under its own cgroup in each hierarchy), and
    "/<lab_prefix>/<container_id>" on pure v2."""
    for part in (lab_prefix, container_id):
        if not part or "/" in part or part in (".", ".."):
            raise ValueError(f"{part!r} is not a cgroup directory name")
    path = f"{lab_prefix}/{container_id}"
    return "/" + path if layout.mode == "v2" else path


def own_cgroups(pid: int | str, proc: Path = PROC) -> dict[str, str]:
    """The cgroup of process `pid` in each hierarchy, from /proc/<pid>/cgroup:
    controller (or "unified", or "name=systemd") -> its path in that hierarchy."""
    path = proc / str(pid) / "cgroup"
    try:
        text = path.read_text()
    except OSError as exc:
        raise CgroupError(f"cannot read {path} (is process {pid} gone?): {exc.strerror}") from exc
    out: dict[str, str] = {}
    for line in text.splitlines():
        _id, sep, rest = line.partition(":")
        controllers, sep2, cgroup = rest.partition(":")
        if not sep or not sep2:
            continue
        for key in controllers.split(",") if controllers else (UNIFIED,):
            out[key] = cgroup
    return out


def container_dirs(
    layout: CgroupLayout,
    cgroups_path: str,
    runtime_pid: int,
    proc: Path = PROC,
    own: Mapping[str, str] | None = None,
) -> dict[str, Path]:
    """The directories of a container's cgroup, controller (or "unified") -> directory.

    A relative `cgroups_path` is resolved as runc resolves it: under the cgroup of the
    process that runs runc (`runtime_pid`, the lab's runtime daemon), in each hierarchy.
    """
    if posixpath.isabs(cgroups_path):
        own = {}
    elif own is None:  # the runtime's cgroups: given by a caller that asks for many
        own = own_cgroups(runtime_pid, proc)
    dirs: dict[str, Path] = {}
    for h in layout.container_hierarchies:
        if posixpath.isabs(cgroups_path):
            full = cgroups_path
        else:
            base = next((own[k] for k in h.keys if k in own), None)
            if base is None:  # the process is in no cgroup of this hierarchy
                continue
            full = posixpath.join(base, cgroups_path)
        directory = h.directory(full)
        if directory is not None:
            for key in h.keys:
                dirs[key] = directory
    return dirs


# -- a lab's directories -------------------------------------------------------------


def lab_dirs(layout: CgroupLayout, lab_prefix: str, depth: int = WALK_DEPTH) -> list[Path]:
    """Every directory named `lab_prefix` in every hierarchy, at most `depth` levels
    down, never looking inside another lab's directories (named nl-...)."""
    found: list[Path] = []
    for mount in dict.fromkeys(h.mount for h in layout.hierarchies):
        found.extend(_find(mount, lab_prefix, depth))
    return found


def _find(directory: Path, name: str, depth: int) -> Iterator[Path]:
    if depth <= 0:
        return
    try:
        entries = sorted(os.scandir(directory), key=lambda e: e.name)
    except OSError:  # gone while we looked, or not readable
        return
    for entry in entries:
        try:
            if not entry.is_dir(follow_symlinks=False):
                continue
        except OSError:
            continue
        if entry.name == name:
            yield Path(entry.path)
        elif not entry.name.startswith(PREFIX_ROOT):  # another lab's: not ours to look in
            yield from _find(Path(entry.path), name, depth - 1)


def remove_lab(layout: CgroupLayout, lab_prefix: str, wait: float = 0.0) -> list[Path]:
    """Remove the lab's cgroup directories, children first, once their processes are
    gone; the directories removed. A directory still busy after `wait` seconds stays,
    and so do its parents: `lab_dirs` shows what is left."""
    found: list[Path] = []
    for top in lab_dirs(layout, lab_prefix):
        if top.name != lab_prefix:  # lab_dirs gives only these; never anything else
            continue
        found.extend(Path(parent) for parent, _dirs, _files in os.walk(top))
    return remove_dirs(found, wait)


def remove_dirs(dirs: Iterable[Path], wait: float = 0.0) -> list[Path]:
    """rmdir these cgroups, the deepest first; the ones removed. A cgroup empties a
    moment after its last process ends: a busy one is tried again for `wait` seconds."""
    removed: list[Path] = []
    deadline = time.monotonic() + wait
    for path in sorted(set(dirs), key=lambda p: len(p.parts), reverse=True):
        while True:
            try:
                path.rmdir()
                removed.append(path)
            except FileNotFoundError:
                pass
            except OSError as exc:
                if exc.errno not in (errno.EBUSY, errno.ENOTEMPTY, errno.EEXIST):
                    raise
                if time.monotonic() < deadline:
                    time.sleep(0.01)
                    continue
            break
    return removed


# -- usage ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Usage:
    """What a cgroup has used, as cadvisor reads it for kubelet and metrics-server."""

    cpu_ns: int  # cumulative CPU time
    memory_usage: int  # bytes charged, page cache included
    memory_working_set: int  # usage minus inactive file pages: what `kubectl top` shows
    memory_limit: int | None  # None: no limit
    nr_periods: int  # CFS periods with the quota in force
    nr_throttled: int  # periods in which the quota ran out
    throttled_ns: int
    oom_kills: int  # processes the kernel's OOM killer killed in this cgroup


def usage(dirs: Mapping[str, Path]) -> Usage | None:
    """Read a container's usage from its directories (`container_dirs`); None if its
    cgroup is gone. A controller the container is not in reads as zero."""
    if UNIFIED in dirs and not any(k in dirs for k in ("cpu", "cpuacct", "memory")):
        return _usage_v2(dirs[UNIFIED])
    return _usage_v1(dirs)


def _usage_v1(dirs: Mapping[str, Path]) -> Usage | None:
    cpuacct, cpu, memory = dirs.get("cpuacct"), dirs.get("cpu"), dirs.get("memory")
    cpu_ns = _read_int(cpuacct / "cpuacct.usage") if cpuacct else None
    mem = _read_int(memory / "memory.usage_in_bytes") if memory else None
    if cpu_ns is None and mem is None:
        return None
    stat = _read_keyed(cpu / "cpu.stat") if cpu else {}
    mstat = _read_keyed(memory / "memory.stat") if memory else {}
    limit = _read_int(memory / "memory.limit_in_bytes") if memory else None
    oom = _read_keyed(memory / "memory.oom_control") if memory else {}
    mem = mem or 0
    return Usage(
        cpu_ns=cpu_ns or 0,
        memory_usage=mem,
        memory_working_set=max(0, mem - mstat.get("total_inactive_file", 0)),
        memory_limit=None if limit is None or limit >= UNLIMITED else limit,
        nr_periods=stat.get("nr_periods", 0),
        nr_throttled=stat.get("nr_throttled", 0),
        throttled_ns=stat.get("throttled_time", 0),
        oom_kills=oom.get("oom_kill", 0),
    )


def _usage_v2(directory: Path) -> Usage | None:
    stat = _read_keyed(directory / "cpu.stat")
    mem = _read_int(directory / "memory.current")
    if not stat and mem is None:
        return None
    mstat = _read_keyed(directory / "memory.stat")
    events = _read_keyed(directory / "memory.events")
    limit = _read_int(directory / "memory.max")  # "max": None
    mem = mem or 0
    return Usage(
        cpu_ns=stat.get("usage_usec", 0) * 1000,
        memory_usage=mem,
        memory_working_set=max(0, mem - mstat.get("inactive_file", 0)),
        memory_limit=limit,
        nr_periods=stat.get("nr_periods", 0),
        nr_throttled=stat.get("nr_throttled", 0),
        throttled_ns=stat.get("throttled_usec", 0) * 1000,
        oom_kills=events.get("oom_kill", 0),
    )


def _read(path: Path) -> str | None:
    try:
        return path.read_text()
    except OSError:  # ENOENT, ENODEV: the cgroup went away; or no such controller
        return None


def _read_int(path: Path) -> int | None:
    text = _read(path)
    try:
        return int(text) if text is not None else None
    except ValueError:
        return None


def _read_keyed(path: Path) -> dict[str, int]:
    """A flat-keyed file: "key value" per line (cpu.stat, memory.stat, memory.events)."""
    out: dict[str, int] = {}
    for line in (_read(path) or "").splitlines():
        key, _, value = line.partition(" ")
        try:
            out[key] = int(value)
        except ValueError:
            continue
    return out
