"""The detailed per-packet view (scapy), named through the address book."""

from __future__ import annotations

import pytest
from scapy.layers.inet import ICMP, IP, TCP, UDP
from scapy.layers.l2 import Ether

from netlab.capture.addressbook import AddressBook
from netlab.inspect.packets import PacketInfo, PacketReader, describe
from tests.unit.test_inspect_fixtures import (
    CLIENT,
    N1,
    N3,
    TRACE_1,
    WEB,
    book,
    lab_packets,
    vxlan,
    write,
)


def info_of(frame, the_book=None) -> PacketInfo:
    data = bytes(frame)
    info = PacketInfo("f", 1, 0, "node/n1:eth0", len(data), len(data))
    return describe(info, data, 1, the_book or book())


@pytest.fixture(scope="module")
def lab_infos(tmp_path_factory):
    capture = write(tmp_path_factory.mktemp("p") / "lab.pcapng", lab_packets())
    return list(PacketReader(capture.path, book()))


def test_dns_query_and_answer_named(lab_infos):
    query, answer = lab_infos[0], lab_infos[1]
    assert (query.protocol, query.src_name, query.dst_name) == (
        "dns",
        "client-0",
        "kube-system/netlab-dns-x",
    )
    assert query.summary == "query A web.default.svc.cluster.local"
    assert query.service == "svc/kube-system/kube-dns"
    assert answer.dns["rcode"] == "NOERROR"
    assert answer.dns["answers"][0]["data"] == "10.96.0.20"
    assert (
        answer.summary == "response NOERROR A web.default.svc.cluster.local -> 10.96.0.20 (svc/web)"
    )


def test_vxlan_outer_nodes_and_vni(lab_infos):
    syn = lab_infos[2]
    assert (syn.outer.src_name, syn.outer.dst_name, syn.outer.vni) == ("node/n1", "node/n3", 1)
    assert (syn.outer.src, syn.outer.dst, syn.outer.encapsulation) == (N1, N3, "vxlan")
    assert (syn.src, syn.dst, syn.sport, syn.dport) == (CLIENT, WEB, 40000, 8080)
    assert (syn.src_name, syn.dst_name, syn.service) == ("client-0", "web-7f9c-abcde", "svc/web")
    assert syn.interface == "node/n1:eth0"


@pytest.mark.parametrize("index, flags", [(2, "S"), (3, "S."), (4, "."), (7, "F.")])
def test_tcp_flags(lab_infos, index, flags):
    info = lab_infos[index]
    assert info.protocol == "tcp" and info.tcp_flags == flags
    assert info.summary.startswith(f"Flags [{flags}]")


def test_http_request_with_traceparent_and_response(lab_infos):
    request, response = lab_infos[5], lab_infos[6]
    assert request.protocol == "http"
    assert request.http["method"] == "GET" and request.http["path"] == "/hello"
    assert request.http["host"] == "web"
    assert (request.trace_id, request.request_id) == (TRACE_1, "req-1")
    assert request.summary == f"GET /hello host=web trace={TRACE_1} request-id=req-1"
    assert response.http["status"] == 200 and response.summary == "200 OK"


def test_icmp_and_arp(lab_infos):
    echo, reply, who_has, is_at = lab_infos[8:12]
    assert echo.summary == "echo-request id 1 seq 1" and echo.protocol == "icmp"
    assert reply.summary == "echo-reply id 1 seq 1"
    assert who_has.summary == "who-has 192.168.1.12 (node/n2) tell 192.168.1.11 (node/n1)"
    assert is_at.summary == "192.168.1.12 (node/n2) is-at 02:00:00:00:00:02 (node/n2)"
    assert who_has.outer is None


def test_times_and_numbers(lab_infos):
    assert [i.number for i in lab_infos] == list(range(1, len(lab_infos) + 1))
    assert lab_infos[3].to_dict(lab_infos[0].ts_ns)["time"] == 3e-6
    assert lab_infos[0].to_dict(0)["ts"] == "2025-11-24T16:00:00.000000000Z"


@pytest.mark.parametrize(
    "frame, summary",
    [
        (
            Ether() / IP(src="1.1.1.1", dst="2.2.2.2") / ICMP(type=3, code=3),
            "dest-unreach (port-unreachable)",
        ),
        (Ether() / IP(src="1.1.1.1", dst="2.2.2.2") / UDP(sport=1, dport=2) / b"abc", "len 3"),
        (Ether() / IP(src="1.1.1.1", dst="2.2.2.2", proto=47) / b"gre", "ip proto 47 len 3"),
    ],
)
def test_other_packets(frame, summary):
    assert info_of(frame, AddressBook.empty()).summary == summary


def test_unknown_addresses_stay_addresses():
    info = info_of(
        vxlan("9.9.9.1", "9.9.9.2", IP(src="10.1.1.1", dst="10.1.1.2") / TCP()), AddressBook.empty()
    )
    assert (info.src_name, info.outer.src_name, info.service) == ("10.1.1.1", "9.9.9.1", None)


@pytest.mark.parametrize(
    "data",
    [
        bytes(Ether() / IP(src="1.1.1.1", dst="2.2.2.2") / TCP())[:40],  # cut in the TCP header
        b"\x00" * 5,
        bytes(Ether(type=0x0800)) + b"\x4f" + b"\xff" * 30,
    ],
)
def test_damaged_frames_still_get_a_line(data):
    info = PacketInfo("f", 1, 0, "if0", len(data), len(data))
    describe(info, data, 1, book())
    assert info.summary  # something to print, no exception


def test_undecodable_by_scapy_gets_malformed(monkeypatch):
    from netlab.inspect import packets

    def boom(*args):
        raise ValueError("bad field")

    monkeypatch.setattr(packets, "_describe", boom)
    info = info_of(Ether() / IP() / TCP())
    assert info.summary == "malformed: ValueError: bad field" and info.protocol == "malformed"
