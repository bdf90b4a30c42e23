"""Traces as people read them (`netlab trace`), and as other tools import them.

Pure functions over Zipkin v2 span dicts (what the collector stores and
answers): `summarize` and `trace_list` for the list of recent traces,
`waterfall` for one trace, `to_zipkin` / `to_otlp` for exports, and
`from_otlp`, the other direction, which the collector uses for OTLP/HTTP
JSON input, so both conversions live here.

Spans come from many reporters (sidecars, apps with an OpenTelemetry SDK), so
nothing here trusts their shape: a span missing its timestamp, duration or
tags, a parent that never arrived, or parent links that form a cycle is
drawn as well as it can be, never raised about.
"""

from __future__ import annotations

import base64
import binascii
import json
import time
import zlib
from collections.abc import Iterable, Mapping
from typing import Any

# -- reading spans defensively ------------------------------------------------------


def _int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _str(value: Any) -> str:
    return value if isinstance(value, str) else ""


def _tags(span: Mapping[str, Any]) -> Mapping[str, Any]:
    tags = span.get("tags")
    return tags if isinstance(tags, Mapping) else {}


def _service(span: Mapping[str, Any]) -> str:
    endpoint = span.get("localEndpoint")
    return _str(endpoint.get("serviceName")) if isinstance(endpoint, Mapping) else ""


def _status(span: Mapping[str, Any]) -> int | None:
    value = _tags(span).get("http.status_code")
    try:
        return int(str(value))
    except ValueError:
        return None


def is_error(span: Mapping[str, Any]) -> bool:
    """Zipkin's reading: an `error` tag (any value but "false"), or an HTTP 5xx."""
    error = _tags(span).get("error")
    if error is not None and str(error).lower() not in ("", "false"):
        return True
    status = _status(span)
    return status is not None and status >= 500


def _spans(spans: Iterable[Any]) -> list[Mapping[str, Any]]:
    return [s for s in spans if isinstance(s, Mapping)]


def _start_end(spans: list[Mapping[str, Any]]) -> tuple[int | None, int | None]:
    starts = [t for s in spans if (t := _int(s.get("timestamp"))) is not None]
    if not starts:
        return None, None
    ends = [
        _int(s.get("timestamp")) + max(0, _int(s.get("duration")) or 0)
        for s in spans
        if _int(s.get("timestamp")) is not None
    ]
    return min(starts), max(ends)


# -- summaries and the list of traces -------------------------------------------


def _root(spans: list[Mapping[str, Any]]) -> Mapping[str, Any] | None:
    """The earliest span whose parent is not in the trace (the earliest span if none)."""
    if not spans:
        return None
    ids = {s.get("id") for s in spans}
    roots = [
        s
        for s in spans
        if not s.get("parentId") or s.get("parentId") not in ids or s.get("parentId") == s.get("id")
    ]
    return min(roots or spans, key=_order)


def _order(span: Mapping[str, Any]) -> tuple[int, int]:
    ts = _int(span.get("timestamp"))
    return (0, ts) if ts is not None else (1, 0)


def summarize(traces: list[list[dict]]) -> list[dict]:
    """One line's worth per trace, in the order given (the collector's: newest first)."""
    out = []
    for trace in traces:
        spans = _spans(trace) if isinstance(trace, list) else []
        if not spans:
            continue
        root = _root(spans) or {}
        start, end = _start_end(spans)
        out.append(
            {
                "traceId": _str(root.get("traceId")) or _str(spans[0].get("traceId")),
                "root": _service(root),
                "name": _str(root.get("name")),
                "start": start or 0,
                "duration": (end - start) if start is not None and end is not None else 0,
                "spans": len(spans),
                "services": sorted({svc for s in spans if (svc := _service(s))}),
                "errors": sum(1 for s in spans if is_error(s)),
            }
        )
    return out


def _clock(us: int) -> str:
    try:
        local = time.localtime(us / 1e6)
    except (OverflowError, OSError, ValueError):
        return "--:--:--.---"
    return time.strftime("%H:%M:%S", local) + f".{(us // 1000) % 1000:03d}"


def trace_list(summaries: list[dict]) -> str:
    """The recent traces as a fixed-width table."""
    if not summaries:
        return (
            "no traces yet: meshed pods ship their spans to the collector every 0.5 s;"
            " send a request through the mesh and look again"
        )
    header = ["TRACE ID", "START", "DURATION", "SPANS", "ERRORS", "ROOT"]
    rows = [header]
    for s in summaries:
        root = " ".join(part for part in (s.get("root"), s.get("name")) if part) or "?"
        rows.append(
            [
                str(s.get("traceId", "")),
                _clock(int(s.get("start") or 0)),
                f"{(s.get('duration') or 0) / 1000:.2f}ms",
                str(s.get("spans", 0)),
                str(s.get("errors", 0)),
                root,
            ]
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    right = {2, 3, 4}  # numbers line up on the right
    lines = []
    for row in rows:
        cells = [
            cell.rjust(widths[i]) if i in right else cell.ljust(widths[i])
            for i, cell in enumerate(row)
        ]
        lines.append("  ".join(cells).rstrip())
    return "\n".join(lines)


# -- the waterfall -------------------------------------------------------------------

ARROWS = {"CLIENT": "→", "SERVER": "←", "PRODUCER": "⇢", "CONSUMER": "⇠"}
_RESET = "\x1b[0m"
_DIM = "\x1b[2m"
_RED = "\x1b[31m"
_YELLOW = "\x1b[33m"
_PALETTE = ("\x1b[36m", "\x1b[32m", "\x1b[35m", "\x1b[34m", "\x1b[96m", "\x1b[92m", "\x1b[95m")


def tree(spans: list[dict]) -> list[tuple[int, Mapping[str, Any]]]:
    """(depth, span) in tree order: children under their parent, siblings by start time.

    A span whose parent is missing starts a subtree at depth 0; so does a span
    caught in a parent cycle (each span appears exactly once). With Zipkin's
    shared ids, a SERVER span that shares its CLIENT's id sits under that
    client, and children of the id sit under the server.
    """
    items = _spans(spans)
    by_id: dict[Any, list[int]] = {}
    for i, s in enumerate(items):
        by_id.setdefault(s.get("id"), []).append(i)

    def holder(span_id: Any, exclude: int) -> int | None:
        """The span that children of `span_id` hang under: its server side if shared."""
        found = [j for j in by_id.get(span_id, ()) if j != exclude]
        if not found:
            return None
        servers = [j for j in found if items[j].get("kind") in ("SERVER", "CONSUMER")]
        return (servers or found)[0]

    parent: dict[int, int | None] = {}
    for i, s in enumerate(items):
        p = None
        if s.get("shared") is True or s.get("kind") in ("SERVER", "CONSUMER"):
            clients = [
                j
                for j in by_id.get(s.get("id"), ())
                if j != i and items[j].get("kind") in ("CLIENT", "PRODUCER")
            ]
            p = clients[0] if clients else None
        if p is None and s.get("parentId") and s.get("parentId") != s.get("id"):
            p = holder(s.get("parentId"), i)
        parent[i] = p

    children: dict[int | None, list[int]] = {}
    for i, p in parent.items():
        children.setdefault(p, []).append(i)
    for kids in children.values():
        kids.sort(key=lambda j: (_order(items[j]), j))

    out: list[tuple[int, Mapping[str, Any]]] = []
    seen: set[int] = set()

    def walk(start: int) -> None:
        stack = [(start, 0)]
        while stack:
            i, depth = stack.pop()
            if i in seen:
                continue
            seen.add(i)
            out.append((depth, items[i]))
            stack.extend((j, depth + 1) for j in reversed(children.get(i, ())) if j not in seen)

    for i in children.get(None, ()):
        walk(i)
    while len(seen) < len(items):  # what only a cycle reaches: start at its earliest span
        rest = sorted(
            (i for i in range(len(items)) if i not in seen), key=lambda j: _order(items[j])
        )
        walk(rest[0])
    return out


def _color_of(service: str) -> str:
    return _PALETTE[zlib.crc32(service.encode()) % len(_PALETTE)]


def _fit(text: str, width: int) -> str:
    if len(text) <= width:
        return text.ljust(width)
    return text[: max(0, width - 1)] + "…"


def waterfall(spans: list[dict], width: int = 100, color: bool = False) -> str:
    """One trace as a header line and one line per span, with a timeline bar each."""
    rows = tree(spans if isinstance(spans, list) else [])
    if not rows:
        return "no spans in this trace"
    items = [s for _, s in rows]
    start, end = _start_end(items)
    total = (end - start) if start is not None and end is not None else 0
    services = sorted({svc for s in items if (svc := _service(s))})
    trace_id = next((t for s in items if (t := _str(s.get("traceId")))), "?")
    header = (
        f"trace {trace_id}  {total / 1000:.2f} ms  {len(items)} span"
        f"{'' if len(items) == 1 else 's'}  services: {', '.join(services) or '-'}"
    )

    labels, details = [], []
    for depth, s in rows:
        tags = _tags(s)
        pod, node = _str(tags.get("netlab.pod")), _str(tags.get("netlab.node"))
        where = (pod + (f" @{node}" if node else "")) if pod else _str(s.get("name"))
        labels.append(
            (
                "  " * min(depth, 20),
                ARROWS.get(_str(s.get("kind")), "·"),
                _service(s) or "?",
                where,
            )
        )
        status = _status(s)
        limited = status == 429 or _str(tags.get("netlab.rate_limited")) == "true"
        bad = is_error(s) or limited
        duration = _int(s.get("duration"))
        details.append(
            (
                (str(status) if status is not None else "-") + ("!" if bad else ""),
                f"{duration / 1000:.2f}ms" if duration is not None else "?",
                bad,
                limited,
            )
        )

    plain = [f"{ind}{arrow} {svc}  {where}".rstrip() for ind, arrow, svc, where in labels]
    label_w = min(max(len(p) for p in plain), max(24, width // 2))
    status_w = max(len(d[0]) for d in details)
    dur_w = max(len(d[1]) for d in details)
    bar_w = max(10, width - label_w - status_w - dur_w - 8)

    lines = [header]
    for (ind, arrow, svc, _where), text, (status, dur, bad, limited), (_, s) in zip(
        labels, plain, details, rows, strict=True
    ):
        bar = _bar(s, start, total, bar_w)
        label = _fit(text, label_w)
        status_cell = status.rjust(status_w)
        if color:
            hue = _color_of(svc)
            head = f"{ind}{arrow} "
            if label.startswith(head):  # not cut short inside the indentation
                rest = label[len(head) :]
                cut = min(len(svc), len(rest))
                label = head + hue + rest[:cut] + _RESET + _DIM + rest[cut:] + _RESET
            if bad:
                status_cell = (
                    (_YELLOW if limited and not is_error(s) else _RED) + status_cell + _RESET
                )
            bar = hue + bar + _RESET
        lines.append(f"{label}  {status_cell}  {dur.rjust(dur_w)}  │{bar}│")
    return "\n".join(lines)


def _bar(span: Mapping[str, Any], start: int | None, total: int, width: int) -> str:
    ts = _int(span.get("timestamp"))
    if ts is None or start is None:
        return " " * width
    duration = max(0, _int(span.get("duration")) or 0)
    if total <= 0:
        offset, length = 0, 1
    else:
        offset = min(width - 1, max(0, int((ts - start) * width / total)))
        length = max(1, round(duration * width / total))
        length = min(length, width - offset)
    glyph = "━" if span.get("kind") in ("CLIENT", "PRODUCER") else "█"
    return " " * offset + glyph * length + " " * (width - offset - length)


# -- exports and the OTLP conversion -------------------------------------------------

KIND_TO_OTLP = {"SERVER": 2, "CLIENT": 3, "PRODUCER": 4, "CONSUMER": 5}
OTLP_TO_KIND = {v: k for k, v in KIND_TO_OTLP.items()}
OTLP_KIND_NAMES = {
    "SPAN_KIND_UNSPECIFIED": 0,
    "SPAN_KIND_INTERNAL": 1,
    "SPAN_KIND_SERVER": 2,
    "SPAN_KIND_CLIENT": 3,
    "SPAN_KIND_PRODUCER": 4,
    "SPAN_KIND_CONSUMER": 5,
}
STATUS_ERROR = 2
# Zipkin endpoints <-> OTLP span attributes (the semantic conventions Zipkin exporters read)
LOCAL_IP, LOCAL_PORT = "net.host.ip", "net.host.port"
PEER_SERVICE, PEER_IP, PEER_PORT = "peer.service", "net.peer.ip", "net.peer.port"
DEFAULT_SERVICE = "unknown_service"


def to_zipkin(traces: list[list[dict]]) -> list[dict]:
    """All spans in one flat list: Zipkin's import format (Jaeger reads it too)."""
    return [span for trace in traces for span in trace]


def to_otlp(traces: list[list[dict]]) -> dict:
    """OTLP/JSON `{"resourceSpans": [...]}`, one resource per serviceName.

    Endpoint addresses travel as `net.host.*` / `net.peer.*` / `peer.service`
    attributes; Zipkin's `shared` flag has no OTLP counterpart and is not kept.
    """
    groups: dict[str, list[dict]] = {}
    for span in (s for trace in traces for s in _spans(trace)):
        groups.setdefault(_service(span) or DEFAULT_SERVICE, []).append(_otlp_span(span))
    return {
        "resourceSpans": [
            {
                "resource": {"attributes": [_attr("service.name", service)]},
                "scopeSpans": [{"scope": {"name": "netlab.mesh"}, "spans": spans}],
            }
            for service, spans in groups.items()
        ]
    }


def _attr(key: str, value: str | int) -> dict:
    if isinstance(value, int):
        return {"key": key, "value": {"intValue": str(value)}}
    return {"key": key, "value": {"stringValue": value}}


def _otlp_span(span: Mapping[str, Any]) -> dict:
    ts = _int(span.get("timestamp")) or 0
    duration = max(0, _int(span.get("duration")) or 0)
    attributes = [_attr(str(k), str(v)) for k, v in _tags(span).items()]
    local = span.get("localEndpoint") if isinstance(span.get("localEndpoint"), Mapping) else {}
    remote = span.get("remoteEndpoint") if isinstance(span.get("remoteEndpoint"), Mapping) else {}
    for key, endpoint, fields in (
        (LOCAL_IP, local, ("ipv4", "ipv6")),
        (PEER_IP, remote, ("ipv4", "ipv6")),
        (PEER_SERVICE, remote, ("serviceName",)),
    ):
        value = next((v for f in fields if (v := _str(endpoint.get(f)))), "")
        if value:
            attributes.append(_attr(key, value))
    for key, endpoint in ((LOCAL_PORT, local), (PEER_PORT, remote)):
        if (port := _int(endpoint.get("port"))) is not None:
            attributes.append(_attr(key, port))
    out: dict[str, Any] = {
        "traceId": _str(span.get("traceId")),
        "spanId": _str(span.get("id")),
        "name": _str(span.get("name")),
        "kind": KIND_TO_OTLP.get(_str(span.get("kind")), 1),
        "startTimeUnixNano": str(ts * 1000),
        "endTimeUnixNano": str((ts + duration) * 1000 if ts else 0),
        "attributes": attributes,
        "status": {"code": STATUS_ERROR} if is_error(span) else {},
    }
    if parent := _str(span.get("parentId")):
        out["parentSpanId"] = parent
    annotations = span.get("annotations")
    if isinstance(annotations, list):
        out["events"] = [
            {"timeUnixNano": str(_int(a.get("timestamp")) * 1000), "name": _str(a.get("value"))}
            for a in annotations
            if isinstance(a, Mapping) and _int(a.get("timestamp")) is not None
        ]
    return out


def from_otlp(doc: Any) -> tuple[list[dict], int]:
    """OTLP/JSON traces -> (Zipkin v2 spans, how many spans were unusable).

    Ids are hex in OTLP/JSON (base64, protobuf's JSON mapping, is accepted
    too); kinds are ints or `SPAN_KIND_*` names; times are strings or ints of
    nanoseconds. Raises ValueError only when `doc` is not OTLP at all; the
    spans still need the collector's validation.
    """
    if not isinstance(doc, Mapping):
        raise ValueError("an OTLP/JSON body is an object with resourceSpans")
    resource_spans = doc.get("resourceSpans", [])
    if not isinstance(resource_spans, list):
        raise ValueError("resourceSpans is not a list")
    out: list[dict] = []
    rejected = 0
    for rs in resource_spans:
        if not isinstance(rs, Mapping):
            rejected += 1
            continue
        resource = rs.get("resource") if isinstance(rs.get("resource"), Mapping) else {}
        resource_tags = _otlp_attributes(resource.get("attributes"))
        service = resource_tags.pop("service.name", "") or DEFAULT_SERVICE
        scopes = rs.get("scopeSpans", rs.get("instrumentationLibrarySpans", []))
        for scope in scopes if isinstance(scopes, list) else [None]:
            spans = scope.get("spans") if isinstance(scope, Mapping) else None
            if not isinstance(spans, list):
                rejected += 1
                continue
            for raw in spans:
                span = _zipkin_span(raw, service, resource_tags)
                if span is None:
                    rejected += 1
                else:
                    out.append(span)
    return out, rejected


def _otlp_id(value: Any, size: int) -> str | None:
    """A hex id of `size` bytes; base64 accepted; '' or None -> None."""
    if not isinstance(value, str) or not value:
        return None
    if len(value) == 2 * size and all(c in "0123456789abcdefABCDEF" for c in value):
        return value.lower()
    try:
        raw = base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        return value  # left for the collector's validation to refuse
    return raw.hex() if len(raw) == size else value


def _nanos(value: Any) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value.isdigit() and len(value) <= 24:
        return int(value)
    raise ValueError("not a time in nanoseconds")


def _any_value(value: Any) -> Any:
    """An OTLP AnyValue as plain data."""
    if not isinstance(value, Mapping):
        return None
    for key in ("stringValue", "bytesValue"):
        if key in value:
            return _str(value[key])
    if "boolValue" in value:
        return bool(value["boolValue"])
    if "intValue" in value:
        raw = value["intValue"]
        try:
            return int(raw) if not isinstance(raw, bool | float) else None
        except (TypeError, ValueError):
            return None
    if "doubleValue" in value:
        raw = value["doubleValue"]
        return raw if isinstance(raw, int | float | str) and not isinstance(raw, bool) else None
    if "arrayValue" in value:
        items = (
            value["arrayValue"].get("values") if isinstance(value["arrayValue"], Mapping) else []
        )
        return [_any_value(v) for v in items] if isinstance(items, list) else []
    if "kvlistValue" in value:
        kv = value["kvlistValue"]
        pairs = kv.get("values") if isinstance(kv, Mapping) else []
        return {
            _str(p.get("key")): _any_value(p.get("value"))
            for p in (pairs if isinstance(pairs, list) else [])
            if isinstance(p, Mapping)
        }
    return None


def _tag_text(value: Any) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return str(value)
    return json.dumps(value, separators=(",", ":"), default=str)


def _otlp_attributes(attributes: Any) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for a in attributes if isinstance(attributes, list) else []:
        if isinstance(a, Mapping) and isinstance(a.get("key"), str):
            value = _any_value(a.get("value"))
            if value is not None:
                out[a["key"]] = value
    return out


def _zipkin_span(raw: Any, service: str, resource_tags: Mapping[str, Any]) -> dict | None:
    if not isinstance(raw, Mapping):
        return None
    try:
        start = _nanos(raw.get("startTimeUnixNano", 0)) or 0
        end = _nanos(raw.get("endTimeUnixNano", 0)) or 0
    except ValueError:
        return None
    attributes = _otlp_attributes(raw.get("attributes"))
    local: dict[str, Any] = {"serviceName": service}
    remote: dict[str, Any] = {}
    for key, endpoint, name in (
        (LOCAL_IP, local, "ip"),
        (LOCAL_PORT, local, "port"),
        (PEER_SERVICE, remote, "serviceName"),
        (PEER_IP, remote, "ip"),
        (PEER_PORT, remote, "port"),
    ):
        value = attributes.get(key)
        if name == "port" and isinstance(value, int) and not isinstance(value, bool):
            endpoint["port"] = value
        elif name == "ip" and isinstance(value, str) and value:
            endpoint["ipv6" if ":" in value else "ipv4"] = value
        elif name == "serviceName" and isinstance(value, str) and value:
            endpoint["serviceName"] = value
        else:
            continue
        del attributes[key]
    tags = {k: _tag_text(v) for k, v in resource_tags.items()}
    tags.update((k, _tag_text(v)) for k, v in attributes.items())
    status = raw.get("status") if isinstance(raw.get("status"), Mapping) else {}
    if status.get("code") in (STATUS_ERROR, "STATUS_CODE_ERROR"):
        tags.setdefault("error", "true")
        if message := _str(status.get("message")):
            tags.setdefault("otel.status_description", message)
    kind = raw.get("kind", 0)
    if isinstance(kind, str):
        kind = OTLP_KIND_NAMES.get(kind, 0)
    span: dict[str, Any] = {
        "traceId": _otlp_id(raw.get("traceId"), 16),
        "id": _otlp_id(raw.get("spanId"), 8),
    }
    if parent := _otlp_id(raw.get("parentSpanId"), 8):
        span["parentId"] = parent
    if isinstance(kind, int) and kind in OTLP_TO_KIND:
        span["kind"] = OTLP_TO_KIND[kind]
    span["name"] = _str(raw.get("name"))
    if start > 0:
        span["timestamp"] = start // 1000
        span["duration"] = max(0, end - start) // 1000
    span["localEndpoint"] = local
    if remote:
        span["remoteEndpoint"] = remote
    events = raw.get("events")
    annotations = []
    for e in events if isinstance(events, list) else []:
        if not isinstance(e, Mapping):
            continue
        try:
            when = _nanos(e.get("timeUnixNano"))
        except ValueError:
            continue
        if when:
            annotations.append({"timestamp": when // 1000, "value": _str(e.get("name"))})
    if annotations:
        span["annotations"] = annotations
    span["tags"] = tags
    return span
