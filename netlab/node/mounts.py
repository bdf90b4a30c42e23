"""Mounts the lab makes on the host (a container's overlay root, until runc has
started it) and removing them: always unmounted before anything under them is
deleted, and a tree removed without ever crossing into a mount (an overlay root
shows the host's files)."""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import os
import stat

MNT_DETACH = 2

_libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)


def check(result: int, what: str) -> None:
    if result != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")


def mount(source: str, target: str | os.PathLike, fstype: str, options: str) -> None:
    check(
        _libc.mount(source.encode(), os.fsencode(target), fstype.encode(), 0, options.encode()),
        f"mount {fstype} on {target}",
    )


def unmount(target: str | os.PathLike, lazy: bool = True) -> bool:
    """Detach one mount (`lazy`: at once, even while busy; else OSError EBUSY if busy);
    False if it was not mounted."""
    if _libc.umount2(os.fsencode(target), MNT_DETACH if lazy else 0) == 0:
        return True
    err = ctypes.get_errno()
    if err in (22, 2):  # EINVAL: not a mount point; ENOENT: gone
        return False
    raise OSError(err, f"umount {target}: {os.strerror(err)}")


def unescape(field: str) -> str:
    """/proc/self/mountinfo escapes space, tab, newline and backslash as octal."""
    out, i = [], 0
    while i < len(field):
        if field[i] == "\\" and field[i + 1 : i + 4].isdigit() and len(field[i + 1 : i + 4]) == 3:
            out.append(chr(int(field[i + 1 : i + 4], 8)))
            i += 4
        else:
            out.append(field[i])
            i += 1
    return "".join(out)


def mounted_under(root: str | os.PathLike, mountinfo: str = "/proc/self/mountinfo") -> list[str]:
    """Mount points at or below `root`, deepest first."""
    base = os.path.abspath(root)
    found = []
    with contextlib.suppress(OSError), open(mountinfo) as f:
        for line in f:
            point = unescape(line.split()[4])
            if point == base or point.startswith(base + "/"):
                found.append(point)
    return sorted(set(found), key=lambda p: p.count("/"), reverse=True)


def unmount_under(root: str | os.PathLike) -> list[str]:
    """Detach every mount at or below `root` (deepest first); what was detached."""
    done = []
    for _ in range(8):  # a mount stacked on a mount point shows once per layer
        points = mounted_under(root)
        if not points:
            break
        for point in points:
            with contextlib.suppress(OSError):
                if unmount(point):
                    done.append(point)
    return done


def remove_tree(root: str | os.PathLike) -> None:
    """Remove a directory tree, never descending into another filesystem or a mount
    point (whatever is mounted there is left, with the directory holding it)."""
    root = os.fspath(root)
    try:
        top = os.lstat(root)
    except FileNotFoundError:
        return
    if not stat.S_ISDIR(top.st_mode):
        os.unlink(root)
        return
    _remove_dir(root, top.st_dev)


def _remove_dir(path: str, device: int) -> bool:
    """Empty and remove `path`; False if something had to be left."""
    if os.path.ismount(path):
        return False
    complete = True
    try:
        entries = list(os.scandir(path))
    except OSError:
        return False
    for entry in entries:
        try:
            info = entry.stat(follow_symlinks=False)
        except OSError:
            continue
        if stat.S_ISDIR(info.st_mode):
            if info.st_dev != device or not _remove_dir(entry.path, device):
                complete = False
        else:
            try:
                os.unlink(entry.path)
            except FileNotFoundError:
                pass
            except OSError:
                complete = False
    if complete:
        try:
            os.rmdir(path)
        except OSError:
            return False
    return complete
