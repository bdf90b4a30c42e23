"""Trace context: continue the caller's trace or start one, and the headers
that carry it on.

Incoming context is read, in this order, from W3C `traceparent` (plus
`tracestate`), B3 multi-headers (`x-b3-*`), and the single `b3` header; the
new context keeps the trace id and the sampling decision, takes a new span id
and records the caller's span as its parent. Anything malformed is ignored
(a new trace starts), never raised. Outgoing requests carry both W3C and B3,
so apps that propagate either (as Istio's bookinfo does) keep the trace.
"""

from __future__ import annotations

import os
import random
import re
from collections.abc import Mapping
from dataclasses import dataclass

TRACE_HEADERS: frozenset[str] = frozenset(
    (
        "traceparent",
        "tracestate",
        "x-b3-traceid",
        "x-b3-spanid",
        "x-b3-parentspanid",
        "x-b3-sampled",
        "x-b3-flags",
        "b3",
        "x-request-id",  # header_block writes it too: strip it so it is not sent twice
    )
)
REQUEST_ID_MAX = 128
TRACESTATE_MAX = 512  # W3C: vendors may drop longer tracestate

_TRACEPARENT = re.compile(r"00-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})")
_HEX = re.compile(r"[0-9a-f]+")
_ZERO32 = "0" * 32
_ZERO16 = "0" * 16
_B3_SAMPLED = {"1": True, "true": True, "d": True, "0": False, "false": False}
_UUID_CLEAR = ~((0xF000 << 64) | (0xC000 << 48))
_UUID_SET = (0x4000 << 64) | (0x8000 << 48)  # version 4, RFC 4122 variant


@dataclass(frozen=True, slots=True)
class TraceContext:
    trace_id: str  # 32 lower-hex
    span_id: str  # 16 lower-hex, the new span's id
    parent_id: str | None
    sampled: bool
    request_id: str
    tracestate: str | None = None

    def header_block(self) -> bytes:
        """The propagation headers, CRLF-terminated lines, to add to a request."""
        flag = "1" if self.sampled else "0"
        lines = [f"traceparent: 00-{self.trace_id}-{self.span_id}-0{flag}\r\n"]
        if self.tracestate:
            lines.append(f"tracestate: {self.tracestate}\r\n")
        lines.append(
            f"x-request-id: {self.request_id}\r\n"
            f"x-b3-traceid: {self.trace_id}\r\n"
            f"x-b3-spanid: {self.span_id}\r\n"
        )
        if self.parent_id:
            lines.append(f"x-b3-parentspanid: {self.parent_id}\r\n")
        lines.append(f"x-b3-sampled: {flag}\r\n")
        return "".join(lines).encode("latin-1", "replace")


def _sane(value: str | None, limit: int) -> bool:
    return value is not None and 0 < len(value) <= limit and value.isascii() and value.isprintable()


def _b3_id(value: str | None, lengths: tuple[int, ...]) -> str | None:
    """A B3 id, lower-cased; a 64-bit trace id left-padded to 128 bits."""
    if value is None:
        return None
    value = value.strip().lower()
    if len(value) not in lengths or _HEX.fullmatch(value) is None or value.strip("0") == "":
        return None
    return value.rjust(32, "0") if len(lengths) > 1 else value


class Tracer:
    def __init__(self, sampling: float = 1.0, rng: random.Random | None = None) -> None:
        self.sampling = min(1.0, max(0.0, float(sampling)))  # for NEW traces, 0..1
        self._rng = rng if rng is not None else random.Random(os.urandom(16))

    # -- ids -------------------------------------------------------------------

    def _span_id(self) -> str:
        bits = self._rng.getrandbits
        while True:
            n = bits(64)
            if n:
                return f"{n:016x}"

    def _trace_id(self) -> str:
        bits = self._rng.getrandbits
        while True:
            n = bits(128)
            if n:
                return f"{n:032x}"

    def _uuid4(self) -> str:
        h = f"{(self._rng.getrandbits(128) & _UUID_CLEAR) | _UUID_SET:032x}"
        return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"

    def _sample(self) -> bool:
        if self.sampling >= 1.0:
            return True
        if self.sampling <= 0.0:
            return False
        return self._rng.random() < self.sampling

    # -- the context -----------------------------------------------------------

    def child(self, headers: Mapping[str, str]) -> TraceContext:
        """The context of a new span under the request's incoming one (if valid),
        else of a new trace. `headers` has lower-case names."""
        request_id = headers.get("x-request-id")
        if not _sane(request_id, REQUEST_ID_MAX):
            request_id = self._uuid4()
        # W3C trace context
        parent = headers.get("traceparent")
        if parent is not None:
            m = _TRACEPARENT.fullmatch(parent.strip())
            if m is not None:
                trace_id, span_id, flags = m.groups()
                if trace_id != _ZERO32 and span_id != _ZERO16:
                    state = headers.get("tracestate")
                    return TraceContext(
                        trace_id,
                        self._span_id(),
                        span_id,
                        bool(int(flags, 16) & 1),
                        request_id,
                        state.strip() if _sane(state, TRACESTATE_MAX) else None,
                    )
        # B3 multi-header
        decision: bool | None = None
        b3_trace = headers.get("x-b3-traceid")
        if b3_trace is not None or "x-b3-sampled" in headers or "x-b3-flags" in headers:
            if headers.get("x-b3-flags", "").strip() == "1":
                decision = True  # debug
            else:
                decision = _B3_SAMPLED.get(headers.get("x-b3-sampled", "").strip().lower())
            trace_id = _b3_id(b3_trace, (16, 32))
            span_id = _b3_id(headers.get("x-b3-spanid"), (16,))
            if trace_id is not None and span_id is not None:
                sampled = self._sample() if decision is None else decision
                return TraceContext(trace_id, self._span_id(), span_id, sampled, request_id)
        # B3 single header: {traceid}-{spanid}[-{sampled}[-{parent}]] or just {sampled}
        single = headers.get("b3")
        if single is not None:
            parts = single.strip().lower().split("-")
            if len(parts) == 1:
                if decision is None:
                    decision = _B3_SAMPLED.get(parts[0])
            elif 2 <= len(parts) <= 4:
                trace_id = _b3_id(parts[0], (16, 32))
                span_id = _b3_id(parts[1], (16,))
                flag = _B3_SAMPLED.get(parts[2]) if len(parts) > 2 else None
                if (
                    trace_id is not None
                    and span_id is not None
                    and (len(parts) < 3 or flag is not None)
                ):
                    sampled = self._sample() if flag is None else flag
                    return TraceContext(trace_id, self._span_id(), span_id, sampled, request_id)
        # a new trace (a bare B3 sampling decision still counts)
        sampled = self._sample() if decision is None else decision
        return TraceContext(self._trace_id(), self._span_id(), None, sampled, request_id)
