"""Batched UDP receive/send with recvmmsg(2)/sendmmsg(2) through ctypes.

One system call reads up to `batch` queries and one sends all their answers:
per-packet syscall cost, not Python, was what held a plain receive loop near
dnsmasq's rate. The buffers (message headers, iovecs, peer addresses, packet
data) are bytearrays allocated once; only lengths and address pointers are
rewritten per packet. `available()` says whether libc has the calls (else the
server falls back to recvfrom/sendto).
"""

from __future__ import annotations

import ctypes
import errno
import functools
import socket
import struct
from collections.abc import Callable

MSG_WAITFORONE = 0x10000
_HDR = 64  # sizeof(struct mmsghdr) on 64-bit Linux: msghdr (56) + msg_len (4) + padding
_IOV = 16  # sizeof(struct iovec)
_NAME = 32  # room for a sockaddr_in6 (28)
_MSGHDR = struct.Struct(
    "@PI4xPNPNi4xI4x"
)  # name, namelen, iov, iovlen, control, controllen, flags, len
_IOVEC = struct.Struct("@PN")
_LEN_AT = 56  # offset of msg_len in an mmsghdr


@functools.cache
def _load() -> ctypes.CDLL | None:
    """libc with recvmmsg/sendmmsg prototypes set, or None where they are missing."""
    try:
        lib = ctypes.CDLL(None, use_errno=True)
        recv, send = lib.recvmmsg, lib.sendmmsg
    except (OSError, AttributeError):
        return None
    recv.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_uint, ctypes.c_int, ctypes.c_void_p]
    send.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_uint, ctypes.c_int]
    recv.restype = send.restype = ctypes.c_int
    return lib


def available() -> bool:
    """True when recvmmsg/sendmmsg can be used here (64-bit Linux libc)."""
    return _MSGHDR.size == _HDR and _load() is not None


def _pin(buf: bytearray, keep: list) -> int:
    """The address of a bytearray's memory; the export kept in `keep` forbids resizing it."""
    view = (ctypes.c_char * len(buf)).from_buffer(buf)
    keep.append(view)
    return ctypes.addressof(view)


class MsgBatch:
    """Receive a batch of datagrams, answer each, send the answers in one call."""

    def __init__(self, sock: socket.socket, batch: int = 64, size: int = 4096):
        lib = _load()
        if lib is None:
            raise OSError("recvmmsg/sendmmsg not available")
        self._recv, self._send = lib.recvmmsg, lib.sendmmsg
        self.sock, self.fd, self.n, self.size = sock, sock.fileno(), batch, size
        self.rdata, self.sdata = bytearray(batch * size), bytearray(batch * size)
        self.names = bytearray(batch * _NAME)
        self.riov, self.siov = bytearray(batch * _IOV), bytearray(batch * _IOV)
        self.rhdr, self.shdr = bytearray(batch * _HDR), bytearray(batch * _HDR)
        self._pins: list = []
        addr = {
            k: _pin(getattr(self, k), self._pins)
            for k in ("rdata", "sdata", "names", "riov", "siov", "rhdr", "shdr")
        }
        self.names_at, self.rhdr_at, self.shdr_at = addr["names"], addr["rhdr"], addr["shdr"]
        for i in range(batch):
            _IOVEC.pack_into(self.riov, i * _IOV, addr["rdata"] + i * size, size)
            _IOVEC.pack_into(self.siov, i * _IOV, addr["sdata"] + i * size, 0)
            name = addr["names"] + i * _NAME
            _MSGHDR.pack_into(
                self.rhdr, i * _HDR, name, _NAME, addr["riov"] + i * _IOV, 1, 0, 0, 0, 0
            )
            _MSGHDR.pack_into(
                self.shdr, i * _HDR, name, _NAME, addr["siov"] + i * _IOV, 1, 0, 0, 0, 0
            )
        self._rhdr_fresh = bytes(self.rhdr)
        self._rview = memoryview(self.rdata)

    def serve_once(self, answer: Callable[[bytes], bytes | None]) -> int:
        """Wait for datagrams (up to the socket's SO_RCVTIMEO), answer them; the count read."""
        self.rhdr[:] = self._rhdr_fresh  # the kernel rewrote namelen and msg_len
        got = self._recv(self.fd, self.rhdr_at, self.n, MSG_WAITFORONE, None)
        if got <= 0:
            err = ctypes.get_errno()
            if got < 0 and err not in (errno.EAGAIN, errno.EWOULDBLOCK, errno.EINTR):
                raise OSError(err, "recvmmsg failed")
            return 0
        size, rhdr, view, shdr, unpack = (
            self.size,
            self.rhdr,
            self._rview,
            self.shdr,
            _U32.unpack_from,
        )
        out = 0
        for i in range(got):
            length = unpack(rhdr, i * _HDR + _LEN_AT)[0]
            try:
                resp = answer(bytes(view[i * size : i * size + length]))
            except Exception:  # one bad query must not stop the loop
                resp = None
            if resp is None:
                continue
            if len(resp) > size:  # cannot happen for UDP answers; be safe anyway
                continue
            at = out * size
            self.sdata[at : at + len(resp)] = resp
            _SIZE.pack_into(self.siov, out * _IOV + 8, len(resp))
            namelen = unpack(rhdr, i * _HDR + 8)[0]
            _NAMEPTR.pack_into(shdr, out * _HDR, self.names_at + i * _NAME, namelen)
            out += 1
        self._flush(out)
        return got

    def _flush(self, count: int) -> None:
        sent = 0
        while sent < count:
            n = self._send(self.fd, self.shdr_at + sent * _HDR, count - sent, 0)
            if n < 0:
                err = ctypes.get_errno()
                if err == errno.EINTR:
                    continue
                n = 1  # this destination failed (e.g. unreachable): skip that one answer
            sent += n


_SIZE = struct.Struct("@N")
_U32 = struct.Struct("@I")
_NAMEPTR = struct.Struct("@PI")
