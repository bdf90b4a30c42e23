"""A pod's network: a named namespace, a veth into its node's cni0, an
address from the node's lease, a default route via cni0, and its own
/etc/netns/<pod>/{resolv.conf,hosts} (what `ip netns exec` shows the pod)."""

from __future__ import annotations

import contextlib
import os
import shutil
from pathlib import Path

from pyroute2 import IPRoute
from pyroute2.netlink.rtnl import ndmsg

from netlab.plan import CNI_BRIDGE, POD_INTERFACE, PodPlan
from netlab.realize import netlink, netns

ETC_NETNS = Path("/etc/netns")
NUD_PERMANENT = ndmsg.states["permanent"]
DEFAULT_ZONE = "cluster.local"


def etc_dir(netns_name: str) -> Path:
    return ETC_NETNS / netns_name


def resolv_conf(pod: PodPlan, nameserver: str | None = None, zone: str = DEFAULT_ZONE) -> str:
    """What kubelet writes for ClusterFirst pods. Without a nameserver (no DNS
    Service yet) glibc asks the pod's own loopback: nothing leaves the pod."""
    lines = ["# netlab: the pod's resolver, as kubelet writes it"]
    if nameserver:
        lines.append(f"nameserver {nameserver}")
    lines.append(f"search {pod.namespace}.svc.{zone} svc.{zone} {zone}")
    lines.append("options ndots:5")
    return "\n".join(lines) + "\n"


def hosts_file(pod: PodPlan) -> str:
    """Kubelet's managed /etc/hosts for a pod."""
    return (
        "# Kubernetes-managed hosts file (netlab).\n"
        "127.0.0.1\tlocalhost\n"
        "::1\tlocalhost ip6-localhost ip6-loopback\n"
        f"{pod.address.ip}\t{pod.name}\n"
    )


def write_etc(pod: PodPlan, nameserver: str | None = None) -> None:
    directory = etc_dir(pod.netns)
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "resolv.conf").write_text(resolv_conf(pod, nameserver))
    (directory / "hosts").write_text(hosts_file(pod))


def create(pod: PodPlan, node_ipr: IPRoute, cni_index: int, cni_mac: str, mtu: int) -> None:
    """Make the pod's namespace and wire it to its node's cni0.

    Both ends of the veth get permanent neighbour entries (pod -> gateway,
    cni0 -> pod): the kernel's ARP table is shared by every namespace, and
    its hard limit (gc_thresh3, 1024 by default, settable only host-wide)
    would otherwise overflow at a few hundred pods and drop packets."""
    path = str(netns.create(pod.netns))
    write_etc(pod)
    netlink.ignore_missing(node_ipr.link, "del", ifname=pod.host_ifname)
    fd = os.open(path, os.O_RDONLY)
    try:
        node_ipr.link(
            "add",
            ifname=pod.host_ifname,
            kind="veth",
            mtu=mtu,
            peer={"ifname": POD_INTERFACE, "net_ns_fd": fd, "mtu": mtu, "address": pod.mac},
        )
    finally:
        os.close(fd)
    host = netlink.index(node_ipr, pod.host_ifname)
    node_ipr.link("set", index=host, master=cni_index, state="up")
    node_ipr.neigh(
        "replace", ifindex=cni_index, dst=str(pod.address.ip), lladdr=pod.mac, state=NUD_PERMANENT
    )
    with netlink.iproute(path) as ipr:
        ipr.link("set", index=1, state="up")
        eth0 = netlink.index(ipr, POD_INTERFACE)
        netlink.set_address(ipr, eth0, pod.address)
        ipr.link("set", index=eth0, state="up")
        ipr.neigh(
            "replace", ifindex=eth0, dst=str(pod.gateway), lladdr=cni_mac, state=NUD_PERMANENT
        )
        ipr.route("replace", dst="0.0.0.0/0", gateway=str(pod.gateway))


def delete(pod: PodPlan, node_ipr: IPRoute | None) -> None:
    """Remove the pod's network; its processes must already be gone."""
    if node_ipr is not None:
        netlink.ignore_missing(node_ipr.link, "del", ifname=pod.host_ifname)
        cni = node_ipr.link_lookup(ifname=CNI_BRIDGE)
        if cni:
            netlink.ignore_missing(
                node_ipr.neigh, "del", ifindex=cni[0], dst=str(pod.address.ip), lladdr=pod.mac
            )
    netns.remove(pod.netns)
    remove_etc(pod.netns)


def remove_etc(netns_name: str) -> None:
    with contextlib.suppress(FileNotFoundError):
        shutil.rmtree(etc_dir(netns_name))
