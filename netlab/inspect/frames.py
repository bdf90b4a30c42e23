"""The general frame decoder of the flow summary, struct only (no scapy).

`decode()` finds a frame's conversation key: link layer (Ethernet with any
802.1Q/802.1ad tags, Linux cooked v1/v2, raw IPv4), IPv4, the ports of
UDP/TCP, VXLAN on the overlay ports and IP-in-IP down to the inner packet.
flows.py inlines the common case (untagged Ethernet, IPv4 without options,
VXLAN) and falls back to this for everything else, so both must agree; the
unit tests check that they do.

A key is (protocol, src, dst, sport, dport, outer src, outer dst, tunnel):
protocol is the IP protocol number, or a name for a frame that is not IPv4
("arp", "ipv6", "0x88cc"), or "?" for an inner frame too damaged to read;
src/dst are 4 bytes (IPv4, or an ARP frame's sender and target) or 6 (MACs);
tunnel is the VNI for VXLAN, "ipip" for IP-in-IP, None when not tunnelled.
Like tshark, an IPv4 header that is cut short or impossible (IHL < 5, total
length < header) is not a conversation at all: decode() returns None.
"""

from __future__ import annotations

import struct

ETH_IPV4, ETH_ARP, ETH_IPV6 = 0x0800, 0x0806, 0x86DD
VLAN_TPIDS = (0x8100, 0x88A8, 0x9100)
LINKTYPE_ETHERNET, LINKTYPE_RAW, LINKTYPE_IPV4 = 1, 101, 228
LINKTYPE_SLL, LINKTYPE_SLL2 = 113, 276
TCP, UDP, ICMP, IPIP = 6, 17, 1, 4
ETHER_NAMES = {ETH_ARP: "arp", ETH_IPV6: "ipv6"}

_H = struct.Struct(">H")
_HH = struct.Struct(">HH")
# IPv4 header: version/IHL, total length, flags/fragment offset, protocol, src, dst
_IPV4 = struct.Struct(">BxHxxHxB2x4s4s")
_ARP = struct.Struct(">HHBBH6s4s6s4s")


def link(buf, pos: int, end: int, linktype: int) -> tuple[int, int] | None:
    """(offset of the network header, its ethertype) after the link header."""
    if linktype == LINKTYPE_ETHERNET:
        pos += 12
    elif linktype == LINKTYPE_SLL:
        pos += 14
    elif linktype == LINKTYPE_SLL2:
        if pos + 20 > end:
            return None
        return pos + 20, _H.unpack_from(buf, pos)[0]
    elif linktype in (LINKTYPE_RAW, LINKTYPE_IPV4):
        return (pos, ETH_IPV4) if pos < end and buf[pos] >> 4 == 4 else None
    else:
        return None
    while pos + 2 <= end:
        (etype,) = _H.unpack_from(buf, pos)
        if etype not in VLAN_TPIDS:
            return pos + 2, etype
        pos += 4
    return None


def ipv4(buf, pos: int, end: int) -> tuple[int, bytes, bytes, int, bool] | None:
    """(protocol, src, dst, offset of the payload, whether the payload starts
    a transport header: false for non-first fragments); None when the header
    is cut short or invalid (tshark then counts no IPv4 conversation)."""
    if pos + 20 > end:
        return None
    vihl, total, frag, proto, src, dst = _IPV4.unpack_from(buf, pos)
    hlen = (vihl & 0x0F) * 4
    if vihl >> 4 != 4 or hlen < 20 or total < hlen or pos + hlen > end:
        return None
    return proto, src, dst, pos + hlen, not frag & 0x1FFF


def transport(buf, proto: int, pos: int, end: int, first: bool) -> tuple[int, int, int]:
    """(sport, dport, TCP flags): zeros where there are none or they were not captured."""
    if not first:
        return 0, 0, 0
    if proto == TCP and pos + 14 <= end:
        return (*_HH.unpack_from(buf, pos), buf[pos + 13])
    if proto == UDP and pos + 4 <= end:
        return (*_HH.unpack_from(buf, pos), 0)
    return 0, 0, 0


def not_ip(buf, l3: int, end: int, etype: int, frame: int | None) -> tuple:
    """(protocol, src, dst, 0, 0) of a frame that is not IPv4: an ARP frame
    by its sender and target IPs, anything else by its MAC addresses (frame:
    where the Ethernet header starts, None without one)."""
    if etype == ETH_ARP and l3 + 28 <= end:
        _hw, ptype, hlen, plen, _op, _sha, spa, _tha, tpa = _ARP.unpack_from(buf, l3)
        if ptype == ETH_IPV4 and (hlen, plen) == (6, 4):
            return "arp", spa, tpa, 0, 0
    name = ETHER_NAMES.get(etype, f"{etype:#06x}")
    if frame is not None and frame + 12 <= end:
        return name, bytes(buf[frame + 6 : frame + 12]), bytes(buf[frame : frame + 6]), 0, 0
    return name, None, None, 0, 0


def decode(buf, pos: int, caplen: int, linktype: int, overlay: frozenset | set) -> tuple | None:
    """(key, TCP flags) of the frame at buf[pos:pos + caplen], or None when
    it has no IPv4 header tshark would count (and is not ARP or other link
    traffic we can name)."""
    end = pos + caplen
    found = link(buf, pos, end, linktype)
    if found is None:
        return None
    l3, etype = found
    if etype != ETH_IPV4:
        frame = pos if linktype == LINKTYPE_ETHERNET else None
        return not_ip(buf, l3, end, etype, frame) + (None, None, None), 0
    header = ipv4(buf, l3, end)
    if header is None:
        return None
    proto, src, dst, l4, first = header
    sport, dport, flags = transport(buf, proto, l4, end, first)
    tunnel = None
    if proto == UDP and (sport in overlay or dport in overlay) and l4 + 16 <= end:
        tunnel, inner = int.from_bytes(buf[l4 + 12 : l4 + 15], "big"), l4 + 16
        found = link(buf, inner, end, LINKTYPE_ETHERNET)
        if found is None:
            return ("?", None, None, 0, 0, src, dst, tunnel), 0
        l3, etype = found
        if etype != ETH_IPV4:
            return not_ip(buf, l3, end, etype, inner) + (src, dst, tunnel), 0
    elif proto == IPIP and first:
        tunnel, l3 = "ipip", l4
    else:
        return (proto, src, dst, sport, dport, None, None, None), flags
    header = ipv4(buf, l3, end)
    if header is None:
        return ("?", None, None, 0, 0, src, dst, tunnel), 0
    iproto, isrc, idst, il4, ifirst = header
    isport, idport, flags = transport(buf, iproto, il4, end, ifirst)
    return (iproto, isrc, idst, isport, idport, src, dst, tunnel), flags
