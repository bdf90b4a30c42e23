"""The demo's mesh part: topologies/mesh-demo.yaml behind sidecars.

The traffic split counted, the header route, the rate limit's 429s, one
trace drawn as a waterfall across racks, and `netlab top`.
"""

from __future__ import annotations

import json
import sys
import textwrap
import time
from pathlib import Path

from netlab import meshview
from netlab.client import LabClient
from netlab.demo import console, show, step
from netlab.lab import Lab
from netlab.paths import socket_path
from netlab.spec.load import load_lab

# runs in the client pod: N requests on one kept-alive connection, one line per answer
COUNTER = textwrap.dedent(
    """
    import http.client, json, sys
    host, path, n, headers = sys.argv[1], sys.argv[2], int(sys.argv[3]), json.loads(sys.argv[4])
    conn = http.client.HTTPConnection(host, 9080, timeout=10)
    for _ in range(n):
        conn.request("GET", path, headers=headers)
        r = conn.getresponse()
        body = r.read()
        limit = r.getheader("x-ratelimit-remaining")
        print(r.status, json.loads(body).get("version", "-") if r.status == 200 else body.decode().strip(),
              "" if limit is None else f"remaining={limit} reset={r.getheader('x-ratelimit-reset')}s")
    """
)
TRACE_ID = "0af7651916cd43dd8448eb211c80319c"


def _count(lab: Lab, host: str, path: str, n: int, headers: dict | None = None) -> list[str]:
    argv = [sys.executable, "-c", COUNTER, host, path, str(n), json.dumps(headers or {})]
    result = lab.exec("client", argv, timeout=120)
    if result.returncode != 0:
        console.print(result.stderr, markup=False)
    return result.stdout.splitlines()


def _tally(lines: list[str]) -> str:
    counts: dict[str, int] = {}
    for line in lines:
        version = line.split()[1] if len(line.split()) > 1 else "?"
        counts[version] = counts.get(version, 0) + 1
    return ", ".join(f"{k}: {v}" for k, v in sorted(counts.items()))


def run_mesh_demo(lab_file: Path) -> int:
    spec = load_lab(lab_file)
    step(f"the mesh: lab {spec.name} from {lab_file.name}, every pod with a sidecar")
    started = time.monotonic()
    with Lab(spec) as lab:
        for service in ("productpage", "reviews", "ratings"):
            lab.wait_endpoints("default", service, count=1, timeout=30)
        lab.wait_endpoints("default", "reviews", count=3, timeout=30)
        behind = meshview.wait_store_synced(lab.store, timeout=15)
        if behind:
            console.print(f"  (sidecars still catching up: {', '.join(behind)})")
        console.print(f"ready in {time.monotonic() - started:.2f} s")
        pods = {p.name: p for p in lab.pod_list()}
        console.print(
            "  pods: "
            + ", ".join(
                f"{p.name} ({p.node}, {len(p.template.containers)} containers)"
                for p in sorted(pods.values(), key=lambda p: p.name)
                if p.namespace == "default"
            )
        )
        step("client -> productpage -> reviews -> ratings, no proxy settings in any app")
        show(lab.exec("client", ["curl", "-s", "http://productpage:9080/"]))
        step("100 requests to reviews: the VirtualService splits them 90/10 between v1 and v2")
        console.print("  " + _tally(_count(lab, "reviews", "/reviews/0", 100)))
        step("the same with `end-user: jason`: the header match sends every one to v3")
        console.print(
            "  " + _tally(_count(lab, "reviews", "/reviews/0", 20, {"end-user": "jason"}))
        )
        step("one traced request (end-user jason, so ratings is called): its waterfall")
        console.print(
            "  (reviews v2 and v3 called ratings above: 4 s for its rate limit to refill)"
        )
        time.sleep(4.0)
        headers = {"traceparent": f"00-{TRACE_ID}-b7ad6b7169203331-01", "end-user": "jason"}
        _count(lab, "productpage", "/productpage", 1, headers)
        client = LabClient(str(socket_path(lab.run_dir)))
        from mesh import traceview

        spans: list = []
        for _ in range(40):  # the sidecars ship spans every half second
            try:
                spans = meshview.collector_json(client, f"/api/v2/trace/{TRACE_ID}")
            except Exception:
                spans = []
            if len(spans) >= 6:  # client, productpage, reviews: client and server each
                break
            time.sleep(0.1)
        print(traceview.waterfall(spans, width=120))
        console.print(f"  (`sudo netlab trace {TRACE_ID}` while the lab runs)")
        step("ratings' RateLimitPolicy: a bucket of 10, refilled by 5 every 2 s; 14 at once")
        time.sleep(2.0)  # one fill: the traced request's token is back
        for line in _count(lab, "ratings", "/ratings/0", 14):
            console.print("  " + line, markup=False)
        step("`netlab top`: what the sidecars' Prometheus metrics say per service pair")
        rows = meshview.pair_rows(meshview.scrape(meshview.meshed_pods(client)))
        for row in rows:
            console.print(
                f"  {row['source']:<20} -> {row['destination']:<36} {row['requests']:>4} requests"
                f" ({meshview.codes_text(row['codes'])}), p50 {meshview._ms(row['p50_ms'])}",
                markup=False,
            )
        step("tearing the mesh lab down")
    return 0
