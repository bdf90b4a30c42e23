"""The image store's errors, its file lock, and how it runs skopeo and umoci."""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
import shutil
import subprocess
from collections.abc import Iterator, Sequence
from pathlib import Path

from netlab.errors import NetlabError

TOOL_TIMEOUT = 300.0  # seconds for one local skopeo or umoci run (a large import)
PACKAGES = {"skopeo": "skopeo", "umoci": "umoci", "ldd": "libc-bin", "dpkg": "dpkg"}


class ImageError(NetlabError):
    """The image store could not do what was asked."""


class ImageNotFound(ImageError):
    """No image of that name or ID in the store."""


class ImagePullError(ImageError):
    """An image could not be made present, as kubelet reports it: `reason` is the
    container's waiting reason (ErrImagePull, ErrImageNeverPull), `message` its text."""

    def __init__(self, reason: str, message: str):
        self.reason = reason
        self.message = message
        super().__init__(message)


_SKOPEO_MSG = re.compile(r'msg="((?:[^"\\]|\\.)*)"')


def tool_message(stderr: str) -> str:
    """The reason in a failed skopeo's or umoci's output, without log decoration."""
    found = _SKOPEO_MSG.findall(stderr)
    if found:
        return found[-1].encode().decode("unicode_escape")
    lines = [line.strip().lstrip("⨯•").strip() for line in stderr.splitlines() if line.strip()]
    return lines[-1] if lines else "no output"


def run_tool(argv: Sequence[str], timeout: float = TOOL_TIMEOUT, what: str = "") -> str:
    """Run skopeo, umoci, ldd or dpkg: its stdout, or an ImageError naming what failed."""
    tool = argv[0]
    if shutil.which(tool) is None:
        raise ImageError(
            f"{tool} is not installed; netlab's images need it: apt-get install {PACKAGES.get(tool, tool)}"
        )
    try:
        done = subprocess.run(list(argv), capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired as exc:
        raise ImageError(f"{what or tool}: {tool} gave no answer within {timeout:g} s") from exc
    if done.returncode != 0:
        raise ImageError(f"{what or tool}: {tool_message(done.stderr)}")
    return done.stdout


@contextlib.contextmanager
def file_lock(path: Path, shared: bool = False) -> Iterator[None]:
    """flock(2) on `path` (created if missing): exclusive for writers, shared for readers.
    Each call opens its own descriptor, so threads of one process exclude each other too."""
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    except PermissionError:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)  # a reader that may not write the store
    try:
        fcntl.flock(fd, fcntl.LOCK_SH if shared else fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def remove_leftovers(directory: Path) -> None:
    """Remove work directories (`<what>-<pid>-...`) whose process has ended."""
    if not directory.is_dir():
        return
    for entry in directory.iterdir():
        parts = entry.name.lstrip(".").split("-")
        if len(parts) < 3 or not parts[1].isdigit() or not entry.is_dir():
            continue
        if not Path(f"/proc/{parts[1]}").exists():
            shutil.rmtree(entry, ignore_errors=True)


def rootfs_in_use(paths: list[Path]) -> dict[Path, set[int]]:
    """Which of these unpacked roots an overlay mount uses as its lower layer, in any
    mount namespace (a container's own one included): path -> processes that see it."""
    if not paths:
        return {}
    wanted = {str(p): p for p in paths}
    users: dict[Path, set[int]] = {}
    seen_namespaces: set[str] = set()
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            namespace = os.readlink(proc / "ns" / "mnt")
            if namespace in seen_namespaces:
                continue
            seen_namespaces.add(namespace)
            mounts = (proc / "mountinfo").read_text()
        except OSError:
            continue
        for line in mounts.splitlines():
            if " - overlay " not in line:
                continue
            options = line.rsplit(" ", 1)[-1]
            for option in options.split(","):
                if option.startswith("lowerdir="):
                    for lower in option.removeprefix("lowerdir=").split(":"):
                        if lower in wanted:
                            users.setdefault(wanted[lower], set()).add(int(proc.name))
    return users
