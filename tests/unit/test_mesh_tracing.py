"""mesh.tracing: incoming headers -> the new span's context, and the headers it sends."""

from __future__ import annotations

import random
import re
import uuid

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mesh.tracing import TRACE_HEADERS, TraceContext, Tracer

T32 = "4bf92f3577b34da6a3ce929d0e0e4736"
S16 = "00f067aa0ba902b7"
B3T = "80f198ee56343ba864fe8b2a57d3eff7"
B3S = "e457b5a2e4d86bd1"
HEX32 = re.compile(r"[0-9a-f]{32}")
HEX16 = re.compile(r"[0-9a-f]{16}")
RID = "2a5d8b40-5a8e-4a3a-9d9e-6b1b8b0c9d11"


def tracer(sampling: float = 1.0, seed: int = 1) -> Tracer:
    return Tracer(sampling, random.Random(seed))


# (headers, continued trace id or None for a new trace, parent id, sampled or None = by rng)
CONTINUE = [
    # W3C
    ({"traceparent": f"00-{T32}-{S16}-01"}, T32, S16, True),
    ({"traceparent": f"00-{T32}-{S16}-00"}, T32, S16, False),
    ({"traceparent": f"00-{T32}-{S16}-03"}, T32, S16, True),  # other flag bits kept out
    ({"traceparent": f" 00-{T32}-{S16}-01 "}, T32, S16, True),
    # W3C wins over B3
    (
        {"traceparent": f"00-{T32}-{S16}-01", "x-b3-traceid": B3T, "x-b3-spanid": B3S},
        T32,
        S16,
        True,
    ),
    # B3 multi
    ({"x-b3-traceid": B3T, "x-b3-spanid": B3S, "x-b3-sampled": "1"}, B3T, B3S, True),
    ({"x-b3-traceid": B3T, "x-b3-spanid": B3S, "x-b3-sampled": "0"}, B3T, B3S, False),
    ({"x-b3-traceid": B3T, "x-b3-spanid": B3S, "x-b3-sampled": "true"}, B3T, B3S, True),
    ({"x-b3-traceid": B3T, "x-b3-spanid": B3S, "x-b3-sampled": "false"}, B3T, B3S, False),
    ({"x-b3-traceid": B3T, "x-b3-spanid": B3S, "x-b3-flags": "1"}, B3T, B3S, True),
    (
        {"x-b3-traceid": B3T, "x-b3-spanid": B3S, "x-b3-flags": "1", "x-b3-sampled": "0"},
        B3T,
        B3S,
        True,  # debug overrides
    ),
    ({"x-b3-traceid": B3T, "x-b3-spanid": B3S}, B3T, B3S, None),
    (
        {"x-b3-traceid": "a3ce929d0e0e4736", "x-b3-spanid": B3S},
        "0" * 16 + "a3ce929d0e0e4736",
        B3S,
        None,
    ),
    ({"x-b3-traceid": B3T.upper(), "x-b3-spanid": B3S.upper()}, B3T, B3S, None),
    # a broken traceparent falls back to B3
    ({"traceparent": "garbage", "x-b3-traceid": B3T, "x-b3-spanid": B3S}, B3T, B3S, None),
    # B3 single
    ({"b3": f"{B3T}-{B3S}-1-05e3ac9a4f6e3b90"}, B3T, B3S, True),
    ({"b3": f"{B3T}-{B3S}-0"}, B3T, B3S, False),
    ({"b3": f"{B3T}-{B3S}-d"}, B3T, B3S, True),
    ({"b3": f"{B3T}-{B3S}"}, B3T, B3S, None),
    ({"b3": f"a3ce929d0e0e4736-{B3S}-1"}, "0" * 16 + "a3ce929d0e0e4736", B3S, True),
    # multi wins over single
    ({"x-b3-traceid": B3T, "x-b3-spanid": B3S, "b3": f"{T32}-{S16}-1"}, B3T, B3S, None),
]

NEW = [
    ({}, None),
    ({"traceparent": f"01-{T32}-{S16}-01"}, None),  # only version 00
    ({"traceparent": f"00-{'0' * 32}-{S16}-01"}, None),  # all-zero trace id
    ({"traceparent": f"00-{T32}-{'0' * 16}-01"}, None),  # all-zero span id
    ({"traceparent": f"00-{T32.upper()}-{S16}-01"}, None),  # W3C ids are lower-case
    ({"traceparent": f"00-{T32}-{S16}-0g"}, None),
    ({"traceparent": f"00-{T32}-{S16}-01-extra"}, None),
    ({"traceparent": f"00-{T32[:-1]}-{S16}-01"}, None),
    ({"traceparent": ""}, None),
    ({"x-b3-traceid": B3T}, None),  # no span id
    ({"x-b3-traceid": B3T, "x-b3-spanid": "xyz"}, None),
    ({"x-b3-traceid": "0" * 32, "x-b3-spanid": B3S}, None),
    ({"x-b3-traceid": B3T[:20], "x-b3-spanid": B3S}, None),  # 20 hex: neither 16 nor 32
    ({"x-b3-traceid": B3T, "x-b3-spanid": B3S + "00"}, None),
    ({"b3": "not-a-b3-header"}, None),
    ({"b3": f"{B3T}-{B3S}-7"}, None),  # unknown sampling state
    ({"b3": f"{B3T}-{B3S}-1-{B3S}-more"}, None),
    ({"b3": ""}, None),
    # a bare sampling decision starts a trace with it
    ({"b3": "0"}, False),
    ({"b3": "1"}, True),
    ({"b3": "d"}, True),
    ({"x-b3-sampled": "0"}, False),
    ({"x-b3-sampled": "1"}, True),
    ({"x-b3-flags": "1"}, True),
]


@pytest.mark.parametrize("headers, trace_id, parent, sampled", CONTINUE)
@pytest.mark.parametrize("sampling", [0.0, 1.0])
def test_an_incoming_trace_is_continued(headers, trace_id, parent, sampled, sampling):
    ctx = tracer(sampling).child(headers)
    assert ctx.trace_id == trace_id
    assert ctx.parent_id == parent
    assert HEX16.fullmatch(ctx.span_id) and ctx.span_id != parent
    assert ctx.sampled == (sampling == 1.0 if sampled is None else sampled)


@pytest.mark.parametrize("headers, sampled", NEW)
@pytest.mark.parametrize("sampling", [0.0, 1.0])
def test_otherwise_a_new_trace_starts(headers, sampled, sampling):
    ctx = tracer(sampling).child(headers)
    assert HEX32.fullmatch(ctx.trace_id) and ctx.trace_id not in (T32, B3T)
    assert HEX16.fullmatch(ctx.span_id)
    assert ctx.parent_id is None
    assert ctx.sampled == (sampling == 1.0 if sampled is None else sampled)


def test_tracestate_passes_through_with_a_valid_traceparent_only():
    state = "rojo=00f067aa0ba902b7,congo=t61rcWkgMzE"
    ctx = tracer().child({"traceparent": f"00-{T32}-{S16}-01", "tracestate": state})
    assert ctx.tracestate == state
    assert tracer().child({"tracestate": state}).tracestate is None
    bad = tracer().child({"traceparent": f"00-{T32}-{S16}-01", "tracestate": "a=1\r\nx: y"})
    assert bad.tracestate is None and bad.trace_id == T32


@pytest.mark.parametrize(
    "incoming, kept",
    [
        (RID, True),
        ("my-id 42", True),
        ("x" * 128, True),
        ("x" * 129, False),
        ("", False),
        ("bad\r\nid", False),
        ("tab\tid", False),
        ("naïve", False),
        (None, False),
    ],
)
def test_request_id_kept_when_sane_else_a_new_uuid4(incoming, kept):
    headers = {} if incoming is None else {"x-request-id": incoming}
    ctx = tracer().child(headers)
    if kept:
        assert ctx.request_id == incoming
    else:
        assert uuid.UUID(ctx.request_id).version == 4
        assert str(uuid.UUID(ctx.request_id)) == ctx.request_id


def test_ids_are_deterministic_with_a_seeded_rng_and_differ_per_call():
    a, b = tracer(seed=5), tracer(seed=5)
    first = [a.child({}) for _ in range(3)]
    assert first == [b.child({}) for _ in range(3)]
    assert len({c.trace_id for c in first}) == 3 and len({c.span_id for c in first}) == 3
    assert len({c.request_id for c in first}) == 3


def test_sampling_fraction_for_new_traces():
    t = tracer(0.25, seed=9)
    share = sum(t.child({}).sampled for _ in range(8000)) / 8000
    assert abs(share - 0.25) < 0.02
    assert Tracer(5.0).sampling == 1.0 and Tracer(-1).sampling == 0.0


def test_header_block_of_a_child():
    ctx = TraceContext(T32, "b7ad6b7169203331", S16, True, RID, "rojo=1")
    assert (
        ctx.header_block()
        == (
            f"traceparent: 00-{T32}-b7ad6b7169203331-01\r\n"
            "tracestate: rojo=1\r\n"
            f"x-request-id: {RID}\r\n"
            f"x-b3-traceid: {T32}\r\n"
            "x-b3-spanid: b7ad6b7169203331\r\n"
            f"x-b3-parentspanid: {S16}\r\n"
            "x-b3-sampled: 1\r\n"
        ).encode()
    )


def test_header_block_of_a_root_unsampled():
    ctx = TraceContext(T32, "b7ad6b7169203331", None, False, RID)
    assert (
        ctx.header_block()
        == (
            f"traceparent: 00-{T32}-b7ad6b7169203331-00\r\n"
            f"x-request-id: {RID}\r\n"
            f"x-b3-traceid: {T32}\r\n"
            "x-b3-spanid: b7ad6b7169203331\r\n"
            "x-b3-sampled: 0\r\n"
        ).encode()
    )


def test_the_next_hop_continues_what_header_block_sent():
    t = tracer()
    client = t.child({"traceparent": f"00-{T32}-{S16}-01"})
    sent = {}
    for line in client.header_block().decode().split("\r\n")[:-1]:
        name, _, value = line.partition(": ")
        assert name in TRACE_HEADERS
        sent[name] = value
    server = t.child(sent)
    assert (server.trace_id, server.parent_id, server.sampled) == (T32, client.span_id, True)
    assert server.request_id == client.request_id
    b3_only = {k: v for k, v in sent.items() if k.startswith("x-b3")}
    assert t.child(b3_only).parent_id == client.span_id


def test_trace_headers_names():
    assert {
        "traceparent",
        "tracestate",
        "x-b3-traceid",
        "x-b3-spanid",
        "x-b3-parentspanid",
        "x-b3-sampled",
        "x-b3-flags",
        "b3",
    } <= TRACE_HEADERS
    assert all(name == name.lower() for name in TRACE_HEADERS)


_names = st.sampled_from(sorted(TRACE_HEADERS) + ["x-other"])
_values = st.one_of(
    st.text(max_size=80),
    st.from_regex(r"\A[0-9a-fA-F\-]{0,70}\Z"),
    st.just(f"00-{T32}-{S16}-01"),
)


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(_names, _values, max_size=6))
def test_any_headers_never_raise_and_give_a_well_formed_context(headers):
    ctx = tracer().child(headers)
    assert HEX32.fullmatch(ctx.trace_id) and ctx.trace_id != "0" * 32
    assert HEX16.fullmatch(ctx.span_id) and ctx.span_id != "0" * 16
    assert ctx.parent_id is None or HEX16.fullmatch(ctx.parent_id)
    block = ctx.header_block()
    assert block.endswith(b"\r\n") and block.count(b"\n") == block.count(b"\r\n")
    assert all(b": " in line for line in block.split(b"\r\n")[:-1])
