"""Capture filters: tcpdump's filter language compiled by libpcap itself
(pcap_open_dead + pcap_compile through ctypes), so `-f` means exactly what it
means to tcpdump, without an interface or a tcpdump process."""

from __future__ import annotations

import ctypes
import ctypes.util
import socket
import struct

from netlab.errors import NetlabError

DLT_EN10MB = 1  # every lab interface is Ethernet: veth, bridge, VXLAN
SNAPLEN = 262144
SO_ATTACH_FILTER = 26


class _Insn(ctypes.Structure):
    _fields_ = [
        ("code", ctypes.c_ushort),
        ("jt", ctypes.c_ubyte),
        ("jf", ctypes.c_ubyte),
        ("k", ctypes.c_uint32),
    ]


class _Program(ctypes.Structure):
    _fields_ = [("bf_len", ctypes.c_uint), ("bf_insns", ctypes.POINTER(_Insn))]


def _libpcap() -> ctypes.CDLL:
    name = ctypes.util.find_library("pcap") or "libpcap.so.0.8"
    try:
        lib = ctypes.CDLL(name)
    except OSError as exc:
        raise NetlabError(
            "capture filters need libpcap: `apt-get install libpcap0.8` (or `sudo make bootstrap`)"
        ) from exc
    lib.pcap_open_dead.restype = ctypes.c_void_p
    lib.pcap_open_dead.argtypes = [ctypes.c_int, ctypes.c_int]
    lib.pcap_compile.argtypes = [
        ctypes.c_void_p,
        ctypes.POINTER(_Program),
        ctypes.c_char_p,
        ctypes.c_int,
        ctypes.c_uint32,
    ]
    lib.pcap_geterr.restype = ctypes.c_char_p
    lib.pcap_geterr.argtypes = [ctypes.c_void_p]
    lib.pcap_freecode.argtypes = [ctypes.POINTER(_Program)]
    lib.pcap_close.argtypes = [ctypes.c_void_p]
    return lib


def compile_filter(expression: str) -> list[tuple[int, int, int, int]]:
    """The classic BPF program for a tcpdump filter expression on Ethernet,
    as (code, jt, jf, k) instructions; NetlabError naming the problem if it
    does not compile."""
    lib = _libpcap()
    handle = lib.pcap_open_dead(DLT_EN10MB, SNAPLEN)
    if not handle:
        raise NetlabError("libpcap could not open a filter compiler")
    program = _Program()
    try:
        if lib.pcap_compile(handle, ctypes.byref(program), expression.encode(), 1, 0xFFFFFFFF):
            reason = lib.pcap_geterr(handle).decode(errors="replace")
            raise NetlabError(
                f"capture filter {expression!r}: {reason}; write it as for tcpdump, "
                "e.g. -f 'udp port 8472' or -f 'tcp port 80 and host 10.244.1.5'"
            )
        return [
            (i.code, i.jt, i.jf, i.k) for i in (program.bf_insns[n] for n in range(program.bf_len))
        ]
    finally:
        lib.pcap_freecode(ctypes.byref(program))
        lib.pcap_close(handle)


def attach(sock: socket.socket, program: list[tuple[int, int, int, int]]) -> None:
    """SO_ATTACH_FILTER: the kernel drops what the filter rejects before it
    is copied to us. Attach before binding, so nothing unfiltered slips in."""
    raw = b"".join(struct.pack("HBBI", *insn) for insn in program)
    buffer = ctypes.create_string_buffer(raw, len(raw))
    fprog = struct.pack("HL", len(program), ctypes.addressof(buffer))
    sock.setsockopt(socket.SOL_SOCKET, SO_ATTACH_FILTER, fprog)
