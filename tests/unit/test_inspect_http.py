"""HTTP heads and trace ids read from TCP payload bytes."""

from __future__ import annotations

import pytest

from netlab.inspect import http

W3C = "4bf92f3577b34da6a3ce929d0e0e4736"


@pytest.mark.parametrize(
    "payload, summary, trace, request_id",
    [
        (
            f"GET /a?b=1 HTTP/1.1\r\nHost: web\r\ntraceparent: 00-{W3C}-00f067aa0ba902b7-01\r\n\r\n",
            "GET /a?b=1 host=web",
            W3C,
            None,
        ),
        (
            "POST /x HTTP/1.1\r\nX-B3-TraceId: 80F198EE56343BA8\r\nX-Request-Id: abc\r\n\r\nbody",
            "POST /x",
            "80f198ee56343ba8",
            "abc",
        ),
        (
            f"GET / HTTP/1.0\r\nb3: {W3C}-e457b5a2e4d86bd1-1\r\n\r\n",
            "GET /",
            W3C,
            None,
        ),
        ("GET / HTTP/1.1\r\nb3: 0\r\nx-request-id: r-1\r\n\r\n", "GET /", None, "r-1"),
        (
            "HTTP/1.1 503 Service Unavailable\r\nx-request-id: r-2\r\n\r\n",
            "503 Service Unavailable",
            None,
            "r-2",
        ),
        ("HTTP/1.1 204\r\n\r\n", "204", None, None),
        (
            "GET /only-a-line HTTP/1.1\r\nHost: cut-short-he",
            "GET /only-a-line host=cut-short-he",
            None,
            None,
        ),
    ],
)
def test_heads(payload, summary, trace, request_id):
    head = http.parse(payload.encode())
    assert head is not None
    assert (head.summary(), head.trace_id, head.request_id) == (summary, trace, request_id)


@pytest.mark.parametrize(
    "payload",
    [
        b"",
        b"\x16\x03\x01\x02\x00",
        b"GETTER / HTTP/1.1\r\n",
        b"GET /\r\n",
        b"HTTP/1.1 OK\r\n",
        b"hello world",
    ],
)
def test_not_http(payload):
    assert http.parse(payload) is None


def test_request_fields():
    head = http.parse(b"DELETE /items/7 HTTP/1.1\r\nHost: api:9000\r\n\r\n")
    assert head.is_request and head.to_dict()["method"] == "DELETE"
    assert head.to_dict()["host"] == "api:9000" and head.to_dict()["status"] is None
