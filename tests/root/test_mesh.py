"""The sidecar mesh on a real lab: the bookinfo-like apps of
topologies/mesh-demo.yaml behind real sidecars, real nftables interception,
real HTTP from unmodified clients (no proxy settings), policy applied live
through the lab API, traces in the lab's collector."""

from __future__ import annotations

import json
import math
import sys
import textwrap
import time
from pathlib import Path

import pytest

from netlab import meshview
from netlab.lab import Lab
from netlab.realize import netns, nftables
from netlab.spec import parse_lab
from netlab.system import SIDECAR_CONTAINER
from tests.root.conftest import lab_namespaces, wait_for

pytestmark = pytest.mark.root

DEMO = Path(__file__).resolve().parents[2] / "topologies" / "mesh-demo.yaml"

EXTRA = """
---
# a Service with one endpoint that refuses connections (ready by an exec probe)
apiVersion: v1
kind: Pod
metadata: {name: refuser, labels: {app: flaky}}
spec:
  nodeName: n2
  containers:
    - name: idle
      command: [sleep, infinity]
      readinessProbe: {exec: {command: ["true"]}}
---
apiVersion: v1
kind: Pod
metadata: {name: answerer, labels: {app: flaky}}
spec:
  nodeName: n4
  containers:
    - name: echo
      command: [python3, -m, netlab.apps.echo, "8080"]
      ports: [{containerPort: 8080}]
---
apiVersion: v1
kind: Service
metadata: {name: flaky}
spec: {selector: {app: flaky}, ports: [{name: http, port: 80, targetPort: 8080}]}
---
# a backend that accepts and never answers
apiVersion: v1
kind: Pod
metadata: {name: staller, labels: {app: slow}}
spec:
  nodeName: n3
  containers:
    - name: stall
      command: [python3, -c, "import socket,time; s=socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1); s.bind(('0.0.0.0', 8080)); s.listen(64); c=[s.accept() for _ in range(64)]; time.sleep(3600)"]
      ports: [{containerPort: 8080}]
---
apiVersion: v1
kind: Service
metadata: {name: slow}
spec: {selector: {app: slow}, ports: [{name: http, port: 80, targetPort: 8080}]}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: slow}
spec:
  hosts: [slow]
  http:
    - route: [{destination: {host: slow}}]
      timeout: 500ms
---
apiVersion: v1
kind: Service
metadata: {name: nobody}
spec: {selector: {app: nobody}, ports: [{name: http, port: 80}]}
"""

# Runs inside a pod: N requests on one kept-alive connection (or several
# threads with one connection each), statuses, headers and bodies as JSON.
CLIENT = textwrap.dedent(
    """
    import http.client, json, sys, threading, time
    host, port, path, n, threads = sys.argv[1], int(sys.argv[2]), sys.argv[3], int(sys.argv[4]), int(sys.argv[5])
    headers = json.loads(sys.argv[6])
    results = [[] for _ in range(threads)]
    def run(k):
        conn = http.client.HTTPConnection(host, port, timeout=10)
        for _ in range(n):
            conn.request("GET", path, headers=headers)
            r = conn.getresponse()
            body = r.read().decode(errors="replace")
            results[k].append([time.monotonic(), r.status, {a.lower(): b for a, b in r.getheaders()}, body])
    ts = [threading.Thread(target=run, args=(k,)) for k in range(threads)]
    [t.start() for t in ts]; [t.join() for t in ts]
    print(json.dumps([x for r in results for x in r]))
    """
)


@pytest.fixture(scope="module")
def mlab():
    text = DEMO.read_text().replace("name: mesh\n", "name: tmesh\n", 1) + EXTRA
    with Lab(parse_lab(text, str(DEMO))) as running:
        for service, count in (("productpage", 1), ("reviews", 3), ("ratings", 1), ("flaky", 2)):
            running.wait_endpoints("default", service, count=count, timeout=30)
        running.wait_endpoints("kube-system", "zipkin", timeout=30)
        behind = meshview.wait_store_synced(running.store, timeout=15)
        assert not behind, f"sidecars not synced: {behind}: " + _proxy_log(running, behind[0])
        yield running
    assert not [n for n in lab_namespaces() if n.startswith("nl-tmesh")]


def _proxy_log(lab: Lab, pod: str) -> str:
    rt = next(rt for rt in lab.pods.values() if rt.plan.name == pod)
    return lab.log_path(rt.plan, "netlab-proxy").read_text(errors="replace")[-3000:]


def requests(lab: Lab, url_host: str, path: str, n: int, headers=None, threads=1, port=9080):
    result = lab.exec(
        "client",
        [sys.executable, "-c", CLIENT, url_host, str(port), path, str(n), str(threads),
         json.dumps(headers or {})],
        timeout=120,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def versions(answers) -> dict[str, int]:
    counts: dict[str, int] = {}
    for _t, status, _h, body in answers:
        assert status == 200, body
        version = json.loads(body)["version"]
        counts[version] = counts.get(version, 0) + 1
    return counts


def apply(lab: Lab, text: str) -> list[dict]:
    return lab.apply_text(textwrap.dedent(text))


def test_an_unmodified_client_goes_through_both_sidecars(mlab):
    client = mlab.pod("client")
    table = nftables._run_nft(
        netns.netns_path(client.netns), ["list", "table", "ip", "netlab_mesh"], None
    )
    assert "redirect to :15001" in table and "redirect to :15006" in table
    result = mlab.exec(
        "client", ["curl", "-s", "--noproxy", "*", "-m", "10", "http://productpage:9080/"]
    )
    page = json.loads(result.stdout)
    assert page["productpage"]["service"] == "productpage"
    assert page["reviews"]["service"] == "reviews"
    samples = meshview.scrape([mlab.store.get("pods", "default", client.name)])
    sent = [
        (labels["destination_service_name"], labels["response_code"], value)
        for name, labels, value in samples
        if name == "istio_requests_total" and labels["reporter"] == "source"
    ]
    assert any(svc == "productpage" and code == "200" and v >= 1 for svc, code, v in sent), sent


def test_the_split_lands_within_binomial_bounds(mlab):
    n = 1000
    counts = versions(requests(mlab, "reviews", "/reviews/0", n))
    # 99.9% two-sided bounds for Binomial(1000, 0.9): 900 +- 3.29 sd
    sd = math.sqrt(n * 0.9 * 0.1)
    assert abs(counts.get("v1", 0) - 900) <= 3.29 * sd, counts
    assert counts.get("v1", 0) + counts.get("v2", 0) == n, counts  # v3 only for jason


def test_header_match_sends_every_jason_to_v3_and_nobody_else(mlab):
    assert versions(requests(mlab, "reviews", "/reviews/0", 200, {"end-user": "jason"})) == {
        "v3": 200
    }
    others = versions(requests(mlab, "reviews", "/reviews/0", 200, {"end-user": "alice"}))
    assert "v3" not in others


def test_a_changed_split_takes_effect_within_a_second(mlab):
    changed = """
        apiVersion: networking.istio.io/v1
        kind: VirtualService
        metadata: {name: reviews}
        spec:
          hosts: [reviews]
          http:
            - name: split
              route:
                - {destination: {host: reviews, subset: v1}, weight: 0}
                - {destination: {host: reviews, subset: v2}, weight: 100}
        """
    try:
        assert apply(mlab, changed) == [
            {
                "kind": "VirtualService",
                "namespace": "default",
                "name": "reviews",
                "action": "configured",
            }
        ]
        time.sleep(1.0)
        assert versions(requests(mlab, "reviews", "/reviews/0", 200)) == {"v2": 200}
    finally:
        mlab.apply_text(_demo_vs())
    assert "v1" in versions(requests(mlab, "reviews", "/reviews/0", 50))


def _demo_doc(kind: str) -> str:
    return next(d for d in DEMO.read_text().split("\n---\n") if f"kind: {kind}" in d)


def _demo_vs() -> str:
    return _demo_doc("VirtualService")


def test_rate_limit_is_exact_under_a_concurrent_burst(mlab):
    policy = """
        apiVersion: netlab.io/v1alpha1
        kind: RateLimitPolicy
        metadata: {name: ratings}
        spec:
          targetRef: {kind: Service, name: ratings}
          tokenBucket: {maxTokens: 20, tokensPerFill: 2, fillInterval: 5s}
        """
    apply(mlab, policy)
    time.sleep(1.0)
    try:
        answers = requests(mlab, "ratings", "/ratings/0", 15, threads=4)
        window = max(a[0] for a in answers) - min(a[0] for a in answers)
        accepted = [a for a in answers if a[1] == 200]
        limited = [a for a in answers if a[1] == 429]
        assert len(accepted) + len(limited) == 60
        assert len(accepted) <= 20 + 2 * (math.ceil(window / 5.0) + 1), (len(accepted), window)
        assert len(accepted) >= 20 and limited
        for _t, _status, headers, body in limited:
            assert body.strip() == "local_rate_limited"
            assert headers["x-ratelimit-limit"].startswith("20")
            assert headers["x-ratelimit-remaining"] == "0"
            assert int(headers["x-ratelimit-reset"]) >= 1
    finally:
        mlab.apply_text(_demo_doc("RateLimitPolicy"))


def test_one_trace_across_three_services_with_parent_links(mlab):
    trace_id = "4bf92f3577b34da6a3ce929d0e0e4736"
    parent = "00f067aa0ba902b7"
    headers = {"traceparent": f"00-{trace_id}-{parent}-01", "end-user": "jason"}
    answers = requests(mlab, "productpage", "/productpage", 1, headers)
    assert answers[0][1] == 200

    def spans():
        try:
            return meshview.collector_json(_client(mlab), f"/api/v2/trace/{trace_id}")
        except Exception:
            return []

    assert wait_for(
        lambda: (
            {s["tags"].get("netlab.pod", "").split("/")[-1].split("-")[0] for s in spans()}
            >= {"client", "productpage", "reviews", "ratings"}
        ),
        5.0,
    ), spans()
    found = spans()
    ids = {s["id"] for s in found}
    assert {s["traceId"] for s in found} == {trace_id}
    for span in found:
        assert span.get("parentId") in ids | {parent}, span
    roots = [s for s in found if s.get("parentId") == parent]
    assert len(roots) == 1 and roots[0]["kind"] == "CLIENT"  # the client pod's sidecar
    kinds = {(s["tags"]["netlab.pod"].split("/")[1].split("-")[0], s["kind"]) for s in found}
    assert ("ratings", "SERVER") in kinds and ("reviews", "CLIENT") in kinds


def _client(lab: Lab):
    from netlab.client import LabClient
    from netlab.paths import socket_path

    return LabClient(str(socket_path(lab.run_dir)))


def test_non_http_tcp_passes_through_meshed_pods(mlab):
    ratings = next(p for p in mlab.pod_list() if p.labels.get("app") == "ratings")
    server = "import socket; s=socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1); s.bind(('0.0.0.0', 7000)); s.listen(1); c,_=s.accept(); c.sendall(b'hello ' + c.recv(100)); c.close()"
    import subprocess

    proc = subprocess.Popen(["ip", "netns", "exec", ratings.netns, sys.executable, "-c", server])
    try:
        time.sleep(0.5)
        talk = f"import socket; c=socket.create_connection(('{ratings.address.ip}', 7000), timeout=5); c.sendall(b'\\x00\\x01binary'); print(c.recv(100))"
        result = mlab.exec("client", [sys.executable, "-c", talk], timeout=20)
        assert result.stdout.strip() == repr(b"hello \x00\x01binary"), result.stderr
    finally:
        proc.kill()
        proc.wait()


def test_failures_retry_timeout_and_no_endpoints(mlab):
    answers = requests(mlab, "flaky", "/", 20, port=80)
    assert [a[1] for a in answers] == [200] * 20  # the refusing endpoint is retried on the other
    started = time.monotonic()
    answers = requests(mlab, "slow", "/", 1, port=80)
    assert answers[0][1] == 504 and "upstream request timeout" in answers[0][3]
    assert time.monotonic() - started < 5
    answers = requests(mlab, "nobody", "/", 1, port=80)
    assert answers[0][1] == 503 and "no healthy upstream" in answers[0][3]


def test_bad_requests_do_not_take_the_sidecar_down(mlab):
    script = textwrap.dedent(
        """
        import socket, time
        def talk(data, wait=3):
            c = socket.create_connection(('productpage', 9080), timeout=wait)
            c.sendall(data)
            try:
                return c.recv(200).split(b'\\r\\n')[0].decode()
            except socket.timeout:
                return 'timeout'
            finally:
                c.close()
        print(talk(b'NOT HTTP AT ALL\\r\\n\\r\\n'))
        print(talk(b'GET / HTTP/1.1\\r\\nHost: x\\r\\nX-Big: ' + b'a' * 70000 + b'\\r\\n\\r\\n'))
        print(talk(b'GET / HTTP/1.1\\r\\nContent-Length: 5\\r\\nTransfer-Encoding: chunked\\r\\n\\r\\n'))
        slow = [socket.create_connection(('productpage', 9080)) for _ in range(20)]
        for s in slow: s.sendall(b'GET / HTTP/1.1\\r\\nHost: x\\r\\n')
        time.sleep(0.5)
        for s in slow: s.close()
        """
    )
    result = mlab.exec("client", [sys.executable, "-c", script], timeout=60)
    lines = result.stdout.split("\n")
    assert lines[0].split(" ")[1] == "400", result.stdout
    assert lines[1].split(" ")[1] == "431", result.stdout
    assert lines[2].split(" ")[1] == "400", result.stdout
    client = mlab.store.get("pods", "default", "client")
    ns = client["metadata"]["annotations"]["netlab.io/netns"]

    def open_connections() -> int:
        status, body = meshview.pod_get(ns, 15000, "/stats")
        return json.loads(body)["proxy"]["connections_open"]

    assert wait_for(lambda: open_connections() == 0, 5.0), open_connections()
    page = mlab.exec("client", ["curl", "-s", "-m", "10", "http://productpage:9080/"])
    assert json.loads(page.stdout)["productpage"]["service"] == "productpage"


OTEL_APP = textwrap.dedent(
    """
    import http.client, json, requests
    from opentelemetry.exporter.zipkin.json import ZipkinExporter
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator
    session = requests.Session()
    session.trust_env = False
    exporter = ZipkinExporter(endpoint="http://zipkin.kube-system:9411/api/v2/spans", session=session)
    provider = TracerProvider(resource=Resource.create({"service.name": "client-app"}))
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    with provider.get_tracer("demo").start_as_current_span("browse") as span:
        headers = {}
        TraceContextTextMapPropagator().inject(headers)
        conn = http.client.HTTPConnection("productpage", 9080, timeout=10)
        conn.request("GET", "/productpage", headers=headers)
        status = conn.getresponse().status
        ctx = span.get_span_context()
    provider.shutdown()
    print(json.dumps([format(ctx.trace_id, "032x"), format(ctx.span_id, "016x"), status]))
    """
)


def test_an_app_traced_with_the_opentelemetry_sdk_joins_the_sidecars_trace(mlab):
    result = mlab.exec("client", [sys.executable, "-c", OTEL_APP], timeout=60)
    assert result.returncode == 0, result.stderr
    trace_id, app_span, status = json.loads(result.stdout)
    assert status == 200

    def spans():
        try:
            return meshview.collector_json(_client(mlab), f"/api/v2/trace/{trace_id}")
        except Exception:
            return []

    # the app's own span and the sidecars' spans arrive in separate batches: wait for
    # the client sidecar's span under the app's, not for a count
    assert wait_for(lambda: any(s.get("parentId") == app_span for s in spans()), 5.0), spans()
    found = spans()
    by_id = {s["id"]: s for s in found}
    app = by_id[app_span]
    assert app["localEndpoint"]["serviceName"] == "client-app" and "parentId" not in app
    # the client's sidecar span continues the app's context: the app is its parent
    (sidecar,) = [s for s in found if s.get("parentId") == app_span]
    assert sidecar["kind"] == "CLIENT" and sidecar["tags"]["netlab.pod"] == "default/client"
    assert {s["traceId"] for s in found} == {trace_id}


def netlab_cli(*args: str) -> str:
    import subprocess

    result = subprocess.run(
        [sys.executable, "-m", "netlab.cli", "--lab", "tmesh", *args],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_trace_and_top_commands_show_a_request(mlab, tmp_path):
    trace_id = "5bf92f3577b34da6a3ce929d0e0e4737"
    headers = {"traceparent": f"00-{trace_id}-00f067aa0ba902b8-01"}
    assert requests(mlab, "productpage", "/productpage", 1, headers)[0][1] == 200
    assert wait_for(lambda: trace_id in netlab_cli("trace", "--limit", "50"), 5.0)
    # spans come in batches from each sidecar: wait for the client's and productpage's
    assert wait_for(
        lambda: all(
            pod in netlab_cli("trace", trace_id, "--width", "120")
            for pod in ("default/client", "default/productpage")
        ),
        5.0,
    )
    drawn = netlab_cli("trace", trace_id, "--width", "120")
    assert "productpage.default" in drawn and "default/client" in drawn
    assert "@n1" in drawn  # the client's node
    out = tmp_path / "trace.json"
    netlab_cli("trace", trace_id, "--export", "zipkin", str(out))
    spans = json.loads(out.read_text())
    assert spans and {s["traceId"] for s in spans} == {trace_id}
    rows = json.loads(netlab_cli("top", "-o", "json"))
    pair = next(r for r in rows if r["destination"].startswith("productpage.default"))
    assert pair["source"] == "client.default" and pair["codes"].get("200", 0) >= 1


def test_a_statefulsets_pods_get_their_sidecar_in_a_meshed_namespace(mlab):
    apply(
        mlab,
        """
        apiVersion: apps/v1
        kind: StatefulSet
        metadata: {name: cache}
        spec:
          replicas: 1
          serviceName: cache
          selector: {matchLabels: {app: cache}}
          template:
            metadata: {labels: {app: cache}}
            spec:
              containers:
              - name: cache
                command: [python3, -m, netlab.apps.echo, "8080"]
                ports: [{containerPort: 8080}]
        ---
        apiVersion: v1
        kind: Service
        metadata: {name: cache}
        spec: {selector: {app: cache}, ports: [{port: 80, targetPort: 8080}]}
        """,
    )
    try:
        mlab.wait_endpoints("default", "cache", timeout=30)
        pod = mlab.store.get("pods", "default", "cache-0")
        assert [c["name"] for c in pod["spec"]["containers"]] == ["cache", SIDECAR_CONTAINER]

        def answered() -> str:  # the echo app's first word: the pod that answered
            out = mlab.exec("client", ["curl", "-s", "--noproxy", "*", "-m", "5", "http://cache/"])
            return out.stdout.split()[0] if out.stdout.split() else ""

        assert wait_for(lambda: answered() == "cache-0", 10, 0.2)
        # its sidecar took the request in (the inbound side counts it)
        samples = meshview.scrape([mlab.store.get("pods", "default", "cache-0")])
        received = [
            value
            for name, labels, value in samples
            if name == "istio_requests_total" and labels["reporter"] == "destination"
        ]
        assert sum(received) >= 1, samples
    finally:
        mlab.store.delete("statefulsets", "default", "cache")
        mlab.delete_service("cache")
