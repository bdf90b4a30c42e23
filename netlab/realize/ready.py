"""Ready means reachable: ICMP echo from inside the lab to every pod,
in-process (one raw socket, no ping process per pod)."""

from __future__ import annotations

import os
import select
import socket
import struct
import time
from collections.abc import Iterable
from ipaddress import IPv4Address

from netlab.realize import netns

ICMP_ECHO_REQUEST = 8
ICMP_ECHO_REPLY = 0


def _checksum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    total = (total >> 16) + (total & 0xFFFF)
    total += total >> 16
    return ~total & 0xFFFF


def echo_request(ident: int, seq: int) -> bytes:
    header = struct.pack("!BBHHH", ICMP_ECHO_REQUEST, 0, 0, ident, seq)
    payload = b"netlab-ready"
    return (
        struct.pack("!BBHHH", ICMP_ECHO_REQUEST, 0, _checksum(header + payload), ident, seq)
        + payload
    )


def unreachable(
    netns_path: str,
    targets: Iterable[IPv4Address],
    timeout: float = 5.0,
    interval: float = 0.05,
) -> set[IPv4Address]:
    """Ping every target from the namespace at netns_path until each has
    answered once or `timeout` passes; return those that never answered."""
    pending = {str(t) for t in targets}
    if not pending:
        return set()
    with netns.entered(netns_path):
        sock = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)
    ident = os.getpid() & 0xFFFF
    seq = 0
    deadline = time.monotonic() + timeout
    try:
        while pending and time.monotonic() < deadline:
            seq = (seq + 1) & 0xFFFF
            packet = echo_request(ident, seq)
            for target in list(pending):
                try:
                    sock.sendto(packet, (target, 0))
                except OSError:
                    pass  # e.g. no route yet; try again next round
            round_end = min(deadline, time.monotonic() + interval)
            while pending and (left := round_end - time.monotonic()) > 0:
                ready, _, _ = select.select([sock], [], [], left)
                if not ready:
                    break
                data, (source, _) = sock.recvfrom(2048)
                ihl = (data[0] & 0x0F) * 4
                if len(data) >= ihl + 8:
                    kind, _, _, rid, _ = struct.unpack("!BBHHH", data[ihl : ihl + 8])
                    if kind == ICMP_ECHO_REPLY and rid == ident:
                        pending.discard(source)
    finally:
        sock.close()
    return {IPv4Address(t) for t in pending}
