"""The batched overlay messages, checked field by field without root."""

import socket
import struct
from ipaddress import IPv4Address, IPv4Interface, IPv4Network

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


def test_flannel_order():
    messages = rb.peer_messages([VX, DIRECT], vtep=7)
    kinds = [struct.unpack_from("=IHHII", m)[1] for m in messages]
    assert kinds == [rb.RTM_NEWNEIGH, rb.RTM_NEWNEIGH, rb.RTM_NEWROUTE, rb.RTM_NEWROUTE]
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


def test_veth_nests_the_peer_with_its_namespace_and_address():
    message = rb.veth(
        "veth0123abcd",
        master=5,
        mtu=1450,
        peer_ifname="eth0",
        peer_mac="0a:58:0a:f4:01:02",
        peer_netns_fd=9,
    )
    length, kind, flags, _, _ = struct.unpack_from("=IHHII", message)
    assert (length, kind) == (len(message), rb.RTM_NEWLINK)
    assert flags & rb.NLM_F_EXCL and flags & rb.NLM_F_CREATE
    _, _, _, index, iflags, change = struct.unpack_from("=BBHiII", message, 16)
    assert (index, iflags, change) == (0, rb.IFF_UP, rb.IFF_UP)
    found = attrs(message, 16)
    assert found[rb.IFLA_IFNAME] == b"veth0123abcd\0"
    assert struct.unpack("=I", found[rb.IFLA_MASTER]) == (5,)
    assert struct.unpack("=I", found[rb.IFLA_MTU]) == (1450,)
    info = attrs(b"\0" * 16 + found[rb.IFLA_LINKINFO], 0)
    assert info[rb.IFLA_INFO_KIND] == b"veth\0"
    peer = attrs(b"\0" * 16 + info[rb.IFLA_INFO_DATA], 0)[rb.VETH_INFO_PEER]
    assert struct.unpack_from("=BBHiII", peer)[3:5] == (0, 0)  # not up: see veth()
    peer_attrs = attrs(b"\0" * 16 + peer, 16)
    assert peer_attrs[rb.IFLA_IFNAME] == b"eth0\0"
    assert peer_attrs[rb.IFLA_ADDRESS] == bytes.fromhex("0a580af40102")
    assert struct.unpack("=I", peer_attrs[rb.IFLA_NET_NS_FD]) == (9,)


def test_address_and_default_route():
    message = rb.address(2, IPv4Interface("10.244.1.2/24"))
    family, prefix, _, _, index = struct.unpack_from("=BBBBI", message, 16)
    assert (family, prefix, index) == (socket.AF_INET, 24, 2)
    found = attrs(message, 8)
    assert found[rb.IFA_LOCAL] == found[rb.IFA_ADDRESS] == IPv4Address("10.244.1.2").packed
    route = rb.route(IPv4Network("0.0.0.0/0"), IPv4Address("10.244.1.1"), 2, onlink=False)
    assert struct.unpack_from("=BB", route, 16) == (socket.AF_INET, 0)
    found = attrs(route, 12)
    assert rb.RTA_DST not in found
    assert found[rb.RTA_GATEWAY] == IPv4Address("10.244.1.1").packed
