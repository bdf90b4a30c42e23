"""The underlay: racks (Linux bridges), routers and nodes (Mininet hosts),
all inside the lab's own network namespace.

Mininet makes the nodes and routers (a shell each, in a namespace of its own)
and the veth links; every address, route and bridge port is then set through
netlink, not shell strings. The rack bridges and the rack-side link ends live
in the lab namespace, never in the host's root namespace: this module enters
the lab namespace (for the calling thread only) around everything it asks
Mininet to do, so the `ip link add` Mininet runs lands there.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable

from mininet.link import Link, TCLink
from mininet.net import Mininet
from mininet.node import Host
from mininet.nodelib import LinuxBridge

from netlab.errors import NetlabError
from netlab.plan import LabPlan, NodePlan, RouterPlan
from netlab.plan.model import NODE_UPLINK, UNDERLAY_MTU
from netlab.realize import netlink, netns

# Mininet's init() raises host-wide limits (fixLimits): never let it.
Mininet.inited = True
# Mininet warns about bridge-nf-call-* sysctls on every bridge; our bridges
# carry no iptables rules, so the warning is noise for lab users.
LinuxBridge.setup = classmethod(lambda cls: None)


class RackBridge(LinuxBridge):
    """A rack switch. Mininet's LinuxBridge adds only ports whose name contains
    the switch's name and drives brctl through a shell; this one enslaves all
    its ports through netlink."""

    def start(self, _controllers) -> None:
        with netlink.iproute(self.lab_netns_path) as ipr:
            found = ipr.link_lookup(ifname=self.name)
            if not found:
                ipr.link("add", ifname=self.name, kind="bridge", br_stp_state=0)
                found = ipr.link_lookup(ifname=self.name)
            bridge = found[0]
            for intf in self.intfList():
                if intf.name != "lo":
                    ipr.link("set", index=netlink.index(ipr, intf.name), master=bridge, state="up")
            ipr.link("set", index=bridge, state="up")

    def stop(self, deleteIntfs: bool = True) -> None:  # noqa: N803 (Mininet's name)
        # The bridge dies with the lab namespace; only end the shell.
        self.terminate()


class LabHost(Host):
    """A node or router: a Mininet host whose addresses netlab sets itself."""

    def config(self, **_params) -> dict:
        return {}


class Fabric:
    """The lab's racks, routers and nodes. `record_pid` is told of every
    process started, so cleanup after a crash can end exactly those."""

    def __init__(self, plan: LabPlan, record_pid: Callable[[int, str, str], None]):
        self.plan = plan
        self.record_pid = record_pid
        self.lab_path = str(netns.netns_path(plan.netns))
        links = plan.links
        self.shaped = bool(links.bandwidth_mbit or links.delay or links.loss_percent)
        self.net: Mininet | None = None
        self.bound: set[str] = set()  # node/router namespace names given by netns.bind
        self.named: dict[str, str] = {}  # node/router name -> its bound namespace's name

    @classmethod
    def adopt(
        cls, plan: LabPlan, nodes: list[NodePlan], record_pid: Callable[[int, str, str], None]
    ) -> Fabric:
        """The fabric of a lab that runs already: its namespaces outlived the Mininet
        shells that made them (they are bound to names), so it is driven by name."""
        fabric = cls(plan, record_pid)
        for host in [*plan.routers, *nodes]:
            if netns.netns_path(host.netns).exists():
                fabric.bound.add(host.netns)
                fabric.named[host.name] = host.netns
        return fabric

    def link_down(self, node: NodePlan) -> bool:
        """The node's rack-bridge port is down (`netlab node fail` left it so)."""
        with netlink.iproute(self.lab_path) as ipr:
            found = ipr.link_lookup(ifname=node.lab_ifname)
            if not found:
                return False
            (link,) = ipr.get_links(found[0])
            return not link["flags"] & 1  # IFF_UP

    # -- building ---------------------------------------------------------

    def build(self) -> None:
        """Make racks, routers and nodes; address and route them; wait until up."""
        with netns.entered(self.lab_path):
            self.net = Mininet(
                topo=None,
                build=False,
                controller=None,
                switch=RackBridge,
                host=LabHost,
                link=TCLink if self.shaped else Link,
                autoSetMacs=False,
                waitConnected=False,
                inNamespace=False,
            )
            for index, rack in enumerate(self.plan.racks):
                switch = self.net.addSwitch(rack.bridge, dpid=f"{index + 1:016x}")
                switch.lab_netns_path = self.lab_path
                self.record_pid(switch.pid, "rack", rack.name)
            for router in self.plan.routers:
                self._add_router(router)
            for node in self.plan.nodes:
                self._add_node_host(node)
            for switch in self.net.switches:
                switch.start([])
        for router in self.plan.routers:
            self._configure_router(router)
        for node in self.plan.nodes:
            self.configure_node(node)
        self.wait_up()

    def _add_router(self, router: RouterPlan) -> None:
        host = self.net.addHost(router.name, ip=None)
        self.record_pid(host.pid, "router", router.name)
        for port in router.ports:
            self.net.addLink(
                host, self.net[port.rack], intfName1=port.ifname, intfName2=port.lab_ifname
            )

    def _add_node_host(self, node: NodePlan) -> None:
        host = self.net.addHost(node.name, ip=None)
        self.record_pid(host.pid, "node", node.name)
        self.net.addLink(
            host,
            self.net[node.rack],
            intfName1=NODE_UPLINK,
            intfName2=node.lab_ifname,
            **self._shaping(),
        )

    def _shaping(self) -> dict:
        links = self.plan.links
        params: dict = {}
        if links.bandwidth_mbit:
            params["bw"] = links.bandwidth_mbit
        if links.delay:
            params["delay"] = links.delay
        if links.loss_percent:
            params["loss"] = links.loss_percent
        return params

    def host_path(self, name: str) -> str:
        """The namespace of a node or router: its bound name once it has one (that
        outlives the Mininet shell), else /proc/<pid>/ns/net of the shell."""
        if name in self.named:
            return str(netns.netns_path(self.named[name]))
        return f"/proc/{self.net[name].pid}/ns/net"

    def _configure_router(self, router: RouterPlan) -> None:
        path = self.host_path(router.name)
        netns.bind(router.netns, path)
        self.bound.add(router.netns)
        self.named[router.name] = router.netns
        netns.write_sysctl(path, "net.ipv4.ip_forward", "1")
        with netlink.iproute(path) as ipr:
            ipr.link("set", index=1, state="up")
            for port in router.ports:
                idx = netlink.index(ipr, port.ifname)
                netlink.set_address(ipr, idx, port.address)
                ipr.link("set", index=idx, state="up", mtu=UNDERLAY_MTU)
            for route in router.routes:
                ipr.route("replace", dst=str(route.dst), gateway=str(route.via))

    def configure_node(self, node: NodePlan) -> None:
        """Underlay part of a node: address, routes to the other racks, forwarding."""
        path = self.host_path(node.name)
        netns.bind(node.netns, path)
        self.bound.add(node.netns)
        self.named[node.name] = node.netns
        for key, value in (
            ("net.ipv4.ip_forward", "1"),
            ("net.ipv4.conf.all.rp_filter", "0"),
            ("net.ipv4.conf.default.rp_filter", "0"),
        ):
            netns.write_sysctl(path, key, value)
        with netlink.iproute(path) as ipr:
            ipr.link("set", index=1, state="up")
            idx = netlink.index(ipr, NODE_UPLINK)
            netlink.set_address(ipr, idx, node.address)
            ipr.link("set", index=idx, state="up", mtu=UNDERLAY_MTU)
            for route in node.routes:
                ipr.route("replace", dst=str(route.dst), gateway=str(route.via))

    def wait_up(self, timeout: float = 5.0) -> None:
        """Every rack port, router port and node uplink operationally up."""
        ports = [r.bridge for r in self.plan.racks]
        ports += [n.lab_ifname for n in self.plan.nodes]
        ports += [p.lab_ifname for r in self.plan.routers for p in r.ports]
        with netlink.iproute(self.lab_path) as ipr:
            netlink.wait_oper_up(ipr, ports, timeout)
        for node in self.plan.nodes:
            with netlink.iproute(self.host_path(node.name)) as ipr:
                netlink.wait_oper_up(ipr, [NODE_UPLINK], timeout)

    # -- a running lab ----------------------------------------------------

    def add_node(self, node: NodePlan) -> None:
        """A node joins: host, uplink into its rack bridge, underlay config."""
        if self.net is None:
            raise NetlabError(
                f"node {node.name}: nodes cannot join a lab taken over from an earlier "
                "supervisor (the Mininet network that makes them is gone); `netlab down` and "
                "`netlab up` with the node in the lab file"
            )
        with netns.entered(self.lab_path):
            self._add_node_host(node)
            rack = self.net[node.rack]
        with netlink.iproute(self.lab_path) as ipr:
            bridge = netlink.index(ipr, rack.name)
            ipr.link("set", index=netlink.index(ipr, node.lab_ifname), master=bridge, state="up")
        self.configure_node(node)
        with netlink.iproute(self.lab_path) as ipr:
            netlink.wait_oper_up(ipr, [node.lab_ifname])
        with netlink.iproute(self.host_path(node.name)) as ipr:
            netlink.wait_oper_up(ipr, [NODE_UPLINK])

    def remove_node(self, node: NodePlan) -> None:
        """A node leaves: its shell ends (its namespace with it) and its port goes."""
        netns.remove(node.netns)
        self.bound.discard(node.netns)
        self.named.pop(node.name, None)
        with netlink.iproute(self.lab_path) as ipr:
            netlink.ignore_missing(ipr.link, "del", ifname=node.lab_ifname)
        if self.net is None or node.name not in self.net.nameToNode:
            return  # taken over from an earlier supervisor: no shell of ours
        host = self.net[node.name]
        host.terminate()
        self.net.hosts.remove(host)
        del self.net.nameToNode[node.name]
        self.net.links = [
            link for link in self.net.links if host not in (link.intf1.node, link.intf2.node)
        ]

    def stop(self) -> None:
        """End every Mininet shell (their namespaces go with them)."""
        if self.net is not None:
            for node in self.net.hosts + self.net.switches:
                with contextlib.suppress(OSError, AttributeError):
                    node.terminate()
        for name in sorted(self.bound):
            netns.remove(name)
        self.bound.clear()
        self.named.clear()
        self.net = None

    def exists(self, name: str) -> bool:
        return name in self.named or (self.net is not None and name in self.net.nameToNode)
