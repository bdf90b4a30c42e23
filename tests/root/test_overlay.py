"""Pods on different racks reach each other over a real VXLAN overlay."""

from __future__ import annotations

import subprocess
import time

import pytest

pytestmark = pytest.mark.root

SERVER = (
    "import socket;s=socket.socket();s.setsockopt(socket.SOL_SOCKET,socket.SO_REUSEADDR,1);"
    "s.bind(('0.0.0.0',9000));s.listen();c,a=s.accept();c.sendall(a[0].encode());c.close()"
)
CLIENT = (
    "import socket,sys;c=socket.create_connection((sys.argv[1],9000),timeout=5);"
    "print(c.recv(100).decode())"
)


def addr(lab, pod: str) -> str:
    return str(lab.pod(pod).address.ip)


@pytest.mark.parametrize("src,dst", [("a", "b"), ("b", "a"), ("a", "c")])
def test_icmp_between_pods(lab, src, dst):
    result = lab.exec(src, ["ping", "-c", "2", "-i", "0.2", "-W", "2", addr(lab, dst)])
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0% packet loss" in result.stdout


@pytest.mark.parametrize("src,dst", [("a", "b"), ("b", "a")])
def test_tcp_across_racks_without_nat(lab, src, dst):
    """The receiver sees the sender's own pod IP: no NAT between pods."""
    server = subprocess.Popen(
        ["ip", "netns", "exec", lab.pod(dst).netns, "python3", "-c", SERVER],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        for _ in range(50):
            result = lab.exec(src, ["python3", "-c", CLIENT, addr(lab, dst)])
            if result.returncode == 0:
                break
            time.sleep(0.1)
        assert result.returncode == 0, result.stderr
        assert result.stdout.strip() == addr(lab, src)
    finally:
        server.kill()
        server.wait()


def test_overlay_mtu(lab):
    """MTU 1450 on the overlay: 1422 bytes of ICMP payload fit with DF, 1423 do not."""
    ok = lab.exec("a", ["ping", "-c", "1", "-W", "2", "-M", "do", "-s", "1422", addr(lab, "b")])
    assert ok.returncode == 0, ok.stdout + ok.stderr
    too_big = lab.exec(
        "a", ["ping", "-c", "1", "-W", "2", "-M", "do", "-s", "1423", addr(lab, "b")]
    )
    assert too_big.returncode != 0
    assert "message too long" in too_big.stderr


def test_capture_on_router_shows_vxlan(lab, tmp_path):
    """Checked with tcpdump and tshark only, none of netlab's capture code."""
    router = lab.plan.routers[0]
    port = next(p for p in router.ports if p.rack == "rack1")
    pcap = tmp_path / "x.pcap"
    tcpdump = subprocess.Popen(
        [
            "ip",
            "netns",
            "exec",
            router.netns,
            "tcpdump",
            "-i",
            port.ifname,
            "-U",
            "-c",
            "4",
            "-w",
            str(pcap),
            "udp port 8472",
        ],  # fmt: skip
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert "listening on" in tcpdump.stderr.readline()
    lab.exec("a", ["ping", "-c", "3", "-i", "0.2", addr(lab, "b")])
    tcpdump.wait(10)
    tcpdump.stderr.close()
    fields = subprocess.run(
        [
            "tshark",
            "-n",
            "-r",
            str(pcap),
            "-d",
            "udp.port==8472,vxlan",
            "-T",
            "fields",
            "-e",
            "ip.src",
            "-e",
            "ip.dst",
            "-e",
            "vxlan.vni",
            "-e",
            "icmp.type",
        ],  # fmt: skip
        capture_output=True,
        text=True,
        check=True,
    ).stdout.splitlines()
    node1, node3 = lab.nodes["n1"], lab.nodes["n3"]
    request = f"{node1.address.ip},{addr(lab, 'a')}\t{node3.address.ip},{addr(lab, 'b')}\t1\t8"
    assert request in fields, fields


def test_flannel_entries_on_every_node(lab):
    for node in lab.nodes.values():
        show = lab.node_exec(node.name, ["ip", "-d", "link", "show", "flannel.1"]).stdout
        assert "vxlan id 1" in show and "dstport 8472" in show and "nolearning" in show
        assert "mtu 1450" in show
        fdb = lab.node_exec(node.name, ["bridge", "fdb", "show", "dev", "flannel.1"]).stdout
        routes = lab.node_exec(node.name, ["ip", "route"]).stdout
        for peer in lab.nodes.values():
            if peer.name == node.name:
                continue
            assert f"{peer.vtep_mac} dst {peer.address.ip} self permanent" in fdb
            assert (
                f"{peer.pod_cidr} via {peer.vtep_ip} dev flannel.1" in routes and "onlink" in routes
            )


def test_pod_neighbours_are_permanent(lab):
    """Both ends of a pod's veth hold permanent neighbour entries, so big labs
    do not overflow the kernel's shared ARP table."""
    pod = lab.pod("a")
    node = lab.nodes[pod.node]
    inside = lab.exec("a", ["ip", "neigh", "show", "dev", "eth0"]).stdout
    assert f"{node.pod_gateway} lladdr {node.cni_mac} PERMANENT" in inside
    on_node = lab.node_exec(pod.node, ["ip", "neigh", "show", "dev", "cni0"]).stdout
    assert f"{pod.address.ip} lladdr {pod.mac} PERMANENT" in on_node
