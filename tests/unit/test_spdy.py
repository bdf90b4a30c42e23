"""SPDY/3.1 framing (netlab.apiserver.spdy): frames written are the frames read, header
blocks share one compression context per direction, and bytes may arrive in any pieces."""

from __future__ import annotations

import hashlib
import struct
import zlib

import pytest

from netlab.apiserver import spdy


def test_the_dictionary_is_spdy3s():
    # 1423 bytes; the digest is of the dictionary as SPDY/3's draft lists it
    assert len(spdy.DICTIONARY) == 1423
    digest = hashlib.sha256(spdy.DICTIONARY).hexdigest()
    assert digest == "51d27341373f923f3cd88e1eb7162aeaa3723d7585ff2399201dc06498407f02"


def test_header_blocks_round_trip_with_several_values():
    headers = {"streamtype": ["data"], "port": ["8080"], "x-many": ["a", "b"]}
    block = spdy.encode_header_block(
        {"StreamType": ["data"], "port": ["8080"], "x-many": ["a", "b"]}
    )
    assert block.startswith(struct.pack(">I", 3))
    assert spdy.decode_header_block(block) == headers
    with pytest.raises(spdy.SpdyError):
        spdy.decode_header_block(block[:-1])


def every_frame(writer: spdy.Writer) -> tuple[bytes, list]:
    headers = {"streamtype": ["error"], "port": ["80"], "requestid": ["0"]}
    wire = b"".join(
        [
            writer.syn_stream(1, headers, priority=3),
            writer.syn_stream(3, dict(headers, streamtype=["data"]), fin=True),
            writer.syn_reply(1),
            writer.data(3, b"GET / HTTP/1.1\r\n\r\n"),
            writer.data(3, b"", fin=True),
            writer.rst_stream(3, spdy.CANCEL),
            writer.ping(7),
            writer.goaway(3),
        ]
    )
    expected = [
        spdy.SynStream(1, headers, priority=3),
        spdy.SynStream(3, dict(headers, streamtype=["data"]), fin=True),
        spdy.SynReply(1, {}),
        spdy.Data(3, b"GET / HTTP/1.1\r\n\r\n"),
        spdy.Data(3, b"", fin=True),
        spdy.RstStream(3, spdy.CANCEL),
        spdy.Ping(7),
        spdy.GoAway(3, spdy.GOAWAY_OK),
    ]
    return wire, expected


def test_frames_written_are_frames_read():
    wire, expected = every_frame(spdy.Writer())
    assert spdy.Reader().feed(wire) == expected


def test_bytes_may_arrive_one_at_a_time():
    """A WebSocket tunnel cuts the stream wherever the peer's writes fell."""
    wire, expected = every_frame(spdy.Writer())
    reader, got = spdy.Reader(), []
    for i in range(len(wire)):
        got += reader.feed(wire[i : i + 1])
    assert got == expected


def test_header_compression_is_one_context_per_direction():
    writer = spdy.Writer()
    first, second = writer.syn_reply(1), writer.syn_reply(3)
    # the second block leans on the first: a fresh reader cannot decompress it alone
    with pytest.raises(spdy.SpdyError):
        spdy.Reader().feed(second)
    reader = spdy.Reader()
    assert reader.feed(first + second) == [spdy.SynReply(1, {}), spdy.SynReply(3, {})]


def test_blocks_are_zlib_with_the_dictionary_and_a_sync_flush():
    frame = spdy.Writer().syn_reply(5, {"a": ["b"]})
    block = frame[12:]
    assert struct.unpack(">I", block[2:6])[0] == zlib.adler32(spdy.DICTIONARY)  # FDICT id
    assert block.endswith(b"\x00\x00\xff\xff")  # the sync flush's empty stored block


def test_settings_and_window_updates_are_read():
    settings = spdy.Writer.control(spdy.SETTINGS, 0, struct.pack(">III", 1, 7, 65536))
    window = spdy.Writer.control(spdy.WINDOW_UPDATE, 0, struct.pack(">II", 3, 1000))
    unknown = spdy.Writer.control(99, 0, b"whatever")
    assert spdy.Reader().feed(settings + unknown + window) == [
        spdy.Settings([(0, 7, 65536)]),
        spdy.WindowUpdate(3, 1000),
    ]


@pytest.mark.parametrize(
    "wire",
    [
        struct.pack(">HHI", 0x8002, spdy.PING, 4) + b"\x00\x00\x00\x01",  # SPDY/2
        spdy.Writer.control(spdy.SYN_REPLY, 0, struct.pack(">I", 1) + b"not zlib at all"),
        spdy.Writer.control(spdy.RST_STREAM, 0, b"\x00\x00"),  # too short
    ],
)
def test_broken_framing_is_an_error(wire):
    with pytest.raises(spdy.SpdyError):
        spdy.Reader().feed(wire)


def test_oversized_payloads_are_refused():
    with pytest.raises(ValueError):
        spdy.Writer.data(1, b"x" * (spdy.MAX_LENGTH + 1))
