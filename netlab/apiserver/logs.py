"""GET .../pods/NAME/log: a container's CRI log, read and followed as kubelet serves it."""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from pathlib import Path

from aiohttp import web

from netlab import crilog
from netlab.apiserver.base import ACTIONS, CLOSING, STORE, STREAMS, flag, gone, int_query
from netlab.errors import ApiError
from netlab.store import Store

LOG_POLL = 0.2  # seconds between checks of a followed log file


def _tail_offset(path: Path, lines: int) -> int:
    """Byte offset where the last `lines` lines of the file start."""
    try:
        with path.open("rb") as f:
            end = f.seek(0, os.SEEK_END)
            if lines == 0:
                return end
            pos, found, block = end, 0, 8192
            while pos > 0:
                start = max(0, pos - block)
                f.seek(start)
                chunk = f.read(pos - start)
                if start + len(chunk) == end and chunk.endswith(b"\n"):
                    chunk = chunk[:-1]  # the final newline does not start a line
                for i in range(len(chunk) - 1, -1, -1):
                    if chunk[i] == 0x0A:
                        found += 1
                        if found == lines:
                            return start + i + 1
                pos = start
            return 0
    except FileNotFoundError:
        return 0


def _log_since(request: web.Request) -> int | None:
    """`sinceSeconds` or `sinceTime` as nanoseconds since the epoch (None: all)."""
    seconds, since_time = int_query(request, "sinceSeconds"), request.query.get("sinceTime")
    if seconds is not None and since_time:
        raise ApiError(400, "at most one of sinceTime or sinceSeconds may be specified")
    if seconds is not None:
        if seconds == 0:
            raise ApiError(400, "invalid sinceSeconds=0: must be greater than 0")
        return time.time_ns() - seconds * 1_000_000_000
    if since_time:
        try:
            return crilog.parse_time(since_time)
        except ValueError as exc:
            raise ApiError(400, f"invalid sinceTime: {exc}") from None
    return None


async def get_log(request: web.Request) -> web.StreamResponse:
    """GET .../pods/NAME/log: the container's output as it wrote it (the records of its
    CRI log file), with kubelet's query: container, follow, tailLines (counted in
    records), sinceSeconds or sinceTime, timestamps (each line prefixed with its time)."""
    store = request.app[STORE]
    namespace, name = request.match_info["namespace"], request.match_info["name"]
    follow = flag(request, "follow")
    tail = int_query(request, "tailLines")
    reader = crilog.Reader(timestamps=flag(request, "timestamps"), since=_log_since(request))
    uid = store.get("pods", namespace, name)["metadata"]["uid"]
    path = Path(request.app[ACTIONS].log_path(namespace, name, request.query.get("container")))
    position = _tail_offset(path, tail) if tail is not None else 0
    response = web.StreamResponse(headers={"Content-Type": "text/plain; charset=utf-8"})
    response.enable_chunked_encoding()
    closed = asyncio.Event()
    request.app[STREAMS].add(closed.set)
    if request.app[CLOSING].is_set():
        closed.set()
    try:
        await response.prepare(request)
        await response.write(b"")
        while True:
            last = not follow or gone(request) or not _same_pod(store, namespace, name, uid)
            try:
                with path.open("rb") as f:
                    if f.seek(0, os.SEEK_END) < position:
                        position = 0  # truncated: start over
                    f.seek(position)
                    while chunk := f.read(65536):
                        # whole records only; a last piece without newline waits, unless
                        # this is the last read (a file not written by the lab's writer)
                        end = len(chunk) if last and len(chunk) < 65536 else chunk.rfind(b"\n") + 1
                        if end == 0:
                            if len(chunk) < 65536:
                                break
                            end = len(chunk)  # one record longer than a read: send it as is
                        position += end
                        out = b"".join(reader.render(line) for line in _lines(chunk[:end]))
                        if out:
                            await response.write(out)
                        f.seek(position)
            except FileNotFoundError:
                pass
            if last:
                break
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(closed.wait(), LOG_POLL)
            if closed.is_set():
                break
        await response.write_eof()
    except (ConnectionResetError, ConnectionError):
        pass
    finally:
        request.app[STREAMS].discard(closed.set)
    return response


def _lines(data: bytes) -> list[bytes]:
    """Split at newlines only (a record may hold a carriage return), keeping them."""
    lines = [line + b"\n" for line in data.split(b"\n")]
    lines[-1] = lines[-1][:-1]
    return lines if lines[-1] else lines[:-1]


def _same_pod(store: Store, namespace: str, name: str, uid: str) -> bool:
    try:
        return store.get("pods", namespace, name)["metadata"]["uid"] == uid
    except ApiError:
        return False
