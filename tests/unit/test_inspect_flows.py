"""The flow summary: the struct decoder, flows named by the book, and the IP
conversations counted exactly as tshark's conv,ip counts them."""

from __future__ import annotations

import io

import pytest
from scapy.layers.inet import ICMP, IP, TCP, UDP, fragment
from scapy.layers.l2 import Dot1Q, Ether
from scapy.layers.vxlan import VXLAN

from netlab.capture.pcapng import PacketFile
from netlab.inspect import flows, frames
from tests.unit.test_inspect_fixtures import (
    CLIENT,
    DNS_POD,
    N1,
    N2,
    N3,
    WEB,
    book,
    connection,
    lab_packets,
    needs_tshark,
    tshark_conversations,
    vxlan,
    write,
)


def odd_packets() -> list[tuple[str, object]]:
    """Frames that take the general decoder, and frames tshark does not count."""
    inner = IP(src="10.244.5.1", dst="10.244.6.1") / UDP(sport=1000, dport=2000) / b"x"
    out = [
        ("e", Ether() / Dot1Q(vlan=7) / IP(src="10.5.0.1", dst="10.5.0.2") / UDP() / b"v"),
        ("e", Ether() / IP(src="10.6.0.1", dst="10.6.0.2", options=b"\x01" * 4) / TCP()),
        (
            "e",
            Ether()
            / IP(src="192.168.9.1", dst="192.168.9.2")
            / UDP(sport=40000, dport=4789)
            / VXLAN(vni=42)
            / Ether()
            / inner,
        ),  # fmt: skip
        (
            "e",
            vxlan(
                N1, N3, IP(src="10.244.7.1", dst="10.244.8.1", ihl=6, options=b"\x01" * 4) / TCP()
            ),
        ),
        (
            "e",
            Ether()
            / IP(src="192.168.13.1", dst="192.168.13.2")
            / IP(src="10.13.0.1", dst="10.13.0.2")
            / UDP(),
        ),
        (
            "e",
            Ether()
            / IP(src="10.1.1.1", dst="10.2.2.2")
            / ICMP(type=3, code=3)
            / IP(src="10.2.2.2", dst="10.3.3.3")
            / UDP(sport=5, dport=53),
        ),  # fmt: skip
        (
            "e",
            Ether() / IP(src="10.15.0.1", dst="10.15.0.2", len=10) / UDP(),
        ),  # invalid: not counted
        ("e", Ether() / IP(src="10.17.0.1", dst="10.17.0.2", ihl=4) / UDP()),  # invalid
        ("e", Ether() / IP(src="10.16.0.1", dst="10.16.0.2", len=5000) / UDP()),  # counted
    ]
    big = IP(src="10.7.7.7", dst="10.8.8.8") / UDP(sport=9, dport=9) / (b"z" * 3000)
    out += [("e", Ether() / f) for f in fragment(big, fragsize=1000)]
    return out


@pytest.fixture
def lab(tmp_path):
    return write(tmp_path / "lab.pcapng", lab_packets())


@pytest.fixture
def odd(tmp_path):
    return write(tmp_path / "odd.pcapng", lab_packets()[:4] + odd_packets())


def tally_of(capture, as_stream: bool) -> flows.Tally:
    source = io.BytesIO(capture.path.read_bytes()) if as_stream else capture.path
    with PacketFile(source, name=capture.path.name) as packets:
        return flows.scan(packets, book().overlay_ports)


def ours(tally) -> dict:
    return {
        (c.a, c.b): (c.frames_a_to_b, c.bytes_a_to_b, c.frames_b_to_a, c.bytes_b_to_a)
        for c in flows.ip_conversations(tally)
    }


@needs_tshark
@pytest.mark.parametrize("which", ["lab", "odd"])
@pytest.mark.parametrize("as_stream", [False, True])  # the mapped fast path, and raw()
def test_conversations_equal_tsharks(request, which, as_stream):
    capture = request.getfixturevalue(which)
    assert ours(tally_of(capture, as_stream)) == tshark_conversations(capture.path)


def test_encapsulated_frames_count_in_both_pairs(lab):
    convs = ours(tally_of(lab, False))
    # the 6 packets of each connection, 2 ICMP: outer n1 <-> n3 and inner pair alike
    assert convs[(N1, N3)][0] + convs[(N1, N3)][2] == 14
    assert convs[(CLIENT, WEB)][0] + convs[(CLIENT, WEB)][2] == 14
    assert convs[(N1, N3)][1] == convs[(CLIENT, WEB)][1]  # whole frame bytes in both
    assert (N1, N2) in convs and (CLIENT, DNS_POD) in convs


def test_fast_and_general_paths_agree(odd):
    a, b = tally_of(odd, False), tally_of(odd, True)
    strip = lambda t: {k: v[:5] for k, v in t.table.items()}  # noqa: E731 (order units differ)
    assert strip(a) == strip(b)
    assert a.undecoded == b.undecoded == 2
    assert a.packets == b.packets == len(odd.frames)


def test_flows_named(lab):
    found = flows.flows(tally_of(lab, False), book())
    by_port = {(f.protocol, f.client_port): f for f in found}
    web = by_port[("tcp", 40000)]
    assert (web.client_name, web.server_name, web.service) == (
        "client-0",
        "web-7f9c-abcde",
        "svc/web",
    )
    assert (web.server, web.server_port, web.packets, web.packets_to_server) == (WEB, 8080, 6, 4)
    assert web.overlay and web.vni == 1 and web.encapsulation == "vxlan"
    assert web.underlay == [["node/n1", "node/n3"]] and web.cross_rack is True
    assert web.bytes == web.bytes_to_server + web.bytes_to_client
    assert web.interfaces == ["node/n1:eth0"]
    dns = by_port[("udp", 53000)]
    assert (dns.server_name, dns.service, dns.cross_rack) == (
        "kube-system/netlab-dns-x",
        "svc/kube-system/kube-dns",
        False,
    )
    icmp = next(f for f in found if f.protocol == "icmp")
    assert (icmp.client_name, icmp.server_name, icmp.packets) == ("client-0", "web-7f9c-abcde", 2)
    arp = next(f for f in found if f.protocol == "arp")
    assert (arp.client_name, arp.server_name, arp.encapsulation) == ("node/n1", "node/n2", None)


@pytest.mark.parametrize(
    "keep, client",
    [
        (slice(None), CLIENT),  # the SYN sender
        (slice(1, None), CLIENT),  # capture began at the SYN-ACK: its receiver
        (slice(2, None), CLIENT),  # no handshake: whoever sent first
        (slice(4, None), WEB),
    ],
)
def test_client_is_the_syn_sender(tmp_path, keep, client):
    packets = [("e", vxlan(N1, N3, p)) for p in connection(40000, "t", "r")[keep]]
    capture = write(tmp_path / "c.pcapng", packets)
    (flow,) = flows.flows(tally_of(capture, False), book())
    assert flow.client == client


def test_empty_book_shows_addresses(lab):
    found = flows.flows(tally_of(lab, False))
    web = next(f for f in found if f.client_port == 40000)
    assert (web.client_name, web.server_name, web.service, web.cross_rack) == (
        CLIENT,
        WEB,
        None,
        None,
    )
    assert web.underlay == [[N1, N3]]


def test_merge_keeps_files_apart(tmp_path):
    a = write(tmp_path / "a.pcapng", lab_packets()[:2])
    b = write(tmp_path / "b.pcapng", lab_packets()[:2])
    merged = flows.merge([tally_of(a, False), tally_of(b, False)])
    assert merged.packets == 4
    (dns,) = flows.flows(merged, book())
    assert dns.packets == 4 and len(dns.interfaces) == 2


@pytest.mark.parametrize(
    "frame, key",
    [
        (
            Ether() / IP(src="1.1.1.1", dst="2.2.2.2") / TCP(sport=1, dport=2, flags="S"),
            (6, 1, 2, None),
        ),
        (
            Ether() / Dot1Q() / Dot1Q() / IP(src="1.1.1.1", dst="2.2.2.2") / UDP(sport=3, dport=4),
            (17, 3, 4, None),
        ),
        (
            vxlan("9.9.9.1", "9.9.9.2", IP(src="1.1.1.1", dst="2.2.2.2") / UDP(sport=5, dport=6)),
            (17, 5, 6, 1),
        ),
        (Ether() / IP(src="1.1.1.1", dst="2.2.2.2", frag=10, proto=17) / b"rest", (17, 0, 0, None)),
    ],
)
def test_general_decoder(frame, key):
    data = bytes(frame)
    (proto, src, dst, sport, dport, _os, _od, tunnel), _flags = frames.decode(
        data, 0, len(data), 1, {8472}
    )
    assert (proto, sport, dport, tunnel) == key
    assert (src, dst) == (bytes([1, 1, 1, 1]), bytes([2, 2, 2, 2]))


def _scan(path, **kwargs) -> flows.Tally:
    with PacketFile(path) as packets:
        return flows.scan(packets, book().overlay_ports, **kwargs)


def _counts(tally) -> dict:
    return {k: v[:5] for k, v in tally.table.items()}


@pytest.fixture
def many(tmp_path):
    frames_ = (lab_packets() + odd_packets()) * 12
    return write(tmp_path / "many.pcapng", frames_)


def test_two_processes_count_the_same(many, monkeypatch):
    from netlab.inspect import forking

    taken = []
    result = forking.Child.result
    monkeypatch.setattr(forking, "cpus", lambda: 2)
    monkeypatch.setattr(
        forking.Child, "result", lambda self: taken.append(result(self)) or taken[-1]
    )
    alone = _scan(many.path, split_min=1 << 40)
    split = _scan(many.path, split_min=1)
    assert len(taken) == 1 and taken[0].packets > len(many.frames) // 3  # the child read its half
    assert _counts(split) == _counts(alone)
    assert split.packets == alone.packets == len(many.frames)
    assert [c.to_dict() for c in flows.ip_conversations(split)] == [
        c.to_dict() for c in flows.ip_conversations(alone)
    ]


def test_two_processes_wrong_boundary_is_harmless(many, monkeypatch):
    from netlab.inspect import forking

    real = forking.boundary
    monkeypatch.setattr(forking, "cpus", lambda: 2)
    monkeypatch.setattr(forking, "boundary", lambda *args: real(*args) + 4)  # inside a block
    assert _counts(_scan(many.path, split_min=1)) == _counts(_scan(many.path, split_min=1 << 40))


def test_two_processes_truncated_second_half(many, tmp_path, monkeypatch):
    from netlab.inspect import forking

    monkeypatch.setattr(forking, "cpus", lambda: 2)
    data = many.path.read_bytes()
    cut = tmp_path / "cut.pcapng"
    cut.write_bytes(data[: len(data) - 50])
    split, alone = _scan(cut, split_min=1), _scan(cut, split_min=1 << 40)
    assert split.problems == alone.problems and len(split.problems) == 1
    assert _counts(split) == _counts(alone) and split.packets == alone.packets


def test_two_processes_interface_added_midway(tmp_path, monkeypatch):
    """An interface described after the first packets: the child's view of
    the interfaces is stale, so its counts are not used."""
    from netlab.capture.pcapng import PcapngWriter
    from netlab.inspect import forking

    monkeypatch.setattr(forking, "cpus", lambda: 2)
    frames_ = [bytes(f) for _i, f in lab_packets() * 10]
    path = tmp_path / "late.pcapng"
    with open(path, "wb") as stream:
        w = PcapngWriter(stream)
        a = w.add_interface("a")
        for n, data in enumerate(frames_):
            if n == len(frames_) // 4:
                w.add_interface("b")
            w.write_packet(a, n, data)
    split, alone = _scan(path, split_min=1), _scan(path, split_min=1 << 40)
    assert _counts(split) == _counts(alone) and split.packets == len(frames_)
