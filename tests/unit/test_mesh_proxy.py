"""The sidecar's data path on loopback: real sockets, real HTTP, no root.

The nftables redirect is the only part replaced: `original_dst` returns the
address the test says the app dialled (a ClusterIP that exists only in the
route table), and the table's endpoints are backends on 127.0.0.1.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import re
from collections.abc import AsyncIterator, Callable

from mesh.balance import Balancer
from mesh.metrics import Metrics
from mesh.proxy import Proxy
from mesh.ratelimit import RateLimiter
from mesh.spans import SpanRecorder
from mesh.table import (
    DEFAULT_RETRY,
    HTTP,
    TCP,
    Destination,
    Endpoint,
    Fault,
    HeaderMatch,
    InboundPort,
    Match,
    RateLimit,
    Retry,
    Route,
    RouteTable,
    ServicePort,
    Workload,
)
from mesh.tracing import Tracer

VIP = ("10.96.0.10", 80)
ME = Workload("default", "client-0", "127.0.0.1", node="n1", rack="rack1", app="client")


class Ref:
    def __init__(self, table: RouteTable) -> None:
        self.table = table


class Backend:
    """An HTTP/1.1 server that answers its name and what it saw; keeps connections alive."""

    def __init__(self, name: str, delay: float = 0.0, status: int = 200) -> None:
        self.name = name
        self.delay = delay
        self.status = status
        self.seen: list[dict] = []
        self.server: asyncio.AbstractServer | None = None
        self.port = 0

    async def start(self) -> Backend:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]
        return self

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                line = await reader.readline()
                if not line:
                    return
                method, path, _ = line.decode().split(" ", 2)
                headers: dict[str, str] = {}
                while (h := await reader.readline()) not in (b"\r\n", b""):
                    k, v = h.decode().split(":", 1)
                    headers[k.strip().lower()] = v.strip()
                body = b""
                if "content-length" in headers:
                    body = await reader.readexactly(int(headers["content-length"]))
                elif headers.get("transfer-encoding") == "chunked":
                    while True:
                        size = int((await reader.readline()).strip(), 16)
                        data = await reader.readexactly(size + 2)
                        if size == 0:
                            break
                        body += data[:-2]
                self.seen.append({"method": method, "path": path, "headers": headers, "body": body})
                if self.delay:
                    await asyncio.sleep(self.delay)
                out = f"{self.name} {len(body)}".encode()
                head = f"HTTP/1.1 {self.status} X\r\ncontent-length: {len(out)}\r\n\r\n".encode()
                writer.write(head if method == "HEAD" else head + out)
                await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()

    def close(self) -> None:
        if self.server is not None:
            self.server.close()


def endpoint(b: Backend, **labels: str) -> Endpoint:
    return Endpoint("127.0.0.1", b.port, pod=f"default/{b.name}", labels=labels)


def service(
    routes: tuple[Route, ...], protocol: str = HTTP, address: tuple[str, int] = VIP
) -> RouteTable:
    sp = ServicePort("default", "web", 80, protocol, routes)
    return RouteTable(1, ME, {address: sp}, {}, {})


def route(*dests: Destination, name: str = "default", **kw) -> Route:
    return Route(name, dests, **kw)


def dest(*eps: Endpoint, weight: int = 100, subset: str | None = None) -> Destination:
    return Destination("default", "web", 80, eps, weight, subset)


class Client:
    """One kept-alive client connection speaking raw HTTP/1.1."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    async def send(self, raw: bytes) -> None:
        self.writer.write(raw)
        await self.writer.drain()

    async def response(self, head_only: bool = False) -> tuple[int, dict[str, str], bytes]:
        line = await asyncio.wait_for(self.reader.readline(), 5)
        if not line:
            raise ConnectionError("closed")
        status = int(line.split()[1])
        headers: dict[str, str] = {}
        while (h := await self.reader.readline()) not in (b"\r\n", b""):
            k, v = h.decode().split(":", 1)
            headers[k.strip().lower()] = v.strip()
        if head_only:
            return status, headers, b""
        body = await self.reader.readexactly(int(headers.get("content-length", "0")))
        return status, headers, body

    async def get(self, path: str = "/", **headers: str) -> tuple[int, dict[str, str], bytes]:
        extra = "".join(f"{k.replace('_', '-')}: {v}\r\n" for k, v in headers.items())
        await self.send(f"GET {path} HTTP/1.1\r\nhost: web\r\n{extra}\r\n".encode())
        return await self.response()

    async def closed(self) -> bool:
        return await asyncio.wait_for(self.reader.read(), 5) == b""

    def close(self) -> None:
        self.writer.close()


@contextlib.asynccontextmanager
async def proxied(table: RouteTable, **kw) -> AsyncIterator[tuple[Proxy, Callable]]:
    ref = Ref(table)
    target = kw.pop("target", VIP)
    proxy = Proxy(
        ref,
        Balancer(),
        kw.pop("limiter", RateLimiter()),
        Tracer(1.0),
        Metrics(),
        SpanRecorder(),
        mark=None,
        original_dst=lambda sock: target,
        **kw,
    )
    await proxy.start(outbound=("127.0.0.1", 0), inbound=("127.0.0.1", 0))
    (ob_host, ob_port), (ib_host, ib_port) = proxy.addresses()
    clients: list[Client] = []

    async def connect(side: str = "outbound") -> Client:
        port = ob_port if side == "outbound" else ib_port
        client = Client(*await asyncio.open_connection("127.0.0.1", port))
        clients.append(client)
        return client

    try:
        yield proxy, connect
    finally:
        for c in clients:
            c.close()
        await proxy.close(grace=0.1)


def run(test: Callable) -> Callable:
    """An async test run in a fresh event loop; `backends` (two Backends) passed
    when the test names it."""

    @functools.wraps(test)
    def sync() -> None:
        async def go() -> None:
            if "backends" in test.__code__.co_varnames[: test.__code__.co_argcount]:
                started = [await Backend(f"b{i}").start() for i in range(2)]
                try:
                    await asyncio.wait_for(test(started), 20)
                finally:
                    for b in started:
                        b.close()
            else:
                await asyncio.wait_for(test(), 20)

        asyncio.run(go())

    sync.__signature__ = None  # pytest must not look for fixtures
    return sync


@run
async def test_round_robin_per_request_on_one_connection(backends):
    table = service((route(dest(*(endpoint(b) for b in backends))),))
    async with proxied(table) as (proxy, connect):
        client = await connect()
        names = [(await client.get())[2].split()[0].decode() for _ in range(6)]
    assert names == ["b0", "b1"] * 3
    assert proxy.pool.opened == 2  # one kept-alive upstream connection per endpoint


@run
async def test_trace_headers_added_and_continued(backends):
    table = service((route(dest(endpoint(backends[0]))),))
    parent = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    async with proxied(table) as (proxy, connect):
        client = await connect()
        await client.get(traceparent=parent, x_request_id="rid-1")
        await client.get()
    first, second = (s["headers"] for s in backends[0].seen)
    m = re.fullmatch(r"00-([0-9a-f]{32})-([0-9a-f]{16})-01", first["traceparent"])
    assert m and m.group(1) == "0af7651916cd43dd8448eb211c80319c"
    assert m.group(2) != "b7ad6b7169203331"
    assert first["x-b3-parentspanid"] == "b7ad6b7169203331"
    assert first["x-request-id"] == "rid-1"
    assert second["x-request-id"] and second["traceparent"].split("-")[1] != m.group(1)
    spans = proxy.spans.take(10)
    assert [s["kind"] for s in spans] == ["CLIENT", "CLIENT"]
    assert spans[0]["parentId"] == "b7ad6b7169203331"
    assert spans[0]["tags"]["http.status_code"] == "200"


@run
async def test_header_match_and_zero_weight(backends):
    b0, b1 = backends
    jason = Match(headers=(HeaderMatch("end-user", "exact", "jason"),))
    table = service(
        (
            route(dest(endpoint(b1), subset="v3"), name="jason", matches=(jason,)),
            route(dest(endpoint(b0), weight=100), dest(endpoint(b1), weight=0), name="split"),
        )
    )
    async with proxied(table) as (_, connect):
        client = await connect()
        for _ in range(5):
            assert (await client.get(end_user="jason"))[2].startswith(b"b1")
        for _ in range(20):
            assert (await client.get(end_user="bob"))[2].startswith(b"b0")


@run
async def test_chunked_request_and_pipelining(backends):
    table = service((route(dest(*(endpoint(b) for b in backends))),))
    async with proxied(table) as (_, connect):
        client = await connect()
        chunked = (
            b"POST /up HTTP/1.1\r\nhost: web\r\ntransfer-encoding: chunked\r\n\r\n"
            b"5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n"
        )
        plain = b"GET /a HTTP/1.1\r\nhost: web\r\n\r\n"
        await client.send(chunked + plain + plain)  # three requests in one write
        answers = [await client.response() for _ in range(3)]
    assert [a[2] for a in answers] == [b"b0 11", b"b1 0", b"b0 0"]
    assert backends[0].seen[0]["body"] == b"hello world"


@run
async def test_head_request_keeps_the_connection(backends):
    table = service((route(dest(endpoint(backends[0]))),))
    async with proxied(table) as (_, connect):
        client = await connect()
        await client.send(b"HEAD / HTTP/1.1\r\nhost: web\r\n\r\n")
        status, headers, _ = await client.response(head_only=True)
        assert status == 200 and headers["content-length"] == "4"
        assert (await client.get())[0] == 200


@run
async def test_refused_endpoint_is_retried_on_another(backends):
    dead = await Backend("dead").start()
    dead.close()
    await dead.server.wait_closed()
    table = service((route(dest(endpoint(dead), endpoint(backends[0])), retries=DEFAULT_RETRY),))
    async with proxied(table) as (proxy, connect):
        client = await connect()
        bodies = [(await client.get())[2] for _ in range(4)]
    assert all(b.startswith(b"b0") for b in bodies)
    assert proxy.counters["retries"] >= 2


@run
async def test_all_refused_is_503_and_no_endpoints_is_503(backends):
    dead = await Backend("dead").start()
    dead.close()
    await dead.server.wait_closed()
    table = service((route(dest(endpoint(dead))),))
    async with proxied(table) as (_, connect):
        status, _, body = await (await connect()).get()
    assert status == 503 and b"connection failure" in body
    async with proxied(service((route(dest()),))) as (_, connect):
        status, _, body = await (await connect()).get()
    assert (status, body) == (503, b"no healthy upstream\n")


@run
async def test_timeout_is_504_and_5xx_retried():
    slow = await Backend("slow", delay=2.0).start()
    failing = await Backend("failing", status=503).start()
    ok = await Backend("ok").start()
    try:
        table = service((route(dest(endpoint(slow)), timeout=0.2),))
        async with proxied(table) as (proxy, connect):
            status, _, body = await (await connect()).get()
        assert (status, body) == (504, b"upstream request timeout\n")
        assert proxy.counters["timeouts"] == 1
        retry = Retry(attempts=2, retry_on=frozenset({"5xx"}))
        table = service((route(dest(endpoint(failing), endpoint(ok)), retries=retry),))
        async with proxied(table) as (_, connect):
            client = await connect()
            assert [(await client.get())[2] for _ in range(2)] == [b"ok 0", b"ok 0"]
    finally:
        for b in (slow, failing, ok):
            b.close()


@run
async def test_fault_abort_and_no_route(backends):
    abort = Fault(abort_status=418, abort_fraction=1.0)
    table = service((route(dest(endpoint(backends[0])), fault=abort),))
    async with proxied(table) as (_, connect):
        assert (await (await connect()).get())[0] == 418
    only_jason = Match(headers=(HeaderMatch("end-user", "exact", "jason"),))
    table = service((route(dest(endpoint(backends[0])), matches=(only_jason,)),))
    async with proxied(table) as (proxy, connect):
        assert (await (await connect()).get())[0] == 404
    assert proxy.counters["no_route"] == 1


@run
async def test_inbound_rate_limit_in_order_with_headers(backends):
    limit = RateLimit("default/web", max_tokens=3, tokens_per_fill=1, fill_interval=60.0)
    me = Workload("default", "web-0", "127.0.0.1", app="web")
    table = RouteTable(
        1, me, {}, {backends[0].port: InboundPort(backends[0].port, HTTP, "default/web", (limit,))}
    )
    async with proxied(table, target=("127.0.0.1", backends[0].port)) as (proxy, connect):
        client = await connect("inbound")
        await client.send(b"GET / HTTP/1.1\r\nhost: web\r\n\r\n" * 5)
        answers = [await client.response() for _ in range(5)]
    assert [a[0] for a in answers] == [200, 200, 200, 429, 429]
    assert [a[1]["x-ratelimit-remaining"] for a in answers] == ["2", "1", "0", "0", "0"]
    assert answers[3][2] == b"local_rate_limited\n"
    assert answers[3][1]["x-ratelimit-limit"].startswith("3")
    assert proxy.counters["rate_limited"] == 2
    assert len(backends[0].seen) == 3


@run
async def test_tcp_passthrough_and_non_http_on_an_http_port():
    async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        data = await reader.read()  # until the client's EOF: half-close must pass
        writer.write(b"echo:" + data)
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(echo, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        ep = Endpoint("127.0.0.1", port)
        for protocol, payload in ((TCP, b"GET / not really"), (HTTP, b"\x16\x03\x01binary")):
            table = service((route(dest(ep)),), protocol=protocol)
            async with proxied(table) as (proxy, connect):
                client = await connect()
                await client.send(payload)
                client.writer.write_eof()
                assert await asyncio.wait_for(client.reader.read(), 5) == b"echo:" + payload
                assert proxy.counters["tcp_connections"] == 1
        # an address outside the table: straight to where the app dialled
        async with proxied(service(()), target=("127.0.0.1", port)) as (_, connect):
            client = await connect()
            await client.send(b"ping")
            client.writer.write_eof()
            assert await asyncio.wait_for(client.reader.read(), 5) == b"echo:ping"
    finally:
        server.close()


@run
async def test_bad_requests_do_not_leak_connections(backends):
    table = service((route(dest(endpoint(backends[0]))),))
    async with proxied(table, header_timeout=0.2, sweep_interval=0.05) as (proxy, connect):
        bad = await connect()
        await bad.send(b"NOT A REQUEST\r\n\r\n")
        assert (await bad.response())[0] == 400 and await bad.closed()
        big = await connect()
        await big.send(b"GET / HTTP/1.1\r\nx-big: " + b"a" * 70000 + b"\r\n\r\n")
        assert (await big.response())[0] == 431 and await big.closed()
        slow = await connect()
        await slow.send(b"GET / HTTP/1.1\r\nhost: web\r\n")  # and never the blank line
        assert (await slow.response())[0] == 408 and await slow.closed()
        good = await connect()
        assert (await good.get())[0] == 200
        for c in (bad, big, slow, good):
            c.close()
        for _ in range(100):
            if proxy.stats()["connections_open"] == 0:
                break
            await asyncio.sleep(0.02)
        stats = proxy.stats()
    assert stats["connections_open"] == 0
    assert (stats["bad_requests"], stats["header_overflows"], stats["slow_clients"]) == (1, 1, 1)


@run
async def test_table_swap_applies_to_the_next_request(backends):
    b0, b1 = backends
    ref_table = service((route(dest(endpoint(b0))),))
    async with proxied(ref_table) as (proxy, connect):
        client = await connect()
        assert (await client.get())[2].startswith(b"b0")
        proxy.ref.table = service((route(dest(endpoint(b1))),))
        assert (await client.get())[2].startswith(b"b1")


@run
async def test_metrics_recorded_with_istio_names(backends):
    table = service((route(dest(endpoint(backends[0]))),))
    async with proxied(table) as (proxy, connect):
        client = await connect()
        for _ in range(3):
            await client.get()
    text = proxy.metrics.render()
    line = next(x for x in text.splitlines() if x.startswith("istio_requests_total{"))
    assert 'response_code="200"' in line and 'destination_service_name="web"' in line
    assert line.endswith(" 3")


@run
async def test_websocket_upgrade_becomes_a_tunnel():
    async def ws(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        assert b"upgrade: websocket" in head.lower()
        writer.write(b"HTTP/1.1 101 Switching Protocols\r\nupgrade: websocket\r\n\r\n")
        while data := await reader.read(100):
            writer.write(b"frame:" + data)
            await writer.drain()
        writer.close()

    server = await asyncio.start_server(ws, "127.0.0.1", 0)
    ep = Endpoint("127.0.0.1", server.sockets[0].getsockname()[1])
    try:
        async with proxied(service((route(dest(ep)),))) as (_, connect):
            client = await connect()
            await client.send(
                b"GET /chat HTTP/1.1\r\nhost: web\r\nconnection: Upgrade\r\n"
                b"upgrade: websocket\r\n\r\n"
            )
            status, headers, _ = await client.response(head_only=True)
            assert status == 101 and headers["upgrade"] == "websocket"
            await client.send(b"hi")
            assert await asyncio.wait_for(client.reader.read(100), 5) == b"frame:hi"
    finally:
        server.close()


@run
async def test_an_early_answer_keeps_the_connection_and_skips_the_body(backends):
    limit = RateLimit("default/web", max_tokens=1, tokens_per_fill=1, fill_interval=60.0)
    me = Workload("default", "web-0", "127.0.0.1", app="web")
    port = backends[0].port
    table = RouteTable(1, me, {}, {port: InboundPort(port, HTTP, "default/web", (limit,))})
    async with proxied(table, target=("127.0.0.1", port)) as (_, connect):
        client = await connect("inbound")
        assert (await client.get())[0] == 200  # the bucket's one token
        await client.send(b"POST /up HTTP/1.1\r\nhost: web\r\ncontent-length: 10\r\n\r\n")
        status, headers, _ = await client.response()  # answered before the body came
        assert status == 429 and "connection" not in headers
        await client.send(b"0123456789")  # the body, read past
        assert (await client.get())[0] == 429  # the same connection, the next request
    assert [s["method"] for s in backends[0].seen] == ["GET"]


@run
async def test_no_healthy_upstream_keeps_the_connection():
    async with proxied(service((route(dest()),))) as (_, connect):
        client = await connect()
        assert [(await client.get())[0] for _ in range(3)] == [503, 503, 503]


@run
async def test_idle_connections_to_endpoints_that_left_are_closed(backends):
    b0, b1 = backends
    table = service((route(dest(endpoint(b0), endpoint(b1))),))
    async with proxied(table) as (proxy, connect):
        client = await connect()
        for _ in range(2):
            await client.get()
        assert proxy.pool.idle_count() == 2
        table = service((route(dest(endpoint(b1))),))
        proxy.ref.table = table
        proxy.pool.retain(table.endpoint_addresses())  # as the sidecar does on each table
        assert proxy.pool.idle_count() == 1
        assert table.endpoint_addresses() == {("127.0.0.1", b1.port)}
        assert (await client.get())[2].startswith(b"b1")  # the kept one is still used
        assert proxy.pool.opened == 2
