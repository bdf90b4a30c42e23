"""mesh.metrics: Istio's standard metrics as Prometheus text, and the parser `netlab top` uses."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mesh.metrics import BYTES_BUCKETS, DURATION_BUCKETS_MS, Metrics, escape, parse_text
from mesh.table import Workload

PRODUCTPAGE = Workload(
    "default",
    "productpage-v1-abc",
    "10.244.1.2",
    app="productpage",
    version="v1",
    labels={"app": "productpage", "version": "v1"},
)
REVIEWS_V2 = Workload(
    "default",
    "reviews-v2-xyz",
    "10.244.2.3",
    app="reviews",
    version="v2",
    labels={"app": "reviews", "version": "v2"},
)
REVIEWS_V2_OTHER_POD = Workload(
    "default",
    "reviews-v2-qrs",
    "10.244.2.4",
    app="reviews",
    version="v2",
    labels={"app": "reviews"},
)
NO_LABELS = Workload("lab", "job-x", "10.244.3.3", app="job")

LABEL_NAMES = [
    "reporter",
    "source_workload",
    "source_workload_namespace",
    "source_principal",
    "source_app",
    "source_version",
    "source_canonical_service",
    "destination_workload",
    "destination_workload_namespace",
    "destination_principal",
    "destination_app",
    "destination_version",
    "destination_service",
    "destination_service_name",
    "destination_service_namespace",
    "destination_canonical_service",
    "request_protocol",
    "response_code",
    "response_flags",
    "connection_security_policy",
    "grpc_response_status",
]


def samples(m: Metrics, name: str) -> list[tuple[dict[str, str], float]]:
    return [(labels, value) for n, labels, value in parse_text(m.render()) if n == name]


def test_request_labels_are_istios():
    m = Metrics(zone="cluster.local")
    m.record("source", PRODUCTPAGE, REVIEWS_V2, "default", "reviews", 200, 0.012, 300, 4000)
    [(labels, value)] = samples(m, "istio_requests_total")
    assert list(labels) == LABEL_NAMES
    assert labels == {
        "reporter": "source",
        "source_workload": "productpage",
        "source_workload_namespace": "default",
        "source_principal": "unknown",
        "source_app": "productpage",
        "source_version": "v1",
        "source_canonical_service": "productpage",
        "destination_workload": "reviews",
        "destination_workload_namespace": "default",
        "destination_principal": "unknown",
        "destination_app": "reviews",
        "destination_version": "v2",
        "destination_service": "reviews.default.svc.cluster.local",
        "destination_service_name": "reviews",
        "destination_service_namespace": "default",
        "destination_canonical_service": "reviews",
        "request_protocol": "http",
        "response_code": "200",
        "response_flags": "-",
        "connection_security_policy": "none",
        "grpc_response_status": "",
    }
    assert value == 1


@pytest.mark.parametrize(
    "workload, expected",
    [
        (None, ("unknown", "unknown", "unknown", "unknown", "unknown")),
        (NO_LABELS, ("job", "lab", "job", "unknown", "job")),
        (
            Workload(
                "ns", "p", "1.1.1.1", app="web", labels={"service.istio.io/canonical-name": "front"}
            ),
            ("web", "ns", "web", "unknown", "front"),
        ),
        (
            Workload("ns", "p", "1.1.1.1", app="web", labels={"app.kubernetes.io/name": "shop"}),
            ("web", "ns", "web", "unknown", "shop"),
        ),
    ],
)
def test_a_side_of_a_request(workload, expected):
    m = Metrics(zone="lab.local")
    m.record("destination", workload, PRODUCTPAGE, "default", "productpage", 503, 0.1, 1, 1, "UF")
    [(labels, _)] = samples(m, "istio_requests_total")
    got = tuple(
        labels[f"source_{k}"]
        for k in ("workload", "workload_namespace", "app", "version", "canonical_service")
    )
    assert got == expected
    assert labels["destination_service"] == "productpage.default.svc.lab.local"
    assert labels["response_flags"] == "UF" and labels["response_code"] == "503"


def test_series_per_label_set_and_pods_of_one_workload_share_one():
    m = Metrics()
    for _ in range(3):
        m.record("source", PRODUCTPAGE, REVIEWS_V2, "default", "reviews", 200, 0.01, 1, 1)
    m.record("source", PRODUCTPAGE, REVIEWS_V2_OTHER_POD, "default", "reviews", 200, 0.01, 1, 1)
    m.record("source", PRODUCTPAGE, REVIEWS_V2, "default", "reviews", 500, 0.01, 1, 1)
    m.record("destination", PRODUCTPAGE, REVIEWS_V2, "default", "reviews", 200, 0.01, 1, 1)
    m.record("source", None, None, "", "", 200, 0.01, 1, 1)
    m.record("source", Workload("", "", ""), None, "", "", 200, 0.01, 1, 1)  # same labels as None
    got = {
        (labels["reporter"], labels["response_code"], labels["source_workload"]): value
        for labels, value in samples(m, "istio_requests_total")
    }
    assert got == {
        ("source", "200", "productpage"): 4,
        ("source", "500", "productpage"): 1,
        ("destination", "200", "productpage"): 1,
        ("source", "200", "unknown"): 2,
    }
    texts = [line.split(" ")[0] for line in m.render().splitlines() if not line.startswith("#")]
    assert len(texts) == len(set(texts))  # no label set twice


def test_duration_histogram_is_cumulative_in_milliseconds():
    m = Metrics()
    for seconds in (0.0004, 0.0005, 0.003, 0.003, 0.2, 5000.0):
        m.record("source", PRODUCTPAGE, REVIEWS_V2, "default", "reviews", 200, seconds, 1, 1)
    buckets = {
        labels["le"]: value
        for labels, value in samples(m, "istio_request_duration_milliseconds_bucket")
    }
    assert list(buckets) == [
        "0.5",
        "1",
        "5",
        "10",
        "25",
        "50",
        "100",
        "250",
        "500",
        "1000",
        "2500",
        "5000",
        "10000",
        "30000",
        "60000",
        "300000",
        "600000",
        "1800000",
        "3600000",
        "+Inf",
    ]
    assert buckets["0.5"] == 2  # le is inclusive: 0.5 ms counts in le="0.5"
    assert buckets["1"] == 2 and buckets["5"] == 4 and buckets["250"] == 5
    assert buckets["3600000"] == 5 and buckets["+Inf"] == 6
    [(_, total)] = samples(m, "istio_request_duration_milliseconds_sum")
    assert total == pytest.approx(0.4 + 0.5 + 3 + 3 + 200 + 5_000_000)
    [(_, count)] = samples(m, "istio_request_duration_milliseconds_count")
    assert count == 6


def test_bytes_histograms():
    m = Metrics()
    m.record("source", PRODUCTPAGE, REVIEWS_V2, "default", "reviews", 200, 0.01, 0, 10)
    m.record("source", PRODUCTPAGE, REVIEWS_V2, "default", "reviews", 200, 0.01, 150, 10**9)
    req = {lab["le"]: v for lab, v in samples(m, "istio_request_bytes_bucket")}
    resp = {lab["le"]: v for lab, v in samples(m, "istio_response_bytes_bucket")}
    assert len(req) == len(BYTES_BUCKETS) + 1
    assert (req["1"], req["100"], req["1000"], req["+Inf"]) == (1, 1, 2, 2)
    assert (resp["10"], resp["100000000"], resp["+Inf"]) == (1, 1, 2)
    [(_, total)] = samples(m, "istio_response_bytes_sum")
    assert total == 10**9 + 10


def test_help_and_type_lines_for_every_family():
    text = Metrics().render()
    for name, kind in [
        ("istio_requests_total", "counter"),
        ("istio_request_duration_milliseconds", "histogram"),
        ("istio_request_bytes", "histogram"),
        ("istio_response_bytes", "histogram"),
        ("istio_tcp_sent_bytes_total", "counter"),
        ("istio_tcp_received_bytes_total", "counter"),
        ("istio_tcp_connections_opened_total", "counter"),
        ("istio_tcp_connections_closed_total", "counter"),
    ]:
        assert f"# TYPE {name} {kind}\n" in text
        assert f"# HELP {name} " in text
    assert parse_text(text) == []


def test_tcp_connections():
    m = Metrics()
    m.record_tcp("source", PRODUCTPAGE, REVIEWS_V2, "default", "mongo", 100, 2000)
    m.record_tcp("source", PRODUCTPAGE, REVIEWS_V2, "default", "mongo", 50, 0)
    got = {n: (lab, v) for n, lab, v in parse_text(m.render())}
    assert got["istio_tcp_sent_bytes_total"][1] == 150
    assert got["istio_tcp_received_bytes_total"][1] == 2000
    assert got["istio_tcp_connections_opened_total"][1] == 2
    assert got["istio_tcp_connections_closed_total"][1] == 2
    labels = got["istio_tcp_sent_bytes_total"][0]
    assert labels["request_protocol"] == "tcp" and labels["response_flags"] == "-"
    assert labels["destination_service"] == "mongo.default.svc.cluster.local"
    assert "response_code" not in labels
    assert "istio_requests_total" not in got


def test_snapshot_for_top():
    m = Metrics()
    m.record("source", PRODUCTPAGE, REVIEWS_V2, "default", "reviews", 200, 0.010, 1, 1)
    m.record("source", PRODUCTPAGE, REVIEWS_V2, "default", "reviews", 200, 0.030, 1, 1)
    m.record("source", PRODUCTPAGE, REVIEWS_V2, "default", "reviews", 503, 0.001, 1, 1, "UH")
    rows = sorted(m.snapshot(), key=lambda r: r["labels"]["response_code"])
    assert [(r["requests"], r["errors"], r["duration_count"]) for r in rows] == [
        (2, 0, 2),
        (1, 1, 1),
    ]
    assert rows[0]["duration_ms_sum"] == pytest.approx(40.0)
    assert rows[1]["labels"]["response_flags"] == "UH"


def test_label_values_are_escaped_and_parse_back():
    odd = Workload('we"ird', "p", "1.1.1.1", app='a\\b\n"c"', labels={})
    m = Metrics()
    m.record("source", odd, None, "default", "x", 200, 0.0, 0, 0)
    line = next(x for x in m.render().splitlines() if x.startswith("istio_requests_total{"))
    assert 'source_workload="a\\\\b\\n\\"c\\""' in line
    assert 'source_workload_namespace="we\\"ird"' in line
    [(labels, _)] = samples(m, "istio_requests_total")
    assert (
        labels["source_workload"] == 'a\\b\n"c"' and labels["source_workload_namespace"] == 'we"ird'
    )


@pytest.mark.parametrize(
    "text, expected",
    [
        ("up 1", [("up", {}, 1.0)]),
        ("up 1 1700000000000", [("up", {}, 1.0)]),  # with a timestamp
        ('a{x="1",y="2"} 3.5', [("a", {"x": "1", "y": "2"}, 3.5)]),
        ('a{x="1",} 2', [("a", {"x": "1"}, 2.0)]),  # trailing comma
        ('a{ x = "1" , y="" } 2', [("a", {"x": "1", "y": ""}, 2.0)]),
        ('a{x="1"}2', [("a", {"x": "1"}, 2.0)]),
        ("a{} 4", [("a", {}, 4.0)]),
        ('a{le="+Inf"} +Inf', [("a", {"le": "+Inf"}, math.inf)]),
        ("a -Inf", [("a", {}, -math.inf)]),
        ("a 1e3", [("a", {}, 1000.0)]),
        ('a{x="q\\"uo\\\\te\\nd"} 1', [("a", {"x": 'q"uo\\te\nd'}, 1.0)]),
        ('a{x="}{,"} 1', [("a", {"x": "}{,"}, 1.0)]),
        ("ns:sub_metric 7", [("ns:sub_metric", {}, 7.0)]),
        ("# HELP a b\n# TYPE a counter\n\n  a 1  \n", [("a", {}, 1.0)]),
        # malformed lines are skipped, the rest kept
        ('a{x="1" 2\nb 3', [("b", {}, 3.0)]),
        ("a{x=1} 2\nb 3", [("b", {}, 3.0)]),
        ("a\nb 3", [("b", {}, 3.0)]),
        ("a one\nb 3", [("b", {}, 3.0)]),
        ("1a 2\nb 3", [("b", {}, 3.0)]),
        ("a-b 2\nb 3", [("b", {}, 3.0)]),
        ("a 1 2 3\nb 3", [("b", {}, 3.0)]),
        ('a{x="unterminated} 1\nb 3', [("b", {}, 3.0)]),
    ],
)
def test_parse_text(text, expected):
    assert parse_text(text) == expected


def test_nan_parses():
    [(name, _, value)] = parse_text("a NaN")
    assert name == "a" and math.isnan(value)


def test_render_parses_back_completely():
    m = Metrics()
    m.record("source", PRODUCTPAGE, REVIEWS_V2, "default", "reviews", 200, 0.012, 300, 4000)
    m.record_tcp("destination", None, REVIEWS_V2, "default", "reviews", 1, 2)
    lines = [x for x in m.render().splitlines() if x and not x.startswith("#")]
    parsed = parse_text(m.render())
    histogram = len(DURATION_BUCKETS_MS) + 3  # buckets, +Inf, _sum, _count
    assert len(parsed) == len(lines) == 1 + histogram + 2 * (len(BYTES_BUCKETS) + 3) + 4


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=40))
def test_any_label_value_round_trips(value):
    m = Metrics()
    m.record("source", Workload("ns", "p", "1.1.1.1", app=value), None, "d", "s", 200, 0, 0, 0)
    [(labels, _)] = samples(m, "istio_requests_total")
    assert labels["source_workload"] == (value or "p")  # an empty app: the pod's name


def test_escape():
    assert escape("plain") == "plain"
    assert escape('a"b\\c\nd') == 'a\\"b\\\\c\\nd'
