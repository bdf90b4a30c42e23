"""`kubectl port-forward` and the `kubernetes` client's `portforward()`: the pods/portforward
subresource, in the two protocols clients speak over a WebSocket.

- `SPDY/3.1+portforward.k8s.io` (kubectl 1.30 and newer): the WebSocket carries a SPDY
  connection as a byte stream. For every local connection kubectl opens two streams
  with the headers `streamType` (`error` or `data`), `port` and `requestID`; the server
  replies to each, connects to the port when it has both, copies bytes both ways on the
  data stream, and writes what went wrong (if anything) on the error stream before
  closing it.
- `v4.channel.k8s.io` (the Python client; also no subprotocol): the ports are in the query
  (`?ports=8080,9411`), one connection each; every message starts with a channel byte,
  2*i for port i's data and 2*i+1 for its errors, and the first message on each channel
  is the port number, 2 bytes little-endian.

The pod's port is reached through the lab's dialer (`Actions.port_dialer`): a connection
made inside the pod's network namespace to its loopback, as kubelet's runtime does.
Older kubectl upgrades the HTTP connection to SPDY itself, which the lab does not: it
is told so, in a Status.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import struct
from collections.abc import Awaitable, Callable

from aiohttp import WSMsgType, web

from netlab.apiserver import spdy
from netlab.apiserver.base import STORE, STREAMS
from netlab.apiserver.streams import channel_frames, send_channel
from netlab.errors import ApiError

log = logging.getLogger(__name__)

SPDY_TUNNEL = "SPDY/3.1+portforward.k8s.io"
V4 = "v4.channel.k8s.io"
CHUNK = 32 * 1024  # what one DATA frame or message carries to the client
QUEUED = 64  # a stream's chunks waiting for the pod before the connection waits

Dialer = Callable[[int], Awaitable[socket.socket]]
DialerFor = Callable[[str, str], Awaitable[Dialer]]
Send = Callable[[bytes], Awaitable[None]]


def forward_error(port: int, pod: str, exc: BaseException) -> str:
    """What kubelet writes on the error stream when a port cannot be reached (`pod` is
    `NAME, uid UID` there)."""
    return f"error forwarding port {port} to pod {pod}: {exc}"


def parse_ports(values: list[str]) -> list[int]:
    """`?ports=80,9411&ports=15000` as kubelet reads it; ApiError 400 if malformed."""
    if not values:
        raise ApiError(400, 'query parameter "ports" is required', "BadRequest")
    ports = []
    for value in values:
        if not value:
            raise ApiError(400, 'query parameter "ports" cannot be empty', "BadRequest")
        for part in value.split(","):
            if not part.isdigit() or not 0 < int(part) < 65536:
                raise ApiError(400, f'unable to parse "{value}" as a port', "BadRequest")
            ports.append(int(part))
    return ports


def make_handler(dialer_for: DialerFor) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
    async def handle(request: web.Request) -> web.StreamResponse:
        namespace, name = request.match_info["namespace"], request.match_info["name"]
        dial = await dialer_for(namespace, name)  # 404 before any upgrade
        pod = f"{name}, uid {_uid(request, namespace, name)}"
        upgrade = request.headers.get("Upgrade", "").lower()
        if upgrade.startswith("spdy"):
            raise ApiError(
                400,
                "the lab API speaks port-forward over a WebSocket (SPDY/3.1+portforward.k8s.io "
                "or v4.channel.k8s.io), not over a SPDY upgrade: use kubectl 1.30 or newer",
                "BadRequest",
            )
        if upgrade != "websocket":
            raise ApiError(400, "port-forward needs a WebSocket upgrade", "BadRequest")
        ws = web.WebSocketResponse(
            protocols=(SPDY_TUNNEL, V4), max_msg_size=spdy.MAX_LENGTH + 8, compress=False
        )
        ready = ws.can_prepare(request)
        if not ready.ok:
            raise ApiError(400, f"port-forward: offer {SPDY_TUNNEL} or {V4}", "BadRequest")
        ports = (
            None
            if ready.protocol == SPDY_TUNNEL
            else parse_ports(request.query.getall("ports", []))
        )
        await ws.prepare(request)
        closing = asyncio.current_task().cancel
        request.app[STREAMS].add(closing)
        try:
            if ports is None:
                await _tunnel(ws, SpdyPortForward(ws.send_bytes, dial, pod))
            else:
                await ChannelPortForward(ws, dial, pod, ports).run()
        finally:
            request.app[STREAMS].discard(closing)
            await ws.close()
        return ws

    return handle


def _uid(request: web.Request, namespace: str, name: str) -> str:
    try:
        return request.app[STORE].get("pods", namespace, name)["metadata"].get("uid", "")
    except ApiError:
        return ""


async def _tunnel(ws: web.WebSocketResponse, session: SpdyPortForward) -> None:
    """Feed the WebSocket's bytes to the SPDY session until either side ends."""
    try:
        async for message in ws:
            if message.type != WSMsgType.BINARY:
                break  # the tunnel carries binary messages only
            if not await session.feed(message.data):
                break
    finally:
        await session.close()


class _Forward:
    """One forwarded connection of the SPDY protocol: its error and data streams."""

    def __init__(self) -> None:
        self.error: int | None = None
        self.data: int | None = None
        self.port: int | None = None
        self.inbound: asyncio.Queue[bytes | None] = asyncio.Queue(QUEUED)
        self.task: asyncio.Task | None = None
        self.done = False

    def stop_inbound(self) -> None:
        """No more bytes for the pod: drop what waits, so a reader blocked on the full
        queue goes on (and later frames of the stream are ignored)."""
        self.done = True
        while not self.inbound.empty():
            self.inbound.get_nowait()


class SpdyPortForward:
    """kubectl's port-forward protocol on a SPDY connection; `feed` it the bytes that
    arrive, it sends frames through `send`. Transport-free, so it is tested without one."""

    def __init__(self, send: Send, dial: Dialer, pod: str):
        self._send_bytes, self.dial, self.pod = send, dial, pod
        self.reader, self.writer = spdy.Reader(), spdy.Writer()
        self._lock = asyncio.Lock()  # frames leave in the order their headers were compressed
        self.requests: dict[str, _Forward] = {}
        self.streams: dict[int, _Forward] = {}
        self.last_stream = 0

    async def _send(self, build: Callable[[], bytes]) -> None:
        async with self._lock:
            with contextlib.suppress(ConnectionResetError, RuntimeError):
                await self._send_bytes(build())

    async def feed(self, data: bytes) -> bool:
        """Handle what arrived; False when the connection is over (GOAWAY, bad framing)."""
        try:
            frames = self.reader.feed(data)
        except spdy.SpdyError as exc:
            log.info("port-forward to %s: %s", self.pod, exc)
            await self._send(lambda: self.writer.goaway(self.last_stream, spdy.PROTOCOL_ERROR))
            return False
        for frame in frames:
            if isinstance(frame, spdy.GoAway):
                return False
            await self._on_frame(frame)
        return True

    async def _on_frame(self, frame: spdy.Frame) -> None:
        if isinstance(frame, spdy.Data):
            forward = self.streams.get(frame.stream_id)
            if forward is not None and frame.stream_id == forward.data and not forward.done:
                if frame.data:
                    await forward.inbound.put(frame.data)
                if frame.fin:
                    await forward.inbound.put(None)
        elif isinstance(frame, spdy.SynStream):
            await self._open(frame)
        elif isinstance(frame, spdy.RstStream):
            forward = self.streams.get(frame.stream_id)
            if forward is not None and forward.task is not None:
                forward.task.cancel()
        elif isinstance(frame, spdy.Ping):
            await self._send(lambda: self.writer.ping(frame.ping_id))
        # SETTINGS, WINDOW_UPDATE, HEADERS: nothing to do (no flow control, as spdystream)

    async def _open(self, frame: spdy.SynStream) -> None:
        sid = frame.stream_id
        self.last_stream = max(self.last_stream, sid)
        kind = (frame.headers.get("streamtype") or [""])[0]
        request = (frame.headers.get("requestid") or [""])[0]
        if not request:  # clients before requestID: the error stream opens just before
            request = str(sid if kind == "error" else sid - 2)
        forward = self.requests.setdefault(request, _Forward())
        if kind not in ("error", "data") or getattr(forward, kind) is not None:
            await self._send(lambda: self.writer.rst_stream(sid, spdy.CANCEL))
            return
        setattr(forward, kind, sid)
        self.streams[sid] = forward
        port = (frame.headers.get("port") or [""])[0]
        forward.port = int(port) if port.isdigit() and 0 < int(port) < 65536 else 0
        await self._send(lambda: self.writer.syn_reply(sid))
        if forward.error is not None and forward.data is not None:
            forward.task = asyncio.create_task(self._forward(request, forward))

    async def _forward(self, request: str, forward: _Forward) -> None:
        problem, sock = "", None
        try:
            if not forward.port:
                raise ConnectionError("invalid port")
            try:
                sock = await self.dial(forward.port)
            except ConnectionError as exc:
                problem = forward_error(forward.port, self.pod, exc)
                return
            reader, writer = await asyncio.open_connection(sock=sock)
            upstream = asyncio.create_task(self._to_pod(forward, writer))
            try:
                while data := await reader.read(CHUNK):
                    await self._send(lambda d=data: self.writer.data(forward.data, d))
            finally:
                upstream.cancel()
        except ConnectionError as exc:
            problem = forward_error(forward.port or 0, self.pod, exc)
        finally:  # a cancelled forward (the connection closing) too
            if sock is not None:
                sock.close()
            await self._finish(request, forward, problem)

    async def _finish(self, request: str, forward: _Forward, problem: str) -> None:
        """End of the data stream (FIN), the error stream (its message, FIN), and both."""
        forward.stop_inbound()
        await self._send(lambda: self.writer.data(forward.data, b"", fin=True))
        if problem:
            await self._send(lambda: self.writer.data(forward.error, problem.encode()))
        await self._send(lambda: self.writer.data(forward.error, b"", fin=True))
        self.requests.pop(request, None)
        self.streams.pop(forward.data, None)
        self.streams.pop(forward.error, None)

    async def _to_pod(self, forward: _Forward, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(ConnectionError):
            while (chunk := await forward.inbound.get()) is not None:
                writer.write(chunk)
                await writer.drain()
            if writer.can_write_eof():
                writer.write_eof()  # the client is done sending: so is the pod's peer

    async def close(self) -> None:
        tasks = [f.task for f in self.requests.values() if f.task is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)  # each closes its socket


class ChannelPortForward:
    """The v4 channel protocol: one connection per port named in the query."""

    def __init__(self, ws: web.WebSocketResponse, dial: Dialer, pod: str, ports: list[int]):
        self.ws, self.dial, self.pod, self.ports = ws, dial, pod, ports
        self.writers: dict[int, asyncio.StreamWriter] = {}

    async def _send(self, channel: int, data: bytes) -> None:
        await send_channel(self.ws, channel, data)

    async def run(self) -> None:
        for i, port in enumerate(self.ports):
            for channel in (2 * i, 2 * i + 1):
                await self._send(channel, struct.pack("<H", port))
        # every port is dialled before the client's bytes are read, so none is dropped
        dialled = await asyncio.gather(*(self._dial(i, p) for i, p in enumerate(self.ports)))
        pumps = [asyncio.create_task(self._from_pod(i, r)) for i, r in enumerate(dialled) if r]
        reader = asyncio.create_task(self._from_client())
        try:
            await asyncio.wait(
                [reader, asyncio.gather(*pumps)], return_when=asyncio.FIRST_COMPLETED
            )
        finally:
            for task in [reader, *pumps]:
                task.cancel()
            await asyncio.gather(reader, *pumps, return_exceptions=True)
            for writer in self.writers.values():
                writer.close()

    async def _dial(self, index: int, port: int) -> asyncio.StreamReader | None:
        try:
            sock = await self.dial(port)
        except ConnectionError as exc:
            await self._send(2 * index + 1, forward_error(port, self.pod, exc).encode())
            return None
        reader, self.writers[index] = await asyncio.open_connection(sock=sock)
        return reader

    async def _from_pod(self, index: int, reader: asyncio.StreamReader) -> None:
        with contextlib.suppress(ConnectionError):
            while data := await reader.read(CHUNK):
                await self._send(2 * index, data)

    async def _from_client(self) -> None:
        async for channel, data in channel_frames(self.ws):
            writer = self.writers.get(channel // 2)
            if channel % 2 == 0 and writer is not None and data:
                with contextlib.suppress(ConnectionError):
                    writer.write(data)
                    await writer.drain()
