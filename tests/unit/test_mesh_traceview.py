"""mesh.traceview: summaries, the trace list, the waterfall and the exports, on a
hand-built bookinfo trace (client -> productpage -> reviews -> ratings, each
hop a sidecar CLIENT span and the next pod's SERVER span)."""

from __future__ import annotations

import asyncio
import copy
import json
import re

import pytest

from mesh import traceview
from mesh.collector import TraceStore, normalize_span
from mesh.traceview import from_otlp, summarize, to_otlp, to_zipkin, trace_list, tree, waterfall
from tests.unit.test_mesh_collector import call, serving

TID = "4bf92f3577b34da6a3ce929d0e0e4736"
T0 = 1_700_000_000_000_000
ANSI = re.compile(r"\x1b\[[0-9;]*m")

HOPS = [  # id, parent, kind, service, pod, node, start offset µs, duration µs, status
    ("a1", None, "CLIENT", "client", "client-7d9-x", "node-1", 0, 20_000, "200"),
    ("b2", "a1", "SERVER", "productpage", "productpage-v1-abc", "node-2", 1_000, 18_000, "200"),
    ("c3", "b2", "CLIENT", "productpage", "productpage-v1-abc", "node-2", 2_000, 15_000, "200"),
    ("d4", "c3", "SERVER", "reviews", "reviews-v3-def", "node-3", 3_000, 13_000, "200"),
    ("e5", "d4", "CLIENT", "reviews", "reviews-v3-def", "node-3", 5_000, 6_000, "503"),
    ("f6", "e5", "SERVER", "ratings", "ratings-v1-ghi", "node-1", 6_000, 4_000, "503"),
]


def bookinfo_trace() -> list[dict]:
    """Six sidecar spans, as the collector stores them (normalized)."""
    spans = []
    for n, (sid, parent, kind, service, pod, node, offset, duration, status) in enumerate(HOPS):
        span = {
            "traceId": TID,
            "id": sid * 8,
            "kind": kind,
            "name": f"{service}.default.svc.cluster.local:9080/*",
            "timestamp": T0 + offset,
            "duration": duration,
            "localEndpoint": {
                "serviceName": f"{service}.default",
                "ipv4": f"10.244.{n}.5",
                "port": 9080,
            },
            "tags": {
                "netlab.pod": f"default/{pod}",
                "netlab.node": node,
                "netlab.rack": "rack-1",
                "http.method": "GET",
                "http.url": f"http://{service}:9080/",
                "http.status_code": status,
                "upstream_cluster": f"outbound|9080||{service}.default.svc.cluster.local",
            },
        }
        if parent:
            span["parentId"] = parent * 8
        if kind == "CLIENT":
            span["remoteEndpoint"] = {"ipv4": f"10.244.{n + 1}.5", "port": 9080}
        if status.startswith("5"):
            span["tags"]["error"] = "true"
        spans.append(span)
    return spans


def test_the_fixture_is_what_the_collector_would_store():
    assert [normalize_span(s) for s in bookinfo_trace()] == bookinfo_trace()


# -- tree order ---------------------------------------------------------------------


def test_tree_order_and_depth_whatever_the_arrival_order():
    spans = bookinfo_trace()
    for order in (spans, spans[::-1], spans[3:] + spans[:3]):
        assert [(d, s["id"][:2]) for d, s in tree(order)] == [
            (0, "a1"),
            (1, "b2"),
            (2, "c3"),
            (3, "d4"),
            (4, "e5"),
            (5, "f6"),
        ]


def test_siblings_by_start_orphans_at_the_root_and_cycles_broken():
    spans = bookinfo_trace()
    late = dict(spans[2], id="c9" * 8, timestamp=T0 + 10_000)  # a second call from productpage
    early = dict(spans[2], id="c0" * 8, timestamp=T0 + 1_500)
    orphan = dict(spans[5], id="99" * 8, parentId="77" * 8, timestamp=T0 - 500)
    got = [(d, s["id"][:2]) for d, s in tree([*spans, late, early, orphan])]
    assert got[:3] == [(0, "99"), (0, "a1"), (1, "b2")]
    assert [x for x in got if x[0] == 2] == [(2, "c0"), (2, "c3"), (2, "c9")]
    cycle = [
        {"id": "1" * 16, "parentId": "2" * 16, "timestamp": 5},
        {"id": "2" * 16, "parentId": "1" * 16, "timestamp": 3},
        {"id": "3" * 16, "parentId": "3" * 16},
    ]
    got = [(d, s["id"][0]) for d, s in tree(cycle)]
    assert {i for _, i in got} == {"1", "2", "3"} and len(got) == 3
    assert got[0] == (0, "3") and (0, "2") in got and (1, "1") in got


def test_shared_span_ids_put_the_server_under_its_client():
    client = {"traceId": TID, "id": "ab" * 8, "kind": "CLIENT", "timestamp": 1, "duration": 10}
    server = dict(client, kind="SERVER", shared=True, timestamp=2, duration=8)
    child = {"traceId": TID, "id": "cd" * 8, "parentId": "ab" * 8, "kind": "CLIENT", "timestamp": 3}
    got = [(d, s["kind"]) for d, s in tree([child, server, client])]
    assert got == [(0, "CLIENT"), (1, "SERVER"), (2, "CLIENT")]


# -- summaries and the list -------------------------------------------------------------


def test_summarize():
    spans = bookinfo_trace()
    (got,) = summarize([spans[::-1], []])
    assert got == {
        "traceId": TID,
        "root": "client.default",
        "name": "client.default.svc.cluster.local:9080/*",
        "start": T0,
        "duration": 20_000,
        "spans": 6,
        "services": ["client.default", "productpage.default", "ratings.default", "reviews.default"],
        "errors": 2,
    }
    # the root is the earliest span without a parent in the trace, even if it has a parentId
    (partial,) = summarize([spans[3:]])
    assert partial["root"] == "reviews.default" and partial["duration"] == 13_000
    (bare,) = summarize([[{"id": "1" * 16, "tags": {"http.status_code": "500"}}]])
    assert bare["start"] == 0 and bare["duration"] == 0 and bare["errors"] == 1


def test_trace_list_is_a_fixed_width_table():
    spans = bookinfo_trace()
    other = [dict(s, traceId="1" * 32, duration=1_234_567) for s in spans[3:]]
    text = trace_list(summarize([spans, other]))
    header, first, second = text.splitlines()
    assert header.split() == ["TRACE", "ID", "START", "DURATION", "SPANS", "ERRORS", "ROOT"]
    assert first.startswith(TID) and "20.00ms" in first
    assert re.search(r"\b\d\d:\d\d:\d\d\.000\b", first)
    assert "1237.57ms" in second and second.startswith("1" * 32)  # 3 ms .. 6 ms + 1234.57 ms
    assert first.index("ms") == second.index("ms")  # durations right-aligned
    assert first.rstrip().endswith("client.default client.default.svc.cluster.local:9080/*")
    assert "no traces yet" in trace_list([]) and "0.5 s" in trace_list([])


# -- the waterfall ------------------------------------------------------------------------


def test_waterfall_lines_indentation_and_bars():
    text = waterfall(bookinfo_trace()[::-1], width=120)
    header, *lines = text.splitlines()
    assert TID in header and "20.00 ms" in header and "6 spans" in header
    assert "productpage.default" in header
    assert len(lines) == 6
    for depth, line in enumerate(lines):
        assert line.startswith("  " * depth) and line[2 * depth] in "→←"
        assert len(line) <= 120
    assert lines[0].startswith("→ client.default") and "default/client-7d9-x @node-1" in lines[0]
    assert lines[5].startswith("          ← ratings.default") and "503!" in lines[5]
    assert "20.00ms" in lines[0] and "4.00ms" in lines[5]
    bars = [line[line.index("│") + 1 : line.rindex("│")] for line in lines]
    assert len({len(b) for b in bars}) == 1
    width = len(bars[0])
    assert bars[0] == "━" * width  # the whole trace
    ratings = bars[5]
    assert set(ratings.strip()) == {"█"}
    start = ratings.index("█")
    assert abs(start - width * 6_000 / 20_000) <= 1
    assert abs(len(ratings.strip()) - width * 4_000 / 20_000) <= 1
    assert "\x1b[" not in text


def test_waterfall_colors_only_on_request_and_marks_rate_limits():
    spans = bookinfo_trace()
    spans[4]["tags"].update({"http.status_code": "429", "netlab.rate_limited": "true"})
    del spans[4]["tags"]["error"]
    colored = waterfall(spans, width=100, color=True)
    assert "\x1b[" in colored
    plain = waterfall(spans, width=100)
    assert ANSI.sub("", colored) == plain
    assert "429!" in plain.splitlines()[5]


@pytest.mark.parametrize(
    "spans",
    [
        [],
        [{}],
        [None, 3, "x"],
        [{"id": "1", "timestamp": "soon", "duration": None, "tags": "none", "kind": 5}],
        [{"traceId": TID, "id": "1" * 16, "timestamp": T0, "duration": 0}] * 3,
        [{"id": "1" * 16, "parentId": "2" * 16}, {"id": "2" * 16, "parentId": "1" * 16}],
        [{"id": "1" * 16, "timestamp": T0, "duration": -5, "localEndpoint": "x"}],
        [{"id": str(n), "parentId": str(n - 1), "timestamp": n} for n in range(3000)],
    ],
)
def test_waterfall_never_crashes_on_odd_spans(spans):
    for width in (0, 40, 200):
        text = waterfall(spans, width=width, color=True)
        assert isinstance(text, str) and text
    assert summarize([spans]) is not None


def test_zero_duration_trace_draws_one_wide_bars():
    spans = [dict(s, duration=0, timestamp=T0) for s in bookinfo_trace()]
    lines = waterfall(spans, width=80).splitlines()[1:]
    for line in lines:
        bar = line[line.index("│") + 1 : line.rindex("│")]
        assert len(bar.strip()) == 1 and bar[0] != " "


# -- exports --------------------------------------------------------------------------------


def test_to_zipkin_is_the_flat_span_list():
    a, b = bookinfo_trace()[:3], bookinfo_trace()[3:]
    assert to_zipkin([a, b]) == a + b
    assert to_zipkin([]) == []


def test_to_otlp_shape():
    doc = to_otlp([bookinfo_trace()])
    services = [
        rs["resource"]["attributes"][0]["value"]["stringValue"] for rs in doc["resourceSpans"]
    ]
    assert services == [
        "client.default",
        "productpage.default",
        "reviews.default",
        "ratings.default",
    ]
    reviews = doc["resourceSpans"][2]["scopeSpans"][0]["spans"]
    server, client = reviews
    assert server["traceId"] == TID and server["spanId"] == "d4" * 8
    assert server["parentSpanId"] == "c3" * 8 and server["kind"] == 2 and client["kind"] == 3
    assert server["startTimeUnixNano"] == str((T0 + 3_000) * 1000)
    assert server["endTimeUnixNano"] == str((T0 + 16_000) * 1000)
    attributes = {a["key"]: a["value"] for a in server["attributes"]}
    assert attributes["netlab.pod"] == {"stringValue": "default/reviews-v3-def"}
    assert attributes["http.status_code"] == {"stringValue": "200"}
    assert server["status"] == {} and client["status"] == {"code": 2}
    assert "parentSpanId" not in doc["resourceSpans"][0]["scopeSpans"][0]["spans"][0]
    json.dumps(doc)  # plain JSON


def test_otlp_round_trip_through_the_collector():
    trace = bookinfo_trace()
    trace[2]["annotations"] = [{"timestamp": T0 + 2_100, "value": "retry"}]

    async def go():
        async with serving(TraceStore()) as (store, port):
            status, answer = await call(port, "POST", "/v1/traces", json=to_otlp([trace]))
            assert status == 200 and json.loads(answer) == {"partialSuccess": {}}
            status, answer = await call(port, "GET", f"/api/v2/trace/{TID}")
            return json.loads(answer)

    assert asyncio.run(go()) == trace


def test_from_otlp_of_to_otlp_is_the_identity_and_leaves_the_input_alone():
    trace = bookinfo_trace()
    before = copy.deepcopy(trace)
    spans, rejected = from_otlp(to_otlp([trace]))
    assert rejected == 0 and sorted(spans, key=lambda s: s["id"]) == trace
    assert trace == before
    with pytest.raises(ValueError):
        from_otlp([])
    assert traceview.is_error({"tags": {"error": "timeout"}})
    assert not traceview.is_error({"tags": {"error": "false", "http.status_code": "404"}})
