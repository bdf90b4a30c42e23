"""`netlab top`'s arithmetic on scraped Istio metrics (pure)."""

from __future__ import annotations

from netlab.meshview import codes_text, histogram_quantile, pair_rows


def sample(code: str, value: float, reporter: str = "source") -> tuple[str, dict, float]:
    labels = {
        "reporter": reporter,
        "source_workload": "client",
        "source_workload_namespace": "default",
        "destination_service": "ratings.default.svc.cluster.local",
        "response_code": code,
    }
    return ("istio_requests_total", labels, value)


def bucket(le: str, value: float) -> tuple[str, dict, float]:
    labels = dict(sample("200", 0)[1], le=le)
    return ("istio_request_duration_milliseconds_bucket", labels, value)


def test_rows_count_codes_and_success_is_not_5xx():
    samples = [
        sample("200", 6),
        sample("429", 3),
        sample("503", 1),
        sample("200", 99, "destination"),
    ]
    (row,) = pair_rows(samples)
    assert row["requests"] == 10
    assert row["success"] == 0.9  # a 429 is not a server error (Istio's success rate)
    assert row["codes"] == {"200": 6, "429": 3, "503": 1}
    assert codes_text(row["codes"]) == "200:6,429:3,503:1"


def test_rates_over_a_window_and_quantiles():
    before = [sample("200", 10)]
    after = [sample("200", 30), bucket("1", 10), bucket("5", 30), bucket("+Inf", 30)]
    (row,) = pair_rows(after, before, window=2.0)
    assert row["rps"] == 10.0
    assert histogram_quantile(0.5, {1.0: 10, 5.0: 30, float("inf"): 30}) == 2.0
    assert row["p50_ms"] == 2.0
