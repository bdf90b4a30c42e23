"""`netlab etcd status|get|kill`: a lab's own etcd cluster (store: etcd), as a user of
etcdctl would look at it: who leads, what each member has applied, reads that are
linearizable (through the leader and a quorum) or serializable (one member's copy)."""

from __future__ import annotations

import argparse
import base64
import json
import os
import signal
from pathlib import Path

from netlab.errors import NetlabError
from netlab.etcdstore import EtcdClient, EtcdError
from netlab.realize.etcd import SOCKET_NAME, member_status
from netlab.realize.processes import PidRecord, alive_as_recorded


def members(run_dir: Path) -> dict[str, str]:
    """Member name -> client endpoint (its unix socket), from the lab's run directory."""
    root = run_dir / "etcd"
    if not root.is_dir():
        raise NetlabError(
            f"lab {run_dir.name} runs no etcd of its own: start it with `store: etcd` in the "
            "lab file (or `netlab up --store etcd`)"
        )
    return {f"etcd-{d.name}": f"unix:{d / SOCKET_NAME}" for d in sorted(root.iterdir())}


def _pids(run_dir: Path) -> dict[str, tuple[int, int]]:
    return {
        name: (pid, started)
        for pid, started, role, name in PidRecord.read(run_dir / "pids")
        if role == "etcd"
    }


def status_lines(run_dir: Path) -> list[str]:
    found = members(run_dir)
    pids = _pids(run_dir)
    views = {name: member_status(endpoint) for name, endpoint in found.items()}
    ids = {v["header"]["member_id"]: name for name, v in views.items() if v}
    lines = ["MEMBER       PID      STATE      LEADER       RAFT-TERM  RAFT-INDEX  REVISION"]
    for name, view in views.items():
        pid, started = pids.get(name, (0, 0))
        alive = pid and alive_as_recorded(pid, started)
        if view is None:
            state = "down" if not alive else "no answer"
            lines.append(f"{name:<12} {pid or '-':<8} {state:<10}")
            continue
        leader = ids.get(view.get("leader", ""), "(none)")
        state = "leader" if view["header"]["member_id"] == view.get("leader") else "follower"
        lines.append(
            f"{name:<12} {pid:<8} {state:<10} {leader:<12} {view.get('raftTerm', ''):<10} "
            f"{view.get('raftAppliedIndex', ''):<11} {view['header'].get('revision', '')}"
        )
    return lines


def leader(run_dir: Path) -> str:
    for name, endpoint in members(run_dir).items():
        view = member_status(endpoint)
        if view and view["header"]["member_id"] == view.get("leader"):
            return name
    raise NetlabError("no member says it leads: the cluster has no quorum")


def run(args: argparse.Namespace, run_dir: Path) -> int:
    if args.etcd_verb == "status":
        print("\n".join(status_lines(run_dir)))
        return 0
    if args.etcd_verb == "kill":
        name = leader(run_dir) if args.member == "leader" else args.member
        pid, started = _pids(run_dir).get(name, (0, 0))
        if not pid or not alive_as_recorded(pid, started):
            raise NetlabError(f"no running etcd member {name}; `netlab etcd status` lists them")
        os.kill(pid, signal.SIGKILL)
        print(f"{name} (pid {pid}) killed")
        return 0
    # get: every key under the prefix, from one member (or the first that answers)
    found = members(run_dir)
    endpoints = [found[args.member]] if args.member else list(found.values())
    client = EtcdClient(endpoints, timeout=args.timeout)
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
    p.add_argument("etcd_verb", choices=["status", "get", "kill"])
    p.add_argument(
        "prefix", nargs="?", default="", help="get: a key prefix under the lab's, e.g. pods/"
    )
    p.add_argument("--member", help="get: ask this member only; kill: the member (or 'leader')")
    p.add_argument("--serializable", action="store_true", help="get: a serializable read")
    p.add_argument("--values", action="store_true", help="get: print the stored objects too")
    p.add_argument("--timeout", type=float, default=2.0)
