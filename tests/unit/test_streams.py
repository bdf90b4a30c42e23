"""Exec and port-forward streams of the lab API, on loopback, with real clients: the
`kubernetes` Python client's stream() and portforward(), and a SPDY-over-WebSocket client
made of aiohttp and netlab.apiserver.spdy (kubectl's own protocol; the root tests drive
kubectl itself). The pod is faked: exec runs on the host, and the dialer reaches an echo
server on 127.0.0.1."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import threading
import time

import aiohttp
import pytest
from aiohttp import web
from kubernetes import client
from kubernetes.stream import portforward, stream

from netlab.apiserver import spdy
from netlab.apiserver.app import make_app
from netlab.apiserver.portforward import SPDY_TUNNEL
from netlab.errors import ApiError
from netlab.store import Store


class EchoServer:
    """Echoes what it reads until end of input, then closes (a half-close test)."""

    def __init__(self) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._echo, args=(conn,), daemon=True).start()

    @staticmethod
    def _echo(conn: socket.socket) -> None:
        with conn:
            while data := conn.recv(65536):
                conn.sendall(data)


class FakePods:
    """The Actions exec and port-forward need: pod "p" exists, its ports are loopback's."""

    def __init__(self) -> None:
        self.dialled: list[int] = []

    async def exec_entry(self, namespace: str, pod: str, container: str | None):
        if pod != "p":
            raise ApiError(404, f'pods "{pod}" not found', "NotFound")
        if container not in (None, "main"):
            raise ApiError(400, f"container {container} is not valid for pod {pod}", "BadRequest")
        return [], dict(os.environ)

    async def port_dialer(self, namespace: str, pod: str):
        if pod != "p":
            raise ApiError(404, f'pods "{pod}" not found', "NotFound")

        async def dial(port: int) -> socket.socket:
            self.dialled.append(port)
            try:
                sock = socket.create_connection(("127.0.0.1", port), timeout=2)
            except OSError as exc:
                raise ConnectionError(f"dial tcp4 127.0.0.1:{port}: {exc.strerror}") from exc
            sock.setblocking(False)
            return sock

        return dial


class Server:
    """The lab API app on a loopback TCP port, on its own loop in a thread."""

    def __init__(self) -> None:
        self.pods = FakePods()
        self.loop = asyncio.new_event_loop()
        threading.Thread(target=self.loop.run_forever, daemon=True).start()
        self.runner = web.AppRunner(make_app(Store(), self.pods))
        self.call(self.runner.setup())
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        self.call(site.start())
        self.port = self.runner.addresses[0][1]
        self.url = f"http://127.0.0.1:{self.port}"

    def call(self, coro, timeout: float = 20.0):
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def stop(self) -> None:
        self.call(self.runner.cleanup())
        self.loop.call_soon_threadsafe(self.loop.stop)


@pytest.fixture(scope="module")
def server():
    running = Server()
    yield running
    running.stop()


@pytest.fixture(scope="module")
def echo():
    return EchoServer()


@pytest.fixture
def core(server):
    config = client.Configuration(host=server.url)
    with client.ApiClient(config) as api:
        yield client.CoreV1Api(api)


# -- exec --------------------------------------------------------------------------------


@pytest.mark.parametrize("binary", [False, True])
def test_exec_takes_stdin_in_text_and_binary_frames(core, binary):
    resp = stream(
        core.connect_get_namespaced_pod_exec, "p", "default", command=["cat"],
        stdin=True, stdout=True, stderr=True, tty=False, binary=binary, _preload_content=False,
    )  # fmt: skip
    line = "grüße through stdin\n"
    resp.write_stdin(line.encode() if binary else line)
    got, want = (b"", line.encode()) if binary else ("", line)
    for _ in range(5):  # bounded: stdin that never arrives fails the test
        got += resp.read_stdout(timeout=2)
        if len(got) >= len(want) or not resp.is_open():
            break
    resp.close()
    assert got == want


def test_exec_into_a_missing_container_says_so_before_any_upgrade(server):
    async def go():
        async with aiohttp.ClientSession() as session:
            url = f"{server.url}/api/v1/namespaces/default/pods/p/exec"
            out = []
            for upgrade in ("websocket", "SPDY/3.1"):  # kubectl 1.35 tries both, in turn
                headers = {"Connection": "Upgrade", "Upgrade": upgrade}
                params = [("command", "true"), ("container", "nosuch")]
                async with session.post(url, params=params, headers=headers) as resp:
                    out.append((resp.status, await resp.json()))
            return out

    for status, body in asyncio.run(go()):
        assert status == 400 and body["reason"] == "BadRequest"
        assert body["message"] == "container nosuch is not valid for pod p"


# -- port-forward: the v4 channel protocol (the Python client) ---------------------------


def test_python_clients_portforward_reaches_the_port(core, echo):
    pf = portforward(
        core.connect_get_namespaced_pod_portforward, "p", "default", ports=str(echo.port)
    )
    sock = pf.socket(echo.port)
    sock.settimeout(10)
    payload = os.urandom(300_000)
    sender = threading.Thread(target=sock.sendall, args=(payload,))
    sender.start()
    got = b""
    while len(got) < len(payload):
        got += sock.recv(65536)
    sender.join()
    assert got == payload and pf.error(echo.port) is None
    sock.close()


def test_python_clients_portforward_to_a_closed_port_gets_the_error(core, echo):
    closed = socket.create_server(("127.0.0.1", 0))
    port = closed.getsockname()[1]
    closed.close()
    pf = portforward(core.connect_get_namespaced_pod_portforward, "p", "default", ports=str(port))
    sock = pf.socket(port)
    sock.settimeout(10)
    assert sock.recv(10) == b""  # closed by the proxy once the error arrived
    assert f"error forwarding port {port} to pod p, uid " in pf.error(port)


# -- port-forward: SPDY through the WebSocket (kubectl 1.30+) ------------------------------


class SpdyClient:
    """kubectl's side of SPDY/3.1+portforward.k8s.io, enough to drive the server."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse):
        self.ws, self.writer, self.reader = ws, spdy.Writer(), spdy.Reader()
        self.next_id = 1

    async def send(self, frame: bytes) -> None:
        for i in range(0, len(frame), 7):  # small pieces, as Go's framer writes them
            await self.ws.send_bytes(frame[i : i + 7])

    async def open(self, kind: str, port: int, request: int) -> int:
        sid, self.next_id = self.next_id, self.next_id + 2
        headers = {"streamtype": [kind], "port": [str(port)], "requestid": [str(request)]}
        await self.send(self.writer.syn_stream(sid, headers))
        return sid

    async def frames(self, until) -> list:
        seen: list = []
        while not until(seen):
            message = await asyncio.wait_for(self.ws.receive(), 10)
            assert message.type == aiohttp.WSMsgType.BINARY, message
            seen += self.reader.feed(message.data)
        return seen


async def _tunnel(server: Server, body) -> object:
    async with aiohttp.ClientSession() as session:
        url = f"{server.url}/api/v1/namespaces/default/pods/p/portforward"
        async with session.ws_connect(url, protocols=(SPDY_TUNNEL,)) as ws:
            assert ws.protocol == SPDY_TUNNEL
            return await asyncio.wait_for(body(SpdyClient(ws)), 60)  # a stall fails


def _finished(seen: list, sid: int) -> bool:
    return any(isinstance(f, spdy.Data) and f.stream_id == sid and f.fin for f in seen)


def test_spdy_tunnel_forwards_two_connections_and_half_closes(server, echo):
    async def body(c: SpdyClient):
        streams = {}
        for request in (0, 1):
            error = await c.open("error", echo.port, request)
            data = await c.open("data", echo.port, request)
            streams[request] = (error, data)
        await c.send(c.writer.ping(1))
        for request, (_, data) in streams.items():
            await c.send(c.writer.data(data, f"hello {request}".encode() * 5000))
            await c.send(c.writer.data(data, b"", fin=True))  # the client is done
        last_error = streams[1][0]
        seen = await c.frames(
            lambda s: all(_finished(s, sid) for p in streams.values() for sid in p)
        )
        return streams, seen, last_error

    streams, seen, _ = asyncio.run(_tunnel(server, body))
    replies = {f.stream_id for f in seen if isinstance(f, spdy.SynReply)}
    assert replies == {sid for pair in streams.values() for sid in pair}
    assert spdy.Ping(1) in seen
    for request, (error, data) in streams.items():
        got = b"".join(f.data for f in seen if isinstance(f, spdy.Data) and f.stream_id == data)
        assert got == f"hello {request}".encode() * 5000
        assert not b"".join(
            f.data for f in seen if isinstance(f, spdy.Data) and f.stream_id == error
        )


def test_spdy_tunnel_reports_a_refused_port_on_the_error_stream(server):
    closed = socket.create_server(("127.0.0.1", 0))
    port = closed.getsockname()[1]
    closed.close()

    async def body(c: SpdyClient):
        error = await c.open("error", port, 0)
        data = await c.open("data", port, 0)
        return error, data, await c.frames(lambda s: _finished(s, error) and _finished(s, data))

    error, data, seen = asyncio.run(_tunnel(server, body))
    message = b"".join(f.data for f in seen if isinstance(f, spdy.Data) and f.stream_id == error)
    assert message.decode().startswith(f"error forwarding port {port} to pod p, uid ")


def test_a_stream_without_a_known_type_is_reset(server):
    async def body(c: SpdyClient):
        await c.send(c.writer.syn_stream(1, {"streamtype": ["bogus"], "port": ["80"]}))
        return await c.frames(lambda s: bool(s))

    assert asyncio.run(_tunnel(server, body)) == [spdy.RstStream(1, spdy.CANCEL)]


def test_portforward_refusals_come_before_the_upgrade(server):
    async def go():
        async with aiohttp.ClientSession() as session:
            base = f"{server.url}/api/v1/namespaces/default/pods"
            ws = {"Connection": "Upgrade", "Upgrade": "websocket", "Sec-WebSocket-Version": "13",
                  "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ==",
                  "Sec-WebSocket-Protocol": "v4.channel.k8s.io"}  # fmt: skip
            out = []
            for url, headers in (
                (f"{base}/nosuch/portforward", ws),
                (f"{base}/p/portforward", ws),  # v4 names its ports in the query
                (f"{base}/p/portforward", {"Connection": "Upgrade", "Upgrade": "SPDY/3.1"}),
            ):
                async with session.get(url, headers=headers) as resp:
                    out.append((resp.status, json.loads(await resp.text())["message"]))
            return out

    missing, no_ports, old_spdy = asyncio.run(go())
    assert missing == (404, 'pods "nosuch" not found')
    assert no_ports == (400, 'query parameter "ports" is required')
    assert old_spdy[0] == 400 and "kubectl 1.30 or newer" in old_spdy[1]


def test_a_pod_that_closes_early_does_not_stall_the_connection(server, echo):
    """The client goes on sending after the pod's side closed (here: a pod that reads
    nothing and closes after a while, when the stream's queue is full): those bytes are
    dropped, and the connection's other forwards go on."""
    closer = socket.create_server(("127.0.0.1", 0))

    def close_later() -> None:
        conn, _ = closer.accept()
        time.sleep(1)
        conn.close()

    threading.Thread(target=close_later, daemon=True).start()
    port = closer.getsockname()[1]

    async def body(c: SpdyClient):
        error = await c.open("error", port, 0)
        data = await c.open("data", port, 0)
        chunk = b"x" * 32768
        for _ in range(400):  # far more than a stream queues
            await c.ws.send_bytes(c.writer.data(data, chunk))
        await c.frames(lambda s: _finished(s, error) and _finished(s, data))
        error2 = await c.open("error", echo.port, 1)
        data2 = await c.open("data", echo.port, 1)
        await c.send(c.writer.data(data2, b"still here", fin=True))
        seen = await c.frames(lambda s: _finished(s, data2) and _finished(s, error2))
        return b"".join(f.data for f in seen if isinstance(f, spdy.Data) and f.stream_id == data2)

    assert asyncio.run(_tunnel(server, body)) == b"still here"
    closer.close()
