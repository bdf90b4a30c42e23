"""The lab's trace collector: Zipkin v2 and OTLP/HTTP JSON in, Zipkin's query API out.

`python -m mesh.collector --listen 0.0.0.0:9411 [--max-traces 5000]`, in the
role Zipkin (or Jaeger's collector) plays for Istio: sidecars POST Zipkin v2
JSON to `/api/v2/spans`, apps with an OpenTelemetry SDK may POST either that
(the Zipkin exporter) or OTLP/HTTP JSON to `/v1/traces`. Everything is kept
in memory, bounded (the least recently updated traces are evicted first), and
read back with Zipkin's `GET /api/v2/traces`, `/api/v2/trace/{id}`,
`/api/v2/services` and `/api/v2/spans`, which `netlab trace` uses.

Input is checked span by span: a malformed span is skipped and counted, a
body that is not a JSON list (or OTLP object) is a 400, never a crash.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import re
import signal
import sys
import time
from collections import Counter, OrderedDict
from collections.abc import Iterable, Mapping
from typing import Any

from aiohttp import web

from mesh.traceview import from_otlp

log = logging.getLogger("mesh.collector")

MAX_BODY = 8 << 20  # bytes of one POST, like Zipkin's default
MAX_INT = 2**63 - 1  # what Zipkin's int64 timestamps and durations hold
DEFAULT_LIMIT = 10  # Zipkin's default for /api/v2/traces
MAX_LIMIT = 10000
KINDS = frozenset(("CLIENT", "SERVER", "PRODUCER", "CONSUMER"))
_HEX16 = re.compile(r"[0-9a-f]{16}")
_TRACE_ID = re.compile(r"[0-9a-f]{16}(?:[0-9a-f]{16})?")
_PROTOBUF = ("application/x-protobuf", "application/protobuf")
_STRING_CAP = 64 << 10  # characters kept of one name, tag or annotation value


# -- validation -------------------------------------------------------------------


def trace_id(value: Any) -> str | None:
    """A trace id as 32 lower-hex digits (a 64-bit one left-padded), or None."""
    if not isinstance(value, str):
        return None
    value = value.lower()
    if _TRACE_ID.fullmatch(value) is None:
        return None
    value = value.rjust(32, "0")
    return None if value == "0" * 32 else value


def _span_id(value: Any) -> str | None:
    if not isinstance(value, str):
        return None
    value = value.lower()
    return value if _HEX16.fullmatch(value) and value != "0" * 16 else None


def _count(value: Any) -> int | None:
    """A non-negative int64, or None (bools and floats are not timestamps)."""
    if isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= MAX_INT:
        return value
    return None


def _text(value: Any) -> str:
    return value[:_STRING_CAP] if isinstance(value, str) else ""


def _tag_value(value: Any) -> str | None:
    if isinstance(value, str):
        return value[:_STRING_CAP]
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return str(value)[:_STRING_CAP]
    return None  # objects and lists are not Zipkin tag values


def _endpoint(value: Any) -> dict[str, Any] | None:
    if not isinstance(value, Mapping):
        return None
    out: dict[str, Any] = {}
    for key in ("serviceName", "ipv4", "ipv6"):
        if isinstance(value.get(key), str) and value[key]:
            out[key] = value[key][:256]
    port = value.get("port")
    if isinstance(port, int) and not isinstance(port, bool) and 0 < port <= 65535:
        out["port"] = port
    return out or None


def normalize_span(raw: Any) -> dict[str, Any] | None:
    """A Zipkin v2 span with only known, well-typed fields; None if it is unusable.

    Required: traceId (16 or 32 hex), id (16 hex). Optional fields with a
    wrong type make the span invalid where Zipkin would refuse it (parentId,
    kind, timestamp, duration) and are dropped otherwise (endpoints, odd tags).
    """
    if not isinstance(raw, Mapping):
        return None
    tid, sid = trace_id(raw.get("traceId")), _span_id(raw.get("id"))
    if tid is None or sid is None:
        return None
    span: dict[str, Any] = {"traceId": tid, "id": sid}
    if raw.get("parentId") not in (None, ""):
        parent = _span_id(raw.get("parentId"))
        if parent is None:
            return None
        span["parentId"] = parent
    if raw.get("kind") is not None:
        kind = raw["kind"].upper() if isinstance(raw["kind"], str) else None
        if kind not in KINDS:
            return None
        span["kind"] = kind
    span["name"] = _text(raw.get("name"))
    for key in ("timestamp", "duration"):
        if raw.get(key) is not None:
            value = _count(raw[key])
            if value is None:
                return None
            span[key] = value
    for key in ("localEndpoint", "remoteEndpoint"):
        endpoint = _endpoint(raw.get(key))
        if endpoint is not None:
            span[key] = endpoint
    annotations = raw.get("annotations")
    if isinstance(annotations, list):
        kept = [
            {"timestamp": ts, "value": _text(a.get("value"))}
            for a in annotations
            if isinstance(a, Mapping) and (ts := _count(a.get("timestamp"))) is not None
        ]
        if kept:
            span["annotations"] = kept
    tags = raw.get("tags")
    span["tags"] = {}
    if isinstance(tags, Mapping):
        for key, value in tags.items():
            text = _tag_value(value)
            if isinstance(key, str) and text is not None:
                span["tags"][key[:256]] = text
    for key in ("shared", "debug"):
        if raw.get(key) is True:
            span[key] = True
    return span


def _service(span: Mapping[str, Any]) -> str:
    return span.get("localEndpoint", {}).get("serviceName", "")


# -- the store ----------------------------------------------------------------------


class _Trace:
    __slots__ = ("spans", "keys", "latest", "seq", "ordered")

    def __init__(self) -> None:
        self.spans: list[dict[str, Any]] = []
        self.keys: set[tuple[str, str | None, str]] = set()
        self.latest = 0  # the latest span timestamp (µs); 0 if none had one
        self.seq = 0  # arrival order of the last span added
        self.ordered = True


class TraceStore:
    """Traces in memory, at most `max_traces` and `max_spans` spans in all.

    The same (id, kind, serviceName) reported twice is kept once; a client
    and a server sharing a span id (Zipkin's `shared`) are two spans.
    """

    def __init__(self, max_traces: int = 5000, max_spans: int = 500_000) -> None:
        self.max_traces = max(1, int(max_traces))
        self.max_spans = max(1, int(max_spans))
        self._traces: OrderedDict[str, _Trace] = OrderedDict()  # least recently updated first
        self._span_count = 0
        self._seq = 0
        self._services: Counter[str] = Counter()
        self._names: Counter[tuple[str, str]] = Counter()
        self.accepted = 0
        self.invalid = 0
        self.duplicates = 0
        self.evicted = 0

    def __len__(self) -> int:
        return len(self._traces)

    @property
    def span_count(self) -> int:
        return self._span_count

    def add(self, spans: Iterable[Any]) -> tuple[int, int]:
        """Validate and keep `spans`; (accepted, invalid). Duplicates count as accepted."""
        accepted = invalid = 0
        for raw in spans:
            span = normalize_span(raw)
            if span is None:
                invalid += 1
                continue
            accepted += 1
            self._keep(span)
        self.accepted += accepted
        self.invalid += invalid
        self._evict()
        return accepted, invalid

    def _keep(self, span: dict[str, Any]) -> None:
        tid = span["traceId"]
        trace = self._traces.get(tid)
        if trace is None:
            trace = self._traces[tid] = _Trace()
        else:
            self._traces.move_to_end(tid)
        service = _service(span)
        key = (span["id"], span.get("kind"), service)
        if key in trace.keys:
            self.duplicates += 1
            return
        trace.keys.add(key)
        if trace.spans and _sort_key(trace.spans[-1]) > _sort_key(span):
            trace.ordered = False
        trace.spans.append(span)
        self._seq += 1
        trace.seq = self._seq
        trace.latest = max(trace.latest, span.get("timestamp", 0))
        self._span_count += 1
        self._services[service] += 1
        self._names[(service, span["name"])] += 1

    def _evict(self) -> None:
        while self._traces and (
            len(self._traces) > self.max_traces or self._span_count > self.max_spans
        ):
            _, trace = self._traces.popitem(last=False)
            self.evicted += 1
            self._span_count -= len(trace.spans)
            for span in trace.spans:
                service = _service(span)
                _decrement(self._services, service)
                _decrement(self._names, (service, span["name"]))

    def trace(self, tid: str) -> list[dict[str, Any]] | None:
        """The spans of one trace, by start time; None if unknown."""
        normalized = trace_id(tid)
        found = self._traces.get(normalized) if normalized else None
        return None if found is None else self._sorted(found)

    def _sorted(self, trace: _Trace) -> list[dict[str, Any]]:
        if not trace.ordered:
            trace.spans.sort(key=_sort_key)
            trace.ordered = True
        return list(trace.spans)

    def traces(
        self,
        limit: int = DEFAULT_LIMIT,
        service: str | None = None,
        end_ts: int | None = None,
        lookback: int | None = None,
    ) -> list[list[dict[str, Any]]]:
        """The most recent traces first (latest span start, then arrival).

        `end_ts` and `lookback` are milliseconds, as in Zipkin's API: a trace
        is listed if one of its spans started in (end_ts - lookback, end_ts].
        Without either, no time window applies.
        """
        window: tuple[int, int] | None = None
        if end_ts is not None or lookback is not None:
            end = end_ts if end_ts is not None else int(time.time() * 1000)
            back = lookback if lookback is not None else end
            window = ((end - back) * 1000, end * 1000)
        candidates = sorted(self._traces.values(), key=lambda t: (t.latest, t.seq), reverse=True)
        out = []
        for trace in candidates:
            if len(out) >= limit:
                break
            if service and not any(_service(s) == service for s in trace.spans):
                continue
            if window and not any(
                window[0] < s.get("timestamp", -1) <= window[1] for s in trace.spans
            ):
                continue
            out.append(self._sorted(trace))
        return out

    def services(self) -> list[str]:
        return sorted(s for s in self._services if s)

    def span_names(self, service: str) -> list[str]:
        return sorted({name for (svc, name) in self._names if svc == service and name})

    def stats(self) -> dict[str, int]:
        return {
            "traces": len(self._traces),
            "spans": self._span_count,
            "accepted": self.accepted,
            "invalid": self.invalid,
            "duplicates": self.duplicates,
            "evicted": self.evicted,
        }


def _sort_key(span: Mapping[str, Any]) -> tuple[int, int]:
    ts = span.get("timestamp")
    return (0, ts) if ts is not None else (1, 0)


def _decrement(counter: Counter, key: Any) -> None:
    counter[key] -= 1
    if counter[key] <= 0:
        del counter[key]


# -- the HTTP API ---------------------------------------------------------------------

STORE: web.AppKey[TraceStore] = web.AppKey("store", TraceStore)


def make_app(store: TraceStore) -> web.Application:
    app = web.Application(client_max_size=MAX_BODY)
    app[STORE] = store
    app.router.add_post("/api/v2/spans", _post_zipkin)
    app.router.add_post("/v1/traces", _post_otlp)
    app.router.add_get("/api/v2/traces", _get_traces)
    app.router.add_get("/api/v2/trace/{trace_id}", _get_trace)
    app.router.add_get("/api/v2/services", _get_services)
    app.router.add_get("/api/v2/spans", _get_span_names)
    app.router.add_get("/health", _health)
    return app


def _bad(message: str, status: int = 400) -> web.Response:
    return web.Response(status=status, text=message + "\n")


def _is_protobuf(request: web.Request) -> bool:
    return request.content_type.lower() in _PROTOBUF


async def _json_body(request: web.Request) -> Any:
    """The body parsed as JSON; raises a 400 (or aiohttp's 413) response otherwise."""
    body = await request.read()
    try:
        return json.loads(body)
    except (ValueError, RecursionError) as exc:  # UnicodeDecodeError is a ValueError
        reason = "not UTF-8" if isinstance(exc, UnicodeDecodeError) else "not valid JSON"
        raise web.HTTPBadRequest(text=f"the body is {reason}: send a JSON document\n") from None


async def _post_zipkin(request: web.Request) -> web.Response:
    if _is_protobuf(request):
        return _bad(
            "this collector takes Zipkin v2 JSON only (Content-Type: application/json)", 415
        )
    doc = await _json_body(request)
    if not isinstance(doc, list):
        return _bad("a Zipkin v2 body is a JSON list of spans")
    accepted, invalid = request.app[STORE].add(doc)
    if invalid:
        log.debug("skipped %d invalid spans of %d", invalid, accepted + invalid)
    return web.Response(status=202)


async def _post_otlp(request: web.Request) -> web.Response:
    if _is_protobuf(request):
        return _bad(
            "this collector takes OTLP/HTTP JSON only: send Content-Type application/json"
            " (OTEL_EXPORTER_OTLP_PROTOCOL=http/json)",
            415,
        )
    doc = await _json_body(request)
    try:
        spans, rejected = from_otlp(doc)
    except ValueError as exc:
        return _bad(f"not an OTLP/JSON traces request: {exc}")
    _, invalid = request.app[STORE].add(spans)
    rejected += invalid
    partial: dict[str, Any] = {}
    if rejected:
        partial = {"rejectedSpans": rejected, "errorMessage": f"{rejected} invalid spans skipped"}
    return web.json_response({"partialSuccess": partial})


def _query_int(request: web.Request, name: str) -> int | None:
    raw = request.query.get(name)
    if raw is None or raw == "":
        return None
    if not raw.isdigit() or len(raw) > 19:
        raise web.HTTPBadRequest(text=f"{name} must be a non-negative integer\n")
    return int(raw)


async def _get_traces(request: web.Request) -> web.Response:
    limit = _query_int(request, "limit")
    limit = DEFAULT_LIMIT if limit is None else max(1, min(MAX_LIMIT, limit))
    traces = request.app[STORE].traces(
        limit=limit,
        service=request.query.get("serviceName") or None,
        end_ts=_query_int(request, "endTs"),
        lookback=_query_int(request, "lookback"),
    )
    return web.json_response(traces)


async def _get_trace(request: web.Request) -> web.Response:
    raw = request.match_info["trace_id"]
    if trace_id(raw) is None:
        return _bad(f"{raw[:64]!r} is not a trace id (16 or 32 hex digits)")
    spans = request.app[STORE].trace(raw)
    if spans is None:
        return _bad(f"no trace {raw.lower()}", 404)
    return web.json_response(spans)


async def _get_services(request: web.Request) -> web.Response:
    return web.json_response(request.app[STORE].services())


async def _get_span_names(request: web.Request) -> web.Response:
    service = request.query.get("serviceName")
    if not service:
        return _bad("serviceName is required")
    return web.json_response(request.app[STORE].span_names(service))


async def _health(request: web.Request) -> web.Response:
    return web.json_response({"status": "UP", **request.app[STORE].stats()})


# -- the command ----------------------------------------------------------------------


def _address(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    if not port.isdigit() or not 0 <= int(port) <= 65535:
        raise argparse.ArgumentTypeError(f"{text!r} is not HOST:PORT")
    return (host.strip("[]") or "0.0.0.0", int(port))


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m mesh.collector", description=__doc__.split("\n")[0])
    p.add_argument("--listen", type=_address, default=("0.0.0.0", 9411), help="HOST:PORT")
    p.add_argument("--max-traces", type=int, default=5000, help="traces kept in memory")
    p.add_argument("--max-spans", type=int, default=500_000, help="spans kept in memory")
    p.add_argument("--log-level", default="info", choices=("debug", "info", "warning", "error"))
    args = p.parse_args(argv)
    if args.max_traces < 1 or args.max_spans < 1:
        p.error("--max-traces and --max-spans must be at least 1")
    return args


async def serve(host: str, port: int, store: TraceStore, stop: asyncio.Event) -> None:
    """Serve until `stop` is set."""
    runner = web.AppRunner(make_app(store), access_log=None, handle_signals=False)
    await runner.setup()
    try:
        site = web.TCPSite(runner, host, port)
        await site.start()
        bound = ", ".join(f"{a[0]}:{a[1]}" for a in runner.addresses)
        log.info("listening on %s (max %d traces)", bound, store.max_traces)
        await stop.wait()
    finally:
        await runner.cleanup()


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(
        stream=sys.stderr, level=args.log_level.upper(), format="collector: %(message)s"
    )
    store = TraceStore(args.max_traces, args.max_spans)

    async def go() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await serve(*args.listen, store, stop)

    try:
        asyncio.run(go())
    except OSError as exc:  # cannot bind
        log.error("%s", exc)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
