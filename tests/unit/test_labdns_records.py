"""labdns: question -> expected answer, as CoreDNS's kubernetes handler_test.go tables it.

Runs the answer function directly (no sockets): one row per record kind of the
Kubernetes DNS spec, plus flags, EDNS, truncation, rotation and error cases.
The objects here are shared with the other labdns tests.
"""

from __future__ import annotations

import struct
from collections import Counter

import pytest
from dnslib import EDNS0, QTYPE, DNSHeader, DNSQuestion, DNSRecord

from labdns.answers import Answerer
from labdns.records import Memo, build_table, split_objects

ZONE = "cluster.local"
SOA_TEXT = "ns.dns.cluster.local. hostmaster.cluster.local."
BIG = 40  # endpoints of the `big` headless service: its answers do not fit in 512 bytes


def service(name, ns="default", cluster_ip="None", ports=()) -> dict:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": name, "namespace": ns},
        "spec": {"clusterIP": cluster_ip, "ports": list(ports)},
    }


def endpoints(name, addresses, ports=(), ns="default", not_ready=()) -> dict:
    return {
        "apiVersion": "v1",
        "kind": "Endpoints",
        "metadata": {"name": name, "namespace": ns},
        "subsets": [
            {
                "addresses": list(addresses),
                "notReadyAddresses": list(not_ready),
                "ports": list(ports),
            }
        ],
    }


def pod(name, ip, ns="default", phase="Running") -> dict:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": ns},
        "status": {"podIP": ip, "phase": phase},
    }


def big_endpoints(count: int = BIG) -> dict:
    addrs = [{"ip": f"10.244.9.{i}"} for i in range(1, count + 1)]
    return endpoints("big", addrs, [{"name": "http", "port": 8080, "protocol": "TCP"}])


def cluster_objects() -> list[dict]:
    """A small cluster: ClusterIP and headless Services, endpoints, pods in two namespaces."""
    http = {"name": "http", "protocol": "TCP", "port": 80, "targetPort": 8080}
    dns = {"name": "dns", "protocol": "UDP", "port": 53, "targetPort": 53}
    unnamed = {"protocol": "TCP", "port": 8443, "targetPort": 8443}
    return [
        service("web", cluster_ip="10.96.0.10", ports=[http, dns, unnamed]),
        service("api", ns="other", cluster_ip="10.96.5.5", ports=[http]),
        service("db", ports=[{"name": "pg", "protocol": "TCP", "port": 5432}]),
        endpoints(
            "db",
            [
                {
                    "ip": "10.244.1.5",
                    "hostname": "db-0",
                    "targetRef": {"kind": "Pod", "name": "p1"},
                },
                {"ip": "10.244.2.6", "nodeName": "n2"},
            ],
            [{"name": "pg", "port": 5432, "protocol": "TCP"}],
            not_ready=[{"ip": "10.244.3.7"}],
        ),
        service("empty"),
        endpoints("empty", [], not_ready=[{"ip": "10.244.3.8"}]),
        service("big", ports=[{"name": "http", "protocol": "TCP", "port": 80}]),
        big_endpoints(),
        pod("p1", "10.244.1.5"),
        pod("p2", "10.244.1.7"),
        pod("done", "10.244.1.8", phase="Succeeded"),
        pod("o1", "10.244.4.4", ns="other"),
    ]


def make_answerer(objects: list[dict] | None = None) -> Answerer:
    services, eps, pods = split_objects(cluster_objects() if objects is None else objects)
    return Answerer(build_table(services, eps, pods, ZONE, 5, serial=7, memo=Memo()))


def query(
    name: str,
    qtype: str = "A",
    qid: int = 4242,
    rd: int = 1,
    edns: int | None = None,
    do: bool = False,
    version: int = 0,
) -> bytes:
    """A query packet; edns = the client's UDP size (None: no OPT record)."""
    q = DNSRecord(DNSHeader(id=qid, rd=rd), q=DNSQuestion(name, getattr(QTYPE, qtype)))
    if edns is not None:
        q.add_ar(EDNS0(udp_len=edns, flags="do" if do else "", version=version))
    return bytes(q.pack())


def rrs(section) -> set[str]:
    """Records as 'name TYPE rdata' strings (order-free, TTL checked separately)."""
    return {f"{rr.rname} {QTYPE[rr.rtype]} {rr.rdata}" for rr in section if rr.rtype != 41}


@pytest.fixture(scope="module")
def answerer() -> Answerer:
    return make_answerer()


def svc(name: str) -> str:
    return f"{name}.svc.cluster.local."


# question -> rcode, answer, authority (record types), additional
CASES = [
    # ClusterIP Service: A, no AAAA (NODATA + SOA), SRV for named ports only
    (
        "web.default.svc.cluster.local",
        "A",
        "NOERROR",
        {f"{svc('web.default')} A 10.96.0.10"},
        set(),
        set(),
    ),
    ("web.default.svc.cluster.local", "AAAA", "NOERROR", set(), {"SOA"}, set()),
    ("web.default.svc.cluster.local", "TXT", "NOERROR", set(), {"SOA"}, set()),
    (
        "api.other.svc.cluster.local",
        "A",
        "NOERROR",
        {f"{svc('api.other')} A 10.96.5.5"},
        set(),
        set(),
    ),
    (
        "_http._tcp.web.default.svc.cluster.local",
        "SRV",
        "NOERROR",
        {f"_http._tcp.{svc('web.default')} SRV 0 100 80 {svc('web.default')}"},
        set(),
        {f"{svc('web.default')} A 10.96.0.10"},
    ),
    (
        "_dns._udp.web.default.svc.cluster.local",
        "SRV",
        "NOERROR",
        {f"_dns._udp.{svc('web.default')} SRV 0 100 53 {svc('web.default')}"},
        set(),
        {f"{svc('web.default')} A 10.96.0.10"},
    ),
    ("_http._udp.web.default.svc.cluster.local", "SRV", "NXDOMAIN", set(), {"SOA"}, set()),
    ("_tcp.web.default.svc.cluster.local", "SRV", "NOERROR", set(), {"SOA"}, set()),
    # headless Service: one A per ready endpoint, per-endpoint names, SRV per endpoint
    (
        "db.default.svc.cluster.local",
        "A",
        "NOERROR",
        {f"{svc('db.default')} A 10.244.1.5", f"{svc('db.default')} A 10.244.2.6"},
        set(),
        set(),
    ),
    (
        "db-0.db.default.svc.cluster.local",
        "A",
        "NOERROR",
        {f"db-0.{svc('db.default')} A 10.244.1.5"},
        set(),
        set(),
    ),
    (
        "10-244-2-6.db.default.svc.cluster.local",
        "A",
        "NOERROR",
        {f"10-244-2-6.{svc('db.default')} A 10.244.2.6"},
        set(),
        set(),
    ),
    ("10-244-3-7.db.default.svc.cluster.local", "A", "NXDOMAIN", set(), {"SOA"}, set()),
    (
        "_pg._tcp.db.default.svc.cluster.local",
        "SRV",
        "NOERROR",
        {
            f"_pg._tcp.{svc('db.default')} SRV 0 50 5432 db-0.{svc('db.default')}",
            f"_pg._tcp.{svc('db.default')} SRV 0 50 5432 10-244-2-6.{svc('db.default')}",
        },
        set(),
        {f"db-0.{svc('db.default')} A 10.244.1.5", f"10-244-2-6.{svc('db.default')} A 10.244.2.6"},
    ),
    ("empty.default.svc.cluster.local", "A", "NXDOMAIN", set(), {"SOA"}, set()),
    ("nosuch.default.svc.cluster.local", "A", "NXDOMAIN", set(), {"SOA"}, set()),
    # reverse: Service VIPs, headless endpoints (before the pod of the same IP), pods
    (
        "10.0.96.10.in-addr.arpa",
        "PTR",
        "NOERROR",
        {f"10.0.96.10.in-addr.arpa. PTR {svc('web.default')}"},
        set(),
        set(),
    ),
    (
        "5.1.244.10.in-addr.arpa",
        "PTR",
        "NOERROR",
        {f"5.1.244.10.in-addr.arpa. PTR db-0.{svc('db.default')}"},
        set(),
        set(),
    ),
    (
        "7.1.244.10.in-addr.arpa",
        "PTR",
        "NOERROR",
        {"7.1.244.10.in-addr.arpa. PTR 10-244-1-7.default.pod.cluster.local."},
        set(),
        set(),
    ),
    ("8.1.244.10.in-addr.arpa", "PTR", "NXDOMAIN", set(), {"SOA"}, set()),
    ("1.0.0.127.in-addr.arpa", "PTR", "NXDOMAIN", set(), {"SOA"}, set()),
    ("1.244.10.in-addr.arpa", "PTR", "NOERROR", set(), {"SOA"}, set()),
    ("10.0.96.10.in-addr.arpa", "A", "NOERROR", set(), {"SOA"}, set()),
    # pods, verified: the IP must belong to a live pod of that namespace
    (
        "10-244-1-7.default.pod.cluster.local",
        "A",
        "NOERROR",
        {"10-244-1-7.default.pod.cluster.local. A 10.244.1.7"},
        set(),
        set(),
    ),
    ("10-244-1-7.other.pod.cluster.local", "A", "NXDOMAIN", set(), {"SOA"}, set()),
    ("10-244-1-8.default.pod.cluster.local", "A", "NXDOMAIN", set(), {"SOA"}, set()),
    (
        "10-244-4-4.other.pod.cluster.local",
        "A",
        "NOERROR",
        {"10-244-4-4.other.pod.cluster.local. A 10.244.4.4"},
        set(),
        set(),
    ),
    # the spec's version, the apex, empty non-terminals
    (
        "dns-version.cluster.local",
        "TXT",
        "NOERROR",
        {'dns-version.cluster.local. TXT "1.1.0"'},
        set(),
        set(),
    ),
    (
        "cluster.local",
        "SOA",
        "NOERROR",
        {f"cluster.local. SOA {SOA_TEXT} 7 7200 1800 86400 5"},
        set(),
        set(),
    ),
    ("cluster.local", "NS", "NOERROR", set(), {"SOA"}, set()),
    ("cluster.local", "A", "NOERROR", set(), {"SOA"}, set()),
    ("svc.cluster.local", "A", "NOERROR", set(), {"SOA"}, set()),
    ("default.svc.cluster.local", "A", "NOERROR", set(), {"SOA"}, set()),
    ("other.svc.cluster.local", "SRV", "NOERROR", set(), {"SOA"}, set()),
    ("pod.cluster.local", "A", "NOERROR", set(), {"SOA"}, set()),
    ("default.pod.cluster.local", "A", "NOERROR", set(), {"SOA"}, set()),
    ("nosuchns.svc.cluster.local", "A", "NXDOMAIN", set(), {"SOA"}, set()),
    ("a.b.web.default.svc.cluster.local", "A", "NXDOMAIN", set(), {"SOA"}, set()),
    # outside the zone: refused at once, label boundaries respected
    ("xcluster.local", "A", "REFUSED", set(), set(), set()),
    ("web.default.svc.xcluster.local", "A", "REFUSED", set(), set(), set()),
    ("local", "SOA", "REFUSED", set(), set(), set()),
    ("example.com", "A", "REFUSED", set(), set(), set()),
    ("arpa", "PTR", "REFUSED", set(), set(), set()),
]


@pytest.mark.parametrize("qname, qtype, rcode, answer, authority, additional", CASES)
def test_table(answerer, qname, qtype, rcode, answer, authority, additional):
    resp = DNSRecord.parse(answerer.answer(query(qname, qtype)))
    h = resp.header
    assert (h.id, h.qr, h.opcode, h.rd, h.ra, h.tc, h.ad) == (4242, 1, 0, 1, 0, 0, 0)
    assert resp.header.rcode == getattr(__import__("dnslib").RCODE, rcode)
    assert h.aa == (rcode != "REFUSED")
    assert [str(q.qname) for q in resp.questions] == [qname + "."]
    assert rrs(resp.rr) == answer
    assert {QTYPE[rr.rtype] for rr in resp.auth} == authority
    assert rrs(resp.ar) == additional
    for rr in resp.rr + resp.auth + resp.ar:
        assert rr.ttl == 5
    if authority:  # the SOA of the zone that holds the name
        apex = "in-addr.arpa." if qname.endswith("in-addr.arpa") else "cluster.local."
        assert [str(rr.rname) for rr in resp.auth] == [apex]
        assert str(resp.auth[0].rdata).startswith(SOA_TEXT)


def test_mixed_case_comes_back_unchanged_and_answers_point_to_the_question(answerer):
    name = "WeB.DeFault.SVC.cluster.LOCAL"
    raw = answerer.answer(query(name))
    qlen = len(name) + 2 + 4
    assert raw[12 : 12 + qlen] == query(name)[12 : 12 + qlen]
    assert raw[12 + qlen : 12 + qlen + 2] == b"\xc0\x0c"  # the answer's owner is the question
    resp = DNSRecord.parse(raw)
    assert str(resp.questions[0].qname) == name + "."
    assert rrs(resp.rr) == {f"{name}. A 10.96.0.10"}


def test_case_insensitive_everywhere(answerer):
    for name in ("_HTTP._Tcp.web.default.svc.cluster.local", "5.1.244.10.IN-ADDR.ARPA"):
        qtype = "SRV" if name.startswith("_") else "PTR"
        resp = DNSRecord.parse(answerer.answer(query(name, qtype)))
        assert resp.header.rcode == 0 and len(resp.rr) == 1
    resp = DNSRecord.parse(answerer.answer(query("NoSuch.Default.SVC.Cluster.Local")))
    assert resp.header.rcode == 3


def test_flags_rd_copied_ad_cleared_cd_kept(answerer):
    q = DNSRecord.parse(query("web.default.svc.cluster.local", rd=0))
    q.header.ad, q.header.cd = 1, 1
    resp = DNSRecord.parse(answerer.answer(bytes(q.pack())))
    assert (resp.header.rd, resp.header.ad, resp.header.cd, resp.header.ra) == (0, 0, 1, 0)
    assert resp.header.aa == 1


def opt_of(resp: DNSRecord):
    opts = [rr for rr in resp.ar if rr.rtype == 41]
    assert len(opts) == 1
    return opts[0]


@pytest.mark.parametrize("do", [False, True])
def test_edns_is_echoed_with_our_size_and_the_do_bit(answerer, do):
    resp = DNSRecord.parse(
        answerer.answer(query("web.default.svc.cluster.local", edns=4096, do=do))
    )
    opt = opt_of(resp)
    assert opt.rclass == 1232
    assert bool(opt.ttl & 0x8000) == do
    assert (opt.ttl >> 16) & 0xFF == 0  # version 0
    assert rrs(resp.rr) == {f"{svc('web.default')} A 10.96.0.10"}


def test_no_edns_no_opt(answerer):
    resp = DNSRecord.parse(answerer.answer(query("web.default.svc.cluster.local")))
    assert not [rr for rr in resp.ar if rr.rtype == 41]


def test_edns_version_1_is_badvers(answerer):
    resp = DNSRecord.parse(
        answerer.answer(query("web.default.svc.cluster.local", edns=1232, version=1))
    )
    opt = opt_of(resp)
    assert ((opt.ttl >> 24) << 4) | resp.header.rcode == 16
    assert not resp.rr


def test_edns_options_take_the_slow_path_and_still_answer(answerer):
    q = DNSRecord.parse(query("db-0.db.default.svc.cluster.local"))
    from dnslib import EDNSOption

    q.add_ar(EDNS0(udp_len=1232, opts=[EDNSOption(10, b"\x01" * 8)]))  # a client cookie
    resp = DNSRecord.parse(answerer.answer(bytes(q.pack())))
    assert rrs(resp.rr) == {f"db-0.{svc('db.default')} A 10.244.1.5"}
    assert opt_of(resp).rclass == 1232


def test_any_is_answered(answerer):
    resp = DNSRecord.parse(answerer.answer(query("web.default.svc.cluster.local", "ANY")))
    assert rrs(resp.rr) == {f"{svc('web.default')} A 10.96.0.10"}


@pytest.mark.parametrize("qtype", ["AXFR", "IXFR"])
def test_zone_transfers_are_refused(answerer, qtype):
    resp = DNSRecord.parse(answerer.answer(query("cluster.local", qtype), tcp=True))
    assert resp.header.rcode == 5


def test_truncation_at_512_without_edns(answerer):
    raw = answerer.answer(query("big.default.svc.cluster.local"))
    resp = DNSRecord.parse(raw)
    assert len(raw) <= 512
    assert resp.header.tc == 1 and not resp.rr and not resp.auth and not resp.ar
    assert str(resp.questions[0].qname) == "big.default.svc.cluster.local."
    full = DNSRecord.parse(answerer.answer(query("big.default.svc.cluster.local"), tcp=True))
    assert full.header.tc == 0 and len(full.rr) == BIG


def test_edns_size_lets_a_larger_answer_through(answerer):
    resp = DNSRecord.parse(answerer.answer(query("big.default.svc.cluster.local", edns=1232)))
    assert resp.header.tc == 0 and len(resp.rr) == BIG
    small = answerer.answer(query("big.default.svc.cluster.local", edns=600))
    assert DNSRecord.parse(small).header.tc == 1 and len(small) <= 600


def test_truncation_at_the_edns_size_and_tcp_gets_it_all(answerer):
    q = query("_http._tcp.big.default.svc.cluster.local", "SRV", edns=4096)
    raw = answerer.answer(q)
    resp = DNSRecord.parse(raw)
    assert len(raw) <= 1232
    assert resp.header.tc == 1 and not resp.rr and not resp.auth
    assert opt_of(resp).rclass == 1232  # the OPT stays, so the client knows our size
    full = DNSRecord.parse(answerer.answer(q, tcp=True))
    assert full.header.tc == 0
    assert len(full.rr) == BIG and len([rr for rr in full.ar if rr.rtype == 1]) == BIG
    assert {rr.rdata.weight for rr in full.rr} == {100 // BIG}


@pytest.mark.parametrize(
    "name, k", [("big.default.svc.cluster.local", BIG), ("db.default.svc.cluster.local", 2)]
)
def test_rotation_is_exact(name, k):
    answerer = make_answerer()
    rounds = 5
    firsts = Counter()
    for i in range(k * rounds):
        tcp = i % 2 == 1  # UDP, TCP, with and without EDNS: one rotation for the record set
        raw = answerer.answer(query(name, qid=i, edns=None if tcp and i % 3 else 1232), tcp=tcp)
        resp = DNSRecord.parse(raw)
        assert len(resp.rr) == k
        firsts[str(resp.rr[0].rdata)] += 1
        order = [str(rr.rdata) for rr in resp.rr]
        assert len(set(order)) == k
    assert len(firsts) == k and set(firsts.values()) == {rounds}


def test_rotation_keeps_a_cyclic_order():
    answerer = make_answerer()
    orders = [
        [
            str(rr.rdata)
            for rr in DNSRecord.parse(answerer.answer(query("db.default.svc.cluster.local"))).rr
        ]
        for _ in range(2)
    ]
    assert orders[0] == orders[1][1:] + orders[1][:1]


def test_qr_set_is_dropped(answerer):
    q = DNSRecord.parse(query("web.default.svc.cluster.local"))
    q.header.qr = 1
    assert answerer.answer(bytes(q.pack())) is None


def test_short_packets_are_dropped(answerer):
    for size in range(12):
        assert answerer.answer(query("web.default.svc.cluster.local")[:size]) is None


def test_other_opcodes_are_notimp(answerer):
    q = DNSRecord.parse(query("web.default.svc.cluster.local"))
    q.header.opcode = 2  # STATUS
    resp = DNSRecord.parse(answerer.answer(bytes(q.pack())))
    assert resp.header.rcode == 4 and resp.header.opcode == 2 and resp.header.qr == 1


@pytest.mark.parametrize("count", [0, 2])
def test_qdcount_other_than_one_is_formerr(answerer, count):
    q = DNSRecord(DNSHeader(id=7), questions=[DNSQuestion("web.default.svc.cluster.local")] * count)
    resp = DNSRecord.parse(answerer.answer(bytes(q.pack())))
    assert resp.header.rcode == 1 and resp.header.id == 7 and not resp.rr


@pytest.mark.parametrize(
    "packet",
    [
        struct.pack("!6H", 9, 0x0100, 1, 0, 0, 0) + b"\x03web",  # name runs off the end
        struct.pack("!6H", 9, 0x0100, 1, 0, 0, 0) + b"\xc0\x0c\x00\x01\x00\x01",  # pointer loop
        struct.pack("!6H", 9, 0x0100, 1, 0, 0, 0) + b"\x3fab\x00\x00\x01\x00\x01",  # label too long
        struct.pack("!6H", 9, 0x0100, 1, 3, 0, 0) + query("web.default.svc.cluster.local")[12:],
    ],
)
def test_malformed_is_formerr(answerer, packet):
    resp = answerer.answer(packet)
    assert resp is not None
    qid, flags = struct.unpack("!HH", resp[:4])
    assert qid == 9 and flags & 0x8000 and flags & 0xF == 1


def test_names_that_are_not_dns_labels_are_skipped():
    objs = [
        service("Bad_Name.With.Dots", cluster_ip="10.96.0.1"),
        service("x" * 70, cluster_ip="10.96.0.2"),
        service("ok", cluster_ip="10.96.0.3", ports=[{"name": "http", "port": 99999}]),
        {"kind": "Service", "metadata": {"name": "broken"}, "spec": "nonsense"},
        pod("weird", "not-an-ip"),
    ]
    answerer = make_answerer(objs)
    assert answerer.table.stats["skipped"] >= 3
    resp = DNSRecord.parse(answerer.answer(query("ok.default.svc.cluster.local")))
    assert rrs(resp.rr) == {"ok.default.svc.cluster.local. A 10.96.0.3"}
    resp = DNSRecord.parse(answerer.answer(query("_http._tcp.ok.default.svc.cluster.local", "SRV")))
    assert resp.header.rcode == 3  # the port was out of range: no SRV


def test_zone_and_ttl_are_configurable():
    services, eps, pods = split_objects(cluster_objects())
    answerer = Answerer(build_table(services, eps, pods, "Lab.Example.", 30))
    resp = DNSRecord.parse(answerer.answer(query("web.default.svc.lab.example")))
    assert rrs(resp.rr) == {"web.default.svc.lab.example. A 10.96.0.10"} and resp.rr[0].ttl == 30
    resp = DNSRecord.parse(answerer.answer(query("web.default.svc.cluster.local")))
    assert resp.header.rcode == 5


def test_memo_reuses_unchanged_objects_and_sees_replaced_ones():
    objs = cluster_objects()
    memo = Memo()
    services, eps, pods = split_objects(objs)
    first = build_table(services, eps, pods, memo=memo)
    eps = [
        e if e["metadata"]["name"] != "db" else endpoints("db", [{"ip": "10.244.7.7"}]) for e in eps
    ]
    second = build_table(services, eps, pods, memo=memo)
    fresh = build_table(services, eps, pods)
    assert second.nodes == fresh.nodes and second.nodes != first.nodes
