"""What the mesh adds to a lab's bring-up, and what one sidecar costs in memory.

128 pods (4 racks x 4 nodes x 8 pods, one Deployment of `sleep infinity`),
brought up plain and meshed (the template labelled netlab.io/inject: "true":
a sidecar per pod, interception rules in every pod), interleaved; "up" means
every pod of the Deployment is Ready, which for a meshed pod includes its
sidecar's first route table. Then the unique memory (USS: Private_Clean +
Private_Dirty of /proc/PID/smaps_rollup) of the sidecars: forked from the
lab's preloaded zygote (the default) and started fresh (NETLAB_SIDECAR_FORK=0).

    python bench/mesh_bringup.py            # 3 interleaved pairs, about 2 min
    python bench/mesh_bringup.py --quick    # 2 pairs
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import common
from common import fmt, goal, median, say, table

from netlab.lab import Lab
from netlab.spec import LabBuilder
from netlab.system import SIDECAR_CONTAINER

PODS = (4, 4, 8)  # racks, nodes per rack, pods per node
GOAL_ADDED = 2.0  # seconds the mesh may add at 128 pods
GOAL_USS_MB = 5.0


def spec(meshed: bool, pods: int):
    racks, per_rack, _ = PODS
    b = LabBuilder("benchmesh")
    for r in range(1, racks + 1):
        b.add_rack(f"rack{r}", f"192.168.{r}.0/24")
        for k in range(1, per_rack + 1):
            b.add_node(f"n{r}{k}", rack=f"rack{r}")
    labels = {"app": "pause"} | ({"netlab.io/inject": "true"} if meshed else {})
    b.add_deployment("pause", replicas=pods, command=["sleep", "infinity"], labels=labels)
    return b.build()


def all_ready(lab: Lab, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with lab.lock:
            mine = [rt for rt in lab.pods.values() if rt.plan.namespace == "default"]
            if mine and all(rt.status.ready for rt in mine):
                return
        time.sleep(0.01)
    raise RuntimeError("pods not ready in time")


def uss_mb(pid: int) -> float | None:
    try:
        with open(f"/proc/{pid}/smaps_rollup") as f:
            fields = dict(line.split(":", 1) for line in f if ":" in line)
    except OSError:
        return None
    kb = sum(int(fields[k].split()[0]) for k in ("Private_Clean", "Private_Dirty") if k in fields)
    return kb / 1024


def sidecar_uss(lab: Lab) -> list[float]:
    with lab.lock:
        procs = [
            rt.procs[SIDECAR_CONTAINER] for rt in lab.pods.values() if SIDECAR_CONTAINER in rt.procs
        ]
    return [u for u in (uss_mb(p.pid) for p in procs) if u is not None]


def one(meshed: bool, pods: int, memory: bool = False) -> tuple[float, list[float]]:
    lab = Lab(spec(meshed, pods))
    try:
        started = time.perf_counter()
        lab.start()
        all_ready(lab)
        up = time.perf_counter() - started
        uss = []
        if memory:
            time.sleep(2.0)  # the sidecars have served their admin port and settled
            uss = sidecar_uss(lab)
        return up, uss
    finally:
        lab.stop()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="2 pairs instead of 3")
    p.add_argument("--pods", type=int, default=128)
    args = p.parse_args(argv)
    common.raise_fd_limit()
    pairs = 2 if args.quick else 3
    say(f"mesh bring-up: {args.pods} pods plain vs meshed, {pairs} interleaved pairs, medians")
    one(False, 8)  # warm-up: imports, page cache
    plain, meshed = [], []
    for i in range(pairs):
        order = (False, True) if i % 2 == 0 else (True, False)
        for m in order:
            up, _ = one(m, args.pods)
            (meshed if m else plain).append(up)
            say(f"  pair {i + 1}: {'meshed' if m else 'plain '} ready in {up:.2f} s")
    added = [m - q for m, q in zip(meshed, plain, strict=True)]
    _, forked = one(True, 16, memory=True)
    os.environ["NETLAB_SIDECAR_FORK"] = "0"
    try:
        _, fresh = one(True, 16, memory=True)
    finally:
        del os.environ["NETLAB_SIDECAR_FORK"]
    say("")
    say(
        table(
            ["pods", "plain up s", "meshed up s", "added s", "goal added"],
            [
                [
                    str(args.pods),
                    fmt(median(plain)),
                    fmt(median(meshed)),
                    fmt(median(added)),
                    f"<= {GOAL_ADDED:g} s: {goal(median(added), GOAL_ADDED)}",
                ]
            ],
        )
    )
    say("")
    say(
        table(
            ["sidecars", "started", "USS MB median", "min", "max", "goal"],
            [
                [
                    str(len(forked)),
                    "forked (zygote)",
                    fmt(median(forked)),
                    fmt(min(forked)),
                    fmt(max(forked)),
                    f"<= {GOAL_USS_MB:g} MB: {goal(median(forked), GOAL_USS_MB)}",
                ],
                [
                    str(len(fresh)),
                    "fresh process",
                    fmt(median(fresh)),
                    fmt(min(fresh)),
                    fmt(max(fresh)),
                    "-",
                ],
            ],
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
