"""The packet-file layer: pcapng writer, pcap/pcapng reader, damage reporting."""

from __future__ import annotations

import io
import os
import struct
import threading

import pytest

from netlab.capture.pcapng import CaptureFileError, PacketFile, PcapngWriter, read
from tests.unit.test_inspect_fixtures import needs_tshark, tshark

FRAMES = [bytes([i]) * (60 + 7 * i) for i in range(5)]  # lengths not multiples of 4
T = 1_700_000_000_123_456_789


def written(tmp_path, frames=FRAMES, names=True):
    path = tmp_path / "w.pcapng"
    with open(path, "wb") as stream:
        w = PcapngWriter(stream)
        a = w.add_interface("node/n1:eth0", "underlay of n1")
        b = w.add_interface("pod/web-0:eth0")
        if names:
            w.write_names([("10.244.1.3", "web-0"), ("192.168.1.11", "node/n1")])
        for n, data in enumerate(frames):
            w.write_packet(
                a if n % 2 == 0 else b, T + n, data, wirelen=len(data) + n, outbound=n % 2 == 0
            )
    return path


def test_round_trip(tmp_path):
    path = written(tmp_path)
    with PacketFile(path) as capture:
        records = list(capture)
        assert [i.name for i in capture.interfaces] == ["node/n1:eth0", "pod/web-0:eth0"]
        assert capture.interfaces[0].description == "underlay of n1"
        assert capture.interfaces[0].ticks_per_sec == 10**9
        assert capture.problems == []
    assert [r.data for r in records] == FRAMES
    assert [r.ts_ns for r in records] == [T + n for n in range(len(FRAMES))]
    assert [r.wirelen for r in records] == [len(f) + n for n, f in enumerate(FRAMES)]
    assert [r.interface for r in records] == [0, 1, 0, 1, 0]


def test_reads_streams_and_pipes(tmp_path):
    data = written(tmp_path).read_bytes()
    assert [r.data for r in read(io.BytesIO(data))] == FRAMES
    rfd, wfd = os.pipe()

    def feed():
        with os.fdopen(wfd, "wb") as w:
            for i in range(0, len(data), 37):  # dribbled: blocks cut across reads
                w.write(data[i : i + 37])

    thread = threading.Thread(target=feed)
    thread.start()
    with os.fdopen(rfd, "rb") as r:
        assert [rec.data for rec in read(r)] == FRAMES
    thread.join()


def test_every_block_is_one_write(tmp_path):
    class Recorder(io.BytesIO):
        sizes: list[int] = []

        def write(self, b):
            self.sizes.append(len(b))
            return super().write(b)

    stream = Recorder()
    w = PcapngWriter(stream)
    w.add_interface("x")
    w.write_packet(0, 1, b"abc")
    data = stream.getvalue()
    pos = 0
    for size in stream.sizes:  # each write() is exactly one whole block
        assert struct.unpack_from("<I", data, pos + 4)[0] == size
        pos += size
    with pytest.raises(ValueError):
        w.write_packet(3, 1, b"abc")


@needs_tshark
def test_tshark_reads_the_writer(tmp_path):
    path = written(tmp_path)
    fields = ["-T", "fields", "-e", "frame.interface_name", "-e", "frame.interface_description"]
    fields += ["-e", "frame.len", "-e", "frame.cap_len", "-e", "frame.time_epoch"]
    lines = tshark("-r", str(path), *fields).splitlines()
    assert len(lines) == len(FRAMES)
    first = lines[0].split("\t")
    assert first[:4] == ["node/n1:eth0", "underlay of n1", str(len(FRAMES[0])), str(len(FRAMES[0]))]
    assert first[4] == "1700000000.123456789"
    assert lines[1].split("\t")[0] == "pod/web-0:eth0"
    directions = tshark("-r", str(path), "-T", "fields", "-e", "frame.packet_flags_direction")
    assert directions.split()[:2] == ["0x00000002", "0x00000001"]  # outbound, inbound
    # cut between blocks: still a valid capture for tshark, and for us
    data = path.read_bytes()
    cut = tmp_path / "cut.pcapng"
    ends = _block_ends(data)
    cut.write_bytes(data[: ends[-2]])
    assert len(tshark("-r", str(cut), "-T", "fields", "-e", "frame.len").split()) == len(FRAMES) - 1
    with PacketFile(cut) as capture:
        assert len(list(capture)) == len(FRAMES) - 1 and capture.problems == []


@needs_tshark
def test_tshark_shows_the_names_block(tmp_path):
    path = tmp_path / "n.pcapng"
    frame = bytes.fromhex("ffffffffffff020000000001080045000014000100004000f9a8") + bytes(
        [192, 168, 1, 11, 10, 244, 1, 3]
    )
    with open(path, "wb") as stream:
        w = PcapngWriter(stream)
        w.add_interface("x")
        w.write_names([("10.244.1.3", "web-0"), ("192.168.1.11", "node/n1")])
        w.write_packet(0, 1, frame)
    names = "nameres.use_external_name_resolver:FALSE"  # the file's names only, no DNS
    fields = ["-T", "fields", "-e", "ip.src_host", "-e", "ip.dst_host"]
    out = tshark("-r", str(path), "-N", "n", "-o", names, *fields)
    assert out.split() == ["node/n1", "web-0"]


def _block_ends(data: bytes) -> list[int]:
    pos, ends = 0, []
    while pos < len(data):
        pos += struct.unpack_from("<I", data, pos + 4)[0]
        ends.append(pos)
    return ends


# ---------------------------------------------------------------- classic pcap


def classic(order: str, nano: bool, frames=FRAMES, snaplen=65535) -> bytes:
    magic = 0xA1B23C4D if nano else 0xA1B2C3D4
    out = struct.pack(order + "IHHiIII", magic, 2, 4, 0, 0, snaplen, 1)
    for n, data in enumerate(frames):
        frac = 123456789 if nano else 123456
        out += struct.pack(order + "IIII", 1_700_000_000 + n, frac, len(data), len(data) + 1)
        out += data
    return out


@pytest.mark.parametrize("order", ["<", ">"])
@pytest.mark.parametrize("nano", [False, True])
@pytest.mark.parametrize("as_stream", [False, True])
def test_classic_pcap(tmp_path, order, nano, as_stream):
    data = classic(order, nano)
    path = tmp_path / "c.pcap"
    path.write_bytes(data)
    source = io.BytesIO(data) if as_stream else path
    with PacketFile(source) as capture:
        records = list(capture)
        assert capture.format == "pcap" and capture.problems == []
    assert [r.data for r in records] == FRAMES
    assert records[1].ts_ns == 1_700_000_001 * 10**9 + (123456789 if nano else 123456000)
    assert records[0].wirelen == len(FRAMES[0]) + 1


# ---------------------------------------------------------------- pcapng variants


def block(order: str, btype: int, body: bytes) -> bytes:
    body += b"\0" * (-len(body) % 4)
    return (
        struct.pack(order + "II", btype, 12 + len(body))
        + body
        + struct.pack(order + "I", 12 + len(body))
    )


def option(order: str, code: int, value: bytes) -> bytes:
    return struct.pack(order + "HH", code, len(value)) + value + b"\0" * (-len(value) % 4)


def section(order: str) -> bytes:
    return block(order, 0x0A0D0D0A, struct.pack(order + "IHHq", 0x1A2B3C4D, 1, 0, -1))


def idb(order: str, name: str, tsresol: int | None = None, snaplen: int = 0) -> bytes:
    opts = option(order, 2, name.encode())
    if tsresol is not None:
        opts += option(order, 9, bytes([tsresol]))
    return block(order, 1, struct.pack(order + "HHI", 1, 0, snaplen) + opts + option(order, 0, b""))


def epb(order: str, ifid: int, ticks: int, data: bytes) -> bytes:
    head = struct.pack(order + "IIIII", ifid, ticks >> 32, ticks & 0xFFFFFFFF, len(data), len(data))
    return block(order, 6, head + data)


@pytest.mark.parametrize("order", ["<", ">"])
def test_pcapng_sections_resolutions_and_old_blocks(order):
    data = section(order)
    data += idb(order, "a")  # default resolution: microseconds
    data += idb(order, "b", tsresol=0x80 | 10)  # 2^-10 s
    data += epb(order, 0, 1_500_000, FRAMES[0])
    data += epb(order, 1, 3 * 1024, FRAMES[1])
    data += block(order, 0x0BAD, b"unknown block, skipped")
    data += block(order, 3, struct.pack(order + "I", len(FRAMES[2])) + FRAMES[2])  # SPB
    pb = struct.pack(order + "HHIIII", 1, 0, 0, 2048, len(FRAMES[3]), len(FRAMES[3]))
    data += block(order, 2, pb + FRAMES[3])  # the obsolete packet block
    other = ">" if order == "<" else "<"
    data += section(other) + idb(other, "c", tsresol=6) + epb(other, 0, 7, FRAMES[4])
    with PacketFile(io.BytesIO(data)) as capture:
        records = list(capture)
        assert capture.problems == []
        assert [i.name for i in capture.interfaces] == ["a", "b", "c"]
    assert [r.data for r in records] == FRAMES
    assert [r.interface for r in records] == [0, 1, 0, 1, 2]
    assert records[0].ts_ns == 1_500_000_000
    assert records[1].ts_ns == 3 * 10**9
    assert records[3].ts_ns == 2 * 10**9
    assert records[4].ts_ns == 7000


# ---------------------------------------------------------------- damage


@pytest.mark.parametrize("kind", ["pcapng", "pcap"])
@pytest.mark.parametrize("as_stream", [False, True])
@pytest.mark.parametrize("into_block", [1, 9, 30])
def test_truncated_in_a_block(tmp_path, kind, as_stream, into_block):
    if kind == "pcapng":
        data = written(tmp_path).read_bytes()
        cut = _block_ends(data)[-3] + into_block  # inside the fourth packet's block
        whole = 3
    else:
        data = classic("<", False)
        cut = 24 + sum(16 + len(f) for f in FRAMES[:2]) + into_block
        whole = 2
    path = tmp_path / f"lab.{kind}"
    path.write_bytes(data[:cut])
    with PacketFile(io.BytesIO(data[:cut]) if as_stream else path, name="lab") as capture:
        records = list(capture)
        assert [r.data for r in records] == FRAMES[:whole]
        assert len(capture.problems) == 1
        problem = capture.problems[0]
    assert problem.startswith(f"lab: truncated after packet {whole} at byte ")
    assert "remain; the packets before it were read" in problem


def test_damaged_block_length(tmp_path):
    data = bytearray(written(tmp_path).read_bytes())
    at = _block_ends(bytes(data))[-2]
    data[at + 4 : at + 8] = struct.pack("<I", 7)  # a block length no block can have
    for source in (io.BytesIO(bytes(data)), _saved(tmp_path, data)):
        with PacketFile(source, name="x") as capture:
            assert [r.data for r in capture] == FRAMES[:4]
            assert "damaged block" in capture.problems[0]


def _saved(tmp_path, data) -> os.PathLike:
    path = tmp_path / "saved.pcapng"
    path.write_bytes(bytes(data))
    return path


@pytest.mark.parametrize(
    "content, words",
    [
        (b"GET / HTTP/1.1\r\n\r\n", "not a pcap or pcapng file (magic 47455420)"),
        (b"", "empty file"),
        (b"\x0a\x0d", "only 2 bytes"),
    ],
)
def test_not_a_capture(tmp_path, content, words):
    path = tmp_path / "notes.txt"
    path.write_bytes(content)
    with pytest.raises(CaptureFileError) as caught:
        PacketFile(path)
    assert str(caught.value).startswith(f"{path}: {words}")
    assert "netlab capture" in str(caught.value)


def test_missing_file(tmp_path):
    with pytest.raises(CaptureFileError, match="cannot open"):
        PacketFile(tmp_path / "nope.pcapng")


def test_fast_spans_match_raw(tmp_path):
    """The fast path (spans) sees the same packets as raw()."""
    path = written(tmp_path)
    with PacketFile(path) as a:
        spans = a.spans()
        assert spans is not None
        seen = []
        item = next(spans)
        try:
            while True:
                buf, pos, limit, ifmap, singles = item
                seen += [bytes(b[o : o + n]) for _g, _t, b, o, n, _w in singles]
                taken = 0
                while pos + 28 <= limit:
                    btype, length, _i, _h, _l, caplen = struct.unpack_from("<6I", buf, pos)
                    if btype != 6 or pos + length > limit:
                        break
                    seen.append(bytes(buf[pos + 28 : pos + 28 + caplen]))
                    taken += 1
                    pos += length
                item = spans.send((pos, taken))
        except StopIteration:
            pass
        assert a.packets == len(FRAMES)
    assert seen == FRAMES
