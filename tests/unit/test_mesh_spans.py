"""mesh.spans: the bounded span buffer and the shipper, against a real collector
(and a few misbehaving servers) on 127.0.0.1."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import socket
import time

from aiohttp import web

from mesh import spans as spans_module
from mesh.collector import TraceStore
from mesh.http1 import SO_MARK
from mesh.spans import SpanRecorder, SpanShipper
from tests.unit.test_mesh_collector import serving

TID = "4bf92f3577b34da6a3ce929d0e0e4736"


def span(n: int) -> dict:
    return {
        "traceId": TID,
        "id": f"{n + 1:016x}",
        "kind": "CLIENT",
        "name": f"span {n}",
        "timestamp": 1_700_000_000_000_000 + n,
        "duration": 10,
        "localEndpoint": {"serviceName": "productpage.default"},
        "tags": {"netlab.pod": "default/productpage-v1-abc"},
    }


def filled(count: int, limit: int = 10000) -> SpanRecorder:
    recorder = SpanRecorder(limit)
    for n in range(count):
        recorder.record(span(n))
    return recorder


def free_port() -> int:
    """A port nothing listens on (bound, then released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.asynccontextmanager
async def capture(answer: bytes | None = b"HTTP/1.1 202 Accepted\r\nContent-Length: 0\r\n\r\n"):
    """A raw TCP server keeping each request's bytes; answer None: never answers."""
    requests: list[bytes] = []
    handlers: set[asyncio.Task] = set()

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        handlers.add(asyncio.current_task())
        head = await reader.readuntil(b"\r\n\r\n")
        length = next(
            int(line.split(b":", 1)[1])
            for line in head.split(b"\r\n")
            if line.lower().startswith(b"content-length:")
        )
        requests.append(head + await reader.readexactly(length))
        if answer is None:
            await asyncio.sleep(30)
        writer.write(answer)
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    try:
        yield server.sockets[0].getsockname()[1], requests
    finally:
        server.close()
        for task in handlers:
            task.cancel()


# -- the recorder --------------------------------------------------------------------


def test_recorder_is_bounded_and_counts_what_it_drops():
    recorder = filled(7, limit=5)
    assert len(recorder) == 5
    assert recorder.stats == {"recorded": 7, "dropped": 2, "shipped": 0, "failed": 0, "pending": 5}
    assert [s["name"] for s in recorder.take(2)] == ["span 2", "span 3"]  # the oldest kept
    assert len(recorder.take(100)) == 3 and recorder.take(1) == [] and recorder.take(-1) == []
    recorder.shipped(4)
    recorder.failed(1)
    assert recorder.stats == {"recorded": 7, "dropped": 2, "shipped": 4, "failed": 1, "pending": 0}


# -- shipping ------------------------------------------------------------------------


def test_flush_posts_zipkin_json_that_reaches_a_real_collector():
    async def go():
        async with serving() as (store, port):
            recorder = filled(3)
            await SpanShipper(recorder, lambda: [("127.0.0.1", port)], mark=None).flush()
            assert recorder.stats["shipped"] == 3 and recorder.stats["pending"] == 0
            assert [s["name"] for s in store.trace(TID)] == ["span 0", "span 1", "span 2"]

    asyncio.run(go())


def test_the_request_is_one_http11_post_with_connection_close():
    async def go():
        async with capture() as (port, requests):
            await SpanShipper(filled(2), lambda: [("127.0.0.1", port)], mark=None).flush()
        (request,) = requests
        head, _, body = request.partition(b"\r\n\r\n")
        lines = head.decode().split("\r\n")
        assert lines[0] == "POST /api/v2/spans HTTP/1.1"
        headers = {k.lower(): v.strip() for k, v in (line.split(":", 1) for line in lines[1:])}
        assert headers["content-type"] == "application/json"
        assert headers["connection"] == "close"
        assert headers["host"] == f"127.0.0.1:{port}"
        assert json.loads(body) == [span(0), span(1)]

    asyncio.run(go())


def test_batches_and_rotation_between_collectors():
    async def go():
        async with capture() as (a, to_a), capture() as (b, to_b):
            recorder = filled(7)
            shipper = SpanShipper(
                recorder, lambda: [("127.0.0.1", a), ("127.0.0.1", b)], None, batch=2
            )
            await shipper.flush()
        sizes = lambda requests: [len(json.loads(r.partition(b"\r\n\r\n")[2])) for r in requests]  # noqa: E731
        assert sizes(to_a) == [2, 2] and sizes(to_b) == [2, 1]
        assert recorder.stats["shipped"] == 7

    asyncio.run(go())


def test_no_collector_yet_keeps_spans_up_to_the_limit():
    async def go():
        recorder = filled(5, limit=4)
        await SpanShipper(recorder, lambda: (), None).flush()
        assert recorder.stats == {
            "recorded": 5,
            "dropped": 1,
            "shipped": 0,
            "failed": 0,
            "pending": 4,
        }

    asyncio.run(go())


def test_a_collector_that_is_down_counts_failed_and_raises_nothing(caplog):
    async def go():
        recorder = filled(5)
        shipper = SpanShipper(recorder, lambda: [("127.0.0.1", free_port())], None, batch=2)
        with caplog.at_level(logging.DEBUG, logger="mesh.spans"):
            await shipper.flush()
            await shipper.flush()
        # a round stops at the first failure against every collector: no spinning
        assert recorder.stats["failed"] == 4 and recorder.stats["pending"] == 1
        warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
        assert len(warnings) == 1 and "refused" in warnings[0].getMessage().lower()

    asyncio.run(go())


def test_non_2xx_and_garbage_answers_count_failed():
    async def go():
        async def unavailable(_request: web.Request) -> web.Response:
            return web.Response(status=503)

        app = web.Application()
        app.router.add_post("/api/v2/spans", unavailable)
        runner = web.AppRunner(app)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", 0).start()
        try:
            recorder = filled(3)
            await SpanShipper(recorder, lambda: [runner.addresses[0][:2]], None).flush()
            assert recorder.stats["failed"] == 3
        finally:
            await runner.cleanup()
        async with capture(answer=b"SSH-2.0-OpenSSH\r\n") as (port, _):
            recorder = filled(2)
            await SpanShipper(recorder, lambda: [("127.0.0.1", port)], None).flush()
            assert recorder.stats["failed"] == 2

    asyncio.run(go())


def test_a_collector_that_never_answers_times_out():
    async def go():
        async with capture(answer=None) as (port, requests):
            recorder = filled(2)
            started = time.monotonic()
            await SpanShipper(recorder, lambda: [("127.0.0.1", port)], None, timeout=0.2).flush()
            assert time.monotonic() - started < 1.0
            assert requests and recorder.stats["failed"] == 2

    asyncio.run(go())


def test_run_ships_every_interval_and_ends_only_by_cancellation():
    async def go():
        async with serving(TraceStore()) as (store, port):
            recorder = SpanRecorder()
            calls = []

            def collectors():
                calls.append(1)
                if len(calls) == 1:
                    raise RuntimeError("no table yet")
                return [("127.0.0.1", port)]

            task = asyncio.ensure_future(
                SpanShipper(recorder, collectors, None, interval=0.02).run()
            )
            recorder.record(span(0))
            for n in range(1, 4):
                await asyncio.sleep(0.05)
                recorder.record(span(n))
            for _ in range(100):
                if store.span_count == 4:
                    break
                await asyncio.sleep(0.02)
            assert store.span_count == 4 and not task.done()
            task.cancel()
            try:
                await task
            except asyncio.CancelledError:
                pass
            else:
                raise AssertionError("run() ended without CancelledError")

    asyncio.run(go())


def test_the_mark_is_set_before_connect(monkeypatch):
    """As root the marked POST goes through; without CAP_NET_ADMIN setsockopt fails
    and the batch counts as failed; either way the mark comes before connect."""
    made: list[list[tuple]] = []
    original = socket.socket

    class Recording(original):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            self.calls: list[tuple] = []
            made.append(self.calls)

        def setsockopt(self, *args):
            self.calls.append(("setsockopt", *args))
            return super().setsockopt(*args)

        def connect(self, address):
            self.calls.append(("connect", address))
            return super().connect(address)

    async def go(mark):
        made.clear()
        async with serving() as (store, port):
            recorder = filled(1)
            shipper = SpanShipper(recorder, lambda: [("127.0.0.1", port)], mark)
            with monkeypatch.context() as patched:
                patched.setattr(spans_module.socket, "socket", Recording)
                await shipper.flush()
            return recorder, store

    mark_call = ("setsockopt", socket.SOL_SOCKET, SO_MARK, 0x4E4C)
    recorder, store = asyncio.run(go(0x4E4C))
    (calls,) = [c for c in made if mark_call in c]  # the shipper's socket
    if os.geteuid() == 0:
        connects = [i for i, c in enumerate(calls) if c[0] == "connect"]
        assert connects and calls.index(mark_call) < connects[0]
        assert store.span_count == 1
    else:
        assert recorder.stats["failed"] == 1 and not any(c[0] == "connect" for c in calls)
    recorder, store = asyncio.run(go(None))
    assert not any(c[2] == SO_MARK for calls in made for c in calls if c[0] == "setsockopt")
    assert any(c[0] == "connect" for calls in made for c in calls) and store.span_count == 1


def test_a_mark_the_kernel_refuses_fails_the_batch_not_the_shipper(monkeypatch):
    """What a sidecar without CAP_NET_ADMIN sees (EPERM), whoever runs the test."""
    original = socket.socket

    class NoNetAdmin(original):
        def setsockopt(self, level, option, value):
            if option == SO_MARK:
                raise PermissionError(1, "Operation not permitted")
            return super().setsockopt(level, option, value)

    async def go():
        async with serving() as (store, port):
            recorder = filled(3)
            shipper = SpanShipper(recorder, lambda: [("127.0.0.1", port)], 0x4E4C)
            with monkeypatch.context() as patched:
                patched.setattr(spans_module.socket, "socket", NoNetAdmin)
                await shipper.flush()
            return recorder, store

    recorder, store = asyncio.run(go())
    assert recorder.stats["failed"] == 3 and store.span_count == 0
