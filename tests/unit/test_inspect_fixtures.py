"""A small lab capture for the inspect tests, crafted with scapy.

Lab: n1 and n2 on rack1, n3 on rack2. client-0 runs on n1, web-7f9c-abcde
(behind svc/web, 10.96.0.20:80 -> 8080) on n3, the DNS pod kube-system/
netlab-dns-x (behind svc/kube-system/kube-dns) on n2. Traffic between nodes
is VXLAN on UDP 8472, VNI 1, as seen on the sending and receiving nodes' eth0.
"""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest
from scapy.layers.dns import DNS, DNSQR, DNSRR
from scapy.layers.inet import ICMP, IP, TCP, UDP
from scapy.layers.l2 import ARP, Ether
from scapy.layers.vxlan import VXLAN
from scapy.packet import Raw

from netlab.capture.addressbook import AddressBook, Entry, ServicePorts
from netlab.capture.pcapng import PcapngWriter

N1, N2, N3 = "192.168.1.11", "192.168.1.12", "192.168.2.13"
CLIENT, WEB, DNS_POD = "10.244.1.10", "10.244.3.3", "10.244.2.2"
WEB_VIP, DNS_VIP = "10.96.0.20", "10.96.0.10"
N1_MAC, N2_MAC = "02:00:00:00:00:01", "02:00:00:00:00:02"
TRACE_1 = "4bf92f3577b34da6a3ce929d0e0e4736"
TRACE_2 = "0af7651916cd43dd8448eb211c80319c"
T0 = 1_764_000_000_000_000_000

needs_tshark = pytest.mark.skipif(not shutil.which("tshark"), reason="tshark is not installed")


def book() -> AddressBook:
    b = AddressBook(lab="t")
    for ip, name, rack in ((N1, "n1", "rack1"), (N2, "n2", "rack1"), (N3, "n3", "rack2")):
        b.addresses[ip] = Entry("node", name, rack=rack)
    b.macs[N2_MAC] = b.addresses[N2]
    b.addresses["10.244.1.0"] = Entry("vtep", "n1", node="n1", rack="rack1")
    b.addresses[CLIENT] = Entry("pod", "client-0", "default", "n1", "rack1")
    b.addresses[WEB] = Entry("pod", "web-7f9c-abcde", "default", "n3", "rack2")
    b.addresses[DNS_POD] = Entry("pod", "netlab-dns-x", "kube-system", "n2", "rack1")
    b.addresses[WEB_VIP] = Entry("service", "web", "default")
    b.addresses[DNS_VIP] = Entry("service", "kube-dns", "kube-system")
    b.services = [
        ServicePorts("svc/web", WEB_VIP, (80,), ((WEB, 8080),)),
        ServicePorts("svc/kube-system/kube-dns", DNS_VIP, (53,), ((DNS_POD, 53),)),
    ]
    return b


def vxlan(outer_src: str, outer_dst: str, inner, sport: int = 49152):
    return (
        Ether()
        / IP(src=outer_src, dst=outer_dst)
        / UDP(sport=sport, dport=8472)
        / VXLAN(vni=1, flags=0x08)
        / Ether()
        / inner
    )


def http_request(path: str, trace: str, request_id: str) -> bytes:
    return (
        f"GET {path} HTTP/1.1\r\nHost: web\r\n"
        f"traceparent: 00-{trace}-00f067aa0ba902b7-01\r\nx-request-id: {request_id}\r\n\r\n"
    ).encode()


RESPONSE = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok"


def connection(sport: int, trace: str, request_id: str) -> list:
    """A whole HTTP connection client-0 -> web (inner packets, in order)."""
    c, s = IP(src=CLIENT, dst=WEB), IP(src=WEB, dst=CLIENT)
    request = http_request("/hello", trace, request_id)
    return [
        c / TCP(sport=sport, dport=8080, flags="S", seq=100),
        s / TCP(sport=8080, dport=sport, flags="SA", seq=500, ack=101),
        c / TCP(sport=sport, dport=8080, flags="A", seq=101, ack=501),
        c / TCP(sport=sport, dport=8080, flags="PA", seq=101, ack=501) / Raw(request),
        s
        / TCP(sport=8080, dport=sport, flags="PA", seq=501, ack=101 + len(request))
        / Raw(RESPONSE),
        c
        / TCP(sport=sport, dport=8080, flags="FA", seq=101 + len(request), ack=501 + len(RESPONSE)),
    ]


def lab_packets() -> list[tuple[str, object]]:
    """(interface, frame) in capture order."""
    query = IP(src=CLIENT, dst=DNS_POD) / UDP(sport=53000, dport=53)
    query /= DNS(id=7, rd=1, qd=DNSQR(qname="web.default.svc.cluster.local", qtype="A"))
    answer = IP(src=DNS_POD, dst=CLIENT) / UDP(sport=53, dport=53000)
    answer /= DNS(
        id=7,
        qr=1,
        aa=1,
        rd=1,
        qd=DNSQR(qname="web.default.svc.cluster.local", qtype="A"),
        an=DNSRR(rrname="web.default.svc.cluster.local", type="A", ttl=5, rdata=WEB_VIP),
    )
    frames = [
        ("node/n1:eth0", vxlan(N1, N2, query)),
        ("node/n1:eth0", vxlan(N2, N1, answer)),
    ]
    for inner in connection(40000, TRACE_1, "req-1"):
        outer = (N1, N3) if inner[IP].src == CLIENT else (N3, N1)
        frames.append(("node/n1:eth0", vxlan(*outer, inner)))
    frames += [
        ("node/n1:eth0", vxlan(N1, N3, IP(src=CLIENT, dst=WEB) / ICMP(type=8, id=1, seq=1))),
        ("node/n1:eth0", vxlan(N3, N1, IP(src=WEB, dst=CLIENT) / ICMP(type=0, id=1, seq=1))),
        ("node/n1:eth0", Ether(src=N1_MAC) / ARP(op=1, hwsrc=N1_MAC, psrc=N1, pdst=N2)),
        (
            "node/n1:eth0",
            Ether(src=N2_MAC) / ARP(op=2, hwsrc=N2_MAC, psrc=N2, hwdst=N1_MAC, pdst=N1),
        ),
    ]
    for inner in connection(40001, TRACE_2, "req-2"):
        outer = (N1, N3) if inner[IP].src == CLIENT else (N3, N1)
        frames.append(("node/n1:eth0", vxlan(*outer, inner)))
    return frames


@dataclass
class Capture:
    path: Path
    frames: list[bytes]


def write(
    path: Path, frames: list[tuple[str, object]], start: int = T0, step: int = 1000
) -> Capture:
    """A pcapng of these frames (with the book beside it)."""
    with open(path, "wb") as stream:
        w = PcapngWriter(stream)
        ids = {name: w.add_interface(name) for name in dict.fromkeys(i for i, _f in frames)}
        raws = []
        for n, (iface, frame) in enumerate(frames):
            data = bytes(frame)
            raws.append(data)
            w.write_packet(ids[iface], start + n * step, data)
    book().save(AddressBook.beside(path))
    return Capture(path, raws)


def tshark(*args: str) -> str:
    return subprocess.run(
        ["tshark", *args], capture_output=True, text=True, check=True, timeout=60
    ).stdout


def tshark_conversations(path: Path) -> dict[tuple[str, str], tuple[int, int, int, int]]:
    """{(A, B): (frames A->B, bytes A->B, frames B->A, bytes B->A)} of conv,ip."""
    out = tshark("-n", "-q", "-d", "udp.port==8472,vxlan", "-z", "conv,ip", "-r", str(path))
    convs = {}
    for line in out.splitlines():
        parts = line.split()
        if len(parts) > 9 and parts[1] == "<->":
            a, b = parts[0], parts[2]
            f_ba, b_ba, f_ab, b_ab = int(parts[3]), parts[4], int(parts[6]), parts[7]
            assert parts[5] == parts[8] == "bytes", line  # small numbers: exact bytes
            convs[(a, b)] = (f_ab, int(b_ab), f_ba, int(b_ba))
    return convs
