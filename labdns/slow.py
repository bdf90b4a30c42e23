"""The careful path: every query the fast path does not take, parsed and packed by dnslib.

Handles malformed input (FORMERR, or drop when there is no readable header),
other opcodes (NOTIMP), qdcount != 1 (FORMERR), EDNS with options or another
version (BADVERS), other classes and zone transfers (REFUSED), ANY, and
questions with odd flags. It must never raise: whatever goes wrong in parsing
is a FORMERR.
"""

from __future__ import annotations

import struct
from collections.abc import Callable

import dnslib
from dnslib import DNSHeader, DNSLabel, DNSRecord

from labdns.records import RR, Table
from labdns.wire import (
    AAAA,
    AXFR,
    BADVERS,
    FORMERR,
    IXFR,
    NOTIMP,
    OPT,
    PTR,
    REFUSED,
    SOA,
    SRV,
    TXT,
    A,
    labels,
)

OUR_UDP_SIZE = 1232  # what we announce, and the most we send over UDP
TCP_MAX = 65535
_HEADER = struct.Struct("!6H")


def udp_limit(edns_size: int | None) -> int:
    """Largest UDP answer for a client: 512 without EDNS, else its size capped at ours."""
    if edns_size is None:
        return 512
    return max(512, min(edns_size, OUR_UDP_SIZE))


def to_dnslib(rr: RR, owner: DNSLabel | None = None) -> dnslib.RR:
    """Our record as a dnslib RR (owner: e.g. the question's name, in the client's case)."""
    d = rr.data
    if rr.rtype == A:
        rdata = dnslib.A(d)
    elif rr.rtype == AAAA:
        rdata = dnslib.AAAA(d)
    elif rr.rtype == PTR:
        rdata = dnslib.PTR(DNSLabel(labels(d)))
    elif rr.rtype == SRV:
        rdata = dnslib.SRV(d[0], d[1], d[2], DNSLabel(labels(d[3])))
    elif rr.rtype == TXT:
        rdata = dnslib.TXT([t.encode() for t in d])
    elif rr.rtype == SOA:
        rdata = dnslib.SOA(DNSLabel(labels(d[0])), DNSLabel(labels(d[1])), d[2:])
    else:
        raise ValueError(f"no dnslib type for {rr.rtype}")
    name = owner if owner is not None else DNSLabel(labels(rr.name))
    return dnslib.RR(name, rr.rtype, 1, rr.ttl, rdata)


def _header_only(qid: int, flags: int, rcode: int) -> bytes:
    """A response with no sections: id, opcode, RD and CD of the query."""
    bits = 0x8000 | (flags & 0x7800) | (flags & 0x0100) | (flags & 0x0010) | rcode
    return _HEADER.pack(qid, bits, 0, 0, 0, 0)


def respond(
    table: Table, q: bytes, tcp: bool, rotation: Callable[[bytes, int], int]
) -> bytes | None:
    """The response to any query; None to drop it (no header, or QR set)."""
    if len(q) < 12:
        return None
    qid, flags = _HEADER.unpack_from(q)[:2]
    if flags & 0x8000:
        return None
    opcode = (flags >> 11) & 0xF
    try:
        msg = DNSRecord.parse(q)
        if len(q) > TCP_MAX:
            raise ValueError("too long")
    except Exception:  # any parse failure of untrusted bytes is FORMERR
        return _header_only(qid, flags, NOTIMP if opcode else FORMERR)
    try:
        return _respond(table, msg, qid, flags, tcp, rotation)
    except Exception:  # e.g. names dnslib cannot represent
        return _header_only(qid, flags, FORMERR)


def _respond(table, msg, qid, flags, tcp, rotation) -> bytes:
    opts = [r for r in msg.ar if r.rtype == OPT]
    if len(opts) > 1 or (opts and opts[0].rname.label):
        return _header_only(qid, flags, FORMERR)  # RFC 6891 6.1.1
    opt = opts[0] if opts else None
    opcode = (flags >> 11) & 0xF
    if opcode != 0 or len(msg.questions) != 1:
        return _reply(qid, flags, msg, opt, NOTIMP if opcode else FORMERR, tcp)
    if opt is not None and (opt.ttl >> 16) & 0xFF != 0:
        return _reply(qid, flags, msg, opt, BADVERS, tcp)
    question = msg.questions[0]
    if question.qclass != 1 or question.qtype in (AXFR, IXFR):
        return _reply(qid, flags, msg, opt, REFUSED, tcp)
    try:
        name = b"".join(bytes((len(x),)) + x.lower() for x in question.qname.label) + b"\x00"
    except TypeError:
        return _reply(qid, flags, msg, opt, FORMERR, tcp)
    if len(name) > 255 or any(not 0 < len(x) < 64 for x in question.qname.label):
        return _reply(qid, flags, msg, opt, FORMERR, tcp)
    result = table.resolve(name, question.qtype)
    answer = list(result.answer)
    if len(answer) > 1 and question.qtype in (A, AAAA):
        key = name + struct.pack("!HH", question.qtype, 1)
        s = rotation(key, len(answer))
        answer = answer[s:] + answer[:s]
    resp = DNSRecord(_header(qid, flags, result.rcode, result.aa), q=question)
    resp.rr = [to_dnslib(rr, question.qname) for rr in answer]
    resp.auth = [to_dnslib(rr) for rr in result.authority]
    resp.ar = [to_dnslib(rr) for rr in result.additional]
    return _finish(resp, opt, 0, tcp)


def _header(qid: int, flags: int, rcode: int, aa: bool) -> DNSHeader:
    header = DNSHeader(id=qid, qr=1, aa=int(aa), rd=(flags >> 8) & 1, ra=0, rcode=rcode & 0xF)
    header.cd = (flags >> 4) & 1
    header.opcode = (flags >> 11) & 0xF
    return header


def _reply(qid, flags, msg, opt, rcode: int, tcp: bool) -> bytes:
    """An error response that echoes the question(s) and, with EDNS, an OPT."""
    resp = DNSRecord(_header(qid, flags, rcode, False), questions=list(msg.questions))
    return _finish(resp, opt, rcode >> 4, tcp)


def _finish(resp: DNSRecord, opt, ext_rcode: int, tcp: bool) -> bytes:
    edns_size = None
    if opt is not None:
        edns_size = opt.rclass
        do = "do" if opt.ttl & 0x8000 else ""
        resp.add_ar(dnslib.EDNS0(flags=do, udp_len=OUR_UDP_SIZE, ext_rcode=ext_rcode))
    data = resp.pack()
    limit = TCP_MAX if tcp else udp_limit(edns_size)
    if len(data) <= limit:
        return bytes(data)
    resp.header.tc = 1
    resp.rr, resp.auth = [], []
    resp.ar = resp.ar[-1:] if opt is not None else []
    return bytes(resp.pack())
