"""A big mapped capture read by two processes: a forked child counts the
second half while this process counts the first.

The child starts at a block boundary near the middle, found from the block
structure alone (an EPB whose length and trailing length agree, three more
after it). That is a guess, so the parent takes the child's counts only if
its own walk lands exactly on that offset with the interfaces unchanged; a
wrong guess costs time, never correctness. The child hands its counts over a
pipe (pickle) and leaves with os._exit; it is ended by PID if not needed.
"""

from __future__ import annotations

import os
import pickle
import signal
import struct
from collections.abc import Callable
from typing import Any

BOUNDARY_SEARCH = 4 << 20  # bytes searched for a boundary after the middle
_CHAIN = struct.Struct("<6I")
_U32 = struct.Struct("<I")


class Child:
    """The forked reader of the rest of the file."""

    def __init__(self, pid: int, fd: int):
        self.pid, self.fd = pid, fd

    def result(self) -> Any:
        """What read_rest returned in the child (None if it failed)."""
        with os.fdopen(self.fd, "rb") as pipe:
            data = pipe.read()
        os.waitpid(self.pid, 0)
        try:
            return pickle.loads(data) if data else None
        except Exception:
            return None

    def cancel(self) -> None:
        os.kill(self.pid, signal.SIGKILL)
        os.close(self.fd)
        os.waitpid(self.pid, 0)


def read_rest_in_child(
    buf, first: int, interfaces: int, read_rest: Callable[[int], Any]
) -> tuple[int, Child] | None:
    """(offset, child) where a forked child runs read_rest(offset) on the
    blocks from offset to the end of buf; None when there is one CPU, no
    boundary was found or fork failed (read it all here then)."""
    if cpus() < 2:
        return None
    end = len(buf)
    start = boundary(buf, first + (end - first) // 2, end, interfaces)
    if start is None:
        return None
    try:
        read_fd, write_fd = os.pipe()
        pid = os.fork()
    except OSError:
        return None
    if pid:
        os.close(write_fd)
        return start, Child(pid, read_fd)
    os.close(read_fd)
    data = b""
    try:
        result = read_rest(start)
        if result is not None:
            data = pickle.dumps(result, protocol=pickle.HIGHEST_PROTOCOL)
    except BaseException:
        data = b""
    with os.fdopen(write_fd, "wb") as pipe:
        pipe.write(data)
    os._exit(0)


def cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def boundary(buf, near: int, end: int, interfaces: int) -> int | None:
    """A block boundary at or after `near` (little-endian pcapng)."""
    pos = near - near % 4
    stop = min(end, pos + BOUNDARY_SEARCH)
    while pos < stop:
        pos = buf.find(b"\x06\x00\x00\x00", pos, stop)
        if pos < 0:
            return None
        if pos % 4 == 0 and _chain(buf, pos, end, interfaces):
            return pos
        pos += 1
    return None


def _chain(buf, pos: int, end: int, interfaces: int, blocks: int = 4) -> bool:
    """`blocks` EPBs in a row from pos (or fewer, then the end of the file)."""
    for _ in range(blocks):
        if pos == end:
            return True
        if pos + 32 > end:
            return False
        btype, length, ifid, _h, _l, caplen = _CHAIN.unpack_from(buf, pos)
        if (
            btype != 6
            or length % 4
            or not 32 <= length <= end - pos
            or caplen > length - 32
            or ifid >= interfaces
            or _U32.unpack_from(buf, pos + length - 4)[0] != length
        ):
            return False
        pos += length
    return True
