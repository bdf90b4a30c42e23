"""The hot path of the flow summary: every frame of a capture counted into a
table keyed by raw address and port bytes, one entry per direction of a
conversation per interface.

Straight from the mapped file: one precompiled struct per packet over the
pcapng block and the headers (see PacketFile.spans()); nothing per packet is
kept, so memory stays flat in the file's size. Frames off the common path
(tags, IP options, tunnels other than VXLAN, non-IP) go through frames.py,
and so does everything read from a pipe or a classic pcap (_scan_raw). The
views (flows, tshark-like conversations) are in flows.py.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable
from dataclasses import dataclass, field

from netlab.capture.addressbook import VXLAN_PORTS
from netlab.capture.pcapng import PacketFile
from netlab.inspect import forking, frames

PROTOCOLS = {frames.TCP: "tcp", frames.UDP: "udp", frames.ICMP: "icmp"}

# from the Ethernet type on: ethertype, IPv4 (version/IHL, total length,
# flags/fragment, protocol, src, dst) and the first four bytes after it (ports)
_OUTER = struct.Struct(">HBxHxxHxB2x4s4sHH")
# from the VXLAN header on: flags, VNI << 8, inner Ethernet type, inner IPv4, ports
_VXLAN = struct.Struct(">B3xI12xHBxHxxHxB2x4s4sHH")
# the fast path, from an enhanced packet block's start, all little-endian: block
# type, length, interface, (time skipped), caplen, wirelen; then as above, outer
# src+dst as 8 bytes; then VXLAN's VNI, inner Ethernet type, inner IPv4, inner
# src+dst+ports as 12 bytes, inner TCP flags
_FAST = struct.Struct("<3I8x2I12xHBxHxxHxB2x8sHH8x3sx12xHBxHxxHxB2x12s9xB")
_EPB_TIME = struct.Struct("<5I")  # type, length, interface, time high, low (also a PB's)
SPLIT_MIN = 16 << 20  # files this big (from the first packet on) are read by two processes
_MIN_OUTER = 12 + _OUTER.size  # 38
_VX_AT = 42  # Ethernet 14 + IPv4 20 + UDP 8
_MIN_VX = _VX_AT + _VXLAN.size  # 88: inner headers through the ports
_INNER_FLAGS = _MIN_VX - 4 + 13  # inner TCP flags byte
_OUTER_FLAGS = 34 + 13

# per direction: packets, bytes, first ticks, last ticks, SYN bits seen, first packet's place
PACKETS, BYTES, FIRST, LAST, SYN, ORDER = range(6)
# TCP flags byte -> SYN bits: 1 a SYN without ACK (a client's), 2 a SYN-ACK (a server's)
SYN_BITS = bytes(1 if f & 0x12 == 0x02 else 2 if f & 0x12 == 0x12 else 0 for f in range(256))


@dataclass
class Tally:
    """The counts of one capture: {(interface, *frames key): stats}, stats
    as PACKETS..ORDER say (ORDER: any number that sorts keys by their first
    packet's place in the file)."""

    name: str
    table: dict[tuple, list] = field(default_factory=dict)
    ticks_to_ns: list = field(default_factory=list)  # per interface: ticks -> ns
    interfaces: list[str] = field(default_factory=list)
    packets: int = 0
    undecoded: int = 0  # frames without an IPv4 header tshark would count, nor ARP
    problems: list[str] = field(default_factory=list)


def scan(
    packets: PacketFile, overlay_ports: Iterable[int] = VXLAN_PORTS, split_min: int = SPLIT_MIN
) -> Tally:
    """Count every frame of the file into a Tally (a mapped pcapng of at
    least split_min bytes is read by two processes when there are two CPUs)."""
    overlay = frozenset(overlay_ports) | frozenset(VXLAN_PORTS)
    table: dict[tuple, list] = {}
    spans = packets.spans()
    if spans is None:
        undecoded = _scan_raw(packets, table, overlay)
    else:
        undecoded, table = _scan_spans(spans, packets, table, overlay, split_min)
    return Tally(
        packets.name,
        table,
        [i.ts_ns for i in packets.interfaces],
        [i.label for i in packets.interfaces],
        packets.packets,
        undecoded,
        list(packets.problems),
    )


def _count(table: dict, key: tuple, flags: int, wirelen: int, first: int, last: int) -> None:
    stats = table.get(key)
    if stats is None:
        table[key] = [1, wirelen, first, last, flags]
    else:
        stats[0] += 1
        stats[1] += wirelen
        stats[3] = last
        stats[4] |= flags


def _scan_spans(
    spans, packets: PacketFile, table: dict, overlay: frozenset, split_min: int = SPLIT_MIN
) -> tuple[int, dict]:
    """Walk the spans, the second half of a big file in a forked child
    (see forking.py); then read the times of each key's first and last
    packets from their block offsets."""
    walk = _Walk(table)
    item = next(spans, None)
    if item is None:
        return 0, {}

    def read_rest(start: int) -> _Walk | None:  # in the child: from start to the end
        interfaces, before = len(packets.interfaces), packets.packets
        rest = _Walk({})
        _walk(spans, spans.send((start, 0)), rest, packets, overlay)
        if packets.problems or len(packets.interfaces) != interfaces:
            return None  # the parent reads it again itself, and says what is wrong
        rest.packets = packets.packets - before
        return rest

    split = None
    if len(item[0]) - item[1] >= split_min:
        split = forking.read_rest_in_child(item[0], item[1], len(item[3]), read_rest)
    if split is None:
        _walk(spans, item, walk, packets, overlay)
    else:
        stop_at, child = split
        how, found = _walk(spans, item, walk, packets, overlay, stop_at, item[3])
        other = child.result() if how == "reached" else child.cancel()
        if how == "reached" and other is not None:  # the child read the rest: take it
            walk.add(other)
            _resume(spans, (len(item[0]), found + other.packets))
        elif how == "reached":
            after = _resume(spans, (stop_at, found))
            if after is not None:
                _walk(spans, after, walk, packets, overlay)
        elif how == "astray":
            _walk(spans, found, walk, packets, overlay)
    buf, single_ticks = item[0], walk.single_ticks

    def ticks(offset: int) -> int:
        if offset in single_ticks:
            return single_ticks[offset]
        _t, _l, _i, high, low = _EPB_TIME.unpack_from(buf, offset)
        return (high << 32) | low

    for stats in walk.table.values():  # offsets -> times; the first offset orders keys
        stats.append(stats[FIRST])
        stats[FIRST], stats[LAST] = ticks(stats[FIRST]), ticks(stats[LAST])
    return walk.undecoded, _canonical(walk.table)


def _resume(spans, answer: tuple[int, int]) -> tuple | None:
    """Answer the reader; its next span, or None at the end of the file."""
    try:
        return spans.send(answer)
    except StopIteration:
        return None


@dataclass
class _Walk:
    """What one walk over spans counted (in one process)."""

    table: dict
    undecoded: int = 0
    single_ticks: dict[int, int] = field(default_factory=dict)  # a single's offset -> ticks
    packets: int = 0  # taken from spans, for the reader's count (a child's result)

    def add(self, other: _Walk) -> None:
        """Fold in another walk over a later part of the same file."""
        for key, stats in other.table.items():
            have = self.table.get(key)
            if have is None:
                self.table[key] = stats
            else:
                have[PACKETS] += stats[PACKETS]
                have[BYTES] += stats[BYTES]
                have[LAST] = stats[LAST]
                have[SYN] |= stats[SYN]
        self.undecoded += other.undecoded
        self.single_ticks.update(other.single_ticks)


def _walk(spans, item, walk: _Walk, packets, overlay, stop_at=None, ifmap0=None):
    """The hot loop over spans from `item`: enhanced packet blocks straight
    from the mapped file, one speculative unpack per packet (block header,
    outer headers and, if it is VXLAN, the inner ones), little-endian
    throughout: network fields are compared with byte-swapped constants and
    fixed up once per key. A key's first and last packets are kept as block
    offsets, so nothing per packet is computed that is not needed.

    Returns ("end", None) at the end of the file; with stop_at, ("reached",
    packets taken in this span, not yet sent back) when the walk lands
    exactly on it, or ("astray", the next item, unread) when it cannot (a
    block across stop_at, or interfaces changed on the way)."""
    fast = _FAST.unpack_from
    size = _FAST.size
    overlay_le = frozenset(_swap16(p) for p in overlay)
    table = walk.table
    get = table.get
    synbits = SYN_BITS
    decode = frames.decode
    interfaces = packets.interfaces
    undecoded = walk.undecoded
    counted = undecoded + sum(stats[0] for stats in table.values())
    try:
        while True:
            buf, pos, limit, ifmap, singles = item
            if stop_at is not None:
                if pos > stop_at or ifmap != ifmap0:
                    walk.undecoded = undecoded
                    return "astray", item
                limit = min(limit, stop_at)
            for g, ticks, b, o, caplen, wirelen in singles:
                found = decode(b, o, caplen, interfaces[g].linktype, overlay)
                if found is None:
                    undecoded += 1
                    continue
                walk.single_ticks[o] = ticks
                _count(table, (g, *found[0]), synbits[found[1]], wirelen, o, o)
            ethernet = [g if interfaces[g].linktype == 1 else -1 for g in ifmap]
            room = len(buf) - size  # the last few packets of a file come back as singles
            while pos <= room:
                (
                    btype, blen, ifid, caplen, wirelen,
                    etype, vihl, tlen, frag, proto, addrs, sport, dport,
                    vni, ietype, ivihl, itlen, ifrag, iproto, iaddrs, iflags,
                ) = fast(buf, pos)  # fmt: skip
                if btype != 6 or caplen + 32 > blen or pos + blen > limit:
                    break
                try:
                    g = ethernet[ifid]
                except IndexError:
                    break
                key = None
                if (
                    caplen >= 48
                    and etype == 8
                    and vihl == 0x45
                    and g >= 0
                    and not frag & 0xFF3F
                    and (tlen >= 0x1400 or tlen & 0xFF)
                ):
                    if proto == 17:
                        if dport in overlay_le or sport in overlay_le:
                            if (
                                caplen >= 98
                                and ietype == 8
                                and ivihl == 0x45
                                and not ifrag & 0xFF3F
                                and (itlen >= 0x1400 or itlen & 0xFF)
                            ):
                                if iproto == 6:
                                    flags = synbits[iflags]
                                    key = (g, 6, iaddrs, addrs, vni)
                                elif iproto == 17:
                                    flags = 0
                                    key = (g, 17, iaddrs, addrs, vni)
                        else:
                            flags = 0
                            key = (g, 17, addrs, sport, dport)
                    elif proto == 6:
                        flags = synbits[buf[pos + 75]]
                        key = (g, 6, addrs, sport, dport)
                    elif proto == 1:
                        flags = 0
                        key = (g, 1, addrs, 0, 0)
                if key is None:
                    g = ifmap[ifid]
                    found = decode(buf, pos + 28, caplen, interfaces[g].linktype, overlay)
                    if found is None:
                        undecoded += 1
                    else:
                        _count(table, (g, *found[0]), synbits[found[1]], wirelen, pos, pos)
                else:
                    stats = get(key)
                    if stats is None:
                        table[key] = [1, wirelen, pos, pos, flags]
                    else:
                        stats[0] += 1
                        stats[1] += wirelen
                        stats[3] = pos
                        if flags:
                            stats[4] |= flags
                pos += blen
            total = undecoded + sum(stats[0] for stats in table.values())
            taken, counted = total - counted - len(singles), total
            walk.packets += taken
            if pos == stop_at:
                walk.undecoded = undecoded
                return "reached", taken
            item = spans.send((pos, taken))
    except StopIteration:
        walk.undecoded = undecoded
        return "end", None


def _swap16(value: int) -> int:
    return ((value & 0xFF) << 8) | (value >> 8)


def _canonical(table: dict[tuple, list]) -> dict[tuple, list]:
    """The fast path's keys in the general form (interface, protocol, src,
    dst, sport, dport, outer src, outer dst, tunnel); counts of keys that
    meet (a flow seen on both paths) are added up."""
    out: dict[tuple, list] = {}
    for key, stats in table.items():
        if len(key) == 5:
            g, proto, a, b, c = key
            if len(a) == 12:  # VXLAN: inner addresses and ports, outer addresses, VNI
                sport, dport = int.from_bytes(a[8:10], "big"), int.from_bytes(a[10:12], "big")
                key = (
                    g,
                    proto,
                    a[:4],
                    a[4:8],
                    sport,
                    dport,
                    b[:4],
                    b[4:],
                    int.from_bytes(c, "big"),
                )
            else:
                key = (g, proto, a[:4], a[4:], _swap16(b), _swap16(c), None, None, None)
        have = out.get(key)
        if have is None:
            out[key] = stats
        else:
            have[PACKETS] += stats[PACKETS]
            have[BYTES] += stats[BYTES]
            have[FIRST] = min(have[FIRST], stats[FIRST])
            have[LAST] = max(have[LAST], stats[LAST])
            have[SYN] |= stats[SYN]
            have[ORDER] = min(have[ORDER], stats[ORDER])
    return out


def _scan_raw(packets: PacketFile, table: dict, overlay: frozenset) -> int:
    """The same count over raw() (pipes, classic pcap, big-endian pcapng)."""
    get = table.get
    outer, vxlan = _OUTER.unpack_from, _VXLAN.unpack_from
    decode = frames.decode
    interfaces = packets.interfaces
    ethernet: list[bool] = []
    synbits = SYN_BITS
    undecoded = 0
    for ifx, ticks, buf, o, caplen, wirelen in packets.raw():
        key = None
        if ifx >= len(ethernet):
            ethernet = [i.linktype == frames.LINKTYPE_ETHERNET for i in interfaces]
        if caplen >= _MIN_OUTER and ethernet[ifx]:
            etype, vihl, tlen, frag, proto, src, dst, sport, dport = outer(buf, o + 12)
            if etype == 0x0800 and vihl == 0x45 and tlen >= 20 and not frag & 0x3FFF:
                if proto == 17:
                    if sport in overlay or dport in overlay:
                        if caplen >= _MIN_VX:
                            _f, vni, ietype, ivihl, itlen, ifrag, ip, isrc, idst, isp, idp = vxlan(
                                buf, o + _VX_AT
                            )
                            if (
                                ietype == 0x0800
                                and ivihl == 0x45
                                and itlen >= 20
                                and not ifrag & 0x3FFF
                            ):
                                if ip == 6:
                                    if caplen > _INNER_FLAGS:
                                        flags = synbits[buf[o + _INNER_FLAGS]]
                                        key = (ifx, 6, isrc, idst, isp, idp, src, dst, vni >> 8)
                                elif ip == 17:
                                    flags = 0
                                    key = (ifx, 17, isrc, idst, isp, idp, src, dst, vni >> 8)
                    else:
                        flags = 0
                        key = (ifx, 17, src, dst, sport, dport, None, None, None)
                elif proto == 6:
                    if caplen > _OUTER_FLAGS:
                        flags = synbits[buf[o + _OUTER_FLAGS]]
                        key = (ifx, 6, src, dst, sport, dport, None, None, None)
                elif proto == 1:
                    flags = 0
                    key = (ifx, 1, src, dst, 0, 0, None, None, None)
        if key is None:
            found = decode(buf, o, caplen, interfaces[ifx].linktype, overlay)
            if found is None:
                undecoded += 1
                continue
            rest, flags = found
            key = (ifx, *rest)
            flags = synbits[flags]
        stats = get(key)
        if stats is None:
            table[key] = [1, wirelen, ticks, ticks, flags, packets.packets]
        else:
            stats[0] += 1
            stats[1] += wirelen
            stats[3] = ticks
            if flags:
                stats[4] |= flags
    return undecoded


def merge(tallies: list[Tally]) -> Tally:
    """One Tally of several captures, read one after the other (interfaces
    named FILE:INTERFACE; keys of a later file come after an earlier's)."""
    if len(tallies) == 1:
        return tallies[0]
    out = Tally(", ".join(t.name for t in tallies))
    order = 0
    for t in tallies:
        offset = len(out.interfaces)
        for key, stats in t.table.items():
            moved = list(stats)
            moved[ORDER] += order
            out.table[(key[0] + offset, *key[1:])] = moved
        out.ticks_to_ns += t.ticks_to_ns
        out.interfaces += [f"{t.name}:{label}" for label in t.interfaces]
        out.packets += t.packets
        out.undecoded += t.undecoded
        out.problems += t.problems
        order += max((stats[ORDER] for stats in t.table.values()), default=0) + 1
    return out
