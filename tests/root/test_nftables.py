"""Service VIPs in a node's namespace, on the real kernel: strict round-robin,
in-place updates, ClientIP affinity, reject without endpoints, hairpin.

A throwaway setup, all in namespaces named nl-nfttest-*, addresses in 10.x:

    client 10.250.0.2 --- 10.250.0.1 node br0 10.251.0.1 --- s1 .11, s2 .12, s3 .13

The node forwards and holds the table `ip netlab`; the servers are sockets of
this process, made inside their namespaces, that answer "<name> <peer ip>".
"""

from __future__ import annotations

import collections
import contextlib
import socket
import subprocess
import threading
import time
from dataclasses import dataclass, field
from ipaddress import IPv4Address

import pytest

from netlab.plan import proxy
from netlab.plan.proxy import Endpoint, Ruleset, ServiceRule, render, transaction
from netlab.realize import netns, nftables
from tests.root.conftest import wait_for

pytestmark = pytest.mark.root

PREFIX = "nl-nfttest"
SERVERS = {"s1": "10.251.0.11", "s2": "10.251.0.12", "s3": "10.251.0.13"}
CLIENT_IP = "10.250.0.2"
NODE_BRIDGE_IP = "10.251.0.1"
SERVICE_CIDR = "10.96.0.0/16"
PORT = 8080


def ip(ns: str, *args: str) -> None:
    subprocess.run(["ip", "-n", ns, *args], check=True, capture_output=True, text=True)


def svc(name: str, vip: str, servers=tuple(SERVERS), *, proto="TCP", port=80, aff=None):
    eps = tuple(Endpoint(IPv4Address(SERVERS[s]), PORT) for s in servers)
    return ServiceRule("default", name, "http", IPv4Address(vip), proto, port, eps, aff)


class Server:
    """A TCP server in a namespace: counts connections, answers its name and the peer's IP."""

    def __init__(self, name: str, path: str, address: str):
        self.name = name
        self.accepted = 0
        self.stop = threading.Event()
        with netns.entered(path):
            self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind((address, PORT))
        self.sock.listen(64)
        self.sock.settimeout(0.1)
        self.thread = threading.Thread(target=self.serve, name=f"nfttest-{name}", daemon=True)
        self.thread.start()

    def serve(self) -> None:
        while not self.stop.is_set():
            try:
                conn, peer = self.sock.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            with conn:
                self.accepted += 1
                conn.sendall(f"{self.name} {peer[0]}".encode())

    def close(self) -> None:
        self.stop.set()
        self.thread.join(timeout=2)
        self.sock.close()


@dataclass
class Setup:
    paths: dict[str, str]
    servers: dict[str, Server] = field(default_factory=dict)
    current: Ruleset | None = None
    last_script: str = ""

    @property
    def node(self) -> str:
        return self.paths["node"]

    def apply(self, rules) -> str:
        """Move the node to render(rules); the script that did it."""
        desired = render(rules)
        script = transaction(self.current, desired)
        nftables.apply(self.node, script)
        self.current, self.last_script = desired, script
        return script

    def connect(self, where: str, vip: str, port: int = 80) -> str:
        """One new TCP connection from namespace `where`; the server's answer."""
        with netns.entered(self.paths[where]):
            sock = socket.socket()
        with sock:
            sock.settimeout(3)
            sock.connect((vip, port))
            return sock.recv(100).decode()

    def landed(self, vip: str, count: int, where: str = "client") -> list[str]:
        return [self.connect(where, vip).split()[0] for _ in range(count)]


def _build() -> Setup:
    names = ["node", "client", "spare", *SERVERS]
    paths = {n: str(netns.create(f"{PREFIX}-{n}")) for n in names}
    node, client = f"{PREFIX}-node", f"{PREFIX}-client"
    for n in names:
        ip(f"{PREFIX}-{n}", "link", "set", "lo", "up")
    ip(node, "link", "add", "cl0", "type", "veth", "peer", "name", "eth0", "netns", client)
    ip(node, "addr", "add", "10.250.0.1/24", "dev", "cl0")
    ip(node, "link", "set", "cl0", "up")
    ip(client, "addr", "add", f"{CLIENT_IP}/24", "dev", "eth0")
    ip(client, "link", "set", "eth0", "up")
    for dst in (SERVICE_CIDR, "10.251.0.0/24"):
        ip(client, "route", "add", dst, "via", "10.250.0.1")
    ip(node, "link", "add", "br0", "type", "bridge")
    ip(node, "addr", "add", f"{NODE_BRIDGE_IP}/24", "dev", "br0")
    ip(node, "link", "set", "br0", "up")
    for name, address in SERVERS.items():
        ns = f"{PREFIX}-{name}"
        ip(node, "link", "add", name, "type", "veth", "peer", "name", "eth0", "netns", ns)
        ip(node, "link", "set", name, "master", "br0", "up")
        # As the CNI bridge plugin's hairpinMode: br_netfilter (on in every
        # namespace here) bridges a hairpin DNAT back out the port it came in.
        ip(node, "link", "set", name, "type", "bridge_slave", "hairpin", "on")
        ip(ns, "addr", "add", f"{address}/24", "dev", "eth0")
        ip(ns, "link", "set", "eth0", "up")
        for dst in (SERVICE_CIDR, "10.250.0.0/24"):
            ip(ns, "route", "add", dst, "via", NODE_BRIDGE_IP)
    # Nodes have no default route: their own packets to a VIP need this one.
    ip(node, "route", "add", SERVICE_CIDR, "dev", "br0")
    netns.write_sysctl(paths["node"], "net.ipv4.ip_forward", "1")
    return Setup(paths)


def _teardown(setup: Setup | None) -> None:
    if setup is not None:
        for server in setup.servers.values():
            server.close()
    for name in netns.listed(PREFIX):
        netns.remove(name)


@pytest.fixture(scope="module")
def setup():
    _teardown(None)  # a previous run's leftovers
    built = None
    try:
        built = _build()
        for name, address in SERVERS.items():
            built.servers[name] = Server(name, built.paths[name], address)

        def all_reachable() -> bool:
            try:
                return all(
                    built.connect("client", a, PORT).startswith(n) for n, a in SERVERS.items()
                )
            except OSError:
                return False

        assert wait_for(all_reachable, timeout=5), "the servers are not reachable directly"
        yield built
    finally:
        _teardown(built)
        assert not netns.listed(PREFIX)


def test_strict_round_robin_then_an_endpoint_removed(setup):
    setup.apply([svc("web", "10.96.0.10")])
    assert proxy.service_chain(svc("web", "10.96.0.10")) in nftables.listing(setup.node)
    before = {n: s.accepted for n, s in setup.servers.items()}
    landed = setup.landed("10.96.0.10", 30)
    assert collections.Counter(landed) == {"s1": 10, "s2": 10, "s3": 10}
    assert all(landed[i] != landed[i + 1] for i in range(29)), "round-robin, not random"
    assert {n: s.accepted - before[n] for n, s in setup.servers.items()} == {
        "s1": 10,
        "s2": 10,
        "s3": 10,
    }
    # The client's address is preserved: no masquerade for it.
    assert setup.connect("client", "10.96.0.10").split()[1] == CLIENT_IP

    script = setup.apply([svc("web", "10.96.0.10", ("s1", "s3"))])
    assert script.count("flush chain") == 2 and script.count("delete chain") == 1
    s2_before = setup.servers["s2"].accepted
    landed = setup.landed("10.96.0.10", 20)
    assert collections.Counter(landed) == {"s1": 10, "s3": 10}
    assert all(landed[i] != landed[i + 1] for i in range(19))
    assert setup.servers["s2"].accepted == s2_before


def test_same_state_twice_is_empty_and_other_services_keep_the_rotation(setup):
    web = svc("web2", "10.96.0.30")
    setup.apply([web])
    listed = nftables.listing(setup.node)
    assert transaction(setup.current, render([web])) == ""
    assert setup.apply([web]) == ""
    assert nftables.listing(setup.node) == listed

    first = setup.landed("10.96.0.30", 2)  # the counter is now at 2
    script = setup.apply([web, svc("api", "10.96.0.31", ("s2",))])
    assert "flush chain" not in script
    assert f"add rule ip netlab {proxy.service_chain(web)} " not in script
    (third,) = setup.landed("10.96.0.30", 1)
    assert sorted([*first, third]) == ["s1", "s2", "s3"], "the rotation restarted"
    assert setup.landed("10.96.0.31", 2) == ["s2", "s2"]


def test_client_ip_affinity_pins_a_client(setup):
    sticky = svc("sticky", "10.96.0.40", aff=60)
    setup.apply([sticky])
    landed = setup.landed("10.96.0.40", 10)
    assert len(set(landed)) == 1, landed
    pinned = landed[0]
    ep = Endpoint(IPv4Address(SERVERS[pinned]), PORT)
    listed = nftables.listing(setup.node)
    aff = proxy.affinity_set(sticky, ep, 60)
    assert CLIENT_IP in listed.split(f"set {aff} {{")[1].split("}")[0]
    # Another Service changes: the sets and the pin stay.
    script = setup.apply([sticky, svc("other", "10.96.0.41")])
    assert "set" not in script.replace("meta mark set", "")
    assert set(setup.landed("10.96.0.40", 5)) == {pinned}
    # Another source (the node itself, via the output hook) gets a pin of its own.
    assert len(set(setup.landed("10.96.0.40", 5, where="node"))) == 1


def test_no_endpoints_is_refused_at_once(setup):
    setup.apply(
        [svc("empty", "10.96.0.50", ()), svc("emptydns", "10.96.0.51", (), proto="UDP", port=53)]
    )
    for where in ("client", "node"):
        start = time.monotonic()
        with pytest.raises(ConnectionRefusedError):
            setup.connect(where, "10.96.0.50")
        assert time.monotonic() - start < 1.0, f"{where}: refused late"

    with netns.entered(setup.paths["client"]):
        udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    with udp:
        udp.settimeout(2)
        udp.connect(("10.96.0.51", 53))
        udp.send(b"question")
        with pytest.raises(ConnectionRefusedError):
            udp.recv(100)

    # Endpoints appear: the same VIP now answers.
    setup.apply([svc("empty", "10.96.0.50", ("s3",))])
    assert setup.connect("client", "10.96.0.50").startswith("s3 ")


def test_hairpin_to_itself_is_masqueraded(setup):
    setup.apply([svc("self", "10.96.0.60", ("s1",))])
    answer = setup.connect("s1", "10.96.0.60")
    assert answer == f"s1 {NODE_BRIDGE_IP}"
    # Another server reaching it keeps its own address.
    assert setup.connect("s2", "10.96.0.60") == f"s1 {SERVERS['s2']}"


def test_apply_many_and_failures(setup):
    spare = setup.paths["spare"]
    script = transaction(None, render([svc("web", "10.96.0.10")]))
    nftables.apply_many([spare], script)
    assert "svc-" in nftables.listing(spare)
    with pytest.raises(nftables.ApplyFailures) as failed:
        nftables.apply_many([spare, f"/run/netns/{PREFIX}-missing"], proxy.teardown())
    assert list(failed.value.failures) == [f"/run/netns/{PREFIX}-missing"]
    assert nftables.listing(spare) == ""  # the good one was applied
    with pytest.raises(nftables.RealizeError, match="Error"):
        nftables.apply(spare, "add rule ip netlab nowhere accept\n")
    with contextlib.suppress(Exception):
        nftables.apply(spare, proxy.teardown())
