"""An app instrumented with the real OpenTelemetry SDK and its Zipkin exporter
reports to the lab's collector, and its spans join the trace a sidecar started
(the W3C traceparent the app was called with)."""

from __future__ import annotations

import asyncio
import json

import requests
from opentelemetry.exporter.zipkin.json import ZipkinExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.trace import SpanKind, Status, StatusCode
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from mesh import traceview
from mesh.collector import TraceStore
from tests.unit.test_mesh_collector import call, serving

TID = "4bf92f3577b34da6a3ce929d0e0e4736"
SIDECAR_SPAN = "00f067aa0ba902b7"  # the inbound sidecar's SERVER span: the app's parent


def instrumented_app(port: int) -> list[str]:
    """What reviews' code would do: continue the incoming context, make two spans."""
    session = requests.Session()
    session.trust_env = False  # no proxy from the environment: 127.0.0.1 only
    exporter = ZipkinExporter(
        endpoint=f"http://127.0.0.1:{port}/api/v2/spans",
        local_node_ipv4="10.244.1.5",
        local_node_port=9080,
        session=session,
    )
    provider = TracerProvider(resource=Resource.create({"service.name": "reviews-app"}))
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracer = provider.get_tracer("reviews")
    carrier = {"traceparent": f"00-{TID}-{SIDECAR_SPAN}-01"}
    context = TraceContextTextMapPropagator().extract(carrier)
    ids = []
    with tracer.start_as_current_span("GET /reviews/0", context=context, kind=SpanKind.SERVER) as s:
        s.set_attribute("http.status_code", 200)
        ids.append(format(s.get_span_context().span_id, "016x"))
        with tracer.start_as_current_span("call ratings", kind=SpanKind.CLIENT) as c:
            c.set_status(Status(StatusCode.ERROR, "ratings unavailable"))
            ids.append(format(c.get_span_context().span_id, "016x"))
    provider.shutdown()
    return ids


def test_otel_sdk_spans_reach_the_collector_and_join_the_trace():
    async def go():
        async with serving(TraceStore()) as (store, port):
            server_id, client_id = await asyncio.to_thread(instrumented_app, port)
            status, answer = await call(port, "GET", f"/api/v2/trace/{TID}")
            assert status == 200
            return server_id, client_id, json.loads(answer), store

    server_id, client_id, spans, store = asyncio.run(go())
    assert store.invalid == 0
    by_id = {s["id"]: s for s in spans}
    assert set(by_id) == {server_id, client_id}
    server, client = by_id[server_id], by_id[client_id]
    assert {s["traceId"] for s in spans} == {TID}
    assert server["parentId"] == SIDECAR_SPAN and client["parentId"] == server_id
    assert server["kind"] == "SERVER" and client["kind"] == "CLIENT"
    assert server["localEndpoint"] == {
        "serviceName": "reviews-app",
        "ipv4": "10.244.1.5",
        "port": 9080,
    }
    assert server["tags"]["http.status_code"] == "200"
    assert client["timestamp"] >= server["timestamp"] and client["duration"] >= 0
    assert traceview.is_error(client) and not traceview.is_error(server)
    # with the sidecar's span missing, the app's server span is the root of what arrived
    (summary,) = traceview.summarize([spans])
    assert summary["root"] == "reviews-app" and summary["errors"] == 1
    assert [d for d, _ in traceview.tree(spans)] == [0, 1]
