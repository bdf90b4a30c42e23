"""`netlab etcd status|get|kill|start`: a lab's own etcd cluster (store: etcd), as a user
of etcdctl would look at it: who leads, what each member has applied, reads that are
linearizable (through the leader and a quorum) or serializable (one member's copy); a
member killed (a crash), which the supervisor starts again unless it is kept down."""

from __future__ import annotations

import argparse
import base64
import json
import math
import os
import signal
import time
from pathlib import Path

from netlab.errors import NetlabError
from netlab.etcdstore import EtcdClient, EtcdError
from netlab.realize.etcd import SOCKET_NAME, member_status
from netlab.realize.etcdkeeper import (
    KEPT_DOWN,
    NODE_DOWN,
    RESTARTING,
    keep_down,
    kept_down,
    read_status,
)
from netlab.realize.processes import PidRecord, alive_as_recorded
from netlab.tables import columns


def members(run_dir: Path) -> dict[str, str]:
    """Member name -> client endpoint (its unix socket), from the lab's run directory."""
    root = run_dir / "etcd"
    if not root.is_dir():
        raise NetlabError(
            f"lab {run_dir.name} runs no etcd of its own: start it with `store: etcd` in the "
            "lab file (or `netlab up --store etcd`)"
        )
    return {f"etcd-{d.name}": f"unix:{d / SOCKET_NAME}" for d in sorted(root.iterdir())}


def _running(run_dir: Path) -> dict[str, int]:
    """The lab's etcd members that run, by name: their PIDs (as recorded, still alive)."""
    return {
        name: pid
        for pid, started, role, name in PidRecord.read(run_dir / "pids")
        if role == "etcd" and pid and alive_as_recorded(pid, started)
    }


def status_lines(run_dir: Path, now: float | None = None) -> list[str]:
    """One row per member: its process, what the supervisor does about it (restarts
    one that ended after a back-off, as kubelet does with a static pod), and its raft view."""
    now = time.time() if now is None else now
    found = members(run_dir)
    running = _running(run_dir)
    rows = [["MEMBER", "PID", "STATE", "RESTARTS", "LEADER", "RAFT-TERM", "RAFT-INDEX", "REVISION"]]
    views = {name: member_status(endpoint) for name, endpoint in found.items()}
    ids = {v["header"]["member_id"]: name for name, v in views.items() if v}
    for name, view in views.items():
        pid = running.get(name)
        alive = pid is not None
        kept = read_status(_data_dir(run_dir, name))
        restarts = str(kept.get("restarts", 0)) if kept else "-"
        if view is None:
            rows.append([name, str(pid) if alive else "-", down_state(alive, kept, now), restarts])
            continue
        leader = ids.get(view.get("leader", ""), "(none)")
        state = "leader" if view["header"]["member_id"] == view.get("leader") else "follower"
        rows.append(
            [
                name,
                str(pid),
                state,
                restarts,
                leader,
                str(view.get("raftTerm", "")),
                str(view.get("raftAppliedIndex", "")),
                str(view["header"].get("revision", "")),
            ]
        )
    return columns(rows)


def down_state(alive: bool, kept: dict | None, now: float) -> str:
    """A member that does not answer: frozen or starting (alive), or down, and then
    what the supervisor's keeper will do about it."""
    if alive:
        return "no answer"
    if kept is None or not kept.get("kept"):
        return "down (no supervisor restarts it)"
    state = kept.get("state")
    if state == KEPT_DOWN:
        return "kept down"
    if state == NODE_DOWN:
        return "down (its node failed)"
    if state == RESTARTING and kept.get("restart_at"):
        return f"restarting in {max(0, math.ceil(kept['restart_at'] - now))}s"
    return "starting"


def _data_dir(run_dir: Path, name: str) -> Path:
    return run_dir / "etcd" / name.removeprefix("etcd-")


def leader(run_dir: Path) -> str:
    for name, endpoint in members(run_dir).items():
        view = member_status(endpoint)
        if view and view["header"]["member_id"] == view.get("leader"):
            return name
    raise NetlabError("no member says it leads: the cluster has no quorum")


def _kill(run_dir: Path, member: str, keep: bool) -> int:
    """SIGKILL a member (a crash); the supervisor starts it again unless `keep`."""
    name = leader(run_dir) if member == "leader" else _known(run_dir, member)
    pid = _running(run_dir).get(name)
    running = pid is not None
    if keep:  # before the kill: the keeper must not start it in between
        keep_down(_data_dir(run_dir, name), True)
    elif not running:
        raise NetlabError(f"no running etcd member {name}; `netlab etcd status` lists them")
    if running:
        os.kill(pid, signal.SIGKILL)
    if keep:
        what = f"{name} (pid {pid}) killed" if running else f"{name} was not running"
        print(f"{what}; kept down until `netlab etcd start --member {name}`")
    else:
        print(
            f"{name} (pid {pid}) killed; the supervisor starts it again after a back-off "
            "(`--keep-down` keeps it down)"
        )
    return 0


def _start(run_dir: Path, member: str, timeout: float) -> int:
    """Start a member that is down (kept down, or waiting out its back-off) now, and
    wait until it answers."""
    name = _known(run_dir, member)
    data_dir = _data_dir(run_dir, name)
    pid = _running(run_dir).get(name)
    if pid is not None and not kept_down(data_dir):
        print(f"{name} is running (pid {pid})")
        return 0
    kept = read_status(data_dir)
    if kept is None or not kept.get("kept"):
        raise NetlabError(
            f"no supervisor looks after lab {run_dir.name}'s etcd members, so nobody would start "
            f"{name}; `netlab up -d --adopt` takes the lab over"
        )
    keep_down(data_dir, False)
    endpoint = members(run_dir)[name]
    deadline = time.monotonic() + timeout
    while member_status(endpoint) is None:
        if time.monotonic() > deadline:
            raise NetlabError(
                f"{name} did not answer within {timeout:.0f} s; `netlab etcd status` shows its "
                f"state, {run_dir / 'logs' / f'{name}.log'} its log"
            )
        time.sleep(0.1)
    print(f"{name} started (pid {_running(run_dir).get(name, 0)})")
    return 0


def _known(run_dir: Path, name: str) -> str:
    found = members(run_dir)
    if name not in found:
        raise NetlabError(f"no etcd member {name}; the lab's are {', '.join(found)}")
    return name


def run(args: argparse.Namespace, run_dir: Path) -> int:
    if args.etcd_verb == "status":
        print("\n".join(status_lines(run_dir)))
        return 0
    if args.etcd_verb == "kill":
        return _kill(run_dir, args.member, args.keep_down)
    if args.etcd_verb == "start":
        return _start(run_dir, args.member, args.timeout or 30.0)
    # get: every key under the prefix, from one member (or the first that answers)
    found = members(run_dir)
    endpoints = [found[args.member]] if args.member else list(found.values())
    client = EtcdClient(endpoints, timeout=args.timeout or 2.0)
    prefix = f"/netlab/{run_dir.name}/{args.prefix.lstrip('/')}"
    try:
        kvs, revision = client.range_prefix(prefix, serializable=args.serializable)
    except EtcdError as exc:
        kind = "serializable" if args.serializable else "linearizable"
        raise NetlabError(f"the {kind} read failed: {exc}") from None
    for kv in kvs:
        key = base64.b64decode(kv["key"]).decode()
        if args.values:
            print(key, json.dumps(json.loads(base64.b64decode(kv["value"])), separators=(",", ":")))
        else:
            print(f"{key}  (mod_revision {kv['mod_revision']})")
    read = "serializable (this member's copy)" if args.serializable else "linearizable"
    print(f"# {len(kvs)} keys at revision {revision}, {read}")
    return 0


def configure(p: argparse.ArgumentParser) -> None:
    p.add_argument("etcd_verb", choices=["status", "get", "kill", "start"])
    p.add_argument(
        "prefix", nargs="?", default="", help="get: a key prefix under the lab's, e.g. pods/"
    )
    p.add_argument(
        "--member", help="get: ask this member only; kill, start: the member (kill: or 'leader')"
    )
    p.add_argument(
        "--keep-down",
        action="store_true",
        help="kill: the supervisor does not start it again until `netlab etcd start`",
    )
    p.add_argument("--serializable", action="store_true", help="get: a serializable read")
    p.add_argument("--values", action="store_true", help="get: print the stored objects too")
    p.add_argument(
        "--timeout",
        type=float,
        help="get: seconds per request (2); start: seconds to wait until it answers (30)",
    )
