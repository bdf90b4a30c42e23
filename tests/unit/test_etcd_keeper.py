"""The etcd members' keeper (kubelet's static-pod restarts) on fake members and a fake
clock: when a member that ended is started again, what `netlab etcd status` shows."""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest

from netlab import etcdview
from netlab.realize import etcdkeeper
from netlab.realize.etcd import MemberPlan
from netlab.realize.etcdkeeper import BACKOFF_MAX, BACKOFF_RESET, BACKOFF_START, MemberKeeper

PIDS = itertools.count(1000)


class FakeMember:
    def __init__(self, plan: MemberPlan):
        self.plan, self.pid, self.exit_code = plan, next(PIDS), None

    def alive(self) -> bool:
        return self.exit_code is None

    def kill(self) -> None:
        self.exit_code = -9


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def keeper(tmp_path):
    plans = [MemberPlan(f"etcd-n{i}", "127.0.0.1", None, tmp_path / f"n{i}") for i in (1, 2, 3)]
    for plan in plans:
        plan.data_dir.mkdir()
    members = [FakeMember(p) for p in plans]
    clock = Clock()
    failed: set[str] = set()
    started: list[str] = []

    def restart(plan: MemberPlan) -> FakeMember:
        started.append(plan.name)
        return FakeMember(plan)

    k = MemberKeeper(members, restart, lambda name: name not in failed, clock=clock)
    k.clock, k.failed, k.started = clock, failed, started
    return k


def status(keeper: MemberKeeper, index: int = 0) -> dict:
    return etcdkeeper.read_status(keeper.slots[index].member.plan.data_dir)


def test_a_killed_member_is_started_again_after_a_doubling_back_off(keeper):
    keeper.tick()
    first = keeper.members[0]
    first.kill()
    keeper.tick()
    assert keeper.started == [] and status(keeper)["state"] == "restarting"
    assert status(keeper)["restart_at"] == keeper.clock.now + BACKOFF_START
    keeper.clock.now += BACKOFF_START - 0.1
    keeper.tick()
    assert keeper.started == []
    keeper.clock.now += 0.1
    keeper.tick()
    assert keeper.started == ["etcd-n1"]
    assert keeper.members[0] is not first and keeper.members[0].alive()  # the lab's list too
    shown = status(keeper)
    assert shown["kept"]  # this process is the keeper, and alive
    assert (shown["state"], shown["restarts"], shown["exit_code"]) == ("running", 1, -9)
    assert shown["pid"] == keeper.members[0].pid and shown["restart_at"] is None
    delays = []
    for _ in range(6):  # it ends again at once: each wait twice the last, up to the cap
        keeper.members[0].kill()
        keeper.tick()
        delays.append(status(keeper)["restart_at"] - keeper.clock.now)
        keeper.clock.now = status(keeper)["restart_at"]
        keeper.tick()
    assert delays == [min(BACKOFF_START * 2**i, BACKOFF_MAX) for i in range(1, 7)]
    assert status(keeper)["restarts"] == 7
    keeper.clock.now += BACKOFF_RESET  # it ran long enough: the back-off starts over
    keeper.tick()
    keeper.members[0].kill()
    keeper.tick()
    assert status(keeper)["restart_at"] - keeper.clock.now == BACKOFF_START


def test_a_kept_down_member_stays_down_until_started(keeper):
    keeper.tick()
    data = keeper.members[1].plan.data_dir
    etcdkeeper.keep_down(data, True)
    keeper.members[1].kill()
    for _ in range(3):
        keeper.tick()
        keeper.clock.now += BACKOFF_MAX
    assert keeper.started == [] and status(keeper, 1)["state"] == "kept-down"
    assert etcdview.down_state(False, status(keeper, 1), keeper.clock.now) == "kept down"
    etcdkeeper.keep_down(data, False)  # `netlab etcd start`: at once, no back-off
    keeper.tick()
    assert keeper.started == ["etcd-n2"] and keeper.members[1].alive()
    keeper.tick()
    assert not (data / etcdkeeper.START_FILE).exists()  # the request is used up


def test_start_cuts_the_back_off_short(keeper):
    keeper.tick()
    keeper.members[2].kill()
    keeper.tick()
    assert keeper.started == []
    etcdkeeper.keep_down(keeper.members[2].plan.data_dir, False)
    keeper.tick()
    assert keeper.started == ["etcd-n3"]


def test_a_failed_nodes_member_waits_for_the_node(keeper):
    keeper.tick()
    keeper.failed.add("etcd-n1")
    keeper.members[0].kill()
    keeper.tick()
    keeper.clock.now += BACKOFF_MAX
    keeper.tick()
    assert keeper.started == [] and status(keeper)["state"] == "node-down"
    assert etcdview.down_state(False, status(keeper), keeper.clock.now) == "down (its node failed)"
    keeper.failed.clear()  # recovered, its back-off long over: started at once
    keeper.tick()
    assert keeper.started == ["etcd-n1"]


def test_a_stopped_keeper_starts_nothing(keeper):
    keeper.tick()
    keeper.stop()
    keeper.members[0].kill()
    keeper.clock.now += BACKOFF_MAX
    keeper.tick()
    assert keeper.started == []


@pytest.mark.parametrize(
    ("alive", "view", "shown"),
    [
        (True, None, "no answer"),  # frozen (a failed node), or not answering yet
        (False, None, "down (no supervisor restarts it)"),
        (False, {"kept": False, "state": "restarting"}, "down (no supervisor restarts it)"),
        (False, {"kept": True, "state": "restarting", "restart_at": 101.2}, "restarting in 2s"),
        (False, {"kept": True, "state": "restarting", "restart_at": 99.0}, "restarting in 0s"),
        (False, {"kept": True, "state": "kept-down"}, "kept down"),
        (False, {"kept": True, "state": "running"}, "starting"),
    ],
)
def test_how_status_shows_a_member_that_does_not_answer(alive, view, shown):
    assert etcdview.down_state(alive, view, 100.0) == shown


def test_status_of_a_keeper_that_ended_is_not_trusted(tmp_path: Path):
    (tmp_path / etcdkeeper.STATUS_FILE).write_text(
        '{"state": "restarting", "restarts": 2, "keeper": [999999999, 1]}'
    )
    assert etcdkeeper.read_status(tmp_path)["kept"] is False
