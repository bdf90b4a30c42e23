"""Upstream connections: kept-alive HTTP connections per endpoint, and the raw
TCP pipe of passthrough.

An `Upstream` carries one request at a time for its owner (the downstream
connection whose request it serves); its response bytes go back untouched,
and httptools only finds where the response ends. Idle ones wait in the
`Pool` per endpoint address, so round-robin per request costs no connect.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Container
from typing import Any, Protocol

import httptools

from mesh.http1 import marked_socket

log = logging.getLogger("mesh")

IDLE_PER_ENDPOINT = 64
CONNECT_TIMEOUT = 10.0  # Istio's default connectTimeout


class Owner(Protocol):
    """What an `Upstream` reports to (the downstream side of one request)."""

    def on_upstream_head(self, up: Upstream, status: int) -> None: ...
    def on_upstream_data(self, up: Upstream, data: bytes) -> None: ...
    def on_upstream_done(self, up: Upstream) -> None: ...
    def on_upstream_lost(self, up: Upstream, reason: str) -> None: ...
    def pause_reading(self) -> None: ...
    def resume_reading(self) -> None: ...


class Upstream(asyncio.Protocol):
    __slots__ = (
        "pool",
        "address",
        "transport",
        "owner",
        "parser",
        "status",
        "head_seen",
        "done",
        "keep_alive",
        "head_only",
        "closed",
        "reused",
    )

    def __init__(self, pool: Pool, address: tuple[str, int]) -> None:
        self.pool = pool
        self.address = address
        self.transport: asyncio.Transport | None = None
        self.owner: Owner | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.status = 0
        self.head_seen = False
        self.done = False
        self.keep_alive = True
        self.head_only = False
        self.closed = False
        self.reused = False  # came from the idle pool (a stale one may be reset at once)

    # -- one request -----------------------------------------------------------

    def start(self, owner: Owner, head_only: bool) -> None:
        self.owner = owner
        self.status = 0
        self.head_seen = self.done = False
        self.head_only = head_only

    def write(self, data: bytes) -> None:
        if self.transport is not None and not self.closed:
            self.transport.write(data)

    def abandon(self) -> None:
        """Drop it mid-request (timeout, retry of a 5xx): the connection cannot be reused."""
        self.owner = None
        self.close()

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self.pool.lost(self)
            if self.transport is not None:
                self.transport.abort()

    # -- httptools callbacks ------------------------------------------------------

    def on_headers_complete(self) -> None:
        status = self.parser.get_status_code()
        if status < 200 and status != 101:
            return  # 100 Continue and friends: forwarded, the final response follows
        self.status = status
        self.head_seen = True
        owner = self.owner
        if owner is not None:
            owner.on_upstream_head(self, status)
        if self.head_only:  # HEAD: llhttp cannot know there is no body; it ends here
            self.done = True
            self.keep_alive = self.parser.should_keep_alive()
            self.parser = httptools.HttpResponseParser(self)

    def on_message_complete(self) -> None:
        if self.head_seen:
            self.done = True
            self.keep_alive = self.parser.should_keep_alive()

    # -- asyncio -----------------------------------------------------------------

    def connection_made(self, transport: Any) -> None:
        self.transport = transport
        self.pool.open += 1

    def data_received(self, data: bytes) -> None:
        owner = self.owner
        if owner is None:  # bytes on an idle connection: it is not reusable
            self.close()
            return
        head_only = self.head_only
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError:
            if not (head_only and self.done):
                self.owner = None
                self.close()
                owner.on_upstream_lost(self, "protocol error")
                return
        if self.owner is not owner:  # abandoned by a callback (a retried 5xx)
            return
        owner.on_upstream_data(self, data)
        if self.done and self.owner is owner:
            self.done = False
            self.owner = None
            owner.on_upstream_done(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.pool.open -= 1
        self.pool.lost(self)
        owner, self.owner = self.owner, None
        if owner is not None:
            owner.on_upstream_lost(self, "connection termination")

    def eof_received(self) -> bool:
        return False  # close; connection_lost tells the owner

    def pause_writing(self) -> None:
        if self.owner is not None:
            self.owner.pause_reading()

    def resume_writing(self) -> None:
        if self.owner is not None:
            self.owner.resume_reading()


class Pool:
    """Idle kept-alive upstream connections by endpoint address."""

    def __init__(self, mark: int | None, connect_timeout: float = CONNECT_TIMEOUT) -> None:
        self.mark = mark
        self.connect_timeout = connect_timeout
        self._idle: dict[tuple[str, int], list[Upstream]] = {}
        self.open = 0
        self.opened = 0

    def take(self, address: tuple[str, int]) -> Upstream | None:
        idle = self._idle.get(address)
        while idle:
            up = idle.pop()
            if not up.closed:
                up.reused = True
                return up
        return None

    def put(self, up: Upstream) -> None:
        if up.closed or not up.keep_alive:
            up.close()
            return
        idle = self._idle.setdefault(up.address, [])
        if len(idle) >= IDLE_PER_ENDPOINT:
            up.close()
        else:
            idle.append(up)

    def lost(self, up: Upstream) -> None:
        idle = self._idle.get(up.address)
        if idle and up in idle:
            idle.remove(up)

    async def connect(self, address: tuple[str, int]) -> Upstream:
        loop = asyncio.get_running_loop()
        sock = marked_socket(self.mark)
        try:
            await asyncio.wait_for(loop.sock_connect(sock, address), self.connect_timeout)
            _, up = await loop.create_connection(lambda: Upstream(self, address), sock=sock)
        except BaseException:
            sock.close()
            raise
        self.opened += 1
        return up

    def retain(self, addresses: Container[tuple[str, int]]) -> None:
        """Close the idle connections to endpoints not in `addresses`: a pod that left
        its Services is not held open by clients that will not send to it again (the lab
        drains it until its clients' connections close)."""
        for address in [a for a in self._idle if a not in addresses]:
            for up in self._idle.pop(address):
                up.close()

    def idle_count(self) -> int:
        return sum(len(v) for v in self._idle.values())

    def close(self) -> None:
        for idle in list(self._idle.values()):
            for up in list(idle):
                up.close()
        self._idle.clear()


class Pipe(asyncio.Protocol):
    """The upstream half of a TCP passthrough: bytes both ways, half-close kept."""

    def __init__(self, peer: asyncio.Transport, on_close: Any) -> None:
        self.peer = peer
        self.transport: asyncio.Transport | None = None
        self.received = 0
        self.eof_in = False
        self.on_eof: Any = None
        self._on_close = on_close

    def connection_made(self, transport: Any) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.received += len(data)
        self.peer.write(data)

    def eof_received(self) -> bool:
        self.eof_in = True
        if self.peer.can_write_eof() and not self.peer.is_closing():
            with contextlib.suppress(OSError, RuntimeError):
                self.peer.write_eof()
            if self.on_eof is not None:
                self.on_eof()
            return True
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self.peer.close()
        self._on_close()

    def pause_writing(self) -> None:
        self.peer.pause_reading()

    def resume_writing(self) -> None:
        self.peer.resume_reading()
