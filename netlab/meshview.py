"""`netlab trace` and `netlab top`: the mesh as its users look at it.

Both read servers that live inside the lab's pods (the trace collector, every
sidecar's admin port) without sending a packet outside the lab: the socket is
created inside the pod's network namespace and connects to that pod's own
loopback, so nothing is routed from the host.
"""

from __future__ import annotations

import argparse
import json
import socket
import sys
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from netlab.client import LabClient
from netlab.errors import NetlabError
from netlab.plan.interception import ADMIN_PORT
from netlab.realize import netns
from netlab.spec.mesh import COLLECTOR_LABELS, COLLECTOR_NAMESPACE, COLLECTOR_PORT
from netlab.system import SIDECAR_CONTAINER

TIMEOUT = 5.0
MAX_BODY = 64 << 20


def pod_get(netns_name: str, port: int, path: str, timeout: float = TIMEOUT) -> tuple[int, bytes]:
    """GET http://127.0.0.1:PORT/PATH as seen inside the pod's namespace."""
    with netns.entered(netns.netns_path(netns_name)):
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)  # born in the pod's netns
    try:
        sock.settimeout(timeout)
        sock.connect(("127.0.0.1", port))
        sock.sendall(
            f"GET {path} HTTP/1.0\r\nHost: 127.0.0.1:{port}\r\nAccept: */*\r\n\r\n".encode()
        )
        chunks, size = [], 0
        while chunk := sock.recv(65536):
            chunks.append(chunk)
            size += len(chunk)
            if size > MAX_BODY:
                raise NetlabError(f"answer from {netns_name}:{port}{path} is too large")
    except OSError as exc:
        raise NetlabError(f"cannot reach 127.0.0.1:{port} in {netns_name}: {exc}") from exc
    finally:
        sock.close()
    head, _, body = b"".join(chunks).partition(b"\r\n\r\n")
    try:
        status = int(head.split(b" ", 2)[1])
    except (IndexError, ValueError):
        raise NetlabError(f"no HTTP answer from 127.0.0.1:{port} in {netns_name}") from None
    return status, body


def _netns_of(pod: dict) -> str:
    return pod["metadata"].get("annotations", {}).get("netlab.io/netns", "")


def _collector_netns(client: LabClient) -> str:
    selector = ",".join(f"{k}={v}" for k, v in COLLECTOR_LABELS.items())
    pods = client.list("pods", namespace=COLLECTOR_NAMESPACE, label_selector=selector)["items"]
    running = [p for p in pods if p.get("status", {}).get("phase") == "Running"]
    if not running:
        raise NetlabError(
            'this lab runs no trace collector; mesh a workload (label netlab.io/inject: "true") '
            "or set lab.mesh.enabled: true"
        )
    return _netns_of(running[0])


def collector_json(client: LabClient, path: str) -> Any:
    status, body = pod_get(_collector_netns(client), COLLECTOR_PORT, path)
    if status == 404:
        raise NetlabError(f"the collector has no {path}: no such trace?")
    if status != 200:
        raise NetlabError(f"the collector answered {status} to {path}: {body[:200]!r}")
    return json.loads(body)


# -- trace ---------------------------------------------------------------------


def configure_trace(p: argparse.ArgumentParser) -> None:
    p.add_argument("trace_id", nargs="?", help="a trace id: draw its spans as a waterfall")
    p.add_argument("--limit", type=int, default=20, help="how many recent traces to list")
    p.add_argument("--service", help="only traces through this service (Zipkin serviceName)")
    p.add_argument(
        "--export",
        nargs=2,
        metavar=("FORMAT", "FILE"),
        help="write the trace (or the recent traces) to FILE as zipkin or otlp JSON",
    )
    p.add_argument("-o", "--output", choices=("json",), help="the spans as JSON")
    p.add_argument("--width", type=int, default=0, help="waterfall width (default: terminal)")


def run_trace(args: argparse.Namespace, client: LabClient) -> int:
    from mesh import traceview

    if args.export:
        kind, target = args.export
        if kind not in ("zipkin", "otlp"):
            raise NetlabError(f"--export {kind}: the formats are zipkin and otlp")
        traces = [_trace(client, args.trace_id)] if args.trace_id else _traces(client, args)
        doc = traceview.to_zipkin(traces) if kind == "zipkin" else traceview.to_otlp(traces)
        _write_atomic(Path(target), json.dumps(doc, indent=1))
        spans = sum(len(t) for t in traces)
        print(f"{len(traces)} trace(s), {spans} spans written to {target} ({kind})")
        return 0
    if args.trace_id:
        spans = _trace(client, args.trace_id)
        if args.output == "json":
            print(json.dumps(spans, indent=2))
        else:
            width = args.width or _terminal_width()
            print(traceview.waterfall(spans, width=width, color=sys.stdout.isatty()))
        return 0
    traces = _traces(client, args)
    if args.output == "json":
        print(json.dumps(traceview.summarize(traces), indent=2))
    else:
        print(traceview.trace_list(traceview.summarize(traces)))
    return 0


def _trace(client: LabClient, trace_id: str) -> list[dict]:
    if not all(c in "0123456789abcdefABCDEF" for c in trace_id) or len(trace_id) not in (16, 32):
        raise NetlabError(f"{trace_id!r} is not a trace id (16 or 32 hex digits)")
    return collector_json(client, f"/api/v2/trace/{trace_id.lower()}")


def _traces(client: LabClient, args: argparse.Namespace) -> list[list[dict]]:
    query = f"/api/v2/traces?limit={max(1, args.limit)}"
    if args.service:
        query += f"&serviceName={args.service}"
    return collector_json(client, query)


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        tmp.write_text(text)
        tmp.replace(path)
    except OSError as exc:
        raise NetlabError(f"cannot write {path}: {exc.strerror}") from exc


def _terminal_width() -> int:
    try:
        import shutil

        return max(80, shutil.get_terminal_size((120, 40)).columns)
    except OSError:
        return 120


# -- top -------------------------------------------------------------------------


def configure_top(p: argparse.ArgumentParser) -> None:
    p.add_argument("--window", type=float, default=1.0, help="seconds between two scrapes (RPS)")
    p.add_argument(
        "-n", "--namespace", help="only pods of this namespace (the mesh: their sidecars)"
    )
    p.add_argument("-o", "--output", choices=("json",), help="the rows as JSON")


def meshed_pods(client: LabClient, namespace: str | None = None) -> list[dict]:
    pods = client.list("pods", namespace=namespace, all_namespaces=namespace is None)["items"]
    return [p for p in pods if _meshed_running(p)]


def _meshed_running(pod: dict) -> bool:
    return (
        any(c["name"] == SIDECAR_CONTAINER for c in pod["spec"]["containers"])
        and pod.get("status", {}).get("phase") == "Running"
    )


WATCHED_KINDS = (
    "services",
    "endpoints",
    "pods",
    "nodes",
    "virtualservices",
    "destinationrules",
    "ratelimitpolicies",
)


def mesh_revision(lists: Iterable[list[dict]]) -> int:
    """The newest resourceVersion among the objects the sidecars watch."""
    return max(
        (int(o["metadata"].get("resourceVersion") or 0) for items in lists for o in items),
        default=0,
    )


def wait_synced(pods: Iterable[dict], revision: int, timeout: float = 10.0) -> list[str]:
    """Wait until every sidecar has seen `revision` and compiled it (its table is
    up to date); the names of the pods whose sidecars are not, when time is up."""
    waiting = {p["metadata"]["name"]: p for p in pods}
    deadline = time.monotonic() + timeout
    while waiting:
        for name, pod in list(waiting.items()):
            try:
                status, body = pod_get(_netns_of(pod), ADMIN_PORT, "/stats", timeout=2.0)
                stats = json.loads(body) if status == 200 else {}
            except (NetlabError, ValueError):
                continue  # not serving yet
            if stats.get("watch", {}).get("revision", 0) >= revision and not stats.get("pending"):
                del waiting[name]
        if not waiting or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    return sorted(waiting)


def wait_store_synced(store: Any, timeout: float = 10.0) -> list[str]:
    """`wait_synced` for every running meshed pod of a lab, at the newest revision of
    what the sidecars watch in its store (netlab.store.Store)."""
    pods = [p for p in store.list("pods")[0] if _meshed_running(p)]
    revision = mesh_revision(store.list(kind)[0] for kind in WATCHED_KINDS)
    return wait_synced(pods, revision, timeout)


def scrape(pods: Iterable[dict]) -> list[tuple[str, dict[str, str], float]]:
    """Every sidecar's Prometheus samples, in one list."""
    from mesh.metrics import parse_text

    samples = []
    for pod in pods:
        try:
            status, body = pod_get(_netns_of(pod), ADMIN_PORT, "/stats/prometheus", timeout=2.0)
        except NetlabError:
            continue  # a sidecar that is restarting
        if status == 200:
            samples += parse_text(body.decode("utf-8", "replace"))
    return samples


def pair_rows(samples: list, before: list | None = None, window: float = 0.0) -> list[dict]:
    """Per (source workload, destination service), as the source sidecars report it:
    requests, successes, RPS over the window, p50/p99 from the duration histogram."""
    rows: dict[tuple[str, str], dict[str, Any]] = {}

    def key(labels: dict[str, str]) -> tuple[str, str]:
        source = f"{labels.get('source_workload')}.{labels.get('source_workload_namespace')}"
        return source, labels.get("destination_service", "unknown")

    def tally(points: list, sign: float) -> None:
        for name, labels, value in points:
            if labels.get("reporter") != "source":
                continue
            row = rows.setdefault(
                key(labels), {"requests": 0.0, "ok": 0.0, "now": 0.0, "buckets": {}, "codes": {}}
            )
            if name == "istio_requests_total":
                if sign > 0:
                    row["requests"] += value
                    code = labels.get("response_code", "0")
                    row["codes"][code] = row["codes"].get(code, 0) + int(value)
                    if not code.startswith("5"):  # Istio's (and Kiali's) success: not a 5xx
                        row["ok"] += value
                row["now"] += sign * value
            elif name == "istio_request_duration_milliseconds_bucket" and sign > 0:
                le = float("inf") if labels["le"] == "+Inf" else float(labels["le"])
                row["buckets"][le] = row["buckets"].get(le, 0.0) + value

    tally(samples, 1.0)
    if before is not None:
        tally(before, -1.0)
    out = []
    for (source, destination), row in sorted(rows.items()):
        out.append(
            {
                "source": source,
                "destination": destination,
                "requests": int(row["requests"]),
                "success": row["ok"] / row["requests"] if row["requests"] else 1.0,
                "codes": dict(sorted(row["codes"].items())),
                "rps": row["now"] / window if before is not None and window > 0 else None,
                "p50_ms": histogram_quantile(0.5, row["buckets"]),
                "p99_ms": histogram_quantile(0.99, row["buckets"]),
            }
        )
    return out


def histogram_quantile(q: float, buckets: dict[float, float]) -> float | None:
    """Prometheus' histogram_quantile over cumulative bucket counts."""
    if not buckets:
        return None
    bounds = sorted(buckets)
    total = buckets[bounds[-1]]
    if total <= 0:
        return None
    rank, lower, below = q * total, 0.0, 0.0
    for bound in bounds:
        count = buckets[bound]
        if count >= rank:
            if bound == float("inf"):
                return lower
            width = count - below
            return lower + (bound - lower) * ((rank - below) / width if width else 1.0)
        lower, below = bound, count
    return lower


def codes_text(codes: dict[str, int]) -> str:
    """Response codes as `200:92,429:8`."""
    return ",".join(f"{code}:{n}" for code, n in codes.items()) or "-"


def run_top(args: argparse.Namespace, client: LabClient) -> int:
    pods = meshed_pods(client, args.namespace)
    if not pods:
        raise NetlabError('no meshed pods; label a namespace or pod netlab.io/inject: "true"')
    before = scrape(pods) if args.window > 0 else None
    if before is not None:
        time.sleep(args.window)
    rows = pair_rows(scrape(pods), before, args.window)
    if args.output == "json":
        print(json.dumps(rows, indent=2))
        return 0
    if not rows:
        print("No requests seen by the sidecars yet.")
        return 0
    header = ["SOURCE", "DESTINATION", "REQUESTS", "SUCCESS", "CODES", "RPS", "P50", "P99"]
    table = [header] + [
        [
            r["source"],
            r["destination"],
            str(r["requests"]),
            f"{100 * r['success']:.1f}%",
            codes_text(r["codes"]),
            "-" if r["rps"] is None else f"{r['rps']:.1f}",
            _ms(r["p50_ms"]),
            _ms(r["p99_ms"]),
        ]
        for r in rows
    ]
    widths = [max(len(row[i]) for row in table) for i in range(len(header))]
    for row in table:
        print("   ".join(cell.ljust(widths[i]) for i, cell in enumerate(row)).rstrip())
    return 0


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}ms"
