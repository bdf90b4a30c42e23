"""store: etcd on a real etcd: a loopback one (the tests start it), and the 3-member
cluster a lab runs inside itself, whose leader is killed."""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import json
import time

import pytest

from netlab.errors import ApiError
from netlab.etcdstore import EtcdClient, EtcdError, EtcdStore, endpoints_of
from netlab.lab import Lab
from netlab.realize.etcd import LoopbackEtcd, member_status
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
        leader.kill()
        # the survivors elect a new leader; writes go on through them
        lab.scale("web", 4)
        assert wait_for(lambda: len([p for p in lab.pod_list() if p.owner == "web"]) == 4, 15)
        survivors = [m for m in members if m is not leader]
        client = EtcdClient([survivors[0].endpoint])
        kvs, now = client.range_prefix("/netlab/tcluster/pods/")
        assert now > revision
        stored = {_value(k)["metadata"]["name"] for k in kvs}
        assert committed <= stored  # nothing committed before the kill is lost
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
        assert committed <= {_value(k)["metadata"]["name"] for k in stale}


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


def test_netlab_etcd_status_kill_and_reads(tmp_path):
    from tests.root.test_cli import LAB, netlab

    path = tmp_path / "tcetcd.yaml"
    path.write_text(LAB.format(name="tcetcd"))
    netlab("up", "-d", "--store", "etcd", str(path))
    try:
        status = netlab("--lab", "tcetcd", "etcd", "status").stdout
        rows = [line.split() for line in status.splitlines()[1:]]
        assert len(rows) == 3 and [r[2] for r in rows].count("leader") == 1, status
        read = netlab("--lab", "tcetcd", "etcd", "get", "pods/").stdout
        assert "linearizable" in read and "/netlab/tcetcd/pods/default/" in read
        killed = netlab("--lab", "tcetcd", "etcd", "kill", "--member", "leader").stdout
        victim = killed.split()[0]

        def new_leader() -> bool:
            rows = [
                r.split()
                for r in netlab("--lab", "tcetcd", "etcd", "status").stdout.splitlines()[1:]
            ]
            states = {r[0]: r[2] for r in rows}
            return states.get(victim) == "down" and list(states.values()).count("leader") == 1

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
