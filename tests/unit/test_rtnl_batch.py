"""The batched overlay messages, checked field by field without root."""

import socket
import struct
from ipaddress import IPv4Address, IPv4Network

import pytest

from netlab.plan import PeerEntry
from netlab.realize import rtnl_batch as rb

VX = PeerEntry(
    "vxlan",
    "n3",
    IPv4Network("10.244.3.0/24"),
    IPv4Address("10.244.3.0"),
    "02:aa:bb:cc:dd:ee",
    IPv4Address("192.168.2.2"),
)
DIRECT = PeerEntry(
    "direct",
    "n2",
    IPv4Network("10.244.2.0/24"),
    IPv4Address("10.244.2.0"),
    "02:11:22:33:44:55",
    IPv4Address("192.168.1.3"),
)


def attrs(message: bytes, header: int) -> dict[int, bytes]:
    found, offset = {}, 16 + header
    while offset < len(message):
        length, kind = struct.unpack_from("=HH", message, offset)
        found[kind] = message[offset + 4 : offset + length]
        offset += (length + 3) & ~3
    return found


def test_flannel_order_and_sequence_numbers():
    messages = rb.peer_messages([VX, DIRECT], vtep=7, first_seq=10)
    kinds = [struct.unpack_from("=IHHII", m)[1] for m in messages]
    seqs = [struct.unpack_from("=IHHII", m)[3] for m in messages]
    assert kinds == [rb.RTM_NEWNEIGH, rb.RTM_NEWNEIGH, rb.RTM_NEWROUTE, rb.RTM_NEWROUTE]
    assert seqs == [10, 11, 12, 13]
    assert all(struct.unpack_from("=I", m)[0] == len(m) and len(m) % 4 == 0 for m in messages)


@pytest.mark.parametrize(
    "index,family,flags", [(0, socket.AF_INET, 0), (1, rb.AF_BRIDGE, rb.NTF_SELF)]
)
def test_neighbour_and_fdb(index, family, flags):
    message = rb.peer_messages([VX], vtep=7)[index]
    fam, _, _, ifindex, state, nflags, _ = struct.unpack_from("=BBHiHBB", message, 16)
    assert (fam, ifindex, state, nflags) == (family, 7, rb.NUD_PERMANENT, flags)
    found = attrs(message, 12)
    assert found[rb.NDA_LLADDR] == bytes.fromhex("02aabbccddee")
    expected = "10.244.3.0" if index == 0 else "192.168.2.2"
    assert found[rb.NDA_DST] == IPv4Address(expected).packed


@pytest.mark.parametrize(
    "entry,gateway,oif,flags",
    [(VX, "10.244.3.0", 7, rb.RTNH_F_ONLINK), (DIRECT, "192.168.1.3", None, 0)],
)
def test_routes(entry, gateway, oif, flags):
    message = rb.peer_messages([entry], vtep=7)[-1]
    fam, dst_len, _, _, table, proto, scope, rtype, rflags = struct.unpack_from(
        "=BBBBBBBBI", message, 16
    )
    assert (fam, dst_len, table, rtype, rflags) == (socket.AF_INET, 24, 254, rb.RTN_UNICAST, flags)
    found = attrs(message, 12)
    assert found[rb.RTA_DST] == entry.pod_cidr.network_address.packed
    assert found[rb.RTA_GATEWAY] == IPv4Address(gateway).packed
    assert (struct.unpack("=I", found[rb.RTA_OIF])[0] if rb.RTA_OIF in found else None) == oif
