"""Packet sockets opened inside the lab's namespaces by the capturing process
itself, as containerlab's `capture` does: a socket belongs to the namespace
it was created in, so one process can read interfaces of many namespaces,
and nothing runs inside pods or nodes.

No interface is put into promiscuous mode except a rack bridge, whose own
device only sees the frames it forwards while promiscuous (tcpdump does the
same); that membership belongs to the socket and ends with it.
"""

from __future__ import annotations

import errno
import socket
import struct
from dataclasses import dataclass

from netlab.capture import bpf
from netlab.errors import NetlabError
from netlab.realize import netns

ETH_P_ALL = 0x0003
SOL_PACKET = 263
PACKET_ADD_MEMBERSHIP = 1
PACKET_MR_PROMISC = 1
PACKET_OUTGOING = 4
SO_TIMESTAMPNS = 35
SO_RCVBUF = 8
RECEIVE_BUFFER = 8 << 20  # bursts of a busy lab wait here while we write
_TIMESPEC = struct.Struct("qq")
_CMSG_SPACE = socket.CMSG_SPACE(_TIMESPEC.size)


@dataclass(frozen=True)
class Interface:
    """One interface to capture: its label in the capture (`node/n1:flannel.1`),
    its namespace (a name under /run/netns) and its name there."""

    label: str
    netns: str
    ifname: str
    promiscuous: bool = False  # rack bridges only


class PacketSocket:
    """A bound AF_PACKET socket on one interface, with kernel timestamps."""

    def __init__(self, interface: Interface, program: list | None):
        self.interface = interface
        path = netns.netns_path(interface.netns)
        if not path.exists():
            raise NetlabError(
                f"{interface.label}: namespace {interface.netns} does not exist; "
                "is the lab still running? (`netlab get nodes`)"
            )
        with netns.entered(path):
            sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0)  # receives nothing yet
            try:
                sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
                sock.setsockopt(socket.SOL_SOCKET, SO_RCVBUF, RECEIVE_BUFFER)
                if program:
                    bpf.attach(sock, program)
                try:
                    sock.bind((interface.ifname, ETH_P_ALL))
                except OSError as exc:
                    if exc.errno == errno.ENODEV:
                        names = sorted(name for _, name in socket.if_nameindex() if name != "lo")
                        raise NetlabError(
                            f"{interface.label}: no interface {interface.ifname} there; "
                            f"it has {', '.join(names)} (pick one with -i)"
                        ) from exc
                    raise
                if interface.promiscuous:
                    index = socket.if_nametoindex(interface.ifname)
                    mreq = struct.pack("iHH8s", index, PACKET_MR_PROMISC, 0, b"")
                    sock.setsockopt(SOL_PACKET, PACKET_ADD_MEMBERSHIP, mreq)
            except BaseException:
                sock.close()
                raise
        sock.setblocking(False)
        self.sock = sock
        self.buffer = bytearray(bpf.SNAPLEN)  # reused: a fresh 256 KiB per packet costs an mmap
        self.view = memoryview(self.buffer)

    def fileno(self) -> int:
        return self.sock.fileno()

    def read(self, limit: int = 64) -> list[tuple[int, bytes, bool]]:
        """Up to `limit` waiting packets as (timestamp ns, frame, outbound)."""
        packets = []
        recvmsg_into, buffers, view = self.sock.recvmsg_into, [self.buffer], self.view
        for _ in range(limit):
            try:
                size, ancdata, _flags, address = recvmsg_into(buffers, _CMSG_SPACE)
            except BlockingIOError:
                break
            data = bytes(view[:size])
            ts = 0
            for level, kind, payload in ancdata:
                if level == socket.SOL_SOCKET and kind == SO_TIMESTAMPNS:
                    seconds, nanoseconds = _TIMESPEC.unpack_from(payload)
                    ts = seconds * 1_000_000_000 + nanoseconds
            packets.append((ts, data, address[2] == PACKET_OUTGOING))
        return packets

    def close(self) -> None:
        self.sock.close()
