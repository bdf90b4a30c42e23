"""Record sets -> packed answers, and the per-query fast path.

A query is answered from bytes packed ahead of time: per (name, type) the
header counts and the sections after the question. The hot path reads the
question straight from the query bytes (no parse), looks the packed answer up
and splices in the query's own id, flags and question, so the client's letter
case comes back unchanged and every answer name is a pointer to offset 12.
Anything unusual (EDNS options, other opcodes or classes, odd flags, malformed
input) goes to the dnslib slow path in `slow.py`.

Packed answers are made lazily, on the first query for a name after a table
change; `update()` swaps the whole state at once, so a reader sees either the
old table with its answers or the new one, never a mix.
"""

from __future__ import annotations

import itertools
import socket
import struct

from labdns import slow
from labdns.records import REFUSED_RESULT, RR, Result, Table
from labdns.slow import OUR_UDP_SIZE, TCP_MAX, udp_limit
from labdns.wire import AAAA, ANY, AXFR, IXFR, NOERROR, PTR, SOA, SRV, TXT, A

CACHE_LIMIT = 200_000  # packed answers kept per table (bounds memory under odd query mixes)

_QD1 = b"\x00\x01\x00\x00\x00\x00\x00\x00"
_QD1_AR1 = b"\x00\x01\x00\x00\x00\x00\x00\x01"
_OPT_HEAD = b"\x00\x00\x29"  # root owner, type OPT
_OPT_TAILS = (
    b"",
    _OPT_HEAD + struct.pack("!HIH", OUR_UDP_SIZE, 0, 0),
    _OPT_HEAD + struct.pack("!HIH", OUR_UDP_SIZE, 0x8000, 0),  # DO bit echoed
)
_SLOW_TYPES = frozenset((IXFR, AXFR, ANY))
_RRHEAD = struct.Struct("!HHIH")


# -- packing ------------------------------------------------------------------------


class Packer:
    """Packs the sections after the question, compressing names against what precedes them.

    `known` is a lower-case wire name already in the message at `offset` (the
    question name at 12, or just the zone apex inside any question of a given
    length, for answers shared by every name of that length). Names are matched
    case-insensitively, as DNS names compare. SRV targets are not compressed
    (RFC 2782).
    """

    def __init__(self, known: bytes, offset: int, start: int):
        self.names: dict[bytes, int] = {}
        self._register(known, offset)
        self.out = bytearray()
        self.start = start  # message offset of the first byte packed here

    def _register(self, wire: bytes, offset: int) -> None:
        i = 0
        while wire[i] and offset + i < 0x4000:
            self.names.setdefault(wire[i:], offset + i)
            i += wire[i] + 1

    def name(self, wire: bytes, compress: bool = True) -> None:
        i = 0
        while wire[i]:
            ptr = self.names.get(wire[i:]) if compress else None
            if ptr is not None:
                self.out += struct.pack("!H", 0xC000 | ptr)
                break
            at = self.start + len(self.out)
            if at < 0x4000:
                self.names.setdefault(wire[i:], at)
            self.out += wire[i : i + wire[i] + 1]
            i += wire[i] + 1
        else:
            self.out.append(0)

    def rr(self, rr: RR, owner: bytes | None = None) -> bytes:
        """Append one record (`owner`: raw owner bytes, e.g. the pointer to the question)."""
        begin = len(self.out)
        if owner is None:
            self.name(rr.name)
        else:
            self.out += owner
        head = len(self.out)
        self.out += _RRHEAD.pack(rr.rtype, 1, rr.ttl, 0)
        t, d = rr.rtype, rr.data
        if t == A:
            self.out += socket.inet_pton(socket.AF_INET, d)
        elif t == AAAA:
            self.out += socket.inet_pton(socket.AF_INET6, d)
        elif t == PTR:
            self.name(d)
        elif t == SRV:
            self.out += struct.pack("!HHH", d[0], d[1], d[2])
            self.name(d[3], compress=False)
        elif t == TXT:
            for text in d:
                raw = text.encode()[:255]
                self.out += bytes((len(raw),)) + raw
        elif t == SOA:
            self.name(d[0])
            self.name(d[1])
            self.out += struct.pack("!IIIII", *d[2:])
        else:
            raise ValueError(f"cannot pack type {t}")
        struct.pack_into("!H", self.out, head + 8, len(self.out) - head - 10)
        return bytes(self.out[begin:])


class Entry:
    """A packed answer: header variants and the bytes after the question."""

    __slots__ = ("heads", "tc_heads", "body", "size", "counter", "k", "rrsize", "ans2", "tail")

    def __init__(self, result: Result, packer: Packer, counter: itertools.count | None = None):
        an, ns, ar = len(result.answer), len(result.authority), len(result.additional)
        b2 = 0x84 if result.aa else 0x80
        self.heads = tuple(
            bytes((b2 | (v & 1), (v & 2) << 3 | result.rcode))
            + struct.pack("!HHHH", 1, an, ns, ar + e)
            for e in (0, 1)
            for v in range(4)
        )
        self.tc_heads = tuple(
            bytes((b2 | 0x02 | (v & 1), (v & 2) << 3 | result.rcode))
            + struct.pack("!HHHH", 1, 0, 0, e)
            for e in (0, 1)
            for v in range(4)
        )
        answers = [packer.rr(rr, b"\xc0\x0c") for rr in result.answer]
        for rr in result.authority + result.additional:
            packer.rr(rr)
        self.body = bytes(packer.out)
        self.size = len(self.body)
        self.counter = None
        self.k = self.rrsize = 0
        self.ans2 = self.tail = b""
        if counter is not None and an > 1 and result.answer[0].rtype in (A, AAAA):
            # A/AAAA records have a fixed size and no names inside: rotation is byte slicing
            ans = b"".join(answers)
            self.counter, self.k, self.rrsize = counter, an, len(answers[0])
            self.ans2, self.tail = ans + ans, self.body[len(ans) :]


class _State:
    """One table with its packed answers (filled lazily, replaced whole)."""

    __slots__ = ("table", "cache", "negative")

    def __init__(self, table: Table):
        self.table = table
        self.cache: dict[bytes, Entry] = {}
        self.negative: dict[tuple[int, bytes, int], Entry] = {}  # (rcode, apex, qname length)


class Answerer:
    """Answers raw DNS queries from the current table. Thread-safe for one writer."""

    def __init__(self, table: Table | None = None):
        self._counters: dict[bytes, itertools.count] = {}
        self._state: _State | None = _State(table) if table is not None else None

    @property
    def table(self) -> Table | None:
        return self._state.table if self._state is not None else None

    def update(self, table: Table) -> None:
        """Serve `table` from now on (one reference swap: atomic for the hot thread)."""
        live = {k: c for k, c in self._counters.items() if k[:-4] in table.nodes}
        self._counters = live  # rotation carries over for names that still exist
        self._state = _State(table)

    def rotation(self, key: bytes, k: int) -> int:
        """Next rotation step of the record set `key` (name + type + class) of k records."""
        return next(self._counter(key)) % k

    def _counter(self, key: bytes) -> itertools.count:
        counter = self._counters.get(key)
        if counter is None:
            counter = self._counters.setdefault(key, itertools.count())
        return counter

    def answer(self, q: bytes, tcp: bool = False) -> bytes | None:
        """The response to one query, or None to drop it (QR set, too short for a header).

        Over UDP (tcp=False) an answer larger than 512 bytes, or than the client's
        EDNS size capped at 1232, comes back truncated (TC, question only).
        """
        st = self._state
        if st is None:
            return None
        if type(q) is not bytes:
            q = bytes(q)
        z = q.find(0, 12)  # -1 also when the packet is too short for a header
        if z < 0:
            return self._slow(q, tcp)
        b2 = q[2]
        if b2 & 0xFE or q[3] & 0xCF:  # QR, opcode, AA, TC; Z and rcode bits (AD, CD are fine)
            return self._slow(q, tcp)
        qend = z + 5
        hdr = q[4:12]
        edns = 0
        if hdr == _QD1:
            if len(q) != qend:
                return self._slow(q, tcp)
            limit = 512
        elif (
            hdr == _QD1_AR1
            and len(q) == qend + 11
            and q[qend : qend + 3] == _OPT_HEAD
            and q[qend + 5 : qend + 7] == b"\x00\x00"
            and q[qend + 9 :] == b"\x00\x00"
        ):
            edns = 1 + (q[qend + 7] >> 7)
            limit = udp_limit((q[qend + 3] << 8) | q[qend + 4])
        else:
            return self._slow(q, tcp)
        key = q[12 : z + 1].lower() + q[z + 1 : qend]
        ent = st.cache.get(key)
        if ent is None:
            ent = self._miss(st, q, z, key)
            if ent is None:
                return self._slow(q, tcp)
        idx = b2 | ((q[3] & 0x10) >> 3) | (4 if edns else 0)
        if tcp:
            limit = TCP_MAX
        if qend + ent.size + (11 if edns else 0) > limit:
            return b"".join((q[:2], ent.tc_heads[idx], q[12:qend], _OPT_TAILS[edns]))
        if ent.counter is None:
            body = ent.body
        else:
            s = (next(ent.counter) % ent.k) * ent.rrsize
            body = ent.ans2[s : s + ent.k * ent.rrsize] + ent.tail
        return b"".join((q[:2], ent.heads[idx], q[12:qend], body, _OPT_TAILS[edns]))

    def _miss(self, st: _State, q: bytes, z: int, key: bytes) -> Entry | None:
        """Pack the answer for a question not cached yet; None: leave it to the slow path."""
        i = 12
        while i < z:  # the first zero byte must be the root label, with no pointers before it
            if q[i] > 63:
                return None
            i += q[i] + 1
        if i != z or z - 11 > 255 or q[z + 3 : z + 5] != b"\x00\x01":
            return None
        qtype = (q[z + 1] << 8) | q[z + 2]
        if qtype in _SLOW_TYPES:
            return None
        result = st.table.resolve(key[:-4], qtype)
        return self.entry(st, key, result)

    def entry(self, st: _State, key: bytes, result: Result) -> Entry:
        """The packed answer for `key` (lower-case qname + type + class), cached when bounded."""
        qname = key[:-4]
        start = 12 + len(key)
        if result is REFUSED_RESULT or not result.answer:
            # shared by every question of this length in the zone: only the apex is known
            apex = result.authority[0].name if result.authority else b"\x00"
            nkey = (result.rcode, apex, len(qname))
            ent = st.negative.get(nkey)
            if ent is None:
                packer = Packer(apex, 12 + len(qname) - len(apex), start)
                ent = st.negative.setdefault(nkey, Entry(result, packer))
            if result.rcode == NOERROR and len(st.cache) < CACHE_LIMIT:
                st.cache[key] = ent  # NODATA of an existing name: bounded by the table
            return ent
        rotates = len(result.answer) > 1 and result.answer[0].rtype in (A, AAAA)
        ent = Entry(result, Packer(qname, 12, start), self._counter(key) if rotates else None)
        if len(st.cache) < CACHE_LIMIT:
            st.cache[key] = ent
        return ent

    def _slow(self, q: bytes, tcp: bool) -> bytes | None:
        st = self._state
        return slow.respond(st.table, q, tcp, self.rotation) if st is not None else None
