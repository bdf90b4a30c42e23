"""HTTP/1.1 pieces the data path needs: request heads rebuilt for upstream,
local responses, socket options (SO_MARK, SO_ORIGINAL_DST).

The proxy parses with httptools (llhttp) and never builds header objects:
a request head is re-emitted from the parsed (name, value) pairs minus the
hop-by-hop and trace headers, plus the new trace lines, in one join.
"""

from __future__ import annotations

import socket
import struct
from collections.abc import Iterable

SO_ORIGINAL_DST = 80  # linux/netfilter_ipv4.h
SO_MARK = getattr(socket, "SO_MARK", 36)  # Linux's value; Python < 3.12 may lack the name
MAX_HEAD = 60 * 1024  # Envoy's max_request_headers_kb default: 60 KiB -> 431 past it
REPLAY_LIMIT = 64 * 1024  # request bytes kept for a retry (Envoy's per_request_buffer_limit)

# Connection-scoped headers (RFC 9110 7.6.1): never forwarded; the proxy keeps
# its own connections alive on both sides.
HOP_BY_HOP = frozenset(
    (
        b"connection",
        b"keep-alive",
        b"proxy-connection",
        b"te",
        b"trailer",
        b"upgrade",
    )
)

REASONS = {
    200: "OK",
    400: "Bad Request",
    404: "Not Found",
    408: "Request Timeout",
    413: "Payload Too Large",
    429: "Too Many Requests",
    431: "Request Header Fields Too Large",
    500: "Internal Server Error",
    501: "Not Implemented",
    502: "Bad Gateway",
    503: "Service Unavailable",
    504: "Gateway Timeout",
}


def reason(status: int) -> str:
    return REASONS.get(status, "Unknown")


def local_response(status: int, body: str, extra: bytes = b"", close: bool = False) -> bytes:
    """A response the proxy makes itself (429, 503, 504, ...), Envoy's body texts."""
    data = body.encode()
    return b"".join(
        (
            f"HTTP/1.1 {status} {reason(status)}\r\n"
            f"content-length: {len(data)}\r\ncontent-type: text/plain\r\n".encode(),
            extra,
            b"connection: close\r\n\r\n" if close else b"\r\n",
            data,
        )
    )


def request_head(
    method: bytes,
    url: bytes,
    headers: Iterable[tuple[bytes, bytes]],
    drop: frozenset[bytes],
    extra: bytes,
) -> bytes:
    """The request head for upstream: HTTP/1.1 always, `headers` minus `drop`
    (lower-case names), then the `extra` lines (CRLF-terminated)."""
    parts = [method, b" ", url, b" HTTP/1.1\r\n"]
    for name, value in headers:
        if name.lower() not in drop:
            parts += (name, b": ", value, b"\r\n")
    parts.append(extra)
    parts.append(b"\r\n")
    return b"".join(parts)


def inject_lines(head: bytes, lines: bytes) -> bytes:
    """`lines` added at the end of a complete response head (which ends in CRLF CRLF)."""
    return head[:-2] + lines + b"\r\n"


def chunk(data: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(data), data)


LAST_CHUNK = b"0\r\n\r\n"


def original_dst(sock: socket.socket) -> tuple[str, int] | None:
    """Where the app meant to connect before nftables' redirect (IPv4)."""
    try:
        raw = sock.getsockopt(socket.SOL_IP, SO_ORIGINAL_DST, 16)
    except OSError:
        return None
    port, packed = struct.unpack_from("!2xH4s", raw)
    return socket.inet_ntoa(packed), port


def marked_socket(mark: int | None, family: int = socket.AF_INET) -> socket.socket:
    """A non-blocking TCP socket carrying SO_MARK `mark` (the pod's interception
    rules let marked packets pass, so the sidecar's own connections are not
    redirected to itself). The mark is set before connect: the SYN carries it."""
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        if mark is not None:
            sock.setsockopt(socket.SOL_SOCKET, SO_MARK, mark)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.setblocking(False)
    except BaseException:
        sock.close()
        raise
    return sock
