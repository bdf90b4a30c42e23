"""The API server's /metrics: kube-apiserver's labels for a request (a table), the
Prometheus text, and the middleware counting real requests through the real app."""

from __future__ import annotations

import asyncio
import re

import pytest
from aiohttp.test_utils import TestClient, TestServer

from netlab.apiserver.app import make_app
from netlab.apiserver.metrics import DURATION_BUCKETS, Metrics, RequestInfo, request_info
from netlab.resources import DEFAULT_TABLE
from netlab.store import Store

PODS = "/api/v1/namespaces/{namespace}/pods"
POD = PODS + "/{name}"


@pytest.mark.parametrize(
    ("method", "path", "query", "content_type", "expected"),
    [
        ("GET", PODS, {}, "", RequestInfo("LIST", "", "v1", "pods", "", "namespace")),
        ("GET", "/api/v1/pods", {}, "", RequestInfo("LIST", "", "v1", "pods", "", "cluster")),
        ("GET", POD, {}, "", RequestInfo("GET", "", "v1", "pods", "", "resource")),
        ("GET", PODS, {"watch": "true"}, "", RequestInfo("WATCH", "", "v1", "pods", "", "namespace")),
        ("GET", PODS, {"watch": "0"}, "", RequestInfo("LIST", "", "v1", "pods", "", "namespace")),
        ("GET", POD, {"watch": "1"}, "", RequestInfo("WATCH", "", "v1", "pods", "", "resource")),
        ("POST", PODS, {}, "", RequestInfo("POST", "", "v1", "pods", "", "resource")),
        (
            "POST", PODS, {"dryRun": "All"}, "",
            RequestInfo("POST", "", "v1", "pods", "", "resource", "All"),
        ),
        ("DELETE", POD, {}, "", RequestInfo("DELETE", "", "v1", "pods", "", "resource")),
        ("DELETE", PODS, {}, "", RequestInfo("DELETECOLLECTION", "", "v1", "pods", "", "namespace")),
        (
            "PATCH", "/apis/apps/v1/namespaces/{namespace}/deployments/{name}", {},
            "application/apply-patch+yaml",
            RequestInfo("APPLY", "apps", "v1", "deployments", "", "resource"),
        ),
        (
            "PATCH", "/apis/apps/v1/namespaces/{namespace}/deployments/{name}/scale", {},
            "application/merge-patch+json",
            RequestInfo("PATCH", "apps", "v1", "deployments", "scale", "resource"),
        ),
        ("GET", POD + "/log", {}, "", RequestInfo("GET", "", "v1", "pods", "log", "resource")),
        ("GET", POD + "/exec", {}, "", RequestInfo("CONNECT", "", "v1", "pods", "exec", "resource")),
        ("GET", "/api/v1/namespaces", {}, "", RequestInfo("LIST", "", "v1", "namespaces", "", "cluster")),
        (
            "GET", "/api/v1/namespaces/{name}", {}, "",
            RequestInfo("GET", "", "v1", "namespaces", "", "resource"),
        ),
        (
            "PUT", "/api/v1/namespaces/{name}/finalize", {}, "",
            RequestInfo("PUT", "", "v1", "namespaces", "finalize", "resource"),
        ),
        (
            "POST", "/apis/authorization.k8s.io/v1/selfsubjectaccessreviews", {}, "",
            RequestInfo("POST", "authorization.k8s.io", "v1", "selfsubjectaccessreviews", "",
                        "resource"),
        ),
        ("GET", "/healthz", {}, "", RequestInfo("GET", subresource="/healthz")),
        ("GET", "/apis/apps/v1", {}, "", RequestInfo("GET", subresource="/apis/apps/v1")),
        ("GET", "/api", {}, "", RequestInfo("GET", subresource="/api")),
        ("GET", "", {}, "", RequestInfo("GET")),  # no route matched: nothing of the path
        ("BREW", "", {}, "", RequestInfo("other")),  # nor of a method no server knows
    ],
)  # fmt: skip
def test_request_labels_as_kube_apiserver_gives_them(method, path, query, content_type, expected):
    assert request_info(method, path, query, content_type) == expected


def series(text: str, name: str, **labels: str) -> float | None:
    """The value of the one series of `name` whose labels include `labels`."""
    for line in text.splitlines():
        match = re.fullmatch(rf"{name}\{{(.*)\}} (\S+)", line)
        if match is None:
            continue
        have = dict(re.findall(r'(\w+)="((?:[^"\\]|\\.)*)"', match[1]))
        if all(have.get(k) == v for k, v in labels.items()):
            return float(match[2])
    return None


def test_counts_histograms_and_gauges_render_as_prometheus_text() -> None:
    metrics = Metrics()
    lst = RequestInfo("LIST", "", "v1", "pods", "", "namespace")
    watch = RequestInfo("WATCH", "apps", "v1", "deployments", "", "namespace")
    for seconds in (0.001, 0.03, 100.0):
        metrics.started(lst)
        metrics.finished(lst, 200, seconds)
    metrics.started(lst)
    metrics.finished(lst, 404, 0.001)
    metrics.started(watch)  # still open
    metrics.sent(DEFAULT_TABLE.resolve("deployments"), 3)
    text = metrics.render()
    assert "# TYPE apiserver_request_total counter" in text
    assert "# TYPE apiserver_request_duration_seconds histogram" in text
    assert series(text, "apiserver_request_total", resource="pods", verb="LIST", code="200") == 3
    assert series(text, "apiserver_request_total", resource="pods", code="404") == 1
    assert (
        'apiserver_request_total{code="200",component="apiserver",dry_run="",group="",'
        'resource="pods",scope="namespace",subresource="",verb="LIST",version="v1"} 3'
    ) in text.splitlines()  # client_golang's order: label names sorted
    buckets = {
        float(le) if le != "+Inf" else float("inf"): series(
            text, "apiserver_request_duration_seconds_bucket", resource="pods", le=le
        )
        for le in [
            *(repr(b) if not b.is_integer() else str(int(b)) for b in DURATION_BUCKETS),
            "+Inf",
        ]
    }
    assert buckets[0.005] == 2 and buckets[0.05] == 3 and buckets[60] == 3
    assert buckets[float("inf")] == 4  # cumulative; 100 s is past the last bound
    assert series(text, "apiserver_request_duration_seconds_count", resource="pods") == 4
    assert series(text, "apiserver_request_duration_seconds_sum", resource="pods") == pytest.approx(
        100.032
    )
    assert series(text, "apiserver_longrunning_requests", resource="deployments", verb="WATCH") == 1
    assert series(text, "apiserver_current_inflight_requests", request_kind="readOnly") == 1
    assert series(text, "apiserver_watch_events_total", group="apps", resource="deployments") == 3
    metrics.finished(watch, 200, 5.0)
    text = metrics.render()
    assert series(text, "apiserver_longrunning_requests", resource="deployments") == 0
    assert series(text, "apiserver_current_inflight_requests", request_kind="readOnly") == 0


def test_label_values_are_escaped() -> None:
    metrics = Metrics()
    odd = RequestInfo("GET", subresource='/a"b\\c\nd')
    metrics.started(odd)
    metrics.finished(odd, 200, 0.0)
    assert 'subresource="/a\\"b\\\\c\\nd"' in metrics.render()


class Actions:
    async def shutdown(self, leave: bool = False) -> None:
        pass


async def _through_the_app() -> tuple[str, str]:
    store = Store()
    store.apply({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "default"}})
    async with TestClient(TestServer(make_app(store, Actions()))) as client:
        before = await (await client.get("/metrics")).text()
        for _ in range(3):
            assert (await client.get("/api/v1/namespaces/default/pods")).status == 200
        assert (await client.get("/api/v1/namespaces/default/pods/nosuch")).status == 404
        assert (await client.get("/no/such/path/at/all")).status == 404
        watch = await client.get("/api/v1/namespaces?watch=1&timeoutSeconds=1")
        assert watch.status == 200
        await watch.read()  # the initial ADDED, then the timeout ends it
        after = await (await client.get("/metrics")).text()
        assert (await client.get("/metrics")).headers["Content-Type"].startswith("text/plain")
    return before, after


def test_the_middleware_counts_requests_through_the_app() -> None:
    before, after = asyncio.run(_through_the_app())
    assert series(before, "apiserver_request_total", resource="pods") is None
    assert series(after, "apiserver_request_total", resource="pods", verb="LIST", code="200") == 3
    assert series(after, "apiserver_request_total", resource="pods", verb="GET", code="404") == 1
    # a path no route matched is counted, but nothing of it becomes a label
    assert "no/such" not in after
    assert series(after, "apiserver_request_total", subresource="", resource="", code="404") == 1
    assert series(after, "apiserver_request_total", resource="namespaces", verb="WATCH") == 1
    assert series(after, "apiserver_watch_events_total", resource="namespaces") == 1
    assert series(after, "apiserver_longrunning_requests", resource="namespaces") == 0
    assert series(after, "apiserver_request_total", subresource="/metrics", verb="GET") == 1
