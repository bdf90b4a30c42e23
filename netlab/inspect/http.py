"""HTTP/1.x heads read from one TCP payload, and the trace ids they carry.

Parsed by hand from the bytes (any port): the request or status line and the
header lines present in this segment. Trace ids: W3C `traceparent`
(00-<trace-id>-<span-id>-<flags>), Zipkin B3 (`x-b3-traceid`, or the single
`b3` header <trace-id>-<span-id>[-...]), and `x-request-id` (Envoy's).
"""

from __future__ import annotations

from dataclasses import dataclass, field

METHODS = (b"GET", b"POST", b"PUT", b"DELETE", b"HEAD", b"OPTIONS", b"PATCH", b"CONNECT", b"TRACE")
MAX_HEAD = 16384


@dataclass
class HttpHead:
    """A request (method, path) or a response (status, reason), with headers
    (names lowercased; the last of repeated headers wins)."""

    method: str | None = None
    path: str | None = None
    status: int | None = None
    reason: str | None = None
    version: str = ""
    headers: dict[str, str] = field(default_factory=dict)

    @property
    def is_request(self) -> bool:
        return self.method is not None

    @property
    def host(self) -> str | None:
        return self.headers.get("host")

    @property
    def trace_id(self) -> str | None:
        return trace_id(self.headers)

    @property
    def request_id(self) -> str | None:
        return self.headers.get("x-request-id")

    def summary(self) -> str:
        if self.is_request:
            text = f"{self.method} {self.path}"
            return f"{text} host={self.host}" if self.host else text
        return f"{self.status} {self.reason}".rstrip()

    def to_dict(self) -> dict:
        return {
            "method": self.method,
            "path": self.path,
            "host": self.host,
            "status": self.status,
            "reason": self.reason,
            "version": self.version,
            "trace_id": self.trace_id,
            "request_id": self.request_id,
        }


def parse(payload: bytes) -> HttpHead | None:
    """The HTTP head at the start of a TCP payload, or None if it is not one."""
    if not payload:
        return None
    if payload.startswith(b"HTTP/1."):
        kind = "response"
    elif payload.split(b" ", 1)[0] in METHODS:
        kind = "request"
    else:
        return None
    head = payload[:MAX_HEAD].split(b"\r\n\r\n", 1)[0]
    lines = head.decode("latin-1").split("\r\n")
    first = lines[0].split(" ", 2)
    if kind == "request":
        if len(first) < 3 or not first[2].startswith("HTTP/"):
            return None
        result = HttpHead(method=first[0], path=first[1], version=first[2])
    else:
        if len(first) < 2 or not first[1].isdigit():
            return None
        reason = first[2] if len(first) > 2 else ""
        result = HttpHead(status=int(first[1]), reason=reason, version=first[0])
    for line in lines[1:]:
        name, sep, value = line.partition(":")
        if sep and name and " " not in name:
            result.headers[name.strip().lower()] = value.strip()
    return result


def trace_id(headers: dict[str, str]) -> str | None:
    """The trace id of a message: W3C traceparent, else B3 (multi or single)."""
    parent = headers.get("traceparent")
    if parent:
        parts = parent.strip().split("-")
        if len(parts) >= 4 and len(parts[1]) == 32:
            return parts[1].lower()
    b3 = headers.get("x-b3-traceid")
    if b3:
        return b3.strip().lower()
    single = headers.get("b3")
    if single and single.strip() not in ("0", "1", "d"):
        return single.strip().split("-")[0].lower()
    return None
