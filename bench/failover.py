"""How fast the lab heals, under a bounded steady load (one GET every 20 ms to a
Service's VIP from a client pod on another rack).

One lab (2 racks x 2 nodes), a Deployment `web` of 3 echo pods behind the ClusterIP
Service `web`. Rounds, interleaved:

  pod   delete one web pod: time until its replacement is ready and in the Endpoints
        (the Deployment controller's reaction), and the client's error window
  node  fail a node holding web pods (uplink without carrier, processes frozen,
        heartbeats stop): time until every request succeeds again, and until all 3
        pods are ready elsewhere; then recover the node and wait until the lab converges
  supervisor  the supervisor leaves the lab running and a new one takes it over (as
        `netlab detach` and `netlab up --adopt` do): the time to take it over, the
        client's error window, and how many containers were started anew (0 is right)

Also the store: median write latency (an apply) and write-to-watch-event delay, the
embedded store against one on a loopback etcd (interleaved rounds).

Kubernetes' defaults take far longer: kubelet renews its Lease every 10 s, a node is
NotReady after node-monitor-grace-period (40 s), and its pods are evicted after the
unreachable taint's tolerationSeconds (300 s). This lab's grace period is
`lab.controlPlane.nodeGracePeriod` (here 1 s; --grace to change it).

    python bench/failover.py [--rounds 5] [--grace 1.0] [--store embedded|etcd]
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import sys
import time

from common import median, say, table

from netlab import loadgen
from netlab.etcdstore import EtcdClient, EtcdStore, endpoints_of
from netlab.lab import Lab
from netlab.realize.etcd import LoopbackEtcd
from netlab.spec import LabBuilder
from netlab.store import Store

ECHO = [sys.executable, "-m", "netlab.apps.echo", "8080"]


def spec_of(grace: float, store: str):
    b = LabBuilder("bfail")
    b.add_rack("rack1", "192.168.1.0/24")
    b.add_rack("rack2", "192.168.2.0/24")
    for node, rack in (("n1", "rack1"), ("n2", "rack1"), ("n3", "rack2"), ("n4", "rack2")):
        b.add_node(node, rack=rack)
    b.add_pod("client", command=["sleep", "infinity"], node_name="n1")
    b.add_deployment("web", replicas=3, command=ECHO, ports=[8080])
    b.add_service("web", selector={"app": "web"}, ports=[(80, 8080)])
    spec = b.build()
    timing = dataclasses.replace(spec.control_plane, node_grace=grace)
    return dataclasses.replace(spec, control_plane=timing, store=store)


def wait(predicate, timeout: float) -> float:
    start = time.monotonic()
    while not predicate():
        if time.monotonic() - start > timeout:
            raise RuntimeError("the lab did not converge")
        time.sleep(0.005)
    return time.monotonic() - start


def converged(lab: Lab) -> bool:
    webs = lab.ready_pods("web")
    return len(webs) == 3 and lab.endpoint_ips("web") == {str(p.address.ip) for p in webs}


def pod_round(lab: Lab, url: str) -> tuple[float, float]:
    load = loadgen.Load(lab.pod("client").netns, url, seconds=20, interval=0.02)
    time.sleep(0.3)
    victim = sorted(lab.ready_pods("web"), key=lambda p: p.name)[0]
    since = time.time()
    lab.delete_pod(victim.name)
    serving = wait(
        lambda: converged(lab) and victim.name not in {p.name for p in lab.ready_pods("web")}, 20
    )
    time.sleep(0.3)
    answers = load.stop()
    return serving, loadgen.error_window(answers, since)


def node_round(lab: Lab, url: str) -> tuple[float, float]:
    wait(lambda: converged(lab), 20)
    victim = next(p.node for p in lab.ready_pods("web") if p.node != "n1")
    load = loadgen.Load(lab.pod("client").netns, url, seconds=30, interval=0.02)
    time.sleep(0.3)
    since = time.time()
    lab.fail_node(victim)
    moved = wait(
        lambda: converged(lab) and all(p.node != victim for p in lab.ready_pods("web")), 30
    )
    time.sleep(0.5)
    answers = load.stop()
    recovered = loadgen.recovered_after(answers, since)
    lab.recover_node(victim)
    wait(lambda: converged(lab), 30)
    return (recovered if recovered is not None else float("nan")), moved


def supervisor_round(lab: Lab, spec, url: str) -> tuple[Lab, float, float, int]:
    """The supervisor goes (as `netlab detach` does: API, controllers, probes stop) and
    a new one takes the lab over (`adopt`): seconds to take it over, the client's error
    window meanwhile, and how many containers were started anew (0: none restarted)."""
    wait(lambda: converged(lab), 20)
    before = {(p.namespace, p.name): pid for p, pid in container_pids(lab)}
    load = loadgen.Load(lab.pod("client").netns, url, seconds=20, interval=0.02)
    time.sleep(0.3)
    since = time.time()
    lab.leave()
    time.sleep(0.5)  # nobody supervises for a moment: the data plane carries on
    successor = Lab(spec)
    started = time.monotonic()
    successor.adopt()
    adopted = time.monotonic() - started
    successor.settle()
    time.sleep(0.3)
    answers = load.stop()
    after = {(p.namespace, p.name): pid for p, pid in container_pids(successor)}
    restarted = sum(1 for key, pid in after.items() if before.get(key) != pid)
    return successor, adopted, loadgen.error_window(answers, since), restarted


def container_pids(lab: Lab) -> list[tuple]:
    with lab.lock:
        return [(rt.plan, proc.pid) for rt in lab.pods.values() for proc in rt.procs.values()]


async def store_latency(store: Store, rounds: int) -> tuple[list[float], list[float]]:
    """Seconds of each apply, and of each apply until a watcher of the store sees it."""
    writes, delays = [], []
    watch = store.watch("pods", "default", resource_version=store.revision)
    for i in range(rounds):
        obj = {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": f"p{i % 50}"},
            "spec": {"n": i},
        }
        start = time.perf_counter()
        store.apply(obj)
        writes.append(time.perf_counter() - start)
        await watch.next(timeout=1.0)
        delays.append(time.perf_counter() - start)
    watch.close()
    return writes, delays


def store_rows(rounds: int = 5, per_round: int = 400) -> list[list[str]]:
    """Embedded vs a loopback etcd, interleaved rounds; medians of all writes."""
    server = LoopbackEtcd("bench")
    try:
        stores = {
            "embedded": Store(),
            "etcd": EtcdStore("bstore", EtcdClient(endpoints_of(server.url))),
        }
        stores["etcd"].clear()
        results = {name: ([], []) for name in stores}
        for _ in range(rounds):
            for name, store in stores.items():
                writes, delays = asyncio.run(store_latency(store, per_round))
                results[name][0].extend(writes)
                results[name][1].extend(delays)
        stores["etcd"].clear()
    finally:
        server.stop()
    emb, etc = results["embedded"], results["etcd"]
    return [
        [
            "store write, embedded / etcd",
            f"{median(emb[0]) * 1e6:.0f} µs / {median(etc[0]) * 1e6:.0f} µs",
        ],
        [
            "store write to watch event, embedded / etcd",
            f"{median(emb[1]) * 1e6:.0f} µs / {median(etc[1]) * 1e6:.0f} µs",
        ],
        ["etcd / embedded (write)", f"{median(etc[0]) / median(emb[0]):.0f}x"],
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--grace", type=float, default=1.0, help="node grace period, seconds")
    parser.add_argument(
        "--store",
        default="embedded",
        help="the lab's store for the failover rounds: embedded or etcd",
    )
    args = parser.parse_args()
    spec = spec_of(args.grace, args.store)
    lab = Lab(spec)
    say(
        f"failover bench: 2 racks x 2 nodes, web x3, grace period {args.grace:g} s, {args.rounds} rounds"
    )
    lab.start()
    try:
        lab.settle()
        url = f"http://{lab.service_vip('web')}/"
        pods, nodes, restarts = [], [], []
        for index in range(args.rounds):
            pods.append(pod_round(lab, url))
            nodes.append(node_round(lab, url))
            lab, *measured = supervisor_round(lab, spec, url)
            restarts.append(measured)
            say(
                f"round {index + 1}: pod replaced {pods[-1][0]:.2f} s (errors {pods[-1][1]:.2f} s); "
                f"node: requests ok again after {nodes[-1][0]:.2f} s, pods moved {nodes[-1][1]:.2f} s; "
                f"supervisor taken over in {measured[0]:.2f} s (errors {measured[1]:.2f} s, "
                f"{measured[2]} containers restarted)"
            )
    finally:
        lab.stop()
    rows = [
        ["pod deleted: replacement ready, in Endpoints", f"{median([p[0] for p in pods]):.2f} s"],
        ["pod deleted: client error window", f"{median([p[1] for p in pods]):.2f} s"],
        ["node failed: all requests succeed again", f"{median([n[0] for n in nodes]):.2f} s"],
        ["node failed: all pods ready elsewhere", f"{median([n[1] for n in nodes]):.2f} s"],
        [
            "supervisor restarted: lab taken over (adopt)",
            f"{median([r[0] for r in restarts]):.2f} s",
        ],
        ["supervisor restarted: client error window", f"{median([r[1] for r in restarts]):.2f} s"],
        ["supervisor restarted: containers restarted", f"{max(r[2] for r in restarts)}"],
        ["node grace period (this lab)", f"{args.grace:g} s"],
        ["Kubernetes defaults: NotReady / eviction", "40 s / +300 s"],
        *store_rows(),
    ]
    print(table(["measure (median)", "value"], rows))


if __name__ == "__main__":
    main()
