"""The CNI part: a pod's network, as the bridge plugin makes it: a named namespace,
a veth into its node's cni0, an address from the node's lease, a default route via
cni0, and its own /etc/netns/<pod>/{resolv.conf,hosts,hostname}, which every
container of the pod has bind-mounted on /etc as kubelet does (and `ip netns exec`
shows them too)."""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
from collections.abc import Sequence
from ipaddress import IPv4Network
from pathlib import Path

from pyroute2 import IPRoute

from netlab.errors import RealizeError
from netlab.plan import CNI_BRIDGE, POD_INTERFACE, PodPlan
from netlab.realize import netlink, netns, rtnl_batch

ETC_NETNS = Path("/etc/netns")
DEFAULT_ZONE = "cluster.local"
LOOPBACK_INDEX = 1
DEFAULT_ROUTE = IPv4Network("0.0.0.0/0")


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


def hosts_file(pod: PodPlan, zone: str = DEFAULT_ZONE) -> str:
    """Kubelet's managed /etc/hosts for a pod: with a subdomain (a StatefulSet's pods)
    its own line names its FQDN first, `web-0.web.default.svc.cluster.local web-0`."""
    name = pod.template.hostname or pod.name
    subdomain = pod.template.subdomain
    own = f"{name}.{subdomain}.{pod.namespace}.svc.{zone}\t{name}" if subdomain else pod.name
    return (
        "# Kubernetes-managed hosts file (netlab).\n"
        "127.0.0.1\tlocalhost\n"
        "::1\tlocalhost ip6-localhost ip6-loopback\n"
        f"{pod.address.ip}\t{own}\n"
    )


def write_etc(pod: PodPlan, nameserver: str | None = None, zone: str = DEFAULT_ZONE) -> None:
    directory = etc_dir(pod.netns)
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "resolv.conf").write_text(resolv_conf(pod, nameserver, zone))
    (directory / "hosts").write_text(hosts_file(pod, zone))
    (directory / "hostname").write_text(pod.name[:64] + "\n")


def create_on_node(
    node_path: str,
    pods: Sequence[PodPlan],
    cni_mac: str,
    mtu: int,
    nameserver: str | None = None,
    zone: str = DEFAULT_ZONE,
) -> None:
    """Make the pods' namespaces and wire them to their node's cni0.

    One batch on the node (per pod: the veth, made with its pod end already
    in the pod's namespace, enslaved and up, and cni0's neighbour entry for
    the pod; then hairpin mode on each port), then one batch in each pod
    (loopback up, address, eth0 up, gateway's neighbour entry, default route). Both ends of each veth hold permanent
    neighbour entries: the kernel's ARP table is shared by every namespace,
    and its hard limit (gc_thresh3, 1024 by default, settable only
    host-wide) would otherwise overflow at a few hundred pods."""
    if not pods:
        return
    fds: list[int] = []
    try:
        for pod in pods:
            path = netns.create(pod.netns)
            fds.append(os.open(path, os.O_RDONLY))
            write_etc(pod, nameserver, zone)
        with rtnl_batch.Channel(node_path) as node:
            cni = node.link_index(CNI_BRIDGE)
            messages = []
            for pod, fd in zip(pods, fds, strict=True):
                messages.append(
                    rtnl_batch.veth(pod.host_ifname, cni, mtu, POD_INTERFACE, pod.mac, fd)
                )
                messages.append(rtnl_batch.neighbour(cni, pod.address.ip, pod.mac))
            codes = node.request(messages)
            stale = [i for i in range(0, len(codes), 2) if codes[i] == errno.EEXIST]
            if stale:  # host ends left by a crashed run: remove them and try once more
                _remove_links(node_path, [pods[i // 2].host_ifname for i in stale])
                for i, code in zip(stale, node.request([messages[i] for i in stale]), strict=True):
                    codes[i] = code
            failed = [i for i, code in enumerate(codes) if code]
            if failed:
                pod = pods[failed[0] // 2]
                code = codes[failed[0]]
                raise RealizeError(
                    f"wiring pod {pod.namespace}/{pod.name} to cni0 on node {pod.node} failed: "
                    f"{errno.errorcode.get(code, code)} ({len(failed)} requests refused)"
                )
            # hairpin mode on every pod port, as the CNI bridge plugin's hairpinMode
            ports = [node.link_index(pod.host_ifname) for pod in pods]
            node.send([rtnl_batch.hairpin(index) for index in ports], "hairpin settings")
    finally:
        for fd in fds:
            os.close(fd)
    for pod in pods:
        with rtnl_batch.Channel(netns.netns_path(pod.netns)) as inside:
            eth0 = inside.link_index(POD_INTERFACE)
            inside.send(
                [
                    rtnl_batch.link_up(LOOPBACK_INDEX),
                    rtnl_batch.address(eth0, pod.address),
                    rtnl_batch.link_up(eth0),
                    rtnl_batch.neighbour(eth0, pod.gateway, cni_mac),
                    rtnl_batch.route(DEFAULT_ROUTE, pod.gateway, eth0, onlink=False),
                ],
                f"settings of pod {pod.namespace}/{pod.name}",
            )


def _remove_links(node_path: str, ifnames: Sequence[str]) -> None:
    with netlink.iproute(node_path) as ipr:
        for ifname in ifnames:
            netlink.ignore_missing(ipr.link, "del", ifname=ifname)


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
