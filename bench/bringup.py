"""Bring-up and teardown time of a netlab lab against plain Mininet.

For 8, 128 and 512 pods (2x2x2, 4x4x8 and 8x8x8 racks x nodes x pods, the
pods one Deployment of `sleep infinity`), time

  lab:      Lab(spec) .. lab.start() returns (ready), lab.stop() (torn down)
  mininet:  the same number of hosts (nodes + pods), each linked to a
            LinuxBridge switch per rack: Mininet(...)+build+start (ready),
            net.stop() (torn down)

interleaved in one process (lab, mininet, lab, mininet, ...), and print the
medians and the lab/mininet ratios. Plain Mininet runs inside a throwaway
namespace `nl-benchmn` (so its bridges and switch-side links never land in
the host's root namespace), with Mininet's host-wide init skipped
(`Mininet.inited = True`) and never Mininet's cleanup (`mn -c`).

    python bench/bringup.py            # 3 runs per size, about 3-6 min
    python bench/bringup.py --quick    # 2 runs for 8/128 pods, 1 for 512
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import time
import traceback
from pathlib import Path

import common
from common import fmt, goal, median, paired_ratio, say, table
from mininet.net import Mininet
from mininet.nodelib import LinuxBridge
from mininet.topo import Topo

from netlab.lab import Lab
from netlab.realize import netns
from netlab.spec import LabBuilder

# racks, nodes per rack, pods per node
SIZES = {8: (2, 2, 2), 128: (4, 4, 8), 512: (8, 8, 8)}
GOAL_UP = {128: 2.5, 512: 8.0}  # seconds to ready
GOAL_RATIO = 1.0  # lab / mininet
MININET_NETNS = "nl-benchmn"
BUDGET = 6 * 60  # seconds for the default run


# ---------------------------------------------------------------- netlab


def lab_spec(pods: int):
    racks, per_rack, _ = SIZES[pods]
    b = LabBuilder(f"bench{pods}")
    for r in range(1, racks + 1):
        b.add_rack(f"rack{r}", f"192.168.{r}.0/24")
        for k in range(1, per_rack + 1):
            b.add_node(f"n{r}{k}", rack=f"rack{r}")
    b.add_deployment("pause", replicas=pods, command=["sleep", "infinity"], labels={"app": "pause"})
    return b.build()


def check_spread(lab: Lab, pods: int) -> None:
    """The lab really has `pods` pods, spread evenly over its nodes (besides
    the lab's own DNS pod in kube-system, which every lab runs and waits for)."""
    placed = [p for p in lab.pod_list() if p.namespace == "default"]
    if len(placed) != pods:
        raise RuntimeError(f"lab has {len(placed)} pods, expected {pods}")
    per_node: dict[str, int] = {}
    for pod in placed:
        per_node[pod.node] = per_node.get(pod.node, 0) + 1
    if len(set(per_node.values())) > 1 or len(per_node) != len(lab.node_list()):
        say(f"    note: pods not spread evenly: {sorted(per_node.items())}")


def lab_once(pods: int, check: bool) -> tuple[float, float]:
    """(seconds to ready, seconds to torn down) for one lab."""
    spec = lab_spec(pods)
    lab = None
    try:
        t0 = time.perf_counter()
        lab = Lab(spec)
        lab.start()
        up = time.perf_counter() - t0
        if check:
            check_spread(lab, pods)
        t1 = time.perf_counter()
        lab.stop()
        down = time.perf_counter() - t1
        lab = None
        return up, down
    finally:
        if lab is not None:
            lab.stop()


# ---------------------------------------------------------------- mininet


class RackTopo(Topo):
    """One LinuxBridge switch per rack; every node and pod a host on it."""

    def build(self, racks: int, hosts_per_rack: int) -> None:
        count = 0
        for r in range(1, racks + 1):
            switch = self.addSwitch(f"s{r}")
            for _ in range(hosts_per_rack):
                count += 1
                self.addLink(self.addHost(f"h{count}"), switch)


def host_count(pods: int) -> int:
    racks, per_rack, per_node = SIZES[pods]
    return racks * per_rack * (1 + per_node)


def mininet_once(pods: int) -> tuple[float, float]:
    """(seconds to ready, seconds to torn down) for plain Mininet, run in a
    throwaway namespace of our own."""
    racks, per_rack, per_node = SIZES[pods]
    topo = RackTopo(racks=racks, hosts_per_rack=per_rack * (1 + per_node))
    Mininet.inited = True  # skip init(): fixLimits raises host-wide sysctls
    path = netns.create(MININET_NETNS)
    net = None
    try:
        with netns.entered(path):
            t0 = time.perf_counter()
            net = Mininet(
                topo=topo,
                switch=LinuxBridge,
                controller=None,
                autoSetMacs=True,
                waitConnected=False,
                build=False,  # then net.build(): exactly what build=True does, but
            )  # a failure mid-build still leaves us `net` to find its shells
            net.build()
            net.start()
            up = time.perf_counter() - t0
            if len(net.hosts) != host_count(pods):
                raise RuntimeError(f"mininet made {len(net.hosts)} hosts")
            t1 = time.perf_counter()
            net.stop()
            down = time.perf_counter() - t1
            return up, down
    finally:
        end_mininet_shells(net)
        netns.remove(MININET_NETNS)


def end_mininet_shells(net: Mininet | None) -> None:
    """No `mininet:` shell of ours may outlive the run: kill leftovers by PID
    (the nodes' recorded PIDs, then any child of ours still named so)."""
    pids: set[int] = set()
    if net is not None:
        for node in net.hosts + net.switches:
            shell = getattr(node, "shell", None)
            if shell is not None and shell.poll() is None:
                pids.add(shell.pid)
    pids.update(common.children_matching("mininet:"))
    if pids:
        killed = common.kill_pids(sorted(pids))
        if killed:
            say(f"    killed {len(killed)} leftover mininet shell(s) of ours")


# ---------------------------------------------------------------- driver


def pause(pods: int) -> None:
    common.settle(0.3, 2.0 + host_count(pods) / 200)


def measure(sizes: list[int], runs: dict[int, int], deadline: common.Deadline) -> dict:
    results = {}
    for pods in sizes:
        want = runs[pods]
        lab_up, lab_down, mn_up, mn_down, failures = [], [], [], [], []
        per_pair = None
        for i in range(want):
            if i and per_pair is not None and deadline.left() < per_pair * 1.2:
                say(f"  {pods} pods: stopping after {i} run(s) to stay within the time budget")
                break
            started = time.monotonic()
            try:
                up, down = lab_once(pods, check=(i == 0))
            except Exception as exc:  # a failed lab is reported, the run goes on
                failures.append(exc)
                up = down = float("nan")
                if len(failures) == 1:
                    traceback.print_exc()
                say(f"  {pods:>3} pods run {i + 1}/{want}: LAB FAILED: {exc}")
            lab_up.append(up)
            lab_down.append(down)
            pause(pods)
            try:
                mup, mdown = mininet_once(pods)
            except Exception as exc:
                traceback.print_exc()
                say(f"  {pods:>3} pods run {i + 1}/{want}: MININET FAILED: {exc}")
                mup = mdown = float("nan")
            mn_up.append(mup)
            mn_down.append(mdown)
            pause(pods)
            per_pair = time.monotonic() - started
            say(
                f"  {pods:>3} pods run {i + 1}/{want}: lab up {fmt(up)} s down {fmt(down)} s"
                f" | mininet up {fmt(mup)} s down {fmt(mdown)} s"
            )
        results[pods] = (lab_up, lab_down, mn_up, mn_down, len(failures))
    return results


def report(results: dict) -> str:
    rows = []
    for pods, (lab_up, lab_down, mn_up, mn_down, failed) in results.items():
        up, down = median(lab_up), median(lab_down)
        ratio_up, ratio_down = paired_ratio(lab_up, mn_up), paired_ratio(lab_down, mn_down)
        limit = GOAL_UP.get(pods)
        rows.append(
            [
                str(pods),
                str(host_count(pods)),
                f"{len(lab_up)}" + (f" ({failed} lab FAILED)" if failed else ""),
                fmt(up),
                fmt(median(mn_up)),
                fmt(ratio_up),
                fmt(down),
                fmt(median(mn_down)),
                fmt(ratio_down),
                f"<= {limit:g} s: {goal(up, limit)}" if limit else "-",
                f"<= {GOAL_RATIO:g}: {goal(ratio_up, GOAL_RATIO)}/{goal(ratio_down, GOAL_RATIO)}",
            ]
        )
    headers = [
        "pods",
        "hosts",
        "runs",
        "lab up s",
        "mininet up s",
        "ratio up",
        "lab down s",
        "mininet down s",
        "ratio down",
        "goal ready",
        "goal ratio up/down",
    ]
    return table(headers, rows)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer runs (2, 2, 1)")
    parser.add_argument("--runs", type=int, help="runs per size (default 3)")
    parser.add_argument(
        "--sizes", type=int, nargs="+", choices=sorted(SIZES), default=sorted(SIZES)
    )
    parser.add_argument("--budget", type=float, default=BUDGET, help="seconds (default 360)")
    args = parser.parse_args(argv)
    runs = {8: 2, 128: 2, 512: 1} if args.quick else dict.fromkeys(SIZES, 3)
    if args.runs:
        runs = dict.fromkeys(SIZES, args.runs)

    common.raise_fd_limit()
    deadline = common.Deadline(args.budget)
    say("bringup: netlab Lab vs plain Mininet (LinuxBridge), interleaved, medians")
    say(f"  runs per size: {', '.join(f'{p} pods: {runs[p]}' for p in args.sizes)}")
    try:
        # warm-up pair (not recorded): imports, page cache, first-use costs
        lab_once(8, check=True)
        mininet_once(8)
        pause(8)
        results = measure(args.sizes, runs, deadline)
    except Exception:
        traceback.print_exc()
        say("bringup: FAILED (see the traceback above)")
        return 1
    finally:
        # a crash mid-run must not leave our throwaway namespace behind
        with contextlib.suppress(OSError):
            if Path(netns.netns_path(MININET_NETNS)).exists():
                netns.remove(MININET_NETNS)
    say("")
    say(report(results))
    say(
        "ratio = median of per-run lab/mininet ratios (each pair ran back to back); "
        "hosts = nodes + pods"
    )
    say(f"total {deadline.elapsed():.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
