"""labdns: the raw fast path and the dnslib slow path give the same answers.

The fast path answers from bytes packed ahead of time; the slow path parses
and packs with dnslib from the same record sets. Over a corpus of questions
(every name of the test cluster, several types, letter cases, EDNS variants,
names that do not exist, names outside the zone) both must say the same
thing: header flags, rcode, and every section's records.
"""

from __future__ import annotations

import itertools

import pytest
from dnslib import DNSRecord

from labdns import slow
from labdns.answers import Answerer
from labdns.wire import to_text
from tests.unit.test_labdns_records import make_answerer, query

TYPES = ["A", "AAAA", "SRV", "PTR", "TXT", "SOA", "NS", "MX", "CNAME"]


def corpus(answerer: Answerer) -> list[bytes]:
    names = [to_text(n).rstrip(".") for n in answerer.table.nodes]
    names += ["nope.default.svc.cluster.local", "x.y.z.cluster.local", "9.9.9.9.in-addr.arpa"]
    names += ["example.com", "xcluster.local", "cluster.localx", "com"]
    out = []
    for i, (name, qtype) in enumerate(itertools.product(names, TYPES)):
        if i % 3 == 1:
            name = "".join(c.upper() if j % 2 else c for j, c in enumerate(name))
        edns = [None, 512, 1232, 4096][i % 4]
        out.append(query(name, qtype, qid=i & 0xFFFF, rd=i % 2, edns=edns, do=i % 5 == 0))
    return out


def semantic(raw: bytes) -> tuple:
    """Everything a client sees, with record order ignored (rotation differs) and names
    compared without case (a name compressed into the question takes the client's case)."""
    msg = DNSRecord.parse(raw)
    h = msg.header
    sections = [sorted(str(rr).lower() for rr in sec) for sec in (msg.rr, msg.auth, msg.ar)]
    questions = [(bytes(b".".join(q.qname.label)), q.qtype, q.qclass) for q in msg.questions]
    return (h.id, h.bitmap, h.q, h.a, h.auth, h.ar, questions, sections)


@pytest.fixture(scope="module")
def answerer() -> Answerer:
    return make_answerer()


def test_corpus_stays_on_the_fast_path(answerer, monkeypatch):
    """Otherwise the comparison below would compare the slow path with itself."""

    def no_slow(*_):
        raise AssertionError("slow path taken")

    monkeypatch.setattr(answerer, "_slow", no_slow)
    for q in corpus(answerer):
        assert answerer.answer(q) is not None


@pytest.mark.parametrize("tcp", [False, True])
def test_fast_and_slow_agree(answerer, tcp):
    table = answerer.table
    checked = 0
    for q in corpus(answerer):
        fast = answerer.answer(q, tcp)
        dnslib_answer = slow.respond(table, q, tcp, answerer.rotation)
        assert fast is not None and dnslib_answer is not None
        f, s = semantic(fast), semantic(dnslib_answer)
        if not tcp and (f[1] & 0x0200) != (s[1] & 0x0200):
            # the packers compress differently: only a borderline size may truncate in one
            limit = max(len(fast), len(dnslib_answer))
            assert 400 < limit <= 1232 + 200, (q, f, s)
            continue
        assert f == s, q
        assert (
            fast[12 : len(q) if not q[11] else len(q) - 11]
            == q[12 : len(q) if not q[11] else len(q) - 11]
        )
        checked += 1
    assert checked > 500


def test_fast_answers_use_no_more_space_than_dnslib(answerer):
    for q in corpus(answerer):
        fast = answerer.answer(q, True)
        dnslib_answer = slow.respond(answerer.table, q, True, answerer.rotation)
        assert len(fast) <= len(dnslib_answer) + 4, DNSRecord.parse(fast)
