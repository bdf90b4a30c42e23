"""Packet files, both directions, stdlib only.

The writer makes pcapng (little-endian, nanosecond timestamps, one interface
description per captured interface, a name-resolution block so Wireshark
shows pod names). Every block goes out in one write() call, so a file or pipe
cut between blocks is still a valid capture.

The reader takes classic pcap (either byte order, micro- or nanosecond
magic) and pcapng (either byte order, several sections, any if_tsresol;
EPB, SPB and the obsolete PB; unknown blocks skipped), from a regular file
(mmap) or from a pipe. A damaged or truncated tail is not an exception: the
packets before it are yielded, the damage is described in `problems`.
`PacketFile.raw()` is the fast path: (interface, ticks, buffer, offset,
caplen, wirelen) without slicing, for readers that decode with
struct.unpack_from straight from the mapped file.
"""

from __future__ import annotations

import mmap
import os
import stat
import struct
from collections.abc import Generator, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, NamedTuple

from netlab.errors import NetlabError

LINKTYPE_ETHERNET = 1
SHB, IDB, PB, SPB, NRB, ISB, EPB = 0x0A0D0D0A, 1, 2, 3, 4, 5, 6
BYTE_ORDER_MAGIC = 0x1A2B3C4D
PCAP_MAGICS = {  # first four bytes, read little-endian -> (byte order, ticks per second)
    0xA1B2C3D4: ("<", 10**6),
    0xD4C3B2A1: (">", 10**6),
    0xA1B23C4D: ("<", 10**9),
    0x4D3CB2A1: (">", 10**9),
}
OPT_END, OPT_COMMENT = 0, 1
IF_NAME, IF_DESCRIPTION, IF_TSRESOL, IF_TSOFFSET = 2, 3, 9, 14
EPB_FLAGS = 2
EPB_INBOUND, EPB_OUTBOUND = 1, 2
SHB_USERAPPL = 4
NRB_IPV4 = 1
MAX_BLOCK = 1 << 28  # larger "blocks" are damage, not packets
RELEASE_EVERY = 4 << 20  # mmap pages handed back to the page cache this often
SPAN = 4 << 20  # bytes of packet blocks per fast-path span
CHUNK = 1 << 20  # pipe reads

_U32 = struct.Struct("<I")
_HDR = struct.Struct("<II")
_EPB_HEAD = struct.Struct("<7I")


class CaptureFileError(NetlabError):
    """The file is not a packet capture at all (or cannot be read)."""


class Record(NamedTuple):
    interface: int  # index into PacketFile.interfaces
    ts_ns: int  # nanoseconds since the epoch
    data: bytes
    wirelen: int  # length on the wire (data may be shorter: snaplen)


@dataclass
class Interface:
    """One captured interface (a pcapng IDB, or the single one of a pcap)."""

    index: int
    linktype: int = LINKTYPE_ETHERNET
    name: str | None = None
    description: str | None = None
    snaplen: int = 0
    ticks_per_sec: int = 10**6
    offset_s: int = 0  # if_tsoffset

    def ts_ns(self, ticks: int) -> int:
        per = self.ticks_per_sec
        ns = ticks * (10**9 // per) if 10**9 % per == 0 else ticks * 10**9 // per
        return ns + self.offset_s * 10**9 if self.offset_s else ns

    @property
    def label(self) -> str:
        return self.name or self.description or f"if{self.index}"


# ---------------------------------------------------------------- writing


def _option(code: int, value: bytes) -> bytes:
    return struct.pack("<HH", code, len(value)) + value + b"\0" * (-len(value) % 4)


def _options(options: list[bytes]) -> bytes:
    return b"".join(options) + _option(OPT_END, b"") if options else b""


def _block(btype: int, body: bytes) -> bytes:
    length = 12 + len(body)
    return struct.pack("<II", btype, length) + body + struct.pack("<I", length)


class PcapngWriter:
    """Write a pcapng file: section header now, then interfaces, names, packets."""

    def __init__(self, stream: BinaryIO, application: str = "netlab"):
        self.stream = stream
        self._interfaces = 0
        body = struct.pack("<IHHq", BYTE_ORDER_MAGIC, 1, 0, -1)
        body += _options([_option(SHB_USERAPPL, application.encode())])
        stream.write(_block(SHB, body))

    def add_interface(
        self,
        name: str,
        description: str | None = None,
        linktype: int = LINKTYPE_ETHERNET,
        snaplen: int = 262144,
    ) -> int:
        """Describe one interface; returns its id for write_packet()."""
        options = [_option(IF_NAME, name.encode())]
        if description:
            options.append(_option(IF_DESCRIPTION, description.encode()))
        options.append(_option(IF_TSRESOL, b"\x09"))  # 10^-9 s
        body = struct.pack("<HHI", linktype, 0, snaplen) + _options(options)
        self.stream.write(_block(IDB, body))
        self._interfaces += 1
        return self._interfaces - 1

    def write_names(self, records: Iterable[tuple[str, str]]) -> None:
        """A name-resolution block: (IPv4 address, name) pairs."""
        body = b""
        for ip, name in records:
            value = bytes(int(x) for x in ip.split(".")) + name.encode() + b"\0"
            body += struct.pack("<HH", NRB_IPV4, len(value)) + value + b"\0" * (-len(value) % 4)
        if body:
            self.stream.write(_block(NRB, body + struct.pack("<HH", 0, 0)))

    def write_packet(
        self,
        interface: int,
        ts_ns: int,
        data: bytes,
        wirelen: int | None = None,
        outbound: bool | None = None,
    ) -> None:
        if not 0 <= interface < self._interfaces:
            raise ValueError(f"interface {interface} was not added")
        caplen = len(data)
        pad = -caplen % 4
        opts = b""
        if outbound is not None:
            flags = EPB_OUTBOUND if outbound else EPB_INBOUND
            opts = struct.pack("<HHIHH", EPB_FLAGS, 4, flags, OPT_END, 0)
        length = 32 + caplen + pad + len(opts)
        wirelen = caplen if wirelen is None else wirelen
        head = _EPB_HEAD.pack(
            EPB, length, interface, ts_ns >> 32, ts_ns & 0xFFFFFFFF, caplen, wirelen
        )
        self.stream.write(b"".join((head, data, b"\0" * pad, opts, _U32.pack(length))))

    def flush(self) -> None:
        self.stream.flush()


# ---------------------------------------------------------------- reading


def _parse_options(body: bytes | memoryview, order: str) -> Iterator[tuple[int, bytes]]:
    pos, end = 0, len(body)
    head = struct.Struct(order + "HH")
    while pos + 4 <= end:
        code, length = head.unpack_from(body, pos)
        if code == OPT_END:
            return
        yield code, bytes(body[pos + 4 : pos + 4 + length])
        pos += 4 + length + (-length % 4)


def _ticks_per_sec(value: int) -> int:
    return 2 ** (value & 0x7F) if value & 0x80 else 10 ** (value & 0x7F)


class PacketFile:
    """A pcap or pcapng file (or stream), read once, front to back.

    `interfaces` fills in as the file is read (pcapng describes interfaces
    before their packets); `problems` lists damage found, as sentences.
    """

    def __init__(self, source: str | Path | BinaryIO, name: str | None = None):
        self._own = isinstance(source, (str, Path))
        if self._own:
            self.name = name or str(source)
            try:
                self._stream: BinaryIO = open(source, "rb")  # closed by close()
            except OSError as exc:
                raise CaptureFileError(f"{self.name}: cannot open ({exc.strerror})") from exc
        else:
            self._stream = source
            self.name = name or getattr(source, "name", None) or "<stream>"
            if not isinstance(self.name, str):
                self.name = "<stream>"
        self.interfaces: list[Interface] = []
        self.problems: list[str] = []
        self.packets = 0  # packets yielded so far
        self.format = ""
        self._map: mmap.mmap | None = None
        self._started = False
        self._head = b""
        self._order = "<"  # of the current pcapng section, or of the pcap file
        self._ifmap: list[int] = []  # section-local interface id -> index
        self._released = 0
        self._open_map()
        self._sniff()

    # -- opening --------------------------------------------------------------

    def _open_map(self) -> None:
        try:
            fd = self._stream.fileno()
            info = os.fstat(fd)
        except (AttributeError, OSError, ValueError):
            return
        if not stat.S_ISREG(info.st_mode) or info.st_size == 0:
            return
        try:
            start = self._stream.tell() if not self._own else 0
        except OSError:
            return
        if start:  # a stream already partly read: stay with reads
            return
        try:
            self._map = mmap.mmap(fd, 0, access=mmap.ACCESS_READ)
        except (OSError, ValueError):
            return
        if hasattr(mmap, "MADV_SEQUENTIAL"):
            self._map.madvise(mmap.MADV_SEQUENTIAL)

    def _sniff(self) -> None:
        head = bytes(self._map[:4]) if self._map is not None else self._read_exact(4)
        self._head = head
        fix = "capture with `netlab capture ... -w FILE` (or tcpdump/tshark -w)"
        if not head:
            self.close()
            raise CaptureFileError(f"{self.name}: empty file, no packets; {fix}")
        if len(head) < 4:
            self.close()
            raise CaptureFileError(f"{self.name}: only {len(head)} bytes, not a capture; {fix}")
        magic = _U32.unpack(head)[0]
        if magic == SHB:
            self.format = "pcapng"
        elif magic in PCAP_MAGICS:
            self.format = "pcap"
        else:
            self.close()
            raise CaptureFileError(
                f"{self.name}: not a pcap or pcapng file (magic {head.hex()}); {fix}"
            )

    def _read_exact(self, n: int) -> bytes:
        parts, want = [], n
        while want:
            chunk = self._stream.read(want)
            if not chunk:
                break
            parts.append(chunk)
            want -= len(chunk)
        return b"".join(parts)

    def close(self) -> None:
        if self._map is not None:
            self._map.close()
            self._map = None
        if self._own:
            self._stream.close()

    def __enter__(self) -> PacketFile:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- iteration --------------------------------------------------------------

    def __iter__(self) -> Iterator[Record]:
        interfaces = self.interfaces
        for index, ticks, buf, offset, caplen, wirelen in self.raw():
            yield Record(
                index, interfaces[index].ts_ns(ticks), bytes(buf[offset : offset + caplen]), wirelen
            )

    def raw(self) -> Iterator[tuple[int, int, bytes | mmap.mmap, int, int, int]]:
        """(interface index, ticks, buffer, offset, caplen, wirelen) per packet.

        The packet is buffer[offset:offset + caplen], valid until the next
        item; ticks converts with interfaces[index].ts_ns(). Read once."""
        if self._started:
            raise RuntimeError(f"{self.name}: a PacketFile is read once")
        self._started = True
        scan = self._scan_pcapng if self.format == "pcapng" else self._scan_pcap
        if self._map is not None:
            return scan(self._map, 0, len(self._map), 0, True)
        return self._from_stream(scan)

    def spans(self) -> Generator[tuple, tuple[int, int], None] | None:
        """The fast path, for a mapped little-endian pcapng file (None for
        anything else: use raw() then).

        A generator of (buffer, pos, limit, ifmap, singles). The consumer
        walks the enhanced packet blocks from pos on itself, as long as each
        is whole before limit (and its interface id is in ifmap, which maps
        this section's ids to `interfaces` indexes), then sends back (stop,
        packets): where it stopped and how many packets it took. The reader
        takes the block at stop (other block types, damage, truncation) and
        yields the next span. `singles` are raw() tuples of packets from
        blocks the consumer does not walk (SPB, PB, a refused EPB)."""
        if self._started:
            raise RuntimeError(f"{self.name}: a PacketFile is read once")
        if self._map is None or self.format != "pcapng" or self._map[8:12] != b"\x4d\x3c\x2b\x1a":
            return None
        self._started = True
        return self._spans(self._map)

    def _spans(self, buf: mmap.mmap) -> Generator[tuple, tuple[int, int], None]:
        end, pos, refused = len(buf), 0, -1
        release = RELEASE_EVERY
        while True:
            singles: list[tuple] = []
            while pos is not None and pos < end:
                if pos != refused and pos + 12 <= end and _HDR.unpack_from(buf, pos)[0] == EPB:
                    break
                pos = self._one_block(buf, pos, end, singles)
            if pos is None or pos >= end:
                if singles:
                    yield buf, end, end, (), singles
                return
            stop, taken = yield buf, pos, min(end, pos + SPAN), tuple(self._ifmap), singles
            self.packets += taken
            refused = pos if stop == pos else -1
            pos = stop
            if pos > release:
                release = self._release(pos)

    def _one_block(self, buf, pos: int, end: int, singles: list) -> int | None:
        """Read the one block at pos with the general scanner; the offset
        after it, or None when the file stops there (damage or truncation)."""
        length = _HDR.unpack_from(buf, pos)[1] if pos + 8 <= end else 0
        stop = pos + length if 12 <= length and pos + length <= end else end
        problems = len(self.problems)
        singles.extend(self._scan_pcapng(buf, pos, stop, 0, True))
        if len(self.problems) > problems:
            return None
        return stop

    def _from_stream(self, scan) -> Iterator:
        """Feed a pipe to the scanner as data arrives (read1: whatever is
        there, so a live capture shows packets as they come); a block cut
        by a read waits for the next one."""
        read = getattr(self._stream, "read1", self._stream.read)
        buf, base, eof = self._head, 0, False
        while True:
            if not eof:
                more = read(CHUNK)
                eof = not more
                buf += more
            used = yield from scan(buf, 0, len(buf), base, eof)
            if used is None or eof:  # stopped for good, or all done
                return
            buf, base = buf[used:], base + used

    def _problem(self, offset: int, what: str) -> None:
        self.problems.append(
            f"{self.name}: {what} after packet {self.packets} at byte {offset}; "
            f"the packets before it were read"
        )

    def _truncated(self, offset: int, says: int, remain: int) -> None:
        self.problems.append(
            f"{self.name}: truncated after packet {self.packets} at byte {offset}: "
            f"block says {says} bytes, {remain} remain; the packets before it were read"
        )

    # -- classic pcap -----------------------------------------------------------

    def _scan_pcap(self, buf, pos: int, end: int, base: int, final: bool):
        """Yields packets; returns the offset to resume from when more data
        is needed (not final), None when done or stopped."""
        if not self.interfaces:
            if end - pos < 24:
                if final:
                    self._truncated(base + pos, 24, end - pos)
                    return None
                return pos
            order, per_sec = PCAP_MAGICS[_U32.unpack_from(buf, pos)[0]]
            snaplen, network = struct.unpack_from(order + "II", buf, pos + 16)
            self.interfaces.append(Interface(0, network & 0x0FFFFFFF, None, None, snaplen, per_sec))
            self._order = order
            pos += 24
        record = struct.Struct(self._order + "IIII")
        unpack = record.unpack_from
        per_sec = self.interfaces[0].ticks_per_sec
        mapped = buf is self._map
        release = pos + RELEASE_EVERY
        while True:
            if pos + 16 > end:
                if pos == end:
                    return None if final else pos
                if final:
                    self._truncated(base + pos, 16, end - pos)
                    return None
                return pos
            sec, frac, caplen, wirelen = unpack(buf, pos)
            if caplen > MAX_BLOCK:
                self._problem(base + pos, f"a damaged record (captured length {caplen})")
                return None
            nxt = pos + 16 + caplen
            if nxt > end:
                if final:
                    self._truncated(base + pos, 16 + caplen, end - pos)
                    return None
                return pos
            self.packets += 1
            yield 0, sec * per_sec + frac, buf, pos + 16, caplen, wirelen
            pos = nxt
            if mapped and pos > release:
                release = self._release(pos)

    def _release(self, pos: int) -> int:
        """Hand pages already read back to the page cache, so the resident
        size stays flat however large the file (they fault back in if read)."""
        upto = pos - pos % mmap.PAGESIZE - mmap.PAGESIZE
        if upto > self._released and hasattr(mmap, "MADV_DONTNEED"):
            self._map.madvise(mmap.MADV_DONTNEED, self._released, upto - self._released)
            self._released = upto
        return pos + RELEASE_EVERY

    # -- pcapng ---------------------------------------------------------------

    def _scan_pcapng(self, buf, pos: int, end: int, base: int, final: bool):
        hdr = struct.Struct(self._order + "II")
        epb = struct.Struct(self._order + "IIIII")
        ifmap = self._ifmap
        mapped = buf is self._map
        release = pos + RELEASE_EVERY
        while True:
            if pos + 12 > end:
                if pos == end:
                    return None if final else pos
                if final:
                    self._truncated(base + pos, 12, end - pos)
                    return None
                return pos
            btype, length = hdr.unpack_from(buf, pos)
            if btype == EPB:
                nxt = pos + length
                if nxt > end or length < 32:
                    break
                ifid, high, low, caplen, wirelen = epb.unpack_from(buf, pos + 8)
                if caplen > length - 32 or ifid >= len(ifmap):
                    break
                self.packets += 1
                yield ifmap[ifid], (high << 32) | low, buf, pos + 28, caplen, wirelen
                pos = nxt
                if mapped and pos > release:
                    release = self._release(pos)
                continue
            if btype == SHB:
                magic = buf[pos + 8 : pos + 12]
                order = "<" if magic == b"\x4d\x3c\x2b\x1a" else ">"
                if magic not in (b"\x4d\x3c\x2b\x1a", b"\x1a\x2b\x3c\x4d"):
                    self._problem(base + pos, "a section header with a bad byte-order magic")
                    return None
                self._order = order
                hdr = struct.Struct(order + "II")
                epb = struct.Struct(order + "IIIII")
                length = hdr.unpack_from(buf, pos)[1]
                ifmap = self._ifmap = []
            if length < 12 or length % 4 or length > MAX_BLOCK:
                self._problem(base + pos, f"a damaged block (type {btype:#x}, length {length})")
                return None
            nxt = pos + length
            if nxt > end:
                break
            body = buf[pos + 8 : nxt - 4]
            try:
                if btype == IDB:
                    self._add_idb(body, ifmap)
                elif btype == SPB and ifmap:
                    (wirelen,) = struct.unpack_from(self._order + "I", body)
                    caplen = min(
                        wirelen, length - 16, self.interfaces[ifmap[0]].snaplen or MAX_BLOCK
                    )
                    self.packets += 1
                    yield ifmap[0], 0, buf, pos + 12, caplen, wirelen
                elif btype == PB:
                    ifid, _drops, high, low, caplen, wirelen = struct.unpack_from(
                        self._order + "HHIIII", body
                    )
                    if caplen > length - 32 or ifid >= len(ifmap):
                        raise struct.error("bad lengths")
                    self.packets += 1
                    yield ifmap[ifid], (high << 32) | low, buf, pos + 28, caplen, wirelen
                # NRB: names come from the address book (Wireshark shows these); others: skipped
            except struct.error:
                self._problem(base + pos, f"a damaged block (type {btype:#x}, length {length})")
                return None
            pos = nxt
        # an EPB or block that does not fit: more data, truncation or damage
        btype, length = hdr.unpack_from(buf, pos)
        if length < 12 or length % 4 or length > MAX_BLOCK:
            self._problem(base + pos, f"a damaged block (type {btype:#x}, length {length})")
            return None
        if pos + length > end:
            if not final:
                return pos
            self._truncated(base + pos, length, end - pos)
            return None
        if btype == EPB:
            ifid, _h, _l, caplen, _w = epb.unpack_from(buf, pos + 8)
            what = (
                f"a packet on interface {ifid}, which no interface block describes"
                if ifid >= len(ifmap)
                else f"a damaged packet block (captured length {caplen} in a block of {length})"
            )
        else:
            what = f"a damaged block (type {btype:#x})"
        self._problem(base + pos, what)
        return None

    def _add_idb(self, body: bytes, ifmap: list[int]) -> None:
        order = self._order
        linktype, _reserved, snaplen = struct.unpack_from(order + "HHI", body)
        iface = Interface(len(self.interfaces), linktype, snaplen=snaplen)
        for code, value in _parse_options(body[8:], order):
            if code == IF_NAME:
                iface.name = value.rstrip(b"\0").decode("utf-8", "replace")
            elif code == IF_DESCRIPTION:
                iface.description = value.rstrip(b"\0").decode("utf-8", "replace")
            elif code == IF_TSRESOL and value:
                iface.ticks_per_sec = _ticks_per_sec(value[0])
            elif code == IF_TSOFFSET and len(value) == 8:
                iface.offset_s = struct.unpack(order + "q", value)[0]
        ifmap.append(iface.index)
        self.interfaces.append(iface)


def read(source: str | Path | BinaryIO) -> Iterator[Record]:
    """Every packet of a capture file or stream, as Records."""
    with PacketFile(source) as packets:
        yield from packets
