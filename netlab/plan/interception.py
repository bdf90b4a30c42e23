"""A meshed pod's traffic interception: the nftables table Istio's init container
would write with iptables, rendered as one nft transaction (pure).

Outbound TCP from the app goes to the sidecar's outbound port, inbound TCP to
the app's ports goes to its inbound port. Left alone: loopback, the sidecar's
own connections (they carry its socket mark), DNS (UDP, and TCP 53), the
sidecar's own ports, and connections from the node's bridge address, which is
where kubelet's readiness probes come from (Istio rewrites probes to its agent
for the same reason: a probe must reach the app, not the proxy).
"""

from __future__ import annotations

from ipaddress import IPv4Address

FAMILY, TABLE = "ip", "netlab_mesh"
SIDECAR_MARK = 0x4E4C  # "NL": set with SO_MARK on every socket the sidecar opens
OUTBOUND_PORT, INBOUND_PORT, ADMIN_PORT = 15001, 15006, 15000
SIDECAR_PORTS = (15000, 15099)  # never redirected (Istio keeps 150xx for itself)
DNS_PORT = 53


def interception_script(gateway: IPv4Address | str | None) -> str:
    """The whole table, replacing any previous one (one atomic nft transaction)."""
    probe = f"        ip saddr {gateway} return\n" if gateway is not None else ""
    low, high = SIDECAR_PORTS
    return (
        f"table {FAMILY} {TABLE}\n"
        f"delete table {FAMILY} {TABLE}\n"
        f"table {FAMILY} {TABLE} {{\n"
        "    chain inbound {\n"
        "        type nat hook prerouting priority dstnat; policy accept;\n"
        '        iifname "lo" return\n'
        f"{probe}"
        f"        tcp dport {low}-{high} return\n"
        f"        meta l4proto tcp redirect to :{INBOUND_PORT}\n"
        "    }\n"
        "    chain outbound {\n"
        "        type nat hook output priority -100; policy accept;\n"
        f"        meta mark {SIDECAR_MARK:#x} return\n"
        '        oifname "lo" return\n'
        "        ip daddr 127.0.0.0/8 return\n"
        f"        tcp dport {DNS_PORT} return\n"
        f"        meta l4proto tcp redirect to :{OUTBOUND_PORT}\n"
        "    }\n"
        "}\n"
    )
