"""The data path: the outbound (15001) and inbound (15006) listeners.

Each accepted connection is one `Downstream` protocol: it recovers where the
app meant to go (SO_ORIGINAL_DST), looks that up in the current route table
and becomes either an HTTP proxy (httptools finds request boundaries; each
request is routed, balanced, limited and traced on its own, so round-robin
is per request even on one kept-alive client connection) or a plain TCP pipe
(non-HTTP ports, addresses outside the mesh). No task or future per request:
callbacks only, one upstream request at a time per client connection
(pipelined requests queue in order), response bytes forwarded untouched.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections import deque
from collections.abc import Callable
from typing import Any

import httptools

from mesh import http1
from mesh.balance import Balancer
from mesh.metrics import Metrics
from mesh.ratelimit import RateLimiter
from mesh.spans import SpanRecorder
from mesh.table import (
    DEFAULT_RETRY,
    HTTP,
    Destination,
    Endpoint,
    Retry,
    Route,
    RouteTable,
    Workload,
    lower_headers,
)
from mesh.tracing import TRACE_HEADERS, TraceContext, Tracer
from mesh.upstream import Pipe, Pool, Upstream

log = logging.getLogger("mesh")

OUTBOUND, INBOUND = "outbound", "inbound"
DROP_OUT = http1.HOP_BY_HOP | frozenset(h.encode() for h in TRACE_HEADERS)
MAX_QUEUED = 16  # pipelined requests waiting behind the one in flight: past it, stop reading
DRAIN_LIMIT = 1 << 20  # body bytes read past after an early answer; more closes instead
HEADER_TIMEOUT = 10.0  # seconds from a request's first byte to its full head (else 408)
IDLE_TIMEOUT = 300.0  # a kept-alive client connection with nothing to do is closed
_METHOD_START = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZ")


class Exchange:
    """One request from its first byte to its response's last."""

    __slots__ = (
        "method",
        "verb",
        "path",
        "url",
        "headers",
        "hdict",
        "keep_alive",
        "chunked",
        "body",
        "body_size",
        "replayable",
        "complete",
        "upgrade",
        "wall",
        "started",
        "route",
        "dest",
        "endpoint",
        "tried",
        "attempts",
        "retry",
        "up",
        "status",
        "response_bytes",
        "responding",
        "inject",
        "head_buffer",
        "trace",
        "flags",
        "timer",
        "try_timer",
        "service",
        "limited",
        "counted",
    )

    def __init__(self) -> None:
        self.url = b""
        self.headers: list[tuple[bytes, bytes]] = []
        self.hdict: dict[str, str] = {}
        self.keep_alive = True
        self.chunked = False
        self.body: list[bytes] = []  # framed body bytes not yet sent, or kept for a retry
        self.body_size = 0
        self.replayable = True
        self.complete = False
        self.upgrade = False
        self.route: Route | None = None
        self.dest: Destination | None = None
        self.endpoint: Endpoint | None = None
        self.tried: list[tuple[str, int]] = []
        self.attempts = 0
        self.retry: Retry | None = None
        self.up: Upstream | None = None
        self.status = 0
        self.response_bytes = 0
        self.responding = False  # response bytes went to the client: no retry, no local reply
        self.inject = b""  # lines to add to the response head (x-ratelimit-*)
        self.head_buffer = b""
        self.trace: TraceContext | None = None
        self.flags = "-"
        self.timer: asyncio.TimerHandle | None = None
        self.try_timer: asyncio.TimerHandle | None = None
        self.service: tuple[str, str] = ("", "")  # destination (namespace, service)
        self.limited = False
        self.counted: Endpoint | None = None  # the endpoint the balancer counts it on


class Proxy:
    def __init__(
        self,
        table_ref: Any,
        balancer: Balancer,
        limiter: RateLimiter,
        tracer: Tracer,
        metrics: Metrics,
        spans: SpanRecorder,
        mark: int | None = 0x4E4C,
        original_dst: Callable[[Any], tuple[str, int] | None] = http1.original_dst,
        header_timeout: float = HEADER_TIMEOUT,
        idle_timeout: float = IDLE_TIMEOUT,
        sweep_interval: float = 1.0,
    ) -> None:
        self.ref = table_ref
        self.balancer = balancer
        self.limiter = limiter
        self.tracer = tracer
        self.metrics = metrics
        self.spans = spans
        self.mark = mark
        self.original_dst = original_dst
        self.header_timeout = header_timeout
        self.idle_timeout = idle_timeout
        self.sweep_interval = sweep_interval
        self.pool = Pool(mark)
        self.rng = random.Random()
        self.connections: set[Downstream] = set()
        self.servers: list[asyncio.AbstractServer] = []
        self.tick = 1  # sweeps since start: a cheap clock for the per-connection deadlines
        self._sweeper: asyncio.TimerHandle | None = None
        self.counters = dict.fromkeys(
            (
                "connections_total",
                "requests",
                "retries",
                "rate_limited",
                "timeouts",
                "no_route",
                "no_healthy_upstream",
                "upstream_failures",
                "bad_requests",
                "header_overflows",
                "slow_clients",
                "tcp_connections",
                "blackholed",
            ),
            0,
        )

    async def start(self, outbound: tuple[str, int], inbound: tuple[str, int]) -> None:
        loop = asyncio.get_running_loop()
        for side, (host, port) in ((OUTBOUND, outbound), (INBOUND, inbound)):
            server = await loop.create_server(
                lambda side=side: Downstream(self, side),
                host,
                port,
                reuse_address=True,
                backlog=1024,
            )
            self.servers.append(server)
        self._sweeper = loop.call_later(self.sweep_interval, self._sweep)

    def addresses(self) -> list[tuple[str, int]]:
        """The bound (host, port) of the outbound and inbound listeners."""
        return [s.sockets[0].getsockname()[:2] for s in self.servers]

    def _sweep(self) -> None:
        """Every sweep_interval: slow request heads (408) and long-idle connections."""
        self.tick += 1
        for conn in list(self.connections):
            conn.sweep(self.tick)
        self._sweeper = asyncio.get_running_loop().call_later(self.sweep_interval, self._sweep)

    def stats(self) -> dict[str, Any]:
        in_flight = sum(1 for c in self.connections if c.active is not None)
        inbound = sum(1 for c in self.connections if c.active is not None and c.side == INBOUND)
        return {
            "connections_open": len(self.connections),
            "requests_in_flight": in_flight,
            "inbound_in_flight": inbound,  # the autoscaler's concurrency, as Knative's queue-proxy reports it
            "upstream_open": self.pool.open,
            "upstream_idle": self.pool.idle_count(),
            "upstream_opened": self.pool.opened,
            **self.counters,
        }

    async def close(self, grace: float = 2.0) -> None:
        """Stop accepting, give requests in flight `grace` seconds, then close all."""
        if self._sweeper is not None:
            self._sweeper.cancel()
        for server in self.servers:
            server.close()
        deadline = time.monotonic() + grace
        while time.monotonic() < deadline and any(c.active is not None for c in self.connections):
            await asyncio.sleep(0.02)
        for conn in list(self.connections):
            conn.close()
        self.pool.close()
        for server in self.servers:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(server.wait_closed(), 0.5)


class Downstream(asyncio.Protocol):
    """One accepted connection, on either listener."""

    def __init__(self, proxy: Proxy, side: str) -> None:
        self.proxy = proxy
        self.side = side
        self.transport: asyncio.Transport | None = None
        self.peer: tuple[str, int] = ("", 0)
        self.dst: tuple[str, int] = ("", 0)
        self.parser: httptools.HttpRequestParser | None = None
        self.parsing: Exchange | None = None
        self.active: Exchange | None = None
        self.queue: deque[Exchange] = deque()
        self.head_size = 0
        self.head_since = 0
        self.idle_since = 0
        self.closing = False
        self.reading_paused = False
        self.pipe: Pipe | None = None  # TCP mode: the upstream half
        self.pending: list[bytes] | None = None  # TCP mode: bytes before the pipe connected
        self.sent = 0
        self.sniffing = False
        self.eof_in = False  # TCP mode: the client half-closed
        self.upgrading: Exchange | None = None
        self.draining: Exchange | None = None  # answered; its body still to be read past
        self.inbound_dest: Destination | None = None
        self._span_me: Workload | None = None  # the table's `me` the bases were made for
        self._span_bases: dict[tuple, tuple] = {}

    # -- set-up ------------------------------------------------------------------

    def connection_made(self, transport: Any) -> None:
        proxy = self.proxy
        self.transport = transport
        proxy.connections.add(self)
        proxy.counters["connections_total"] += 1
        self.peer = transport.get_extra_info("peername")[:2]
        dst = proxy.original_dst(transport.get_extra_info("socket"))
        if dst is None:  # not redirected here: nothing to proxy to (Envoy's BlackHole)
            proxy.counters["blackholed"] += 1
            transport.close()
            return
        self.dst = dst
        table = proxy.ref.table
        if self.side == OUTBOUND:
            sp = table.outbound(*dst)
            http = sp is not None and sp.protocol == HTTP
        else:
            ib = table.inbound.get(dst[1])
            http = ib is not None and ib.protocol == HTTP
        if http:
            self.sniffing = True
            self.idle_since = proxy.tick
        else:
            self._start_tcp(first=None)

    # -- TCP mode ----------------------------------------------------------------

    def _start_tcp(self, first: bytes | None) -> None:
        proxy = self.proxy
        proxy.counters["tcp_connections"] += 1
        target = self.dst
        if self.side == OUTBOUND:
            sp = proxy.ref.table.outbound(*self.dst)
            if sp is not None and sp.routes:
                dest = proxy.balancer.choose(sp.routes[0])
                ep = proxy.balancer.pick(dest) if dest is not None else None
                if ep is None:
                    self.close()
                    return
                target = ep.address
        self.pending = [first] if first else []
        asyncio.get_running_loop().create_task(self._connect_pipe(target))

    async def _connect_pipe(self, target: tuple[str, int]) -> None:
        loop = asyncio.get_running_loop()
        sock = http1.marked_socket(self.proxy.mark)
        transport = self.transport
        try:
            await asyncio.wait_for(loop.sock_connect(sock, target), self.proxy.pool.connect_timeout)
            _, pipe = await loop.create_connection(
                lambda: Pipe(transport, self._tcp_closed), sock=sock
            )
        except (TimeoutError, OSError) as exc:
            sock.close()
            log.debug("tcp %s -> %s: %s", self.peer, target, exc)
            self.proxy.counters["upstream_failures"] += 1
            self.close()
            return
        if self.transport is None or self.transport.is_closing():
            pipe.transport.close()
            return
        self.pipe = pipe
        pipe.on_eof = self._tcp_half_closed
        if self.pending:
            pipe.transport.write(b"".join(self.pending))
        self.pending = None
        if self.eof_in:  # the client half-closed before we connected
            pipe.transport.write_eof()
        self.resume_reading()

    def _tcp_closed(self) -> None:
        pipe = self.pipe
        if pipe is None:
            return
        proxy = self.proxy
        table = proxy.ref.table
        sp = table.outbound(*self.dst) if self.side == OUTBOUND else None
        me = table.me
        peer_w = table.workload(self.dst[0] if self.side == OUTBOUND else self.peer[0])
        ns, svc = (sp.namespace, sp.service) if sp is not None else ("", "")
        if self.side == INBOUND:
            ib = table.inbound.get(self.dst[1])
            if ib is not None and ib.service:
                ns, _, svc = ib.service.partition("/")
        source, destination = (me, peer_w) if self.side == OUTBOUND else (peer_w, me)
        proxy.metrics.record_tcp(
            "source" if self.side == OUTBOUND else "destination",
            source,
            destination,
            ns,
            svc,
            self.sent,
            pipe.received,
        )

    # -- asyncio callbacks -----------------------------------------------------------

    def data_received(self, data: bytes) -> None:
        if self.sniffing:
            self.sniffing = False
            if data[0] not in _METHOD_START:  # not an HTTP request line: plain TCP
                self._start_tcp(first=data)
                return
            self.parser = httptools.HttpRequestParser(self)
        parser = self.parser
        if parser is None:  # TCP mode
            self.sent += len(data)
            if self.pipe is not None:
                self.pipe.transport.write(data)
            elif self.pending is not None:
                self.pending.append(data)
                if len(self.pending) > 64:  # still connecting: hold, do not buffer without end
                    self.pause_reading()
            return
        if self.transport is None or self.transport.is_closing():
            return
        self.idle_since = 0
        try:
            parser.feed_data(data)
        except httptools.HttpParserUpgrade as exc:
            self._upgrade(data[exc.args[0] :] if exc.args else b"")
        except httptools.HttpParserError as exc:
            self._bad_request(exc)

    def eof_received(self) -> bool:
        if self.parser is None and not self.sniffing:  # TCP mode (or a tunnel)
            self.eof_in = True
            pipe = self.pipe
            if pipe is not None:
                with contextlib.suppress(OSError, RuntimeError):
                    pipe.transport.write_eof()
                if pipe.eof_in:
                    self._tcp_half_closed()
            return True
        # HTTP: the client is done sending; answer what is in flight, then close
        if self.active is not None or self.queue:
            self.closing = True
            return True
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self.proxy.connections.discard(self)
        self.transport = None
        if self.pipe is not None and self.pipe.transport is not None:
            self.pipe.transport.close()
        ex = self.active
        self.active = None
        self.queue.clear()
        if ex is not None:
            self._cancel_timers(ex)
            self._uncount(ex)
            if ex.up is not None:
                ex.up.abandon()
                ex.up = None

    def pause_writing(self) -> None:
        ex = self.active
        if ex is not None and ex.up is not None and ex.up.transport is not None:
            ex.up.transport.pause_reading()
        if self.pipe is not None and self.pipe.transport is not None:
            self.pipe.transport.pause_reading()

    def resume_writing(self) -> None:
        ex = self.active
        if ex is not None and ex.up is not None and ex.up.transport is not None:
            ex.up.transport.resume_reading()
        if self.pipe is not None and self.pipe.transport is not None:
            self.pipe.transport.resume_reading()

    def pause_reading(self) -> None:
        if self.transport is not None and not self.reading_paused:
            self.reading_paused = True
            self.transport.pause_reading()

    def resume_reading(self) -> None:
        if self.transport is not None and self.reading_paused:
            self.reading_paused = False
            self.transport.resume_reading()

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()

    def _tcp_half_closed(self) -> None:
        """Both directions of a passthrough saw EOF: nothing more can flow."""
        if self.eof_in and self.pipe is not None and self.pipe.eof_in:
            self.pipe.transport.close()
            self.close()

    def sweep(self, tick: int) -> None:
        proxy = self.proxy
        step = proxy.sweep_interval
        if self.head_since and (tick - self.head_since) * step > proxy.header_timeout:
            proxy.counters["slow_clients"] += 1
            self._reply_and_close(408, "request header timeout")
        elif self.sniffing and (tick - self.idle_since) * step > proxy.header_timeout:
            proxy.counters["slow_clients"] += 1
            self.close()  # connected and said nothing
        elif self.idle_since and (tick - self.idle_since) * step > proxy.idle_timeout:
            self.close()

    # -- httptools callbacks (requests) ------------------------------------------------

    def on_message_begin(self) -> None:
        self.parsing = Exchange()
        self.head_size = 0
        self.head_since = self.proxy.tick

    def on_url(self, url: bytes) -> None:
        ex = self.parsing
        ex.url += url
        self.head_size += len(url)
        if self.head_size > http1.MAX_HEAD:
            self._overflow()

    def on_header(self, name: bytes, value: bytes) -> None:
        self.parsing.headers.append((name, value))
        self.head_size += len(name) + len(value) + 4
        if self.head_size > http1.MAX_HEAD:
            self._overflow()

    def on_headers_complete(self) -> None:
        ex = self.parsing
        parser = self.parser
        self.head_since = 0
        ex.method = parser.get_method()
        ex.verb = ex.method.decode("latin-1")  # str forms, for matching and spans
        ex.path = ex.url.decode("latin-1")
        ex.keep_alive = parser.should_keep_alive()
        ex.upgrade = parser.should_upgrade()
        hdict = ex.hdict = lower_headers(ex.headers)
        te = hdict.get("transfer-encoding")
        ex.chunked = te is not None and "chunked" in te.lower()
        ex.wall = time.time()
        ex.started = time.perf_counter()
        if ex.upgrade:
            self.upgrading = ex
            return  # _upgrade takes it from here (HttpParserUpgrade follows)
        if self.transport is None or self.transport.is_closing():
            return
        if self.active is None:
            self.active = ex
            self._begin(ex)
        else:
            self.queue.append(ex)
            if len(self.queue) >= MAX_QUEUED:
                self.pause_reading()

    def on_body(self, data: bytes) -> None:
        ex = self.parsing
        framed = http1.chunk(data) if ex.chunked else data
        ex.body_size += len(data)
        self._body(ex, framed)

    def on_message_complete(self) -> None:
        ex = self.parsing
        self.parsing = None
        ex.complete = True
        if ex.upgrade:
            return
        if ex is self.draining:
            self.draining = None
            if self.active is None and self.transport is not None:
                self._next()
            return
        if ex.chunked:
            self._body(ex, http1.LAST_CHUNK)

    def _body(self, ex: Exchange, framed: bytes) -> None:
        if ex is self.draining:  # its answer is out: the body goes nowhere
            if ex.body_size > DRAIN_LIMIT:
                self.close()
            return
        up = ex.up
        if up is not None and self.active is ex:
            up.write(framed)
            if ex.replayable:
                ex.body.append(framed)
        else:
            ex.body.append(framed)
        if ex.replayable and ex.body_size > http1.REPLAY_LIMIT:
            ex.replayable = False
            if up is not None:
                ex.body.clear()

    # -- bad input -------------------------------------------------------------------------

    def _overflow(self) -> None:
        self.proxy.counters["header_overflows"] += 1
        self._reply_and_close(431, "request header fields too large")
        raise httptools.HttpParserCallbackError("head too large")

    def _bad_request(self, exc: Exception) -> None:
        if self.transport is None or self.transport.is_closing():
            return
        self.proxy.counters["bad_requests"] += 1
        log.debug("bad request from %s: %s", self.peer, exc)
        if self.active is None or not self.active.responding:
            self._reply_and_close(400, "bad request")
        else:
            self.close()

    def _reply_and_close(self, status: int, body: str) -> None:
        transport = self.transport
        if transport is None or transport.is_closing():
            return
        ex = self.active
        if ex is not None and ex.responding:
            transport.close()
            return
        transport.write(http1.local_response(status, body + "\n", close=True))
        transport.close()

    # -- one request -------------------------------------------------------------------------

    def _begin(self, ex: Exchange) -> None:
        proxy = self.proxy
        proxy.counters["requests"] += 1
        table: RouteTable = proxy.ref.table
        if self.side == OUTBOUND:
            self._begin_outbound(ex, table)
        else:
            self._begin_inbound(ex, table)

    def _begin_outbound(self, ex: Exchange, table: RouteTable) -> None:
        proxy = self.proxy
        hdict = ex.hdict
        ex.trace = proxy.tracer.child(hdict)
        sp = table.outbound(*self.dst)
        if sp is None:  # the Service went away under a kept-alive connection: go where asked
            ex.dest = Destination("", "", self.dst[1], (Endpoint(*self.dst),))
            ex.retry = DEFAULT_RETRY
            self._attempt(ex)
            return
        ex.service = (sp.namespace, sp.service)
        route = sp.route(ex.verb, ex.path, hdict)
        if route is None:
            proxy.counters["no_route"] += 1
            ex.flags = "NR"
            self._local(ex, 404, "")
            return
        ex.route = route
        ex.retry = route.retries  # compile gives every route Istio's default unless told
        dest = proxy.balancer.choose(route)
        if dest is None:
            proxy.counters["no_healthy_upstream"] += 1
            ex.flags = "UH"
            self._local(ex, 503, "no healthy upstream")
            return
        ex.dest = dest
        fault = route.fault
        if fault is not None:
            rng = proxy.rng
            if fault.abort_status is not None and rng.random() < fault.abort_fraction:
                ex.flags = "FI"
                self._local(ex, fault.abort_status, "fault filter abort")
                return
            if fault.delay and rng.random() < fault.delay_fraction:
                ex.flags = "DI"
                loop = asyncio.get_running_loop()
                ex.timer = loop.call_later(fault.delay, self._after_delay, ex)
                return
        self._arm_timeout(ex)
        self._attempt(ex)

    def _after_delay(self, ex: Exchange) -> None:
        ex.timer = None
        if self.active is ex:
            self._arm_timeout(ex)
            self._attempt(ex)

    def _arm_timeout(self, ex: Exchange) -> None:
        route = ex.route
        if route is not None and route.timeout:
            loop = asyncio.get_running_loop()
            ex.timer = loop.call_later(route.timeout, self._timed_out, ex, False)

    def _begin_inbound(self, ex: Exchange, table: RouteTable) -> None:
        proxy = self.proxy
        hdict = ex.hdict
        ib = table.inbound.get(self.dst[1])
        ex.trace = proxy.tracer.child(hdict)
        dest = self.inbound_dest
        if dest is None:
            dest = self.inbound_dest = Destination("", "", self.dst[1], (Endpoint(*self.dst),))
        ex.dest = dest
        ex.retry = None  # Envoy retries on the client side only
        if ib is None:
            self._attempt(ex)
            return
        if ib.service:
            ns, _, name = ib.service.partition("/")
            ex.service = (ns, name)
        if ib.routes:
            for route in ib.routes:
                if route.matches_request(ex.verb, ex.path, hdict):
                    ex.route = route
                    break
        if ib.rate_limits:
            verdict = proxy.limiter.check(
                ib.rate_limits,
                ex.route.name if ex.route is not None else None,
                self._source_service(table, ib.rate_limits),
            )
            if verdict is not None:
                if not verdict.allowed:
                    proxy.counters["rate_limited"] += 1
                    ex.flags = "RL"
                    ex.limited = True
                    self._local(ex, 429, "local_rate_limited", verdict.header_lines())
                    return
                ex.inject = verdict.header_lines()
        self._attempt(ex)

    def _source_service(self, table: RouteTable, limits: Any) -> str | None:
        wanted = {limit.source for limit in limits if limit.source}
        if not wanted:
            return None
        w = table.workload(self.peer[0])
        if w is None:
            return None
        for name in w.services:
            key = f"{w.namespace}/{name}"
            if key in wanted:
                return key
        return None

    def _attempt(self, ex: Exchange) -> None:
        proxy = self.proxy
        ep = proxy.balancer.pick(ex.dest, ex.tried)
        if ep is None:
            if ex.tried:
                ex.flags = "UF"
                self._local(ex, 503, _CONNECT_ERROR)
            else:
                proxy.counters["no_healthy_upstream"] += 1
                ex.flags = "UH"
                self._local(ex, 503, "no healthy upstream")
            return
        ex.endpoint = ep
        ex.attempts += 1
        ex.counted = ep
        proxy.balancer.started(ep)
        retry = ex.retry
        if retry is not None and retry.per_try_timeout:
            loop = asyncio.get_running_loop()
            ex.try_timer = loop.call_later(retry.per_try_timeout, self._timed_out, ex, True)
        up = proxy.pool.take(ep.address)
        if up is not None:
            self._send(ex, up)
        else:
            asyncio.get_running_loop().create_task(self._connect(ex, ep))

    async def _connect(self, ex: Exchange, ep: Endpoint) -> None:
        try:
            up = await self.proxy.pool.connect(ep.address)
        except (TimeoutError, OSError) as exc:
            log.debug("connect %s: %s", ep.address, exc)
            if self.active is ex and ex.endpoint is ep and ex.up is None:
                self._failed(ex, "connect-failure")
            return
        if self.active is not ex or ex.endpoint is not ep or self.transport is None:
            self.proxy.pool.put(up)  # the request went away meanwhile: keep the connection
            return
        self._send(ex, up)

    def _send(self, ex: Exchange, up: Upstream) -> None:
        ex.up = up
        up.start(self, ex.method == b"HEAD")
        trace = ex.trace
        up.write(
            http1.request_head(
                ex.method,
                ex.url,
                ex.headers,
                DROP_OUT,
                trace.header_block() if trace is not None else b"",
            )
        )
        if ex.body:
            up.write(b"".join(ex.body))
            if not ex.replayable:
                ex.body.clear()

    def _failed(self, ex: Exchange, why: str) -> None:
        """An attempt failed before any response byte reached the client: retry or answer."""
        proxy = self.proxy
        if ex.try_timer is not None:
            ex.try_timer.cancel()
            ex.try_timer = None
        self._uncount(ex)
        if ex.endpoint is not None:
            ex.tried.append(ex.endpoint.address)
        up, ex.up = ex.up, None
        stale = up is not None and up.reused and why == "reset" and ex.status == 0
        if up is not None:
            up.abandon()
        retry = ex.retry
        # a status or a per-try timeout comes here only when the policy retries it
        retriable = (
            ex.replayable
            and retry is not None
            and ex.attempts <= retry.attempts
            and (why in ("status", "timeout") or why in retry.retry_on)
        )
        if stale and ex.replayable:  # a kept-alive connection the server had closed
            ex.tried.pop()
            ex.attempts -= 1
            self._attempt(ex)
            return
        if retriable:
            proxy.counters["retries"] += 1
            ex.response_bytes = 0
            ex.status = 0
            self._attempt(ex)
            return
        proxy.counters["upstream_failures"] += 1
        if why == "timeout":  # (counted where it happened)
            ex.flags = "UT"
            self._local(ex, 504, "upstream request timeout")
        elif why == "status":  # unreachable: a status is retried only with a retry left
            self._local(ex, ex.status or 503, "upstream error")
        else:
            ex.flags = "UF" if why == "connect-failure" else "UC"
            self._local(ex, 503, _CONNECT_ERROR if why == "connect-failure" else _RESET_ERROR)

    def _timed_out(self, ex: Exchange, per_try: bool) -> None:
        if per_try:
            ex.try_timer = None
        else:
            ex.timer = None
        if self.active is not ex:
            return
        if ex.responding:  # too late for a 504: cut it
            self.proxy.counters["timeouts"] += 1
            if ex.up is not None:
                ex.up.abandon()
            self.close()
            return
        if per_try and ex.retry is not None and ex.attempts <= ex.retry.attempts:
            self.proxy.counters["timeouts"] += 1
            self._failed(ex, "timeout")  # Envoy retries a per-try timeout while tries are left
            return
        self._cancel_timers(ex)
        self.proxy.counters["timeouts"] += 1
        self._uncount(ex)
        up, ex.up = ex.up, None
        if up is not None:
            up.abandon()
        ex.flags = "UT"
        self._local(ex, 504, "upstream request timeout")

    # -- Owner: what the upstream reports --------------------------------------------------------

    def on_upstream_head(self, up: Upstream, status: int) -> None:
        ex = self.active
        ex.status = status
        if status >= 500 and not ex.responding and ex.retry is not None and ex.replayable:
            if ex.attempts <= ex.retry.attempts and _retriable_status(status, ex.retry.retry_on):
                self._failed(ex, "status")

    def on_upstream_data(self, up: Upstream, data: bytes) -> None:
        ex = self.active
        transport = self.transport
        if transport is None:
            return
        ex.response_bytes += len(data)
        if ex.inject:
            buffered = ex.head_buffer + data
            end = buffered.find(b"\r\n\r\n")
            if end < 0:
                ex.head_buffer = buffered
                return
            end += 4
            data = http1.inject_lines(buffered[:end], ex.inject) + buffered[end:]
            ex.inject = b""
            ex.head_buffer = b""
        ex.responding = True
        transport.write(data)

    def on_upstream_done(self, up: Upstream) -> None:
        ex = self.active
        ex.up = None
        if ex.complete:
            self.proxy.pool.put(up)
        else:  # answered before the request's body was all sent: not reusable
            up.close()
        self._finish(ex, keep=up.keep_alive)

    def on_upstream_lost(self, up: Upstream, reason: str) -> None:
        ex = self.active
        if ex is None or ex.up is not up:
            return
        if ex.responding or up.head_seen:  # a close-delimited body, or cut mid-response
            ex.up = None
            if ex.inject and ex.head_buffer and self.transport is not None:
                self.transport.write(ex.head_buffer)
            self._finish(ex, keep=False)
            return
        self._failed(ex, "reset")

    # -- answers ---------------------------------------------------------------------------------

    def _local(self, ex: Exchange, status: int, body: str, extra: bytes = b"") -> None:
        """A response made here (404 NR, 429, 503, 504): the request is over."""
        transport = self.transport
        if transport is None:
            return
        ex.status = status
        close = not ex.keep_alive or self.closing
        data = http1.local_response(status, body + "\n" if body else "", extra, close)
        ex.response_bytes = len(data)
        transport.write(data)
        self._finish(ex, keep=not close, local=True)

    def _finish(self, ex: Exchange, keep: bool, local: bool = False) -> None:
        self._cancel_timers(ex)
        self._uncount(ex)
        self._report(ex)
        self.active = None
        transport = self.transport
        if transport is None:
            return
        if not (keep and ex.keep_alive) or self.closing:
            transport.close()
            return
        if not ex.complete:  # answered early (a 429, a 503): read past its body, then go on
            self.draining = ex
            ex.body.clear()
            return
        self._next()

    def _next(self) -> None:
        if self.queue:
            nxt = self.queue.popleft()
            if self.reading_paused and len(self.queue) < MAX_QUEUED // 2:
                self.resume_reading()
            self.active = nxt
            self._begin(nxt)
        else:
            self.idle_since = self.proxy.tick

    def _uncount(self, ex: Exchange) -> None:
        if ex.counted is not None:
            self.proxy.balancer.finished(ex.counted)
            ex.counted = None

    def _cancel_timers(self, ex: Exchange) -> None:
        if ex.timer is not None:
            ex.timer.cancel()
            ex.timer = None
        if ex.try_timer is not None:
            ex.try_timer.cancel()
            ex.try_timer = None

    # -- upgrades (WebSocket and friends): a tunnel after the head --------------------------------

    def _upgrade(self, rest: bytes) -> None:
        ex = self.upgrading
        self.upgrading = self.parsing = None
        self.parser = None
        if ex is None or self.active is not None or self.queue:
            self._reply_and_close(400, "upgrade while requests are in flight")
            return
        table = self.proxy.ref.table
        target = self.dst
        if self.side == OUTBOUND:
            sp = table.outbound(*self.dst)
            route = sp.route(ex.verb, ex.path, ex.hdict) if sp is not None else None
            dest = self.proxy.balancer.choose(route) if route is not None else None
            ep = self.proxy.balancer.pick(dest) if dest is not None else None
            if sp is not None and ep is None:
                self._reply_and_close(503, "no healthy upstream")
                return
            if ep is not None:
                target = ep.address
        head = http1.request_head(ex.method, ex.url, ex.headers, frozenset(), b"")
        self.proxy.counters["tcp_connections"] += 1
        self.pending = [head, rest] if rest else [head]
        asyncio.get_running_loop().create_task(self._connect_pipe(target))

    # -- telemetry -----------------------------------------------------------------------------------

    def _report(self, ex: Exchange) -> None:
        proxy = self.proxy
        table = proxy.ref.table
        me = table.me
        duration = time.perf_counter() - ex.started
        ep = ex.endpoint
        if self.side == OUTBOUND:
            reporter = "source"
            source, destination = me, (table.workload(ep.ip) if ep is not None else None)
        else:
            reporter = "destination"
            source, destination = table.workload(self.peer[0]), me
        ns, svc = ex.service
        proxy.metrics.record(
            reporter,
            source,
            destination,
            ns,
            svc,
            ex.status,
            duration,
            ex.body_size,
            ex.response_bytes,
            ex.flags,
        )
        trace = ex.trace
        if trace is not None and trace.sampled:
            proxy.spans.record(self._span(ex, trace, me, destination, duration))

    def _span(
        self,
        ex: Exchange,
        trace: TraceContext,
        me: Workload,
        destination: Workload | None,
        duration: float,
    ) -> dict:
        dest = ex.dest
        subset = (dest.subset or "") if dest is not None else ""
        key = (ex.service, subset, dest.port if dest is not None else self.dst[1])
        if self._span_me is not me:  # a new table: who this pod is may have changed
            self._span_me, self._span_bases = me, {}
        base = self._span_bases.get(key)
        if base is None:
            base = self._span_bases[key] = self._span_base(key, me)
        static_tags, local, name, host = base
        ep = ex.endpoint
        outbound = self.side == OUTBOUND
        hdict = ex.hdict
        tags = static_tags.copy()
        tags["http.method"] = ex.verb
        tags["http.url"] = f"http://{hdict.get('host', host)}{ex.path}"
        tags["http.status_code"] = str(ex.status)
        tags["request_size"] = str(ex.body_size)
        tags["response_size"] = str(ex.response_bytes)
        tags["response_flags"] = ex.flags
        tags["guid:x-request-id"] = trace.request_id
        agent = hdict.get("user-agent")
        if agent is not None:
            tags["http.user_agent"] = agent[:200]
        if ex.route is not None:
            tags["netlab.route"] = ex.route.name
        if ep is not None:
            if outbound:
                tags["peer.address"] = f"{ep.ip}:{ep.port}"
                if ep.pod:
                    tags["netlab.upstream_pod"] = ep.pod
            else:
                tags["peer.address"] = self.peer[0]
        if ex.limited:
            tags["netlab.rate_limited"] = "true"
        if ex.attempts > 1:
            tags["netlab.retries"] = str(ex.attempts - 1)
        if ex.status >= 500 or ex.status == 0:
            tags["error"] = "true"
        span = {
            "traceId": trace.trace_id,
            "id": trace.span_id,
            "kind": "CLIENT" if outbound else "SERVER",
            "name": name,
            "timestamp": int(ex.wall * 1_000_000),
            "duration": max(1, int(duration * 1_000_000)),
            "localEndpoint": local,
            "tags": tags,
        }
        if trace.parent_id:
            span["parentId"] = trace.parent_id
        if outbound:
            if ep is not None:
                remote = {"ipv4": ep.ip, "port": ep.port}
                if destination is not None:
                    remote["serviceName"] = f"{destination.app}.{destination.namespace}"
                span["remoteEndpoint"] = remote
        else:
            span["remoteEndpoint"] = {"ipv4": self.peer[0], "port": self.peer[1]}
        return span

    def _span_base(self, key: tuple, me: Workload) -> tuple[dict, dict, str, str]:
        """What every span of this connection to this destination shares (made once;
        the tags are copied per span, the local endpoint is shared by reference)."""
        (ns, svc), subset, port = key
        zone = self.proxy.metrics.zone
        host = f"{svc}.{ns}.svc.{zone}" if svc else self.dst[0]
        tags = {
            "upstream_cluster": f"{self.side}|{self.dst[1]}|{subset}|{host}",
            "istio.namespace": me.namespace,
            "istio.canonical_service": me.app,
            "netlab.pod": f"{me.namespace}/{me.pod}",
            "netlab.node": me.node,
            "netlab.rack": me.rack,
            "node_id": f"sidecar~{me.ip}~{me.pod}.{me.namespace}~{me.namespace}.svc.{zone}",
        }
        if subset:
            tags["netlab.subset"] = subset
        local = {"serviceName": f"{me.app}.{me.namespace}", "ipv4": me.ip}
        return tags, local, f"{host}:{port}/*", host


def _retriable_status(status: int, on: frozenset[str]) -> bool:
    """Envoy's retry_on for a response: 5xx, gateway-error (502-504), or the code itself
    (Istio lists retriable status codes as words of retryOn, e.g. "503")."""
    return "5xx" in on or (status in (502, 503, 504) and "gateway-error" in on) or str(status) in on


_CONNECT_ERROR = (
    "upstream connect error or disconnect/reset before headers. reset reason: connection failure"
)
_RESET_ERROR = "upstream connect error or disconnect/reset before headers. reset reason: connection termination"
