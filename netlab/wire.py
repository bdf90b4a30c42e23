"""A first look at the wire: capture with tcpdump inside a lab namespace,
decode the VXLAN overlay with scapy. (Full capture and inspection come later.)"""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

from scapy.layers.inet import ICMP, IP, TCP, UDP
from scapy.layers.vxlan import VXLAN
from scapy.packet import bind_layers
from scapy.utils import rdpcap


class Capture:
    """tcpdump in a namespace, writing a pcap; bounded by packet count and time."""

    def __init__(self, netns_name: str, interface: str, bpf: str, path: Path, count: int = 20):
        self.path = path
        self.proc = subprocess.Popen(
            [
                "ip",
                "netns",
                "exec",
                netns_name,
                "tcpdump",
                "-i",
                interface,
                "-U",
                "-c",
                str(count),
                "-w",
                str(path),
                bpf,
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        # tcpdump says "listening on" once its socket is open
        deadline = time.monotonic() + 5
        line = b""
        while time.monotonic() < deadline and b"listening on" not in line:
            line = self.proc.stderr.readline()
            if not line and self.proc.poll() is not None:
                break

    def stop(self, timeout: float = 3.0) -> Path:
        try:
            self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.terminate()
            self.proc.wait(timeout=5)
        self.proc.stderr.close()
        return self.path


def describe(packet, vxlan_port: int) -> str:
    """One line: outer addresses, VNI, inner addresses and protocol."""
    bind_layers(UDP, VXLAN, dport=vxlan_port)  # scapy only knows 4789 by default
    if IP not in packet:
        return packet.summary()
    outer = packet[IP]
    text = f"{outer.src} > {outer.dst}"
    if VXLAN in packet:
        vx = packet[VXLAN]
        inner = vx.payload
        text += f" UDP {packet[UDP].dport} VXLAN VNI {vx.vni} | inner"
        if IP in inner:
            ip = inner[IP]
            text += f" {ip.src} > {ip.dst}"
            if ICMP in ip:
                text += f" ICMP {ip[ICMP].sprintf('%ICMP.type%')}"
            elif TCP in ip:
                text += f" TCP {ip[TCP].sport} > {ip[TCP].dport} [{ip[TCP].sprintf('%TCP.flags%')}]"
            elif UDP in ip:
                text += f" UDP {ip[UDP].sport} > {ip[UDP].dport}"
    return text


def decode_vxlan(path: Path, vxlan_port: int) -> list:
    """The captured packets, with UDP `vxlan_port` decoded as VXLAN."""
    bind_layers(UDP, VXLAN, dport=vxlan_port)
    return list(rdpcap(str(path)))
