"""How fast an endpoint change reaches DNS answers and the VIP rules.

One lab (2 racks x 2 nodes), a Deployment `web` of 3 echo pods behind a
ClusterIP Service `web` and a headless Service `web-pods`. Repeatedly:

  delete   delete one web pod (lab.delete_pod) and time, from the call:
           the Endpoints object without it (store watch), the headless DNS
           answer without it (queries every 2 ms from a pod's namespace to
           the kube-dns VIP), and the call's return (its nftables
           transaction is applied on every node before it returns)
  unready  kill one web pod's server process (SIGKILL): time until the
           Endpoints and DNS drop it; then, restarted by its restartPolicy
           after 0.5 s of back-off, until its port accepts again and it is
           back (the prober's implicit TCP check, every 0.25 s)

Prints medians and maxima. The issue's bounds: a pod deleted or not ready
leaves the endpoint set within 1 s; an Endpoints change shows in DNS
answers within 100 ms.

    python bench/endpoints.py [--rounds 5]
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import sys
import time

from common import fmt, median, say, table
from dnslib import QTYPE, DNSRecord

from netlab.lab import Lab
from netlab.realize import netns
from netlab.spec import LabBuilder

ZONE = "cluster.local"
ECHO = [sys.executable, "-m", "netlab.apps.echo", "8080"]


def lab_spec():
    b = LabBuilder("benchep")
    b.add_rack("rack1", "192.168.1.0/24")
    b.add_rack("rack2", "192.168.2.0/24")
    for node, rack in (("n1", "rack1"), ("n2", "rack1"), ("n3", "rack2"), ("n4", "rack2")):
        b.add_node(node, rack=rack)
    b.add_deployment("web", replicas=3, command=ECHO,
                     ports=[{"containerPort": 8080, "name": "http"}])  # fmt: skip
    b.add_service("web", ports=[{"name": "http", "port": 80, "targetPort": "http"}],
                  selector={"app": "web"})  # fmt: skip
    b.add_service("web-pods", ports=[{"name": "http", "port": 8080}], selector={"app": "web"},
                  headless=True)  # fmt: skip
    b.add_pod("client", command=["sleep", "infinity"], node_name="n1")
    return b.build()


class Resolver:
    """A UDP socket in the client pod's namespace, asking the kube-dns VIP."""

    def __init__(self, lab: Lab):
        with netns.entered(netns.netns_path(lab.pod("client").netns)):
            self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.settimeout(0.5)
        self.server = (lab.service_vip("kube-dns", "kube-system"), 53)

    def headless(self) -> set[str] | None:
        query = DNSRecord.question(f"web-pods.default.svc.{ZONE}", "A")
        try:
            self.sock.sendto(query.pack(), self.server)
            answer = DNSRecord.parse(self.sock.recv(4096))
        except (OSError, Exception):
            return None
        return {str(r.rdata) for r in answer.rr if r.rtype == QTYPE.A}


def until(predicate, timeout: float = 5.0, interval: float = 0.002) -> float:
    start = time.perf_counter()
    while time.perf_counter() - start < timeout:
        if predicate():
            return time.perf_counter() - start
        time.sleep(interval)
    return float("nan")


def web_pods(lab: Lab):
    return sorted((p for p in lab.pod_list() if p.labels.get("app") == "web"), key=lambda p: p.name)


def one_round(lab: Lab, dns: Resolver, record) -> None:
    lab.wait_endpoints("default", "web", count=3)
    until(lambda: dns.headless() == lab.endpoint_ips("web"), 5)
    victim = web_pods(lab)[0]
    ip = str(victim.address.ip)
    start = time.perf_counter()
    lab.delete_pod(victim.name)
    record("delete: call returned (rules on every node)", time.perf_counter() - start)
    until(lambda: ip not in lab.endpoint_ips("web"))
    record("delete: Endpoints without it", time.perf_counter() - start)
    until(lambda: (a := dns.headless()) is not None and ip not in a)
    record("delete: DNS answer without it", time.perf_counter() - start)

    lab.wait_endpoints("default", "web", count=3)
    until(lambda: dns.headless() == lab.endpoint_ips("web"), 5)
    victim = web_pods(lab)[0]
    ip = str(victim.address.ip)
    pid = next(iter(lab.pods[victim.key].procs.values())).pid
    start = time.perf_counter()
    os.killpg(pid, signal.SIGKILL)
    until(lambda: ip not in lab.endpoint_ips("web"), 5)
    record("killed: Endpoints without it", time.perf_counter() - start)
    until(lambda: (a := dns.headless()) is not None and ip not in a)
    record("killed: DNS answer without it", time.perf_counter() - start)
    until(lambda: ip in lab.endpoint_ips("web"), 10)
    record("restarted: Endpoints with it again", time.perf_counter() - start)
    until(lambda: (a := dns.headless()) is not None and ip in a)
    record("restarted: DNS answer with it again", time.perf_counter() - start)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args(argv)
    results: dict[str, list[float]] = {}

    def record(name: str, seconds: float) -> None:
        results.setdefault(name, []).append(seconds * 1000)

    with Lab(lab_spec()) as lab:
        lab.wait_endpoints("default", "web", count=3)
        dns = Resolver(lab)
        for r in range(args.rounds):
            one_round(lab, dns, record)
            say(f"  round {r + 1}/{args.rounds} done")
    rows = [[name, fmt(median(v), 1), fmt(max(v), 1)] for name, v in results.items()]
    say(table(["event", "median ms", "max ms"], rows))
    say("bounds: endpoint set within 1000 ms of the pod going; DNS within 100 ms of Endpoints")
    return 0


if __name__ == "__main__":
    sys.exit(main())
