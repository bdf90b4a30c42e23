"""store: etcd on a real etcd: a loopback one (the tests start it), and the 3-member
cluster a lab runs inside itself, whose leader is killed."""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import json
import subprocess
import sys
import time

import pytest

from netlab.errors import ApiError
from netlab.etcdstore import EtcdClient, EtcdError, EtcdStore, endpoints_of
from netlab.lab import Lab
from netlab.realize.etcd import LoopbackEtcd, member_status
from netlab.realize.etcdkeeper import BACKOFF_START, keep_down
from tests.root.conftest import two_rack_builder, wait_for

pytestmark = pytest.mark.root

SLEEP = ["sleep", "infinity"]


@pytest.fixture(scope="module")
def loopback_etcd():
    server = LoopbackEtcd()
    yield server
    server.stop()


def pod(name: str, value: int = 0) -> dict:
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name}, "spec": {"n": value}}


def test_writes_are_etcd_revisions_and_a_new_store_picks_them_up(loopback_etcd):
    client = EtcdClient(endpoints_of(loopback_etcd.url))
    store = EtcdStore("tstore", client)
    store.clear()
    first = store.create(pod("a"))
    second = store.apply(pod("a", 1))
    assert int(second["metadata"]["resourceVersion"]) > int(first["metadata"]["resourceVersion"])
    assert store.revision == int(second["metadata"]["resourceVersion"])
    store.apply(pod("b"))
    store.delete("pods", "default", "b")
    # what etcd holds: the object without its resourceVersion (etcd's mod_revision is it)
    kv = client.get("/netlab/tstore/pods/default/a")
    assert json.loads(base64.b64decode(kv["value"]))["spec"] == {"n": 1}
    assert kv["mod_revision"] == second["metadata"]["resourceVersion"]
    # another supervisor (a restart) reads the same state back
    again = EtcdStore("tstore", EtcdClient(endpoints_of(loopback_etcd.url)))
    assert again.get("pods", "default", "a") == store.get("pods", "default", "a")
    assert again.list("pods")[0] == store.list("pods")[0]
    # a write from the stale store loses the compare-and-swap: 409, nothing overwritten
    again.apply(pod("a", 2))
    with pytest.raises(ApiError) as err:
        store.apply(pod("a", 3))
    assert err.value.status == 409
    assert again.get("pods", "default", "a")["spec"] == {"n": 2}
    assert store.get("pods", "default", "a")["spec"] == {"n": 2}  # reloaded on the conflict
    store.clear()


def test_watches_are_served_from_the_cache_at_etcd_revisions(loopback_etcd):
    store = EtcdStore("twatch", EtcdClient(endpoints_of(loopback_etcd.url)))
    store.clear()
    start = store.revision

    async def watch() -> list[tuple[str, int]]:
        w = store.watch("pods", "default", resource_version=start)
        store.apply(pod("x"))
        store.delete("pods", "default", "x")
        seen = []
        while len(seen) < 2:
            seen += [(e.type, e.revision) for e in await w.next(timeout=2)]
        w.close()
        return seen

    seen = asyncio.run(watch())
    assert [t for t, _ in seen] == ["ADDED", "DELETED"] and seen[0][1] < seen[1][1]
    store.clear()


def test_a_lab_on_a_loopback_etcd_heals_and_leaves_nothing_in_it(loopback_etcd):
    b = two_rack_builder("tetcd")
    b.add_deployment("web", replicas=3, command=SLEEP)
    spec = dataclasses.replace(b.build(), store=loopback_etcd.url)
    client = EtcdClient(endpoints_of(loopback_etcd.url))
    with Lab(spec) as lab:
        lab.settle()
        kvs, _ = client.range_prefix("/netlab/tetcd/pods/")
        assert len(kvs) == len(lab.pod_list())
        victim = next(p for p in lab.pod_list() if p.owner == "web")
        lab.delete_pod(victim.name)
        assert wait_for(
            lambda: (
                len([p for p in lab.pod_list() if p.owner == "web"]) == 3
                and victim.name not in {p.name for p in lab.pod_list()}
            ),
            5,
        )
        lab.scale("web", 4)
        assert wait_for(lambda: len([p for p in lab.pod_list() if p.owner == "web"]) == 4, 10)
        stored = json.loads(
            base64.b64decode(client.get("/netlab/tetcd/deployments.apps/default/web")["value"])
        )
        assert stored["spec"]["replicas"] == 4
    assert client.range_prefix("/netlab/tetcd/")[0] == []


def test_the_labs_own_etcd_cluster_survives_its_leader():
    b = two_rack_builder("tcluster")
    b.add_deployment("web", replicas=3, command=SLEEP)
    spec = dataclasses.replace(b.build(), store="etcd")
    with Lab(spec) as lab:
        lab.settle()
        members = lab.etcd_members
        assert len(members) == 3
        assert {m.plan.name for m in members} == {"etcd-n1", "etcd-n3", "etcd-n2"}  # both racks
        assert wait_for(lambda: len(_leader(members)) == 1, 5.0)  # elected, and agreed on
        (leader,) = _leader(members)
        committed = {p["metadata"]["name"] for p in lab.store.list("pods")[0]}
        revision = lab.store.revision
        for member in members:  # or the supervisor starts them again (test_etcd_restarts)
            keep_down(member.plan.data_dir, True)
        leader.kill()
        # the survivors elect a new leader; writes go on through them
        lab.scale("web", 4)
        assert wait_for(lambda: len([p for p in lab.pod_list() if p.owner == "web"]) == 4, 15)
        survivors = [m for m in list(members) if m is not leader]
        client = EtcdClient([survivors[0].endpoint])
        kvs, now = client.range_prefix("/netlab/tcluster/pods/")
        assert now > revision
        stored = {_value(k)["metadata"]["name"] for k in kvs}
        # nothing committed before the kill is lost: every pod of then that the lab still
        # runs is in etcd (one the lab itself replaced meanwhile is not a loss)
        running = {p.name for p in lab.pod_list()}
        assert committed & running <= stored, (committed - stored, running - committed)
        assert len(stored) == len(committed) + 1  # and the scale went through the new leader
        # one member alone has no quorum: a linearizable read fails, a serializable one
        # answers from its own (possibly stale) copy, as etcd's documentation says
        survivors[1].kill()
        lone = EtcdClient([survivors[0].endpoint], timeout=2.0)
        started = time.monotonic()
        with pytest.raises(EtcdError):
            lone.range_prefix("/netlab/tcluster/pods/")
        assert time.monotonic() - started < 15
        stale, _ = lone.range_prefix("/netlab/tcluster/pods/", serializable=True)
        assert committed & running <= {_value(k)["metadata"]["name"] for k in stale}


def _leader(members) -> list:
    """[the member every member names as leader], or [] while they do not agree yet."""
    views = [member_status(m.endpoint) for m in members]
    if not all(views):
        return []
    named = {v.get("leader") for v in views}
    by_id = {v["header"]["member_id"]: m for v, m in zip(views, members, strict=True)}
    return [by_id[n] for n in named if n in by_id] if len(named) == 1 else []


def _value(kv: dict) -> dict:
    return json.loads(base64.b64decode(kv["value"]))


def status(name: str) -> dict[str, dict[str, str]]:
    """`netlab etcd status` as {member: {column: value}} (columns cut where the header's start)."""
    from tests.root.test_cli import netlab

    header, *lines = netlab("--lab", name, "etcd", "status").stdout.splitlines()
    starts = [i for i, c in enumerate(header) if c != " " and (i == 0 or header[i - 1] == " ")]
    names = header.split()
    table = {}
    for line in lines:
        cells = [line[a:b].strip() for a, b in zip(starts, [*starts[1:], None], strict=True)]
        table[cells[0]] = dict(zip(names, cells, strict=True))
    return table


def test_netlab_etcd_status_kill_and_reads(tmp_path):
    from tests.root.test_cli import LAB, netlab

    path = tmp_path / "tcetcd.yaml"
    path.write_text(LAB.format(name="tcetcd"))
    netlab("up", "-d", "--store", "etcd", str(path))
    try:
        rows = status("tcetcd")
        assert len(rows) == 3 and [r["STATE"] for r in rows.values()].count("leader") == 1, rows
        assert {r["RESTARTS"] for r in rows.values()} == {"0"}
        read = netlab("--lab", "tcetcd", "etcd", "get", "pods/").stdout
        assert "linearizable" in read and "/netlab/tcetcd/pods/default/" in read
        victim = netlab("--lab", "tcetcd", "etcd", "kill", "--member", "leader", "--keep-down")
        victim = victim.stdout.split()[0]

        def new_leader() -> bool:
            states = {name: r["STATE"] for name, r in status("tcetcd").items()}
            return states.get(victim) == "kept down" and list(states.values()).count("leader") == 1

        assert wait_for(new_leader, 10, interval=0.2)
        # the lab goes on: a write through the new leader, then both kinds of read
        netlab("--lab", "tcetcd", "scale", "deployment/web", "--replicas", "3")
        assert (
            "serializable"
            in netlab(
                "--lab", "tcetcd", "etcd", "get", "deployments", "--serializable", "--values"
            ).stdout
        )
        assert (
            '"replicas":3'
            in netlab("--lab", "tcetcd", "etcd", "get", "deployments", "--values").stdout
        )
        refused = netlab("--lab", "tcetcd", "etcd", "get", "--member", victim, check=False)
        assert refused.returncode != 0 and "read failed" in refused.stderr
    finally:
        netlab("down", "--lab", "tcetcd")


def test_etcd_restarts_a_killed_member_which_rejoins_and_votes(tmp_path):
    """kubelet restarts a kubeadm cluster's etcd static pod; the lab's supervisor does the
    same for its members, after a back-off, unless one is kept down on purpose."""
    from netlab.etcdview import members
    from netlab.paths import RUN_ROOT
    from tests.root.test_cli import LAB, netlab

    name = "tcrestart"
    path = tmp_path / f"{name}.yaml"
    path.write_text(LAB.format(name=name))
    netlab("up", "-d", "--store", "etcd", str(path))
    endpoints = members(RUN_ROOT / name)

    def leader_index() -> int:
        (row,) = [r for r in status(name).values() if r["STATE"] == "leader"]
        return int(row["RAFT-INDEX"])

    def back(member: str, restarts: str, index: int) -> bool:
        """Running again, healthy, and it has applied what the leader had at `index`."""
        row = status(name)[member]
        return (
            row["STATE"] in ("leader", "follower")
            and row["RESTARTS"] == restarts
            and int(row["RAFT-INDEX"]) >= index
        )

    def voters() -> dict[str, bool]:
        listing = EtcdClient(list(endpoints.values())).call("cluster/member/list", {})
        return {m["name"]: not m.get("isLearner", False) for m in listing["members"]}

    try:
        assert wait_for(lambda: any(r["STATE"] == "leader" for r in status(name).values()), 10)
        first = netlab("--lab", name, "etcd", "kill", "--member", "leader").stdout.split()[0]
        assert wait_for(lambda: status(name)[first]["STATE"].startswith("restarting in"), 5, 0.1)
        # meanwhile the other two elect a leader, and the lab writes through them
        netlab("--lab", name, "scale", "deployment/web", "--replicas", "3")
        index = leader_index()
        assert wait_for(lambda: back(first, "1", index), 20, interval=0.3), status(name)
        assert voters() == {m: True for m in endpoints}  # the same member, still voting
        # the other two may not both be down: with one kept down, quorum needs `first`
        second = next(m for m in endpoints if m != first)
        netlab("--lab", name, "etcd", "kill", "--member", second, "--keep-down")
        time.sleep(2 * BACKOFF_START + 1)  # longer than a restart would wait
        assert status(name)[second]["STATE"] == "kept down"
        assert status(name)[second]["PID"] == "-"
        netlab("--lab", name, "scale", "deployment/web", "--replicas", "2")  # a quorum write
        read = netlab("--lab", name, "etcd", "get", "deployments", "--values").stdout
        assert '"replicas":2' in read and "linearizable" in read
        # a new supervisor takes the lab over: the member it finds dead stays kept down
        netlab("--lab", name, "detach")
        assert status(name)[second]["STATE"] == "down (no supervisor restarts it)"
        netlab("up", "-d", "--adopt", str(path))
        assert wait_for(lambda: status(name)[second]["STATE"] == "kept down", 5, 0.2)
        piped = subprocess.run(  # and a reader that leaves early ends `etcd get` quietly
            f"{sys.executable} -m netlab.cli --lab {name} etcd get --values | true",
            shell=True,
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert piped.stderr == ""
        started = netlab("--lab", name, "etcd", "start", "--member", second).stdout
        assert f"{second} started" in started
        index = leader_index()
        assert wait_for(lambda: back(second, "1", index), 20, interval=0.3), status(name)
        # the leader killed again (whichever it is now): back again, the cluster whole
        again = netlab("--lab", name, "etcd", "kill", "--member", "leader").stdout.split()[0]
        restarts = str(int(status(name)[again]["RESTARTS"]) + 1)
        netlab("--lab", name, "scale", "deployment/web", "--replicas", "3")
        index = leader_index()
        assert wait_for(lambda: back(again, restarts, index), 30, interval=0.3), status(name)
        rows = status(name)
        assert [r["STATE"] for r in rows.values()].count("leader") == 1
        assert sorted(r["RESTARTS"] for r in rows.values()) in (
            ["0", "1", "2"],  # `again` was `first` or `second`
            ["1", "1", "1"],
        )
        assert voters() == {m: True for m in endpoints}
        pods = json.loads(netlab("--lab", name, "get", "pods", "-o", "json").stdout)["items"]
        assert len(pods) == 3 and not any(p["metadata"].get("deletionTimestamp") for p in pods)
    finally:
        netlab("down", "--lab", name)
