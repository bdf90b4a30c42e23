"""The API server's own metrics at `/metrics`, in Prometheus' text format (0.0.4), under
kube-apiserver's names and labels:

- `apiserver_request_total{code,component,dry_run,group,resource,scope,subresource,verb,version}`
- `apiserver_request_duration_seconds` (histogram; the same labels but `code`)
- `apiserver_longrunning_requests` (gauge: open WATCH and CONNECT requests)
- `apiserver_current_inflight_requests{request_kind}` (gauge: readOnly, mutating)
- `apiserver_watch_events_total{group,resource,version}` (events sent to watchers)

A middleware (`middleware(metrics)`) times every request that got past authentication
and labels it as kube-apiserver does (`request_info`): the Kubernetes verb (LIST,
WATCH, APPLY, CONNECT ... not the HTTP method), the resource and its scope; other
paths are named in `subresource`. Labels come from the route that matched, never from
free text a client sent, so the number of series stays bounded. Everything runs on the
API server's event loop: no locks.
"""

from __future__ import annotations

import math
import time
from bisect import bisect_left
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass

from aiohttp import web

from netlab.apiserver.base import TRUE
from netlab.resources import Resource

# kube-apiserver's buckets for apiserver_request_duration_seconds
DURATION_BUCKETS = (
    0.005, 0.025, 0.05, 0.1, 0.2, 0.4, 0.6, 0.8, 1.0, 1.25, 1.5, 2.0, 3.0, 4.0, 5.0, 6.0,
    8.0, 10.0, 15.0, 20.0, 30.0, 45.0, 60.0,
)  # fmt: skip
COMPONENT = "apiserver"
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
APPLY_PATCH = "application/apply-patch+yaml"
CONNECT_SUBRESOURCES = ("exec", "attach", "portforward", "proxy")
NAMESPACE_SUBRESOURCES = ("status", "finalize")
METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")  # others: "other"
REQUEST_LABELS = ("verb", "dry_run", "group", "version", "resource", "subresource", "scope")


@dataclass(frozen=True)
class RequestInfo:
    """What kube-apiserver's metrics say of a request (`RequestInfo`, cleaned)."""

    verb: str
    group: str = ""
    version: str = ""
    resource: str = ""
    subresource: str = ""
    scope: str = ""
    dry_run: str = ""

    @property
    def long_running(self) -> bool:
        return self.verb in ("WATCH", "CONNECT")

    @property
    def mutating(self) -> bool:
        return self.verb not in ("GET", "LIST", "WATCH", "HEAD", "OPTIONS")


def _watching(query: Mapping[str, str]) -> bool:
    return query.get("watch", "") in TRUE  # as reads.py decides it (base.flag)


def request_info(
    method: str, path: str, query: Mapping[str, str], content_type: str = ""
) -> RequestInfo:
    """Labels for one request, as kube-apiserver's RequestInfoFactory and its metrics
    (CleanVerb, CleanScope) would give them. `path` is the route's template
    (`/api/v1/namespaces/{namespace}/pods/{name}`) or, for a path no route matched,
    "" (nothing of it is recorded)."""
    method = method.upper() if method.upper() in METHODS else "other"  # as kube-apiserver
    dry_run = "All" if query.get("dryRun") else ""
    parts = [p for p in path.split("/") if p]
    if len(parts) >= 2 and parts[0] == "api":
        group, version, rest = "", parts[1], parts[2:]
    elif len(parts) >= 3 and parts[0] == "apis":
        group, version, rest = parts[1], parts[2], parts[3:]
    else:  # a non-resource path (/healthz, /version, /api, /apis/apps, /openapi/v3 ...)
        return RequestInfo(method, subresource=path, dry_run=dry_run)
    if not rest:  # a group version's discovery document
        return RequestInfo(method, subresource=path, dry_run=dry_run)
    namespace = False
    if rest[0] == "namespaces" and len(rest) >= 3 and rest[2] not in NAMESPACE_SUBRESOURCES:
        namespace, rest = True, rest[2:]  # a namespaced resource (else: a namespace itself)
    resource = rest[0]
    named = len(rest) >= 2
    subresource = rest[2] if len(rest) >= 3 else ""
    if method == "GET" and _watching(query):
        verb = "WATCH"
    elif subresource in CONNECT_SUBRESOURCES:
        verb = "CONNECT"
    elif method == "GET":
        verb = "GET" if named else "LIST"
    elif method == "DELETE" and not named:
        verb = "DELETECOLLECTION"
    elif method == "PATCH" and content_type == APPLY_PATCH:
        verb = "APPLY"
    else:
        verb = method
    if named or method == "POST":
        scope = "resource"
    elif namespace:
        scope = "namespace"
    else:
        scope = "cluster"
    return RequestInfo(verb, group, version, resource, subresource, scope, dry_run)


# -- the text format -------------------------------------------------------------


def escape(value: str) -> str:
    """A label value as the text format writes it."""
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _number(value: float) -> str:
    if value == math.inf:
        return "+Inf"
    if float(value).is_integer() and abs(value) < 1e15:
        return str(int(value))
    return repr(float(value))


def _labels(pairs: Iterable[tuple[str, str]]) -> str:
    """`{a="x",b="y"}` with the names sorted, as client_golang writes them."""
    return ",".join(f'{name}="{escape(value)}"' for name, value in sorted(pairs))


class _Histogram:
    __slots__ = ("counts", "sum")

    def __init__(self) -> None:
        self.counts = [0] * (len(DURATION_BUCKETS) + 1)  # per bucket; the last is +Inf
        self.sum = 0.0

    def observe(self, value: float) -> None:
        self.counts[bisect_left(DURATION_BUCKETS, value)] += 1
        self.sum += value

    def lines(self, name: str, labels: str) -> Iterable[str]:
        total = 0
        for bound, count in zip(DURATION_BUCKETS, self.counts, strict=False):
            total += count
            yield f'{name}_bucket{{{labels},le="{_number(bound)}"}} {total}'
        total += self.counts[-1]
        yield f'{name}_bucket{{{labels},le="+Inf"}} {total}'
        yield f"{name}_sum{{{labels}}} {_number(self.sum)}"
        yield f"{name}_count{{{labels}}} {total}"


class Metrics:
    """The counts, histograms and gauges of one API server."""

    def __init__(self) -> None:
        self.requests: dict[tuple[RequestInfo, int], int] = {}
        self.durations: dict[RequestInfo, _Histogram] = {}
        self.long_running: dict[RequestInfo, int] = {}
        self.inflight = {"readOnly": 0, "mutating": 0}
        self.watch_events: dict[tuple[str, str, str], int] = {}

    def started(self, info: RequestInfo) -> None:
        """A request began (the gauges count it until `finished`)."""
        self.inflight["mutating" if info.mutating else "readOnly"] += 1
        if info.long_running:
            self.long_running[info] = self.long_running.get(info, 0) + 1

    def finished(self, info: RequestInfo, code: int, seconds: float) -> None:
        """A request ended with `code` after `seconds`."""
        self.inflight["mutating" if info.mutating else "readOnly"] -= 1
        if info.long_running:
            self.long_running[info] -= 1
        key = (info, code)
        self.requests[key] = self.requests.get(key, 0) + 1
        histogram = self.durations.get(info)
        if histogram is None:
            histogram = self.durations[info] = _Histogram()
        histogram.observe(seconds)

    def sent(self, res: Resource, count: int) -> None:
        """`count` watch events of `res` went to a watcher."""
        key = (res.group, res.version, res.plural)
        self.watch_events[key] = self.watch_events.get(key, 0) + count

    def render(self) -> str:
        """Everything, in Prometheus' text format."""
        out: list[str] = []

        def family(name: str, kind: str, text: str) -> None:
            out.append(f"# HELP {name} {text}")
            out.append(f"# TYPE {name} {kind}")

        def request_labels(info: RequestInfo) -> list[tuple[str, str]]:
            return [("component", COMPONENT), *((k, getattr(info, k)) for k in REQUEST_LABELS)]

        family(
            "apiserver_request_total",
            "counter",
            "[STABLE] Counter of apiserver requests broken out for each verb, dry run value, "
            "group, version, resource, scope, component, and HTTP response code.",
        )
        for (info, code), count in sorted(self.requests.items(), key=_sort_key):
            labels = _labels([*request_labels(info), ("code", str(code))])
            out.append(f"apiserver_request_total{{{labels}}} {count}")
        family(
            "apiserver_request_duration_seconds",
            "histogram",
            "[STABLE] Response latency distribution in seconds for each verb, dry run value, "
            "group, version, resource, subresource, scope and component.",
        )
        for info, histogram in sorted(self.durations.items(), key=_sort_key):
            out.extend(
                histogram.lines("apiserver_request_duration_seconds", _labels(request_labels(info)))
            )
        family(
            "apiserver_longrunning_requests",
            "gauge",
            "[STABLE] Gauge of all active long-running apiserver requests broken out by verb, "
            "group, version, resource, scope and component. Not all requests are tracked this way.",
        )
        for info, count in sorted(self.long_running.items(), key=_sort_key):
            labels = _labels((k, v) for k, v in request_labels(info) if k != "dry_run")
            out.append(f"apiserver_longrunning_requests{{{labels}}} {count}")
        family(
            "apiserver_current_inflight_requests",
            "gauge",
            "[STABLE] Maximal number of currently used inflight request limit of this "
            "apiserver per request kind in last second.",
        )
        for kind, count in sorted(self.inflight.items()):
            out.append(f'apiserver_current_inflight_requests{{request_kind="{kind}"}} {count}')
        family(
            "apiserver_watch_events_total",
            "counter",
            "[ALPHA] Number of events sent in watch clients",
        )
        for (group, version, resource), count in sorted(self.watch_events.items()):
            labels = _labels([("group", group), ("version", version), ("resource", resource)])
            out.append(f"apiserver_watch_events_total{{{labels}}} {count}")
        return "\n".join(out) + "\n"


def _sort_key(item: tuple) -> tuple:
    key = item[0]
    info, code = key if isinstance(key, tuple) else (key, 0)
    return (*(getattr(info, k) for k in REQUEST_LABELS), code)


# -- the application's side ---------------------------------------------------------

METRICS = web.AppKey("metrics", Metrics)


def _route_path(request: web.Request) -> str:
    """The template of the route that matched (bounded), or "" if none did."""
    route = request.match_info.route
    resource = route.resource if route is not None else None
    if resource is None or request.match_info.http_exception is not None:
        return ""
    return resource.canonical


def middleware(metrics: Metrics) -> Callable:
    """Time and count every request (put it after authentication, before the errors
    middleware turns exceptions into Status responses)."""

    @web.middleware
    async def measure(
        request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        info = request_info(
            request.method, _route_path(request), request.query, request.content_type
        )
        metrics.started(info)
        started = time.perf_counter()
        code = 500
        try:
            response = await handler(request)
            code = response.status
            return response
        except web.HTTPException as exc:
            code = exc.status
            raise
        finally:
            metrics.finished(info, code, time.perf_counter() - started)

    return measure


def watch_events_sent(request: web.Request, res: Resource, count: int) -> None:
    """Count events a watch handler wrote (nothing if the app keeps no metrics)."""
    metrics = request.app.get(METRICS)
    if metrics is not None and count:
        metrics.sent(res, count)


async def get_metrics(request: web.Request) -> web.Response:
    body = request.app[METRICS].render()
    return web.Response(body=body.encode(), headers={"Content-Type": CONTENT_TYPE})


def add_routes(app: web.Application, metrics: Metrics) -> None:
    """Serve `metrics` (those `middleware(metrics)` keeps for `app`) at /metrics."""
    app[METRICS] = metrics
    app.router.add_get("/metrics", get_metrics)
