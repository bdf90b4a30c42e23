"""Named network namespaces, made in-process.

`ip netns add` forks and execs (about 3 ms); here a worker thread unshares
its own network namespace and bind-mounts it on /run/netns/<name> (about
0.8 ms). setns(2) changes only the calling thread, so a thread can step into
a namespace, open a socket or start a process there, and step back; sockets
and processes keep the namespace they were made in.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import errno
import os
import socket
import threading
from collections.abc import Iterator
from pathlib import Path

NETNS_RUN_DIR = Path("/run/netns")
CLONE_NEWNET = 0x40000000
MS_BIND = 4096
MS_REC = 16384
MS_SHARED = 1 << 20
MNT_DETACH = 2
NETLINK_ROUTE = 0

_libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)


def _check(result: int, what: str) -> None:
    if result != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")


def netns_path(name: str) -> Path:
    return NETNS_RUN_DIR / name


def setns(fd: int) -> None:
    """Move the calling thread into the network namespace behind fd."""
    _check(_libc.setns(fd, CLONE_NEWNET), "setns")


def _ensure_run_dir() -> None:
    """Make /run/netns a shared mount point, as `ip netns add` does, so
    namespace mounts made here are seen in other mount namespaces."""
    NETNS_RUN_DIR.mkdir(parents=True, exist_ok=True)
    if _libc.mount(b"", str(NETNS_RUN_DIR).encode(), b"none", MS_SHARED | MS_REC, None) == 0:
        return
    if ctypes.get_errno() != errno.EINVAL:
        _check(-1, "mount --make-shared /run/netns")
    # Not a mount point yet: bind it onto itself, then share it.
    path = str(NETNS_RUN_DIR).encode()
    _check(_libc.mount(path, path, b"none", MS_BIND | MS_REC, None), "bind /run/netns")
    _check(_libc.mount(b"", path, b"none", MS_SHARED | MS_REC, None), "share /run/netns")


class _RunDirState:
    """Whether /run/netns was prepared in this process (cheap to ask once)."""

    def __init__(self) -> None:
        self.ready = False
        self.lock = threading.Lock()

    def ensure(self) -> None:
        with self.lock:
            if not self.ready:
                _ensure_run_dir()
                self.ready = True


_run_dir = _RunDirState()


@contextlib.contextmanager
def entered(path: str | os.PathLike) -> Iterator[None]:
    """Run the body with this thread inside the namespace at `path`
    (a /run/netns/<name> file or /proc/<pid>/ns/net), then step back."""
    home = os.open(f"/proc/self/task/{threading.get_native_id()}/ns/net", os.O_RDONLY)
    try:
        target = os.open(path, os.O_RDONLY)
        try:
            setns(target)
        finally:
            os.close(target)
        try:
            yield
        finally:
            setns(home)
    finally:
        os.close(home)


def create(name: str) -> Path:
    """Create the named namespace /run/netns/<name> (replacing a stale one)."""
    _run_dir.ensure()
    path = netns_path(name)
    if path.exists():
        remove(name)
    path.touch(mode=0o444, exist_ok=False)
    failure: list[BaseException] = []

    def work() -> None:
        try:
            _check(_libc.unshare(CLONE_NEWNET), "unshare(CLONE_NEWNET)")
            own = f"/proc/self/task/{threading.get_native_id()}/ns/net".encode()
            _check(_libc.mount(own, str(path).encode(), b"none", MS_BIND, None), "bind netns")
        except BaseException as exc:  # reported to the caller below
            failure.append(exc)

    # A fresh thread: the namespace it unshared dies with it, only the mount stays.
    worker = threading.Thread(target=work, name=f"netns-{name}")
    worker.start()
    worker.join()
    if failure:
        with contextlib.suppress(OSError):
            path.unlink()
        raise failure[0]
    return path


def remove(name: str) -> None:
    """Unmount and unlink /run/netns/<name>; missing is fine."""
    path = netns_path(name)
    if _libc.umount2(str(path).encode(), MNT_DETACH) != 0:
        err = ctypes.get_errno()
        if err not in (errno.EINVAL, errno.ENOENT):
            _check(-1, f"umount {path}")
    with contextlib.suppress(FileNotFoundError):
        path.unlink()


def bind(name: str, source: str) -> Path:
    """Give an existing namespace (e.g. /proc/<pid>/ns/net) the name <name>."""
    _run_dir.ensure()
    path = netns_path(name)
    if path.exists():
        remove(name)
    path.touch(mode=0o444)
    _check(_libc.mount(source.encode(), str(path).encode(), b"none", MS_BIND, None), "bind netns")
    return path


def listed(prefix: str) -> list[str]:
    """Names under /run/netns that start with prefix."""
    if not NETNS_RUN_DIR.is_dir():
        return []
    return sorted(p.name for p in NETNS_RUN_DIR.iterdir() if p.name.startswith(prefix))


def inode(path: str | os.PathLike) -> int | None:
    """The namespace's identity (the inode of its nsfs file), or None."""
    try:
        return os.stat(path).st_ino
    except OSError:
        return None


def netlink_socket(path: str | os.PathLike) -> socket.socket:
    """A NETLINK_ROUTE socket bound to the namespace at path (made without a fork)."""
    with entered(path):
        return socket.socket(socket.AF_NETLINK, socket.SOCK_DGRAM, NETLINK_ROUTE)


def write_sysctl(path: str | os.PathLike, key: str, value: str) -> None:
    """Set a per-namespace sysctl (e.g. net.ipv4.ip_forward) inside the namespace."""
    proc = "/proc/sys/" + key.replace(".", "/")
    with entered(path):
        fd = os.open(proc, os.O_WRONLY)
    try:
        os.write(fd, value.encode())
    finally:
        os.close(fd)
