"""mesh.collector: Zipkin v2 and OTLP/HTTP JSON in, Zipkin's query API out, on a
real aiohttp server on 127.0.0.1; malformed input never takes it down."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web

from mesh.collector import TraceStore, main, make_app, normalize_span, parse_args, trace_id

TID = "4bf92f3577b34da6a3ce929d0e0e4736"
T0 = 1_700_000_000_000_000  # µs


@contextlib.asynccontextmanager
async def serving(store: TraceStore | None = None):
    """A collector on 127.0.0.1 (an ephemeral port): yields (store, port)."""
    store = store if store is not None else TraceStore()
    runner = web.AppRunner(make_app(store), access_log=None)
    await runner.setup()
    try:
        await web.TCPSite(runner, "127.0.0.1", 0).start()
        yield store, runner.addresses[0][1]
    finally:
        await runner.cleanup()


def span(sid: int, parent: int | None = None, tid: str = TID, **extra) -> dict:
    out = {
        "traceId": tid,
        "id": f"{sid:016x}",
        "kind": "SERVER",
        "name": "get /",
        "timestamp": T0 + sid * 1000,
        "duration": 500,
        "localEndpoint": {"serviceName": "reviews.default", "ipv4": "10.244.1.5", "port": 9080},
        "tags": {"http.status_code": "200"},
    }
    if parent is not None:
        out["parentId"] = f"{parent:016x}"
    out.update(extra)
    return out


def run(coro):
    return asyncio.run(coro)


async def call(port: int, method: str, path: str, **kwargs) -> tuple[int, bytes]:
    async with (
        aiohttp.ClientSession() as session,
        session.request(method, f"http://127.0.0.1:{port}{path}", **kwargs) as answer,
    ):
        return answer.status, await answer.read()


async def raw(port: int, data: bytes) -> bytes:
    """Bytes in, whatever comes back until the server closes (or 2 s)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(data)
    await writer.drain()
    try:
        return await asyncio.wait_for(reader.read(1 << 16), 2.0)
    finally:
        writer.close()


# -- validation -------------------------------------------------------------------


def test_trace_ids_are_lower_cased_and_64_bit_ones_padded():
    assert trace_id(TID.upper()) == TID
    assert trace_id("a3ce929d0e0e4736") == "0000000000000000a3ce929d0e0e4736"
    for bad in ("", "xyz", "0" * 32, TID[:-1], TID + "0", 123, None, "g" * 16):
        assert trace_id(bad) is None


@pytest.mark.parametrize(
    "change",
    [
        {"traceId": "nothex"},
        {"traceId": None},
        {"id": "123"},
        {"id": 5},
        {"parentId": "zz"},
        {"kind": "SIDEWAYS"},
        {"kind": 3},
        {"timestamp": "1700000000"},
        {"timestamp": 1.5},
        {"timestamp": True},
        {"timestamp": -1},
        {"duration": 10**30},
    ],
)
def test_invalid_spans_are_refused(change):
    assert normalize_span(span(1, **change)) is None


def test_normalize_keeps_known_fields_and_stringifies_tags():
    got = normalize_span(
        span(
            1,
            parent=9,
            kind="client",
            tags={"a": 1, "b": True, "c": "x", "d": {"nested": 1}, "e": None},
            remoteEndpoint={"ipv4": "10.0.0.1", "port": 99999, "junk": 1},
            shared=True,
            extra="dropped",
            annotations=[{"timestamp": T0, "value": "ws"}, {"value": "no time"}, 7],
        )
    )
    assert got["kind"] == "CLIENT" and got["parentId"] == f"{9:016x}"
    assert got["tags"] == {"a": "1", "b": "true", "c": "x"}
    assert got["remoteEndpoint"] == {"ipv4": "10.0.0.1"}
    assert got["shared"] is True and "extra" not in got
    assert got["annotations"] == [{"timestamp": T0, "value": "ws"}]
    assert normalize_span({"traceId": TID, "id": "a" * 16}) == {
        "traceId": TID,
        "id": "a" * 16,
        "name": "",
        "tags": {},
    }


# -- the store ----------------------------------------------------------------------


def test_duplicates_are_merged_but_shared_client_and_server_are_both_kept():
    store = TraceStore()
    client = span(1, kind="CLIENT", localEndpoint={"serviceName": "productpage.default"})
    server = span(1, shared=True)
    assert store.add([client, server, dict(server), span(2, parent=1)]) == (4, 0)
    spans = store.trace(TID)
    assert [(s["id"][-1], s["kind"]) for s in spans] == [
        ("1", "CLIENT"),
        ("1", "SERVER"),
        ("2", "SERVER"),
    ]
    assert store.duplicates == 1
    assert store.services() == ["productpage.default", "reviews.default"]


def test_bounded_the_least_recently_updated_trace_goes_first():
    store = TraceStore(max_traces=3)
    ids = [f"{n:032x}" for n in range(1, 6)]
    for tid in ids[:3]:
        store.add([span(1, tid=tid)])
    store.add([span(2, tid=ids[0])])  # the first trace is fresh again
    store.add([span(1, tid=ids[3]), span(1, tid=ids[4])])
    assert len(store) == 3 and store.evicted == 2
    assert store.trace(ids[1]) is None and store.trace(ids[2]) is None
    assert len(store.trace(ids[0])) == 2
    spans_store = TraceStore(max_traces=100, max_spans=5)
    for n in range(1, 5):
        spans_store.add([span(1, tid=f"{n:032x}"), span(2, tid=f"{n:032x}")])
    assert spans_store.span_count <= 5 and len(spans_store) == 2


def test_evicted_traces_leave_the_service_and_span_name_lists():
    store = TraceStore(max_traces=1)
    store.add([span(1, tid="a" * 32, localEndpoint={"serviceName": "old"}, name="gone")])
    store.add([span(1, tid="b" * 32)])
    assert store.services() == ["reviews.default"]
    assert store.span_names("old") == []


def test_query_order_limit_service_and_time_window():
    store = TraceStore()
    for n in range(1, 6):  # trace n's spans start at T0 + n s
        store.add([span(1, tid=f"{n:032x}", timestamp=T0 + n * 1_000_000)])
    store.add([span(2, tid=f"{3:032x}", timestamp=T0, localEndpoint={"serviceName": "ratings"})])
    firsts = [t[0]["traceId"][-1] for t in store.traces(limit=10)]
    assert firsts == ["5", "4", "3", "2", "1"]
    assert len(store.traces(limit=2)) == 2
    only = store.traces(service="ratings")
    assert len(only) == 1 and only[0][0]["localEndpoint"]["serviceName"] == "ratings"
    assert [s["timestamp"] for s in only[0]] == sorted(s["timestamp"] for s in only[0])
    end_ms = (T0 + 4_000_000) // 1000
    window = store.traces(end_ts=end_ms, lookback=1500)
    assert {t[0]["traceId"][-1] for t in window} == {"3", "4"}


# -- the HTTP API ---------------------------------------------------------------------


def test_zipkin_post_and_the_query_endpoints():
    async def go():
        async with serving() as (store, port):
            body = [span(1), span(2, parent=1, name="get /ratings"), {"traceId": "bad"}]
            status, answer = await call(port, "POST", "/api/v2/spans", json=body)
            assert (status, answer) == (202, b"")
            assert store.invalid == 1
            status, answer = await call(port, "GET", f"/api/v2/trace/{TID.upper()}")
            assert status == 200 and [s["id"][-1] for s in json.loads(answer)] == ["1", "2"]
            status, answer = await call(
                port, "GET", "/api/v2/traces?limit=5&serviceName=reviews.default"
            )
            assert status == 200 and len(json.loads(answer)) == 1
            status, answer = await call(port, "GET", "/api/v2/traces?serviceName=nobody")
            assert json.loads(answer) == []
            assert json.loads((await call(port, "GET", "/api/v2/services"))[1]) == [
                "reviews.default"
            ]
            names = await call(port, "GET", "/api/v2/spans?serviceName=reviews.default")
            assert json.loads(names[1]) == ["get /", "get /ratings"]
            assert (await call(port, "GET", "/api/v2/spans"))[0] == 400
            health = json.loads((await call(port, "GET", "/health"))[1])
            assert health["status"] == "UP" and health["spans"] == 2
            assert (await call(port, "GET", f"/api/v2/trace/{'1' * 32}"))[0] == 404
            assert (await call(port, "GET", "/api/v2/trace/not-hex"))[0] == 400
            assert (await call(port, "GET", "/api/v2/traces?limit=-1"))[0] == 400
            assert (await call(port, "GET", "/api/v2/traces?endTs=soon"))[0] == 400

    run(go())


def test_zipkin_post_without_a_content_type_is_read_as_json():
    async def go():
        async with serving() as (store, port):
            body = json.dumps([span(1)]).encode()
            answer = await raw(
                port,
                b"POST /api/v2/spans HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
                + f"Content-Length: {len(body)}\r\n\r\n".encode()
                + body,
            )
            assert answer.startswith(b"HTTP/1.1 202")
            assert store.span_count == 1

    run(go())


@pytest.mark.parametrize(
    "body, message",
    [
        (b"\x00\xff\xfe garbage", b"not UTF-8"),
        (b'[{"traceId": ', b"not valid JSON"),
        (b'{"traceId": "x"}', b"JSON list"),
        (b'"spans"', b"JSON list"),
        (b"[" * 100_000, b"not valid JSON"),
        (b"[" + b"9" * 10_000 + b"]", b"not valid JSON"),  # past Python's int digit limit
    ],
)
def test_malformed_zipkin_bodies_are_400_and_the_server_lives_on(body, message):
    async def go():
        async with serving() as (store, port):
            status, answer = await call(
                port,
                "POST",
                "/api/v2/spans",
                data=body,
                headers={"Content-Type": "application/json"},
            )
            assert status == 400 and message in answer
            assert (await call(port, "GET", "/health"))[0] == 200

    run(go())


def test_wrong_types_huge_numbers_and_oversize_bodies():
    async def go():
        async with serving() as (store, port):
            weird = [
                1,
                None,
                "span",
                [],
                {"traceId": TID, "id": "a" * 16, "timestamp": 10**40},
                {"traceId": TID, "id": "b" * 16, "tags": ["x"], "localEndpoint": "svc", "name": 5},
                {"traceId": [TID], "id": {"x": 1}},
                {"traceId": TID, "id": "c" * 16, "annotations": "no", "kind": None},
            ]
            status, _ = await call(port, "POST", "/api/v2/spans", json=weird)
            assert status == 202
            assert store.span_count == 2 and store.invalid == 6
            big = b"[" + b'"x",' * (3 << 20) + b'"x"]'  # ~12 MB
            status, _ = await call(port, "POST", "/api/v2/spans", data=big)
            assert status == 413
            proto = {"Content-Type": "application/x-protobuf"}
            status, answer = await call(
                port, "POST", "/api/v2/spans", data=b"\x0a\x00", headers=proto
            )
            assert status == 415 and b"JSON" in answer
            garbage = await raw(port, b"\x16\x03\x01\x02\x00 not http at all\r\n\r\n")
            assert garbage == b"" or garbage.startswith(b"HTTP/1.")
            assert (await call(port, "GET", "/health"))[0] == 200

    run(go())


def otlp_doc(**span_changes) -> dict:
    otlp_span = {
        "traceId": TID,
        "spanId": "00f067aa0ba902b7",
        "parentSpanId": "b7ad6b7169203331",
        "name": "GET /reviews/0",
        "kind": "SPAN_KIND_SERVER",
        "startTimeUnixNano": str(T0 * 1000),
        "endTimeUnixNano": str(T0 * 1000 + 2_500_000),
        "attributes": [
            {"key": "http.status_code", "value": {"intValue": "503"}},
            {"key": "retry", "value": {"boolValue": True}},
            {"key": "ratio", "value": {"doubleValue": 0.5}},
            {"key": "net.peer.ip", "value": {"stringValue": "10.244.2.7"}},
            {"key": "net.host.port", "value": {"intValue": 9080}},
            {"key": "list", "value": {"arrayValue": {"values": [{"stringValue": "a"}]}}},
        ],
        "status": {"code": 2, "message": "upstream failed"},
    }
    otlp_span.update(span_changes)
    return {
        "resourceSpans": [
            {
                "resource": {
                    "attributes": [
                        {"key": "service.name", "value": {"stringValue": "reviews"}},
                        {"key": "k8s.pod.name", "value": {"stringValue": "reviews-v1-abc"}},
                    ]
                },
                "scopeSpans": [{"scope": {"name": "app"}, "spans": [otlp_span]}],
            }
        ]
    }


def test_otlp_json_becomes_zipkin_spans():
    async def go():
        async with serving() as (store, port):
            status, answer = await call(port, "POST", "/v1/traces", json=otlp_doc())
            assert status == 200 and json.loads(answer) == {"partialSuccess": {}}
            (got,) = store.trace(TID)
            assert got == {
                "traceId": TID,
                "id": "00f067aa0ba902b7",
                "parentId": "b7ad6b7169203331",
                "kind": "SERVER",
                "name": "GET /reviews/0",
                "timestamp": T0,
                "duration": 2500,
                "localEndpoint": {"serviceName": "reviews", "port": 9080},
                "remoteEndpoint": {"ipv4": "10.244.2.7"},
                "tags": {
                    "k8s.pod.name": "reviews-v1-abc",
                    "http.status_code": "503",
                    "retry": "true",
                    "ratio": "0.5",
                    "list": '["a"]',
                    "error": "true",
                    "otel.status_description": "upstream failed",
                },
            }

    run(go())


@pytest.mark.parametrize(
    "kind, expected",
    [
        (1, None),
        (2, "SERVER"),
        (3, "CLIENT"),
        (4, "PRODUCER"),
        (5, "CONSUMER"),
        ("SPAN_KIND_CLIENT", "CLIENT"),
        ("bogus", None),
    ],
)
def test_otlp_kinds(kind, expected):
    store = TraceStore()
    from mesh.traceview import from_otlp

    spans, rejected = from_otlp(otlp_doc(kind=kind, startTimeUnixNano=T0 * 1000))
    store.add(spans)
    assert rejected == 0 and store.trace(TID)[0].get("kind") == expected


def test_otlp_base64_ids_ints_and_rejections():
    async def go():
        async with serving() as (store, port):
            import base64

            doc = otlp_doc(
                traceId=base64.b64encode(bytes.fromhex(TID)).decode(),
                spanId=base64.b64encode(bytes.fromhex("00f067aa0ba902b7")).decode(),
                parentSpanId="",
            )
            doc["resourceSpans"][0]["scopeSpans"][0]["spans"] += [
                {"traceId": "nope", "spanId": "00f067aa0ba902b8"},
                {"traceId": TID, "spanId": "00f067aa0ba902b9", "startTimeUnixNano": "soon"},
                "not a span",
            ]
            status, answer = await call(port, "POST", "/v1/traces", json=doc)
            assert status == 200
            assert json.loads(answer)["partialSuccess"]["rejectedSpans"] == 3
            (got,) = store.trace(TID)
            assert got["id"] == "00f067aa0ba902b7" and "parentId" not in got
            proto = {"Content-Type": "application/x-protobuf"}
            status, answer = await call(port, "POST", "/v1/traces", data=b"\x0a\x00", headers=proto)
            assert status == 415 and b"OTEL_EXPORTER_OTLP_PROTOCOL=http/json" in answer
            for bad in (b"[]", b'{"resourceSpans": 5}', b"\xff", b"{"):
                status, _ = await call(
                    port,
                    "POST",
                    "/v1/traces",
                    data=bad,
                    headers={"Content-Type": "application/json"},
                )
                assert status == 400
            status, answer = await call(
                port, "POST", "/v1/traces", json={"resourceSpans": [5, {"scopeSpans": 1}]}
            )
            assert status == 200 and json.loads(answer)["partialSuccess"]["rejectedSpans"] == 2

    run(go())


# -- the command ----------------------------------------------------------------------


def test_arguments():
    args = parse_args(["--listen", "127.0.0.1:9999", "--max-traces", "7"])
    assert args.listen == ("127.0.0.1", 9999) and args.max_traces == 7
    assert parse_args([]).listen == ("0.0.0.0", 9411)
    assert parse_args(["--listen", ":1234"]).listen == ("0.0.0.0", 1234)
    with pytest.raises(SystemExit):
        parse_args(["--listen", "nowhere"])
    with pytest.raises(SystemExit):
        parse_args(["--max-traces", "0"])


def test_main_reports_a_port_it_cannot_bind():
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        assert main(["--listen", f"127.0.0.1:{taken.getsockname()[1]}"]) == 2


def test_python_m_mesh_collector_serves_and_exits_0_on_sigterm():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    root = Path(__file__).resolve().parents[2]
    proc = subprocess.Popen(
        [sys.executable, "-m", "mesh.collector", "--listen", f"127.0.0.1:{port}"],
        cwd=root,
        env={**os.environ, "PYTHONPATH": str(root)},
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=1) as c:
                    c.sendall(b"GET /health HTTP/1.0\r\n\r\n")
                    assert b'"status": "UP"' in c.recv(4096)
                    break
            except ConnectionRefusedError:
                assert proc.poll() is None and time.monotonic() < deadline, proc.stderr.read()
                time.sleep(0.05)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=10) == 0
        assert "listening on 127.0.0.1:" in proc.stderr.read()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
