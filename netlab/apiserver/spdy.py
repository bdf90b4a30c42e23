"""SPDY/3.1 framing, the part Kubernetes' port-forward uses (pure: bytes in, frames out).

kubectl 1.30+ tunnels SPDY through a WebSocket (subprotocol
`SPDY/3.1+portforward.k8s.io`); older kubectl upgrades the HTTP connection to SPDY
itself. Either way the bytes are SPDY/3 frames:

    control: 1 | version(15) | type(16) | flags(8) | length(24) | payload
    data:    0 | stream-id(31)           | flags(8) | length(24) | data

Header blocks (in SYN_STREAM, SYN_REPLY, HEADERS) are a count and length-prefixed
names and values, compressed by one zlib stream per direction that is primed with
SPDY's dictionary and sync-flushed after every block. Flow control (WINDOW_UPDATE,
SETTINGS) is parsed and may be ignored: the Go implementation kubectl uses
(spdystream) keeps no windows either.
"""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass, field

VERSION = 3
SYN_STREAM, SYN_REPLY, RST_STREAM, SETTINGS = 1, 2, 3, 4
PING, GOAWAY, HEADERS, WINDOW_UPDATE = 6, 7, 8, 9
FLAG_FIN, FLAG_UNIDIRECTIONAL = 0x01, 0x02
# RST_STREAM status codes
PROTOCOL_ERROR, CANCEL = 1, 5
GOAWAY_OK = 0
MAX_LENGTH = (1 << 24) - 1  # a frame's payload
MAX_HEADER_BLOCK = 1 << 20  # what a decompressed header block may grow to here


def _dictionary() -> bytes:
    """The zlib dictionary of SPDY/3 (draft 3, section 2.6.10.1): common header names
    and values, each with a 4-byte length, then a run of plain text."""
    words = (
        "options head post put delete trace accept accept-charset accept-encoding "
        "accept-language accept-ranges age allow authorization cache-control connection "
        "content-base content-encoding content-language content-length content-location "
        "content-md5 content-range content-type date etag expect expires from host if-match "
        "if-modified-since if-none-match if-range if-unmodified-since last-modified location "
        "max-forwards pragma proxy-authenticate proxy-authorization range referer retry-after "
        "server te trailer transfer-encoding upgrade user-agent vary via warning "
        "www-authenticate method get status"
    ).split()
    words += ["200 OK", "version", "HTTP/1.1", "url", "public", "set-cookie", "keep-alive"]
    words += ["origin"]
    prefixed = b"".join(struct.pack(">I", len(w)) + w.encode() for w in words)
    text = (
        "100101201202205206300302303304305306307402405406407408409410411412413414415416417"
        "502504505203 Non-Authoritative Information204 No Content301 Moved Permanently"
        "400 Bad Request401 Unauthorized403 Forbidden404 Not Found500 Internal Server Error"
        "501 Not Implemented503 Service UnavailableJan Feb Mar Apr May Jun Jul Aug Sept Oct "
        "Nov Dec 00:00:00 Mon, Tue, Wed, Thu, Fri, Sat, Sun, GMTchunked,text/html,image/png,"
        "image/jpg,image/gif,application/xml,application/xhtml+xml,text/plain,"
        "text/javascript,publicprivatemax-age=gzip,deflate,sdchcharset=utf-8"
        "charset=iso-8859-1,utf-,*,enq=0."
    )
    return prefixed + text.encode()


DICTIONARY = _dictionary()

Headers = dict[str, list[str]]


class SpdyError(Exception):
    """The peer broke the framing; the connection cannot go on (send GOAWAY, close)."""


@dataclass(frozen=True)
class Data:
    stream_id: int
    data: bytes
    fin: bool = False


@dataclass(frozen=True)
class SynStream:
    stream_id: int
    headers: Headers
    fin: bool = False
    unidirectional: bool = False
    associated: int = 0
    priority: int = 0


@dataclass(frozen=True)
class SynReply:
    stream_id: int
    headers: Headers
    fin: bool = False


@dataclass(frozen=True)
class HeadersFrame:
    stream_id: int
    headers: Headers
    fin: bool = False


@dataclass(frozen=True)
class RstStream:
    stream_id: int
    status: int


@dataclass(frozen=True)
class Settings:
    entries: list[tuple[int, int, int]] = field(default_factory=list)  # (flags, id, value)


@dataclass(frozen=True)
class Ping:
    ping_id: int


@dataclass(frozen=True)
class GoAway:
    last_good: int
    status: int = GOAWAY_OK


@dataclass(frozen=True)
class WindowUpdate:
    stream_id: int
    delta: int


Frame = (
    Data | SynStream | SynReply | HeadersFrame | RstStream | Settings | Ping | GoAway | WindowUpdate
)


def encode_header_block(headers: Headers) -> bytes:
    """The uncompressed block: names lowercased, a name's values joined by NUL."""
    out = [struct.pack(">I", len(headers))]
    for name, values in headers.items():
        key, value = name.lower().encode(), "\0".join(values).encode()
        out += [struct.pack(">I", len(key)), key, struct.pack(">I", len(value)), value]
    return b"".join(out)


def decode_header_block(block: bytes) -> Headers:
    def take(at: int, n: int) -> bytes:
        if at + n > len(block):
            raise SpdyError("header block is truncated")
        return block[at : at + n]

    (count,) = struct.unpack(">I", take(0, 4))
    at, headers = 4, {}
    for _ in range(count):
        (n,) = struct.unpack(">I", take(at, 4))
        name = take(at + 4, n).decode("latin-1")
        at += 4 + n
        (n,) = struct.unpack(">I", take(at, 4))
        value = take(at + 4, n).decode("latin-1")
        at += 4 + n
        headers.setdefault(name.lower(), []).extend(value.split("\0"))
    return headers


class Writer:
    """Frames to send on one connection (it owns that direction's header compressor)."""

    def __init__(self) -> None:
        self._deflate = zlib.compressobj(zlib.Z_DEFAULT_COMPRESSION, zdict=DICTIONARY)

    def _block(self, headers: Headers) -> bytes:
        raw = encode_header_block(headers)
        return self._deflate.compress(raw) + self._deflate.flush(zlib.Z_SYNC_FLUSH)

    @staticmethod
    def control(kind: int, flags: int, payload: bytes) -> bytes:
        if len(payload) > MAX_LENGTH:
            raise ValueError("control frame payload too long")
        return struct.pack(">HHI", 0x8000 | VERSION, kind, flags << 24 | len(payload)) + payload

    @staticmethod
    def data(stream_id: int, data: bytes, fin: bool = False) -> bytes:
        if len(data) > MAX_LENGTH:
            raise ValueError("data frame payload too long")
        flags = FLAG_FIN if fin else 0
        return struct.pack(">II", stream_id & 0x7FFFFFFF, flags << 24 | len(data)) + data

    def syn_stream(
        self, stream_id: int, headers: Headers, fin: bool = False, priority: int = 0
    ) -> bytes:
        head = struct.pack(">IIBB", stream_id, 0, (priority & 7) << 5, 0)
        return self.control(SYN_STREAM, FLAG_FIN if fin else 0, head + self._block(headers))

    def syn_reply(self, stream_id: int, headers: Headers | None = None, fin: bool = False) -> bytes:
        payload = struct.pack(">I", stream_id) + self._block(headers or {})
        return self.control(SYN_REPLY, FLAG_FIN if fin else 0, payload)

    def rst_stream(self, stream_id: int, status: int) -> bytes:
        return self.control(RST_STREAM, 0, struct.pack(">II", stream_id, status))

    def ping(self, ping_id: int) -> bytes:
        return self.control(PING, 0, struct.pack(">I", ping_id))

    def goaway(self, last_good: int, status: int = GOAWAY_OK) -> bytes:
        return self.control(GOAWAY, 0, struct.pack(">II", last_good, status))


class Reader:
    """Frames from a byte stream that arrives in pieces of any size (a WebSocket tunnel
    cuts it wherever the peer's writes fell). Owns that direction's decompressor."""

    def __init__(self) -> None:
        self._buffer = bytearray()
        self._inflate = zlib.decompressobj(zdict=DICTIONARY)

    def feed(self, data: bytes) -> list[Frame]:
        self._buffer += data
        frames: list[Frame] = []
        while len(self._buffer) >= 8:
            first, word = struct.unpack_from(">II", self._buffer)
            length = word & 0xFFFFFF
            if len(self._buffer) < 8 + length:
                break
            payload = bytes(self._buffer[8 : 8 + length])
            del self._buffer[: 8 + length]
            flags = word >> 24
            if not first & 0x80000000:
                frames.append(Data(first & 0x7FFFFFFF, payload, bool(flags & FLAG_FIN)))
                continue
            version, kind = (first >> 16) & 0x7FFF, first & 0xFFFF
            if version != VERSION:
                raise SpdyError(f"SPDY version {version}: only version 3 is spoken here")
            frame = self._control(kind, flags, payload)
            if frame is not None:
                frames.append(frame)
        return frames

    def _headers(self, block: bytes) -> Headers:
        try:
            raw = self._inflate.decompress(block, MAX_HEADER_BLOCK)
        except zlib.error as exc:
            raise SpdyError(f"header block does not decompress: {exc}") from exc
        if self._inflate.unconsumed_tail:
            raise SpdyError("header block is too large")
        return decode_header_block(raw)

    def _control(self, kind: int, flags: int, payload: bytes) -> Frame | None:
        def words(n: int) -> tuple[int, ...]:
            if len(payload) < 4 * n:
                raise SpdyError(f"control frame {kind} is too short")
            return struct.unpack_from(">" + "I" * n, payload)

        fin = bool(flags & FLAG_FIN)
        if kind == SYN_STREAM:
            if len(payload) < 10:
                raise SpdyError("SYN_STREAM is too short")
            stream_id, associated = words(2)
            return SynStream(
                stream_id & 0x7FFFFFFF,
                self._headers(payload[10:]),
                fin=fin,
                unidirectional=bool(flags & FLAG_UNIDIRECTIONAL),
                associated=associated & 0x7FFFFFFF,
                priority=payload[8] >> 5,
            )
        if kind == SYN_REPLY:
            (stream_id,) = words(1)
            return SynReply(stream_id & 0x7FFFFFFF, self._headers(payload[4:]), fin)
        if kind == HEADERS:
            (stream_id,) = words(1)
            return HeadersFrame(stream_id & 0x7FFFFFFF, self._headers(payload[4:]), fin)
        if kind == RST_STREAM:
            stream_id, status = words(2)
            return RstStream(stream_id & 0x7FFFFFFF, status)
        if kind == SETTINGS:
            (count,) = words(1)
            values = words(1 + 2 * count)[1:]
            entries = [
                (values[i] >> 24, values[i] & 0xFFFFFF, values[i + 1])
                for i in range(0, len(values), 2)
            ]
            return Settings(entries)
        if kind == PING:
            return Ping(words(1)[0])
        if kind == GOAWAY:
            last_good, *rest = words(1) if len(payload) < 8 else words(2)
            return GoAway(last_good & 0x7FFFFFFF, rest[0] if rest else GOAWAY_OK)
        if kind == WINDOW_UPDATE:
            stream_id, delta = words(2)
            return WindowUpdate(stream_id & 0x7FFFFFFF, delta & 0x7FFFFFFF)
        return None  # unknown control frames are ignored (SPDY/3, 2.2.1)
