"""kubelet's part for the lab's own etcd: a member that ends is started again after a
back-off, as kubelet restarts the etcd static pod of a kubeadm cluster.

The restarted member keeps its data directory, so it rejoins the cluster as the same
member and catches up from the leader. Each member's state is written to
`<data dir>/keeper.json` for `netlab etcd status` (another process) to show: how many
times it was restarted, and when the next restart is due. Two files in the data
directory are the user's requests: `keep-down` holds a member down (`netlab etcd kill
--keep-down`) until it is removed; `start` starts a dead member at once (`netlab etcd
start`), without waiting out its back-off.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from netlab.realize.etcd import EtcdMember, MemberPlan
from netlab.realize.processes import alive_as_recorded, start_time

log = logging.getLogger(__name__)

BACKOFF_START = 2.0  # seconds before the first restart; doubles up to BACKOFF_MAX
BACKOFF_MAX = 30.0
BACKOFF_RESET = 60.0  # a member that ran this long starts over from BACKOFF_START
POLL = 0.2  # seconds between looks at the members

STATUS_FILE = "keeper.json"
KEEP_DOWN_FILE = "keep-down"
START_FILE = "start"

RUNNING, RESTARTING, KEPT_DOWN, NODE_DOWN = "running", "restarting", "kept-down", "node-down"


@dataclass
class Slot:
    """One member as the keeper sees it."""

    member: EtcdMember
    restarts: int = 0
    state: str = RUNNING
    started: float = 0.0  # when its process was started (the keeper's clock)
    backoff: float = 0.0  # the delay before the next restart; 0: BACKOFF_START
    restart_at: float | None = None  # when the next restart is due
    exit_code: int | None = None


class MemberKeeper:
    """Watches the lab's etcd members from one thread and starts a dead one again.

    `members` is the lab's own list, one entry per member: a restarted member's entry
    is replaced in it (under `lock`, the lab's, so that a node failing at that moment
    freezes the new process). `restart(plan)` starts a member's process (and records
    its PID); `may_run(name)` says whether its node is up (a failed node's member is
    not started until the node recovers)."""

    def __init__(
        self,
        members: list[EtcdMember],
        restart: Callable[[MemberPlan], EtcdMember],
        may_run: Callable[[str], bool] = lambda name: True,
        lock: threading.RLock | None = None,
        clock: Callable[[], float] = time.time,
    ):
        self.members = members
        self._restart = restart
        self._may_run = may_run
        self._lock = lock or threading.RLock()
        self._clock = clock
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._owner = (os.getpid(), start_time(os.getpid()))
        now = clock()
        self.slots = [Slot(m, restarts=_recorded_restarts(m.plan), started=now) for m in members]
        self._written: list[dict | None] = [None] * len(members)

    def start(self) -> None:
        self.tick()
        self._thread = threading.Thread(target=self._run, name="etcd-keeper", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5)
            self._thread = None

    def _run(self) -> None:
        while not self._stop.wait(POLL):
            try:
                self.tick()
            except Exception:  # a bad moment (a full disk, say) must not end the keeping
                log.exception("etcd keeper: a pass failed")

    def tick(self) -> None:
        """One look at every member: note the ones that ended, start the ones due."""
        for index, slot in enumerate(self.slots):
            self._keep(index, slot, self._clock())
            self._publish(index, slot)

    def _keep(self, index: int, slot: Slot, now: float) -> None:
        member, data = slot.member, slot.member.plan.data_dir
        asked_to_start = _take(data / START_FILE)
        if member.alive():
            if slot.backoff and now - slot.started >= BACKOFF_RESET:
                slot.backoff = 0.0
            return
        if slot.state == RUNNING:  # it ended since the last look
            slot.exit_code = member.exit_code
            delay = slot.backoff or BACKOFF_START
            slot.backoff = min(delay * 2, BACKOFF_MAX)
            slot.state, slot.restart_at = RESTARTING, now + delay
            kept = (data / KEEP_DOWN_FILE).exists()
            log.warning(
                "etcd member %s (pid %s) ended (%s); %s",
                member.plan.name,
                member.pid,
                _exit_text(slot.exit_code),
                "kept down as asked" if kept else f"restarting it in {delay:.0f} s",
            )
        if (data / KEEP_DOWN_FILE).exists():
            slot.state, slot.restart_at = KEPT_DOWN, None
            return
        if slot.state == KEPT_DOWN:  # no longer kept down: the user wants it back now
            asked_to_start = True
        if not self._may_run(member.plan.name):
            slot.state = NODE_DOWN
            return
        if asked_to_start or slot.restart_at is None or now >= slot.restart_at:
            with self._lock:
                if self._stop.is_set():
                    return
                fresh = self._restart(member.plan)
                self.members[index] = slot.member = fresh
            slot.restarts += 1
            slot.state, slot.started, slot.restart_at = RUNNING, now, None
            log.warning("etcd member %s started again (pid %s)", fresh.plan.name, fresh.pid)
        elif slot.state == NODE_DOWN:
            slot.state = RESTARTING

    def _publish(self, index: int, slot: Slot) -> None:
        """Write the slot's state for `netlab etcd status`, when it changed."""
        view = {
            "state": slot.state,
            "restarts": slot.restarts,
            "restart_at": slot.restart_at,
            "exit_code": slot.exit_code,
            "pid": slot.member.pid,
            "keeper": list(self._owner),
        }
        if view == self._written[index]:
            return
        path = slot.member.plan.data_dir / STATUS_FILE
        with contextlib.suppress(OSError):  # the lab is being removed
            tmp = path.with_suffix(".tmp")
            tmp.write_text(json.dumps(view))
            tmp.replace(path)
            self._written[index] = view


def _take(path: Path) -> bool:
    """Remove a request file; True if it was there."""
    try:
        path.unlink()
    except FileNotFoundError:
        return False
    return True


def _exit_text(code: int | None) -> str:
    if code is None:
        return "running"
    if code == -1:
        return "its exit code unknown"
    return f"signal {-code}" if code < 0 else f"exit code {code}"


def _recorded_restarts(plan: MemberPlan) -> int:
    """The count an earlier supervisor wrote (a lab taken over keeps counting)."""
    view = read_status(plan.data_dir)
    return int(view.get("restarts", 0)) if view else 0


def read_status(data_dir: Path) -> dict | None:
    """What the keeper last wrote for the member in `data_dir`, or None if no live
    keeper looks after it (a supervisor that ended keeps nothing)."""
    try:
        view = json.loads((data_dir / STATUS_FILE).read_text())
    except (OSError, ValueError):
        return None
    pid, started = (view.get("keeper") or [0, None])[:2]
    view["kept"] = bool(pid) and alive_as_recorded(pid, started)
    return view


def keep_down(data_dir: Path, keep: bool) -> None:
    """`netlab etcd kill --keep-down` (keep) and `netlab etcd start` (not: start it now)."""
    if keep:
        (data_dir / KEEP_DOWN_FILE).touch()
    else:
        with contextlib.suppress(FileNotFoundError):
            (data_dir / KEEP_DOWN_FILE).unlink()
        (data_dir / START_FILE).touch()


def kept_down(data_dir: Path) -> bool:
    return (data_dir / KEEP_DOWN_FILE).exists()
