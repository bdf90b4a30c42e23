"""labdns: bad packets never break the server.

Hypothesis drives the answer function directly (many examples, no sockets):
random bytes and mutated good queries either get dropped or get a well-formed
response with the query's id. A deterministic corpus of the same kinds of
damage (truncated headers, label lengths past the end, compression loops,
wrong counts, random bytes) then goes to a running server over UDP and TCP,
and after every batch a good query must still be answered.
"""

from __future__ import annotations

import random
import socket
import struct

import pytest
from dnslib import DNSError, DNSRecord
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.unit.test_labdns_records import make_answerer, query
from tests.unit.test_labdns_server import recv_exact, running_server, udp_ask, write_records

GOOD = [
    query("web.default.svc.cluster.local"),
    query("_pg._tcp.db.default.svc.cluster.local", "SRV", edns=1232, do=True),
    query("big.default.svc.cluster.local", edns=4096),
    query("5.1.244.10.in-addr.arpa", "PTR"),
    query("nope.cluster.local", "AAAA", edns=512),
]

ANSWERER = make_answerer()


def check_response(packet: bytes, resp: bytes | None, tcp: bool) -> None:
    if resp is None:
        return
    assert len(resp) >= 12
    assert resp[:2] == packet[:2]  # the query's id
    assert resp[2] & 0x80  # QR
    assert tcp or len(resp) <= 1232
    try:
        DNSRecord.parse(resp)  # well-formed
    except DNSError:
        # dnslib rejects labels that are not UTF-8; DNS allows any bytes, and the
        # fast path answers such names (NXDOMAIN or REFUSED) with the question echoed
        with pytest.raises(DNSError):
            DNSRecord.parse(packet)
        qd, an, ns, ar = struct.unpack("!4H", resp[4:12])
        assert (qd, an) == (1, 0) and ns <= 1 and ar <= 1 and resp[3] & 0xF in (0, 3, 5)
        end = 12
        while packet[end]:
            end += packet[end] + 1
        assert resp[12 : end + 5] == packet[12 : end + 5]


def mutate(packet: bytes, rng: random.Random) -> bytes:
    """One kind of damage to a good query."""
    p = bytearray(packet)
    kind = rng.randrange(9)
    if kind == 0:  # truncated anywhere, header included
        return bytes(p[: rng.randrange(len(p))])
    if kind == 1:  # a label length running past the end
        p[12] = rng.randrange(len(p) - 12, 64) if len(p) - 12 < 64 else 63
        return bytes(p[: rng.randrange(13, len(p))])
    if kind == 2:  # compression loop at the question
        return (
            bytes(p[:12])
            + rng.choice([b"\xc0\x0c", b"\x01a\xc0\x0e", b"\xc0\x0d"])
            + b"\x00\x01\x00\x01"
        )
    if kind == 3:  # wrong counts
        struct.pack_into("!4H", p, 4, *(rng.randrange(4) for _ in range(4)))
        return bytes(p)
    if kind == 4:  # flipped bytes
        for _ in range(rng.randrange(1, 6)):
            p[rng.randrange(len(p))] = rng.randrange(256)
        return bytes(p)
    if kind == 5:  # random flags, opcode and rcode bits
        struct.pack_into("!H", p, 2, rng.randrange(65536))
        return bytes(p)
    if kind == 6:  # garbage after the message
        return bytes(p) + rng.randbytes(rng.randrange(1, 40))
    if kind == 7:  # a pointer forwards / out of the packet
        return bytes(p[:12]) + b"\x03web\xc0" + bytes([rng.randrange(256)]) + b"\x00\x01\x00\x01"
    return rng.randbytes(rng.randrange(0, 80))  # plain random bytes


@settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=600), st.booleans())
def test_random_bytes(packet, tcp):
    check_response(packet, ANSWERER.answer(packet, tcp), tcp)


@settings(max_examples=1500, deadline=None)
@given(st.sampled_from(GOOD), st.integers(0, 2**32 - 1), st.booleans())
def test_mutated_queries(good, seed, tcp):
    packet = mutate(good, random.Random(seed))
    check_response(packet, ANSWERER.answer(packet, tcp), tcp)


@settings(max_examples=300, deadline=None)
@given(
    st.binary(min_size=2, max_size=2),
    st.integers(0, 0xFFFF),
    st.lists(st.binary(min_size=0, max_size=70), min_size=0, max_size=6),
    st.binary(max_size=30),
)
def test_structured_garbage(qid, flags, raw_labels, tail):
    """Headers with arbitrary flags and names made of arbitrary label bytes."""
    name = b"".join(bytes([len(x)]) + x for x in raw_labels) + b"\x00"
    packet = qid + struct.pack("!5H", flags, 1, 0, 0, 0) + name + b"\x00\x01\x00\x01" + tail
    for tcp in (False, True):
        check_response(packet, ANSWERER.answer(packet, tcp), tcp)


@pytest.fixture(scope="module")
def server_port(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("labdns-fuzz")
    from tests.unit.test_labdns_records import cluster_objects

    records = write_records(tmp / "records.json", cluster_objects())
    with running_server("--records", str(records), tmp=tmp) as (port, proc, _):
        yield port
        assert proc.poll() is None, "the server died under fuzzing"


def corpus(seed: int, size: int) -> list[bytes]:
    rng = random.Random(seed)
    return [mutate(rng.choice(GOOD), rng) for _ in range(size)]


def assert_alive(port: int) -> None:
    resp = udp_ask(port, query("web.default.svc.cluster.local", qid=77))
    assert resp is not None and DNSRecord.parse(resp).header.id == 77


@pytest.mark.parametrize("batch", range(8))
def test_server_survives_bad_udp(server_port, batch):
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(1)
        for packet in corpus(batch, 250):
            s.sendto(packet, ("127.0.0.1", server_port))
        s.sendto(b"", ("127.0.0.1", server_port))  # an empty datagram too
    assert_alive(server_port)


@pytest.mark.parametrize("batch", range(4))
def test_server_survives_bad_tcp(server_port, batch):
    packets = corpus(100 + batch, 150)
    with socket.create_connection(("127.0.0.1", server_port), timeout=5) as s:
        for packet in packets:  # one connection, many bad messages: it stays open
            s.sendall(struct.pack("!H", len(packet)) + packet)
        s.sendall(struct.pack("!H", len(GOOD[0])) + GOOD[0])
        s.settimeout(5)
        ids = []
        while GOOD[0][:2] not in ids:
            ids.append(recv_exact(s, struct.unpack("!H", recv_exact(s, 2))[0])[:2])
    with socket.create_connection(("127.0.0.1", server_port), timeout=5) as s:
        s.sendall(b"\xff\xff" + b"\x00" * 100)  # a length it never gets
    assert_alive(server_port)
