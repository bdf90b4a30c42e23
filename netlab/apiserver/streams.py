"""`kubectl exec` and the `kubernetes` client's `stream(connect_get_namespaced_pod_exec)`:
Kubernetes' remote command protocol over a WebSocket.

The client asks for a subprotocol (`v5.channel.k8s.io`, kubectl 1.30 and newer;
`v4.channel.k8s.io`, the Python client); every binary message starts with a
channel byte (a text message, which the Python client sends by default, carries it as
its first character): 0 stdin, 1 stdout, 2 stderr, 3 the final Status (exit code), 4 a
terminal resize (`{"Width":..,"Height":..}`); v5 adds 255, "close channel N"
(stdin's end of file). The command runs in the pod's network namespace with the
container's environment, on a pseudo-terminal when `tty=true`. Older kubectl
speaks SPDY, which the lab does not: it is told so, in a Status.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import json
import os
import pty
import struct
import termios
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence

from aiohttp import WSMessage, WSMsgType, web

from netlab.errors import ApiError

PROTOCOLS = ("v5.channel.k8s.io", "v4.channel.k8s.io")
STDIN, STDOUT, STDERR, ERROR, RESIZE, CLOSE = 0, 1, 2, 3, 4, 255

# (namespace, pod, container or None) -> (argv prefix that enters the pod, environment)
Entry = Callable[[str, str, str | None], Awaitable[tuple[Sequence[str], Mapping[str, str]]]]


def _flag(request: web.Request, name: str) -> bool:
    return request.query.get(name, "").lower() in ("1", "true")


def exit_status(code: int) -> dict:
    """The Status on channel 3: how the command ended."""
    if code == 0:
        return {"metadata": {}, "status": "Success"}
    return {
        "metadata": {},
        "status": "Failure",
        "message": f"command terminated with non-zero exit code: exit status {code}",
        "reason": "NonZeroExitCode",
        "details": {"causes": [{"reason": "ExitCode", "message": str(code)}]},
    }


def channel_frame(message: WSMessage) -> tuple[int, bytes] | None:
    """(channel, data) of a client's message: a binary one (kubectl, and the Python client
    with binary=True), or a text one whose first character is the channel (the Python
    client's default, `chr(channel) + text`); None for anything else."""
    if message.type == WSMsgType.BINARY:
        data = message.data
    elif message.type == WSMsgType.TEXT:
        data = message.data.encode()
    else:
        return None
    if not data:
        return None
    return data[0], data[1:]


async def channel_frames(ws: web.WebSocketResponse) -> AsyncIterator[tuple[int, bytes]]:
    """The client's (channel, data) messages until it goes (aiohttp ends the iteration
    on a close; an error ends it here)."""
    async for message in ws:
        if message.type == WSMsgType.ERROR:
            return
        frame = channel_frame(message)
        if frame is not None:
            yield frame


async def send_channel(ws: web.WebSocketResponse, channel: int, data: bytes) -> None:
    """One message on a channel; a client already gone is not an error."""
    with contextlib.suppress(ConnectionResetError, RuntimeError):
        await ws.send_bytes(bytes([channel]) + data)


def make_handler(entry: Entry) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
    async def handle(request: web.Request) -> web.StreamResponse:
        command = request.query.getall("command", [])
        if not command:
            raise ApiError(400, "exec: you must specify at least one command", "BadRequest")
        namespace, name = request.match_info["namespace"], request.match_info["name"]
        # The pod and container first, as kube-apiserver does: kubectl 1.30+ falls back
        # to SPDY when the WebSocket upgrade is refused, so a missing container must be
        # the answer to both, not the SPDY refusal below.
        prefix, env = await entry(namespace, name, request.query.get("container"))
        upgrade = request.headers.get("Upgrade", "").lower()
        if upgrade.startswith("spdy"):
            raise ApiError(
                400,
                "the lab API speaks the WebSocket remote command protocol (v4/v5.channel.k8s.io), "
                "not SPDY: use kubectl 1.30 or newer (older kubectl cannot exec into a lab pod; "
                "`netlab exec POD -- CMD` can)",
                "BadRequest",
            )
        if upgrade != "websocket":
            raise ApiError(400, "exec needs a WebSocket upgrade (v5.channel.k8s.io)", "BadRequest")
        ws = web.WebSocketResponse(protocols=PROTOCOLS, max_msg_size=1 << 20)
        if not ws.can_prepare(request).ok:
            raise ApiError(400, f"exec: offer one of the subprotocols {', '.join(PROTOCOLS)}")
        await ws.prepare(request)
        session = ExecSession(ws, [*prefix, *command], env, _flag(request, "tty"))
        await session.run(stdin=_flag(request, "stdin"))
        return ws

    return handle


class ExecSession:
    """One command, its streams multiplexed over the WebSocket."""

    def __init__(
        self, ws: web.WebSocketResponse, argv: Sequence[str], env: Mapping[str, str], tty: bool
    ):
        self.ws, self.argv, self.env, self.tty = ws, list(argv), dict(env), tty
        self.master: int | None = None

    async def _send(self, channel: int, data: bytes) -> None:
        await send_channel(self.ws, channel, data)

    async def run(self, stdin: bool) -> None:
        if self.tty:
            self.master, slave = pty.openpty()
            proc = await asyncio.create_subprocess_exec(
                *self.argv, stdin=slave, stdout=slave, stderr=slave, env=self.env,
                start_new_session=True, preexec_fn=_take_terminal, cwd="/",
            )  # fmt: skip
            os.close(slave)
            pumps = [asyncio.create_task(self._pump_fd(self.master, STDOUT))]
        else:
            proc = await asyncio.create_subprocess_exec(
                *self.argv,
                stdin=asyncio.subprocess.PIPE if stdin else asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
                env=self.env, start_new_session=True, cwd="/",
            )  # fmt: skip
            pumps = [
                asyncio.create_task(self._pump_stream(proc.stdout, STDOUT)),
                asyncio.create_task(self._pump_stream(proc.stderr, STDERR)),
            ]
        reader = asyncio.create_task(self._read_client(proc, stdin))
        try:
            code = await proc.wait()
            await asyncio.wait(pumps, timeout=2.0)
            await self._send(ERROR, json.dumps(exit_status(code)).encode())
        finally:
            reader.cancel()
            for task in pumps:
                task.cancel()
            if proc.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    proc.kill()
            if self.master is not None:
                with contextlib.suppress(OSError):
                    os.close(self.master)
            await self.ws.close()

    async def _pump_stream(self, stream: asyncio.StreamReader, channel: int) -> None:
        while data := await stream.read(65536):
            await self._send(channel, data)

    async def _pump_fd(self, fd: int, channel: int) -> None:
        loop = asyncio.get_running_loop()
        while True:
            try:
                data = await loop.run_in_executor(None, os.read, fd, 65536)
            except OSError:  # EIO: the terminal's other end closed
                return
            if not data:
                return
            await self._send(channel, data)

    async def _read_client(self, proc: asyncio.subprocess.Process, stdin: bool) -> None:
        """stdin, resizes and (v5) the close of stdin, until the client goes."""
        async for channel, data in channel_frames(self.ws):
            if channel == STDIN and stdin:
                await self._write_stdin(proc, data)
            elif channel == RESIZE and self.master is not None:
                self._resize(data)
            elif channel == CLOSE and data[:1] == bytes([STDIN]):
                await self._close_stdin(proc)
        if proc.returncode is None and not self.tty:  # the client is gone
            await self._close_stdin(proc)

    async def _write_stdin(self, proc: asyncio.subprocess.Process, data: bytes) -> None:
        if self.master is not None:
            os.write(self.master, data)
        elif proc.stdin is not None:
            with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                proc.stdin.write(data)
                await proc.stdin.drain()

    async def _close_stdin(self, proc: asyncio.subprocess.Process) -> None:
        if self.master is not None:
            os.write(self.master, b"\x04")  # ^D: end of input at the terminal
        elif proc.stdin is not None and not proc.stdin.is_closing():
            proc.stdin.close()

    def _resize(self, data: bytes) -> None:
        try:
            size = json.loads(data)
            rows, cols = int(size["Height"]), int(size["Width"])
        except (ValueError, KeyError, TypeError):
            return  # a malformed resize is ignored, as kubelet does
        with contextlib.suppress(OSError):
            fcntl.ioctl(self.master, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))


def _take_terminal() -> None:
    """In the child: the pseudo-terminal on stdin becomes its controlling terminal."""
    fcntl.ioctl(0, termios.TIOCSCTTY, 0)
