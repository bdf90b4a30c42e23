"""Istio's standard metrics, kept per label set and rendered as Prometheus text
(exposition format 0.0.4), plus a small parser of that text for `netlab top`.

Per request the cost is one tuple of the varying values, one dict lookup and a
few bisects; a label string is built once, when a label set is first seen.
"""

from __future__ import annotations

import math
from bisect import bisect_left
from collections.abc import Sequence
from typing import TypeVar

from mesh.table import Workload

DURATION_BUCKETS_MS = (
    0.5, 1, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000, 30000, 60000,
    300000, 600000, 1800000, 3600000,
)  # fmt: skip
BYTES_BUCKETS = (1, 10, 100, 1000, 10000, 100000, 1000000, 10000000, 100000000)

REQUESTS = "istio_requests_total"
DURATION = "istio_request_duration_milliseconds"
REQUEST_BYTES = "istio_request_bytes"
RESPONSE_BYTES = "istio_response_bytes"
TCP_SENT = "istio_tcp_sent_bytes_total"
TCP_RECEIVED = "istio_tcp_received_bytes_total"
TCP_OPENED = "istio_tcp_connections_opened_total"
TCP_CLOSED = "istio_tcp_connections_closed_total"

_HELP = {
    REQUESTS: "Total requests.",
    DURATION: "Request duration in milliseconds.",
    REQUEST_BYTES: "Request sizes in bytes (headers and body).",
    RESPONSE_BYTES: "Response sizes in bytes (headers and body).",
    TCP_SENT: "Bytes sent on TCP connections (to the destination).",
    TCP_RECEIVED: "Bytes received on TCP connections (from the destination).",
    TCP_OPENED: "TCP connections opened.",
    TCP_CLOSED: "TCP connections closed.",
}
UNKNOWN = "unknown"
CANONICAL_LABELS = ("service.istio.io/canonical-name", "app.kubernetes.io/name", "app")


def escape(value: str) -> str:
    """A label value as the text format writes it."""
    if "\\" in value or '"' in value or "\n" in value:
        value = value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
    return value


def _fmt(value: float) -> str:
    if value == math.inf:
        return "+Inf"
    if value == -math.inf:
        return "-Inf"
    if value != value:
        return "NaN"
    if float(value).is_integer() and abs(value) < 1e15:
        return str(int(value))
    return repr(float(value))


def _peer(w: Workload | None) -> tuple[str, str, str, str, str]:
    """(workload, namespace, app, version, canonical service) of one side."""
    if w is None:
        return (UNKNOWN,) * 5
    labels = w.labels
    name = w.app or w.pod or UNKNOWN
    canonical = next((labels[k] for k in CANONICAL_LABELS if labels.get(k)), name)
    return (
        name,
        w.namespace or UNKNOWN,
        labels.get("app") or name,
        w.version or labels.get("version") or UNKNOWN,
        canonical,
    )


def _who(w: Workload | None) -> tuple[str, str, str] | None:
    """What of a workload its series are told apart by."""
    return None if w is None else (w.namespace, w.app, w.version)


class _Histogram:
    __slots__ = ("bounds", "counts", "sum")

    def __init__(self, bounds: Sequence[float]) -> None:
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)  # per bucket, not cumulative; last is +Inf
        self.sum = 0.0

    def observe(self, value: float) -> None:
        self.counts[bisect_left(self.bounds, value)] += 1
        self.sum += value

    def lines(self, name: str, labels: str, out: list[str]) -> None:
        total = 0
        for bound, count in zip(self.bounds, self.counts, strict=False):
            total += count
            out.append(f'{name}_bucket{{{labels},le="{_fmt(bound)}"}} {total}')
        total += self.counts[-1]
        out.append(f'{name}_bucket{{{labels},le="+Inf"}} {total}')
        out.append(f"{name}_sum{{{labels}}} {_fmt(self.sum)}")
        out.append(f"{name}_count{{{labels}}} {total}")


class _Series:
    __slots__ = (
        "labels",
        "text",
        "requests",
        "errors",
        "duration",
        "request_bytes",
        "response_bytes",
    )

    def __init__(self, labels: dict[str, str], code: int) -> None:
        self.labels = labels
        self.text = ",".join(f'{k}="{escape(v)}"' for k, v in labels.items())
        self.requests = 0
        self.errors = code >= 500
        self.duration = _Histogram(DURATION_BUCKETS_MS)
        self.request_bytes = _Histogram(BYTES_BUCKETS)
        self.response_bytes = _Histogram(BYTES_BUCKETS)


class _TcpSeries:
    __slots__ = ("labels", "text", "sent", "received", "opened", "closed")

    def __init__(self, labels: dict[str, str]) -> None:
        self.labels = labels
        self.text = ",".join(f'{k}="{escape(v)}"' for k, v in labels.items())
        self.sent = self.received = self.opened = self.closed = 0


_S = TypeVar("_S", _Series, _TcpSeries)


class Metrics:
    def __init__(self, zone: str = "cluster.local") -> None:
        self.zone = zone
        self._http: dict[tuple, _Series] = {}
        self._tcp: dict[tuple, _TcpSeries] = {}

    @staticmethod
    def _unique(table: dict, series: _S) -> _S:
        """Two keys whose labels come out the same (a None workload and an empty one)
        share one series: the text format must not repeat a label set."""
        for other in table.values():
            if other.text == series.text:
                return other
        return series

    def _labels(
        self,
        reporter: str,
        source: Workload | None,
        destination: Workload | None,
        dest_namespace: str,
        dest_service: str,
        protocol: str,
        flags: str,
        code: int | None,
    ) -> dict[str, str]:
        s_name, s_ns, s_app, s_version, s_canonical = _peer(source)
        d_name, d_ns, d_app, d_version, d_canonical = _peer(destination)
        if dest_service and dest_namespace:
            fqdn = f"{dest_service}.{dest_namespace}.svc.{self.zone}"
        else:
            fqdn = dest_service or UNKNOWN
        labels = {
            "reporter": reporter,
            "source_workload": s_name,
            "source_workload_namespace": s_ns,
            "source_principal": UNKNOWN,
            "source_app": s_app,
            "source_version": s_version,
            "source_canonical_service": s_canonical,
            "destination_workload": d_name,
            "destination_workload_namespace": d_ns,
            "destination_principal": UNKNOWN,
            "destination_app": d_app,
            "destination_version": d_version,
            "destination_service": fqdn,
            "destination_service_name": dest_service or UNKNOWN,
            "destination_service_namespace": dest_namespace or UNKNOWN,
            "destination_canonical_service": d_canonical,
            "request_protocol": protocol,
        }
        if code is not None:
            labels["response_code"] = str(code)
        labels["response_flags"] = flags or "-"
        labels["connection_security_policy"] = "none"
        if code is not None:
            labels["grpc_response_status"] = ""
        return labels

    def record(
        self,
        reporter: str,
        source: Workload | None,
        destination: Workload | None,
        dest_namespace: str,
        dest_service: str,
        code: int,
        duration_s: float,
        request_bytes: int,
        response_bytes: int,
        flags: str = "-",
        protocol: str = "http",
    ) -> None:
        """One finished request (`reporter` "source" on the client side, "destination"
        on the server side)."""
        key = (
            reporter,
            _who(source),
            _who(destination),
            dest_namespace,
            dest_service,
            code,
            flags,
            protocol,
        )
        series = self._http.get(key)
        if series is None:
            labels = self._labels(
                reporter, source, destination, dest_namespace, dest_service, protocol, flags, code
            )
            series = self._http[key] = self._unique(self._http, _Series(labels, code))
        series.requests += 1
        series.duration.observe(duration_s * 1000.0)
        series.request_bytes.observe(request_bytes)
        series.response_bytes.observe(response_bytes)

    def record_tcp(
        self,
        reporter: str,
        source: Workload | None,
        destination: Workload | None,
        dest_namespace: str,
        dest_service: str,
        sent: int,
        received: int,
    ) -> None:
        """One closed TCP connection: its bytes, and one opened and one closed."""
        key = (reporter, _who(source), _who(destination), dest_namespace, dest_service)
        series = self._tcp.get(key)
        if series is None:
            labels = self._labels(
                reporter, source, destination, dest_namespace, dest_service, "tcp", "-", None
            )
            series = self._tcp[key] = self._unique(self._tcp, _TcpSeries(labels))
        series.sent += sent
        series.received += received
        series.opened += 1
        series.closed += 1

    def render(self) -> str:
        """Every family with its HELP and TYPE lines (families without samples too)."""
        out: list[str] = []
        http = list({id(s): s for s in self._http.values()}.values())  # aliases once
        tcp = list({id(t): t for t in self._tcp.values()}.values())

        def head(name: str, kind: str) -> None:
            out.append(f"# HELP {name} {_HELP[name]}")
            out.append(f"# TYPE {name} {kind}")

        head(REQUESTS, "counter")
        for s in http:
            out.append(f"{REQUESTS}{{{s.text}}} {s.requests}")
        for name, attr in (
            (DURATION, "duration"),
            (REQUEST_BYTES, "request_bytes"),
            (RESPONSE_BYTES, "response_bytes"),
        ):
            head(name, "histogram")
            for s in http:
                getattr(s, attr).lines(name, s.text, out)
        for name, attr in (
            (TCP_SENT, "sent"),
            (TCP_RECEIVED, "received"),
            (TCP_OPENED, "opened"),
            (TCP_CLOSED, "closed"),
        ):
            head(name, "counter")
            for t in tcp:
                out.append(f"{name}{{{t.text}}} {getattr(t, attr)}")
        return "\n".join(out) + "\n"

    def snapshot(self) -> list[dict]:
        """Per HTTP label set: labels, requests, errors (5xx), duration sum (ms) and count."""
        return [
            {
                "labels": dict(s.labels),
                "requests": s.requests,
                "errors": s.requests if s.errors else 0,
                "duration_ms_sum": s.duration.sum,
                "duration_count": s.requests,
            }
            for s in {id(s): s for s in self._http.values()}.values()
        ]


# -- the text format, parsed ------------------------------------------------------

_UNESCAPE = {"\\": "\\", '"': '"', "n": "\n"}


def _value(text: str) -> float | None:
    text = text.strip()
    if text in ("+Inf", "Inf", "+inf", "inf"):
        return math.inf
    if text in ("-Inf", "-inf"):
        return -math.inf
    try:
        return float(text)
    except ValueError:
        return None


def _parse_line(line: str) -> tuple[str, dict[str, str], float] | None:
    n = len(line)
    i = 0
    while i < n and (line[i].isalnum() or line[i] in "_:"):
        i += 1
    name = line[:i]
    if not name or name[0].isdigit():
        return None
    labels: dict[str, str] = {}
    if i < n and line[i] == "{":
        i += 1
        while True:
            while i < n and line[i] in " \t,":
                i += 1
            if i >= n:
                return None
            if line[i] == "}":
                i += 1
                break
            start = i
            while i < n and (line[i].isalnum() or line[i] == "_"):
                i += 1
            label = line[start:i]
            while i < n and line[i] in " \t":
                i += 1
            if not label or i + 1 >= n or line[i] != "=":
                return None
            i += 1
            while i < n and line[i] in " \t":
                i += 1
            if i >= n or line[i] != '"':
                return None
            i += 1
            chars: list[str] = []
            while i < n and line[i] != '"':
                c = line[i]
                if c == "\\" and i + 1 < n:
                    i += 1
                    c = _UNESCAPE.get(line[i], "\\" + line[i])
                chars.append(c)
                i += 1
            if i >= n:
                return None  # unterminated value
            i += 1
            labels[label] = "".join(chars)
    elif i < n and line[i] not in " \t":
        return None  # a character no metric name has
    rest = line[i:].split()
    if not rest or len(rest) > 2:
        return None
    value = _value(rest[0])
    if value is None:
        return None
    return name, labels, value


def parse_text(text: str) -> list[tuple[str, dict[str, str], float]]:
    """(name, labels, value) of every sample; comments, blank and malformed lines skipped."""
    samples = []
    for raw in text.split("\n"):  # only \n ends a line: a \r may sit in a label value
        line = raw.strip()
        if not line or line[0] == "#":
            continue
        sample = _parse_line(line)
        if sample is not None:
            samples.append(sample)
    return samples
